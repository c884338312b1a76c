//! One converge of this host: `kiln verify --converge`, the same converge
//! and health checks a push runs, in a process of its own, and what its
//! JSON report says.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Agent, State};
use crate::engine::{LAST_RUN, Status};
use crate::fleet::bundle::node_path;
use crate::fleet::protocol::HostReport;
use crate::platform::facts::Facts;
use crate::platform::target::Target;

/// Why a run did not converge at all.
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    #[error("cannot hash {}: {source}", exe.display())]
    Unhashable {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has sha256 {got}, not the {want} it was pushed with: altered on this host, not run",
        exe.display()
    )]
    Altered {
        exe: PathBuf,
        got: String,
        want: String,
    },
    #[error(
        "this host's roles are unknown (no --role, no node file of {fqdn} in the bundle, and no earlier run in {LAST_RUN}); pass --role R (remembered for later runs), or push to the host with kiln fleet converge"
    )]
    NoRoles { fqdn: String },
}

/// The `kiln verify --converge` command for `repo`, with this host's node:
/// its node file in the bundle, else its remembered roles and fqdn.
pub fn command(
    a: &Agent,
    state: &State,
    repo: &Path,
    log: &dyn Fn(&str),
) -> Result<Command, NotRun> {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("kiln"));
    check_pushed_binary(&exe)?;
    let mut c = Command::new(exe);
    c.arg("--repo")
        .arg(repo)
        .args(["verify", "--converge", "--json"]);
    // The bundle's node file of this host, when it has one: fqdn, roles and
    // attributes as the push converged them, signed with the bundle.
    let node = state
        .fqdn
        .clone()
        .or_else(|| Facts::gather(&Target::host(), None).fqdn.into())
        .map(|f| node_path(repo, &f))
        .filter(|p| p.is_file());
    match &node {
        Some(n) => {
            c.arg("--node").arg(n);
            // Roles given to this agent on its command line still win.
            for r in &a.roles {
                c.arg("--role").arg(r);
            }
        }
        None if state.roles.is_empty() => {
            return Err(NotRun::NoRoles {
                fqdn: state
                    .fqdn
                    .clone()
                    .unwrap_or_else(|| "this host".to_string()),
            });
        }
        None => {
            for r in &state.roles {
                c.arg("--role").arg(r);
            }
            if let Some(f) = &state.fqdn {
                c.arg("--fqdn").arg(f);
            }
        }
    }
    if let Some(size) = &state.size {
        c.arg("--size").arg(size);
    }
    if let Some(n) = &node {
        log(&format!("node from {}", n.display()));
    }
    Ok(c)
}

/// A kiln binary the fleet pushed is named `kiln.SHA256`: it is run again
/// (for each converge) only while it still has that hash.
fn check_pushed_binary(exe: &Path) -> Result<(), NotRun> {
    let Some(want) = exe
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("kiln."))
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    else {
        return Ok(());
    };
    let got = crate::digest::sha256_file(exe).map_err(|source| NotRun::Unhashable {
        exe: exe.to_path_buf(),
        source,
    })?;
    if got != want {
        return Err(NotRun::Altered {
            exe: exe.to_path_buf(),
            got,
            want: want.to_string(),
        });
    }
    Ok(())
}

/// What one converge and its checks came to.
pub struct Outcome {
    /// The JSON report, when kiln wrote one.
    pub report: Option<HostReport>,
    pub updated: usize,
    pub failed: usize,
    pub success: bool,
    pub checks_failed: usize,
}

/// Reads the converge's report and logs how it went: the failed
/// resources' own errors (else what kiln printed), then the checks.
pub fn outcome(stdout: &[u8], stderr: &[u8], elapsed_ms: f64, log: &dyn Fn(&str)) -> Outcome {
    let doc = HostReport::parse(&String::from_utf8_lossy(stdout)).ok();
    let report = doc.as_ref().and_then(|d| d.converge.as_ref());
    let (updated, failed, success) = match report {
        Some(r) => (r.updated, r.failed, r.success),
        None => (0, 1, false),
    };
    if success {
        log(&format!(
            "converged: {updated} resource(s) updated in {elapsed_ms:.0} ms"
        ));
    } else {
        let mut why: Vec<String> = report
            .into_iter()
            .flat_map(|r| &r.resources)
            .filter(|e| e.status == Status::Failed)
            .map(|e| format!("{}: {}", e.resource, e.error.as_deref().unwrap_or("")))
            .collect();
        if why.is_empty() {
            why.push(String::from_utf8_lossy(stderr).trim().to_string());
        }
        log(&format!(
            "converge FAILED ({failed} failed, {updated} updated): {}",
            why.join("; ")
        ));
    }
    // The health checks ran only after a successful converge.
    let checks = doc.as_ref().and_then(|d| d.checks.as_deref());
    let checks_failed = match checks {
        Some(checks) => {
            let bad: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{} ({}): {}", c.check, c.origin, c.detail))
                .collect();
            if bad.is_empty() {
                log(&format!(
                    "verify: {}/{} checks passed",
                    checks.len(),
                    checks.len()
                ));
            } else {
                log(&format!(
                    "verify FAILED: {}/{} checks passed; {}",
                    checks.len() - bad.len(),
                    checks.len(),
                    bad.join("; ")
                ));
            }
            bad.len()
        }
        None => 0,
    };
    Outcome {
        report: doc,
        updated,
        failed,
        success,
        checks_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_binary_runs_only_at_its_hash() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("kiln");
        std::fs::write(&plain, b"anything").unwrap();
        assert!(check_pushed_binary(&plain).is_ok());
        let sha = crate::digest::sha256_file(&plain).unwrap();
        let pushed = d.path().join(format!("kiln.{sha}"));
        std::fs::write(&pushed, b"anything").unwrap();
        assert!(check_pushed_binary(&pushed).is_ok());
        std::fs::write(&pushed, b"altered").unwrap();
        let e = check_pushed_binary(&pushed).unwrap_err().to_string();
        assert!(e.ends_with("altered on this host, not run"), "{e}");
    }

    #[test]
    fn no_report_is_a_failed_run_with_what_kiln_printed() {
        let lines = std::cell::RefCell::new(Vec::new());
        let o = outcome(b"", b"error: no such role\n", 5.0, &|m| {
            lines.borrow_mut().push(m.to_string())
        });
        assert!(!o.success);
        assert_eq!(o.failed, 1);
        assert_eq!(
            lines.into_inner(),
            ["converge FAILED (1 failed, 0 updated): error: no such role"]
        );
    }
}
