//! One converge, start to end: the policy compiled, the target's lock taken,
//! the plan applied, the report kept. Every caller (`kiln converge`,
//! `kiln verify --converge`, dev VM image builds, `kiln test`) goes through
//! here; none of it prints, so each caller shows progress its own way.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::apply::Part;
use super::compile::{Policy, compile};
use super::lock::RunLock;
use super::node::Node;
use super::report::{Report, ResourceReport};
use super::run;
use crate::error::{Error, PolicyError};
pub use crate::platform::pins::PinMode;
use crate::platform::target::{Durability, Target};
use crate::policy::Repository;
use crate::secrets::{Decrypt, TestValues};
use crate::serial::BundleMeta;

/// How long a converge waits for another run's lock unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What to converge, and where.
#[derive(Debug, Clone)]
pub struct Converge {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    pub run_list: Vec<String>,
    pub fqdn: Option<String>,
    /// A node file: fqdn, run_list, size and attributes.
    pub node: Option<PathBuf>,
    pub size: Option<String>,
    /// A directory tree as the target instead of the running system.
    pub root: Option<PathBuf>,
    pub why_run: bool,
    pub lock_timeout: Duration,
    /// `kiln test`: secrets get random test values instead of being
    /// decrypted with the target's host key.
    pub test_secrets: bool,
    /// The test values' key, when an earlier part of the run chose it
    /// (a `kiln test` checkpoint); a random one otherwise.
    pub test_key: Option<Vec<u8>>,
    /// Node attributes laid over the node file's (a fleet's come in the
    /// bundle's node file instead, signed).
    pub attributes: toml::Table,
    /// Refuse a pin no source offers (production), or substitute it.
    pub pins: PinMode,
    /// Throwaway only for a tree its command discards on a crash (`kiln
    /// test`, a dev VM image build): dpkg then skips its syncs there.
    pub durability: Durability,
}

impl Converge {
    /// Converging `roles` of the policy in `repo`, on this system.
    pub fn roles(repo: impl Into<PathBuf>, roles: &[String]) -> Self {
        Converge {
            repo: repo.into(),
            roles: roles.to_vec(),
            run_list: Vec::new(),
            fqdn: None,
            node: None,
            size: None,
            root: None,
            why_run: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            test_secrets: false,
            test_key: None,
            attributes: toml::Table::new(),
            pins: PinMode::Strict,
            durability: Durability::Durable,
        }
    }
}

/// A node file: what one host adds to the policy. A fleet bundle carries
/// one per inventory host (`nodes/FQDN.toml`), so that the push and the
/// agent converge a host with the same signed fqdn, run list and attributes.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    #[serde(default)]
    pub run_list: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default)]
    pub attributes: toml::Table,
}

/// What a converge tells its caller while it runs.
pub enum Event<'a> {
    /// A resource was checked (and applied, unless why-run).
    Resource(&'a ResourceReport),
    /// Something went wrong that does not fail the run.
    Warning(&'a str),
}

/// A compiled policy and the target it is for, not yet applied.
pub struct Prepared {
    pub target: Target,
    pub policy: Policy,
    pub why_run: bool,
    pub pins: PinMode,
    pub lock_timeout: Duration,
    /// The repository is an unpacked bundle with this serial (and this
    /// path): checked against the target's record, and recorded.
    pub bundle: Option<(BundleMeta, String)>,
    /// The key of the test values the policy was compiled with.
    pub test_key: Option<Vec<u8>>,
}

/// Compiles the policy for the target: every policy error surfaces here,
/// before the lock is taken or anything changes.
pub fn prepare(c: &Converge) -> Result<Prepared, Error> {
    let repo = Repository::open(&c.repo)?;
    let node = node_of(c)?;
    let target = match &c.root {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--root {}: no such directory; point it at a Debian root (e.g. one made with mmdebstrap)",
                    dir.display()
                )));
            }
            // A why-run only reads: the tree's programs may not change it.
            if c.why_run {
                Target::at_root_read_only(dir)
            } else {
                Target::at_root(dir)
            }
        }
        None => Target::host(),
    }
    .with_durability(c.durability);
    // An older bundle is refused before anything else is looked at.
    let bundle = BundleMeta::load(&c.repo)?.map(|m| (m, c.repo.display().to_string()));
    if let Some((meta, what)) = &bundle {
        crate::serial::admit_on(&target, meta, what, true)?;
    }
    let facts = node.facts(&target);
    // Secrets are decrypted with the target's own host key, read here.
    let mut test_key = None;
    let mut policy = if c.test_secrets {
        let values = match &c.test_key {
            Some(k) => TestValues::with_key(k.clone()),
            None => TestValues::new(),
        };
        test_key = Some(values.key().to_vec());
        compile(&repo, &node, &facts, &values)?
    } else {
        let secrets = Decrypt::with_host_key(&c.repo, &target, &facts.fqdn);
        compile(&repo, &node, &facts, &secrets)?
    };
    // A path that held a secret in the last run is never diffed: its old
    // content may still hold it. An unreadable report hides nothing more.
    policy.hide_paths_of_last_run(&Report::last_sensitive_paths(&target));
    Ok(Prepared {
        target,
        policy,
        why_run: c.why_run,
        pins: c.pins,
        lock_timeout: c.lock_timeout,
        bundle,
        test_key,
    })
}

