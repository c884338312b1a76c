//! `file`: a path's content, owner, group and mode.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::fsmeta::{Meta, MetaChange, atomic_write, content_diff, temp_path};
use super::state::{link_to, missing};
use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef, actions,
};
use crate::error::{PolicyError, RunError};

pub const TYPE: TypeDef = TypeDef::of::<File>(
    "file",
    &["content", "source", "owner", "group", "mode"],
    build,
)
.secrets_in(&["content"]);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    content: Option<String>,
    source: Option<String>,
    #[serde(flatten)]
    meta: Meta,
}

/// A managed file. `template` builds one of these from rendered text.
#[derive(Debug)]
pub struct File {
    pub path: String,
    /// `None` manages only existence and metadata.
    pub content: Option<Arc<[u8]>>,
    pub meta: Meta,
    pub sensitive: bool,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    check_absolute(&spec.name)?;
    let content = match (p.content, p.source) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::new("file has both content and source").fix(
                "keep one: content for inline text, source for a file in the cookbook's files/",
            ));
        }
        (Some(c), None) => Some(c.into_bytes().into()),
        (None, Some(s)) => Some(env.cookbook_file("files", &s)?),
        (None, None) => None,
    };
    Ok(Box::new(File {
        path: spec.name.clone(),
        content,
        meta: secret_mode(p.meta, spec),
        sensitive: spec.sensitive,
    }))
}

/// A file whose content holds a secret is the owner's alone unless the
/// policy sets a mode: 0600, for a new file and for one already there.
pub fn secret_mode(mut meta: Meta, spec: &Spec) -> Meta {
    if spec.secret && meta.mode.is_none() {
        meta.mode = Some(0o600);
    }
    meta
}

/// Paths on the target are absolute, so that `--root` can place them, and
/// written one way only: `/etc/x/`, `/etc//x` and `/etc/./x` would be the
/// same file under a second resource name, and two resources could then
/// manage it without the duplicate check seeing it.
pub fn check_absolute(path: &str) -> Result<(), PolicyError> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(PolicyError::new(format!("path {path:?} is not absolute"))
            .fix("name the resource by its absolute path on the target, e.g. \"/etc/motd\""));
    }
    let odd = path != "/" && path[1..].split('/').any(|c| c.is_empty() || c == ".");
    if odd {
        let plain: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        return Err(PolicyError::new(format!(
            "path {path:?} has a trailing '/', a '//' or a '.' in it"
        ))
        .fix(format!("write it as \"/{}\"", plain.join("/"))));
    }
    Ok(())
}

actions! {
    pub enum FileAction {
        Create = "create",
        Delete = "delete",
        CreateIfMissing = "create_if_missing",
    }
}

/// One difference of a file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileChange {
    /// A temporary file of an interrupted atomic write.
    RemovePartial,
    Create {
        diff: Option<String>,
    },
    Delete,
    /// New content; `stat` is the path as it is (for owner and mode to keep).
    Content {
        diff: String,
        #[serde(skip)]
        stat: Stat,
    },
    /// Owner, group or mode; on a path that is not a regular file (a
    /// symlink) the file is written anew rather than the link followed.
    Meta {
        #[serde(flatten)]
        change: MetaChange,
        #[serde(skip)]
        stat: Stat,
    },
}

/// Owner, group and mode of an existing path, and whether it is a regular file.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    uid: u32,
    gid: u32,
    mode: u32,
    regular: bool,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Self {
        Stat {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            regular: m.is_file(),
        }
    }
}

impl fmt::Display for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileChange::RemovePartial => {
                write!(f, "remove a partial write left by an interrupted run")
            }
            FileChange::Create { .. } => write!(f, "create"),
            FileChange::Delete => write!(f, "delete"),
            FileChange::Content { .. } => write!(f, "update content"),
            FileChange::Meta { change, .. } => change.fmt(f),
        }
    }
}

impl Item for FileChange {
    fn diff(&self) -> Option<String> {
        match self {
            FileChange::Create { diff } => diff.clone(),
            FileChange::Content { diff, .. } => Some(diff.clone()),
            _ => None,
        }
    }
}

impl Converge for File {
    type Action = FileAction;
    type Item = FileChange;

