//! `kiln verify` (hidden): runs a role's verify checks on this target, the
//! fleet's health checks after a converge.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::engine::{self, Request};
use crate::error::{Error, PolicyError};
use crate::platform::facts::Facts;
use crate::platform::target::Target;
use crate::policy::Repository;

pub struct Verify {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    pub fqdn: Option<String>,
    pub root: Option<PathBuf>,
    pub json: bool,
}

#[derive(Serialize)]
struct CheckOut {
    check: String,
    origin: String,
    ok: bool,
    detail: String,
}

pub fn run(v: Verify) -> Result<i32, Error> {
    let repo = Repository::open(&v.repo)?;
    if v.roles.is_empty() {
        return Err(PolicyError::new("verify: no role given")
            .fix("pass --role NAME")
            .into());
    }
    let target = match &v.root {
        Some(d) => Target::at_root(d),
        None => Target::host(),
    };
    let facts = Facts::gather(&target, v.fqdn.as_deref());
    let req = Request {
        run_list: v.roles.iter().map(|r| format!("role[{r}]")).collect(),
        ..Request::default()
    };
    let policy = engine::compile(&repo, &req, &facts)?;
    let mut checks = Vec::new();
    for c in &policy.verify {
        let r = c.run(&target, &policy.pins);
        checks.push(CheckOut {
            check: c.label(),
            origin: c.origin.clone(),
            ok: r.is_ok(),
            detail: r.unwrap_or_else(|e| e),
        });
    }
    let success = checks.iter().all(|c| c.ok);
    let mut out = std::io::stdout().lock();
    if v.json {
        let _ = serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "success": success, "checks": checks }),
        );
        let _ = writeln!(out);
    } else {
        for c in &checks {
            let _ = writeln!(
                out,
                "  {:<6} {} ({}): {}",
                if c.ok { "ok" } else { "FAILED" },
                c.check,
                c.origin,
                c.detail
            );
        }
        let _ = writeln!(
            out,
            "kiln verify: {}/{} checks passed",
            checks.iter().filter(|c| c.ok).count(),
            checks.len()
        );
    }
    Ok(if success { 0 } else { 1 })
}
