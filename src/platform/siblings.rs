//! Siblings follow the pin. Debian builds several binary packages from one
//! source package and ties them with exact-version dependencies
//! (`php8.2-common (= 8.2.32-1~deb12u1)`), so pinning one of them to a
//! version that is not the archive's candidate breaks unless its siblings
//! move with it. kiln computes each sibling's matching version from the
//! target's own package index (`apt-cache show`, the Source field) and names
//! it explicitly in the same apt transaction; then it is held like the pin.
//!
//! Explicit `name=version` pairs, rather than apt preferences on `src:NAME`,
//! because binNMUs and binaries versioned apart from their source (a
//! library's own version) do not carry the source's version, and because
//! every sibling then shows in the plan and in the report by name.

use std::collections::{BTreeMap, BTreeSet};

use super::dpkg::Dpkg;
use super::target::{Target, capture};

/// A binary package that moves with a pin because it shares its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sibling {
    pub name: String,
    /// The version built from the same source version as the pin.
    pub version: String,
    /// The pinned package it follows.
    pub follows: String,
    /// Installed now, if it is (else apt would pull it in).
    pub installed: Option<String>,
}

/// One version of a binary package as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    package: String,
    version: String,
    source: String,
    source_version: String,
}

/// The siblings of `pins` that the transaction would install or that are
/// installed, each at the version that matches its pin, including those
/// already at it (they are held with the pin). Pins the index does not know
/// are skipped: the caller reports those as vanished pins.
pub fn resolve(
    target: &Target,
    pins: &[(String, String)],
    dpkg: &Dpkg,
) -> Result<Vec<Sibling>, String> {
    if pins.is_empty() {
        return Ok(Vec::new());
    }
    let pinned: BTreeSet<&str> = pins.iter().map(|(n, _)| n.as_str()).collect();
    let names: Vec<String> = pins.iter().map(|(n, _)| n.clone()).collect();
    let records = show(target, &names)?;
    // source name -> (source version, the pin that decides it)
    let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, version) in pins {
        let Some(r) = records
            .get(name)
            .and_then(|rs| rs.iter().find(|r| &r.version == version))
        else {
            continue;
        };
        if let Some((other_version, other)) = sources.get(&r.source)
            && other_version != &r.source_version
        {
            return Err(format!(
                "{name} {version} and {other} are built from {} at different versions \
                 ({} and {other_version}); apt cannot install them together. \
                 Fix: pin both at versions of the same {} upload",
                r.source, r.source_version, r.source
            ));
        }
        sources.insert(r.source.clone(), (r.source_version.clone(), name.clone()));
    }
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    // Candidates: installed packages of those sources, and what apt would
    // pull in for the pins (read from a simulated transaction).
    let mut candidates: BTreeSet<String> = dpkg
        .packages
        .iter()
        .filter(|(name, p)| {
            p.is_installed() && sources.contains_key(&p.source) && !pinned.contains(name.as_str())
        })
        .map(|(name, _)| name.clone())
        .collect();
    let mut siblings: BTreeMap<String, Sibling> = BTreeMap::new();
    for _round in 0..4 {
        let mut wanted: Vec<(String, String)> = pins.to_vec();
        wanted.extend(
            siblings
                .values()
                .map(|s| (s.name.clone(), s.version.clone())),
        );
        candidates.extend(
            simulate(target, &wanted)?
                .into_iter()
                .filter(|n| !pinned.contains(n.as_str()) && !siblings.contains_key(n)),
        );
        let fresh: Vec<String> = candidates
            .iter()
            .filter(|n| !siblings.contains_key(*n))
            .cloned()
            .collect();
        if fresh.is_empty() {
            break;
        }
        let known = show(target, &fresh)?;
        for name in fresh {
            candidates.remove(&name);
            let Some(versions) = known.get(&name) else {
                continue;
            };
            // Only a package some version of which comes from a pinned source.
            let Some((source, (source_version, follows))) = versions
                .iter()
                .find_map(|r| sources.get_key_value(&r.source))
            else {
                continue;
            };
            let Some(matching) = versions
                .iter()
                .find(|r| &r.source == source && &r.source_version == source_version)
            else {
                let offered: Vec<&str> = versions.iter().map(|r| r.version.as_str()).collect();
                return Err(format!(
                    "{name} is built from {source} like {follows}, but no source offers a \
                     {name} built from {source} {source_version} (offered: {}). \
                     Fix: pin {follows} at a version whose siblings are all available, \
                     or add a fallback source that carries them",
                    offered.join(", ")
                ));
            };
            let installed = dpkg.installed(&name).map(|i| i.version.clone());
            siblings.insert(
                name.clone(),
                Sibling {
                    name,
                    version: matching.version.clone(),
                    follows: follows.clone(),
                    installed,
                },
            );
        }
    }
    Ok(siblings.into_values().collect())
}

