//! Secrets and the fleet: which hosts of the inventory need which secret,
//! and whether each is among its recipients (the check that closes
//! chef-vault's trap of a host added after the secret was written).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::engine::node::DEVVM_FQDN;
use crate::engine::{Node, compile};
use crate::error::PolicyError;
use crate::fleet::inventory::{Host, Inventory};
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::runlist::expand;
use crate::secrets::recipients::{HostRef, KnownHosts};
use crate::secrets::{Placeholder, RecipientsFile, SecretFile};

/// The inventory secrets resolve roles against: `--inventory`, else the
/// recipients file's `inventory`, else `inventory.toml` in the repository
/// when there is one.
pub fn inventory_path(
    repo: &Path,
    recipients: &RecipientsFile,
    given: Option<&Path>,
) -> Option<PathBuf> {
    given
        .map(Path::to_path_buf)
        .or_else(|| recipients.inventory.clone())
        .or_else(|| Some(repo.join("inventory.toml")).filter(|p| p.is_file()))
}

/// The hosts of an inventory with the roles of their expanded run lists.
pub fn host_refs(repo: &Repository, inv: &Inventory) -> Vec<HostRef> {
    inv.hosts
        .iter()
        .map(|h| {
            let run_list: Vec<String> = h.roles.iter().map(|r| format!("role[{r}]")).collect();
            let roles = expand(repo, &run_list)
                .map(|e| e.role_names())
                .unwrap_or_else(|_| h.roles.clone());
            HostRef {
                fqdn: h.fqdn.clone(),
                address: h.address.clone(),
                port: h.port,
                roles,
            }
        })
        .collect()
}

/// The secrets a node uses, by compiling it with placeholders (nothing
/// is decrypted). A run list that does not compile uses none here:
/// `kiln check` reports it on its own.
pub fn used_by(repo: &Repository, node: &Node) -> BTreeSet<String> {
    let facts = node.facts(&Target::host());
    compile(repo, node, &facts, &Placeholder)
        .map(|p| p.secrets)
        .unwrap_or_default()
}

/// For each secret, the roles of the repository that use it.
pub fn roles_using(repo: &Repository) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for role in repo.names_in("roles") {
        let used = used_by(repo, &Node::check(&role, None));
        for s in used {
            out.entry(s).or_default().push(role.clone());
        }
    }
    out
}

/// What `kiln check` finds in `secrets/` with no inventory: every secret
/// file readable as one (a mangled file would surface only on the host
/// that needs it), and recipients rules naming roles the repository has.
pub fn check_files(repo: &Repository, recipients: &RecipientsFile) -> Vec<PolicyError> {
    let mut errors: Vec<PolicyError> = crate::secrets::names(&repo.dir)
        .into_iter()
        .filter_map(|name| SecretFile::load(&repo.dir, &name).err())
        .collect();
    let text = std::fs::read_to_string(&recipients.file).unwrap_or_default();
    let shown = repo.display_path(crate::secrets::RECIPIENTS);
    let known = repo.names_in("roles");
    for (name, rule) in &recipients.secrets {
        for role in rule.roles.iter().filter(|r| !known.contains(r)) {
            let mut e = PolicyError::new(format!(
                "secret {name:?} names role {role:?}, which is not in roles/"
            ))
            .in_file(&shown)
            .fix(format!(
                "correct the name (roles: {}), or add roles/{role}.toml",
                known.join(", ")
            ));
            if let Some(line) = crate::policy::spans::key_line(&text, &["secrets", name, "roles"]) {
                e = e.at_line(line, None);
            }
            errors.push(e);
        }
    }
    errors
}

/// Every host of the inventory that uses a secret must be one of its
/// recipients, with the file to prove it. Checked before any connection.
pub fn check(repo: &Repository, inv: &Inventory) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let recipients = match RecipientsFile::load(&repo.dir) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let refs = host_refs(repo, inv);
    let mut known: Option<KnownHosts> = None;
    let mut files: BTreeMap<String, Result<SecretFile, PolicyError>> = BTreeMap::new();
    // Hosts alike (roles and attributes) use the same secrets: compile once.
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (h, r) in inv.hosts.iter().zip(&refs) {
        let alike = format!("{:?} {}", h.roles, h.attributes);
        let used = uses
            .entry(alike)
            .or_insert_with(|| host_secrets(repo, h))
            .clone();
        for name in used {
            let file = files
                .entry(name.clone())
                .or_insert_with(|| SecretFile::load(&repo.dir, &name));
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    let e = PolicyError::new(format!(
                        "host {} needs secret {name:?}, which is not set ({})",
                        h.fqdn, e.message
                    ))
                    .fix(format!("kiln secret set {name} < FILE"));
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                    continue;
                }
            };
            if known.is_none() {
                match KnownHosts::load(&inv.known_hosts) {
                    Ok(k) => known = Some(k),
                    Err(e) => return vec![e],
                }
            }
            let key = known.as_ref().and_then(|k| k.key_of(r));
            let readable = key
                .as_ref()
                .is_some_and(|k| file.to.contains(&k.fingerprint()));
            if readable {
                continue;
            }
            let what = format!(
                "host {} (roles {}) needs secret {name:?} but is not one of its recipients: it could not decrypt it",
                h.fqdn,
                h.roles.join(", ")
            );
            let fix = if key.is_none() {
                format!(
                    "add the host's ssh-ed25519 key to {}, then run kiln secret rekey",
                    inv.known_hosts.display()
                )
            } else if recipients.covers(&name, r) {
                "run kiln secret rekey (the host joined after the secret was encrypted), and commit secrets/".to_string()
            } else {
                format!(
                    "add the host or one of its roles to [secrets.\"{name}\"] in {}, then run kiln secret rekey",
                    crate::secrets::RECIPIENTS
                )
            };
            errors.push(
                PolicyError::new(what)
                    .in_file(&inv.file)
                    .at_line(h.line, None)
                    .fix(fix),
            );
        }
    }
    errors
}

/// A role with dev VM sizes must use no secret: a dev VM's host key is
/// made when its image is built, so it is nobody's recipient, and a new
/// engineer must need no key.
pub fn check_devvm_roles(repo: &Repository) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for name in repo.names_in("roles") {
        let Ok(role) = repo.role(&name) else { continue };
        for size in role.sizes.keys() {
            let node = Node::role(&name)
                .named(DEVVM_FQDN)
                .sized(Some(size.clone()));
            let used = used_by(repo, &node);
            if let Some(secret) = used.iter().next() {
                errors.push(
                    PolicyError::new(format!(
                        "role {name:?} (dev VM size {size}) uses secret {secret:?}, which a dev VM cannot decrypt: its host key is nobody's recipient"
                    ))
                    .in_file(&role.file)
                    .fix("give the dev VM role a development value of its own (an attribute in clear), as roles/devvm.toml does"),
                );
                break;
            }
        }
    }
    errors
}

fn host_secrets(repo: &Repository, h: &Host) -> BTreeSet<String> {
    used_by(
        repo,
        &Node::inventory_host(&h.fqdn, &h.roles, &h.attributes, None),
    )
}
