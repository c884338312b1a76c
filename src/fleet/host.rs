//! One host's session: what it lacks is sent (verified by sha256 there),
//! then it converges and runs its health checks; the outcome is typed.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Serialize;

use super::inventory::Host;
use super::protocol::HostReport;
use super::script::{
    BIN_DIR, BINARY_ALTERED, BUNDLE_DIR, BUNDLE_REFUSED, HASH_MISMATCH, NEED, SIGNATURE_REFUSED,
    check_binary, check_signature, host_script, prune,
};
use super::ssh::{Remote, SshFailure, Transport, q};
use crate::engine::Status;
use crate::verify::CheckOutcome;

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
    /// A host not reached (yet): what a push hold leaves.
    pub fn new(h: &Host, phase: &str) -> Self {
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
