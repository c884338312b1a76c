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

/// Where the role's first converge starts and stops for checkpoints: read
/// before the sandbox is entered (the file lies outside the target's root).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PartFile {
    /// The resources after which the converge stops for a checkpoint, the
    /// last one last; none: one converge, with no checkpoint.
    pub cuts: Vec<usize>,
    /// Delayed notifications fired before the checkpoint it starts from.
    pub pending: Vec<engine::Pending>,
    /// The key of the test values of secrets (hex).
    pub test_key: Option<String>,
}

/// A stop of the converge for a checkpoint: stderr says so with
/// [`CUT`], the sandbox's other processes are stopped (SIGSTOP) so that
/// the tree holds still while `kiln test` copies it, and the converge goes
/// on when a line comes on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cut {
    pub until: usize,
    /// Delayed notifications fired so far, to run at the end.
    pub pending: Vec<engine::Pending>,
}

/// The marker of a [`Cut`] on stderr.
pub const CUT: &str = "kiln-test-cut: ";

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
}

/// Duplicates stdin where no program started from here inherits it
/// (close-on-exec), and puts /dev/null in its place.
fn take_stdin() -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsFd, FromRawFd, IntoRawFd};

    let stdin = std::io::stdin();
    let kept = stdin.as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: both descriptors are open; dup2 onto 0 replaces stdin.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `kept` is an open descriptor this function owns.
    Ok(unsafe { std::fs::File::from_raw_fd(kept.into_raw_fd()) })
}

/// Stops every other process of the sandbox (not PID 1, the reaper, nor
/// this one) and waits until each has stopped: the tree then holds still.
fn freeze() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut stopped: Vec<i32> = Vec::new();
    // Again until no new one: a process may fork while a pass runs.
    for _ in 0..10 {
        let new: Vec<i32> = pids()
            .into_iter()
            .filter(|p| *p > 1 && *p != me && !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
        for &p in &new {
            for _ in 0..200 {
                let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // The state follows the command's closing parenthesis.
                let state = state.rsplit_once(") ").map(|(_, r)| r.chars().next());
                if !matches!(state, Some(Some('R' | 'S' | 'D'))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        stopped.extend(new);
    }
    stopped
}

fn thaw(pids: &[i32]) {
    for &p in pids {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
}

/// The processes this one sees (the sandbox's own /proc).
fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Phase markers on stderr let the orchestrator show progress.
pub const PHASE: &str = "kiln-test-phase: ";

fn phase(name: &str) {
    eprintln!("{PHASE}{name}");
}

/// Adds one part's converge to the first converge's summary so far.
fn merge(all: &mut RunSummary, part: RunSummary) {
    for u in part.updated {
        let id = u.split(' ').next().map(str::to_string);
        if !all
            .updated
            .iter()
            .any(|a| a.split(' ').next() == id.as_deref())
        {
            all.updated.push(u);
        }
    }
    all.failed.extend(part.failed);
    all.total = part.total;
    all.elapsed_ms += part.elapsed_ms;
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
    // kiln test's go-ahead after a cut comes on stdin: kept where no program
    // the role runs can read it, with /dev/null as their stdin.
    let control = match take_stdin() {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("cannot take stdin: {e}"));
            return out;
        }
    };
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
    // The first converge: one run, or several parts with a checkpoint after
    // each, the processes the role started kept across them.
    let mut first = RunSummary::default();
    let mut pending = part.pending.clone();
    let mut reader = std::io::BufReader::new(control);
    let stops: Vec<Option<usize>> = match part.cuts.is_empty() {
        true => vec![None],
        false => part.cuts.iter().copied().map(Some).collect(),
    };
    for until in stops {
        let this = engine::Part {
            until,
            pending: std::mem::take(&mut pending),
        };
        let Some(r) = converge(&mut out, &this) else {
            out.first = Some(first);
            return out;
        };
        merge(&mut first, summarize(&r));
        out.substitutions = r.substitutions.clone();
        if !r.success {
            out.first = Some(first);
            return out;
        }
        let Some(until) = until else { break };
        pending = r.pending.clone();
        let cut = Cut {
            until,
            pending: pending.clone(),
        };
        let frozen = freeze();
        eprintln!("{CUT}{}", serde_json::to_string(&cut).unwrap_or_default());
        let mut line = String::new();
        let go = std::io::BufRead::read_line(&mut reader, &mut line);
        thaw(&frozen);
        if !matches!(go, Ok(n) if n > 0) {
            out.error = Some("kiln test went away at a checkpoint".into());
            return out;
        }
    }
    out.first = Some(first);
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
