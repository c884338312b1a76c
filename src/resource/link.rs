//! `link`: a symbolic link, replaced atomically when it points elsewhere.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::file::check_absolute;
use super::state::{link_to, missing};
use super::{
    Action, BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef,
    actions,
};
use crate::error::{PolicyError, RunError};

pub const TYPE: TypeDef = TypeDef::of::<Link>("link", &["to"], build);

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
    let creates = spec
        .actions
        .iter()
        .any(|a| LinkAction::parse(a) == Some(LinkAction::Create));
    if l.to.is_empty() && creates {
        return Err(PolicyError::new("a link needs `to`, the path it points at")
            .fix("add to = \"/path/it/points/at\", or action = \"delete\""));
    }
    l.path = spec.name.clone();
    Ok(Box::new(l))
}

actions! {
    pub enum LinkAction {
        Create = "create",
        Delete = "delete",
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LinkChange {
    Create { to: String },
    Retarget { from: String, to: String },
    ReplaceFile { to: String },
    Delete,
}

impl fmt::Display for LinkChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkChange::Create { to } => write!(f, "create -> {to}"),
            LinkChange::Retarget { from, to } => write!(f, "retarget {from} -> {to}"),
            LinkChange::ReplaceFile { to } => write!(f, "replace file with link -> {to}"),
            LinkChange::Delete => write!(f, "delete"),
        }
    }
}

impl Item for LinkChange {}

impl Converge for Link {
    type Action = LinkAction;
    type Item = LinkChange;

    fn check(&self, action: LinkAction, cx: &mut Context) -> ResourceResult<Vec<LinkChange>> {
        let tfs = cx.target.fs();
        let (meta, current) = match tfs.look_link(&self.path) {
            Ok((m, to)) => (Some(m), to),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(RunError::io("inspect", &self.path, e)),
        };
        let is_link = current.is_some();
        let to = || self.to.clone();
        if action == LinkAction::Delete {
            return Ok(if is_link {
                vec![LinkChange::Delete]
            } else {
                vec![]
            });
        }
        match (meta, is_link) {
            (None, _) => Ok(vec![LinkChange::Create { to: to() }]),
            (Some(_), true) => {
                let cur = current.unwrap_or_default();
                Ok(if cur == Path::new(&self.to) {
                    vec![]
                } else {
                    vec![LinkChange::Retarget {
                        from: cur.display().to_string(),
                        to: to(),
                    }]
                })
            }
            (Some(m), false) if m.is_dir() => Err(RunError::precondition(format!(
                "{} is a directory; a link resource will not replace it",
                self.path
            ))),
            (Some(_), false) => Ok(vec![LinkChange::ReplaceFile { to: to() }]),
        }
    }

    fn apply(&self, _: LinkAction, diff: &[LinkChange], cx: &mut Context) -> ResourceResult<()> {
        let tfs = cx.target.fs();
        if matches!(diff, [LinkChange::Delete]) {
            return tfs
                .remove_file(&self.path)
                .map_err(|e| RunError::io("delete", &self.path, e));
        }
        // Build the link under a temporary name, then rename over the old path.
        let path = Path::new(&self.path);
        let tmp = path.with_file_name(format!(
            ".kiln-link-{}-{}",
            std::process::id(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = tfs.remove_file(&tmp);
        tfs.symlink(&self.to, &tmp)
            .map_err(|e| RunError::io("create link", &self.path, e))?;
        tfs.rename(&tmp, path).map_err(|e| {
            let _ = tfs.remove_file(&tmp);
            RunError::io("replace", &self.path, e)
        })
    }

    fn fingerprint(path: &str, state: &mut State) -> Option<String> {
        let tfs = state.target.fs();
        Some(match tfs.symlink_metadata(path) {
            Err(e) => missing(&e),
            // A symlink's mode is always 0777: only its target and owner say anything.
            Ok(m) if m.file_type().is_symlink() => format!(
                "to={} owner={} group={}",
                link_to(tfs, path),
                state.user_name(m.uid()),
                state.group_name(m.gid())
            ),
            Ok(m) if m.is_dir() => format!("kind=directory {}", state.ownership(&m)),
            Ok(m) => format!("kind=file {}", state.ownership(&m)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::user::tests::{NoEnv, spec};
    use super::*;
    use crate::platform::target::Target;

    #[test]
    fn the_plan_renders_for_people_and_machines() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::at_root(dir.path());
        let mut cx = Context::new(&target);
        let l = build(&spec("/current", "to = \"/srv/app\""), &NoEnv).unwrap();
        let planned = l.plan("create", &mut cx).unwrap();
        assert_eq!(planned.changes[0].summary, "create -> /srv/app");
        assert_eq!(
            planned.to_json(),
            serde_json::json!({
                "action": "create",
                "changes": [{"change": "create", "to": "/srv/app"}],
            })
        );
        l.apply_plan(&planned, &mut cx).unwrap();
        assert!(l.plan("create", &mut cx).unwrap().is_empty());
    }
}
