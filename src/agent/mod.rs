//! The pull agent: converges this host on an interval with a random splay,
//! as chef-client does, from a repository directory or a published bundle
//! (a file or an http(s):// URL; see [`fetch`]). A bundle's node file for
//! this host (`nodes/FQDN.toml`, covered by the signature) gives the fqdn,
//! roles and attributes, so the agent converges what the last push
//! converged; the roles' verify checks run after, as in a push. The agent
//! prints nothing itself: it tells what it does through a log sink.

pub mod converge;
pub mod fetch;
pub mod metrics;
pub mod splay;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Report;
use crate::error::Error;
use crate::platform::hostfile;
use crate::platform::target::Target;
use metrics::{Metrics, RunFigures};

/// How the agent runs, from its command line.
pub struct Agent {
    pub repo: PathBuf,
    pub interval: Duration,
    pub splay: Duration,
    pub source: Option<String>,
    pub roles: Vec<String>,
    pub fqdn: Option<String>,
    pub once: bool,
    pub statsd: Option<String>,
    /// A `kiln server` that gets each run's report (see [`crate::outbox`]).
    pub report_to: Option<String>,
    pub state_dir: PathBuf,
    /// The OpenSSH allowed_signers file bundles are verified against.
    pub allowed_signers: PathBuf,
}

/// What the agent remembers between runs and restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    roles: Vec<String>,
    fqdn: Option<String>,
    /// The developer VM size the host was converged with, if any.
    #[serde(default)]
    size: Option<String>,
    /// The last bundle that was fetched and verified.
    current: Option<String>,
}

/// The agent's last converge and checks (a `kiln verify --json` document),
/// in its state directory.
const LAST_AGENT_RUN: &str = "last_run.json";

