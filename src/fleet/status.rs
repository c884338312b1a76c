//! `kiln fleet status`: each host's last run and fingerprint, grouped by
//! the Debian release the host runs, and drift. Drift is a host against its
//! own policy: what a why-run of that host's policy would change (hosts
//! differ by design: a template with the fqdn, a rollout, a release). Then,
//! as a second opinion on what the policy leaves open, fingerprint parts
//! are compared between hosts of the same roles and release, but only
//! where their policies want the same of the resource.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;

use super::inventory::Host;
use super::protocol::BUNDLE_DIR;
use super::protocol::{HostFailure, HostReport, HostRequest};
use super::ssh::Transport;
use crate::engine::{Report, Status as EngineStatus};
use crate::fingerprint::Part;
use crate::store::HostRow;
use crate::store::drift::Drift as StoreDrift;

/// What status shows of a host's last run report.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub started_at: u64,
    pub elapsed_ms: f64,
    pub success: bool,
    pub updated: usize,
    pub failed: usize,
    pub why_run: bool,
    /// The serial of the bundle the run converged, if it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_serial: Option<u64>,
    /// The whitelist's rollouts the run put the host in.
    pub rollouts: Vec<String>,
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
            bundle_serial: r.bundle_serial,
            rollouts: r.rollouts,
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
    /// What a why-run of the host's own policy would change (None: it
    /// could not run, and `error` says why).
    pub against_policy: Option<Vec<PolicyDifference>>,
    /// The host's policy's digest of each managed resource.
    #[serde(skip)]
    desired: BTreeMap<String, String>,
    /// Resources the why-run skipped (a guard): their state is the host's.
    #[serde(skip)]
    guarded: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A resource whose state differs from what the host's policy wants, as
/// `kiln converge --why-run` says it (sensitive content redacted there).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDifference {
    pub resource: String,
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The why-run could not check it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fingerprint part that differs from other hosts of the same roles and
/// release whose policy wants the same of that resource.
#[derive(Debug, Clone, Serialize)]
pub struct PartDifference {
    pub resource: String,
    pub found: String,
    /// The part most of those hosts have (None: no majority, each host is
    /// named).
    pub expected: Option<String>,
    /// Hosts that have the expected part: all of them over ssh, the first
    /// [`NAMED_PEERS`] from the store (a fleet's majority is thousands).
    pub hosts_with_expected: Vec<String>,
    /// How many hosts have it.
    pub hosts_with_expected_count: usize,
}

/// The hosts with the majority's part that the store's drift names.
pub const NAMED_PEERS: usize = 10;

/// One host that is not what its policy wants.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub fqdn: String,
    pub roles: Vec<String>,
    pub release: String,
    /// Against its own policy.
    pub resources: Vec<PolicyDifference>,
    /// Against hosts whose policy wants the same.
    pub parts: Vec<PartDifference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub hosts: Vec<HostStatus>,
    pub drift: Vec<Drift>,
    /// What drift was judged against.
    #[serde(skip)]
    pub judged: Judged,
}

/// Where `fleet status` learnt what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Judged {
    /// Each host over ssh, with a why-run of its own policy.
    #[default]
    AgainstPolicy,
    /// The report store: each host's latest run, its fingerprint against
    /// the majority of the hosts of its roles and release.
    AgainstPeers,
}

pub fn collect(hosts: &[Host], t: &Transport) -> Status {
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
                    *results[i].lock().unwrap() = Some(one(h, t));
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
    Status {
        hosts,
        drift,
        judged: Judged::AgainstPolicy,
    }
}

