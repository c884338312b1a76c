//! `directory`: a directory with owner, group and mode.

use std::fmt;
use std::fs;
use std::path::Path;

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
        let host = cx.target.path(&self.path);
        let meta = fs::metadata(&host).ok();
        if action == DirectoryAction::Delete {
            return Ok(match meta {
                Some(m) if m.is_dir() => vec![DirectoryChange::Delete],
                _ => vec![],
            });
        }
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
        let host = cx.target.path(&self.path);
        let fail = |what: &'static str, e: std::io::Error| RunError::io(what, &self.path, e);
        let mut meta = Vec::new();
        for c in diff {
            match c {
                DirectoryChange::Delete => {
                    let r = if self.recursive {
                        fs::remove_dir_all(&host)
                    } else {
                        fs::remove_dir(&host)
                    };
                    return r.map_err(|e| fail("delete", e));
                }
                DirectoryChange::Create => {
                    self.create(&host)?;
                    // A new directory gets everything the policy sets.
                    return self.meta.set(&host, &self.all_meta(), cx);
                }
                DirectoryChange::Meta(m) => meta.push(m),
            }
        }
        self.meta.set(&host, meta, cx)
    }

    fn fingerprint(path: &str, state: &mut State) -> Option<String> {
        let host = state.target.path(path);
        Some(match fs::symlink_metadata(&host) {
            Err(e) => missing(&e),
            Ok(m) if m.is_dir() => state.ownership(&m),
            Ok(m) if m.file_type().is_symlink() => {
                format!("kind=symlink to={}", link_to(&host))
            }
            Ok(m) => format!("kind=file {}", state.ownership(&m)),
        })
    }
}

impl Directory {
    fn create(&self, host: &Path) -> ResourceResult<()> {
        let r = if self.recursive {
            fs::create_dir_all(host)
        } else {
            fs::create_dir(host)
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
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(host, fs::Permissions::from_mode(0o755))
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