/// The node a converge is for: the node file's, with what the command
/// line gives laid over it.
fn node_of(c: &Converge) -> Result<Node, Error> {
    let mut node = match &c.node {
        Some(p) => Node::file(p)?,
        None => Node::default(),
    };
    crate::policy::attributes::merge(&mut node.attributes, &c.attributes);
    let mut run_list: Vec<String> = Node::roles(&c.roles).run_list;
    run_list.extend(c.run_list.iter().cloned());
    if !run_list.is_empty() {
        node.run_list = run_list;
    }
    if node.run_list.is_empty() {
        return Err(PolicyError::new("nothing to converge: the run list is empty")
            .fix("pass --role NAME or --run-list recipe[COOKBOOK], or give a --node file with run_list")
            .into());
    }
    node.fqdn = c.fqdn.clone().or(node.fqdn);
    node.size = c.size.clone().or(node.size);
    Ok(node)
}

impl Prepared {
    /// The same policy applied to another view of the target: `kiln test`
    /// compiles outside its sandbox and converges inside, where the root is `/`.
    pub fn on(self, target: Target) -> Prepared {
        Prepared { target, ..self }
    }

    /// Takes the target's lock, applies the policy and keeps the report
    /// (unless why-run). A failed resource is in the report, not an error.
    pub fn apply(&self, on: &mut dyn FnMut(Event)) -> Result<Report, Error> {
        self.apply_part(&Part::default(), on)
    }

    /// [`Prepared::apply`] for one part of a converge: `kiln test` stops at
    /// a checkpoint and goes on from it in a later process.
    pub fn apply_part(&self, part: &Part, on: &mut dyn FnMut(Event)) -> Result<Report, Error> {
        let _lock = RunLock::acquire(&self.target, self.lock_timeout)?;
        // Under the lock: no other run records a newer serial in between.
        if let Some((meta, what)) = &self.bundle {
            crate::serial::admit_on(&self.target, meta, what, self.why_run)?;
        }
        let mut progress = |r: &ResourceReport| on(Event::Resource(r));
        let mut report = run::converge(
            &self.target,
            &self.policy,
            &run::Options {
                why_run: self.why_run,
                pins: self.pins,
                part: part.clone(),
            },
            &mut progress,
        );
        report.bundle_serial = self.bundle.as_ref().map(|(m, _)| m.serial);
        if !report.substitutions.is_empty() {
            on(Event::Warning(&crate::platform::pins::warning(
                &report.substitutions,
                &self.policy.codename,
            )));
        }
        if !self.why_run
            && let Err(e) = report.save(&self.target)
        {
            on(Event::Warning(&format!("cannot keep the run report: {e}")));
        }
        if !self.why_run
            && let Err(e) = crate::resource::state::keep_fingerprint_key(
                &self.target,
                self.policy.fingerprint_key.as_deref(),
                &self.policy.sensitive_files(),
            )
        {
            on(Event::Warning(&format!(
                "cannot keep the fingerprint key: {e}"
            )));
        }
        Ok(report)
    }
}

/// Compiles, locks, applies and keeps the report: one whole converge.
pub fn converge(c: &Converge, on: &mut dyn FnMut(Event)) -> Result<Report, Error> {
    prepare(c)?.apply(on)
}
