//! `secrets/recipients.toml`: who may read each secret. People by their
//! public keys; hosts by role or by name, each through its ssh host key
//! as the fleet's `known_hosts` records it.
//!
//! ```toml
//! inventory = "inventory.toml"     # optional; relative to the repository
//! [people]
//! alice = "ssh-ed25519 AAAA... alice@laptop"
//! bob = "age1..."
//! [secrets."mariadb/app_password"]
//! roles = ["db", "web"]            # every inventory host with one of these roles
//! hosts = ["db09.example.com"]     # and these hosts
//! people = ["alice"]               # default: every person of [people]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::KeyError;
use crate::error::PolicyError;

/// A recipient's public key, canonical: `ssh-ed25519 BASE64`,
/// `ssh-rsa BASE64` (no comment) or `age1...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    pub fn parse(s: &str) -> Result<Key, KeyError> {
        let s = s.trim();
        if s.starts_with("age1") {
            s.parse::<age::x25519::Recipient>()
                .map_err(|e| KeyError::NotAge(e.to_string()))?;
            return Ok(Key(s.to_string()));
        }
        let mut parts = s.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err(KeyError::Shape);
        };
        if kind != "ssh-ed25519" && kind != "ssh-rsa" {
            return Err(KeyError::Kind(kind.to_string()));
        }
        let canonical = format!("{kind} {b64}");
        canonical
            .parse::<age::ssh::Recipient>()
            .map_err(|e| KeyError::Invalid {
                kind: kind.to_string(),
                reason: format!("{e:?}"),
            })?;
        Ok(Key(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the secret file lists: `SHA256:...` as `ssh-keygen -l` prints
    /// it for ssh keys, the key itself for age keys.
    pub fn fingerprint(&self) -> String {
        if self.0.starts_with("age1") {
            return self.0.clone();
        }
        ssh_key::PublicKey::from_openssh(&self.0)
            .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            .unwrap_or_else(|_| self.0.clone())
    }

    pub fn recipient(&self) -> Result<Box<dyn age::Recipient + Send>, PolicyError> {
        let bad = |e: String| PolicyError::new(format!("recipient {}: {e}", self.0));
        if self.0.starts_with("age1") {
            let r: age::x25519::Recipient = self.0.parse().map_err(|e: &str| bad(e.into()))?;
            Ok(Box::new(r))
        } else {
            let r: age::ssh::Recipient = self.0.parse().map_err(|e| bad(format!("{e:?}")))?;
            Ok(Box::new(r))
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// None: every person of `[people]`.
    pub people: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    inventory: Option<String>,
    #[serde(default)]
    people: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, Rule>,
}

/// The parsed recipients file.
#[derive(Debug, Clone, Default)]
pub struct RecipientsFile {
    pub file: PathBuf,
    /// The inventory whose hosts roles resolve to (relative to the repository).
    pub inventory: Option<PathBuf>,
    pub people: BTreeMap<String, Key>,
    pub secrets: BTreeMap<String, Rule>,
}

/// A host as recipients see it: its names, and the roles of its expanded
/// run list.
#[derive(Debug, Clone, Default)]
pub struct HostRef {
    pub fqdn: String,
    pub address: String,
    pub port: u16,
    pub roles: Vec<String>,
}

/// One recipient of a secret, with what it is for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `host db01.example.com` or `person alice`.
    pub label: String,
    pub key: Key,
}

impl RecipientsFile {
    /// Reads `secrets/recipients.toml`; a repository without one has no
    /// declared secrets.
    pub fn load(repo: &Path) -> Result<RecipientsFile, PolicyError> {
        let file = repo.join(super::RECIPIENTS);
        if !file.exists() {
            return Ok(RecipientsFile {
                file,
                ..RecipientsFile::default()
            });
        }
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&file))?;
        Self::parse(&text, &file, repo)
    }

    pub fn parse(text: &str, file: &Path, repo: &Path) -> Result<RecipientsFile, PolicyError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            PolicyError::toml(file, text, &e).fix(
                "valid keys: inventory, [people] NAME = \"KEY\", [secrets.\"NAME\"] with roles, hosts, people",
            )
        })?;
        let at = |what: &str, msg: String, fix: &str| {
            let line = text
                .lines()
                .position(|l| l.contains(what))
                .map_or(1, |i| i + 1);
            PolicyError::new(msg)
                .in_file(file)
                .at_line(line, None)
                .fix(fix.to_string())
        };
        let mut people = BTreeMap::new();
        for (name, k) in &raw.people {
            let key = Key::parse(k).map_err(|e| {
                at(
                    name,
                    format!("person {name:?}: {e}"),
                    "paste the line of their ~/.ssh/id_ed25519.pub, or their age1... recipient",
                )
            })?;
            people.insert(name.clone(), key);
        }
        for (name, rule) in &raw.secrets {
            super::validate_name(name)
                .map_err(|e| at(name, e.message, e.fix.as_deref().unwrap_or_default()))?;
            for p in rule.people.iter().flatten() {
                if !people.contains_key(p) {
                    return Err(at(
                        name,
                        format!("secret {name:?}: person {p:?} is not in [people]"),
                        "add them to [people] with their public key, or correct the name",
                    ));
                }
            }
            if rule.roles.is_empty() && rule.hosts.is_empty() && people.is_empty() {
                return Err(at(
                    name,
                    format!("secret {name:?} has no recipients"),
                    "give it roles = [...], hosts = [...] or people",
                ));
            }
        }
        Ok(RecipientsFile {
            file: file.to_path_buf(),
            inventory: raw.inventory.map(|i| repo.join(i)),
            people,
            secrets: raw.secrets,
        })
    }

    /// The rule of a secret, or an error saying how to declare it.
    pub fn rule(&self, name: &str) -> Result<&Rule, PolicyError> {
        self.secrets.get(name).ok_or_else(|| {
            PolicyError::new(format!("secret {name:?} is not declared"))
                .in_file(&self.file)
                .fix(format!(
                    "add [secrets.\"{name}\"] with roles = [...] (and hosts, people) to {}",
                    super::RECIPIENTS
                ))
        })
    }

    /// Whether the rule of `name` makes `host` a recipient.
    pub fn covers(&self, name: &str, host: &HostRef) -> bool {
        self.secrets.get(name).is_some_and(|r| {
            r.hosts.contains(&host.fqdn) || r.roles.iter().any(|x| host.roles.contains(x))
        })
    }

    /// Every recipient of `name`: its people, then the hosts it covers
    /// (keys from `known_hosts`), sorted and without duplicate keys.
    pub fn recipients(
        &self,
        name: &str,
        hosts: &[HostRef],
        known_hosts: &KnownHosts,
    ) -> Result<Vec<Recipient>, PolicyError> {
        let rule = self.rule(name)?;
        let mut out: Vec<Recipient> = Vec::new();
        let people: Vec<&String> = match &rule.people {
            Some(p) => p.iter().collect(),
            None => self.people.keys().collect(),
        };
        for p in people {
            out.push(Recipient {
                label: format!("person {p}"),
                key: self.people[p].clone(),
            });
        }
        let mut wanted: Vec<HostRef> = hosts
            .iter()
            .filter(|h| self.covers(name, h))
            .cloned()
            .collect();
        for fqdn in &rule.hosts {
            if !wanted.iter().any(|h| &h.fqdn == fqdn) {
                wanted.push(HostRef {
                    fqdn: fqdn.clone(),
                    address: fqdn.clone(),
                    port: 22,
                    roles: vec![],
                });
            }
        }
        for h in &wanted {
            let key = known_hosts.key_of(h).ok_or_else(|| {
                PolicyError::new(format!(
                    "secret {name:?}: host {} has no ssh-ed25519 key in {}",
                    h.fqdn,
                    known_hosts.file.display()
                ))
                .in_file(&self.file)
                .fix(format!(
                    "add the host's key (ssh-keyscan -t ed25519 {}, then check it) to the known_hosts file",
                    h.address
                ))
            })?;
            out.push(Recipient {
                label: format!("host {}", h.fqdn),
                key,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|r| seen.insert(r.key.clone()));
        Ok(out)
    }
}

/// The ed25519 host keys of a `known_hosts` file (names in clear, as the
/// fleet keeps it).
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    pub file: PathBuf,
    /// Host patterns of a line, and its key.
    entries: Vec<(Vec<String>, Key)>,
}