/// Runs the agent: once (returning whether the run succeeded), or forever.
/// `log` hears one line per event.
pub fn run(a: &Agent, log: &dyn Fn(&str)) -> Result<bool, Error> {
    let (interval, splay) = (a.interval, a.splay);
    std::fs::create_dir_all(&a.state_dir).map_err(|source| Error::Io {
        context: format!("creating {}", a.state_dir.display()),
        source,
    })?;
    let state_file = a.state_dir.join("state.json");
    let mut state: State = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if !a.roles.is_empty() {
        state.roles = a.roles.clone();
    }
    if a.fqdn.is_some() {
        state.fqdn = a.fqdn.clone();
    }
    if state.roles.is_empty() {
        // The roles and fqdn of this host's last run (a fleet push, say).
        // Its roles are the expanded list; converging them all applies each
        // recipe once, at its first position, as the top role did.
        if let Ok(Some(last)) = Report::load_last(&Target::host()) {
            state.roles = last.roles;
            if state.fqdn.is_none() {
                state.fqdn = Some(last.fqdn).filter(|f| !f.is_empty());
            }
            state.size = last.size;
        }
    }
    let metrics = Metrics::connect(a.statsd.as_deref())?;
    let roles = if state.roles.is_empty() {
        "from the bundle's node file".to_string()
    } else {
        state.roles.join(",")
    };
    let from = a
        .source
        .as_deref()
        .unwrap_or(&a.repo.display().to_string())
        .to_string();
    if a.once {
        // Run by hand or by a timer that spreads hosts itself: now.
        log(&format!("roles {roles}, once, now (no splay), from {from}"));
    } else {
        log(&format!(
            "roles {roles}, every {interval:?} with up to {splay:?} splay, from {from}"
        ));
    }
    let mut sender = Sender::default();
    loop {
        let wait = if a.once {
            Duration::ZERO
        } else {
            splay::random_below(splay)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let ok = run_once(a, &mut state, &metrics, log);
        let _ = hostfile::replace(
            &state_file,
            &serde_json::to_vec_pretty(&state).unwrap_or_default(),
        );
        if a.once {
            if let Some(url) = &a.report_to {
                for line in deliver(url) {
                    log(&line);
                }
            }
            return Ok(ok);
        }
        if let Some(url) = &a.report_to {
            sender.start(url);
        }
        sender.wait(interval, log);
    }
}

/// The outbox's delivery, for the lines it logs.
fn deliver(url: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let d = crate::outbox::deliver(&Target::host(), url, &mut |w| lines.push(w));
    if d.sent > 0 {
        lines.push(format!("{} run report(s) sent to {url}", d.sent));
    }
    lines
}

/// Sends the outbox on a thread of its own while the agent waits for its
/// next run: a slow or unreachable server never delays a converge. One
/// delivery at a time; a run that ends while one is still going leaves
/// its report in the outbox for the next.
#[derive(Default)]
struct Sender {
    running: Option<(
        std::thread::JoinHandle<()>,
        std::sync::mpsc::Receiver<String>,
    )>,
}

impl Sender {
    fn start(&mut self, url: &str) {
        if self.running.as_ref().is_some_and(|(h, _)| !h.is_finished()) {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let url = url.to_string();
        let handle = std::thread::spawn(move || {
            for line in deliver(&url) {
                let _ = tx.send(line);
            }
        });
        self.running = Some((handle, rx));
    }

    /// Sleeps for `interval`, logging the delivery's lines as they come.
    fn wait(&mut self, interval: Duration, log: &dyn Fn(&str)) {
        let deadline = Instant::now() + interval;
        if let Some((_, rx)) = &self.running {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => log(&line),
                    // Sent, or time for the next run.
                    Err(_) => break,
                }
            }
        }
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Fetches (if the source is a bundle), converges and runs the verify
/// checks once. False when any of it failed, a refused or unfetchable
/// bundle included (even when the last good one converged instead).
fn run_once(a: &Agent, state: &mut State, metrics: &Metrics, log: &dyn Fn(&str)) -> bool {
    let started = Instant::now();
    let (repo, fetched) = match fetch::source(a, state, log) {
        fetch::Source::Fresh(repo) => (repo, true),
        fetch::Source::LastGood(repo) => {
            metrics.fetch_failed();
            (repo, false)
        }
        fetch::Source::Nothing => {
            metrics.fetch_failed();
            metrics.failed();
            return false;
        }
    };
    let mut c = match converge::command(a, state, &repo, log) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("not converging: {e}"));
            metrics.failed();
            return false;
        }
    };
    let out = match c.output() {
        Ok(o) => o,
        Err(e) => {
            log(&format!("cannot run kiln verify --converge: {e}"));
            return false;
        }
    };
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let done = converge::outcome(&out.stdout, &out.stderr, elapsed, log);
    // Kept for people and tools, as last_run.json is for the converge.
    if let Some(d) = &done.report {
        let _ = hostfile::replace(&a.state_dir.join(LAST_AGENT_RUN), d.to_json().as_bytes());
    }
    if let (Some(url), Some(run)) = (
        &a.report_to,
        done.report.as_ref().and_then(|d| d.converge.as_ref()),
    ) {
        let sent = crate::outbox::Sent {
            interval: Some(a.interval),
            checks: done.report.as_ref().and_then(|d| d.checks.clone()),
        };
        let mut warn = |w: String| log(&w);
        // Delivered by the caller, apart from the run (see [`Sender`]).
        if let crate::outbox::Recorded::Done(d) =
            crate::outbox::record_run(&Target::host(), run, url, &sent, &mut warn)
            && d.sent > 0
        {
            log(&format!("{} run report(s) sent to {url}", d.sent));
        }
    }
    metrics.run(&RunFigures {
        elapsed_ms: elapsed.round() as u64,
        changed: done.updated,
        failed: if done.success {
            done.failed
        } else {
            done.failed.max(1)
        },
        checks_failed: done.checks_failed,
    });
    fetched && done.success && done.checks_failed == 0
}
