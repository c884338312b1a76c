//! compile → plan → apply → report.

mod apply;
mod batch;
pub mod checkpoint;
pub mod compile;
mod converge;
mod guards;
pub mod lock;
pub mod node;
mod notify;
pub mod plan;
pub mod report;
mod run;

pub use apply::Part;
pub use compile::{Policy, compile};
pub use converge::{
    Converge, DEFAULT_LOCK_TIMEOUT, Event, NodeFile, PinMode, Prepared, converge, prepare,
};
pub use node::Node;
pub use plan::{Plan, Step, plan};
pub use report::{LAST_RUN, Pending, Report, ResourceReport, Status, desired_digests, managed_ids};

use crate::error::PolicyError;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::secrets::Placeholder;

/// A node of an inventory, as `kiln check --inventory` compiles it.
pub struct HostNode<'a> {
    pub fqdn: &'a str,
    pub roles: &'a [String],
    pub attributes: &'a toml::Table,
    pub origin: crate::policy::types::Origin,
}

/// The problems of a run list on a release without node attributes, by
/// both: hosts of the same roles share them.
pub type AloneErrors = std::collections::HashMap<(Vec<String>, String), Vec<PolicyError>>;

/// What a host's own attributes break: the problems of its run list with
/// them that the run list alone does not have (those `check` reports once,
/// by role), for every release the whitelist pins. Each names the host.
pub fn check_host(repo: &Repository, host: &HostNode, alone: &mut AloneErrors) -> Vec<PolicyError> {
    let node = Node::inventory_host(
        host.fqdn,
        host.roles,
        host.attributes,
        Some(host.origin.clone()),
    );
    let facts = node.facts(&Target::host());
    let mut releases = crate::policy::whitelist::Whitelist::load(repo)
        .map(|w| w.pinned_releases())
        .unwrap_or_default();
    if releases.is_empty() {
        releases.push(facts.codename.clone());
    }
    let mut errors: Vec<PolicyError> = Vec::new();
    for r in &releases {
        let with = node.clone().on(r);
        let facts = with.facts_from(&facts);
        let problems = |node: &Node| compile(repo, node, &facts, &Placeholder).err().map(|e| e.0);
        let own = alone
            .entry((with.run_list.clone(), r.clone()))
            .or_insert_with(|| problems(&Node::roles(host.roles).on(r)).unwrap_or_default());
        for e in problems(&with).unwrap_or_default() {
            let e = PolicyError {
                message: format!("host {}: {}", host.fqdn, e.message),
                ..e
            };
            if !own
                .iter()
                .any(|o| o.fix == e.fix && e.message.ends_with(&o.message))
                && !errors.contains(&e)
            {
                errors.push(e);
            }
        }
    }
    errors
}

/// Every problem in the repository (`kiln check`): the policy layer's
/// checks, with roles compiled by this engine for a placeholder node.
/// Each role is compiled for every release the whitelist pins (or the
/// host's own when it pins none); an error names the release it is about.
pub fn check(repo: &Repository) -> Vec<PolicyError> {
    check_and_warn(repo).0
}

/// [`check`], with what it warns of without refusing (each once).
pub fn check_and_warn(repo: &Repository) -> (Vec<PolicyError>, Vec<PolicyError>) {
    let warnings: std::cell::RefCell<Vec<PolicyError>> = Default::default();
    let host = Node::placeholder().facts(&Target::host());
    let releases = crate::policy::whitelist::Whitelist::load(repo)
        .map(|w| w.pinned_releases())
        .unwrap_or_default();
    let several = !releases.is_empty();
    let releases = if several {
        releases
    } else {
        vec![host.codename.clone()]
    };
    let errors = repo.check(&|repo, role, size| {
        let node = Node::check(role, size);
        let per_release: Vec<(&String, Vec<PolicyError>)> = releases
            .iter()
            .map(|r| {
                let node = if several {
                    node.clone().on(r)
                } else {
                    node.clone()
                };
                let facts = node.facts_from(&host);
                match compile(repo, &node, &facts, &Placeholder) {
                    Ok(p) => {
                        let mut w = warnings.borrow_mut();
                        for e in p.warnings {
                            if !w.contains(&e) {
                                w.push(e);
                            }
                        }
                        (r, Vec::new())
                    }
                    Err(e) => (r, e.0),
                }
            })
            .collect();
        // An error of every release is said once; one of some releases names them.
        let mut errors: Vec<PolicyError> = Vec::new();
        for (r, es) in &per_release {
            for e in es {
                let everywhere = per_release.iter().all(|(_, o)| o.contains(e));
                let e = if everywhere || !several {
                    e.clone()
                } else {
                    PolicyError {
                        message: format!("release {r}: role {role}: {}", e.message),
                        ..e.clone()
                    }
                };
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(crate::error::PolicyErrors(errors))
        }
    });
    (errors, warnings.into_inner())
}
