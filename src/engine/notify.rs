//! Notifications, as a run fires them: an immediate one right after the
//! change that fires it, a delayed one at the end, once. The plan
//! resolved whom each step notifies and checked each notified action; a
//! real run checks it again when it fires (the target has changed by
//! then), and says so where that check differs from the plan.

use std::collections::VecDeque;

use super::apply::{Delayed, Walk};
use super::compile::Timing;
use super::plan::{self, Notice, Step};
use super::report::{ResourceReport, Status};

impl Walk<'_, '_, '_> {
    /// Fires the notifications of resource `i`, which just changed: the
    /// immediate ones now, the delayed ones into `delayed`. True when an
    /// immediate one failed, which stops the run.
    pub(super) fn notify_all(
        &mut self,
        i: usize,
        notices: &[Notice],
        delayed: &mut Delayed,
    ) -> bool {
        let mut stopped = false;
        for n in notices {
            match n.timing {
                Timing::Immediately => {
                    let label = format!("{} (notified by {})", n.action, self.policy.shown_id(i));
                    let e = self.notify(n, &label);
                    stopped |= e.status == Status::Failed;
                    self.out.emit(e);
                }
                Timing::Delayed => delayed.push(n),
            }
        }
        stopped
    }

    /// A notified action: as the plan checked it (why-run), or checked now
    /// and carried out. It honours the resource's guards, as in Chef, and
    /// goes alone, never in a batch.
    pub(super) fn notify(&mut self, n: &Notice, label: &str) -> ResourceReport {
        let idx = n.target;
        let r = &self.policy.resources[idx];
        let mut entry = ResourceReport::new(self.policy, idx);
        entry.note = Some(label.to_string());
        // Put back below: carrying out borrows the whole walk.
        let notified = std::mem::take(&mut self.notified);
        let planned = n.check.and_then(|c| notified.get(c));
        let now = match &mut self.cx {
            Some(cx) => {
                let action = std::slice::from_ref(&n.action);
                let now = plan::recheck(self.policy, idx, action, cx);
                entry.replanned = planned.is_none_or(|p| !p.same_as(&now));
                Some(now)
            }
            None => None,
        };
        match now.as_ref().or(planned) {
            // Why-run fires only what the plan fires, which it checked.
            None => {
                entry.status = Status::Skipped;
                entry.changes.push("not in the plan".into());
            }
            Some(step) => self.fire(&mut entry, step),
        }
        self.notified = notified;
        if entry.status == Status::Failed && r.ignore_failure {
            entry.status = Status::FailedIgnored;
        }
        entry
    }

    /// Records (and carries out, unless why-run) a notified action's check.
    fn fire(&mut self, entry: &mut ResourceReport, step: &Step) {
        if let Some(g) = &step.guard {
            entry.status = Status::Skipped;
            entry.changes.push(format!("skipped: {g}"));
            return;
        }
        match step.actions.first() {
            None => entry.status = Status::UpToDate,
            Some(Err(e)) => entry.fail(e.to_string()),
            Some(Ok(planned)) => {
                if !entry.record(planned) {
                    entry.status = if planned.is_empty() {
                        Status::UpToDate
                    } else {
                        Status::Skipped
                    };
                } else {
                    entry.status = match self.carry(step.index, planned, &mut VecDeque::new()) {
                        None => Status::WouldUpdate,
                        Some(Ok(())) => Status::Updated,
                        Some(Err(e)) => {
                            entry.fail(e.to_string());
                            Status::Failed
                        }
                    };
                }
            }
        }
    }
}
