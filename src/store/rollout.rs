//! `kiln report rollout NAME`: the hosts a whitelist rollout matches (by
//! the roles and release their latest run reported), and which of them
//! report its versions. The rollout comes from the policy repository, the
//! hosts' state from the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HostRow, PackageHost};
use crate::policy::whitelist::{Rollout, Whitelist};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    pub rollout: String,
    /// The versions the rollout pins.
    pub packages: BTreeMap<String, String>,
    /// Matching hosts, by fqdn.
    pub hosts: Vec<RolloutHost>,
    /// How many of them report every version of the rollout.
    pub done: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHost {
    pub fqdn: String,
    /// Each rollout package as the host reports it (empty: not installed
    /// or not managed).
    pub found: BTreeMap<String, String>,
    pub done: bool,
}

/// Where `rollout` stands across `hosts`, given each rollout package's
/// hosts (`installed[name]`, from the store).
pub fn progress(
    name: &str,
    rollout: &Rollout,
    hosts: &[HostRow],
    installed: &BTreeMap<String, Vec<PackageHost>>,
) -> RolloutProgress {
    let packages: BTreeMap<String, String> = rollout
        .packages
        .iter()
        .map(|(p, e)| (p.clone(), e.version.clone()))
        .collect();
    let mut out = RolloutProgress {
        rollout: name.to_string(),
        packages: packages.clone(),
        hosts: Vec::new(),
        done: 0,
    };
    for h in hosts {
        if !Whitelist::matches(rollout, &h.fqdn, &h.roles, &h.release) {
            continue;
        }
        let found: BTreeMap<String, String> = packages
            .keys()
            .map(|p| {
                let v = installed
                    .get(p)
                    .and_then(|hs| hs.iter().find(|x| x.fqdn == h.fqdn))
                    .map(|x| x.version.clone())
                    .unwrap_or_default();
                (p.clone(), v)
            })
            .collect();
        let done = packages.iter().all(|(p, v)| found.get(p) == Some(v));
        out.done += usize::from(done);
        out.hosts.push(RolloutHost {
            fqdn: h.fqdn.clone(),
            found,
            done,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::whitelist::Entry;

    fn host(fqdn: &str, role: &str) -> HostRow {
        HostRow {
            fqdn: fqdn.into(),
            release: "bookworm".into(),
            roles: vec![role.into()],
            started_at: 0,
            success: true,
            updated: 0,
            failed: 0,
            fingerprint: None,
            interval_secs: None,
            run_id: String::new(),
            elapsed_ms: 0.0,
            bundle_serial: None,
            stale: false,
        }
    }

    #[test]
    fn matching_hosts_and_which_report_the_versions() {
        let rollout = Rollout {
            hosts: vec!["web01.*".into()],
            roles: vec!["canary".into()],
            packages: [(
                "php".to_string(),
                Entry {
                    version: "2".into(),
                    line: 1,
                },
            )]
            .into(),
            ..Rollout::default()
        };
        let hosts = [
            host("web01.x", "web"),
            host("web02.x", "web"),
            host("c1.x", "canary"),
        ];
        let at = |fqdn: &str, v: &str| PackageHost {
            fqdn: fqdn.into(),
            version: v.into(),
            held: true,
        };
        let installed = [(
            "php".to_string(),
            vec![at("web01.x", "2"), at("web02.x", "1"), at("c1.x", "1")],
        )]
        .into();
        let p = progress("php-sec", &rollout, &hosts, &installed);
        let names: Vec<&str> = p.hosts.iter().map(|h| h.fqdn.as_str()).collect();
        assert_eq!(names, ["web01.x", "c1.x"], "web02 is not in the rollout");
        assert_eq!(p.done, 1);
        assert!(p.hosts[0].done && !p.hosts[1].done);
        assert_eq!(p.hosts[1].found["php"], "1");
    }
}
