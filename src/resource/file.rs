//! `file`: a path's content, owner, group and mode.

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde::Deserialize;

use super::fsmeta::{Meta, atomic_write, content_diff, temp_path};
use super::{BuildEnv, Change, Context, Resource, ResourceResult, Spec, TypeDef};
use crate::error::PolicyError;

pub const TYPE: TypeDef = TypeDef {
    name: "file",
    actions: &["create", "delete", "create_if_missing"],
    properties: &["content", "source", "owner", "group", "mode"],
    build,
};

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
    pub content: Option<Vec<u8>>,
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
        (Some(c), None) => Some(c.into_bytes()),
        (None, Some(s)) => Some(env.cookbook_file("files", &s)?),
        (None, None) => None,
    };
    Ok(Box::new(File {
        path: spec.name.clone(),
        content,
        meta: p.meta,
        sensitive: spec.sensitive,
    }))
}

/// Paths on the target are absolute, so that `--root` can place them.
pub fn check_absolute(path: &str) -> Result<(), PolicyError> {
    if path.starts_with('/') && !path.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(PolicyError::new(format!("path {path:?} is not absolute"))
            .fix("name the resource by its absolute path on the target, e.g. \"/etc/motd\""))
    }
}

impl Resource for File {
    fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
        let host = cx.target.path(&self.path);
        let mut out = Vec::new();
        if fs::symlink_metadata(temp_path(&host)).is_ok() {
            out.push(Change::new(
                "remove a partial write left by an interrupted run",
            ));
        }
        let meta = fs::symlink_metadata(&host).ok();
        if action == "delete" {
            if meta.is_some() {
                out.push(Change::new("delete"));
            }
            return Ok(out);
        }
        let Some(meta) = meta else {
            let mut c = Change::new("create");
            if let Some(content) = &self.content {
                c = c.with_diff(Some(content_diff(&self.path, b"", content, self.sensitive)));
            }
            out.push(c);
            return Ok(out);
        };
        if meta.is_dir() {
            return Err(format!(
                "{} is a directory; a file resource cannot replace it",
                self.path
            ));
        }
        if let (Some(want), "create") = (&self.content, action) {
            // Cheap test first: a size mismatch needs no read.
            let same = meta.is_file()
                && meta.len() == want.len() as u64
                && fs::read(&host).is_ok_and(|cur| &cur == want);
            if !same {
                let cur = fs::read(&host).unwrap_or_default();
                out.push(Change::new("update content").with_diff(Some(content_diff(
                    &self.path,
                    &cur,
                    want,
                    self.sensitive,
                ))));
            }
        }
        out.extend(self.meta.changes(&meta, cx));
        Ok(out)
    }

    fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
        let host = cx.target.path(&self.path);
        let _ = fs::remove_file(temp_path(&host));
        if action == "delete" {
            return match fs::remove_file(&host) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot delete {}: {e}", self.path))
                }
                _ => Ok(()),
            };
        }
        let existing = fs::symlink_metadata(&host).ok().filter(|m| m.is_file());
        let rewrite = match (&self.content, &existing) {
            (_, None) => true,
            (Some(want), Some(_)) if action == "create" => {
                fs::read(&host).map_or(true, |cur| &cur != want)
            }
            _ => false,
        };
        if rewrite {
            let cur_content;
            let content: &[u8] = match (&self.content, &existing) {
                (Some(c), _) => c,
                (None, _) => {
                    cur_content = fs::read(&host).unwrap_or_default();
                    &cur_content
                }
            };
            let mut ids = self.meta.ids(cx)?;
            let mode = self
                .meta
                .mode
                .or(existing.as_ref().map(|m| m.mode() & 0o7777))
                .unwrap_or(0o644);
            if let Some(m) = &existing {
                ids.uid = ids.uid.or(Some(m.uid()));
                ids.gid = ids.gid.or(Some(m.gid()));
            }
            atomic_write(&host, content, mode, ids)
        } else {
            self.meta.set(&host, cx)
        }
    }
}
