//! A rollout: canaries first, then batches, `--parallel` hosts at a time
//! inside a batch, and a push hold once more than `--max-fail` hosts failed.
//! Each host: copy kiln and the bundle (once per content hash), verify the
//! hash there, converge, run the roles' verify checks as health checks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;

use super::inventory::Host;
use super::protocol::HostReport;
use super::ssh::{Remote, SshFailure, Transport, q};
use crate::engine::Status;
use crate::verify::CheckOutcome;

pub const BIN_DIR: &str = "/var/lib/kiln/bin";
pub const BUNDLE_DIR: &str = "/var/lib/kiln/bundles";
/// Exit code of the upload script when the file's hash differs on the host.
const HASH_MISMATCH: i32 = 97;
/// Exit code of a host script when the kiln binary on the host no longer
/// has the hash it was uploaded with: it is not run.
const BINARY_ALTERED: i32 = 98;
/// Exit code of the upload script when the host refuses the bundle's
/// signature.
const SIGNATURE_REFUSED: i32 = 96;
/// Exit code of the upload script when the host refuses to unpack the
/// bundle: a member it may not hold, or a serial older than it converged.
const BUNDLE_REFUSED: i32 = 95;

/// What the hosts get.
pub struct Payload {
    pub bundle: Arc<Vec<u8>>,
    pub bundle_sha: String,
    /// The digest of the bundle's policy, its serial aside: a host whose
    /// current bundle holds the same policy converges that one again
    /// instead of receiving this build of it.
    pub bundle_content: String,
    /// The bundle's SSHSIG signature (armored); `None` only when the
    /// operator pushes unsigned on purpose (`--allow-unsigned`).
    pub bundle_sig: Option<String>,
    pub binary_path: std::path::PathBuf,
    pub binary_sha: String,
    /// Read on first need: most runs send it to no one.
    pub binary: OnceLock<Result<Arc<Vec<u8>>, String>>,
}

impl Payload {
    fn binary(&self) -> Result<Arc<Vec<u8>>, String> {
        self.binary
            .get_or_init(|| {
                std::fs::read(&self.binary_path)
                    .map(Arc::new)
                    .map_err(|e| format!("reading {}: {e}", self.binary_path.display()))
            })
            .clone()
    }

    pub fn remote_kiln(&self) -> String {
        format!("{BIN_DIR}/kiln.{}", self.binary_sha)
    }

    pub fn remote_repo(&self) -> String {
        format!("{BUNDLE_DIR}/{}", self.bundle_sha)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub canary: Option<usize>,
    pub batch: Option<BatchSize>,
    pub parallel: usize,
    pub max_fail: usize,
    pub why_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Hosts(usize),
    Percent(usize),
}

impl std::str::FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--batch {s:?}: expected a number of hosts (5) or a percentage (25%)");
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(BatchSize::Percent(n)),
                _ => Err(bad()),
            },
            None => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(BatchSize::Hosts(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// A phase of the rollout: indices into the host list.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub name: String,
    pub hosts: Vec<usize>,
}

/// Canaries (flagged hosts first, then hosts in inventory order up to
/// `--canary N`), then the rest in batches.
pub fn plan(hosts: &[Host], opts: &Options) -> Vec<Batch> {
    let mut canaries: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].canary).collect();
    if let Some(n) = opts.canary {
        for i in 0..hosts.len() {
            if canaries.len() >= n {
                break;
            }
            if !canaries.contains(&i) {
                canaries.push(i);
            }
        }
        canaries.truncate(n.max(canaries.iter().filter(|&&i| hosts[i].canary).count()));
    }
    let rest: Vec<usize> = (0..hosts.len()).filter(|i| !canaries.contains(i)).collect();
    let mut out = Vec::new();
    if !canaries.is_empty() {
        out.push(Batch {
            name: "canary".into(),
            hosts: canaries,
        });
    }
    let size = match opts.batch {
        None => rest.len().max(1),
        Some(BatchSize::Hosts(n)) => n,
        Some(BatchSize::Percent(p)) => (rest.len() * p).div_ceil(100).max(1),
    };
    for (i, chunk) in rest.chunks(size).enumerate() {
        out.push(Batch {
            name: format!("batch {}", i + 1),
            hosts: chunk.to_vec(),
        });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Changed,
    Unchanged,
    WouldChange,
    Failed,
    NotReached,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Changed => "changed",
            State::Unchanged => "unchanged",
            State::WouldChange => "would change",
            State::Failed => "FAILED",
            State::NotReached => "not reached",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// connect, upload, converge, health
    pub stage: &'static str,
    /// unreachable, key refused, host key, bundle hash mismatch, connection
    /// lost, converge failed, health check failed, ...
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub fqdn: String,
    pub address: String,
    pub phase: String,
    pub state: State,
    /// Resources updated (or that would be, with --why-run).
    pub changed: usize,
    /// One line per changed resource: `package[x]: upgrade 1.0 -> 2.0`.
    pub changes: Vec<String>,
    /// With --why-run: unified diffs of file content by resource, as the
    /// local why-run prints them (sensitive content redacted by the host).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub diffs: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<CheckOutcome>,
    pub sent_binary: bool,
    pub sent_bundle: bool,
    pub elapsed_ms: f64,
}

