//! `kiln agent`: converges this host on an interval with a random splay, as
//! chef-client does, from a repository directory or a published bundle (a
//! file or an http(s):// URL). A bundle is trusted for its signature
//! (`.sig`, checked against the allowed_signers file), not for where it came
//! from; its `.sha256` only names it. A failed fetch or a refused bundle
//! keeps the last good bundle, whose signature is checked again each run so
//! that a revoked key stops counting. A bundle's node file for this host
//! (`nodes/FQDN.toml`, covered by the signature) gives the fqdn, roles and
//! attributes, so the agent converges what the last push converged; the
//! roles' verify checks run after, as in a push.

use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{LAST_RUN, Report, Status};
use crate::error::Error;
use crate::fleet::bundle::{node_path, unpack};
use crate::fleet::protocol::HostReport;
use crate::platform::hostfile;
use crate::platform::target::Target;
use crate::serial::BundleMeta;
use crate::trust::{AllowedSigners, sig_path};

pub struct Agent {
    pub repo: PathBuf,
    pub interval: Duration,
    pub splay: Duration,
    pub source: Option<String>,
    pub roles: Vec<String>,
    pub fqdn: Option<String>,
    pub once: bool,
    pub statsd: Option<String>,
    pub state_dir: PathBuf,
    /// The OpenSSH allowed_signers file bundles are verified against.
    pub allowed_signers: PathBuf,
}

/// What the agent remembers between runs and restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    roles: Vec<String>,
    fqdn: Option<String>,
    /// The developer VM size the host was converged with, if any.
    #[serde(default)]
    size: Option<String>,
    /// The last bundle that was fetched and verified.
    current: Option<String>,
}

fn random_below(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    Duration::from_millis(h.finish() % (max.as_millis() as u64).max(1))
}

fn log(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("[{now}] kiln agent: {}", crate::text::terminal_safe(msg));
}

