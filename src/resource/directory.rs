//! `directory`: a directory with owner, group and mode.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::file::check_absolute;
use super::fsmeta::{Meta, MetaChange};
use super::state::{link_to, missing};
use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef, actions,
};
use crate::error::{PolicyError, RunError};

pub const TYPE: TypeDef =
    TypeDef::of::<Directory>("directory", &["owner", "group", "mode", "recursive"], build);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Directory {
    #[serde(skip)]
    path: String,
    /// Create missing parents, or delete the whole tree.
    #[serde(default)]
    recursive: bool,
    #[serde(flatten)]
    meta: Meta,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let mut d: Directory = spec.props()?;
    check_absolute(&spec.name)?;
    d.path = spec.name.clone();
    Ok(Box::new(d))
}

actions! {
    pub enum DirectoryAction {
        Create = "create",
        Delete = "delete",
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryChange {
    Create,
    Delete,
    Meta(MetaChange),
}

impl fmt::Display for DirectoryChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectoryChange::Create => write!(f, "create"),
            DirectoryChange::Delete => write!(f, "delete"),
            DirectoryChange::Meta(m) => m.fmt(f),
        }
    }
}

impl Item for DirectoryChange {}

impl Converge for Directory {
    type Action = DirectoryAction;
    type Item = DirectoryChange;

    fn check(
        &self,
        action: DirectoryAction,
        cx: &mut Context,
    ) -> ResourceResult<Vec<DirectoryChange>> {
        let tfs = cx.target.fs();
        let own = match tfs.symlink_metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(RunError::io("inspect", &self.path, e)),
        };
        let is_link = own.as_ref().is_some_and(|m| m.is_symlink());
        if action == DirectoryAction::Delete {
            return match own {
                Some(_) if is_link => Err(RunError::precondition(format!(
                    "{} is a symlink; a directory resource will not delete it",
                    self.path
                ))
                .fix("manage it with a link resource")),
                Some(m) if m.is_dir() => Ok(vec![DirectoryChange::Delete]),
                _ => Ok(vec![]),
            };
        }
        // A link is followed as Chef does, by the kernel and inside the
        // target: on a `--root` tree it cannot lead to the build host.
        let meta = match own {
            Some(_) if is_link => Some(tfs.metadata(&self.path).map_err(|e| {
                RunError::precondition(format!(
                    "{} is a symlink to {}, which leads to no directory on the target ({e})",
                    self.path,
                    link_to(tfs, &self.path)
                ))
                .fix("point the link at a directory, or remove it")
            })?),
            m => m,
        };
        match meta {
            None => Ok(vec![DirectoryChange::Create]),
            Some(m) if !m.is_dir() => Err(RunError::precondition(format!(
                "{} exists and is not a directory",
                self.path
            ))
            .fix("remove it or manage it as a file")),
            Some(m) => Ok(self
                .meta
                .changes(&m, cx)
                .into_iter()
                .map(DirectoryChange::Meta)
                .collect()),
        }
    }

    fn apply(
        &self,
        _: DirectoryAction,
        diff: &[DirectoryChange],
        cx: &mut Context,
    ) -> ResourceResult<()> {
        let tfs = cx.target.fs();
        let fail = |what: &'static str, e: std::io::Error| RunError::io(what, &self.path, e);
        let mut meta = Vec::new();
        for c in diff {
            match c {
                DirectoryChange::Delete => {
                    let r = if self.recursive {
                        tfs.remove_dir_all(&self.path)
                    } else {
                        tfs.remove_dir(&self.path)
                    };
                    return r.map_err(|e| fail("delete", e));
                }
                DirectoryChange::Create => {
                    self.create(cx)?;
                    // A new directory gets everything the policy sets.
                    return self.meta.set(&self.path, &self.all_meta(), false, cx);
                }
                DirectoryChange::Meta(m) => meta.push(m),
            }
        }
        self.meta.set(&self.path, meta, true, cx)
    }

    fn fingerprint(path: &str, state: &mut State) -> Option<String> {
        let tfs = state.target.fs();
        Some(match tfs.symlink_metadata(path) {
            Err(e) => missing(&e),
            Ok(m) if m.is_dir() => state.ownership(&m),
            Ok(m) if m.file_type().is_symlink() => {
                format!("kind=symlink to={}", link_to(tfs, path))
            }
            Ok(m) => format!("kind=file {}", state.ownership(&m)),
        })
    }
}

impl Directory {
    fn create(&self, cx: &mut Context) -> ResourceResult<()> {
        let tfs = cx.target.fs();
        // 0777 less the umask, as mkdir(1) makes them.
        let r = if self.recursive {
            tfs.create_dir_all(&self.path, 0o777)
        } else {
            tfs.create_dir(&self.path, 0o777)
        };
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RunError::precondition(format!(
                    "cannot create {}: its parent does not exist",
                    self.path
                ))
                .fix("set recursive = true or create the parent first")
            } else {
                RunError::io("create", &self.path, e)
            }
        })?;
        if self.meta.mode.is_none() {
            tfs.set_meta(&self.path, Default::default(), Some(0o755), false)
                .map_err(|e| RunError::io("chmod", &self.path, e))?;
        }
        Ok(())
    }

    /// Every owner, group and mode the policy sets, as changes to make.
    fn all_meta(&self) -> Vec<MetaChange> {
        let m = &self.meta;
        let mut out = Vec::new();
        if let Some(o) = &m.owner {
            out.push(MetaChange::Owner {
                from: 0,
                to: o.clone(),
            });
        }
        if let Some(g) = &m.group {
            out.push(MetaChange::Group {
                from: 0,
                to: g.clone(),
            });
        }
        if let Some(mode) = m.mode {
            out.push(MetaChange::Mode { from: 0, to: mode });
        }
        out
    }
}