/// `fleet status --server`: the same table from the report store's latest
/// run of each inventory host, without ssh. The store keeps no why-run of
/// a host's policy, so a host drifts when its fingerprint differs from the
/// one most hosts of its roles and release report; a host with no report,
/// or none within twice its interval, says so.
pub fn from_store(hosts: &[Host], rows: &[HostRow], drifted: &[StoreDrift]) -> Status {
    let by_fqdn: BTreeMap<&str, &HostRow> = rows.iter().map(|r| (r.fqdn.as_str(), r)).collect();
    let mut out: Vec<HostStatus> = hosts
        .iter()
        .map(|h| {
            let mut st = blank(h);
            match by_fqdn.get(h.fqdn.as_str()) {
                Some(r) => {
                    st.release = r.release.clone();
                    st.fingerprint = r.fingerprint.clone();
                    st.last_run = Some(LastRun {
                        started_at: r.started_at,
                        elapsed_ms: r.elapsed_ms,
                        success: r.success,
                        updated: r.updated as usize,
                        failed: r.failed as usize,
                        why_run: false,
                        bundle_serial: r.bundle_serial,
                        rollouts: vec![],
                    });
                    if r.stale {
                        st.error = Some(format!(
                            "STALE: no report within twice its interval (last {})",
                            ago(r.started_at)
                        ));
                    }
                }
                None => {
                    st.error = Some(
                        "no report in the store: give the host --report-to (the inventory's report_to, the kiln.report_to attribute)".into(),
                    );
                }
            }
            st
        })
        .collect();
    out.sort_by(|a, b| a.release.cmp(&b.release));
    // The hosts of each group (sorted roles, release) by fingerprint,
    // made once: a fleet has thousands of hosts and hundreds may drift.
    type Group<'a> = (Vec<&'a str>, &'a str, &'a str);
    let mut groups: HashMap<Group, (usize, Vec<&str>)> = HashMap::new();
    for r in rows {
        let Some(fp) = r.fingerprint.as_deref() else {
            continue;
        };
        let mut roles: Vec<&str> = r.roles.iter().map(String::as_str).collect();
        roles.sort_unstable();
        let e = groups.entry((roles, r.release.as_str(), fp)).or_default();
        e.0 += 1;
        if e.1.len() < NAMED_PEERS {
            e.1.push(r.fqdn.as_str());
        }
    }
    let peers = |d: &StoreDrift| -> (usize, Vec<String>) {
        let mut roles: Vec<&str> = d.roles.iter().map(String::as_str).collect();
        roles.sort_unstable();
        groups
            .get(&(roles, d.release.as_str(), d.majority.as_str()))
            .map(|(n, names)| (*n, names.iter().map(|s| s.to_string()).collect()))
            .unwrap_or_default()
    };
    let managed: HashSet<&str> = hosts.iter().map(|h| h.fqdn.as_str()).collect();
    let drift = drifted
        .iter()
        .filter(|d| by_fqdn.contains_key(d.fqdn.as_str()) && managed.contains(d.fqdn.as_str()))
        .map(|d| {
            let (count, with) = peers(d);
            let absent = || "(not managed)".to_string();
            Drift {
                fqdn: d.fqdn.clone(),
                roles: d.roles.clone(),
                release: d.release.clone(),
                resources: vec![],
                parts: d
                    .parts
                    .iter()
                    .map(|p| PartDifference {
                        resource: p.resource.clone(),
                        found: p.found.clone().unwrap_or_else(absent),
                        expected: Some(p.expected.clone().unwrap_or_else(absent)),
                        hosts_with_expected: with.clone(),
                        hosts_with_expected_count: count,
                    })
                    .collect(),
            }
        })
        .collect();
    Status {
        hosts: out,
        drift,
        judged: Judged::AgainstPeers,
    }
}

/// The hosts with the expected part, as a line shows them: a few by
/// name, then how many more.
fn peers_text(x: &PartDifference) -> String {
    const SHOWN: usize = 3;
    let names = &x.hosts_with_expected[..x.hosts_with_expected.len().min(SHOWN)];
    let more = x.hosts_with_expected_count.saturating_sub(names.len());
    match more {
        0 => names.join(", "),
        n => format!("{} and {n} more", names.join(", ")),
    }
}

/// A host as the inventory lists it, before anything is known of it.
fn blank(h: &Host) -> HostStatus {
    HostStatus {
        fqdn: h.fqdn.clone(),
        address: h.address.clone(),
        roles: h.roles.clone(),
        release: String::new(),
        last_run: None,
        fingerprint: None,
        parts: vec![],
        against_policy: None,
        desired: BTreeMap::new(),
        guarded: BTreeSet::new(),
        error: None,
    }
}

fn one(h: &Host, t: &Transport) -> HostStatus {
    let mut st = blank(h);
    let mut request = serde_json::to_vec(&HostRequest::Status {
        fqdn: h.fqdn.clone(),
    })
    .unwrap_or_default();
    request.push(b'\n');
    let out = match t.run(h, &super::script::status(), Some(&request)) {
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
        Ok(out) => out,
    };
    let Ok(doc) = HostReport::parse(&String::from_utf8_lossy(&out.stdout)) else {
        st.error = Some(format!(
            "the host's kiln gave no status (exit {}): {}; run kiln fleet converge to give it this one",
            out.code,
            last_lines(&out.stderr).join(" | ")
        ));
        return st;
    };
    if let Some(state) = &doc.state {
        st.release = state.release.trim().to_string();
        if !state.last_run.trim().is_empty() {
            match Report::parse(state.last_run.trim()) {
                Ok(r) => st.last_run = Some(r.into()),
                Err(e) => st.error = Some(format!("last_run.json: {e}")),
            }
        }
        if let Some(f) = &state.fingerprint {
            st.fingerprint = Some(f.fingerprint.clone());
            st.parts = f.parts.clone();
        }
    }
    judge(&mut st, doc);
    st
}

