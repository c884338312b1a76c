//! `audit`: a target's packages against its pins, and what was installed
//! by hand since kiln first ran there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{TargetNode, installed_pins, target_policy};
use crate::engine::Report;
use crate::error::Error;
use crate::platform::dpkg::{self, Dpkg};
use crate::platform::siblings;
use crate::platform::target::Target;

/// One package that is not as its pin wants it.
#[derive(Debug, serde::Serialize)]
pub struct Finding {
    pub package: String,
    pub problem: String,
}

/// What `audit` found on a target.
#[derive(Debug)]
pub struct Audit {
    pub release: String,
    /// How many packages the policy installs.
    pub managed: usize,
    pub findings: Vec<Finding>,
}

/// Compares a target's packages with its pins, and lists what was installed
/// by hand since kiln first ran there.
pub fn audit(repo: &Path, node: &TargetNode) -> Result<Audit, Error> {
    let (target, release, policy) = target_policy(repo, node, false, &mut None, &|_| {})?;
    let managed: BTreeSet<String> = installed_pins(&policy).into_keys().collect();
    let dpkg = Dpkg::read(&target);
    let mut findings = Vec::new();
    for name in &managed {
        let Some(pin) = policy.pins.get(name) else {
            continue;
        };
        let problem = match dpkg.installed(name) {
            None => format!("pinned {} ({}), not installed", pin.version, pin.rule),
            Some(i) if i.version != pin.version => {
                format!(
                    "pinned {} ({}), installed {}",
                    pin.version, pin.rule, i.version
                )
            }
            Some(i) if !i.is_held() => format!("at its pin {} but not held", pin.version),
            Some(_) => continue,
        };
        findings.push(Finding {
            package: name.clone(),
            problem,
        });
    }
    // Siblings that left their pin's upload (moved by hand, or by apt).
    let at_pin: Vec<(String, String)> = installed_pins(&policy)
        .into_iter()
        .filter(|(n, p)| dpkg.installed(n).is_some_and(|i| i.version == p.version))
        .map(|(n, p)| (n, p.version))
        .collect();
    for pin in at_pin {
        for s in siblings::resolve(&target, &[pin], &dpkg).unwrap_or_default() {
            let Some(installed) = &s.installed else {
                continue;
            };
            let held = dpkg.installed(&s.name).is_some_and(|i| i.is_held());
            if installed != &s.version || !held {
                findings.push(Finding {
                    package: s.name.clone(),
                    problem: format!(
                        "follows {} at {}, installed {installed}{}",
                        s.follows,
                        s.version,
                        if held { "" } else { ", not held" }
                    ),
                });
            }
        }
    }
    // By hand: installed on request (not as a dependency), needed by no
    // other package, not part of the base system, managed by nothing, and
    // installed after kiln first ran there: what the image came with
    // (openssh-server, ca-certificates) was there before kiln and is not
    // "by hand". dpkg's log says when each package was installed (an
    // upgrade is not an install); a package whose install left the logs
    // falls back to its file list's mtime.
    let since = Report::first_run(&target).map(|t| t as i64);
    let logged = dpkg::install_times(&target);
    let auto = auto_installed(&target);
    let needed: BTreeSet<&str> = dpkg
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.is_installed())
        .flat_map(|p| p.depends())
        .collect();
    let mut by_hand: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, p) in dpkg.iter() {
        let base = matches!(p.priority.as_str(), "required" | "important");
        if p.is_installed()
            && !base
            && !managed.contains(name)
            && !auto.contains(name)
            && !needed.contains(name)
        {
            by_hand.insert(name, &p.version);
        }
    }
    let unlogged: Vec<&str> = by_hand
        .keys()
        .filter(|n| !logged.contains_key(**n))
        .copied()
        .collect();
    let unpacked = dpkg::unpack_times(&target, &unlogged);
    by_hand.retain(|name, _| {
        let when = logged.get(*name).or(unpacked.get(*name));
        match (since, when) {
            // Kiln never ran here: everything predates it.
            (None, _) => false,
            (Some(since), Some(&t)) => t >= since,
            // No trace of when: said, rather than hidden.
            (Some(_), None) => true,
        }
    });
    for (name, version) in by_hand {
        findings.push(Finding {
            package: name.to_string(),
            problem: format!("installed by hand ({version}), managed by no package resource"),
        });
    }
    Ok(Audit {
        release,
        managed: managed.len(),
        findings,
    })
}

/// Packages apt installed as dependencies (`Auto-Installed: 1`).
fn auto_installed(target: &Target) -> BTreeSet<String> {
    let text = target
        .fs()
        .read_to_string("/var/lib/apt/extended_states")
        .unwrap_or_default();
    crate::platform::deb822::paragraphs(&text)
        .filter(|p| p.get("Auto-Installed").is_some_and(|v| v.trim() == "1"))
        .filter_map(|p| p.get("Package").map(|n| n.trim().to_string()))
        .collect()
}
