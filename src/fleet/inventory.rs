//! `inventory.toml`: the hosts of a fleet, checked in full before any
//! connection is made.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Lines, PolicyError, line_col};
use crate::policy::Repository;
use crate::policy::types::is_url;

/// One host, with the defaults and its group already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The table key: the node's fqdn.
    pub fqdn: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub roles: Vec<String>,
    /// Marked `canary = true`, or has the `canary` role.
    pub canary: bool,
    /// Node attributes (`attributes = {...}`: defaults < group < host), for
    /// values that are not secret; secrets go in `secrets/`.
    pub attributes: toml::Table,
    /// Line of the host's table, for messages.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: PathBuf,
    /// Absolute or relative to the current directory (resolved against the
    /// inventory's directory).
    pub known_hosts: PathBuf,
    /// An ssh private key to log in with (`identity = "..."`), if any.
    pub identity: Option<PathBuf>,
    /// Extra `-o Key=Value` options for ssh (`ssh_options = [...]`), e.g.
    /// `ProxyJump=bastion` or `KexAlgorithms=curve25519-sha256`.
    pub ssh_options: Vec<String>,
    /// The ed25519 key `kiln fleet converge` signs bundles with
    /// (`signing_key = "..."`), if any.
    pub signing_key: Option<PathBuf>,
    /// The `kiln server` each host sends its run's report to
    /// (`report_to = "https://..."`), unless `--report-to` says otherwise.
    pub report_to: Option<String>,
    /// Hosts in file order.
    pub hosts: Vec<Host>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Settings {
    address: Option<String>,
    port: Option<toml::Spanned<i64>>,
    user: Option<String>,
    roles: Option<Vec<String>>,
    canary: Option<bool>,
    group: Option<toml::Spanned<String>>,
    attributes: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    known_hosts: Option<toml::Spanned<String>>,
    identity: Option<String>,
    ssh_options: Option<Vec<toml::Spanned<String>>>,
    signing_key: Option<String>,
    report_to: Option<toml::Spanned<String>>,
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    groups: BTreeMap<String, Settings>,
    #[serde(default)]
    /// File order comes from each table's span.
    hosts: BTreeMap<String, toml::Spanned<Settings>>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::new(format!("cannot read the inventory: {e}"))
                .in_file(path)
                .fix("pass --inventory FILE naming an inventory.toml")
        })?;
        Inventory::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Inventory, PolicyError> {
        let raw: RawInventory =
            toml::from_str(text).map_err(|e| PolicyError::toml(path, text, &e).fix(
                "valid keys: known_hosts, identity, ssh_options, signing_key, report_to, [defaults], [groups.NAME], [hosts.\"FQDN\"] with address, port, user, roles, canary, group, attributes",
            ))?;
        let err = |offset: usize, msg: String, fix: &str| {
            let (line, col) = line_col(text, offset);
            PolicyError::new(msg)
                .in_file(path)
                .at_line(line, Some(col))
                .fix(fix.to_string())
        };
        let lines = Lines::new(text);
        let dir = path.parent().unwrap_or(Path::new("."));
        let known_hosts = match &raw.known_hosts {
            Some(k) => dir.join(k.get_ref()),
            None => {
                return Err(PolicyError::new("the inventory names no known_hosts file")
                    .in_file(path)
                    .at_line(1, None)
                    .fix("add known_hosts = \"PATH\" (relative to the inventory); kiln never turns host key checking off"));
            }
        };
        let mut ssh_options = Vec::new();
        for o in raw.ssh_options.iter().flatten() {
            check_ssh_option(o.get_ref()).map_err(|msg| {
                err(
                    o.span().start,
                    format!("ssh_options: {msg}"),
                    &format!(
                        "use Key=Value with one of: {}; host key checking, known_hosts, \
                         commands and the control socket are kiln's",
                        SSH_OPTIONS_ALLOWED.join(", ")
                    ),
                )
            })?;
            ssh_options.push(o.get_ref().clone());
        }
        if let Some(url) = raw.report_to.as_ref().filter(|u| !is_url(u.get_ref())) {
            return Err(err(
                url.span().start,
                format!(
                    "report_to {:?} is not an http:// or https:// URL",
                    url.get_ref()
                ),
                "report_to = \"https://kiln.example.com:8443\", the kiln server's address",
            ));
        }
        if raw.hosts.is_empty() {
            return Err(PolicyError::new("the inventory lists no hosts")
                .in_file(path)
                .fix(
                    "add a table per host: [hosts.\"web01.example.com\"] with address and roles",
                ));
        }
        // File order: the offset of each host's table.
        let mut order: Vec<(usize, String)> = raw
            .hosts
            .iter()
            .map(|(k, v)| (v.span().start, k.clone()))
            .collect();
        order.sort();
        let mut hosts = Vec::new();
        let mut seen: HashMap<(String, u16), String> = HashMap::new();
        for (offset, fqdn) in order {
            let own = raw.hosts[&fqdn].get_ref();
            let group = match &own.group {
                Some(g) => Some(raw.groups.get(g.get_ref()).ok_or_else(|| {
                    err(
                        g.span().start,
                        format!("host {fqdn}: no group {:?}", g.get_ref()),
                        &format!(
                            "define [groups.{}], or use one of: {}",
                            g.get_ref(),
                            raw.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?),
                None => None,
            };
            let layers: Vec<&Settings> = [Some(own), group, Some(&raw.defaults)]
                .into_iter()
                .flatten()
                .collect();
            let address = layers
                .iter()
                .find_map(|s| s.address.clone())
                .unwrap_or_else(|| fqdn.clone());
            let port = match layers.iter().find_map(|s| s.port.clone()) {
                None => 22,
                Some(p) => u16::try_from(*p.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        err(
                            p.span().start,
                            format!("host {fqdn}: port {} is not a TCP port", p.get_ref()),
                            "use a number from 1 to 65535",
                        )
                    })?,
            };
            let user = layers
                .iter()
                .find_map(|s| s.user.clone())
                .unwrap_or_else(|| "root".into());
            let roles = layers
                .iter()
                .find_map(|s| s.roles.clone())
                .unwrap_or_default();
            if roles.is_empty() {
                return Err(err(
                    offset,
                    format!("host {fqdn} has no roles: there is nothing to converge it to"),
                    "add roles = [\"ROLE\"] to the host, its group or [defaults]",
                ));
            }
            if !is_address(&address) {
                return Err(err(
                    offset,
                    format!("host {fqdn}: address {address:?} is not a host name or IP address"),
                    "address = \"10.1.0.11\" or a resolvable name",
                ));
            }
            if !is_login_name(&user) {
                return Err(err(
                    offset,
                    format!("host {fqdn}: user {user:?} is not a login name"),
                    "user = \"root\" (lowercase letters, digits, '_', '-', '.'; the address goes in address)",
                ));
            }
            if let Some(other) = seen.insert((address.clone(), port), fqdn.clone()) {
                return Err(err(
                    offset,
                    format!("hosts {other} and {fqdn} both have address {address} port {port}"),
                    "give each host its own address (or port)",
                ));
            }
            let canary = layers.iter().find_map(|s| s.canary).unwrap_or(false)
                || roles.iter().any(|r| r == "canary");
            let mut attributes = toml::Table::new();
            for layer in layers.iter().rev() {
                if let Some(a) = &layer.attributes {
                    crate::policy::attributes::merge(&mut attributes, a);
                }
            }
            if attributes.contains_key(crate::policy::attributes::FACTS) {
                return Err(err(
                    offset,
                    format!(
                        "host {fqdn}: attributes set node.*, the facts kiln gathers on the host"
                    ),
                    "put the value under a cookbook's name, e.g. attributes = { app = { ... } }",
                ));
            }
            if let Some(key) = crate::policy::render::secret_in(&attributes) {
                return Err(err(
                    offset,
                    format!(
                        "host {fqdn}: attribute {key} uses a secret: inventory attributes cannot (they would carry any secret into any file)"
                    ),
                    "use the secret in a role's or cookbook's attributes, or in the template itself",
                ));
            }
            hosts.push(Host {
                fqdn,
                address,
                port,
                user,
                roles,
                canary,
                attributes,
                line: lines.line(offset),
            });
        }
        Ok(Inventory {
            file: path.to_path_buf(),
            known_hosts,
            identity: raw.identity.map(|i| dir.join(i)),
            ssh_options,
            signing_key: raw.signing_key.map(|k| dir.join(k)),
            report_to: raw.report_to.map(toml::Spanned::into_inner),
            hosts,
        })
    }

    /// Every host's roles must exist in the repository: checked before any
    /// connection.
    pub fn check_roles(&self, repo: &Repository) -> Result<(), PolicyError> {
        let known = repo.names_in("roles");
        for h in &self.hosts {
            for r in &h.roles {
                if !known.contains(r) {
                    return Err(PolicyError::new(format!(
                        "host {}: role {r:?} is not in {}",
                        h.fqdn,
                        repo.display_path("roles").display()
                    ))
                    .in_file(&self.file)
                    .at_line(h.line, None)
                    .fix(format!("roles defined there: {}", known.join(", "))));
                }
            }
        }
        Ok(())
    }
}

/// A host name, IPv4 or IPv6 address, as ssh takes it after `user@`:
/// nothing that a shell, ssh's own `%` tokens or a second `@` could read
/// as something else.
fn is_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 253
        && !a.starts_with(['-', '.'])
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c))
}

