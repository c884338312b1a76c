//! Consecutive resources of a type that batches (packages) are carried
//! out together: one apt transaction, not one per package. The members'
//! outcomes wait here until the walk reaches them.

use std::collections::{HashMap, VecDeque};

use super::compile::{Compiled, Policy};
use super::plan::{Step, same};
use super::report::{ResourceReport, Status};
use crate::error::RunError;
use crate::resource::{Context, Planned, Resource, ResourceResult};

/// A resource carried out with an earlier one's batch.
pub struct Carried {
    pub planned: Planned,
    pub result: ResourceResult<()>,
    /// Checked again (the target had moved) and found not as planned.
    pub replanned: bool,
}

impl Carried {
    /// The report entry of member `j` of `policy`.
    pub fn entry(self, policy: &Policy, j: usize) -> ResourceReport {
        let mut e = ResourceReport::new(policy, j);
        e.record(&self.planned);
        e.replanned = self.replanned;
        match self.result {
            Ok(()) => e.status = Status::Updated,
            Err(err) => e.fail(err.to_string()),
        }
        e
    }
}

/// Members' outcomes, by resource index.
pub type Batched = HashMap<usize, Carried>;

/// Applies `planned` (resource `i`'s) together with the steps right after
/// it in `ahead` of the same batch key that need a change, taking their
/// planned differences out of the plan. Once the target has moved
/// (`moved`), each member is checked again first. Returns `i`'s outcome
/// and keeps the members' in `batched`.
pub fn apply(
    resources: &[Compiled],
    i: usize,
    planned: &Planned,
    ahead: &mut VecDeque<Step>,
    moved: bool,
    cx: &mut Context,
    batched: &mut Batched,
) -> ResourceResult<()> {
    let key = resources[i].imp.batch_key();
    let mut members: Vec<(usize, Planned, bool)> = Vec::new();
    for step in ahead.iter_mut() {
        let r = &resources[step.index];
        // A member with guards or several actions goes alone.
        let simple = r.imp.batch_key() == key
            && r.only_if.is_none()
            && r.not_if.is_none()
            && r.actions.len() == 1
            && step.actions.len() == 1;
        if !simple {
            break;
        }
        // The walk compares what it finds with the plan again: the plan's
        // difference stays in the step unless this batch carries it out.
        let now = moved.then(|| r.imp.plan(&r.actions[0], cx));
        match now.as_ref().unwrap_or(&step.actions[0]) {
            Ok(p) if p.is_real() => {}
            Ok(_) => continue,
            Err(_) => break,
        }
        let replanned = now.as_ref().is_some_and(|n| !same(&step.actions[0], n));
        let taken = match now {
            Some(now) => now,
            None => step.actions.remove(0),
        };
        if let Ok(p) = taken {
            members.push((step.index, p, replanned));
        }
    }
    let rest: Vec<(&dyn Resource, &Planned)> = members
        .iter()
        .map(|(j, p, _)| (&*resources[*j].imp, p))
        .collect();
    let mut results = resources[i].imp.apply_batch(planned, &rest, cx).into_iter();
    let first = results
        .next()
        .unwrap_or_else(|| Err(RunError::precondition("a batch returned no outcome")));
    for ((j, planned, replanned), result) in members.into_iter().zip(results) {
        let carried = Carried {
            planned,
            result,
            replanned,
        };
        batched.insert(j, carried);
    }
    first
}
