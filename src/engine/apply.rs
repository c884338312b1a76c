//! Carrying out a plan: its steps in policy order, each reported as it
//! ends, stopping at the first failure a resource does not ignore. A
//! why-run walks the same plan with no target: it reports what the plan
//! says and can neither read nor change anything. In a real run, once a
//! step has changed the target, each later one is checked again before it
//! applies; where that check differs from the plan, the entry says so
//! (`replanned`).

use std::collections::VecDeque;
use std::time::Instant;

use super::batch::{self, Batched};
use super::compile::{Compiled, Policy};
use super::plan::{self, Notice, Plan, Step, same};
use super::report::{Pending, Report, ResourceReport, Sink, Status};
use crate::resource::{Context, Planned, ResourceResult};

/// Carries out `plan` on `cx`'s target, or renders it when `cx` is None
/// (why-run), pushing every entry to `report` and `progress`.
pub fn execute(
    plan: Plan,
    policy: &Policy,
    cx: Option<Context>,
    part: &Part,
    report: &mut Report,
    progress: &mut dyn FnMut(&ResourceReport),
) {
    let mut walk = Walk {
        policy,
        cx,
        dirty: false,
        batched: Batched::new(),
        notified: plan.notified,
        out: Sink { report, progress },
    };
    walk.run(plan.steps.into(), part);
}

/// One part of a converge that `kiln test` carries out in several
/// processes, keeping the target's tree after each (a checkpoint). A part
/// runs the resources up to `until` (all when None) and leaves the delayed
/// notifications fired so far to the next part, which starts with them:
/// together the parts fire what one run would, in the same order.
#[derive(Debug, Clone, Default)]
pub struct Part {
    pub until: Option<usize>,
    pub pending: Vec<Pending>,
}

/// One pass over a plan.
pub(super) struct Walk<'p, 't, 'o> {
    pub(super) policy: &'p Policy,
    /// The target, in a real run; None in why-run.
    pub(super) cx: Option<Context<'t>>,
    /// Something on the target changed since the plan was made.
    pub(super) dirty: bool,
    batched: Batched,
    /// The plan's checks of notified actions.
    pub(super) notified: Vec<Step>,
    pub(super) out: Sink<'o>,
}

