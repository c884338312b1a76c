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
    /// The first run of the streak of runs with this fingerprint.
    pub since_run: String,
    pub since: u64,
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

/// The drifted hosts among those `role` selects (all without it).
pub fn drift(
    store: &mut (impl Store + ?Sized),
    role: Option<&str>,
) -> Result<Vec<Drift>, StoreError> {
    let q = HostQuery {
        role: role.map(str::to_string),
        ..HostQuery::default()
    };
    let hosts = store.hosts(&q, 0, u64::MAX)?;
    let mut out = Vec::new();
    for group in groups(&hosts).values() {
        let fps = group.iter().filter_map(|h| h.fingerprint.as_deref());
        let Some((major, count)) = majority(fps) else {
            continue;
        };
        let expected: BTreeMap<String, String> = store.parts(major)?.into_iter().collect();
        for h in group {
            let Some(fp) = h.fingerprint.as_deref().filter(|f| *f != major) else {
                continue;
            };
            let found: BTreeMap<String, String> = store.parts(fp)?.into_iter().collect();
            let parts = differing(&found, &expected);
            // Newest first: the streak ends at the first other fingerprint.
            let history = store.fingerprints(&h.fqdn)?;
            let (since_run, since) = history
                .iter()
                .take_while(|(_, _, f)| f.as_deref() == Some(fp))
                .last()
                .map(|(id, t, _)| (id.clone(), *t))
                .unwrap_or_else(|| (h.run_id.clone(), h.started_at));
            out.push(Drift {
                fqdn: h.fqdn.clone(),
                roles: h.roles.clone(),
                release: h.release.clone(),
                fingerprint: fp.to_string(),
                majority: major.to_string(),
                with_majority: count,
                group_size: group.len(),
                parts,
                since_run,
                since,
            });
        }
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
