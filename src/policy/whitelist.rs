//! `whitelist.toml`: the only source of package versions. Base pins, plus
//! staged rollouts that give matching hosts other versions first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Repository;
use crate::error::{PolicyError, line_col};

#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    pub file: PathBuf,
    pub packages: BTreeMap<String, Entry>,
    pub rollouts: BTreeMap<String, Rollout>,
}

/// A pinned version and the line it is written on.
#[derive(Debug, Clone)]
pub struct Entry {
    pub version: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Rollout {
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    pub packages: BTreeMap<String, Entry>,
    pub line: usize,
}

/// The version that applies to a node, and which rule gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub version: String,
    /// `packages` or `rollouts.NAME`.
    pub rule: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    packages: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    rollouts: BTreeMap<String, toml::Spanned<RawRollout>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    packages: BTreeMap<String, toml::Spanned<String>>,
}

impl Whitelist {
    /// Loads the repository's whitelist; a repository without one pins nothing.
    pub fn load(repo: &Repository) -> Result<Whitelist, PolicyError> {
        let path = repo.dir.join("whitelist.toml");
        let file = repo.display_path("whitelist.toml");
        if !path.is_file() {
            return Ok(Whitelist {
                file,
                ..Whitelist::default()
            });
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&file))?;
        Whitelist::parse(&text, file)
    }

    pub fn parse(text: &str, file: PathBuf) -> Result<Whitelist, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            PolicyError::toml(&file, text, &e)
                .fix("the whitelist holds [packages] NAME = \"VERSION\" and [rollouts.NAME] tables")
        })?;
        let entries = |m: BTreeMap<String, toml::Spanned<String>>| {
            m.into_iter()
                .map(|(k, v)| {
                    let line = line_col(text, v.span().start).0;
                    (
                        k,
                        Entry {
                            version: v.into_inner(),
                            line,
                        },
                    )
                })
                .collect()
        };
        let rollouts = raw
            .rollouts
            .into_iter()
            .map(|(name, r)| {
                let line = line_col(text, r.span().start).0;
                let r = r.into_inner();
                (
                    name,
                    Rollout {
                        hosts: r.hosts,
                        roles: r.roles,
                        packages: entries(r.packages),
                        line,
                    },
                )
            })
            .collect();
        Ok(Whitelist {
            file,
            packages: entries(raw.packages),
            rollouts,
        })
    }

    /// Problems `kiln check` reports: versions that are not Debian versions,
    /// host patterns that do not compile, rollouts that match nothing.
    pub fn validate(&self) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let version = |pkg: &str, e: &Entry, errors: &mut Vec<PolicyError>| {
            if let Err(why) = valid_version(&e.version) {
                errors.push(
                    PolicyError::new(format!(
                        "package {pkg:?}: {:?} is not a valid Debian version ({why})",
                        e.version
                    ))
                    .in_file(&self.file)
                    .at_line(e.line, None)
                    .fix("write the exact version apt shows, e.g. \"1.6.18-1\" (apt-cache policy NAME)"),
                );
            }
        };
        for (p, e) in &self.packages {
            version(p, e, &mut errors);
        }
        for (name, r) in &self.rollouts {
            for (p, e) in &r.packages {
                version(p, e, &mut errors);
            }
            for h in &r.hosts {
                if let Err(e) = globset::Glob::new(h) {
                    errors.push(
                        PolicyError::new(format!("rollout {name:?}: host pattern {h:?}: {e}"))
                            .in_file(&self.file)
                            .at_line(r.line, None),
                    );
                }
            }
            if r.hosts.is_empty() && r.roles.is_empty() {
                errors.push(
                    PolicyError::new(format!("rollout {name:?} matches no host"))
                        .in_file(&self.file)
                        .at_line(r.line, None)
                        .fix("give it hosts = [\"PATTERN\"] or roles = [\"ROLE\"]"),
                );
            }
        }
        errors
    }

    /// Whether a rollout applies to a node.
    pub fn matches(rollout: &Rollout, fqdn: &str, roles: &[String]) -> bool {
        rollout
            .hosts
            .iter()
            .any(|h| globset::Glob::new(h).is_ok_and(|g| g.compile_matcher().is_match(fqdn)))
            || rollout.roles.iter().any(|r| roles.contains(r))
    }

    /// Every package's version for a node. Two matching rollouts that pin
    /// the same package are a conflict, named.
    pub fn resolve(
        &self,
        fqdn: &str,
        roles: &[String],
    ) -> Result<BTreeMap<String, Pin>, PolicyError> {
        let mut pins: BTreeMap<String, Pin> = self
            .packages
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    Pin {
                        version: e.version.clone(),
                        rule: "packages".into(),
                    },
                )
            })
            .collect();
        let mut from_rollout: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, r) in &self.rollouts {
            if !Whitelist::matches(r, fqdn, roles) {
                continue;
            }
            for (p, e) in &r.packages {
                if let Some(other) = from_rollout.insert(p, name) {
                    return Err(PolicyError::new(format!(
                        "rollouts {other:?} and {name:?} both match {fqdn} and both pin {p:?}"
                    ))
                    .in_file(&self.file)
                    .at_line(r.line, None)
                    .fix("narrow their hosts/roles so that one host gets one version, or promote one of them"));
                }
                pins.insert(
                    p.clone(),
                    Pin {
                        version: e.version.clone(),
                        rule: format!("rollouts.{name}"),
                    },
                );
            }
        }
        Ok(pins)
    }
}

