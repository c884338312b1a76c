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
    /// Converge first, in this process (the fleet's one remote command per
    /// host): the run report, then [`AFTER_CONVERGE`], then the checks.
    pub converge: bool,
    pub why_run: bool,
}

/// Printed between the converge report and the checks' report.
pub const AFTER_CONVERGE: &str = "\n--kiln-verify--\n";

#[derive(Serialize)]
struct CheckOut {
    check: String,
    origin: String,
    ok: bool,
    detail: String,
}

pub fn run(v: Verify) -> Result<i32, Error> {
    if v.converge {
        let code = super::converge::run(super::converge::Converge {
            repo: v.repo.clone(),
            roles: v.roles.clone(),
            run_list: vec![],
            fqdn: v.fqdn.clone(),
            node: None,
            size: None,
            root: v.root.clone(),
            why_run: v.why_run,
            json: true,
            detailed_exitcodes: false,
            lock_timeout: std::env::var("KILN_LOCK_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs,
                ),
        })?;
        if code != 0 || v.why_run {
            return Ok(code);
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(AFTER_CONVERGE.as_bytes());
        let _ = out.flush();
    }
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
