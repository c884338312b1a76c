//! `kiln fleet status`: each host's last run and fingerprint, grouped by
//! the Debian release the host runs, and drift: hosts of the same roles and
//! release whose fingerprints differ, with the parts that differ (hosts of
//! two releases differ by design: other versions, other paths).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;

use super::inventory::Host;
use super::rollout::BIN_DIR;
use super::ssh::Transport;
use crate::engine::{LAST_RUN, Report};
use crate::fingerprint::{Fingerprint, Part};

/// What status shows of a host's last run report.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub started_at: u64,
    pub elapsed_ms: f64,
    pub success: bool,
    pub updated: usize,
    pub failed: usize,
    pub why_run: bool,
}

impl From<Report> for LastRun {
    fn from(r: Report) -> Self {
        LastRun {
            started_at: r.started_at,
            elapsed_ms: r.elapsed_ms,
            success: r.success,
            updated: r.updated,
            failed: r.failed,
            why_run: r.why_run,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub fqdn: String,
    pub address: String,
    pub roles: Vec<String>,
    /// The host's Debian release (os-release's VERSION_CODENAME); empty
    /// when it could not be read.
    pub release: String,
    pub last_run: Option<LastRun>,
    pub fingerprint: Option<String>,
    #[serde(skip)]
    parts: Vec<Part>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub resource: String,
    /// The part on most hosts of the roles (None: not managed there).
    pub expected: Option<String>,
    pub found: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outlier {
    pub fqdn: String,
    pub fingerprint: String,
    pub differs: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub roles: Vec<String>,
    pub release: String,
    /// The fingerprint most hosts of these roles have.
    pub majority: String,
    pub hosts_with_majority: Vec<String>,
    pub outliers: Vec<Outlier>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub hosts: Vec<HostStatus>,
    pub drift: Vec<Drift>,
}

const SEP: &str = "--kiln-fingerprint--";
/// The first line of the status script's output: the host's release.
const RELEASE: &str = "kiln-release:";
/// The host's kiln binary (named `kiln.SHA256`) no longer has its hash.
const ALTERED: &str = "kiln-binary-altered:";

pub fn collect(hosts: &[Host], t: &Transport) -> Status {
    let script = format!(
        "echo \"{RELEASE} $(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '\\\"')\"; \
         cat {LAST_RUN} 2>/dev/null; echo; echo {SEP}; \
         K=$(readlink -f {BIN_DIR}/kiln); case \"${{K##*/}}\" in kiln.*) S=${{K##*/kiln.}};; *) S=;; esac; \
         if [ -x \"$K\" ] && [ -n \"$S\" ] && [ \"$(sha256sum < \"$K\" | cut -d' ' -f1)\" != \"$S\" ]; then \
         echo \"{ALTERED} $K does not have the sha256 it was pushed with: altered on the host, not run\"; \
         elif [ -x \"$K\" ] && \"$K\" fingerprint --help >/dev/null 2>&1; then cd / && \"$K\" fingerprint --json 2>&1; fi; exit 0"
    );
    let results: Vec<Mutex<Option<HostStatus>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..16.min(hosts.len()) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(h) = hosts.get(i) else { break };
                    *results[i].lock().unwrap() = Some(one(h, t, &script));
                }
            });
        }
    });
    let mut hosts: Vec<HostStatus> = results
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every host visited"))
        .collect();
    // Grouped by release, in inventory order within each.
    hosts.sort_by(|a, b| a.release.cmp(&b.release));
    let drift = drift(&hosts);
    Status { hosts, drift }
}

fn one(h: &Host, t: &Transport, script: &str) -> HostStatus {
    let mut st = HostStatus {
        fqdn: h.fqdn.clone(),
        address: h.address.clone(),
        roles: h.roles.clone(),
        release: String::new(),
        last_run: None,
        fingerprint: None,
        parts: vec![],
        error: None,
    };
    match t.run(h, script, None) {
        Err(e) => st.error = Some(e.to_string()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = match text.split_once('\n') {
                Some((first, rest)) if first.starts_with(RELEASE) => {
                    st.release = first[RELEASE.len()..].trim().to_string();
                    rest
                }
                _ => &text,
            };
            let (run, fp) = text.split_once(SEP).unwrap_or((text, ""));
            if !run.trim().is_empty() {
                match Report::parse(run.trim()) {
                    Ok(r) => st.last_run = Some(r.into()),
                    Err(e) => st.error = Some(format!("last_run.json: {e}")),
                }
            }
            if let Some(why) = fp.trim().strip_prefix(ALTERED) {
                st.error = Some(format!("kiln binary altered: {}", why.trim()));
            } else if let Ok(f) = Fingerprint::parse(fp.trim()) {
                st.fingerprint = Some(f.fingerprint);
                st.parts = f.parts;
            }
        }
    }
    st
}

