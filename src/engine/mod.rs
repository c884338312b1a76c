//! compile → plan → apply → report.

pub mod compile;
mod converge;
pub mod lock;
pub mod report;
mod run;

pub use compile::{Policy, Request, compile};
pub use converge::{
    Converge, DEFAULT_LOCK_TIMEOUT, Event, NodeFile, PinMode, Prepared, converge, prepare,
};
pub use report::{LAST_RUN, Report, ResourceReport, Status, desired_digests, managed_ids};
pub use run::{Plan, Step, plan};

use crate::error::PolicyError;
use crate::platform::{facts::Facts, target::Target};
use crate::policy::Repository;

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
    let host = Facts::gather(&Target::host(), Some("check.kiln.invalid"));
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
        let req = Request {
            run_list: vec![format!("role[{role}]")],
            size,
            node_attributes: toml::Table::new(),
            ..Request::default()
        };
        let per_release: Vec<(&String, Vec<PolicyError>)> = releases
            .iter()
            .map(|r| {
                let facts = if several {
                    host.on_release(r)
                } else {
                    host.clone()
                };
                match compile(repo, &req, &facts) {
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
