//! `kiln fleet converge` as a library: everything that can be refused is
//! refused before any connection (the inventory, the policy, the secrets
//! each host must read, the signing key); then the rollout runs and
//! returns typed outcomes, and the command renders them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use globset::Glob;

use super::bundle::Bundle;
use super::inventory::{Host, Inventory};
use super::payload::Payload;
use super::plan::{self, BatchSize};
use super::pool::{self, Event, Rollout};
use super::ssh::{Client, Transport};
use crate::digest::sha256_file;
use crate::error::{Error, PolicyError};
use crate::policy::Repository;
use crate::serial::BundleMeta;

/// A push as the operator asked for it.
pub struct Push<'a> {
    pub repo: &'a Path,
    pub inventory: &'a Path,
    /// `--hosts`: a glob on fqdns and roles.
    pub hosts: Option<&'a str>,
    /// `--rollout`: only the hosts in this rollout, those it names first.
    pub rollout: Option<&'a str>,
    pub accept_new_host_keys: bool,
    pub ssh: &'a Client,
    pub canary: Option<usize>,
    pub batch: Option<&'a str>,
    pub parallel: usize,
    pub max_fail: usize,
    pub why_run: bool,
    /// The kiln binary the hosts get (default: this one).
    pub binary: Option<&'a Path>,
    /// `--signing-key`, else the inventory's `signing_key`.
    pub signing_key: Option<&'a Path>,
    /// `--allow-unsigned`: push without a signature, on purpose.
    pub allow_unsigned: bool,
    /// `--report-to`, else the inventory's `report_to`.
    pub report_to: Option<&'a str>,
}

/// A push that passed every check: what goes out, and to whom.
pub struct Ready {
    pub hosts: Vec<Host>,
    pub bundle_sha: String,
    pub bundle_meta: BundleMeta,
    pub bundle_files: usize,
    /// The fingerprint of the key that signed the bundle (none: unsigned
    /// on purpose).
    pub signer: Option<String>,
    pub binary_sha: String,
    pub why_run: bool,
    transport: Transport,
    payload: Payload,
    opts: plan::Options,
}

/// Checks everything, builds and signs the bundle: no host is touched.
pub fn prepare(p: &Push) -> Result<Ready, Error> {
    let repo = Repository::open(p.repo)?;
    let batch = match p.batch {
        Some(b) => Some(
            b.parse::<BatchSize>()
                .map_err(|e| Error::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let (inv, mut hosts) = select(&repo, p.inventory, p.hosts, p.accept_new_host_keys)?;
    if let Some(name) = p.rollout {
        hosts = in_rollout(&repo, &inv, hosts, name)?;
    }
    // The bundle's policy must compile at all before it goes anywhere,
    // and every host must be able to read the secrets it needs.
    check_policy(&repo)?;
    let unreadable = super::secrets::check(&repo, &inv);
    if !unreadable.is_empty() {
        return Err(crate::error::PolicyErrors(unreadable).into());
    }
    let key = signing_key(
        p.signing_key.or(inv.signing_key.as_deref()),
        p.allow_unsigned,
    )?;
    let transport = Transport::for_inventory(&inv, p.accept_new_host_keys, p.ssh)
        .map_err(|e| Error::Ssh(Box::new(e)))?;
    // Node files for the whole inventory, not only the selected hosts: the
    // bundle (and its hash) is the same whichever hosts a push reaches.
    let bundle = Bundle::build(p.repo, &inv.hosts, None)?;
    let bundle_sig = key.as_ref().map(|k| k.sign(&bundle.bytes)).transpose()?;
    let (binary_path, binary_sha) = self_binary(p.binary)?;
    let payload = Payload {
        bundle: Arc::new(bundle.bytes),
        bundle_sha: bundle.sha256.clone(),
        bundle_content: bundle.meta.content.clone(),
        bundle_sig,
        binary_path,
        binary_sha: binary_sha.clone(),
        binary: OnceLock::new(),
        report_to: p.report_to.map(str::to_string).or(inv.report_to.clone()),
    };
    Ok(Ready {
        hosts,
        bundle_sha: bundle.sha256,
        bundle_meta: bundle.meta,
        bundle_files: bundle.files,
        signer: key.as_ref().map(|k| k.fingerprint()),
        binary_sha,
        why_run: p.why_run,
        transport,
        payload,
        opts: plan::Options {
            canary: p.canary,
            batch,
            parallel: p.parallel.max(1),
            max_fail: p.max_fail,
            why_run: p.why_run,
        },
    })
}

impl Ready {
    /// Runs the rollout; the first Ctrl-C from now on is a push hold.
    pub fn run(&self, on_event: &(dyn Fn(Event) + Sync)) -> Rollout {
        pool::hold_on_interrupt();
        pool::run(
            &self.hosts,
            &self.transport,
            &self.payload,
            &self.opts,
            on_event,
        )
    }
}

/// The key that signs what goes out, or none when the operator said
/// `--allow-unsigned`; with neither, nothing is pushed unsigned by default.
pub fn signing_key(
    key: Option<&Path>,
    allow_unsigned: bool,
) -> Result<Option<crate::trust::SigningKey>, Error> {
    match key {
        Some(k) => Ok(Some(crate::trust::SigningKey::load(k)?)),
        None if allow_unsigned => Ok(None),
        None => Err(Error::Usage(
            "refusing to publish an unsigned bundle: hosts verify bundles against /etc/kiln/allowed_signers. \
             Pass --signing-key FILE (an ed25519 key: ssh-keygen -t ed25519), or set signing_key = \"FILE\" in the inventory; \
             --allow-unsigned sends it unsigned on purpose"
                .into(),
        )),
    }
}

/// The policy must pass `kiln check` before it goes anywhere.
pub fn check_policy(repo: &Repository) -> Result<(), Error> {
    refuse(crate::engine::check(repo))
}

/// Every problem found, as one error; none is Ok.
fn refuse(errors: Vec<PolicyError>) -> Result<(), Error> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::error::PolicyErrors(errors).into())
    }
}