/// A POSIX login name, as useradd accepts it by default.
fn is_login_name(u: &str) -> bool {
    let mut chars = u.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
}

/// Options whose value is a list of algorithms.
const SSH_ALGORITHM_OPTIONS: &[&str] = &[
    "CASignatureAlgorithms",
    "Ciphers",
    "HostKeyAlgorithms",
    "KexAlgorithms",
    "MACs",
    "PubkeyAcceptedAlgorithms",
];

/// An algorithm OpenSSH keeps only for old peers: CBC and RC4 ciphers,
/// MD5 and SHA-1 MACs and key exchanges, DSA and SHA-1 RSA signatures.
/// An inventory may narrow ssh's defaults, never widen them to these.
fn is_weak_algorithm(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("-cbc")
        || n.contains("arcfour")
        || n.contains("3des")
        || n.contains("blowfish")
        || n.contains("md5")
        || n.contains("sha1")
        || n.contains("ripemd")
        || n.starts_with("ssh-dss")
        || n == "ssh-rsa"
        || n == "ssh-rsa-cert-v01@openssh.com"
}

/// What the hosts' attributes break once laid over their roles (a value
/// that is not of its declared type, one an escaping helper refuses),
/// named by host and inventory line: `kiln check --inventory` and a push
/// refuse before any connection what each host's converge would refuse.
pub fn check_attributes(repo: &Repository, inv: &Inventory) -> Vec<PolicyError> {
    let mut errors: Vec<PolicyError> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut alone = crate::engine::AloneErrors::new();
    for h in inv.hosts.iter().filter(|h| !h.attributes.is_empty()) {
        // Hosts alike are compiled once (the first one names the problem).
        if !seen.insert(format!("{:?} {}", h.roles, h.attributes)) {
            continue;
        }
        let node = crate::engine::HostNode {
            fqdn: &h.fqdn,
            roles: &h.roles,
            attributes: &h.attributes,
            origin: crate::policy::types::Origin {
                line: Some(h.line),
                ..crate::policy::types::Origin::file(&inv.file)
            },
        };
        for e in crate::engine::check_host(repo, &node, &mut alone) {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    errors
}

/// The ssh options an inventory may set: transport tuning only. Nothing
/// that touches host key checking (StrictHostKeyChecking, *KnownHosts*,
/// VerifyHostKeyDNS, ...), runs a command (ProxyCommand, LocalCommand,
/// KnownHostsCommand, ...) or moves kiln's control socket is on it.
pub const SSH_OPTIONS_ALLOWED: &[&str] = &[
    "AddressFamily",
    "BindAddress",
    "BindInterface",
    "CASignatureAlgorithms",
    "Ciphers",
    "Compression",
    "ConnectionAttempts",
    "ConnectTimeout",
    "HostKeyAlgorithms",
    "IPQoS",
    "KexAlgorithms",
    "MACs",
    "ProxyJump",
    "PubkeyAcceptedAlgorithms",
    "RekeyLimit",
    "ServerAliveCountMax",
    "ServerAliveInterval",
    "TCPKeepAlive",
];

/// Why an inventory's `ssh_options` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SshOptionError {
    #[error("{0:?} is not Key=Value")]
    NotKeyValue(String),
    #[error("{0} is not an option kiln lets the inventory set")]
    NotAllowed(String),
    #[error(
        "{key}: value {value:?} is not a plain value (letters, digits and @ . _ , : + - ^ / = only)"
    )]
    NotPlain { key: String, value: String },
    #[error("{key}: {weak} is a legacy algorithm; kiln does not let an inventory weaken ssh")]
    Weak { key: String, weak: String },
}

