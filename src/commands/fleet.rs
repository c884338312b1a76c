//! `kiln fleet converge | status | bundle`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use globset::Glob;
use indicatif::{ProgressBar, ProgressStyle};

use crate::digest::sha256_file;
use crate::error::{Error, PolicyError};
use crate::fleet::bundle::Bundle;
use crate::fleet::host::{HostOutcome, Payload, State};
use crate::fleet::inventory::{Host, Inventory};
use crate::fleet::plan::{self, BatchSize};
use crate::fleet::pool::{self, Event};
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
}

/// The key that signs what goes out, or none when the operator said
/// `--allow-unsigned`; with neither, nothing is pushed unsigned by default.
fn signing_key(
    key: Option<&Path>,
    allow_unsigned: bool,
) -> Result<Option<crate::trust::SigningKey>, Error> {
    match key {
        Some(k) => Ok(Some(crate::trust::SigningKey::load(k)?)),
        None if allow_unsigned => Ok(None),
        None => Err(Error::Usage(
            "refusing to publish an unsigned bundle: hosts verify bundles against /etc/kiln/allowed_signers. \
             Pass --signing-key FILE (an ed25519 key: ssh-keygen -t ed25519), or set signing_key = \"FILE\" in the inventory; \
             --allow-unsigned sends it unsigned on purpose"
                .into(),
        )),
    }
}

/// A fleet error as the command reports it.
fn usage(e: impl std::fmt::Display) -> Error {
    Error::Usage(e.to_string())
}

/// The policy must pass `kiln check` before it goes anywhere.
fn check_policy(repo: &Repository) -> Result<(), Error> {
    refuse(crate::engine::check(repo))
}

/// Every problem found, as one error; none is Ok.
fn refuse(errors: Vec<PolicyError>) -> Result<(), Error> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::error::PolicyErrors(errors).into())
    }
}

/// The hosts' attributes, checked as each host's converge would check them.
fn check_attributes(repo: &Repository, inv: &Inventory) -> Result<(), Error> {
    refuse(crate::fleet::inventory::check_attributes(repo, inv))
}

/// Loads the inventory and selects hosts: every error before any connection.
fn select(c: &Common, repo: &Repository) -> Result<(Inventory, Vec<Host>), Error> {
    let inv = Inventory::load(&c.inventory)?;
    inv.check_roles(repo)?;
    check_attributes(repo, &inv)?;
    if !c.accept_new_host_keys && !inv.known_hosts.is_file() {
        return Err(PolicyError::new(format!(
            "the known_hosts file {} does not exist",
            inv.known_hosts.display()
        ))
        .in_file(&inv.file)
        .fix("collect the hosts' keys into it (ssh-keyscan, then check them), or pass --accept-new-host-keys for first contact")
        .into());
    }
    let hosts: Vec<Host> = match &c.hosts {
        None => inv.hosts.clone(),
        Some(pattern) => {
            let m = Glob::new(pattern)
                .map_err(|e| Error::Usage(format!("--hosts {pattern:?}: {e}")))?
                .compile_matcher();
            inv.hosts
                .iter()
                .filter(|h| m.is_match(&h.fqdn) || h.roles.iter().any(|r| m.is_match(r)))
                .cloned()
                .collect()
        }
    };
    if hosts.is_empty() {
        return Err(Error::Usage(format!(
            "--hosts {:?} matches no host of {}",
            c.hosts.as_deref().unwrap_or("*"),
            inv.file.display()
        )));
    }
    Ok((inv, hosts))
}

/// The kiln binary to send (`binary`, else the running one) and its sha256
/// (cached by inode and mtime).
fn self_binary(binary: Option<&Path>) -> Result<(PathBuf, String), Error> {
    let path = binary.map(Path::to_path_buf).unwrap_or_else(|| {
        std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
    });
    let io = |source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&path).map_err(io)?;
    let key = format!(
        "{}-{}-{}-{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec() ^ m.mtime()
    );
    let cache = std::env::temp_dir().join(format!("kiln-binary-sha-{}", unsafe { libc::getuid() }));
    if let Ok(s) = std::fs::read_to_string(&cache)
        && let Some((k, sha)) = s.trim().split_once(' ')
        && k == key
    {
        return Ok((path, sha.to_string()));
    }
    let sha = sha256_file(&path).map_err(io)?;
    let _ = std::fs::write(&cache, format!("{key} {sha}\n"));
    Ok((path, sha))
}

