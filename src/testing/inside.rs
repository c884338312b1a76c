//! What runs inside a test target: converge, converge again, verify. The
//! policy is compiled before entering the sandbox (the repository is outside
//! the target root); the outcome goes to stdout as JSON for `kiln test`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::{self, Converge, Event, Status};
use crate::platform::sandbox::namespaces::{self, Network};
use crate::platform::sandbox::{self, close_inherited, reap_until};
use crate::platform::target::{Durability, Target};
pub use crate::verify::CheckOutcome;

pub struct InsideArgs {
    pub root: PathBuf,
    pub repo: PathBuf,
    pub role: String,
    pub fqdn: String,
    pub size: Option<String>,
    pub pins: engine::PinMode,
    /// A file saying which part of the converge this is ([`PartFile`]);
    /// none: the whole test.
    pub part: Option<PathBuf>,
}

/// How `kiln test` runs one part of a role's test: read before the
/// sandbox is entered (the file lies outside the target's root).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PartFile {
    /// A checkpoint's part: the first converge up to this resource, and
    /// nothing else. None: the test itself (converge, again, verify).
    pub until: Option<usize>,
    /// Delayed notifications an earlier part fired.
    pub pending: Vec<engine::Pending>,
    /// The test values' key of the earlier parts (hex).
    pub test_key: Option<String>,
}

/// Where a part stopped, for its checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PartEnd {
    pub pending: Vec<engine::Pending>,
    pub test_key: String,
}

/// One converge, as the orchestrator needs it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub updated: Vec<String>,
    /// `resource: reason`
    pub failed: Vec<String>,
    pub total: usize,
    pub elapsed_ms: f64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InsideOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub first: Option<RunSummary>,
    pub second: Option<RunSummary>,
    pub verify: Vec<CheckOutcome>,
    /// Pins no source offered, and what the test converged instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitutions: Vec<crate::platform::pins::Substitution>,
    /// A checkpoint's part, ended where it was to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_end: Option<PartEnd>,
}

/// Phase markers on stderr let the orchestrator show progress.
pub const PHASE: &str = "kiln-test-phase: ";

fn phase(name: &str) {
    eprintln!("{PHASE}{name}");
}

fn summarize(r: &engine::Report) -> RunSummary {
    let mut s = RunSummary {
        total: r.total,
        elapsed_ms: r.elapsed_ms,
        ..RunSummary::default()
    };
    for e in &r.resources {
        match e.status {
            Status::Updated => {
                let what = format!("{} ({})", e.resource, e.changes.join(", "));
                let seen = s
                    .updated
                    .iter()
                    .any(|u| u.split(' ').next() == Some(e.resource.as_str()));
                if !seen {
                    s.updated.push(what);
                }
            }
            Status::Failed => s.failed.push(format!(
                "{}: {}",
                e.resource,
                e.error.clone().unwrap_or_default()
            )),
            _ => {}
        }
    }
    s
}

pub fn run(a: InsideArgs) -> i32 {
    // Only PID 1 of the new namespaces comes back from here.
    let outcome = match namespaces::enter(Network::Own) {
        Ok(()) => inside(&a),
        Err(e) => InsideOutcome {
            error: Some(e.to_string()),
            ..InsideOutcome::default()
        },
    };
    let mut shown = serde_json::to_value(&outcome).unwrap_or_default();
    crate::secrets::redact::json(&mut shown);
    println!("{shown}");
    // The worker's exit ends the reaper, and with it the namespace.
    std::process::exit(0)
}

fn inside(a: &InsideArgs) -> InsideOutcome {
    let mut out = InsideOutcome::default();
    phase("compile");
    let part: PartFile = match &a.part {
        None => PartFile::default(),
        Some(p) => match std::fs::read(p).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(part)) => part,
            Ok(Err(e)) => {
                out.error = Some(format!("{}: {e}", p.display()));
                return out;
            }
            Err(e) => {
                out.error = Some(format!("cannot read {}: {e}", p.display()));
                return out;
            }
        },
    };
    let c = Converge {
        fqdn: Some(a.fqdn.clone()),
        size: a.size.clone(),
        root: Some(a.root.clone()),
        // Throwaway roots are nobody's recipients: test values, with the
        // key kiln test chose for the role (random without one).
        test_secrets: true,
        test_key: part.test_key.as_deref().and_then(|k| hex::decode(k).ok()),
        pins: a.pins,
        // The overlay is removed after the test, and on a crash.
        durability: Durability::Throwaway,
        ..Converge::roles(&a.repo, std::slice::from_ref(&a.role))
    };
    let prepared = match engine::prepare(&c) {
        Ok(p) => p,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let hostname = a.fqdn.split('.').next().unwrap_or("kiln-test");
    if let Err(e) = sandbox::enter(&a.root, hostname) {
        out.error = Some(e.to_string());
        return out;
    }
    // PID 1 must reap orphans, or a daemon that died would linger as a
    // zombie that looks alive to its init script: fork a worker, and reap.
    // SAFETY: no other thread exists in this process yet.
    let worker = unsafe { libc::fork() };
    if worker < 0 {
        out.error = Some(format!("fork: {}", std::io::Error::last_os_error()));
        return out;
    }
    if worker > 0 {
        // PID 1 only reaps from here on: nothing it opened before the
        // pivot (the target's root among them, whose `..` leads back to
        // the host) may stay readable through /proc/1/fd.
        close_inherited();
        std::process::exit(reap_until(worker));
    }
    // Inside the sandbox the target's root is `/`.
    let prepared = prepared.on(Target::host().with_durability(Durability::Throwaway));
    let mut log = |e: Event| match e {
        Event::Resource(r) => {
            if let Some(l) = r.line() {
                eprintln!("{l}");
            }
        }
        Event::Warning(w) => eprintln!("warning: {w}"),
    };
    let first_part = engine::Part {
        until: part.until,
        pending: part.pending.clone(),
    };
    let mut converge =
        |out: &mut InsideOutcome, part: &engine::Part| match prepared.apply_part(part, &mut log) {
            Ok(r) => {
                eprintln!("{}", r.summary());
                Some(r)
            }
            Err(e) => {
                out.error = Some(e.to_string());
                None
            }
        };
    phase("converge");
    let Some(first) = converge(&mut out, &first_part) else {
        return out;
    };
    out.first = Some(summarize(&first));
    out.substitutions = first.substitutions.clone();
    if !first.success {
        return out;
    }
    if part.until.is_some() {
        out.part_end = Some(PartEnd {
            pending: first.pending.clone(),
            test_key: hex::encode(prepared.test_key.as_deref().unwrap_or_default()),
        });
        return out;
    }
    phase("converge again");
    let Some(second) = converge(&mut out, &engine::Part::default()) else {
        return out;
    };
    out.second = Some(summarize(&second));
    phase("verify");
    let policy = &prepared.policy;
    // A package check holds the version the converge installed.
    let mut pins = policy.pins.clone();
    for s in &second.substitutions {
        if let Some(p) = pins.get_mut(&s.package) {
            p.version = s.substitute.clone();
        }
    }
    for c in crate::verify::run_all(&policy.verify, &prepared.target, &pins) {
        let r: Result<&str, &str> = if c.ok { Ok(&c.detail) } else { Err(&c.detail) };
        eprintln!("  verify {}: {:?}", c.check, r);
        out.verify.push(c);
    }
    out
}