/// `Key=Value` with a key on [`SSH_OPTIONS_ALLOWED`] (any case, as ssh
/// reads it) and a value that ssh cannot take for another argument.
fn check_ssh_option(o: &str) -> Result<(), SshOptionError> {
    let Some((key, value)) = o.split_once('=') else {
        return Err(SshOptionError::NotKeyValue(o.to_string()));
    };
    let key = key.trim();
    let Some(_) = SSH_OPTIONS_ALLOWED
        .iter()
        .find(|a| a.eq_ignore_ascii_case(key))
    else {
        return Err(SshOptionError::NotAllowed(key.to_string()));
    };
    let value = value.trim();
    // ssh reads one word; ProxyJump hosts, addresses, algorithm lists and
    // numbers need no more than these, and no shell or ssh token is among them.
    let plain = |c: char| c.is_ascii_alphanumeric() || "@._,:+-^/=".contains(c);
    if value.is_empty() || value.starts_with('-') || !value.chars().all(plain) {
        return Err(SshOptionError::NotPlain {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    let algorithms = SSH_ALGORITHM_OPTIONS
        .iter()
        .any(|a| a.eq_ignore_ascii_case(key));
    if algorithms {
        let names = value.trim_start_matches(['+', '^']).split(',');
        if let Some(weak) = names.into_iter().find(|n| is_weak_algorithm(n)) {
            return Err(SshOptionError::Weak {
                key: key.to_string(),
                weak: weak.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, PolicyError> {
        Inventory::parse(text, Path::new("fleet/inventory.toml"))
    }

    #[test]
    fn defaults_groups_and_order() {
        let inv = parse(
            r#"known_hosts = "known_hosts"
[defaults]
user = "ops"
roles = ["base"]
[groups.web]
roles = ["web"]
port = 2222
[hosts."z.example.com"]
address = "10.0.0.3"
canary = true
[hosts."a.example.com"]
address = "10.0.0.2"
group = "web"
[hosts."m.example.com"]
roles = ["canary", "web"]
attributes = { app = { db_host = "10.0.0.5" } }
"#,
        )
        .unwrap();
        assert_eq!(inv.known_hosts, Path::new("fleet/known_hosts"));
        let names: Vec<_> = inv.hosts.iter().map(|h| h.fqdn.as_str()).collect();
        assert_eq!(names, ["z.example.com", "a.example.com", "m.example.com"]);
        assert_eq!(inv.hosts[0].user, "ops");
        assert!(inv.hosts[0].canary);
        assert_eq!(inv.hosts[1].port, 2222);
        assert_eq!(inv.hosts[1].roles, ["web"]);
        assert_eq!(inv.hosts[2].address, "m.example.com");
        assert!(inv.hosts[2].canary);
        assert_eq!(
            inv.hosts[2].attributes["app"]["db_host"].as_str(),
            Some("10.0.0.5")
        );
        assert!(inv.hosts[0].attributes.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e =
            parse("known_hosts = \"k\"\n[hosts.\"a\"]\naddress = \"1.2.3.4\"\nrole = [\"x\"]\n")
                .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = parse("known_hosts = \"k\"\n[hosts.\"a\"]\naddress = \"1.2.3.4\"\n").unwrap_err();
        assert!(e.to_string().contains("no roles"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = parse("[hosts.\"a\"]\nroles = [\"x\"]\n").unwrap_err();
        assert!(e.to_string().contains("known_hosts"), "{e}");
        let e =
            parse("known_hosts = \"k\"\n[hosts.\"a\"]\nroles=[\"x\"]\nport = 70000\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = parse(
            "known_hosts = \"k\"\n[defaults]\nroles=[\"x\"]\naddress=\"h\"\n[hosts.a]\n[hosts.b]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("both have address"), "{e}");
        let e =
            parse("known_hosts = \"k\"\n[hosts.a]\nroles=[\"x\"]\ngroup = \"db\"\n").unwrap_err();
        assert!(e.to_string().contains("no group"), "{e}");
        let e = parse(
            "known_hosts = \"k\"\nreport_to = \"kiln.example.com\"\n[hosts.a]\nroles=[\"x\"]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not an http:// or https:// URL"),
            "{e}"
        );
        assert_eq!(e.line, Some(2), "{e}");
        let inv = parse("known_hosts = \"k\"\nreport_to = \"https://kiln.example.com:8443\"\n[hosts.a]\nroles=[\"x\"]\n")
            .unwrap();
        assert_eq!(
            inv.report_to.as_deref(),
            Some("https://kiln.example.com:8443")
        );
    }

    #[test]
    fn ssh_options_are_an_allowlist() {
        let inv = parse(
            "known_hosts = \"k\"\nssh_options = [\"ProxyJump=bastion\", \"kexalgorithms=curve25519-sha256\"]\n[hosts.a]\nroles=[\"x\"]\n",
        )
        .unwrap();
        assert_eq!(inv.ssh_options.len(), 2);
        for bad in [
            "KnownHostsCommand=/bin/true",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "ProxyCommand=nc %h %p",
            "LocalCommand=id",
            "PermitLocalCommand=yes",
            "ControlPath=/tmp/x",
            "ProxyJump=-oProxyCommand=x",
        ] {
            let text = format!(
                "known_hosts = \"k\"\nssh_options = [\n  \"Ciphers=aes256-gcm@openssh.com\",\n  {bad:?},\n]\n[hosts.a]\nroles=[\"x\"]\n"
            );
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(4), "{bad}: {e}");
            let key = bad.split('=').next().unwrap();
            assert!(e.to_string().contains(key), "{e}");
            assert!(
                e.to_string()
                    .contains("ProxyJump, PubkeyAcceptedAlgorithms"),
                "{e}"
            );
        }
    }
}