impl Walk<'_, '_, '_> {
    fn run(&mut self, mut steps: VecDeque<Step>, part: &Part) {
        let policy = self.policy;
        let mut delayed = Delayed::default();
        for p in part
            .pending
            .iter()
            .filter(|p| p.resource < policy.resources.len())
        {
            delayed.push(&Notice {
                target: p.resource,
                resource: policy.shown_id(p.resource),
                action: p.action.clone(),
                timing: super::compile::Timing::Delayed,
                check: None,
            });
        }
        while let Some(mut step) = steps.pop_front() {
            let i = step.index;
            if part.until.is_some_and(|u| i > u) {
                // The end of this part: the next one runs what is left.
                self.out.report.pending = (delayed.drain())
                    .map(|n| Pending {
                        resource: n.target,
                        action: n.action,
                    })
                    .collect();
                return;
            }
            let r = &policy.resources[i];
            let notices = std::mem::take(&mut step.notifies);
            let (mut entry, loud) = self.resource(r, step, &mut steps);
            let failed = entry.status == Status::Failed;
            // Updated, by a change that is news to the resources it notifies.
            let changed = loud && matches!(entry.status, Status::Updated | Status::WouldUpdate);
            if failed && r.ignore_failure {
                entry.status = Status::FailedIgnored;
            }
            self.out.emit(entry);
            if failed && !r.ignore_failure {
                self.report_rest_of_batch();
                break;
            }
            if changed && self.notify_all(i, &notices, &mut delayed) {
                break;
            }
        }
        // Delayed notifications run at the end, once each, even after a failure
        // of an unrelated resource (as Chef does), so a changed config is not left unapplied.
        for n in delayed.drain() {
            let label = format!("{} (delayed notification)", n.action);
            let entry = self.notify(&n, &label);
            self.out.emit(entry);
        }
    }

    /// The rest of a failed apt transaction, reported package by package.
    fn report_rest_of_batch(&mut self) {
        let mut rest: Vec<_> = self.batched.drain().collect();
        rest.sort_by_key(|(j, _)| *j);
        for (j, c) in rest {
            let e = c.entry(self.policy, j);
            self.out.emit(e);
        }
    }

    /// Carries out (or renders) one step; checked again first if the
    /// target changed since the plan. Also says whether a change that
    /// fires notifications was carried out (or would be, in why-run):
    /// see [`crate::resource::Item::notifies`].
    fn resource(
        &mut self,
        r: &Compiled,
        step: Step,
        ahead: &mut VecDeque<Step>,
    ) -> (ResourceReport, bool) {
        let i = step.index;
        if let Some(c) = self.batched.remove(&i) {
            // Carried out already, with an earlier package's transaction.
            let loud = c.planned.notifies();
            return (c.entry(self.policy, i), loud);
        }
        let mut entry = ResourceReport::new(self.policy, i);
        let step = match &mut self.cx {
            Some(cx) if self.dirty => {
                // The target changed since the guards ran: ask again.
                let now = plan::recheck(self.policy, i, &r.actions, cx);
                entry.replanned = !now.same_as(&step);
                now
            }
            _ => step,
        };
        let applying = Instant::now();
        entry.elapsed_ms = step.took.as_secs_f64() * 1000.0;
        if let Some(g) = step.guard {
            entry.status = Status::Skipped;
            entry.changes.push(format!("skipped: {g}"));
            return (entry, false);
        }
        let (mut would, mut applied, mut loud) = (false, false, false);
        for (k, (checked, name)) in step.actions.into_iter().zip(&r.actions).enumerate() {
            let checked = match &mut self.cx {
                // A second action on a resource that just changed sees the new state.
                Some(cx) if applied && k > 0 => {
                    let now = r.imp.plan(name, cx);
                    entry.replanned |= !same(&checked, &now);
                    now
                }
                _ => checked,
            };
            let planned = match checked {
                Err(e) => {
                    entry.fail(e.to_string());
                    break;
                }
                Ok(p) => p,
            };
            if !entry.record(&planned) {
                continue;
            }
            would = true;
            loud |= planned.notifies();
            match self.carry(i, &planned, ahead) {
                None => {}
                Some(Ok(())) => applied = true,
                Some(Err(e)) => {
                    entry.fail(e.to_string());
                    break;
                }
            }
        }
        if entry.status != Status::Failed {
            entry.status = if applied {
                Status::Updated
            } else if would {
                Status::WouldUpdate
            } else if entry.changes.is_empty() {
                Status::UpToDate
            } else {
                Status::Skipped
            };
        }
        entry.elapsed_ms += applying.elapsed().as_secs_f64() * 1000.0;
        (entry, loud)
    }

    /// Carries out one planned difference of resource `i` (with the batch
    /// it starts, for a type that batches, from the steps `ahead`); `None`
    /// in why-run, where nothing is carried out.
    pub(super) fn carry(
        &mut self,
        i: usize,
        planned: &Planned,
        ahead: &mut VecDeque<Step>,
    ) -> Option<ResourceResult<()>> {
        let cx = self.cx.as_mut()?;
        let resources = &self.policy.resources;
        let result = match resources[i].imp.batch_key() {
            Some(_) => batch::apply(
                resources,
                i,
                planned,
                ahead,
                self.dirty,
                cx,
                &mut self.batched,
            ),
            None => resources[i].imp.apply_plan(planned, cx),
        };
        self.dirty = true;
        cx.invalidate();
        Some(result)
    }
}

/// Delayed notifications fired so far, once each, in order.
#[derive(Default)]
pub struct Delayed(Vec<Notice>);

impl Delayed {
    pub(super) fn push(&mut self, n: &Notice) {
        match (self.0.iter_mut()).find(|o| o.target == n.target && o.action == n.action) {
            // Fired by a step the plan did not see firing, and then by one
            // it did: the plan's check is the one to compare with.
            Some(o) => o.check = o.check.or(n.check),
            None => self.0.push(n.clone()),
        }
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Notice> + use<> {
        std::mem::take(&mut self.0).into_iter()
    }
}