fn last_lines(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].to_vec()
}

/// Reads the host's why-run of its own policy into `st`.
fn judge(st: &mut HostStatus, doc: HostReport) {
    let report = match doc.failure {
        Some(f @ HostFailure::BinaryAltered { .. }) => {
            st.error = Some(format!("kiln binary altered: {f}"));
            return;
        }
        Some(HostFailure::Need { binary: true, .. }) => {
            st.error.get_or_insert_with(|| {
                "no kiln on the host to judge it against its policy: run kiln fleet converge".into()
            });
            return;
        }
        Some(HostFailure::Need { .. }) => {
            st.error.get_or_insert_with(|| {
                format!(
                    "no pushed bundle ({BUNDLE_DIR}/current) to judge the host against: run kiln fleet converge"
                )
            });
            return;
        }
        Some(f) => {
            let text = f.to_string();
            st.error.get_or_insert_with(|| {
                format!(
                    "the why-run of its policy failed: {}",
                    last_lines(&text).join(" | ")
                )
            });
            return;
        }
        None => doc.converge,
    };
    let Some(report) = report else {
        st.error
            .get_or_insert_with(|| "the why-run of its policy gave no report".into());
        return;
    };
    let desired = doc.desired;
    let mut differs = Vec::new();
    for r in report.resources {
        match r.status {
            EngineStatus::WouldUpdate => differs.push(PolicyDifference {
                resource: r.resource,
                changes: r.changes,
                diff: r.diff,
                error: None,
            }),
            EngineStatus::Failed | EngineStatus::FailedIgnored => differs.push(PolicyDifference {
                resource: r.resource,
                changes: r.changes,
                diff: None,
                error: Some(r.error.unwrap_or_else(|| "could not be checked".into())),
            }),
            EngineStatus::Skipped => {
                st.guarded.insert(r.resource);
            }
            EngineStatus::UpToDate | EngineStatus::Updated => {}
        }
    }
    st.against_policy = Some(differs);
    st.desired = desired;
}

/// Per host: what its own policy would change, then the fingerprint parts
/// that differ from hosts of the same roles and release whose policy wants
/// the same of that resource (where a strict majority of them agree; with
/// none, each is named). A part the policy renders per host, or that a
/// rollout changes, is never compared; nor is one the host's why-run
/// already names or skips by a guard.
fn drift(hosts: &[HostStatus]) -> Vec<Drift> {
    let mut parts: BTreeMap<&str, Vec<PartDifference>> = BTreeMap::new();
    let mut groups: BTreeMap<(&str, Vec<&String>), Vec<&HostStatus>> = BTreeMap::new();
    for h in hosts {
        if h.against_policy.is_some() && h.fingerprint.is_some() {
            let mut roles: Vec<&String> = h.roles.iter().collect();
            roles.sort();
            groups.entry((&h.release, roles)).or_default().push(h);
        }
    }
    for members in groups.values() {
        let ids: BTreeSet<&str> = members
            .iter()
            .flat_map(|h| h.parts.iter().map(|p| p.resource.as_str()))
            .collect();
        for id in ids {
            // Hosts whose policy wants the same of `id`, with their part.
            let mut by_desired: BTreeMap<&str, Vec<(&HostStatus, &str)>> = BTreeMap::new();
            for h in members {
                let named = h.against_policy.iter().flatten().any(|d| d.resource == id);
                let (Some(want), Some(part)) =
                    (h.desired.get(id), h.parts.iter().find(|p| p.resource == id))
                else {
                    continue;
                };
                if named || h.guarded.contains(id) {
                    continue;
                }
                by_desired
                    .entry(want)
                    .or_default()
                    .push((h, part.part.as_str()));
            }
            for alike in by_desired.values() {
                let mut by_part: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (h, part) in alike {
                    by_part.entry(part).or_default().push(&h.fqdn);
                }
                if by_part.len() < 2 {
                    continue;
                }
                let majority = by_part
                    .iter()
                    .find(|(_, hs)| hs.len() * 2 > alike.len())
                    .map(|(p, hs)| (*p, hs.clone()));
                for (h, part) in alike {
                    if majority.as_ref().is_some_and(|(p, _)| p == part) {
                        continue;
                    }
                    parts.entry(&h.fqdn).or_default().push(PartDifference {
                        resource: id.to_string(),
                        found: part.to_string(),
                        expected: majority.as_ref().map(|(p, _)| p.to_string()),
                        hosts_with_expected: majority
                            .as_ref()
                            .map(|(_, hs)| hs.iter().map(|s| s.to_string()).collect())
                            .unwrap_or_default(),
                        hosts_with_expected_count: majority.as_ref().map_or(0, |(_, hs)| hs.len()),
                    });
                }
            }
        }
    }
    hosts
        .iter()
        .filter_map(|h| {
            let resources = h.against_policy.clone().unwrap_or_default();
            let parts = parts.remove(h.fqdn.as_str()).unwrap_or_default();
            (!resources.is_empty() || !parts.is_empty()).then(|| Drift {
                fqdn: h.fqdn.clone(),
                roles: h.roles.clone(),
                release: h.release.clone(),
                resources,
                parts,
            })
        })
        .collect()
}