pub fn run(a: Agent) -> Result<i32, Error> {
    let (interval, splay) = (a.interval, a.splay);
    let io = |context: String| move |source| Error::Io { context, source };
    std::fs::create_dir_all(&a.state_dir)
        .map_err(io(format!("creating {}", a.state_dir.display())))?;
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
    let statsd = match &a.statsd {
        None => None,
        Some(addr) => {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0")
                .map_err(io("binding a UDP socket for StatsD".into()))?;
            sock.connect(addr).map_err(io(format!("--statsd {addr}")))?;
            Some(sock)
        }
    };
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
    loop {
        let wait = if a.once {
            Duration::ZERO
        } else {
            random_below(splay)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let ok = run_once(&a, &mut state, statsd.as_ref());
        let _ = hostfile::replace(
            &state_file,
            &serde_json::to_vec_pretty(&state).unwrap_or_default(),
        );
        if a.once {
            return Ok(if ok { 0 } else { 1 });
        }
        std::thread::sleep(interval);
    }
}

/// Fetches (if the source is a bundle), converges and runs the verify
/// checks once. False when any of it failed, a refused or unfetchable
/// bundle included (even when the last good one converged instead).
fn run_once(a: &Agent, state: &mut State, statsd: Option<&std::net::UdpSocket>) -> bool {
    let started = Instant::now();
    let mut fetched = true;
    let repo = match &a.source {
        None => a.repo.clone(),
        Some(s) if Path::new(s).is_dir() => PathBuf::from(s),
        Some(s) => match fetch(s, &a.state_dir, &a.allowed_signers) {
            Ok((sha, meta)) => {
                if state.current.as_deref() != Some(&sha) {
                    log(&format!(
                        "new bundle {sha}{}",
                        meta.map(|m| format!(" ({}, made {})", m.short(), m.created))
                            .unwrap_or_default()
                    ));
                }
                state.current = Some(sha.clone());
                a.state_dir.join("bundles").join(sha)
            }
            Err(e) => {
                metric(statsd, "kiln.agent.fetch_failed:1|c");
                let last_good = state.current.as_ref().filter(|sha| {
                    a.state_dir.join("bundles").join(sha).is_dir()
                        && match reverify(&a.state_dir, sha, &a.allowed_signers) {
                            Ok(_) => true,
                            Err(e) => {
                                log(&format!(
                                    "the last good bundle {sha} is no longer trusted: {e}"
                                ));
                                false
                            }
                        }
                });
                match last_good {
                    Some(sha) => {
                        log(&format!(
                            "fetching {s} failed ({e}); converging with the last good bundle {sha}"
                        ));
                        fetched = false;
                        a.state_dir.join("bundles").join(sha)
                    }
                    None => {
                        log(&format!(
                            "fetching {s} failed ({e}) and there is no trusted earlier bundle; not converging"
                        ));
                        metric(statsd, "kiln.agent.failed:1|g");
                        return false;
                    }
                }
            }
        },
    };
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("kiln"));
    if let Err(e) = check_pushed_binary(&exe) {
        log(&format!("not converging: {e}"));
        metric(statsd, "kiln.agent.failed:1|g");
        return false;
    }
    let mut c = Command::new(exe);
    // `verify --converge`: the same converge and health checks a push runs.
    c.arg("--repo")
        .arg(&repo)
        .args(["verify", "--converge", "--json"]);
    // The bundle's node file of this host, when it has one: fqdn, roles and
    // attributes as the push converged them, signed with the bundle.
    let node = state
        .fqdn
        .clone()
        .or_else(|| {
            crate::platform::facts::Facts::gather(&Target::host(), None)
                .fqdn
                .into()
        })
        .map(|f| node_path(&repo, &f))
        .filter(|p| p.is_file());
    match &node {
        Some(n) => {
            c.arg("--node").arg(n);
            // Roles given to this agent on its command line still win.
            for r in &a.roles {
                c.arg("--role").arg(r);
            }
        }
        None if state.roles.is_empty() => {
            log(&format!(
                "not converging: this host's roles are unknown (no --role, no node file of {} in the bundle, and no earlier run in {LAST_RUN}); pass --role R (remembered for later runs), or push to the host with kiln fleet converge",
                state.fqdn.as_deref().unwrap_or("this host")
            ));
            metric(statsd, "kiln.agent.failed:1|g");
            return false;
        }
        None => {
            for r in &state.roles {
                c.arg("--role").arg(r);
            }
            if let Some(f) = &state.fqdn {
                c.arg("--fqdn").arg(f);
            }
        }
    }
    if let Some(size) = &state.size {
        c.arg("--size").arg(size);
    }
    if let Some(n) = &node {
        log(&format!("node from {}", n.display()));
    }
    let out = match c.output() {
        Ok(o) => o,
        Err(e) => {
            log(&format!("cannot run kiln verify --converge: {e}"));
            return false;
        }
    };
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let doc = HostReport::parse(&String::from_utf8_lossy(&out.stdout)).ok();
    let report = doc.as_ref().and_then(|d| d.converge.as_ref());
    let (updated, failed, success) = match report {
        Some(r) => (r.updated, r.failed, r.success),
        None => (0, 1, false),
    };
    if success {
        log(&format!(
            "converged: {updated} resource(s) updated in {elapsed:.0} ms"
        ));
    } else {
        // The failed resources' own errors, else what kiln printed.
        let mut why: Vec<String> = report
            .into_iter()
            .flat_map(|r| &r.resources)
            .filter(|e| e.status == Status::Failed)
            .map(|e| format!("{}: {}", e.resource, e.error.as_deref().unwrap_or("")))
            .collect();
        if why.is_empty() {
            why.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        log(&format!(
            "converge FAILED ({failed} failed, {updated} updated): {}",
            why.join("; ")
        ));
    }
    // The health checks ran only after a successful converge.
    let checks = doc.as_ref().and_then(|d| d.checks.as_deref());
    let checks_failed = match checks {
        Some(checks) => {
            let bad: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{} ({}): {}", c.check, c.origin, c.detail))
                .collect();
            if bad.is_empty() {
                log(&format!(
                    "verify: {}/{} checks passed",
                    checks.len(),
                    checks.len()
                ));
            } else {
                log(&format!(
                    "verify FAILED: {}/{} checks passed; {}",
                    checks.len() - bad.len(),
                    checks.len(),
                    bad.join("; ")
                ));
            }
            bad.len()
        }
        None => 0,
    };
    // Kept for people and tools, as last_run.json is for the converge.
    if let Some(d) = &doc {
        let _ = hostfile::replace(&a.state_dir.join(LAST_AGENT_RUN), d.to_json().as_bytes());
    }
    metric(
        statsd,
        &format!(
            "kiln.agent.run_time_ms:{elapsed:.0}|ms\nkiln.agent.changed:{updated}|g\nkiln.agent.failed:{}|g\nkiln.agent.checks_failed:{checks_failed}|g",
            if success { failed } else { failed.max(1) }
        ),
    );
    fetched && success && checks_failed == 0
}

/// The agent's last converge and checks (a `kiln verify --json` document),
/// in its state directory.
const LAST_AGENT_RUN: &str = "last_run.json";

fn metric(sock: Option<&std::net::UdpSocket>, payload: &str) {
    if let Some(s) = sock {
        let _ = s.send(payload.as_bytes());
    }
}

/// A kiln binary the fleet pushed is named `kiln.SHA256`: it is run again
/// (for each converge) only while it still has that hash.
fn check_pushed_binary(exe: &Path) -> Result<(), String> {
    let Some(want) = exe
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("kiln."))
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    else {
        return Ok(());
    };
    let got = crate::digest::sha256_file(exe)
        .map_err(|e| format!("cannot hash {}: {e}", exe.display()))?;
    if got != want {
        return Err(format!(
            "{} has sha256 {got}, not the {want} it was pushed with: altered on this host, not run",
            exe.display()
        ));
    }
    Ok(())
}

