//! `kiln report drift`: hosts whose fingerprint differs from the one most
//! hosts of the same roles and release have, which parts differ, and since
//! which run. Written once over [`Store`], for every backend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HostQuery, HostRow, Store, StoreError};

/// One host that differs from the majority of its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub fqdn: String,
    pub roles: Vec<String>,
    pub release: String,
    pub fingerprint: String,
    /// The fingerprint most hosts of these roles and release have.
    pub majority: String,
    /// How many hosts have it, of how many in the group.
    pub with_majority: usize,
    pub group_size: usize,
    pub parts: Vec<PartDrift>,
    /// The first run of the streak of runs with this fingerprint, and
    /// when it started; absent when the read was asked without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// A fingerprint part that differs; None where one side lacks the resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDrift {
    pub resource: String,
    pub found: Option<String>,
    pub expected: Option<String>,
}

/// The fingerprint more than half of `fps` share, with its count.
pub fn majority<'a>(fps: impl IntoIterator<Item = &'a str>) -> Option<(&'a str, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut n = 0;
    for f in fps {
        *counts.entry(f).or_default() += 1;
        n += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, c)| *c)
        .filter(|(_, c)| *c * 2 > n)
}

/// Hosts with a fingerprint, by their sorted roles and release: the
/// peers a host is compared with.
pub fn groups(hosts: &[HostRow]) -> BTreeMap<(Vec<String>, String), Vec<&HostRow>> {
    let mut groups: BTreeMap<(Vec<String>, String), Vec<&HostRow>> = BTreeMap::new();
    for h in hosts.iter().filter(|h| h.fingerprint.is_some()) {
        let mut roles = h.roles.clone();
        roles.sort();
        groups
            .entry((roles, h.release.clone()))
            .or_default()
            .push(h);
    }
    groups
}

/// Where a host's fingerprint stands against its peers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// It is the majority's.
    Agrees,
    Differs,
    /// No fingerprint is held by more than half of its peers.
    NoMajority,
    /// The host sent no fingerprint.
    Unknown,
}

/// Each host's [`Agreement`], by fqdn, from the hosts' latest runs alone.
pub fn agreement(hosts: &[HostRow]) -> BTreeMap<&str, Agreement> {
    let mut out: BTreeMap<&str, Agreement> = hosts
        .iter()
        .map(|h| (h.fqdn.as_str(), Agreement::Unknown))
        .collect();
    for group in groups(hosts).values() {
        let major = majority(group.iter().filter_map(|h| h.fingerprint.as_deref()));
        for h in group {
            let a = match major {
                None => Agreement::NoMajority,
                Some((m, _)) if h.fingerprint.as_deref() == Some(m) => Agreement::Agrees,
                Some(_) => Agreement::Differs,
            };
            out.insert(h.fqdn.as_str(), a);
        }
    }
    out
}

/// The parts of two fingerprints (resource to part) that differ, by
/// resource.
pub fn differing(
    found: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
) -> Vec<PartDrift> {
    let mut resources: Vec<&String> = found.keys().chain(expected.keys()).collect();
    resources.sort();
    resources.dedup();
    resources
        .into_iter()
        .filter(|r| found.get(*r) != expected.get(*r))
        .map(|r| PartDrift {
            resource: r.clone(),
            found: found.get(r).cloned(),
            expected: expected.get(r).cloned(),
        })
        .collect()
}

/// The drifted hosts among those `role` selects (all without it), with
/// the run each began to differ at when `since`.
pub fn drift(
    store: &mut (impl Store + ?Sized),
    role: Option<&str>,
    since: bool,
) -> Result<Vec<Drift>, StoreError> {
    let q = HostQuery {
        role: role.map(str::to_string),
        ..HostQuery::default()
    };
    let hosts = store.hosts(&q, 0, u64::MAX)?;
    // Which hosts differ, and from which majority: from the hosts alone.
    let mut odd: Vec<(&HostRow, &str, usize, usize)> = Vec::new();
    for group in groups(&hosts).values() {
        let fps = group.iter().filter_map(|h| h.fingerprint.as_deref());
        let Some((major, count)) = majority(fps) else {
            continue;
        };
        for h in group {
            if h.fingerprint.as_deref().is_some_and(|f| f != major) {
                odd.push((h, major, count, group.len()));
            }
        }
    }
    // Then the parts and histories they need, in a read each: a fleet
    // may have hundreds of odd hosts, and a read per host adds up.
    let mut fps: Vec<&str> = odd
        .iter()
        .flat_map(|(h, major, ..)| [h.fingerprint.as_deref().unwrap_or(""), *major])
        .collect();
    fps.sort_unstable();
    fps.dedup();
    let mut parts: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (fp, resource, part) in store.parts_of(&fps)? {
        parts.entry(fp).or_default().insert(resource, part);
    }
    let fqdns: Vec<&str> = odd.iter().map(|(h, ..)| h.fqdn.as_str()).collect();
    let mut histories: BTreeMap<String, Vec<super::History>> = BTreeMap::new();
    // Each odd host's runs, back to the first with its fingerprint: most
    // of the read at months of runs, and `fleet status` shows no date.
    let runs = if since {
        store.histories(&fqdns)?
    } else {
        Vec::new()
    };
    for run in runs {
        histories.entry(run.fqdn.clone()).or_default().push(run);
    }
    let none = BTreeMap::new();
    let mut out = Vec::new();
    for (h, major, count, group_size) in odd {
        let fp = h.fingerprint.as_deref().unwrap_or("");
        let found = parts.get(fp).unwrap_or(&none);
        let expected = parts.get(major).unwrap_or(&none);
        // Newest first: the streak ends at the first other fingerprint.
        let (since_run, since) = if since {
            let (run, at) = histories
                .get(&h.fqdn)
                .into_iter()
                .flatten()
                .take_while(|r| r.fingerprint.as_deref() == Some(fp))
                .last()
                .map(|r| (r.run_id.clone(), r.started_at))
                .unwrap_or_else(|| (h.run_id.clone(), h.started_at));
            (Some(run), Some(at))
        } else {
            (None, None)
        };
        out.push(Drift {
            fqdn: h.fqdn.clone(),
            roles: h.roles.clone(),
            release: h.release.clone(),
            fingerprint: fp.to_string(),
            majority: major.to_string(),
            with_majority: count,
            group_size,
            parts: differing(found, expected),
            since_run,
            since,
        });
    }
    out.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_more_than_half() {
        assert_eq!(majority(["a", "a", "b"]), Some(("a", 2)));
        assert_eq!(majority(["a", "b"]), None);
        assert_eq!(majority(["a", "b", "c", "a"]), None);
        assert_eq!(majority(["a"]), Some(("a", 1)));
        assert_eq!(majority([]), None);
    }
}