impl KnownHosts {
    pub fn load(file: &Path) -> Result<KnownHosts, PolicyError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            PolicyError::new(format!("cannot read the known_hosts file: {e}")).in_file(file)
        })?;
        Ok(Self::parse(&text, file))
    }

    pub fn parse(text: &str, file: &Path) -> KnownHosts {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(names), Some(kind), Some(b64)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if kind != "ssh-ed25519" {
                continue;
            }
            if let Ok(key) = Key::parse(&format!("{kind} {b64}")) {
                entries.push((names.split(',').map(str::to_string).collect(), key));
            }
        }
        KnownHosts {
            file: file.to_path_buf(),
            entries,
        }
    }

    /// The host's key, found under its fqdn or its address (with
    /// `[address]:port` for a port other than 22).
    pub fn key_of(&self, h: &HostRef) -> Option<Key> {
        let mut names = vec![h.fqdn.clone(), h.address.clone()];
        if h.port != 22 {
            names.push(format!("[{}]:{}", h.address, h.port));
            names.push(format!("[{}]:{}", h.fqdn, h.port));
        }
        self.entries
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| names.contains(p)))
            .map(|(_, k)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFFOgfPenpUGLmjK7ODBZghFd/YtG3Veetc0RrYKLplN";

    #[test]
    fn keys_parse_and_refuse() {
        let k = Key::parse(&format!("{ED} alice@laptop")).unwrap();
        assert_eq!(k.as_str(), ED);
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert!(Key::parse("ssh-dss AAAA").is_err());
        assert!(Key::parse("age1nope").is_err());
        assert!(Key::parse("").is_err());
    }

    #[test]
    fn rules_resolve_roles_hosts_and_people() {
        let repo = Path::new("/repo");
        let f = RecipientsFile::parse(
            &format!("[people]\nalice = \"{ED} a\"\n[secrets.\"db/pw\"]\nroles = [\"db\"]\n"),
            Path::new("/repo/secrets/recipients.toml"),
            repo,
        )
        .unwrap();
        let host_key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIklTcnOI+I2e19o4xa+hviGUBVeP6EeX+QTy3UyaaRZ";
        let kh = KnownHosts::parse(
            &format!("10.0.0.1 {host_key} db01\n"),
            Path::new("known_hosts"),
        );
        let db = HostRef {
            fqdn: "db01".into(),
            address: "10.0.0.1".into(),
            port: 22,
            roles: vec!["base".into(), "db".into()],
        };
        let web = HostRef {
            fqdn: "web01".into(),
            address: "10.0.0.2".into(),
            port: 22,
            roles: vec!["web".into()],
        };
        let r = f.recipients("db/pw", &[db.clone(), web], &kh).unwrap();
        let labels: Vec<&str> = r.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["person alice", "host db01"]);
        assert!(f.covers("db/pw", &db));
        assert!(f.rule("other").is_err());
        let missing = HostRef {
            address: "10.0.0.9".into(),
            ..db
        };
        let e = f.recipients("db/pw", &[missing], &kh).unwrap_err();
        assert!(e.message.contains("no ssh-ed25519 key"), "{e}");
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = RecipientsFile::parse(
            "[people]\nbob = \"ssh-ed25519 AAAA\"\n",
            Path::new("r.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = RecipientsFile::parse(
            "[secrets.\"../x\"]\nroles = [\"db\"]\n",
            Path::new("r.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.message.contains(".."), "{e}");
        let e = RecipientsFile::parse(
            "[secrets.\"x\"]\nroles = [\"db\"]\npeople = [\"carol\"]\n",
            Path::new("r.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.message.contains("carol"), "{e}");
    }
}
