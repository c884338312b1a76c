//! `kiln fingerprint`: the managed state of a target as one sha256.

use std::path::PathBuf;

use crate::engine::{self, Node, Report};
use crate::error::{Error, PolicyError, RunError};
use crate::fingerprint;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::secrets::Placeholder;

pub struct Fingerprint {
    pub repo: PathBuf,
    pub root: Option<PathBuf>,
    /// Take the managed resources from these roles' policy instead of the last run.
    pub roles: Vec<String>,
    pub fqdn: Option<String>,
    pub explain: bool,
    pub json: bool,
}

pub fn run(c: Fingerprint) -> Result<i32, Error> {
    let target = match &c.root {
        Some(dir) if !dir.is_dir() => {
            return Err(Error::Usage(format!(
                "--root {}: no such directory",
                dir.display()
            )));
        }
        Some(dir) => Target::at_root_read_only(dir),
        None => Target::host(),
    };
    let last_path = Report::last_run_path(&target);
    let last = Report::load_last(&target)?;

    let ids = if c.roles.is_empty() {
        let Some(last) = &last else {
            return Err(PolicyError::new(format!(
                "this target has no kiln run recorded ({} does not exist), so which resources kiln manages here is unknown",
                last_path.display()
            ))
            .fix("run kiln converge first, or pass --role R to fingerprint by policy")
            .into());
        };
        last.managed_ids().ok_or_else(|| {
            RunError::precondition(format!("{} lists no resources", last_path.display()))
                .fix("run kiln converge again to rewrite it")
        })?
    } else {
        // By policy: the resources these roles would manage on this node.
        let repo = Repository::open(&c.repo)?;
        let fqdn = c.fqdn.clone().or_else(|| {
            last.as_ref()
                .map(|l| l.fqdn.clone())
                .filter(|f| !f.is_empty())
        });
        let node = Node {
            fqdn,
            ..Node::roles(&c.roles)
        };
        let facts = node.facts(&target);
        let policy = engine::compile(&repo, &node, &facts, &Placeholder)?;
        engine::managed_ids(&policy)
    };

    let mut fp = fingerprint::compute(&target, &ids);
    if let Some(last) = &last {
        fp.substitutions = last.substitutions.clone();
    }
    if c.json {
        println!("{}", serde_json::to_string_pretty(&fp).unwrap_or_default());
    } else if c.explain {
        print!("{}", fp.explain());
    } else {
        println!("{}", fp.fingerprint);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint_of(root: &std::path::Path) -> Error {
        run(Fingerprint {
            repo: root.to_path_buf(),
            root: Some(root.to_path_buf()),
            roles: Vec::new(),
            fqdn: None,
            explain: false,
            json: false,
        })
        .unwrap_err()
    }

    /// A last-run file kiln cannot use is a failure on the target, worded
    /// as before, with how to get a new one.
    #[test]
    fn an_unusable_last_run_says_how_to_rewrite_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir
            .path()
            .join(crate::engine::report::LAST_RUN.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");

        std::fs::write(&file, "not json").expect("write");
        let e = fingerprint_of(dir.path());
        assert!(matches!(e, Error::Run(RunError::Platform(_))), "{e:?}");
        let text = e.render();
        assert!(
            text.starts_with(&format!(
                "error: {} is not a kiln run report: ",
                file.display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with("; run kiln converge again to rewrite it"),
            "{text}"
        );

        let empty = serde_json::to_string(&Report::default()).expect("json");
        std::fs::write(&file, empty).expect("write");
        let e = fingerprint_of(dir.path());
        assert!(
            matches!(e, Error::Run(RunError::Precondition { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.render(),
            format!(
                "error: {} lists no resources; run kiln converge again to rewrite it",
                file.display()
            )
        );
    }
}
