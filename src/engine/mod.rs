//! compile → plan → apply → report.

pub mod compile;
mod converge;
pub mod lock;
pub mod report;
mod run;

pub use compile::{Policy, Request, compile};
pub use converge::{Converge, DEFAULT_LOCK_TIMEOUT, Event, NodeFile, Prepared, converge, prepare};
pub use report::{LAST_RUN, Report, ResourceReport, Status, managed_ids};
pub use run::{Plan, Step, plan};

use crate::error::PolicyError;
use crate::platform::{facts::Facts, target::Target};
use crate::policy::Repository;

/// Every problem in the repository (`kiln check`): the policy layer's
/// checks, with roles compiled by this engine for a placeholder node.
pub fn check(repo: &Repository) -> Vec<PolicyError> {
    let facts = Facts::gather(&Target::host(), Some("check.kiln.invalid"));
    repo.check(&|repo, role, size| {
        let req = Request {
            run_list: vec![format!("role[{role}]")],
            size,
            node_attributes: toml::Table::new(),
            ..Request::default()
        };
        compile(repo, &req, &facts).map(drop)
    })
}
