//! The rollout's pool: a batch at a time, `--parallel` hosts at a time
//! inside it, and a push hold once more than `--max-fail` hosts failed, a
//! canary failed, or the operator pressed Ctrl-C.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;

use super::host::{HostOutcome, State, converge_host};
use super::inventory::Host;
use super::payload::Payload;
use super::plan::{Batch, Options, plan};
use super::ssh::Transport;

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

impl Rollout {
    /// How many hosts ended in `state`.
    pub fn count(&self, state: State) -> usize {
        self.hosts.iter().filter(|h| h.state == state).count()
    }

    /// The hosts that ended in `state`, in inventory order.
    pub fn named(&self, state: State) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.state == state)
            .map(|h| h.fqdn.as_str())
            .collect()
    }

    /// Each change with the hosts it happened on: the same change on many
    /// hosts is one entry (for a whitelist change, which packages move
    /// from which version to which, and where).
    pub fn by_change(&self) -> std::collections::BTreeMap<&str, Vec<&str>> {
        let mut by: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for h in &self.hosts {
            for ch in &h.changes {
                by.entry(ch.as_str()).or_default().push(h.fqdn.as_str());
            }
        }
        by
    }

    /// A host failed, or the push held.
    pub fn failed(&self) -> bool {
        self.held || self.count(State::Failed) > 0
    }
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
