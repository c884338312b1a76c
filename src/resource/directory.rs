//! `directory`: a directory with owner, group and mode.

use std::fs;

use serde::Deserialize;

use super::file::check_absolute;
use super::fsmeta::Meta;
use super::{BuildEnv, Change, Context, Resource, ResourceResult, Spec, TypeDef};
use crate::error::PolicyError;

pub const TYPE: TypeDef = TypeDef {
    name: "directory",
    actions: &["create", "delete"],
    properties: &["owner", "group", "mode", "recursive"],
    build,
};

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

impl Resource for Directory {
    fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
        let host = cx.target.path(&self.path);
        let meta = fs::metadata(&host).ok();
        if action == "delete" {
            return Ok(match meta {
                Some(m) if m.is_dir() => vec![Change::new("delete")],
                _ => vec![],
            });
        }
        match meta {
            None => Ok(vec![Change::new("create")]),
            Some(m) if !m.is_dir() => Err(format!(
                "{} exists and is not a directory; remove it or manage it as a file",
                self.path
            )),
            Some(m) => Ok(self.meta.changes(&m, cx)),
        }
    }

    fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
        let host = cx.target.path(&self.path);
        let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", self.path);
        if action == "delete" {
            let r = if self.recursive {
                fs::remove_dir_all(&host)
            } else {
                fs::remove_dir(&host)
            };
            return r.map_err(|e| fail("delete", e));
        }
        if !host.exists() {
            let r = if self.recursive {
                fs::create_dir_all(&host)
            } else {
                fs::create_dir(&host)
            };
            r.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "cannot create {}: its parent does not exist; set recursive = true or create the parent first",
                        self.path
                    )
                } else {
                    fail("create", e)
                }
            })?;
            if self.meta.mode.is_none() {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                    .map_err(|e| fail("chmod", e))?;
            }
        }
        self.meta.set(&host, cx)
    }
}
