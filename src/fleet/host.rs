//! One host's session: what it lacks is sent (verified by sha256 there),
//! then it converges and runs its health checks; the outcome is typed.

use std::time::Instant;

use serde::Serialize;

use super::inventory::Host;
use super::payload::Payload;
use super::protocol::{HostFailure, HostReport, HostRequest};
use super::script;
use super::ssh::{SshFailure, Transport};
use crate::engine::Status;
use crate::verify::CheckOutcome;

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

/// Why a host failed: where it stopped, what kind of failure it was (the
/// words that `--json` and the summary print), and the detail.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub stage: Stage,
    pub kind: Kind,
    pub reason: String,
}

/// Where in its session a host stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    Upload,
    Converge,
    Health,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Upload => "upload",
            Stage::Converge => "converge",
            Stage::Health => "health",
        })
    }
}

/// What kind of failure stopped a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    #[serde(rename = "unreachable")]
    Unreachable,
    #[serde(rename = "key refused")]
    KeyRefused,
    #[serde(rename = "host key")]
    HostKey,
    #[serde(rename = "connection lost")]
    ConnectionLost,
    #[serde(rename = "host lost mid-converge")]
    LostMidConverge,
    #[serde(rename = "ssh")]
    Ssh,
    /// This machine could not read what it was to send.
    #[serde(rename = "local")]
    Local,
    #[serde(rename = "upload failed")]
    UploadFailed,
    #[serde(rename = "kiln binary hash mismatch")]
    BinaryHashMismatch,
    #[serde(rename = "bundle hash mismatch")]
    BundleHashMismatch,
    #[serde(rename = "bundle signature refused")]
    SignatureRefused,
    #[serde(rename = "bundle refused")]
    BundleRefused,
    #[serde(rename = "kiln binary altered")]
    BinaryAltered,
    #[serde(rename = "converge failed")]
    ConvergeFailed,
    #[serde(rename = "health check failed")]
    HealthCheckFailed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The words `--json` prints.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => f.write_str(&s),
            _ => Err(std::fmt::Error),
        }
    }
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
    /// The whitelist's rollouts the host's converge put it in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<String>,
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
            rollouts: vec![],
            diffs: Default::default(),
            failure: None,
            health: vec![],
            sent_binary: false,
            sent_bundle: false,
            elapsed_ms: 0.0,
        }
    }
}

impl Failure {
    /// A host's typed answer, as the rollout reports it: the one place
    /// where the protocol's failures become the summary's words. `stage`
    /// is the request's, for failures that could come from either.
    fn from_host(stage: Stage, f: HostFailure) -> Failure {
        let (stage, kind) = match &f {
            HostFailure::Need { .. } => (Stage::Upload, Kind::UploadFailed),
            HostFailure::BinaryAltered { .. } => (Stage::Converge, Kind::BinaryAltered),
            HostFailure::HashMismatch { path, .. } if path.ends_with(".tar") => {
                (Stage::Upload, Kind::BundleHashMismatch)
            }
            HostFailure::HashMismatch { .. } => (Stage::Upload, Kind::BinaryHashMismatch),
            HostFailure::SignatureRefused { .. } => (Stage::Upload, Kind::SignatureRefused),
            HostFailure::BundleRefused { .. } => (Stage::Upload, Kind::BundleRefused),
            HostFailure::Converge(_) => (Stage::Converge, Kind::ConvergeFailed),
            HostFailure::Host(_) if stage == Stage::Upload => (stage, Kind::UploadFailed),
            HostFailure::Host(_) => (stage, Kind::ConvergeFailed),
        };
        Failure {
            stage,
            kind,
            reason: f.to_string(),
        }
    }

