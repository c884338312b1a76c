//! `kiln agent`: converges this host on an interval with a random splay, as
//! chef-client does, from a repository directory or a published bundle (a
//! file or an http:// URL, verified against its `.sha256`). A failed fetch
//! keeps the last good bundle.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{LAST_RUN, Report, Status};
use crate::error::Error;
use crate::fleet::bundle::{sha256_hex, unpack, write_atomic};
use crate::platform::target::Target;

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
    println!("[{now}] kiln agent: {msg}");
}

pub fn run(a: Agent) -> Result<i32, Error> {
    let (interval, splay) = (a.interval, a.splay);
    if let Some(s) = &a.source
        && s.starts_with("https://")
    {
        return Err(Error::Usage(format!(
            "--source {s}: this kiln fetches plain http:// only (the bundle is verified by its sha256); serve it over http, or give a file path"
        )));
    }
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
    if state.roles.is_empty() {
        return Err(Error::Usage(format!(
            "kiln agent: this host's roles are unknown (no --role, and no earlier run in {LAST_RUN}): pass --role R (remembered for later runs)"
        )));
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
    log(&format!(
        "roles {}, every {:?} with up to {:?} splay, from {}",
        state.roles.join(","),
        interval,
        splay,
        a.source.as_deref().unwrap_or(&a.repo.display().to_string())
    ));
    loop {
        let wait = random_below(splay);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let ok = run_once(&a, &mut state, statsd.as_ref());
        let _ = write_atomic(
            &state_file,
            &serde_json::to_vec_pretty(&state).unwrap_or_default(),
        );
        if a.once {
            return Ok(if ok { 0 } else { 1 });
        }
        std::thread::sleep(interval);
    }
}

/// Fetches (if the source is a bundle) and converges once.
fn run_once(a: &Agent, state: &mut State, statsd: Option<&std::net::UdpSocket>) -> bool {
    let started = Instant::now();
    let repo = match &a.source {
        None => a.repo.clone(),
        Some(s) if Path::new(s).is_dir() => PathBuf::from(s),
        Some(s) => match fetch(s, &a.state_dir) {
            Ok(sha) => {
                if state.current.as_deref() != Some(&sha) {
                    log(&format!("new bundle {sha}"));
                }
                state.current = Some(sha.clone());
                a.state_dir.join("bundles").join(sha)
            }
            Err(e) => {
                metric(statsd, "kiln.agent.fetch_failed:1|c");
                match &state.current {
                    Some(sha) if a.state_dir.join("bundles").join(sha).is_dir() => {
                        log(&format!(
                            "fetching {s} failed ({e}); converging with the last good bundle {sha}"
                        ));
                        a.state_dir.join("bundles").join(sha)
                    }
                    _ => {
                        log(&format!(
                            "fetching {s} failed ({e}) and no bundle was ever fetched; not converging"
                        ));
                        metric(statsd, "kiln.agent.failed:1|g");
                        return false;
                    }
                }
            }
        },
    };
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("kiln"));
    let mut c = Command::new(exe);
    c.arg("--repo").arg(&repo).arg("converge").arg("--json");
    for r in &state.roles {
        c.arg("--role").arg(r);
    }
    if let Some(f) = &state.fqdn {
        c.arg("--fqdn").arg(f);
    }
    if let Some(size) = &state.size {
        c.arg("--size").arg(size);
    }
    let out = match c.output() {
        Ok(o) => o,
        Err(e) => {
            log(&format!("cannot run kiln converge: {e}"));
            return false;
        }
    };
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let report = Report::parse(&String::from_utf8_lossy(&out.stdout)).ok();
    let (updated, failed, success) = match &report {
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
            .as_ref()
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
    metric(
        statsd,
        &format!(
            "kiln.agent.run_time_ms:{elapsed:.0}|ms\nkiln.agent.changed:{updated}|g\nkiln.agent.failed:{}|g",
            if success { failed } else { failed.max(1) }
        ),
    );
    success
}

fn metric(sock: Option<&std::net::UdpSocket>, payload: &str) {
    if let Some(s) = sock {
        let _ = s.send(payload.as_bytes());
    }
}

/// Reads a bundle and its published sha256 from a path or http:// URL,
/// verifies it, and unpacks it under `state/bundles/<sha>`. Returns the sha.
fn fetch(source: &str, state: &Path) -> Result<String, String> {
    let get = |what: &str| -> Result<Vec<u8>, String> {
        if what.starts_with("http://") {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into();
            let mut resp = agent
                .get(what)
                .call()
                .map_err(|e| format!("GET {what}: {e}"))?;
            let mut body = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(1 << 30)
                .read_to_end(&mut body)
                .map_err(|e| format!("GET {what}: {e}"))?;
            Ok(body)
        } else {
            std::fs::read(what).map_err(|e| format!("reading {what}: {e}"))
        }
    };
    let published = get(&format!("{source}.sha256"))?;
    let want = String::from_utf8_lossy(&published)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{source}.sha256 holds no sha256"));
    }
    let dir = state.join("bundles");
    let unpacked = dir.join(&want);
    if unpacked.is_dir() {
        return Ok(want); // already have it: nothing to download
    }
    let bytes = get(source)?;
    let got = sha256_hex(&bytes);
    if got != want {
        return Err(format!(
            "{source}: sha256 {got} does not match the published {want}"
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tar = dir.join(format!("{want}.tar"));
    write_atomic(&tar, &bytes).map_err(|e| format!("writing {}: {e}", tar.display()))?;
    unpack(&tar, &unpacked)?;
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
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_stays_below_its_bound() {
        assert!(random_below(Duration::from_secs(2)) < Duration::from_secs(2));
    }
}
