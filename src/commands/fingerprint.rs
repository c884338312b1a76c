//! `kiln fingerprint`: the managed state of a target as one sha256.

use std::path::PathBuf;

use crate::engine::{self, Node, Report};
use crate::error::{Error, PolicyError};
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
    let last = Report::load_last(&target).map_err(|e| Error::Target(e.to_string()))?;

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
            Error::Target(format!(
                "{} lists no resources; run kiln converge again to rewrite it",
                last_path.display()
            ))
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