    fn ssh(stage: Stage, e: SshFailure) -> Failure {
        let kind = match &e {
            SshFailure::Unreachable(_) => Kind::Unreachable,
            SshFailure::KeyRefused(_) => Kind::KeyRefused,
            SshFailure::HostKey(_) => Kind::HostKey,
            SshFailure::Lost(_) if stage == Stage::Converge => Kind::LostMidConverge,
            SshFailure::Lost(_) => Kind::ConnectionLost,
            SshFailure::Other(_) => Kind::Ssh,
        };
        let stage = match e {
            SshFailure::Unreachable(_) | SshFailure::KeyRefused(_) | SshFailure::HostKey(_) => {
                Stage::Connect
            }
            _ => stage,
        };
        Failure {
            stage,
            kind,
            reason: e.detail().to_string(),
        }
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

/// Runs `script` on the host with `input` on its stdin, and reads its
/// answer (with the host's stderr, for a failure that names no resource).
fn ask(
    host: &Host,
    t: &Transport,
    stage: Stage,
    script: &str,
    input: &[u8],
) -> Result<(HostReport, String), Failure> {
    let out = t
        .run(host, script, Some(input))
        .map_err(|e| Failure::ssh(stage, e))?;
    let report = answer(stage, &out.stdout, out.code, &out.stderr)?;
    Ok((report, out.stderr))
}

/// The host's answer, parsed in this one place: a report, or, when kiln
/// on the host died before writing one, what its stderr said.
fn answer(stage: Stage, stdout: &[u8], code: i32, stderr: &str) -> Result<HostReport, Failure> {
    HostReport::parse(&String::from_utf8_lossy(stdout)).map_err(|_| Failure {
        stage,
        kind: if stage == Stage::Upload {
            Kind::UploadFailed
        } else {
            Kind::ConvergeFailed
        },
        reason: format!("exit {code}: {}", tail(stderr)),
    })
}

/// Sends what the host lacks (each verified by sha256 there).
fn send(
    host: &Host,
    t: &Transport,
    p: &Payload,
    binary: bool,
    bundle: bool,
) -> Result<(), Failure> {
    if binary {
        let bin = p.binary().map_err(|e| Failure {
            stage: Stage::Upload,
            kind: Kind::Local,
            reason: format!("reading {}: {e}", p.binary_path.display()),
        })?;
        let (got, _) = ask(host, t, Stage::Upload, &script::upload_binary(p), &bin)?;
        if let Some(f) = got.failure {
            return Err(Failure::from_host(Stage::Upload, f));
        }
    }
    if bundle {
        let (got, _) = ask(host, t, Stage::Upload, &script::upload_bundle(p), &p.bundle)?;
        if let Some(f) = got.failure {
            return Err(Failure::from_host(Stage::Upload, f));
        }
    }
    Ok(())
}

fn steps(
    host: &Host,
    t: &Transport,
    p: &Payload,
    why_run: bool,
    o: &mut HostOutcome,
) -> Result<(), Failure> {
    let request = HostRequest::Converge {
        bundle: p.bundle_ref(),
        fqdn: host.fqdn.clone(),
        why_run,
        binary_sha: p.binary_sha.clone(),
        report_to: p.report_to.clone().filter(|_| !why_run),
    };
    let mut input = serde_json::to_vec(&request).unwrap_or_default();
    input.push(b'\n');
    let script = script::converge(p);
    let converge = || ask(host, t, Stage::Converge, &script, &input);
    let (mut doc, mut stderr) = converge()?;
    // First contact with this kiln or this bundle: send what the host
    // lacks, then ask again.
    if let Some(HostFailure::Need { binary, bundle }) = doc.failure {
        send(host, t, p, binary, bundle)?;
        o.sent_binary = binary;
        o.sent_bundle = bundle;
        (doc, stderr) = converge()?;
    }
    if let Some(f) = doc.failure {
        return Err(Failure::from_host(Stage::Converge, f));
    }
    let Some(report) = doc.converge else {
        return Err(Failure {
            stage: Stage::Converge,
            kind: Kind::ConvergeFailed,
            reason: "the host's kiln reported no converge".into(),
        });
    };
    let checks = doc.checks;
    o.changed = report.updated;
    o.rollouts = report.rollouts.clone();
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
            .unwrap_or_else(|| tail(&stderr));
        return Err(Failure {
            stage: Stage::Converge,
            kind: Kind::ConvergeFailed,
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
        stage: Stage::Health,
        kind: Kind::HealthCheckFailed,
        reason: format!("kiln verify gave no report: {}", tail(&stderr)),
    })?;
    if let Some(bad) = o.health.iter().find(|c| !c.ok) {
        return Err(Failure {
            stage: Stage::Health,
            kind: Kind::HealthCheckFailed,
            reason: format!("{} ({}): {}", bad.check, bad.origin, bad.detail),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(f: &Failure) -> (String, String) {
        let v = serde_json::to_value(f).unwrap();
        (
            v["stage"].as_str().unwrap().to_string(),
            v["kind"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn host_failures_keep_the_words_the_summary_and_json_print() {
        let mismatch = |path: &str| HostFailure::HashMismatch {
            path: path.into(),
            found: "a".into(),
            expected: "b".into(),
        };
        let cases = [
            (
                mismatch("/var/lib/kiln/bundles/x.tar"),
                ("upload", "bundle hash mismatch"),
            ),
            (
                mismatch("/var/lib/kiln/bin/kiln.x"),
                ("upload", "kiln binary hash mismatch"),
            ),
            (
                HostFailure::SignatureRefused {
                    path: "p".into(),
                    reason: "r".into(),
                },
                ("upload", "bundle signature refused"),
            ),
            (
                HostFailure::BinaryAltered {
                    path: "k".into(),
                    found: "a".into(),
                    expected: "b".into(),
                },
                ("converge", "kiln binary altered"),
            ),
            (
                HostFailure::Converge("error: locked".into()),
                ("converge", "converge failed"),
            ),
        ];
        for (f, (stage, kind)) in cases {
            let got = Failure::from_host(Stage::Converge, f);
            assert_eq!(words(&got), (stage.to_string(), kind.to_string()));
            assert_eq!(got.kind.to_string(), kind);
        }
        let lost = Failure::ssh(Stage::Converge, SshFailure::Lost("gone".into()));
        assert_eq!(
            words(&lost),
            ("converge".into(), "host lost mid-converge".into())
        );
        let refused = Failure::ssh(Stage::Upload, SshFailure::KeyRefused("no".into()));
        assert_eq!(words(&refused), ("connect".into(), "key refused".into()));
    }
}
