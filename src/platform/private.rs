//! Directories that must be this user's alone: the ssh control directory,
//! and the scratch directories kiln keeps under a shared `$TMPDIR`. A name
//! there that someone else made first (a directory of theirs, or a link)
//! would let them swap or read what kiln puts inside, or point kiln's
//! writes at a file of their choosing: such a name is refused, not used.

use std::path::{Path, PathBuf};

/// What a private directory is for, in a refusal's words.
#[derive(Debug)]
pub struct Purpose {
    /// "the ssh control directory"
    pub what: &'static str,
    /// What whoever owns it could do: "use kiln's ssh connections".
    pub abuse: &'static str,
    /// The fix for a directory that is not a private one of this user's.
    pub fix: &'static str,
    /// The fix for one under a directory others may change.
    pub elsewhere: &'static str,
}

/// Why a private directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("cannot create {} {}: {source}", purpose.what, dir.display())]
    Create {
        purpose: &'static Purpose,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} {}: {source}", purpose.what, dir.display())]
    Unreadable {
        purpose: &'static Purpose,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} {} is not a directory (a link or a file); {}", purpose.what, dir.display(), purpose.fix)]
    NotADirectory {
        purpose: &'static Purpose,
        dir: PathBuf,
    },
    #[error(
        "{} {} is owned by uid {owner}, not by you (uid {me}): whoever owns it could {}; {}",
        purpose.what,
        dir.display(),
        purpose.abuse,
        purpose.fix
    )]
    NotYours {
        purpose: &'static Purpose,
        dir: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error("cannot make {} {} private (0700): {source}", purpose.what, dir.display())]
    Tighten {
        purpose: &'static Purpose,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}'s parent {}: {source}", purpose.what, parent.display())]
    Parent {
        purpose: &'static Purpose,
        parent: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", dir.display())]
    Ancestor {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Someone else may rename an entry on the way, and so could put their
    /// own directory in its place.
    #[error(
        "{} {} is under {}, which {}: whoever can write there could swap kiln's directory for theirs; {}",
        purpose.what,
        parent.display(),
        dir.display(),
        match owner {
            None => "others may write to".to_string(),
            Some(uid) => format!("belongs to uid {uid}"),
        },
        purpose.elsewhere
    )]
    UnsafeAncestor {
        purpose: &'static Purpose,
        parent: PathBuf,
        dir: PathBuf,
        /// Its owner when that is someone else; none when others may write.
        owner: Option<u32>,
    },
}

/// Creates `dir` mode 0700, or checks that the existing one is a directory
/// (not a link) owned by this user, and tightens its mode to 0700.
pub fn private_dir(dir: &Path, purpose: &'static Purpose) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let me = unsafe { libc::geteuid() };
    if let Some(parent) = dir.parent() {
        let _ = std::fs::create_dir_all(parent);
        safe_ancestors(parent, me, purpose)?;
    }
    let d = || dir.to_path_buf();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(PrivateDirError::Create {
                purpose,
                dir: d(),
                source,
            });
        }
    }
    let m = std::fs::symlink_metadata(dir).map_err(|source| PrivateDirError::Unreadable {
        purpose,
        dir: d(),
        source,
    })?;
    if !m.file_type().is_dir() {
        return Err(PrivateDirError::NotADirectory { purpose, dir: d() });
    }
    if m.uid() != me {
        return Err(PrivateDirError::NotYours {
            purpose,
            dir: d(),
            owner: m.uid(),
            me,
        });
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| PrivateDirError::Tighten {
                purpose,
                dir: d(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Every directory above a private one is root's or ours, and no one else
/// may write there (unless sticky, as /tmp): whoever can rename an entry on
/// the way could put their own directory in its place.
fn safe_ancestors(
    parent: &Path,
    me: u32,
    purpose: &'static Purpose,
) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::MetadataExt;
    let real = parent
        .canonicalize()
        .map_err(|source| PrivateDirError::Parent {
            purpose,
            parent: parent.to_path_buf(),
            source,
        })?;
    for dir in real.ancestors() {
        let m = std::fs::metadata(dir).map_err(|source| PrivateDirError::Ancestor {
            dir: dir.to_path_buf(),
            source,
        })?;
        let owner_ok = m.uid() == 0 || m.uid() == me;
        let sticky = m.mode() & 0o1000 != 0;
        let others_write = m.mode() & 0o022 != 0;
        if !owner_ok || (others_write && !sticky) {
            return Err(PrivateDirError::UnsafeAncestor {
                purpose,
                parent: parent.to_path_buf(),
                dir: dir.to_path_buf(),
                owner: (!owner_ok).then_some(m.uid()),
            });
        }
    }
    Ok(())
}

/// What a scratch directory under `$TMPDIR` is, for a refusal.
pub const SCRATCH: Purpose = Purpose {
    what: "kiln's scratch directory",
    abuse: "swap or read what kiln puts there, or point its writes at a file of their choosing",
    fix: "remove it (if it is not yours, find out who made it), or set TMPDIR to a directory of your own",
    elsewhere: "set TMPDIR to a directory under one only you and root can write",
};

/// `$TMPDIR/NAME`, a directory of this user's alone (see [`private_dir`]):
/// where kiln keeps overlays and logs under a name others can guess.
pub fn scratch_dir(name: &str) -> Result<PathBuf, PrivateDirError> {
    let dir = std::env::temp_dir().join(name);
    private_dir(&dir, &SCRATCH)?;
    Ok(dir)
}

impl From<PrivateDirError> for crate::error::RunError {
    fn from(e: PrivateDirError) -> Self {
        crate::error::RunError::platform(e)
    }
}