fn ago(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::store::ago(now, t)
}

pub fn render(st: &Status) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:<16} {:<10} {:<8} {:>7}  {:<14} {:<17} DETAIL",
        "HOST", "ROLES", "LAST RUN", "RESULT", "CHANGED", "FINGERPRINT", "SERIAL"
    );
    let drifted: BTreeMap<&str, usize> = st
        .drift
        .iter()
        .map(|d| (d.fqdn.as_str(), d.resources.len() + d.parts.len()))
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
        let serial = h
            .last_run
            .as_ref()
            .and_then(|r| r.bundle_serial)
            .map_or("-".to_string(), |n| n.to_string());
        let rollouts = h
            .last_run
            .as_ref()
            .filter(|r| !r.rollouts.is_empty())
            .map_or(String::new(), |r| {
                format!("rollouts: {}", r.rollouts.join(", "))
            });
        let detail = match (&h.error, drifted.get(h.fqdn.as_str())) {
            (Some(e), _) => e.clone(),
            (None, Some(n)) if rollouts.is_empty() => format!("DRIFT: {n} resource(s)"),
            (None, Some(n)) => format!("DRIFT: {n} resource(s); {rollouts}"),
            (None, None) => rollouts,
        };
        let _ = writeln!(
            s,
            "{:<28} {:<16} {:<10} {:<8} {:>7}  {:<14} {:<17} {}",
            h.fqdn,
            h.roles.join(","),
            when,
            result,
            changed,
            fp,
            serial,
            detail
        );
    }
    for d in &st.drift {
        let _ = writeln!(
            s,
            "\ndrift on {} (roles {}, {}):",
            d.fqdn,
            d.roles.join(","),
            if d.release.is_empty() {
                "an unknown release"
            } else {
                &d.release
            },
        );
        if !d.resources.is_empty() {
            let _ = writeln!(s, "  not as its policy wants:");
        }
        for x in &d.resources {
            let mut line = format!("    {}", x.resource);
            if !x.changes.is_empty() {
                let _ = write!(line, ": {}", x.changes.join(", "));
            }
            if let Some(e) = &x.error {
                let _ = write!(line, ": cannot check: {}", e.replace('\n', " | "));
            }
            let _ = writeln!(s, "{line}");
            for l in x.diff.iter().flat_map(|d| d.lines()) {
                let _ = writeln!(s, "      {l}");
            }
        }
        if !d.parts.is_empty() {
            let _ = writeln!(
                s,
                "  {}",
                match st.judged {
                    Judged::AgainstPolicy => "unlike hosts whose policy wants the same:",
                    Judged::AgainstPeers => "unlike most hosts of its roles and release:",
                }
            );
        }
        for x in &d.parts {
            let _ = writeln!(s, "    {}", x.resource);
            match &x.expected {
                Some(e) => {
                    let _ = writeln!(s, "      expected: {e} (as on {})", peers_text(x));
                }
                None => {
                    let _ = writeln!(s, "      expected: (no majority among those hosts)");
                }
            }
            let _ = writeln!(s, "      found:    {}", x.found);
        }
    }
    if st.drift.is_empty() {
        let _ = writeln!(
            s,
            "\nno drift: {}",
            match st.judged {
                Judged::AgainstPolicy => "every host reached is as its own policy wants",
                Judged::AgainstPeers => "every reporting host is as most of its peers are",
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that matched its policy, with `(resource, desired, part)`.
    fn host(fqdn: &str, parts: &[(&str, &str, &str)]) -> HostStatus {
        HostStatus {
            fqdn: fqdn.into(),
            address: fqdn.into(),
            roles: vec!["web".into()],
            release: "bookworm".into(),
            last_run: None,
            fingerprint: Some(format!("fp-{fqdn}")),
            parts: parts
                .iter()
                .map(|(r, _, p)| Part {
                    resource: r.to_string(),
                    part: p.to_string(),
                })
                .collect(),
            against_policy: Some(vec![]),
            desired: parts
                .iter()
                .map(|(r, d, _)| (r.to_string(), d.to_string()))
                .collect(),
            guarded: BTreeSet::new(),
            error: None,
        }
    }

    #[test]
    fn parts_are_compared_only_where_the_policies_want_the_same() {
        // Every motd differs, as each host's policy wants: no drift.
        let hosts: Vec<HostStatus> = ["a", "b", "c"]
            .iter()
            .map(|h| {
                host(
                    h,
                    &[
                        (
                            "template[/etc/motd]",
                            &format!("want-{h}"),
                            &format!("got-{h}"),
                        ),
                        ("file[/etc/x]", "same", "mode=0644"),
                    ],
                )
            })
            .collect();
        assert!(drift(&hosts).is_empty());

        // One host's mode, which the policy leaves open, differs from the
        // two others': that host only, with what the others have.
        let mut hosts = hosts;
        hosts[1] = host("b", &[("file[/etc/x]", "same", "mode=0600")]);
        let d = drift(&hosts);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].fqdn, "b");
        assert_eq!(d[0].parts[0].expected.as_deref(), Some("mode=0644"));
        assert_eq!(d[0].parts[0].hosts_with_expected, ["a", "c"]);

        // A resource the why-run already names is not said twice.
        hosts[1].against_policy = Some(vec![PolicyDifference {
            resource: "file[/etc/x]".into(),
            changes: vec!["update mode".into()],
            diff: None,
            error: None,
        }]);
        let d = drift(&hosts);
        assert_eq!(d.len(), 1);
        assert!(d[0].parts.is_empty());
        assert_eq!(d[0].resources.len(), 1);

        // Two hosts, no majority: both are named, no part is "expected".
        let two = [
            host("a", &[("file[/etc/x]", "same", "mode=0644")]),
            host("b", &[("file[/etc/x]", "same", "mode=0600")]),
        ];
        let d = drift(&two);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|h| h.parts[0].expected.is_none()));
    }

    #[test]
    fn the_store_s_view_names_silent_and_stale_hosts_and_the_odd_one_out() {
        let inv = crate::fleet::inventory::Inventory::parse(
            "known_hosts = \"k\"\n[hosts.a]\nroles = [\"web\"]\n[hosts.b]\nroles = [\"web\"]\n\
             [hosts.c]\nroles = [\"web\"]\n[hosts.d]\nroles = [\"web\"]\n",
            std::path::Path::new("inventory.toml"),
        )
        .unwrap();
        let row = |fqdn: &str, fp: &str, stale: bool| HostRow {
            fqdn: fqdn.into(),
            release: "bookworm".into(),
            roles: vec!["web".into()],
            started_at: 1,
            success: true,
            updated: 2,
            failed: 0,
            fingerprint: Some(fp.into()),
            interval_secs: None,
            run_id: format!("run-{fqdn}"),
            elapsed_ms: 5.0,
            bundle_serial: Some(7),
            stale,
        };
        let rows = [
            row("a", "same", false),
            row("b", "same", true),
            row("c", "odd", false),
        ];
        let drifted = [StoreDrift {
            fqdn: "c".into(),
            roles: vec!["web".into()],
            release: "bookworm".into(),
            fingerprint: "odd".into(),
            majority: "same".into(),
            with_majority: 2,
            group_size: 3,
            parts: vec![crate::store::drift::PartDrift {
                resource: "file[/etc/x]".into(),
                found: Some("mode=0600".into()),
                expected: None,
            }],
            since_run: Some("run-c".into()),
            since: Some(1),
        }];
        let st = from_store(&inv.hosts, &rows, &drifted);
        let by = |f: &str| st.hosts.iter().find(|h| h.fqdn == f).unwrap();
        assert!(by("a").error.is_none());
        assert_eq!(by("a").last_run.as_ref().unwrap().bundle_serial, Some(7));
        assert!(by("b").error.as_deref().unwrap().starts_with("STALE"));
        assert!(by("d").error.as_deref().unwrap().contains("no report"));
        assert_eq!(st.drift.len(), 1);
        let part = &st.drift[0].parts[0];
        assert_eq!(part.expected.as_deref(), Some("(not managed)"));
        assert_eq!(part.hosts_with_expected, ["a", "b"]);
        assert!(render(&st).contains("unlike most hosts of its roles and release"));
    }
}
