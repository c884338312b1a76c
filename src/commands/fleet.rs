//! `kiln fleet converge | status | bundle`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Error;
use crate::fleet::bundle::Bundle;
use crate::fleet::host::{HostOutcome, State};
use crate::fleet::inventory::Inventory;
use crate::fleet::pool::{Event, Rollout};
use crate::fleet::push;
use crate::fleet::ssh::{Client, Transport};
use crate::fleet::status;
use crate::policy::Repository;

pub struct Common {
    pub repo: PathBuf,
    pub inventory: PathBuf,
    pub hosts: Option<String>,
    pub accept_new_host_keys: bool,
    pub json: bool,
    pub ssh: Client,
}

pub struct FleetConverge {
    pub common: Common,
    /// `--rollout`: only its hosts, those it names first.
    pub rollout: Option<String>,
    pub canary: Option<usize>,
    pub batch: Option<String>,
    pub parallel: usize,
    pub max_fail: usize,
    pub why_run: bool,
    /// The kiln binary the hosts get (default: this one).
    pub binary: Option<PathBuf>,
    /// `--signing-key`, else the inventory's `signing_key`.
    pub signing_key: Option<PathBuf>,
    /// `--allow-unsigned`: push without a signature, on purpose.
    pub allow_unsigned: bool,
    /// `--report-to`, else the inventory's `report_to`.
    pub report_to: Option<String>,
}