/// Debian policy: optional numeric epoch, an upstream part starting with a
/// digit, an optional revision.
pub fn valid_version(v: &str) -> Result<debversion::Version, String> {
    let parsed: debversion::Version = v
        .parse()
        .map_err(|e: debversion::ParseError| e.to_string())?;
    if !parsed
        .upstream_version
        .starts_with(|c: char| c.is_ascii_digit())
    {
        return Err("the upstream version must start with a digit".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# pins
[packages]
memcached = "1.6.18-1"
redis = "5:7.0.15-1~deb12u1"

[rollouts.mc-new]
hosts = ["web01.*", "devvm-*"]
roles = ["canary"]
packages = { memcached = "1.6.18-1+deb12u1" }
"#;

    fn wl(text: &str) -> Whitelist {
        Whitelist::parse(text, "whitelist.toml".into()).unwrap()
    }

    #[test]
    fn rollouts_match_by_host_or_role() {
        let w = wl(TEXT);
        let p = w.resolve("web01.example.com", &[]).unwrap();
        assert_eq!(p["memcached"].version, "1.6.18-1+deb12u1");
        assert_eq!(p["memcached"].rule, "rollouts.mc-new");
        let p = w.resolve("web02.example.com", &[]).unwrap();
        assert_eq!(p["memcached"].version, "1.6.18-1");
        assert_eq!(p["memcached"].rule, "packages");
        let p = w.resolve("db01", &["canary".into()]).unwrap();
        assert_eq!(p["memcached"].rule, "rollouts.mc-new");
    }

    #[test]
    fn conflicting_rollouts_are_named() {
        let text = format!(
            "{TEXT}\n[rollouts.other]\nhosts = [\"web*\"]\npackages = {{ memcached = \"1.6.19-1\" }}\n"
        );
        let e = wl(&text).resolve("web01.x", &[]).unwrap_err();
        assert!(e.message.contains("\"mc-new\" and \"other\""), "{e}");
    }

    #[test]
    fn versions_are_validated_with_their_line() {
        let w = wl("[packages]\na = \"1.0-1\"\nb = \"not a version\"\nc = \"v2\"\n");
        let errs = w.validate();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].line, Some(3));
        assert!(valid_version("2:1.0~rc1-3+deb12u1").is_ok());
    }
}