/// `pins` and their siblings, for callers outside a converge (prefetching
/// for `kiln test`, mirrors), against the target's dpkg database.
pub fn with_pins(
    target: &Target,
    pins: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut all = pins.to_vec();
    for s in resolve(target, pins, &Dpkg::read(target))? {
        all.push((s.name, s.version));
    }
    Ok(all)
}

/// Every version of `names` in the index, by package.
fn show(target: &Target, names: &[String]) -> Result<BTreeMap<String, Vec<Record>>, String> {
    let mut argv = vec!["apt-cache", "show"];
    argv.extend(names.iter().map(String::as_str));
    let out = capture(target.command(&argv).env("LC_ALL", "C"))
        .map_err(|e| format!("cannot run apt-cache show: {e}"))?;
    // A name the index does not know makes apt-cache fail, but it still
    // prints the others.
    let mut by_name: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for r in parse_records(&String::from_utf8_lossy(&out.stdout)) {
        let list = by_name.entry(r.package.clone()).or_default();
        if !list.contains(&r) {
            list.push(r);
        }
    }
    Ok(by_name)
}

fn parse_records(text: &str) -> Vec<Record> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |key: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(key).map(str::trim))
            };
            let package = field("Package: ")?.to_string();
            let version = field("Version: ")?.to_string();
            let (source, source_version) = match field("Source: ") {
                None => (package.clone(), version.clone()),
                Some(s) => match s.split_once(' ') {
                    Some((name, v)) => (
                        name.to_string(),
                        v.trim()
                            .trim_start_matches('(')
                            .trim_end_matches(')')
                            .to_string(),
                    ),
                    None => (s.to_string(), version.clone()),
                },
            };
            Some(Record {
                package,
                version,
                source,
                source_version,
            })
        })
        .collect()
}

/// Names a simulated `apt-get install` of `wanted` would install, and names
/// its unmet exact-version dependencies point at.
fn simulate(target: &Target, wanted: &[(String, String)]) -> Result<Vec<String>, String> {
    let args: Vec<String> = wanted.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut argv = vec![
        "apt-get",
        "install",
        "-s",
        "-q",
        "--no-install-recommends",
        "--allow-downgrades",
        "--allow-change-held-packages",
    ];
    argv.extend(args.iter().map(String::as_str));
    let out = capture(target.command(&argv).env("LC_ALL", "C"))
        .map_err(|e| format!("cannot run apt-get -s install: {e}"))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(simulated_names(&text))
}

fn simulated_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Inst ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.push(name.split(':').next().unwrap_or(name).to_string());
            }
        } else if let Some((_, dep)) = line.split_once("Depends: ")
            && dep.contains("(= ")
            && let Some(name) = dep.split_whitespace().next()
        {
            names.push(name.split(':').next().unwrap_or(name).to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_source_version() {
        let text = "Package: php8.2-common\nVersion: 8.2.32-1~deb12u1\nSource: php8.2\n\n\
                    Package: libmariadb3\nVersion: 1:10.11.18-0+deb12u1\nSource: mariadb (1:10.11.18-0+deb12u1)\n\n\
                    Package: memcached\nVersion: 1.6.18-1+b1\nSource: memcached (1.6.18-1)\n";
        let r = parse_records(text);
        assert_eq!(
            (r[0].source.as_str(), r[0].source_version.as_str()),
            ("php8.2", "8.2.32-1~deb12u1")
        );
        assert_eq!(r[1].source, "mariadb");
        assert_eq!(
            (r[2].source.as_str(), r[2].source_version.as_str()),
            ("memcached", "1.6.18-1")
        );
    }

    #[test]
    fn simulation_names_installs_and_unmet_exact_dependencies() {
        let text = "Inst php8.2-common [8.2.36-1~deb12u1] (8.2.32-1~deb12u1 Debian:12.12/oldstable [amd64])\n\
                    Inst libc6:amd64 (2.36)\n\
                    The following packages have unmet dependencies:\n \
                    php8.2-fpm : Depends: php8.2-opcache (= 8.2.32-1~deb12u1) but 8.2.36-1~deb12u1 is to be installed\n";
        assert_eq!(
            simulated_names(text),
            ["php8.2-common", "libc6", "php8.2-opcache"]
        );
    }
}