impl HostOutcome {
    fn new(h: &Host, phase: &str) -> Self {
        HostOutcome {
            fqdn: h.fqdn.clone(),
            address: h.address.clone(),
            phase: phase.to_string(),
            state: State::NotReached,
            changed: 0,
            changes: vec![],
            diffs: Default::default(),
            failure: None,
            health: vec![],
            sent_binary: false,
            sent_bundle: false,
            elapsed_ms: 0.0,
        }
    }
}

/// Set by the first SIGINT (see [`hold_on_interrupt`]): the rollout holds.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// The first Ctrl-C turns into a push hold: hosts in flight finish (their
/// ssh clients run in their own process groups, out of the terminal's
/// reach), no other host starts, and the summary is printed. A second one
/// exits at once.
pub fn hold_on_interrupt() {
    use signal_hook::{consts::SIGINT, flag};
    // Registered first, so it sees the flag as the previous Ctrl-C left it.
    let _ = flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&INTERRUPTED));
    let _ = flag::register(SIGINT, Arc::clone(&INTERRUPTED));
}

/// What the progress display hears about.
pub enum Event<'a> {
    BatchStart {
        batch: &'a Batch,
        index: usize,
        of: usize,
    },
    HostDone {
        batch: &'a Batch,
        outcome: &'a HostOutcome,
    },
    BatchEnd {
        batch: &'a Batch,
    },
    Hold {
        reason: &'a str,
    },
}

#[derive(Debug, Serialize)]
pub struct Rollout {
    pub hosts: Vec<HostOutcome>,
    pub batches: Vec<Batch>,
    pub held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
}

pub fn run(
    hosts: &[Host],
    transport: &Transport,
    payload: &Payload,
    opts: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Rollout {
    let batches = plan(hosts, opts);
    let outcomes: Vec<Mutex<Option<HostOutcome>>> =
        hosts.iter().map(|_| Mutex::new(None)).collect();
    let failures = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let hold_reason: Mutex<Option<String>> = Mutex::new(None);
    for (bi, batch) in batches.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            for &i in &batch.hosts {
                *outcomes[i].lock().unwrap() = Some(HostOutcome::new(&hosts[i], &batch.name));
            }
            continue;
        }
        on_event(Event::BatchStart {
            batch,
            index: bi,
            of: batches.len(),
        });
        let queue: Mutex<VecDeque<usize>> = Mutex::new(batch.hosts.iter().copied().collect());
        let workers = opts.parallel.max(1).min(batch.hosts.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let Some(i) = queue.lock().unwrap().pop_front() else {
                            break;
                        };
                        let host = &hosts[i];
                        if INTERRUPTED.load(Ordering::SeqCst) && !stop.swap(true, Ordering::SeqCst) {
                            let why = "interrupted (Ctrl-C): hosts in flight finish, no other host starts";
                            on_event(Event::Hold { reason: why });
                            hold_reason.lock().unwrap().get_or_insert_with(|| why.to_string());
                        }
                        if stop.load(Ordering::SeqCst) {
                            *outcomes[i].lock().unwrap() =
                                Some(HostOutcome::new(host, &batch.name));
                            continue;
                        }
                        let o = converge_host(host, &batch.name, transport, payload, opts.why_run);
                        if o.state == State::Failed && !opts.why_run {
                            let n = failures.fetch_add(1, Ordering::SeqCst) + 1;
                            let canary = batch.name == "canary";
                            if n > opts.max_fail || canary {
                                let mut r = hold_reason.lock().unwrap();
                                if r.is_none() {
                                    let why = if canary {
                                        format!("canary {} failed", host.fqdn)
                                    } else {
                                        format!(
                                            "{n} host(s) failed, more than --max-fail {}",
                                            opts.max_fail
                                        )
                                    };
                                    on_event(Event::Hold { reason: &why });
                                    *r = Some(why);
                                }
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        on_event(Event::HostDone { batch, outcome: &o });
                        *outcomes[i].lock().unwrap() = Some(o);
                    }
                });
            }
        });
        on_event(Event::BatchEnd { batch });
    }
    let hosts_out = outcomes
        .into_iter()
        .zip(hosts)
        .map(|(m, h)| {
            m.into_inner()
                .unwrap()
                .unwrap_or_else(|| HostOutcome::new(h, "-"))
        })
        .collect();
    let hold_reason = hold_reason.into_inner().unwrap();
    Rollout {
        hosts: hosts_out,
        batches,
        held: hold_reason.is_some(),
        hold_reason,
    }
}

