//! `mirror`: an apt repository of the pinned versions, a fallback source
//! for pins the archive drops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::installed_pins;
use crate::engine;
use crate::error::Error;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::whitelist::{Entry, Whitelist};
use crate::secrets::Placeholder;

/// What `mirror` wrote.
#[derive(Debug)]
pub struct Mirrored {
    /// Package files written.
    pub files: usize,
    /// Pinned packages the roles install.
    pub packages: usize,
    pub roles: usize,
}

/// Writes an apt repository of the pinned versions (and each rollout's) of
/// the packages `roles` install (default: every role), with their siblings
/// and what they pull in beyond a base Debian root.
/// One release's pins: a mirror is read from that release's archive, and
/// goes under `[releases.CODENAME.fallback]` when the fleet runs several.
pub fn mirror(
    repo_dir: &Path,
    out: &Path,
    roles: &[String],
    release: Option<&str>,
    progress: &dyn Fn(&str),
) -> Result<Mirrored, Error> {
    let repo = Repository::open(repo_dir)?;
    let wl = Whitelist::load(&repo)?;
    let roles = if roles.is_empty() {
        repo.names_in("roles")
    } else {
        roles.to_vec()
    };
    let on = |node: engine::Node| match release {
        Some(r) => node.on(r),
        None => node,
    };
    let facts = on(engine::Node::default()).facts(&Target::host());
    wl.release(&facts.codename)?;
    let mut packages: BTreeSet<String> = BTreeSet::new();
    for role in &roles {
        let node = on(engine::Node::role(role));
        let policy = engine::compile(&repo, &node, &node.facts_from(&facts), &Placeholder)?;
        packages.extend(installed_pins(&policy).into_keys());
    }
    let sets = pin_sets(&wl, &facts.codename, &packages)?;
    let written = crate::platform::mirror::write(out, &facts.codename, &sets, progress)?;
    Ok(Mirrored {
        files: written.len(),
        packages: packages.len(),
        roles: roles.len(),
    })
}

/// The sets of `(package, version)` a mirror must hold for `packages` on
/// `release`: the base pins, then each rollout's pins over them, each
/// distinct set once.
fn pin_sets(
    wl: &Whitelist,
    release: &str,
    packages: &BTreeSet<String>,
) -> Result<Vec<Vec<(String, String)>>, Error> {
    let pick = |versions: &BTreeMap<String, Entry>| -> Vec<(String, String)> {
        packages
            .iter()
            .filter_map(|p| Some((p.clone(), versions.get(p)?.version.clone())))
            .collect()
    };
    // The pins of that release: the mirror is built from its archive.
    let mut base = wl.packages.clone();
    if let Some(r) = wl.release(release)? {
        base.extend(r.packages.clone());
    }
    let mut sets = vec![pick(&base)];
    for r in wl
        .rollouts
        .values()
        .filter(|r| r.releases.is_empty() || r.releases.iter().any(|x| x == release))
    {
        let mut set: BTreeMap<String, String> = sets[0].iter().cloned().collect();
        set.extend(pick(&r.packages));
        let set: Vec<(String, String)> = set.into_iter().collect();
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_adds_one_set_over_the_base_pins() {
        let text = "[packages]\nmemcached = \"1.6.18-1\"\nsudo = \"1.9\"\n\n\
                    [rollouts.mc]\nhosts = [\"web01.*\"]\npackages = { memcached = \"1.6.18-1+deb12u1\" }\n\n\
                    [rollouts.same]\nroles = [\"canary\"]\npackages = { memcached = \"1.6.18-1\" }\n";
        let wl = Whitelist::parse(text, "w".into()).unwrap();
        let packages: BTreeSet<String> = ["memcached".to_string()].into();
        let sets = pin_sets(&wl, "bookworm", &packages).unwrap();
        assert_eq!(
            sets,
            vec![
                vec![("memcached".to_string(), "1.6.18-1".to_string())],
                vec![("memcached".to_string(), "1.6.18-1+deb12u1".to_string())],
            ]
        );
    }
}
