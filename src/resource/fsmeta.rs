//! Owner, group and mode of paths, and atomic writes: shared by the
//! file-like resource types.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use super::{Context, de_mode};
use crate::error::RunError;
pub use crate::platform::tfs::Owner as Ids;
pub use crate::platform::tfs::atomic_write;
pub use crate::platform::tfs::temp_path;

/// Ownership and permissions a resource asks for; `None` leaves it alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    pub owner: Option<String>,
    pub group: Option<String>,
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
}

/// One difference of owner, group or mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "property", rename_all = "snake_case")]
pub enum MetaChange {
    Owner { from: u32, to: String },
    Group { from: u32, to: String },
    Mode { from: u32, to: u32 },
}

impl fmt::Display for MetaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaChange::Owner { from, to } => write!(f, "owner {from} -> {to}"),
            MetaChange::Group { from, to } => write!(f, "group {from} -> {to}"),
            MetaChange::Mode { from, to } => write!(f, "mode {from:04o} -> {to:04o}"),
        }
    }
}

impl Meta {
    /// Resolves names on the target. A name that does not exist yet is an
    /// error at apply time only: an earlier resource may create it.
    pub fn ids(&self, cx: &mut Context) -> Result<Ids, RunError> {
        let accounts = cx.accounts();
        let uid = match &self.owner {
            Some(o) => Some(accounts.uid(o).ok_or_else(|| {
                RunError::precondition(format!("owner {o:?} does not exist on the target"))
                    .fix("add a user resource for it before this one")
            })?),
            None => None,
        };
        let gid = match &self.group {
            Some(g) => Some(accounts.gid(g).ok_or_else(|| {
                RunError::precondition(format!("group {g:?} does not exist on the target"))
                    .fix("add a group resource for it before this one")
            })?),
            None => None,
        };
        Ok(Ids { uid, gid })
    }

    /// Differences between `meta` (an existing path's) and what is asked for.
    pub fn changes(&self, meta: &fs::Metadata, cx: &mut Context) -> Vec<MetaChange> {
        let mut out = Vec::new();
        let accounts = cx.accounts();
        if let Some(o) = &self.owner {
            match accounts.uid(o) {
                Some(uid) if uid == meta.uid() => {}
                _ => out.push(MetaChange::Owner {
                    from: meta.uid(),
                    to: o.clone(),
                }),
            }
        }
        if let Some(g) = &self.group {
            match accounts.gid(g) {
                Some(gid) if gid == meta.gid() => {}
                _ => out.push(MetaChange::Group {
                    from: meta.gid(),
                    to: g.clone(),
                }),
            }
        }
        if let Some(m) = self.mode {
            let cur = meta.mode() & 0o7777;
            if cur != m {
                out.push(MetaChange::Mode { from: cur, to: m });
            }
        }
        out
    }

    /// Sets what `changes` found different on an existing path, through a
    /// descriptor of it; `follow` follows a final link (inside the target).
    pub fn set<'a>(
        &self,
        path: &str,
        changes: impl IntoIterator<Item = &'a MetaChange>,
        follow: bool,
        cx: &mut Context,
    ) -> Result<(), RunError> {
        let ids = self.ids(cx)?;
        let (mut uid, mut gid, mut mode) = (None, None, None);
        for c in changes {
            match c {
                MetaChange::Owner { .. } => uid = ids.uid,
                MetaChange::Group { .. } => gid = ids.gid,
                MetaChange::Mode { to, .. } => mode = Some(*to),
            }
        }
        if uid.is_none() && gid.is_none() && mode.is_none() {
            return Ok(());
        }
        cx.target
            .fs()
            .set_meta(path, Ids { uid, gid }, mode, follow)
            .map_err(|e| RunError::io("set owner and mode of", path, e))
    }
}

/// A unified diff for people, or a note when the content must not be shown.
/// What stands for the diff of content that is, or was, sensitive.
pub const SUPPRESSED: &str = "(content is sensitive: diff suppressed)";

pub fn content_diff(path: &str, old: &[u8], new: &[u8], sensitive: bool) -> String {
    if sensitive {
        return SUPPRESSED.to_string();
    }
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(a), Ok(b)) => similar::TextDiff::from_lines(a, b)
            .unified_diff()
            .context_radius(3)
            .header(path, path)
            .to_string(),
        _ => format!(
            "binary content differs ({} -> {} bytes)",
            old.len(),
            new.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::platform::tfs::Tfs;

    #[test]
    fn atomic_write_sets_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let fs_ = Tfs::new(Path::new("/"), false);
        atomic_write(&fs_, &p, b"one\n", 0o600, Ids::default()).unwrap();
        atomic_write(&fs_, &p, b"two\n", 0o640, Ids::default()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A stale one from a killed run is replaced, not an obstacle.
        fs::write(temp_path(&p), b"half").unwrap();
        atomic_write(&fs_, &p, b"three\n", 0o640, Ids::default()).unwrap();
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn diffs_hide_sensitive_content() {
        let d = content_diff("/etc/x", b"a\n", b"b\n", false);
        assert!(d.contains("-a") && d.contains("+b"), "{d}");
        let d = content_diff("/etc/x", b"secret\n", b"other\n", true);
        assert!(!d.contains("secret"));
    }
}