fn ssh_failure(stage: &'static str, e: SshFailure) -> Failure {
    let kind = match (&e, stage) {
        (SshFailure::Lost(_), "converge") => "host lost mid-converge".to_string(),
        _ => e.kind().to_string(),
    };
    let stage = match e {
        SshFailure::Unreachable(_) | SshFailure::KeyRefused(_) | SshFailure::HostKey(_) => {
            "connect"
        }
        _ => stage,
    };
    Failure {
        stage,
        kind,
        reason: e.detail().to_string(),
    }
}

fn binary_altered(stderr: &str) -> Failure {
    Failure {
        stage: "converge",
        kind: "kiln binary altered".into(),
        reason: tail(stderr),
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

/// The node argument of a host's converge: its node file in the bundle
/// `$R`, which the bundle's signature covers. Nothing about the node
/// (roles, attributes) travels on the command line, where it would be
/// unsigned.
fn node_args(host: &Host) -> String {
    let node = super::bundle::node_path(std::path::Path::new(""), &host.fqdn);
    format!(" --node \"$R\"/{}", q(&node.to_string_lossy()))
}

pub fn converge_host(
    host: &Host,
    phase: &str,
    t: &Transport,
    p: &Payload,
    why_run: bool,
) -> HostOutcome {
    let started = Instant::now();
    let mut o = HostOutcome::new(host, phase);
    let r = steps(host, t, p, why_run, &mut o);
    o.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Err(f) = r {
        o.state = State::Failed;
        o.failure = Some(f);
    }
    o
}

const NEED: &str = "kiln-need:";

/// One remote script for the whole no-op path, so that a host that already
/// has this kiln and this policy costs one ssh exec: check what the host
/// has (or say what it needs), converge, keep the current links, and run the
/// health checks after a successful converge. Each build of a bundle has a
/// serial of its own, so a host whose current bundle holds the same policy
/// (the same content digest in its signed metadata), and recorded that
/// policy as the newest it converged, converges that one.
fn host_script(host: &Host, p: &Payload, why_run: bool) -> String {
    let node = node_args(host);
    let mut s = format!(
        "K={k}; R={r}; need=''; [ -x \"$K\" ] || need=\"$need binary\"; \
         if ! {{ [ -f \"$R.tar\" ] && [ -d \"$R\" ]; }}; then \
         C={BUNDLE_DIR}/$(readlink {BUNDLE_DIR}/current 2>/dev/null); \
         if [ -f \"$C.tar\" ] && grep -qxF {same} \"$C/{meta}\" 2>/dev/null \
         && grep -qF {recorded} {record} 2>/dev/null; then R=$C; \
         else need=\"$need bundle\"; fi; fi; \
         if [ -n \"$need\" ]; then echo \"{NEED}$need\"; exit 0; fi; \
         {check} \
         \"$K\" --repo \"$R\" verify --converge --json{why}{node}; rc=$?; ",
        k = q(&p.remote_kiln()),
        r = q(&p.remote_repo()),
        same = q(&crate::serial::BundleMeta::content_line(&p.bundle_content)),
        recorded = q(&crate::serial::BundleMeta::record_content_line(
            &p.bundle_content
        )),
        record = crate::serial::RECORD,
        meta = crate::serial::META,
        why = if why_run { " --why-run" } else { "" },
        check = check_binary(p),
    );
    if !why_run {
        // What the host last converged to: the agent's default source and
        // the binary the kiln cookbook links to /usr/local/bin/kiln.
        s.push_str(&format!(
            "ln -sfn kiln.{b} {BIN_DIR}/kiln.new && mv -Tf {BIN_DIR}/kiln.new {BIN_DIR}/kiln; \
             ln -sfn \"${{R##*/}}\" {BUNDLE_DIR}/current.new && mv -Tf {BUNDLE_DIR}/current.new {BUNDLE_DIR}/current; ",
            b = p.binary_sha,
        ));
    }
    s.push_str("exit $rc");
    s
}

fn steps(
    host: &Host,
    t: &Transport,
    p: &Payload,
    why_run: bool,
    o: &mut HostOutcome,
) -> Result<(), Failure> {
    let script = host_script(host, p, why_run);
    let mut out = t
        .run(host, &script, None)
        .map_err(|e| ssh_failure("converge", e))?;
    if out.code == BINARY_ALTERED {
        return Err(binary_altered(&out.stderr));
    }
    // First contact with this kiln or this bundle: send what the host
    // lacks, verified by sha256 there, then run again.
    if let Some(need) = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix(NEED)
        .map(str::to_string)
    {
        if need.contains("binary") {
            let bin = p.binary().map_err(|e| Failure {
                stage: "upload",
                kind: "local".into(),
                reason: e,
            })?;
            upload(
                host,
                t,
                &bin,
                &p.remote_kiln(),
                &p.binary_sha,
                Install {
                    mode: "0755",
                    verify: "",
                    after: &prune(BIN_DIR, "kiln.", "", "kiln", 3),
                },
            )?;
            o.sent_binary = true;
        }
        if need.contains("bundle") {
            let repo = p.remote_repo();
            // kiln unpacks it, not tar: every member checked, the serial
            // compared with the host's record, before anything is written.
            let unpack = format!(
                "K={k}; {check} \"$K\" unpack-bundle {r}.tar {r} || {{ rm -f {r}.tar {r}.tar.sig; exit {BUNDLE_REFUSED}; }}; {prune}",
                k = q(&p.remote_kiln()),
                check = check_binary(p),
                r = q(&repo),
                prune = prune(BUNDLE_DIR, "", ".tar", "current", 5),
            );
            upload(
                host,
                t,
                &p.bundle,
                &format!("{repo}.tar"),
                &p.bundle_sha,
                Install {
                    mode: "0644",
                    verify: &check_signature(p),
                    after: &unpack,
                },
            )?;
            o.sent_bundle = true;
        }
        out = t
            .run(host, &script, None)
            .map_err(|e| ssh_failure("converge", e))?;
        if out.code == BINARY_ALTERED {
            return Err(binary_altered(&out.stderr));
        }
        if out.stdout.starts_with(NEED.as_bytes()) {
            return Err(Failure {
                stage: "upload",
                kind: "upload failed".into(),
                reason: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            });
        }
    }
    let doc = HostReport::parse(&String::from_utf8_lossy(&out.stdout));
    let Some((report, checks)) = doc.ok().and_then(|d| Some((d.converge?, d.checks))) else {
        return Err(Failure {
            stage: "converge",
            kind: "converge failed".into(),
            reason: format!("exit {}: {}", out.code, tail(&out.stderr)),
        });
    };
    o.changed = report.updated;
    for r in &report.resources {
        match r.status {
            Status::Updated | Status::WouldUpdate => {
                let mut line = r.resource.clone();
                if !r.changes.is_empty() {
                    line.push_str(": ");
                    line.push_str(&r.changes.join(", "));
                }
                if !o.changes.contains(&line) {
                    o.changes.push(line);
                }
                if why_run && let Some(d) = &r.diff {
                    o.diffs.insert(r.resource.clone(), d.clone());
                }
            }
            Status::Failed => o.changes.push(format!(
                "{} FAILED: {}",
                r.resource,
                r.error.as_deref().unwrap_or("")
            )),
            _ => {}
        }
    }
    if !report.success {
        let first = report
            .resources
            .iter()
            .find(|r| r.status == Status::Failed)
            .map(|r| format!("{}: {}", r.resource, r.error.as_deref().unwrap_or("failed")))
            .unwrap_or_else(|| tail(&out.stderr));
        return Err(Failure {
            stage: "converge",
            kind: "converge failed".into(),
            reason: first,
        });
    }
    o.state = match (why_run, report.updated > 0) {
        (true, true) => State::WouldChange,
        (true, false) => State::Unchanged,
        (false, true) => State::Changed,
        (false, false) => State::Unchanged,
    };
    if why_run {
        return Ok(());
    }
    // Health checks: the roles' verify checks, run on the host.
    o.health = checks.ok_or_else(|| Failure {
        stage: "health",
        kind: "health check failed".into(),
        reason: format!("kiln verify gave no report: {}", tail(&out.stderr)),
    })?;
    if let Some(bad) = o.health.iter().find(|c| !c.ok) {
        return Err(Failure {
            stage: "health",
            kind: "health check failed".into(),
            reason: format!("{} ({}): {}", bad.check, bad.origin, bad.detail),
        });
    }
    Ok(())
}

/// A remote script fragment that stops (exit [`BINARY_ALTERED`]) unless the
/// kiln binary `$K` still has the hash it was uploaded with: a binary changed
/// on the host after upload is never run.
fn check_binary(p: &Payload) -> String {
    format!(
        "got=$(sha256sum < \"$K\" | cut -d' ' -f1); if [ \"$got\" != {sha} ]; then \
         echo \"$K has sha256 $got, not {sha} as uploaded: altered on the host, not run\" >&2; \
         exit {BINARY_ALTERED}; fi;",
        sha = p.binary_sha,
    )
}

/// A remote script fragment that verifies the uploaded bundle `$T` with the
/// (just checked) kiln binary against the host's allowed_signers, before
/// anything unpacks it. On a host with no allowed_signers yet, the bundle's
/// own `kiln` cookbook copy is the start (first contact over a checked
/// host key, as with `--accept-new-host-keys`).
fn check_signature(p: &Payload) -> String {
    match &p.bundle_sig {
        None => String::new(),
        Some(sig) => format!(
            "K={k}; {check} printf '%s\\n' {sig} > \"$T.sig\"; \
             if ! \"$K\" verify-bundle \"$T\" --signature \"$T.sig\" --allowed-signers {allowed} --first-contact >/dev/null; then \
             rm -f \"$T\" \"$T.sig\"; exit {SIGNATURE_REFUSED}; fi; mv -f \"$T.sig\" {dest_sig}; ",
            k = q(&p.remote_kiln()),
            check = check_binary(p),
            sig = q(sig.trim()),
            allowed = q(crate::trust::ALLOWED_SIGNERS),
            dest_sig = q(&format!("{}.tar.sig", p.remote_repo())),
        ),
    }
}

/// A remote script that keeps the `keep` newest `PREFIX*SUFFIX` files of
/// `dir` (and for bundles their unpacked directories), never the one the
/// `current` link points at. Runs only when something new arrives.
fn prune(dir: &str, prefix: &str, suffix: &str, current: &str, keep: usize) -> String {
    format!(
        "(cd {dir} && cur=$(readlink {current} 2>/dev/null); \
         ls -1t {prefix}*{suffix} 2>/dev/null | tail -n +{n} | while read -r f; do \
         b=${{f%{suffix}}}; [ \"$b\" = \"$cur\" ] || [ \"$f\" = \"$cur\" ] || rm -rf \"$f\" \"$b\"; done) || true",
        n = keep + 1,
    )
}

/// How an uploaded file is installed on the host once its hash matched.
struct Install<'a> {
    mode: &'a str,
    /// Shell run on the upload (`$T`) before it gets its name: refuses it
    /// with a non-zero exit.
    verify: &'a str,
    /// Shell run after it got its name.
    after: &'a str,
}

/// Streams `data` to `dest` on the host through a temporary name, checks
/// its sha256 there, then runs `after`.
fn upload(
    host: &Host,
    t: &Transport,
    data: &[u8],
    dest: &str,
    sha: &str,
    install: Install,
) -> Result<(), Failure> {
    let Install {
        mode,
        verify,
        after,
    } = install;
    let dir = std::path::Path::new(dest)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    let script = format!(
        "set -e; umask 022; mkdir -p {dir}; T={dest}.part.$$; cat > \"$T\"; \
         got=$(sha256sum \"$T\" | cut -d' ' -f1); \
         if [ \"$got\" != {sha} ]; then rm -f \"$T\"; echo \"sha256 on the host is $got, expected {sha}\" >&2; exit {HASH_MISMATCH}; fi; \
         {verify}chmod {mode} \"$T\"; mv -f \"$T\" {dest}; {after}",
        dir = q(&dir),
        dest = q(dest),
        after = if after.is_empty() { ":" } else { after },
    );
    let out: Remote = t
        .run(host, &script, Some(data))
        .map_err(|e| ssh_failure("upload", e))?;
    match out.code {
        0 => Ok(()),
        BINARY_ALTERED => Err(binary_altered(&out.stderr)),
        SIGNATURE_REFUSED => Err(Failure {
            stage: "upload",
            kind: "bundle signature refused".into(),
            reason: format!("{dest}: {}", tail(&out.stderr)),
        }),
        BUNDLE_REFUSED => Err(Failure {
            stage: "upload",
            kind: "bundle refused".into(),
            reason: format!("{dest}: {}", tail(&out.stderr)),
        }),
        HASH_MISMATCH => Err(Failure {
            stage: "upload",
            kind: if dest.ends_with(".tar") {
                "bundle hash mismatch".into()
            } else {
                "kiln binary hash mismatch".into()
            },
            reason: format!("{dest}: {}", tail(&out.stderr)),
        }),
        c => Err(Failure {
            stage: "upload",
            kind: "upload failed".into(),
            reason: format!("{dest}: exit {c}: {}", tail(&out.stderr)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize, canary: &[usize]) -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                fqdn: format!("h{i}"),
                address: format!("10.0.0.{i}"),
                port: 22,
                user: "root".into(),
                roles: vec!["web".into()],
                canary: canary.contains(&i),
                attributes: toml::Table::new(),
                line: 1,
            })
            .collect()
    }

    fn opts(canary: Option<usize>, batch: Option<&str>) -> Options {
        Options {
            canary,
            batch: batch.map(|b| b.parse().unwrap()),
            parallel: 4,
            max_fail: 0,
            why_run: false,
        }
    }

    #[test]
    fn prune_keeps_the_newest_and_the_current() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, sha) in ["a", "b", "c", "d"].iter().enumerate() {
            std::fs::write(dir.join(format!("{sha}.tar")), "x").unwrap();
            std::fs::create_dir(dir.join(sha)).unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(dir.join(format!("{sha}.tar")))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::os::unix::fs::symlink("a", dir.join("current")).unwrap();
        let script = prune(&dir.display().to_string(), "", ".tar", "current", 2);
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(st.success());
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "a.tar", "c", "c.tar", "current", "d", "d.tar"]);
    }

    #[test]
    fn canaries_then_batches() {
        let p = plan(&hosts(10, &[7]), &opts(None, Some("4")));
        let names: Vec<(&str, Vec<usize>)> = p
            .iter()
            .map(|b| (b.name.as_str(), b.hosts.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("canary", vec![7]),
                ("batch 1", vec![0, 1, 2, 3]),
                ("batch 2", vec![4, 5, 6, 8]),
                ("batch 3", vec![9])
            ]
        );
        let p = plan(&hosts(10, &[7]), &opts(Some(2), Some("50%")));
        assert_eq!(p[0].hosts, [7, 0]);
        assert_eq!(p[1].hosts.len(), 4);
        assert_eq!(p.len(), 3);
        let p = plan(&hosts(3, &[]), &opts(None, None));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "batch 1");
        assert!("0".parse::<BatchSize>().is_err());
        assert!("101%".parse::<BatchSize>().is_err());
    }
}
