//! Plan, then apply. The plan is every resource's typed difference,
//! computed against the state read before anything changes; `--why-run`
//! walks it and reports, a real run walks it and carries each difference
//! out. Once a resource has changed the target, later ones are checked
//! again just before they apply, since their state may have moved.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::compile::{Compiled, Policy, Timing};
use super::report::{Report, ResourceReport, Status};
use crate::error::RunError;
use crate::platform::pins::{self, PinMode, Substitution};
use crate::platform::target::{ShellOpts, Target};
use crate::resource::{Change, Context, Planned, Resource, ResourceResult};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub why_run: bool,
    /// What to do with a pin no source offers.
    pub pins: PinMode,
}

/// What one resource would do.
#[derive(Debug)]
pub struct Step {
    /// Why the resource is skipped (a guard), if it is.
    pub guard: Option<String>,
    pub actions: Vec<ResourceResult<Planned>>,
    /// Time spent reading state and running guards.
    pub took: Duration,
}

/// Every resource's difference from the target, in policy order.
#[derive(Debug)]
pub struct Plan<'p> {
    pub policy: &'p Policy,
    pub steps: Vec<Step>,
}

impl Plan<'_> {
    /// The plan for machines: per resource, the guard that skips it or
    /// each action's typed difference (or why it could not be checked).
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .policy
            .resources
            .iter()
            .zip(&self.steps)
            .enumerate()
            .map(|(i, (_, step))| {
                let actions: Vec<serde_json::Value> = step
                    .actions
                    .iter()
                    .map(|a| match a {
                        Ok(p) => p.to_json(),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    })
                    .map(|mut a| {
                        if self.policy.hides_content(&self.policy.resources[i]) {
                            hide_diffs(&mut a);
                        }
                        crate::secrets::redact::json(&mut a);
                        a
                    })
                    .collect();
                serde_json::json!({
                    "resource": self.policy.shown_id(i),
                    "guard": step.guard,
                    "actions": actions,
                })
            })
            .collect();
        serde_json::Value::Array(steps)
    }
}

/// Withholds every diff of a planned difference, as
/// [`ResourceReport::redact`] does for a path that held a secret.
fn hide_diffs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Array(a) => a.iter_mut().for_each(hide_diffs),
        serde_json::Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "diff" && x.is_string() {
                    *x = crate::resource::fsmeta::SUPPRESSED.into();
                } else {
                    hide_diffs(x);
                }
            }
        }
        _ => {}
    }
}

/// Plans every resource of `policy` against the target as it is now.
pub fn plan<'p>(policy: &'p Policy, cx: &mut Context) -> Plan<'p> {
    let known = guards_in_parallel(policy, cx.target);
    let steps = policy
        .resources
        .iter()
        .map(|r| plan_one(r, cx, &known))
        .collect();
    Plan { policy, steps }
}

fn plan_one(r: &Compiled, cx: &mut Context, known: &Guards) -> Step {
    let start = Instant::now();
    if let Some(g) = guard(r, cx.target, known) {
        return Step {
            guard: Some(g),
            actions: vec![],
            took: start.elapsed(),
        };
    }
    let actions = r.actions.iter().map(|a| r.imp.plan(a, cx)).collect();
    Step {
        guard: None,
        actions,
        took: start.elapsed(),
    }
}

/// Guard commands already run, with their verdicts.
type Guards = HashMap<String, bool>;