pub fn converge(c: FleetConverge) -> Result<i32, Error> {
    let started = Instant::now();
    let repo = Repository::open(&c.common.repo)?;
    let batch = match &c.batch {
        Some(b) => Some(b.parse::<BatchSize>().map_err(usage)?),
        None => None,
    };
    let (inv, hosts) = select(&c.common, &repo)?;
    // The bundle's policy must compile at all before it goes anywhere,
    // and every host must be able to read the secrets it needs.
    check_policy(&repo)?;
    let unreadable = crate::fleet::secrets::check(&repo, &inv);
    if !unreadable.is_empty() {
        return Err(crate::error::PolicyErrors(unreadable).into());
    }
    let key = signing_key(
        c.signing_key.as_deref().or(inv.signing_key.as_deref()),
        c.allow_unsigned,
    )?;
    let transport = Transport::for_inventory(&inv, c.common.accept_new_host_keys, &c.common.ssh)
        .map_err(usage)?;
    // Node files for the whole inventory, not only the selected hosts: the
    // bundle (and its hash) is the same whichever hosts a push reaches.
    let bundle = Bundle::build(&c.common.repo, &inv.hosts, None)?;
    let bundle_sig = key.as_ref().map(|k| k.sign(&bundle.bytes)).transpose()?;
    let (binary_path, binary_sha) = self_binary(c.binary.as_deref())?;
    let payload = Payload {
        bundle: Arc::new(bundle.bytes),
        bundle_sha: bundle.sha256.clone(),
        bundle_content: bundle.meta.content.clone(),
        bundle_sig,
        binary_path,
        binary_sha: binary_sha.clone(),
        binary: OnceLock::new(),
    };
    let opts = plan::Options {
        canary: c.canary,
        batch,
        parallel: c.parallel.max(1),
        max_fail: c.max_fail,
        why_run: c.why_run,
    };
    let json = c.common.json;
    let tty = std::io::stderr().is_terminal() && !json;
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let counts = Mutex::new((0usize, 0usize, 0usize));
    let say = |line: String| {
        let line = crate::text::terminal_safe(&line).into_owned();
        let b = bar.lock().unwrap();
        match &*b {
            Some(pb) => pb.println(line),
            None if json => eprintln!("{line}"),
            None => println!("{line}"),
        }
    };
    if !json {
        say(format!(
            "kiln fleet: {} host(s), bundle {} ({}, {} files, {}), kiln {}{}",
            hosts.len(),
            &bundle.sha256[..12],
            bundle.meta.short(),
            bundle.files,
            match &key {
                Some(k) => format!("signed by {}", k.fingerprint()),
                None => "UNSIGNED (--allow-unsigned)".into(),
            },
            &binary_sha[..12],
            if c.why_run { ", why-run" } else { "" }
        ));
    }
    let on_event = |e: Event| match e {
        Event::BatchStart { batch, index, of } => {
            *counts.lock().unwrap() = (0, 0, 0);
            say(format!(
                "== {} ({}/{}): {} host(s)",
                batch.name,
                index + 1,
                of,
                batch.hosts.len()
            ));
            if tty {
                let pb = ProgressBar::new(batch.hosts.len() as u64);
                pb.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                pb.set_prefix(batch.name.clone());
                *bar.lock().unwrap() = Some(pb);
            }
        }
        Event::HostDone { batch: _, outcome } => {
            let (done, changed, failed) = {
                let mut k = counts.lock().unwrap();
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
            if !json || !tty {
                say(line);
            }
            if let Some(pb) = &*bar.lock().unwrap() {
                pb.set_position(done as u64);
                pb.set_message(format!("{changed} changed, {failed} failed"));
            }
        }
        Event::BatchEnd { batch } => {
            if let Some(pb) = bar.lock().unwrap().take() {
                pb.finish_and_clear();
            }
            let (done, changed, failed) = *counts.lock().unwrap();
            say(format!(
                "   {}: {done} done, {changed} changed, {failed} failed",
                batch.name
            ));
        }
        Event::Hold { reason } => say(format!(
            "!! push hold: {reason}; no further host is touched"
        )),
    };
    pool::hold_on_interrupt();
    let result = pool::run(&hosts, &transport, &payload, &opts, &on_event);
    let elapsed = started.elapsed();
    let n = |s: State| result.hosts.iter().filter(|h| h.state == s).count();
    let failed = n(State::Failed);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "bundle": bundle.sha256,
            "bundle_serial": bundle.meta.serial,
            "kiln": binary_sha,
            "why_run": c.why_run,
            "held": result.held,
            "hold_reason": result.hold_reason,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
            "totals": {
                "hosts": result.hosts.len(),
                "changed": n(State::Changed),
                "would_change": n(State::WouldChange),
                "unchanged": n(State::Unchanged),
                "failed": failed,
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
                    d.join(", ")
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
            let v: Vec<&str> = result
                .hosts
                .iter()
                .filter(|h| h.state == s)
                .map(|h| h.fqdn.as_str())
                .collect();
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
            n(State::Changed) + n(State::WouldChange),
            if c.why_run { "would change" } else { "changed" },
            n(State::Unchanged),
            failed,
            n(State::NotReached)
        );
        // The same change on many hosts, said once: for a whitelist change,
        // which packages move from which version to which, and where.
        let mut by_change: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for h in &result.hosts {
            for ch in &h.changes {
                by_change
                    .entry(ch.as_str())
                    .or_default()
                    .push(h.fqdn.as_str());
            }
        }
        if !by_change.is_empty() {
            let _ = writeln!(
                out,
                "\n{}:",
                if c.why_run { "would change" } else { "changes" }
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
    Ok(if failed > 0 || result.held { 1 } else { 0 })
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

pub fn status(c: Common) -> Result<i32, Error> {
    let repo = Repository::open(&c.repo)?;
    let (inv, hosts) = select(&c, &repo)?;
    let transport =
        Transport::for_inventory(&inv, c.accept_new_host_keys, &c.ssh).map_err(usage)?;
    let st = status::collect(&hosts, &transport);
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
    let key = signing_key(key, allow_unsigned)?;
    let policy = Repository::open(repo)?;
    let hosts = match inventory {
        None => Vec::new(),
        Some(file) => {
            let inv = Inventory::load(file)?;
            inv.check_roles(&policy)?;
            check_attributes(&policy, &inv)?;
            inv.hosts
        }
    };
    check_policy(&policy)?;
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

/// `kiln unpack-bundle FILE DEST` (hidden): unpacks a bundle whose
/// signature was just verified, as a fleet host does.
pub fn unpack_bundle(file: &Path, dest: &Path) -> Result<i32, Error> {
    crate::fleet::serve::unpack(file, dest)?;
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