/// The hosts' attributes, checked as each host's converge would check them.
pub fn check_attributes(repo: &Repository, inv: &Inventory) -> Result<(), Error> {
    refuse(crate::fleet::inventory::check_attributes(repo, inv))
}

/// Loads the inventory and selects the hosts whose fqdn or a role matches
/// `pattern` (all without one): every error before any connection.
pub fn select(
    repo: &Repository,
    inventory: &Path,
    pattern: Option<&str>,
    accept_new_host_keys: bool,
) -> Result<(Inventory, Vec<Host>), Error> {
    let inv = Inventory::load(inventory)?;
    inv.check_roles(repo)?;
    check_attributes(repo, &inv)?;
    if !accept_new_host_keys && !inv.known_hosts.is_file() {
        return Err(PolicyError::new(format!(
            "the known_hosts file {} does not exist",
            inv.known_hosts.display()
        ))
        .in_file(&inv.file)
        .fix("collect the hosts' keys into it (ssh-keyscan, then check them), or pass --accept-new-host-keys for first contact")
        .into());
    }
    let hosts = matching(&inv, pattern)?;
    Ok((inv, hosts))
}

/// The hosts of `inv` whose fqdn or a role matches `pattern` (all without
/// one); none is an error.
pub fn matching(inv: &Inventory, pattern: Option<&str>) -> Result<Vec<Host>, Error> {
    let hosts: Vec<Host> = match pattern {
        None => inv.hosts.clone(),
        Some(pattern) => {
            let m = Glob::new(pattern)
                .map_err(|e| Error::Usage(format!("--hosts {pattern:?}: {e}")))?
                .compile_matcher();
            inv.hosts
                .iter()
                .filter(|h| m.is_match(&h.fqdn) || h.roles.iter().any(|r| m.is_match(r)))
                .cloned()
                .collect()
        }
    };
    if hosts.is_empty() {
        return Err(Error::Usage(format!(
            "--hosts {:?} matches no host of {}",
            pattern.unwrap_or("*"),
            inv.file.display()
        )));
    }
    Ok(hosts)
}

/// The hosts of `hosts` in rollout `name`; those its `hosts` names are
/// its canaries, converged first. A host's release is not known before it
/// is reached: a rollout of some releases takes effect where they run.
fn in_rollout(
    repo: &Repository,
    inv: &Inventory,
    hosts: Vec<Host>,
    name: &str,
) -> Result<Vec<Host>, Error> {
    let pairs: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|h| (h.fqdn.clone(), h.roles.clone()))
        .collect();
    let found = crate::policy::rollout::explain(repo, name, &pairs, None)?;
    let chosen: Vec<Host> = hosts
        .into_iter()
        .zip(&found.hosts)
        .filter(|(_, v)| v.is_in)
        .map(|(mut h, v)| {
            h.canary |= v.named;
            h
        })
        .collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "rollout {name:?} reaches no host of {} (see kiln whitelist explain --rollout {name} --inventory {})",
            inv.file.display(),
            inv.file.display()
        )));
    }
    Ok(chosen)
}

/// The kiln binary to send (`binary`, else the running one) and its sha256
/// (cached by inode and mtime).
fn self_binary(binary: Option<&Path>) -> Result<(PathBuf, String), Error> {
    let path = binary.map(Path::to_path_buf).unwrap_or_else(|| {
        std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
    });
    let io = |source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&path).map_err(io)?;
    let key = format!(
        "{}-{}-{}-{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec() ^ m.mtime()
    );
    // In kiln's own cache, not under a shared /tmp name: whoever made that
    // file first could name any binary's hash for ours (or link it to a
    // file for kiln to overwrite).
    let cache = crate::platform::rootfs::cache_dir().join("binary-sha");
    if let Ok(s) = std::fs::read_to_string(&cache)
        && let Some((k, sha)) = s.trim().split_once(' ')
        && k == key
    {
        return Ok((path, sha.to_string()));
    }
    let sha = sha256_file(&path).map_err(io)?;
    if let Some(dir) = cache.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let line = format!("{key} {sha}\n");
        let _ = crate::platform::hostfile::replace_with(&cache, |f| {
            std::io::Write::write_all(f, line.as_bytes())
        });
    }
    Ok((path, sha))
}