fn run_guard(target: &Target, cmd: &str) -> bool {
    target
        .shell(cmd, &ShellOpts::default())
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs every distinct guard of the policy at once, before planning: they
/// only read state, and a no-op run is mostly waiting on them.
fn guards_in_parallel(policy: &Policy, target: &Target) -> Guards {
    let mut cmds: Vec<&str> = policy
        .resources
        .iter()
        .flat_map(|r| r.only_if.iter().chain(r.not_if.iter()))
        .map(String::as_str)
        .collect();
    cmds.sort_unstable();
    cmds.dedup();
    std::thread::scope(|s| {
        let handles: Vec<_> = cmds
            .iter()
            .map(|c| s.spawn(move || (c.to_string(), run_guard(target, c))))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// `only_if` / `not_if`: a command on the target whose exit 0 means true.
fn guard(r: &Compiled, target: &Target, known: &Guards) -> Option<String> {
    let ok = |cmd: &str| {
        known
            .get(cmd)
            .copied()
            .unwrap_or_else(|| run_guard(target, cmd))
    };
    if let Some(c) = &r.only_if
        && !ok(c)
    {
        return Some("only_if false".into());
    }
    if let Some(c) = &r.not_if
        && ok(c)
    {
        return Some("not_if true".into());
    }
    None
}

/// Converges `target` to `policy`, calling `progress` as each resource
/// finishes: plans, then walks the plan, carrying it out unless why-run.
pub fn converge(
    target: &Target,
    policy: &Policy,
    opts: &Options,
    progress: &mut dyn FnMut(&ResourceReport),
) -> Report {
    let started = Instant::now();
    let mut cx = Context::new(target);
    let mut report = Report::new(target, policy, opts.why_run);
    report.pin_mode = opts.pins;
    match pins_in_force(policy, &mut cx, opts) {
        Ok(subs) => {
            cx.substitutes = subs
                .iter()
                .map(|s| (s.package.clone(), s.substitute.clone()))
                .collect();
            report.substitutions = subs;
        }
        Err((failed, e)) => {
            // Refused before anything changed: each package that was to
            // move fails, as its apt transaction would have as a whole.
            for i in failed {
                let mut entry = ResourceReport::new(policy, i);
                entry.fail(e.to_string());
                entry.redact();
                progress(&entry);
                report.push(entry);
            }
            report.finish(started.elapsed());
            return report;
        }
    }
    let plan = plan(policy, &mut cx);
    let mut walk = Walk {
        policy: plan.policy,
        cx,
        carry_out: !opts.why_run,
        dirty: false,
        batched: HashMap::new(),
    };
    walk.run(plan, &mut report, progress);
    if !opts.why_run {
        report.settle_sensitive_paths(policy);
    }
    report.finish(started.elapsed());
    report
}

/// Before the plan: every pin this run installs is offered by the target's
/// sources, or (as `opts.pins` allows) stood in for by what they offer.
/// Packages already at their pins start no process. On refusal, the index
/// of the first package resource concerned, with the reason.
fn pins_in_force(
    policy: &Policy,
    cx: &mut Context,
    opts: &Options,
) -> Result<Vec<Substitution>, (Vec<usize>, RunError)> {
    let all = policy.install_pins();
    // A source the policy adds on the way may carry a pin: production
    // leaves the check to each package's own turn (still before apt runs).
    let adds_sources =
        (policy.resources.iter()).any(|r| r.id.kind == crate::resource::apt_repository::TYPE.name);
    if all.is_empty() || (opts.pins == PinMode::Strict && adds_sources) {
        return Ok(Vec::new());
    }
    // The no-op path: read the database the plan reads anyway, copy nothing.
    let wanted: Vec<(String, String)> = {
        let dpkg = cx.dpkg();
        all.into_iter()
            .filter(|(n, v)| dpkg.installed(n).is_none_or(|i| &i.version != v))
            .collect()
    };
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let dpkg = cx.dpkg().clone();
    let installed = |n: &str| dpkg.installed(n).map(|i| i.version.clone());
    let fb = policy.fallback.as_deref();
    let sources = pins::Sources {
        fallback: fb.map(|f| &f.fallback),
        repo: fb.map_or(std::path::Path::new("."), |f| f.repo.as_path()),
        change: !opts.why_run,
        defer_unknown: true,
    };
    pins::ensure(cx.target, &wanted, &installed, &sources, opts.pins).map_err(|e| {
        let mut failed: Vec<usize> = Vec::new();
        for (i, r) in policy.resources.iter().enumerate() {
            let moves = r.id.kind == crate::resource::package::TYPE.name
                && wanted.iter().any(|(n, _)| n == &r.id.name);
            if moves && !failed.iter().any(|&j| policy.resources[j].id == r.id) {
                failed.push(i);
            }
        }
        (failed, e)
    })
}

/// A package applied with an earlier one's transaction: its plan and outcome.
type Carried = (Planned, ResourceResult<()>);

/// One pass over a plan.
struct Walk<'p, 't> {
    policy: &'p Policy,
    cx: Context<'t>,
    /// False for why-run: differences are reported, not carried out.
    carry_out: bool,
    /// Something on the target changed since the plan was made.
    dirty: bool,
    batched: HashMap<usize, Carried>,
}

impl Walk<'_, '_> {
    fn run(&mut self, plan: Plan, report: &mut Report, progress: &mut dyn FnMut(&ResourceReport)) {
        let policy = self.policy;
        let mut delayed: Vec<(usize, String)> = Vec::new();
        for (i, (r, step)) in policy.resources.iter().zip(plan.steps).enumerate() {
            let (mut entry, loud) = self.resource(i, r, step);
            let failed = entry.status == Status::Failed;
            // Updated, by a change that is news to the resources it notifies.
            let changed = loud && matches!(entry.status, Status::Updated | Status::WouldUpdate);
            if failed && r.ignore_failure {
                entry.status = Status::FailedIgnored;
            }
            entry.redact();
            progress(&entry);
            report.push(entry);
            if failed && !r.ignore_failure {
                // The rest of a failed apt transaction is reported package by package.
                let mut rest: Vec<_> = self.batched.drain().collect();
                rest.sort_by_key(|(j, _)| *j);
                for (j, (planned, result)) in rest {
                    let mut e = ResourceReport::new(policy, j);
                    record(&mut e, &planned);
                    match result {
                        Ok(()) => e.status = Status::Updated,
                        Err(err) => e.fail(err.to_string()),
                    }
                    e.redact();
                    progress(&e);
                    report.push(e);
                }
                break;
            }
            if !changed {
                continue;
            }
            let mut stopped = false;
            for n in &r.notifies {
                match n.timing {
                    Timing::Immediately => {
                        let label = format!("{} (notified by {})", n.action, policy.shown_id(i));
                        let mut e = self.notify(n.target, &n.action, &label);
                        e.redact();
                        stopped |= e.status == Status::Failed;
                        progress(&e);
                        report.push(e);
                    }
                    Timing::Delayed => {
                        if !delayed
                            .iter()
                            .any(|(t, a)| *t == n.target && *a == n.action)
                        {
                            delayed.push((n.target, n.action.clone()));
                        }
                    }
                }
            }
            if stopped {
                break;
            }
        }
        // Delayed notifications run at the end, once each, even after a failure
        // of an unrelated resource (as Chef does), so a changed config is not left unapplied.
        for (t, action) in delayed {
            let label = format!("{action} (delayed notification)");
            let mut e = self.notify(t, &action, &label);
            e.redact();
            progress(&e);
            report.push(e);
        }
    }

    /// Walks one resource's step: re-planned if the target changed since.
    /// Also says whether a change that fires notifications was carried out
    /// (or would be, in why-run): see [`crate::resource::Item::notifies`].
    fn resource(&mut self, i: usize, r: &Compiled, step: Step) -> (ResourceReport, bool) {
        let mut entry = ResourceReport::new(self.policy, i);
        if let Some((planned, result)) = self.batched.remove(&i) {
            // Carried out already, with an earlier package's transaction.
            self.dirty = true;
            record(&mut entry, &planned);
            match result {
                Ok(()) => entry.status = Status::Updated,
                Err(e) => entry.fail(e.to_string()),
            }
            return (entry, planned.notifies());
        }
        let step = if self.dirty {
            // The target changed since the guards ran: ask again.
            plan_one(r, &mut self.cx, &Guards::new())
        } else {
            step
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
            // A second action on a resource that just changed sees the new state.
            let checked = if applied && k > 0 {
                r.imp.plan(name, &mut self.cx)
            } else {
                checked
            };
            let planned = match checked {
                Err(e) => {
                    entry.fail(e.to_string());
                    break;
                }
                Ok(p) => p,
            };
            if !record(&mut entry, &planned) {
                continue;
            }
            would = true;
            loud |= planned.notifies();
            match self.carry(i, r, &planned) {
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

    /// Carries out one planned difference (with the batch it starts, for a
    /// type that batches); `None` in why-run, where nothing is carried out.
    fn carry(&mut self, i: usize, r: &Compiled, planned: &Planned) -> Option<ResourceResult<()>> {
        if !self.carry_out {
            return None;
        }
        let result = match r.imp.batch_key() {
            Some(_) => self.batch(i, planned),
            None => r.imp.apply_plan(planned, &mut self.cx),
        };
        self.dirty = true;
        self.cx.invalidate();
        Some(result)
    }

    /// Applies resource `i` together with the resources right after it of
    /// the same batch key that need a change. Returns `i`'s outcome and
    /// keeps the others' for when the walk reaches them.
    fn batch(&mut self, i: usize, planned: &Planned) -> ResourceResult<()> {
        let resources = &self.policy.resources;
        let key = resources[i].imp.batch_key();
        let mut members: Vec<(usize, Planned)> = Vec::new();
        for (j, r) in resources.iter().enumerate().skip(i + 1) {
            // A member with guards or several actions goes alone.
            let simple = r.imp.batch_key() == key
                && r.only_if.is_none()
                && r.not_if.is_none()
                && r.actions.len() == 1;
            if !simple {
                break;
            }
            match r.imp.plan(&r.actions[0], &mut self.cx) {
                Ok(p) if p.is_real() => members.push((j, p)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let rest: Vec<(&dyn Resource, &Planned)> = members
            .iter()
            .map(|(j, p)| (&*resources[*j].imp, p))
            .collect();
        let mut results = resources[i]
            .imp
            .apply_batch(planned, &rest, &mut self.cx)
            .into_iter();
        let first = results
            .next()
            .unwrap_or_else(|| Err(RunError::precondition("a batch returned no outcome")));
        for ((j, p), result) in members.into_iter().zip(results) {
            self.batched.insert(j, (p, result));
        }
        first
    }

    /// A notified action, checked now and carried out (unless why-run).
    fn notify(&mut self, idx: usize, action: &str, label: &str) -> ResourceReport {
        let r = &self.policy.resources[idx];
        let mut entry = ResourceReport::new(self.policy, idx);
        entry.note = Some(label.to_string());
        // A notified action honours the resource's guards, as in Chef.
        if let Some(g) = guard(r, self.cx.target, &Guards::new()) {
            entry.status = Status::Skipped;
            entry.changes.push(format!("skipped: {g}"));
            return entry;
        }
        match r.imp.plan(action, &mut self.cx) {
            Err(e) => entry.fail(e.to_string()),
            Ok(planned) => {
                if !record(&mut entry, &planned) {
                    entry.status = if planned.is_empty() {
                        Status::UpToDate
                    } else {
                        Status::Skipped
                    };
                } else {
                    entry.status = match self.carry(idx, r, &planned) {
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
        if entry.status == Status::Failed && r.ignore_failure {
            entry.status = Status::FailedIgnored;
        }
        entry
    }
}

/// Records a plan's changes; true when any is a real change.
fn record(entry: &mut ResourceReport, planned: &Planned) -> bool {
    let mut real = false;
    for c in &planned.changes {
        let Change {
            summary,
            diff,
            skipped,
            ..
        } = c;
        if !*skipped {
            real = true;
            entry.actions.push(planned.action.to_string());
            if let Some(d) = diff {
                entry.diff.get_or_insert_with(String::new).push_str(d);
            }
        }
        entry.changes.push(summary.clone());
    }
    entry.actions.dedup();
    real
}
