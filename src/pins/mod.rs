//! The whitelist's pins against a node and its target: which version a
//! node gets and why (`explain`), how a target stands against its pins
//! (`audit`, `outdated`), newer versions staged as a rollout (`stage`), and
//! the package sets of a fallback mirror (`mirror`). These sit above the
//! engine because each compiles the node's policy to learn which packages
//! it installs; the text edits themselves are in
//! [`crate::policy::whitelist_edit`]. Nothing here prints: each returns a
//! value that `kiln whitelist` renders.

pub mod audit;
pub mod explain;
pub mod mirror;
pub mod outdated;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{self, Report};
use crate::error::{Error, PolicyError, RunError};
use crate::platform::facts::Facts;
use crate::platform::rootfs::{self, Overlay};
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::whitelist::Pin;
use crate::secrets::Placeholder;

pub use audit::{Audit, Finding, audit};
pub use explain::{Explain, Explained, explain};
pub use mirror::{Mirrored, mirror};
pub use outdated::{Outdated, Outdates, Staged, outdated, stage};

/// The target whose packages and sources `audit`, `outdated` and `stage`
/// read: a directory tree or the running system, and the node it is.
pub struct TargetNode<'a> {
    pub root: Option<&'a PathBuf>,
    /// Default: the fqdn of the target's last kiln run.
    pub fqdn: Option<&'a str>,
    /// Default: the roles of the target's last kiln run.
    pub roles: &'a [String],
    /// The release the target must run (default: whatever it runs).
    pub release: Option<&'a str>,
}

/// The policy compiled for a target: its roles and fqdn from the
/// arguments, else from the target's last kiln run.
/// Also returns the target's release (its codename).
///
/// With `archive_only` (what the archive offers, not what is installed), a
/// `--release` other than this system's, without `--root`, reads a
/// throwaway root of that release, kept in `scratch` while it is read;
/// `progress` hears how making that root goes.
fn target_policy(
    repo: &Path,
    node: &TargetNode,
    archive_only: bool,
    scratch: &mut Option<Overlay>,
    progress: &dyn Fn(&str),
) -> Result<(Target, String, engine::Policy), Error> {
    let TargetNode {
        root,
        fqdn,
        roles,
        release,
    } = *node;
    let repo = Repository::open(repo)?;
    let target = match (root, release) {
        (Some(r), _) => Target::at_root_read_only(r),
        (None, Some(r))
            if archive_only
                && !roles.is_empty()
                && Facts::gather(&Target::host(), None).codename != r =>
        {
            let base = rootfs::base_root(&rootfs::TEST_ROOT.on(r)?, progress)?;
            let overlay = scratch.insert(Overlay::new(
                &base,
                &crate::platform::private::scratch_dir("kiln-whitelist").map_err(RunError::from)?,
                r,
            )?);
            Target::at_root(overlay.root())
        }
        (None, _) => Target::host(),
    };
    // The node as kiln last converged it, unless told otherwise.
    let last = Report::load_last(&target)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut roles: Vec<String> = roles.to_vec();
    if roles.is_empty() {
        // Only the top-level roles matter; expansion finds the rest again.
        roles = last.roles;
    }
    if roles.is_empty() {
        return Err(PolicyError::new(
            "no role to compare against: this target has no kiln run recorded",
        )
        .fix("pass --role NAME (and --fqdn) as for kiln converge")
        .into());
    }
    let fqdn = fqdn
        .map(str::to_string)
        .or_else(|| Some(last.fqdn).filter(|f| !f.is_empty()));
    let node = engine::Node {
        fqdn,
        ..engine::Node::roles(&roles)
    };
    let facts = node.facts(&target);
    if let Some(r) = release
        && r != facts.codename
    {
        return Err(PolicyError::new(format!(
            "the target runs {:?}, not {r:?}: its pins are those of its own release",
            facts.codename
        ))
        .fix(format!(
            "point --root at a {r} tree, or drop --root (outdated and stage with --role read a throwaway {r} root), or drop --release"
        ))
        .into());
    }
    let policy = engine::compile(&repo, &node, &facts, &Placeholder)?;
    Ok((target, facts.codename, policy))
}

/// The packages a policy installs, with their pins.
fn installed_pins(policy: &engine::Policy) -> BTreeMap<String, Pin> {
    policy
        .resources
        .iter()
        .filter(|r| r.id.kind == "package" && r.actions.iter().any(|a| a == "install"))
        .filter_map(|r| Some((r.id.name.clone(), policy.pins.get(&r.id.name)?.clone())))
        .collect()
}