pub fn converge(c: FleetConverge) -> Result<i32, Error> {
    let started = Instant::now();
    let ready = push::prepare(&push::Push {
        repo: &c.common.repo,
        inventory: &c.common.inventory,
        hosts: c.common.hosts.as_deref(),
        rollout: c.rollout.as_deref(),
        accept_new_host_keys: c.common.accept_new_host_keys,
        ssh: &c.common.ssh,
        canary: c.canary,
        batch: c.batch.as_deref(),
        parallel: c.parallel,
        max_fail: c.max_fail,
        why_run: c.why_run,
        binary: c.binary.as_deref(),
        signing_key: c.signing_key.as_deref(),
        allow_unsigned: c.allow_unsigned,
        report_to: c.report_to.as_deref(),
    })?;
    let hosts = &ready.hosts;
    let json = c.common.json;
    let progress = Progress {
        json,
        tty: std::io::stderr().is_terminal() && !json,
        bar: Mutex::new(None),
        counts: Mutex::new((0, 0, 0)),
    };
    if !json {
        progress.say(format!(
            "kiln fleet: {} host(s), bundle {} ({}, {} files, {}), kiln {}{}",
            hosts.len(),
            &ready.bundle_sha[..12],
            ready.bundle_meta.short(),
            ready.bundle_files,
            match &ready.signer {
                Some(k) => format!("signed by {k}"),
                None => "UNSIGNED (--allow-unsigned)".into(),
            },
            &ready.binary_sha[..12],
            if c.why_run { ", why-run" } else { "" }
        ));
    }
    let result = ready.run(&|e| progress.event(e));
    let elapsed = started.elapsed();
    let n = |s: State| result.count(s);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "bundle": ready.bundle_sha,
            "bundle_serial": ready.bundle_meta.serial,
            "kiln": ready.binary_sha,
            "why_run": c.why_run,
            "held": result.held,
            "hold_reason": result.hold_reason,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
            "totals": {
                "hosts": result.hosts.len(),
                "changed": n(State::Changed),
                "would_change": n(State::WouldChange),
                "unchanged": n(State::Unchanged),
                "failed": n(State::Failed),
                "not_reached": n(State::NotReached),
            },
            "batches": result.batches.iter().map(|b| serde_json::json!({
                "name": b.name,
                "hosts": b.hosts.iter().map(|&i| hosts[i].fqdn.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "hosts": result.hosts,
        });
        let _ = serde_json::to_writer_pretty(&mut out, &v);
        let _ = writeln!(out);
    } else {
        summary(&mut out, &result, elapsed, c.why_run);
    }
    Ok(if result.failed() { 1 } else { 0 })
}

/// What a push shows while it runs: a line per batch and host (on stderr
/// under `--json`), and a progress bar on a terminal.
struct Progress {
    json: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// This batch's hosts done, changed, failed.
    counts: Mutex<(usize, usize, usize)>,
}

impl Progress {
    fn say(&self, line: String) {
        let line = crate::text::terminal_safe(&line).into_owned();
        let b = self.bar.lock().unwrap();
        match &*b {
            Some(pb) => pb.println(line),
            None if self.json => eprintln!("{line}"),
            None => println!("{line}"),
        }
    }

    fn event(&self, e: Event) {
        match e {
            Event::BatchStart { batch, index, of } => {
                *self.counts.lock().unwrap() = (0, 0, 0);
                self.say(format!(
                    "== {} ({}/{}): {} host(s)",
                    batch.name,
                    index + 1,
                    of,
                    batch.hosts.len()
                ));
                if self.tty {
                    let pb = ProgressBar::new(batch.hosts.len() as u64);
                    pb.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    pb.set_prefix(batch.name.clone());
                    *self.bar.lock().unwrap() = Some(pb);
                }
            }
            Event::HostDone { batch: _, outcome } => {
                let (done, changed, failed) = {
                    let mut k = self.counts.lock().unwrap();
                    k.0 += 1;
                    if matches!(outcome.state, State::Changed | State::WouldChange) {
                        k.1 += 1;
                    }
                    if outcome.state == State::Failed {
                        k.2 += 1;
                    }
                    *k
                };
                let mut line = format!(
                    "  {:<28} {:<12} {:>3} changed  {:>6.1}s",
                    outcome.fqdn,
                    outcome.state.label(),
                    outcome.changed,
                    outcome.elapsed_ms / 1000.0
                );
                if let Some(f) = &outcome.failure {
                    line.push_str(&format!(
                        "  {} ({}): {}",
                        f.kind,
                        f.stage,
                        f.reason.replace('\n', " | ")
                    ));
                }
                for ch in &outcome.changes {
                    line.push_str(&format!("\n      {ch}"));
                    // Under why-run, a file's change with its diff, as the
                    // local `converge --why-run` prints it.
                    let resource = ch.split_once(": ").map_or(ch.as_str(), |(r, _)| r);
                    if let Some(d) = outcome.diffs.get(resource) {
                        for l in d.lines() {
                            line.push_str(&format!("\n        {l}"));
                        }
                    }
                }
                if !self.json || !self.tty {
                    self.say(line);
                }
                if let Some(pb) = &*self.bar.lock().unwrap() {
                    pb.set_position(done as u64);
                    pb.set_message(format!("{changed} changed, {failed} failed"));
                }
            }
            Event::BatchEnd { batch } => {
                if let Some(pb) = self.bar.lock().unwrap().take() {
                    pb.finish_and_clear();
                }
                let (done, changed, failed) = *self.counts.lock().unwrap();
                self.say(format!(
                    "   {}: {done} done, {changed} changed, {failed} failed",
                    batch.name
                ));
            }
            Event::Hold { reason } => self.say(format!(
                "!! push hold: {reason}; no further host is touched"
            )),
        }
    }
}

/// The table of hosts, the totals, the changes said once, and the hold.
fn summary(out: &mut impl Write, result: &Rollout, elapsed: std::time::Duration, why_run: bool) {
    let _ = writeln!(
        out,
        "\n{:<28} {:<9} {:<12} {:>7} {:>7}  DETAIL",
        "HOST", "PHASE", "RESULT", "CHANGED", "TIME"
    );
    for h in &result.hosts {
        let detail = match (&h.failure, h.state) {
            (Some(f), _) => format!(
                "{} ({}): {}",
                f.kind,
                f.stage,
                f.reason.lines().next().unwrap_or("")
            ),
            (None, State::NotReached) => "not reached: push hold".into(),
            _ => {
                let mut d = Vec::new();
                if h.sent_binary {
                    d.push("sent kiln");
                }
                if h.sent_bundle {
                    d.push("sent bundle");
                }
                let mut d = d.join(", ");
                if !h.rollouts.is_empty() {
                    let sep = if d.is_empty() { "" } else { "; " };
                    d = format!("{d}{sep}rollouts: {}", h.rollouts.join(", "));
                }
                d
            }
        };
        let _ = writeln!(
            out,
            "{:<28} {:<9} {:<12} {:>7} {:>6.1}s  {}",
            h.fqdn,
            h.phase,
            h.state.label(),
            h.changed,
            h.elapsed_ms / 1000.0,
            detail
        );
    }
    let names = |s: State| -> String {
        let v = result.named(s);
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "\n{} host(s) in {:.1}s: {} {}, {} unchanged, {} failed, {} not reached",
        result.hosts.len(),
        elapsed.as_secs_f64(),
        result.count(State::Changed) + result.count(State::WouldChange),
        if why_run { "would change" } else { "changed" },
        result.count(State::Unchanged),
        result.count(State::Failed),
        result.count(State::NotReached)
    );
    // The same change on many hosts, said once.
    let by_change = result.by_change();
    if !by_change.is_empty() {
        let _ = writeln!(
            out,
            "\n{}:",
            if why_run { "would change" } else { "changes" }
        );
        for (ch, hs) in &by_change {
            let names = if hs.len() > 3 {
                format!("{}, ... ({} hosts)", hs[..3].join(", "), hs.len())
            } else {
                hs.join(", ")
            };
            let _ = writeln!(out, "  {ch}  on {names}");
        }
    }
    if result.held {
        let _ = writeln!(
            out,
            "PUSH HOLD: {}\n  changed: {}\n  failed: {}\n  not reached: {}",
            result.hold_reason.as_deref().unwrap_or(""),
            changed_hosts(&result.hosts),
            names(State::Failed),
            names(State::NotReached)
        );
    }
}

/// Every host that changed, for the push-hold summary: a host that failed
/// after changing something (a canary whose new config was written and its
/// service restarted before its health check failed) is left changed, and
/// what changed on it is named, since nothing else will put it back.
fn changed_hosts(hosts: &[HostOutcome]) -> String {
    let mut names = Vec::new();
    let mut left = String::new();
    for h in hosts {
        match h.state {
            State::Changed => names.push(h.fqdn.clone()),
            State::Failed if h.changed > 0 => {
                names.push(format!("{} (failed)", h.fqdn));
                let done: Vec<&str> = h
                    .changes
                    .iter()
                    .filter(|c| !c.contains(" FAILED: "))
                    .map(String::as_str)
                    .collect();
                left.push_str(&format!("\n    {}, before it failed:", h.fqdn));
                for c in done {
                    left.push_str(&format!("\n      {c}"));
                }
            }
            _ => {}
        }
    }
    if names.is_empty() {
        return "none".into();
    }
    format!("{}{left}", names.join(", "))
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `fleet status --server URL --token-file FILE`: from the report store.
pub struct FromStore {
    pub url: String,
    pub token_file: PathBuf,
}

pub fn status(c: Common, store: Option<FromStore>) -> Result<i32, Error> {
    let st = match store {
        // The store answers for the inventory's hosts: no ssh, no key.
        Some(s) => {
            let reader = super::report::reader(&super::report::Server {
                url: s.url,
                token_file: s.token_file,
                json: c.json,
            })?;
            // The two reads and the inventory side by side: at thousands
            // of hosts each takes a while.
            let (inv, rows, drift) = std::thread::scope(|scope| {
                let rows =
                    scope.spawn(|| reader.get::<Vec<crate::store::HostRow>>("/api/v1/hosts", &[]));
                // Without the date each host began to differ, which
                // status does not show and the store reads from runs.
                let drift = scope.spawn(|| {
                    let no_since = [("since", "0".to_string())];
                    reader.get::<Vec<crate::store::drift::Drift>>("/api/v1/drift", &no_since)
                });
                let inv = Inventory::load(&c.inventory);
                (inv, joined(rows), joined(drift))
            });
            let hosts = push::matching(&inv?, c.hosts.as_deref())?;
            let rows = rows.map_err(super::report::failed)?;
            let drift = drift.map_err(super::report::failed)?;
            status::from_store(&hosts, &rows, &drift)
        }
        None => {
            let repo = Repository::open(&c.repo)?;
            let (inv, hosts) = push::select(
                &repo,
                &c.inventory,
                c.hosts.as_deref(),
                c.accept_new_host_keys,
            )?;
            let transport = Transport::for_inventory(&inv, c.accept_new_host_keys, &c.ssh)
                .map_err(|e| Error::Ssh(Box::new(e)))?;
            status::collect(&hosts, &transport)
        }
    };
    let mut out = std::io::stdout().lock();
    if c.json {
        let _ = serde_json::to_writer_pretty(&mut out, &st);
        let _ = writeln!(out);
    } else {
        let _ = write!(out, "{}", crate::text::terminal_safe(&status::render(&st)));
    }
    Ok(
        if st.hosts.iter().any(|h| h.error.is_some()) || !st.drift.is_empty() {
            1
        } else {
            0
        },
    )
}

/// What `kiln fleet bundle` publishes, and how.
pub struct Publish<'a> {
    pub repo: &'a Path,
    pub out: &'a Path,
    pub name: &'a str,
    pub inventory: Option<&'a Path>,
    /// `--serial`: instead of the build time.
    pub serial: Option<u64>,
    pub key: Option<&'a Path>,
    pub allow_unsigned: bool,
}

/// `kiln fleet bundle --out DIR`: writes the bundle for agents to fetch,
/// with its signature (`NAME.sig`, `SHA.tar.sig`). With an inventory it
/// carries each host's node file, as a push does, so that an agent
/// converges its host with the inventory's attributes.
pub fn bundle(p: Publish) -> Result<i32, Error> {
    let Publish {
        repo,
        out,
        name,
        inventory,
        serial,
        key,
        allow_unsigned,
    } = p;
    let key = push::signing_key(key, allow_unsigned)?;
    let policy = Repository::open(repo)?;
    let hosts = match inventory {
        None => Vec::new(),
        Some(file) => {
            let inv = Inventory::load(file)?;
            inv.check_roles(&policy)?;
            push::check_attributes(&policy, &inv)?;
            inv.hosts
        }
    };
    push::check_policy(&policy)?;
    let b = Bundle::build(repo, &hosts, serial)?;
    let sig = key.as_ref().map(|k| k.sign(&b.bytes)).transpose()?;
    if let Some(sig) = &sig {
        // Before the bundle: an agent that sees the new bundle finds its
        // signature (an old signature beside a new bundle is refused, and
        // the agent retries next run).
        for f in [format!("{}.tar", b.sha256), name.to_string()] {
            let p = out.join(crate::trust::sig_path(&f));
            std::fs::create_dir_all(out)
                .and_then(|_| crate::platform::hostfile::replace(&p, sig.as_bytes()))
                .map_err(|source| Error::Io {
                    context: format!("writing {}", p.display()),
                    source,
                })?;
        }
    }
    let path = b.publish(out, name)?;
    println!(
        "{}  {} ({}, {} files, {})",
        b.sha256,
        path.display(),
        b.meta.short(),
        b.files,
        match &key {
            Some(k) => format!("signed by {}", k.fingerprint()),
            None => "unsigned".into(),
        }
    );
    Ok(0)
}

/// `kiln __host` (hidden): a fleet host's end of the protocol. Reads one
/// request on stdin and writes one report on stdout; whatever else this
/// process prints goes to stderr, so that the report is all stdout holds.
pub fn host() -> Result<i32, Error> {
    use std::os::fd::FromRawFd;
    // SAFETY: fds 1 and 2 are this process's; the duplicate of stdout is
    // owned by `report` alone.
    let mut report = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            return Err(Error::Io {
                context: "keeping stdout for the report".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        std::fs::File::from_raw_fd(fd)
    };
    let answer = crate::fleet::serve::answer(&mut std::io::stdin().lock());
    writeln!(report, "{}", answer.to_json()).map_err(|source| Error::Io {
        context: "writing the report".into(),
        source,
    })?;
    Ok(0)
}