/// Bundles larger than this are refused while downloading: more than a
/// signature is checked over.
const MAX_BUNDLE: u64 = crate::trust::MAX_SIGNED;

/// An http(s) client; for https, rustls with the system's root certificates
/// (which honours SSL_CERT_FILE and SSL_CERT_DIR). Plain http needs none.
fn http_agent(https: bool) -> Result<ureq::Agent, String> {
    let config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(300)));
    if !https {
        return Ok(config.build().into());
    }
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    static ROOTS: std::sync::OnceLock<Result<Arc<Vec<Certificate<'static>>>, String>> =
        std::sync::OnceLock::new();
    let roots = ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let certs: Vec<Certificate<'static>> = found
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "no root certificates found on this system ({}); install ca-certificates or set SSL_CERT_FILE",
                    found
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Ok(Arc::new(certs))
        })
        .clone()?;
    Ok(config
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(roots))
                .build(),
        )
        .build()
        .into())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Opens a path or URL for reading.
fn open(what: &str) -> Result<Box<dyn Read>, String> {
    if is_url(what) {
        let resp = http_agent(what.starts_with("https://"))?
            .get(what)
            .call()
            .map_err(|e| format!("GET {what}: {e}"))?;
        Ok(Box::new(resp.into_body().into_reader()))
    } else {
        Ok(Box::new(
            std::fs::File::open(what).map_err(|e| format!("reading {what}: {e}"))?,
        ))
    }
}

/// A small published file (the .sha256 or the .sig), whole.
fn get_small(what: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    open(what)?
        .take(64 << 10)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading {what}: {e}"))?;
    Ok(body)
}