fn drift(hosts: &[HostStatus]) -> Vec<Drift> {
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&HostStatus>> = BTreeMap::new();
    for h in hosts {
        if h.fingerprint.is_some() {
            let mut roles = h.roles.clone();
            roles.sort();
            groups
                .entry((h.release.clone(), roles))
                .or_default()
                .push(h);
        }
    }
    let mut out = Vec::new();
    for ((release, roles), members) in groups {
        let mut by_fp: BTreeMap<&str, Vec<&HostStatus>> = BTreeMap::new();
        for h in &members {
            by_fp
                .entry(h.fingerprint.as_deref().unwrap())
                .or_default()
                .push(h);
        }
        if by_fp.len() < 2 {
            continue;
        }
        let (majority, with) = by_fp
            .iter()
            .max_by_key(|(fp, hs)| (hs.len(), std::cmp::Reverse(*fp)))
            .map(|(fp, hs)| (fp.to_string(), hs.clone()))
            .unwrap();
        let reference: BTreeMap<&str, &str> = with[0]
            .parts
            .iter()
            .map(|p| (p.resource.as_str(), p.part.as_str()))
            .collect();
        let mut outliers = Vec::new();
        for (fp, hs) in &by_fp {
            if *fp == majority {
                continue;
            }
            for h in hs {
                let theirs: BTreeMap<&str, &str> = h
                    .parts
                    .iter()
                    .map(|p| (p.resource.as_str(), p.part.as_str()))
                    .collect();
                let keys: BTreeSet<&str> = reference.keys().chain(theirs.keys()).copied().collect();
                let differs = keys
                    .into_iter()
                    .filter(|k| reference.get(k) != theirs.get(k))
                    .map(|k| Difference {
                        resource: k.to_string(),
                        expected: reference.get(k).map(|s| s.to_string()),
                        found: theirs.get(k).map(|s| s.to_string()),
                    })
                    .collect();
                outliers.push(Outlier {
                    fqdn: h.fqdn.clone(),
                    fingerprint: fp.to_string(),
                    differs,
                });
            }
        }
        out.push(Drift {
            roles,
            release,
            majority,
            hosts_with_majority: with.iter().map(|h| h.fqdn.clone()).collect(),
            outliers,
        });
    }
    out
}

fn ago(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(t);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn render(st: &Status) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:<16} {:<10} {:<8} {:>7}  {:<14} DETAIL",
        "HOST", "ROLES", "LAST RUN", "RESULT", "CHANGED", "FINGERPRINT"
    );
    let drifted: BTreeSet<&str> = st
        .drift
        .iter()
        .flat_map(|d| d.outliers.iter().map(|o| o.fqdn.as_str()))
        .collect();
    let mut release = None;
    for h in &st.hosts {
        if release != Some(&h.release) {
            release = Some(&h.release);
            let n = st.hosts.iter().filter(|o| o.release == h.release).count();
            let name = if h.release.is_empty() {
                "unknown"
            } else {
                &h.release
            };
            let _ = writeln!(s, "release {name} ({n} host(s)):");
        }
        let (when, result, changed) = match &h.last_run {
            Some(r) => (
                ago(r.started_at),
                if r.why_run {
                    "why-run"
                } else if r.success {
                    "ok"
                } else {
                    "FAILED"
                },
                r.updated.to_string(),
            ),
            None => ("never".into(), "-", "-".into()),
        };
        let fp = h
            .fingerprint
            .as_deref()
            .map_or("-".to_string(), |f| f[..12.min(f.len())].to_string());
        let detail = match &h.error {
            Some(e) => e.clone(),
            None if drifted.contains(h.fqdn.as_str()) => "DRIFT".into(),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<28} {:<16} {:<10} {:<8} {:>7}  {:<14} {}",
            h.fqdn,
            h.roles.join(","),
            when,
            result,
            changed,
            fp,
            detail
        );
    }
    for d in &st.drift {
        let _ = writeln!(
            s,
            "\ndrift in roles {} on {}: {} host(s) at {} ({})",
            d.roles.join(","),
            if d.release.is_empty() {
                "an unknown release"
            } else {
                &d.release
            },
            d.hosts_with_majority.len(),
            &d.majority[..12.min(d.majority.len())],
            d.hosts_with_majority.join(", ")
        );
        for o in &d.outliers {
            let _ = writeln!(
                s,
                "  {} at {}:",
                o.fqdn,
                &o.fingerprint[..12.min(o.fingerprint.len())]
            );
            for x in &o.differs {
                let _ = writeln!(
                    s,
                    "    {}\n      expected: {}\n      found:    {}",
                    x.resource,
                    x.expected.as_deref().unwrap_or("(not managed)"),
                    x.found.as_deref().unwrap_or("(not managed)")
                );
            }
        }
    }
    if st.drift.is_empty() {
        let _ = writeln!(
            s,
            "\nno drift: hosts of the same roles and release have the same fingerprint"
        );
    }
    s
}
