//! Sending a run's report to `kiln server` (`--report-to URL`). The run
//! is over before anything is sent, and nothing here fails it: a report is
//! first kept on the target, signed, in a bounded outbox, then the outbox
//! is sent oldest first. What the server cannot take now waits for a later
//! run; what it refuses for good is dropped with a warning.

use std::time::Duration;

use crate::engine::Report;
use crate::platform::target::Target;
use crate::server::client;
use crate::store::{Envelope, ManagedPackage, RunRecord, record};

/// Reports not yet delivered, one signed envelope a file.
pub const OUTBOX: &str = "/var/lib/kiln/outbox";
/// The key a host signs its reports with (the one known_hosts records).
pub const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
/// At most this many reports wait; the oldest go first when more do.
const KEEP: usize = 50;

/// What became of the outbox.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    pub waiting: usize,
}

/// The run as the store keeps it: the report, the target's release, the
/// fingerprint of what the run manages and the managed packages' state.
pub fn record_of(target: &Target, report: &Report, sent: &Sent) -> RunRecord {
    let mut run = RunRecord::new(report.clone(), crate::platform::fallback::codename(target));
    run.interval_secs = sent.interval.map(|i| i.as_secs());
    run.checks = sent.checks.clone();
    let ids = report.managed_ids().unwrap_or_default();
    let mut fp = crate::fingerprint::compute(target, &ids);
    fp.substitutions = report.substitutions.clone();
    run.fingerprint = Some(fp);
    let dpkg = crate::platform::dpkg::Dpkg::read(target);
    run.packages = ids
        .iter()
        .filter_map(|id| id.strip_prefix("package[")?.strip_suffix(']'))
        .map(|name| {
            let installed = dpkg.installed(name).filter(|p| p.is_installed());
            ManagedPackage {
                name: name.to_string(),
                version: installed.map(|p| p.version.clone()).unwrap_or_default(),
                held: installed.is_some_and(|p| p.is_held()),
            }
        })
        .collect();
    run
}

/// What the caller adds to a run's report.
#[derive(Debug, Default)]
pub struct Sent {
    /// The agent's interval, by which the store tells a stale host.
    pub interval: Option<Duration>,
    /// The verify checks run after the converge.
    pub checks: Option<Vec<crate::verify::CheckOutcome>>,
}

/// Keeps the report of this run in the outbox, signed with the target's
/// host key, then sends what the outbox holds to `url`. Every problem is
/// a warning.
pub fn report_run(
    target: &Target,
    report: &Report,
    url: &str,
    sent: &Sent,
    warn: &mut dyn FnMut(String),
) -> Delivery {
    match record_run(target, report, url, sent, warn) {
        Recorded::Kept => deliver(target, url, warn),
        Recorded::Done(d) => d,
    }
}

/// What [`record_run`] did with a run's report.
#[derive(Debug)]
pub enum Recorded {
    /// In the outbox, for [`deliver`].
    Kept,
    /// Not kept: sent at once (when the outbox could not take it), or lost.
    Done(Delivery),
}

/// Keeps the report of this run in the outbox, signed with the target's
/// host key; delivering it is the caller's (the agent does it while it
/// waits for its next run). A report the outbox cannot take is sent at
/// once instead.
pub fn record_run(
    target: &Target,
    report: &Report,
    url: &str,
    sent: &Sent,
    warn: &mut dyn FnMut(String),
) -> Recorded {
    let run = record_of(target, report, sent);
    let mut payload = serde_json::to_value(&run).unwrap_or_default();
    crate::secrets::redact::json(&mut payload);
    let payload = payload.to_string();
    let key = match target.fs().read_to_string(HOST_KEY) {
        Ok(key) => key,
        Err(e) => {
            warn(format!(
                "the run's report is not sent: cannot read the host key {HOST_KEY} to sign it ({e})"
            ));
            return Recorded::Kept;
        }
    };
    let env = match record::sign(&payload, &key, HOST_KEY) {
        Ok(env) => env,
        Err(e) => {
            warn(format!("the run's report is not sent: {e}"));
            return Recorded::Kept;
        }
    };
    // Named by when it was kept, to the microsecond: two runs that
    // started in the same second go out in their order.
    let kept = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let name = format!("{kept:024}-{}.json", run.run_id);
    let Err(e) = keep(target, &name, &env) else {
        return Recorded::Kept;
    };
    warn(format!(
        "cannot keep the run's report in {OUTBOX} ({e}); sending it now only"
    ));
    Recorded::Done(match client::post_report(url, &env) {
        Ok(()) => Delivery {
            sent: 1,
            waiting: 0,
        },
        Err(e) => {
            warn(format!("the run's report is lost: {e}"));
            Delivery::default()
        }
    })
}

fn keep(target: &Target, name: &str, env: &Envelope) -> std::io::Result<()> {
    let tfs = target.fs();
    // kiln's own directory: a link planted there is replaced, not followed.
    if tfs.symlink_metadata(OUTBOX).is_ok_and(|m| !m.is_dir()) {
        tfs.remove_file(OUTBOX)?;
    }
    tfs.create_dir_all(OUTBOX, 0o700)?;
    let bytes = serde_json::to_vec(env).unwrap_or_default();
    tfs.write_atomic(
        format!("{OUTBOX}/{name}"),
        &bytes,
        0o600,
        crate::resource::fsmeta::Ids::default(),
    )
}

/// The outbox's reports, oldest first (names start with when each was kept).
fn waiting(target: &Target) -> Vec<String> {
    let mut names: Vec<String> = target
        .fs()
        .read_dir_nofollow(OUTBOX)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Sends the outbox oldest first, stopping at the first report the
/// server cannot take now; drops reports beyond [`KEEP`], oldest first.
pub fn deliver(target: &Target, url: &str, warn: &mut dyn FnMut(String)) -> Delivery {
    let tfs = target.fs();
    let mut names = waiting(target);
    let excess = names.len().saturating_sub(KEEP);
    if excess > 0 {
        warn(format!(
            "{OUTBOX} holds more than {KEEP} undelivered reports: the {excess} oldest are dropped"
        ));
        for n in names.drain(..excess) {
            let _ = tfs.remove_file(format!("{OUTBOX}/{n}"));
        }
    }
    let mut d = Delivery::default();
    for (i, n) in names.iter().enumerate() {
        let path = format!("{OUTBOX}/{n}");
        let env = tfs
            .read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Envelope>(&t).ok());
        let Some(env) = env else {
            warn(format!("{path} is no report kiln kept: removed"));
            let _ = tfs.remove_file(&path);
            continue;
        };
        match client::post_report(url, &env) {
            Ok(()) => {
                d.sent += 1;
                let _ = tfs.remove_file(&path);
            }
            Err(e) if e.is_transient() => {
                d.waiting = names.len() - i;
                warn(format!(
                    "{} run report(s) kept in {OUTBOX} for a later run: {e}",
                    d.waiting
                ));
                break;
            }
            Err(e) => {
                warn(format!("the server refused {path}, which is dropped: {e}"));
                let _ = tfs.remove_file(&path);
            }
        }
    }
    d
}
