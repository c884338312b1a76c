//! `kiln verify` (hidden): runs a role's verify checks on this target, the
//! fleet's health checks after a converge; and `kiln verify-bundle`
//! (hidden), the signature check a fleet host makes before it unpacks.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{self, Converge, Event};
use crate::error::{Error, PolicyError};
use crate::fleet::protocol::HostReport;
use crate::verify::{CheckOutcome, run_all};

pub struct Verify {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    pub fqdn: Option<String>,
    pub root: Option<PathBuf>,
    pub json: bool,
    /// Converge first, in this process (the fleet's one remote command per
    /// host), and check only after a successful converge.
    pub converge: bool,
    pub why_run: bool,
    /// A node file: the fleet and the agent pass the bundle's
    /// `nodes/FQDN.toml`, so that a host's fqdn, roles and attributes come
    /// signed, never from a command line.
    pub node: Option<PathBuf>,
    pub size: Option<String>,
    pub lock_timeout: Duration,
}

pub fn run(v: Verify) -> Result<i32, Error> {
    if v.roles.is_empty() && v.node.is_none() {
        return Err(PolicyError::new("verify: no role given")
            .fix("pass --role NAME, or --node FILE with a run_list")
            .into());
    }
    let c = Converge {
        fqdn: v.fqdn.clone(),
        node: v.node.clone(),
        size: v.size.clone(),
        root: v.root.clone(),
        // Checks alone only read: a --root tree's programs see it read-only.
        why_run: v.why_run || !v.converge,
        lock_timeout: v.lock_timeout,
        ..Converge::roles(&v.repo, &v.roles)
    };
    let prepared = engine::prepare(&c)?;
    let mut doc = HostReport::default();
    let mut out = std::io::stdout().lock();
    if v.converge {
        let json = v.json;
        let report = prepared.apply(&mut |e| match e {
            Event::Resource(r) if !json => {
                if let Some(line) = r.line() {
                    let _ = writeln!(out, "{line}");
                }
            }
            Event::Resource(_) => {}
            Event::Warning(w) => eprintln!("warning: {w}"),
        })?;
        if !json {
            let _ = writeln!(out, "{}", report.summary());
        }
        let ok = report.success;
        doc.converge = Some(report);
        if v.why_run {
            doc.desired = engine::desired_digests(&prepared.policy);
        }
        if !ok || v.why_run {
            if json {
                let _ = writeln!(out, "{}", doc.to_json());
            }
            return Ok(if ok { 0 } else { 1 });
        }
    }
    let checks = run_all(
        &prepared.policy.verify,
        &prepared.target,
        &prepared.policy.pins,
    );
    doc = HostReport {
        converge: doc.converge,
        ..HostReport::checks(checks)
    };
    if v.json {
        let _ = writeln!(out, "{}", doc.to_json());
    } else {
        print_checks(&mut out, doc.checks.as_deref().unwrap_or_default());
    }
    Ok(if doc.success { 0 } else { 1 })
}

/// What `kiln verify-bundle` is asked to check.
pub struct Bundle {
    pub file: PathBuf,
    /// Default: the file beside it, FILE.sig.
    pub signature: Option<PathBuf>,
    pub allowed_signers: PathBuf,
    /// With no allowed_signers yet: start from the bundle's own copy.
    pub first_contact: bool,
}

/// Checks a bundle's signature and names its signer; a refusal is an error.
pub fn bundle(b: Bundle) -> Result<i32, Error> {
    let sig = b
        .signature
        .unwrap_or_else(|| PathBuf::from(crate::trust::sig_path(&b.file.to_string_lossy())));
    let v = crate::trust::verify_bundle(&b.file, &sig, &b.allowed_signers, b.first_contact)?;
    println!(
        "{}: signed by {} (per {})",
        b.file.display(),
        v.signer,
        v.allowed_signers.display()
    );
    Ok(0)
}

fn print_checks(out: &mut impl Write, checks: &[CheckOutcome]) {
    for c in checks {
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
