//! `explain`: for each package, the version a node gets and the rule it
//! comes from, with the binary packages that follow each pin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::engine;
use crate::error::Error;
use crate::platform::dpkg::Dpkg;
use crate::platform::facts::Facts;
use crate::platform::siblings::{self, Sibling};
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::runlist::expand;
use crate::policy::whitelist::{Pin, Whitelist};
use crate::secrets::Placeholder;

/// The pins of one release for a node.
#[derive(Debug)]
pub struct Explained {
    pub release: String,
    /// Whether the whitelist pins per release (then the release is named).
    pub per_release: bool,
    pub pins: BTreeMap<String, Pin>,
    /// The binary packages that follow each pin on a target, when asked.
    pub siblings: Option<Vec<Sibling>>,
    /// The rollouts that match this node.
    pub rollouts: Vec<String>,
}

/// A node's question, ready to be answered one release at a time.
pub struct Explain<'a> {
    repo: Repository,
    wl: Whitelist,
    fqdn: Option<&'a str>,
    roles: &'a [String],
    siblings_of: Option<&'a Target>,
    /// The releases to explain, in order.
    pub releases: Vec<String>,
}

/// Opens the question. With `siblings_of`, the release is that target's
/// own; else `release`, else every release the whitelist pins.
pub fn explain<'a>(
    repo: &Path,
    fqdn: Option<&'a str>,
    roles: &'a [String],
    release: Option<&str>,
    siblings_of: Option<&'a Target>,
) -> Result<Explain<'a>, Error> {
    let repo = Repository::open(repo)?;
    let wl = Whitelist::load(&repo)?;
    let own = siblings_of
        .map(|t| Facts::gather(t, None).codename)
        .or_else(|| Some(Facts::gather(&Target::host(), None).codename))
        .unwrap_or_default();
    let releases = match (siblings_of, release) {
        (Some(_), None) => vec![own],
        _ => wl.releases_or(release, &own)?,
    };
    Ok(Explain {
        repo,
        wl,
        fqdn,
        roles,
        siblings_of,
        releases,
    })
}

impl Explain<'_> {
    /// The answer for one release.
    pub fn release(&self, codename: &str) -> Result<Explained, Error> {
        let (repo, wl, roles) = (&self.repo, &self.wl, self.roles);
        let items: Vec<String> = roles.iter().map(|r| format!("role[{r}]")).collect();
        let expanded = expand(repo, &items)?;
        let fqdn = self.fqdn.unwrap_or("");
        let mut pins = wl.resolve(fqdn, &expanded.role_names(), codename)?;
        if !roles.is_empty() {
            // The roles' own packages, from their compiled policy (a package
            // name may be a template): a pin no package of theirs uses is
            // another role's business.
            let node = engine::Node {
                fqdn: Some(fqdn.to_string()).filter(|f| !f.is_empty()),
                ..engine::Node::roles(roles).on(codename)
            };
            let facts = node.facts(&Target::host());
            let policy = engine::compile(repo, &node, &facts, &Placeholder)?;
            let used: BTreeSet<&str> = policy
                .resources
                .iter()
                .filter(|r| r.id.kind == "package")
                .map(|r| r.id.name.as_str())
                .collect();
            pins.retain(|name, _| used.contains(name.as_str()));
        }
        // The binary packages that follow each pin, from a target's apt index.
        let siblings = match self.siblings_of {
            Some(target) => {
                let list: Vec<(String, String)> = pins
                    .iter()
                    .map(|(n, p)| (n.clone(), p.version.clone()))
                    .collect();
                let dpkg = Dpkg::read(target);
                let mut all = Vec::new();
                // One pin at a time: two pins of one source may differ on
                // purpose in a rollout, and each is explained on its own.
                for pin in list {
                    all.extend(siblings::resolve(target, &[pin], &dpkg)?);
                }
                Some(all)
            }
            None => None,
        };
        let rollouts = wl
            .rollouts
            .iter()
            .filter(|(_, r)| Whitelist::matches(r, fqdn, &expanded.role_names(), codename))
            .map(|(n, _)| n.clone())
            .collect();
        Ok(Explained {
            release: codename.to_string(),
            per_release: !wl.releases.is_empty(),
            pins,
            siblings,
            rollouts,
        })
    }
}
