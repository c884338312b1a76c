//! Plan, then apply: the plan is computed against the state read before
//! anything changes; once a resource has changed the target, later ones are
//! checked again just before they apply, since their state may have moved.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::compile::{Compiled, Policy, Timing};
use super::report::{Report, ResourceReport, Status};
use crate::platform::target::{ShellOpts, Target};
use crate::resource::package::apply_batch;
use crate::resource::{Change, Context};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub why_run: bool,
}

/// What one resource would do, as planned.
struct Planned {
    /// Why the resource is skipped (a guard), if it is.
    guard: Option<String>,
    actions: Vec<(String, Result<Vec<Change>, String>)>,
    /// Time spent reading state and running guards.
    took: Duration,
}

fn plan_one(r: &Compiled, cx: &mut Context, known: &Guards) -> Planned {
    let start = Instant::now();
    if let Some(g) = guard(r, cx.target, known) {
        return Planned {
            guard: Some(g),
            actions: vec![],
            took: start.elapsed(),
        };
    }
    let actions = r
        .actions
        .iter()
        .map(|a| (a.clone(), r.imp.check(a, cx)))
        .collect();
    Planned {
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

/// Converges `target` to `policy`, calling `progress` as each resource finishes.
pub fn converge(
    target: &Target,
    policy: &Policy,
    opts: &Options,
    progress: &mut dyn FnMut(&ResourceReport),
) -> Report {
    let started = Instant::now();
    let mut cx = Context::new(target);
    let mut report = Report::new(target, policy, opts.why_run);

    // Plan: every resource against the state as it is now.
    let known = guards_in_parallel(policy, target);
    let plans: Vec<Planned> = policy
        .resources
        .iter()
        .map(|r| plan_one(r, &mut cx, &known))
        .collect();

    let mut dirty = false;
    let mut delayed: Vec<(usize, String)> = Vec::new();
    let mut stopped = false;
    // Packages carried out with an earlier one's transaction: their changes and outcome.
    let mut batched: HashMap<usize, (Vec<Change>, Result<(), String>)> = HashMap::new();
    for (i, (r, planned)) in policy.resources.iter().zip(plans).enumerate() {
        let carried = batched.remove(&i);
        let already_applied = carried.is_some();
        let planned = if let Some((changes, result)) = carried {
            dirty = true;
            Planned {
                guard: None,
                actions: vec![(r.actions[0].clone(), result.map(|()| changes))],
                took: Duration::ZERO,
            }
        } else if dirty && !opts.why_run {
            // The target changed since the guards ran: ask again.
            plan_one(r, &mut cx, &Guards::new())
        } else {
            planned
        };
        let applying = Instant::now();
        let mut entry = ResourceReport::new(r);
        entry.elapsed_ms = planned.took.as_secs_f64() * 1000.0;
        if let Some(g) = planned.guard {
            entry.status = Status::Skipped;
            entry.changes.push(format!("skipped: {g}"));
            progress(&entry);
            report.push(entry);
            continue;
        }
        let mut changed = false;
        for (k, (action, checked)) in planned.actions.into_iter().enumerate() {
            // A second action on a resource that just changed sees the new state.
            let checked = if changed && k > 0 && !opts.why_run {
                r.imp.check(&action, &mut cx)
            } else {
                checked
            };
            match checked {
                Err(e) => {
                    entry.fail(e);
                    break;
                }
                Ok(changes) => {
                    let real = record(&mut entry, &action, &changes);
                    if !real {
                        continue;
                    }
                    if opts.why_run || already_applied {
                        changed = true;
                        continue;
                    }
                    let result = if r.imp.package().is_some() {
                        let (first, rest) = package_batch(policy, i, &action, &mut cx);
                        batched.extend(rest);
                        first
                    } else {
                        r.imp.apply(&action, &mut cx)
                    };
                    match result {
                        Ok(()) => {
                            changed = true;
                            dirty = true;
                            cx.invalidate();
                        }
                        Err(e) => {
                            cx.invalidate();
                            dirty = true;
                            entry.fail(e);
                            break;
                        }
                    }
                }
            }
        }
        if entry.status != Status::Failed {
            entry.status = match (changed, opts.why_run) {
                (true, true) => Status::WouldUpdate,
                (true, false) => Status::Updated,
                _ if entry.changes.is_empty() => Status::UpToDate,
                _ => Status::Skipped,
            };
        }
        entry.elapsed_ms += applying.elapsed().as_secs_f64() * 1000.0;
        let failed = entry.status == Status::Failed;
        if failed && r.ignore_failure {
            entry.status = Status::FailedIgnored;
        }
        progress(&entry);
        report.push(entry);
        if failed && !r.ignore_failure {
            // The rest of a failed apt transaction is reported package by package.
            let mut rest: Vec<_> = batched.drain().collect();
            rest.sort_by_key(|(j, _)| *j);
            for (j, (changes, result)) in rest {
                let mut e = ResourceReport::new(&policy.resources[j]);
                record(&mut e, &policy.resources[j].actions[0], &changes);
                match result {
                    Ok(()) => e.status = Status::Updated,
                    Err(err) => e.fail(err),
                }
                progress(&e);
                report.push(e);
            }
            break;
        }
        if changed {
            for n in &r.notifies {
                let label = format!("{} (notified by {})", n.action, r.id);
                match n.timing {
                    Timing::Immediately => {
                        let e = notify(policy, n.target, &n.action, &label, &mut cx, opts);
                        if e.status == Status::Updated {
                            dirty = true;
                        }
                        let fatal = e.status == Status::Failed;
                        progress(&e);
                        report.push(e);
                        if fatal {
                            stopped = true;
                        }
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
        }
        if stopped {
            break;
        }
    }
    // Delayed notifications run at the end, once each, even after a failure
    // of an unrelated resource (as Chef does), so a changed config is not left unapplied.
    for (t, action) in delayed {
        let label = format!("{action} (delayed notification)");
        let e = notify(policy, t, &action, &label, &mut cx, opts);
        progress(&e);
        report.push(e);
    }
    report.finish(started.elapsed());
    report
}

/// Applies the package at `i` together with the packages right after it
/// that need a change, in one transaction. Returns `i`'s outcome, and the
/// changes and outcome of each other package it carried.
#[allow(clippy::type_complexity)]
fn package_batch(
    policy: &Policy,
    i: usize,
    action: &str,
    cx: &mut Context,
) -> (
    Result<(), String>,
    Vec<(usize, (Vec<Change>, Result<(), String>))>,
) {
    let mut members: Vec<(usize, String, Vec<Change>)> = vec![(i, action.to_string(), vec![])];
    for (j, r) in policy.resources.iter().enumerate().skip(i + 1) {
        // A package with guards or several actions goes alone.
        let simple = r.imp.package().is_some()
            && r.only_if.is_none()
            && r.not_if.is_none()
            && r.actions.len() == 1;
        if !simple {
            break;
        }
        match r.imp.check(&r.actions[0], cx) {
            Ok(c) if c.iter().any(|c| !c.skipped) => members.push((j, r.actions[0].clone(), c)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let items: Vec<(&crate::resource::package::Package, &str)> = members
        .iter()
        .map(|(j, a, _)| {
            let p = policy.resources[*j].imp.package().expect("package");
            (p, a.as_str())
        })
        .collect();
    let mut results = apply_batch(&items, cx).into_iter();
    let first = results.next().expect("one result per item");
    let rest = members
        .into_iter()
        .skip(1)
        .zip(results)
        .map(|((j, _, changes), r)| (j, (changes, r)))
        .collect();
    (first, rest)
}

/// Records an action's changes; true when any is a real change.
fn record(entry: &mut ResourceReport, action: &str, changes: &[Change]) -> bool {
    let mut real = false;
    for c in changes {
        if c.skipped {
            entry.changes.push(c.summary.clone());
        } else {
            real = true;
            entry.actions.push(action.to_string());
            entry.changes.push(c.summary.clone());
            if let Some(d) = &c.diff {
                entry.diff.get_or_insert_with(String::new).push_str(d);
            }
        }
    }
    entry.actions.dedup();
    real
}

fn notify(
    policy: &Policy,
    idx: usize,
    action: &str,
    label: &str,
    cx: &mut Context,
    opts: &Options,
) -> ResourceReport {
    let r = &policy.resources[idx];
    let mut entry = ResourceReport::new(r);
    entry.note = Some(label.to_string());
    // A notified action honours the resource's guards, as in Chef.
    if let Some(g) = guard(r, cx.target, &Guards::new()) {
        entry.status = Status::Skipped;
        entry.changes.push(format!("skipped: {g}"));
        return entry;
    }
    match r.imp.check(action, cx) {
        Err(e) => entry.fail(e),
        Ok(changes) => {
            if !record(&mut entry, action, &changes) {
                entry.status = if changes.is_empty() {
                    Status::UpToDate
                } else {
                    Status::Skipped
                };
            } else if opts.why_run {
                entry.status = Status::WouldUpdate;
            } else {
                match r.imp.apply(action, cx) {
                    Ok(()) => entry.status = Status::Updated,
                    Err(e) => entry.fail(e),
                }
                cx.invalidate();
            }
        }
    }
    if entry.status == Status::Failed && r.ignore_failure {
        entry.status = Status::FailedIgnored;
    }
    entry
}