    fn check(&self, action: FileAction, cx: &mut Context) -> ResourceResult<Vec<FileChange>> {
        let tfs = cx.target.fs();
        let mut out = Vec::new();
        let look = |p: &str| match tfs.symlink_metadata(p) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RunError::io("inspect", p, e)),
        };
        // The path first: an error on the way to it names it, not the temporary file.
        let meta = look(&self.path)?;
        if look(&temp_path(self.path.as_ref()).to_string_lossy())?.is_some() {
            out.push(FileChange::RemovePartial);
        }
        if action == FileAction::Delete {
            if meta.is_some() {
                out.push(FileChange::Delete);
            }
            return Ok(out);
        }
        let Some(meta) = meta else {
            let diff = self
                .content
                .as_ref()
                .map(|c| content_diff(&self.path, b"", c, self.sensitive));
            out.push(FileChange::Create { diff });
            return Ok(out);
        };
        if meta.is_dir() {
            return Err(RunError::precondition(format!(
                "{} is a directory; a file resource cannot replace it",
                self.path
            )));
        }
        // A FIFO, socket or device (or a link to one) is never read, shown
        // or written through: it could hang kiln or be the host's disk.
        let followed = if meta.is_symlink() {
            tfs.metadata(&self.path).ok()
        } else {
            Some(meta.clone())
        };
        if let Some(kind) = followed.as_ref().and_then(crate::platform::tfs::special) {
            return Err(RunError::precondition(format!(
                "{} is {kind}, not a regular file: kiln never reads one or writes through it",
                self.path
            ))
            .fix("remove it from the target (it is no file of the policy's), then run again"));
        }
        let stat = Stat::of(&meta);
        // A file other names share (a hard link planted to a host file) is
        // never read, shown or changed in place: replaced by a file of its
        // own when there is content to write, else refused.
        let links = std::os::unix::fs::MetadataExt::nlink(&meta);
        if meta.is_file() && links > 1 {
            if let (Some(_), FileAction::Create) = (&self.content, action) {
                out.push(FileChange::Content {
                    diff: format!(
                        "(not shown: {} has {links} hard links; kiln replaces it with a file of its own)",
                        self.path
                    ),
                    stat,
                });
                return Ok(out);
            }
            if !self.meta.changes(&meta, cx).is_empty() {
                return Err(RunError::precondition(format!(
                    "{} has {links} hard links: kiln changes no file that other names share in place",
                    self.path
                ))
                .fix("remove the other names (or the file), or give the resource content so that kiln replaces it"));
            }
            return Ok(out);
        }
        if let (Some(want), FileAction::Create) = (&self.content, action) {
            // Cheap test first: a size mismatch needs no read. A link is
            // read where it leads inside the target, and replaced itself.
            // Only a file that differs is read whole, for its diff.
            let same = meta.is_file()
                && meta.len() == want.len() as u64
                && tfs.holds_looked(&self.path, &meta, want).unwrap_or(false);
            if !same {
                let cur = tfs.read_looked(&self.path, &meta).unwrap_or_default();
                let diff = content_diff(&self.path, &cur, want, self.sensitive);
                out.push(FileChange::Content { diff, stat });
            }
        }
        out.extend(
            self.meta
                .changes(&meta, cx)
                .into_iter()
                .map(|change| FileChange::Meta { change, stat }),
        );
        Ok(out)
    }

    fn apply(&self, _: FileAction, diff: &[FileChange], cx: &mut Context) -> ResourceResult<()> {
        let tfs = cx.target.fs();
        let mut meta = Vec::new();
        for c in diff {
            match c {
                FileChange::RemovePartial => {
                    let _ = tfs.remove_file(temp_path(self.path.as_ref()));
                }
                FileChange::Delete => match tfs.remove_file(&self.path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(RunError::io("delete", &self.path, e));
                    }
                    _ => {}
                },
                FileChange::Create { .. } => return self.write(None, cx),
                FileChange::Content { stat, .. } => return self.write(Some(*stat), cx),
                FileChange::Meta { stat, .. } if !stat.regular => {
                    return self.write(Some(*stat), cx);
                }
                FileChange::Meta { change, .. } => meta.push(change),
            }
        }
        if meta.is_empty() {
            return Ok(());
        }
        self.meta.set(&self.path, meta, false, cx)
    }

    fn fingerprint(path: &str, state: &mut State) -> Option<String> {
        let tfs = state.target.fs();
        let meta = match tfs.symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return Some(missing(&e)),
        };
        let kind = meta.file_type();
        Some(if kind.is_file() {
            match state.content_hash(path) {
                Ok(h) => format!("{h} {}", state.ownership(&meta)),
                Err(e) => format!("unreadable ({})", e.kind()),
            }
        } else if kind.is_symlink() {
            format!("kind=symlink to={}", link_to(tfs, path))
        } else if kind.is_dir() {
            format!("kind=directory {}", state.ownership(&meta))
        } else {
            "kind=special".to_string()
        })
    }
}

impl File {
    /// Writes the whole file atomically with owner and mode; `existing` is
    /// what is there now, whose owner and mode are kept where the policy
    /// sets none.
    fn write(&self, existing: Option<Stat>, cx: &mut Context) -> ResourceResult<()> {
        let current;
        let content: &[u8] = match &self.content {
            Some(c) => c,
            None => {
                // create_if_missing without content, over a non-file: keep
                // what it reads as (a link read inside the target).
                current = cx.target.fs().read(&self.path).unwrap_or_default();
                &current
            }
        };
        let mut ids = self.meta.ids(cx)?;
        let existing = existing.filter(|s| s.regular);
        // Sensitive content (a secret used in it makes it so) is nobody
        // else's to read unless the policy says otherwise.
        let fresh = if self.sensitive { 0o600 } else { 0o644 };
        let mode = self.meta.mode.or(existing.map(|s| s.mode)).unwrap_or(fresh);
        if let Some(s) = existing {
            ids.uid = ids.uid.or(Some(s.uid));
            ids.gid = ids.gid.or(Some(s.gid));
        }
        atomic_write(cx.target.fs(), &self.path, content, mode, ids)
    }
}
