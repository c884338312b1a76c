//! `link`: a symbolic link, replaced atomically when it points elsewhere.

use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::file::check_absolute;
use super::{BuildEnv, Change, Context, Resource, ResourceResult, Spec, TypeDef};
use crate::error::PolicyError;

pub const TYPE: TypeDef = TypeDef {
    name: "link",
    actions: &["create", "delete"],
    properties: &["to"],
    build,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    #[serde(skip)]
    path: String,
    /// Needed to create; a link being deleted needs no target.
    #[serde(default)]
    to: String,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let mut l: Link = spec.props()?;
    check_absolute(&spec.name)?;
    if l.to.is_empty() && spec.actions.iter().any(|a| a == "create") {
        return Err(PolicyError::new("a link needs `to`, the path it points at")
            .fix("add to = \"/path/it/points/at\", or action = \"delete\""));
    }
    l.path = spec.name.clone();
    Ok(Box::new(l))
}

impl Resource for Link {
    fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
        let host = cx.target.path(&self.path);
        let meta = fs::symlink_metadata(&host).ok();
        let is_link = meta.as_ref().is_some_and(|m| m.file_type().is_symlink());
        if action == "delete" {
            return Ok(if is_link {
                vec![Change::new("delete")]
            } else {
                vec![]
            });
        }
        match (meta, is_link) {
            (None, _) => Ok(vec![Change::new(format!("create -> {}", self.to))]),
            (Some(_), true) => {
                let cur = fs::read_link(&host).unwrap_or_default();
                Ok(if cur == Path::new(&self.to) {
                    vec![]
                } else {
                    vec![Change::new(format!(
                        "retarget {} -> {}",
                        cur.display(),
                        self.to
                    ))]
                })
            }
            (Some(m), false) if m.is_dir() => Err(format!(
                "{} is a directory; a link resource will not replace it",
                self.path
            )),
            (Some(_), false) => Ok(vec![Change::new(format!(
                "replace file with link -> {}",
                self.to
            ))]),
        }
    }

    fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
        let host = cx.target.path(&self.path);
        if action == "delete" {
            return fs::remove_file(&host).map_err(|e| format!("cannot delete {}: {e}", self.path));
        }
        // Build the link under a temporary name, then rename over the old path.
        let dir = host.parent().unwrap_or(Path::new("/"));
        let tmp = dir.join(format!(
            ".kiln-link-{}-{}",
            std::process::id(),
            host.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.to, &tmp)
            .map_err(|e| format!("cannot create link {}: {e}", self.path))?;
        fs::rename(&tmp, &host).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot replace {}: {e}", self.path)
        })
    }
}