/// Streams `what` to `dest` (at most [`MAX_BUNDLE`]), returning its sha256.
fn download(what: &str, dest: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut r = open(what)?.take(MAX_BUNDLE + 1);
    let mut f =
        std::fs::File::create(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("reading {what}: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BUNDLE {
            return Err(format!("{what}: larger than {MAX_BUNDLE} bytes"));
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    f.sync_all()
        .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Checks a kept bundle's signature against the allowed signers as they are
/// now. Returns the signer.
fn reverify(state: &Path, sha: &str, allowed: &Path) -> Result<String, String> {
    let tar = state.join("bundles").join(format!("{sha}.tar"));
    let signers = AllowedSigners::load(allowed).map_err(|e| e.to_string())?;
    signers
        .verify_file(&tar, Path::new(&sig_path(&tar.to_string_lossy())))
        .map_err(|e| e.to_string())
}

/// Fetches a bundle, its published sha256 and its signature from a path or
/// http(s):// URL, streams it to disk, verifies the hash and the signature
/// against the allowed signers, refuses it when it is older than the newest
/// bundle this host converged (whatever the cache holds: the record is
/// kiln's, not the cache's), and only then unpacks it under
/// `state/bundles/<sha>`. Returns the sha and the bundle's metadata.
fn fetch(
    source: &str,
    state: &Path,
    allowed: &Path,
) -> Result<(String, Option<BundleMeta>), String> {
    let published = get_small(&format!("{source}.sha256"))?;
    let want = String::from_utf8_lossy(&published)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{source}.sha256 holds no sha256"));
    }
    let newest = crate::serial::recorded(&Target::host()).map_err(|e| e.to_string())?;
    let admit = |meta: Option<&BundleMeta>| {
        crate::serial::admit(newest.as_ref(), meta, source).map_err(|e| e.to_string())
    };
    let dir = state.join("bundles");
    let unpacked = dir.join(&want);
    if unpacked.is_dir() {
        // Already have it: nothing to download, but its signature must
        // still count (a signer removed since is refused), and so must its
        // serial (a newer bundle may have converged since).
        reverify(state, &want, allowed)?;
        let meta = BundleMeta::load(&unpacked).map_err(|e| e.to_string())?;
        admit(meta.as_ref())?;
        return Ok((want, meta));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let part = dir.join(format!("{want}.tar.part.{}", std::process::id()));
    let part_sig = PathBuf::from(sig_path(&part.to_string_lossy()));
    let result = (|| {
        let got = download(source, &part)?;
        if got != want {
            return Err(format!(
                "{source}: sha256 {got} does not match the published {want}"
            ));
        }
        let sig = get_small(&sig_path(source)).map_err(|e| {
            format!(
                "{source}: unsigned (no signature at {}: {e}); refused",
                sig_path(source)
            )
        })?;
        std::fs::write(&part_sig, &sig)
            .map_err(|e| format!("writing {}: {e}", part_sig.display()))?;
        let who = AllowedSigners::load(allowed)
            .and_then(|s| s.verify_file(&part, &part_sig))
            // Name what was fetched, not the temporary file.
            .map_err(|e| e.to_string().replace(&part.display().to_string(), source))?;
        log(&format!("{source}: bundle {want} signed by {who}"));
        let tar = dir.join(format!("{want}.tar"));
        let tar_sig = sig_path(&tar.to_string_lossy());
        std::fs::rename(&part_sig, &tar_sig)
            .and_then(|_| std::fs::rename(&part, &tar))
            .map_err(|e| format!("keeping {}: {e}", tar.display()))?;
        unpack(&tar, source, &unpacked, admit).inspect_err(|_| {
            // Refused: nothing of it is kept.
            let _ = std::fs::remove_file(&tar);
            let _ = std::fs::remove_file(&tar_sig);
        })
    })();
    let _ = std::fs::remove_file(&part);
    let _ = std::fs::remove_file(&part_sig);
    let meta = result?;
    // Keep the five newest bundles.
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(5);
    for (_, p) in &old[..excess] {
        let _ = std::fs::remove_dir_all(p);
        let _ = std::fs::remove_file(p.with_extension("tar"));
        let _ = std::fs::remove_file(p.with_extension("tar.sig"));
    }
    Ok((want, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_stays_below_its_bound() {
        assert!(random_below(Duration::from_secs(2)) < Duration::from_secs(2));
    }
}
