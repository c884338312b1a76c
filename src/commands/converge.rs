//! `kiln converge`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{self, Options, Request, lock::RunLock};
use crate::error::{Error, PolicyError};
use crate::platform::facts::Facts;
use crate::platform::target::Target;
use crate::policy::{Repository, load_toml};

pub struct Converge {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    pub run_list: Vec<String>,
    pub fqdn: Option<String>,
    pub node: Option<PathBuf>,
    pub size: Option<String>,
    pub root: Option<PathBuf>,
    pub why_run: bool,
    pub json: bool,
    pub detailed_exitcodes: bool,
    pub lock_timeout: Duration,
}

/// A node file: what one host adds to the policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub fqdn: Option<String>,
    #[serde(default)]
    pub run_list: Vec<String>,
    pub size: Option<String>,
    #[serde(default)]
    pub attributes: toml::Table,
}

pub fn run(c: Converge) -> Result<i32, Error> {
    let repo = Repository::open(&c.repo)?;
    let node: NodeFile = match &c.node {
        Some(p) => load_toml(p)?.0,
        None => NodeFile::default(),
    };
    let mut run_list: Vec<String> = c.roles.iter().map(|r| format!("role[{r}]")).collect();
    run_list.extend(c.run_list.iter().cloned());
    if run_list.is_empty() {
        run_list = node.run_list.clone();
    }
    if run_list.is_empty() {
        return Err(PolicyError::new("nothing to converge: the run list is empty")
            .fix("pass --role NAME or --run-list recipe[COOKBOOK], or give a --node file with run_list")
            .into());
    }
    let target = match &c.root {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--root {}: no such directory; point it at a Debian root (e.g. one made with mmdebstrap)",
                    dir.display()
                )));
            }
            Target::at_root(dir)
        }
        None => Target::host(),
    };
    let facts = Facts::gather(&target, c.fqdn.as_deref().or(node.fqdn.as_deref()));
    let req = Request {
        run_list,
        size: c.size.clone().or(node.size.clone()),
        node_attributes: node.attributes.clone(),
    };
    // Every policy error surfaces before the lock is even taken.
    let policy = engine::compile(&repo, &req, &facts)?;

    let _lock = RunLock::acquire(&target, c.lock_timeout)?;
    let json = c.json;
    let why_run = c.why_run;
    let mut out = std::io::stdout().lock();
    let mut progress = |r: &engine::ResourceReport| {
        if json {
            return;
        }
        if let Some(line) = r.line() {
            let _ = writeln!(out, "{line}");
            if why_run && let Some(d) = &r.diff {
                for l in d.lines() {
                    let _ = writeln!(out, "      {l}");
                }
            }
        }
    };
    let report = engine::converge(&target, &policy, &Options { why_run }, &mut progress);
    if !why_run && let Err(e) = report.save(&target) {
        eprintln!("warning: cannot keep the run report: {e}");
    }
    if json {
        let _ = serde_json::to_writer_pretty(&mut out, &report);
        let _ = writeln!(out);
    } else {
        let _ = writeln!(out, "{}", report.summary());
    }
    let changed = report.updated > 0;
    let failed = !report.success;
    Ok(match (c.detailed_exitcodes, changed, failed) {
        (false, _, true) => 1,
        (false, _, false) => 0,
        (true, false, false) => 0,
        (true, true, false) => 2,
        (true, false, true) => 4,
        (true, true, true) => 6,
    })
}
