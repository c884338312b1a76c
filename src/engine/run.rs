//! One run on a target: pins in force, then the plan, then the plan
//! rendered (why-run) or carried out, into one report.

use std::time::Instant;

use super::apply::{self, Part};
use super::compile::Policy;
use super::plan::plan;
use super::report::{Report, ResourceReport, Sink};
use crate::error::RunError;
use crate::platform::pins::{self, PinMode, Substitution};
use crate::platform::target::Target;
use crate::resource::Context;

/// Pins refused before the plan: the first resource of each package
/// concerned, and why.
struct Refused {
    packages: Vec<usize>,
    error: RunError,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub why_run: bool,
    /// What to do with a pin no source offers.
    pub pins: PinMode,
    /// Where this run starts and stops, when it is one part of a converge.
    pub part: Part,
}

/// Converges `target` to `policy`, calling `progress` as each resource
/// finishes: plans, then carries the plan out, or renders it (why-run:
/// the report then holds the plan too).
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
        Err(Refused { packages, error }) => {
            // Refused before anything changed: each package that was to
            // move fails, as its apt transaction would have as a whole.
            let mut out = Sink {
                report: &mut report,
                progress,
            };
            for i in packages {
                let mut entry = ResourceReport::new(policy, i);
                entry.fail(error.to_string());
                out.emit(entry);
            }
            report.finish(started.elapsed());
            return report;
        }
    }
    let plan = plan(policy, &mut cx);
    if opts.why_run {
        report.plan = Some(plan.to_json());
    }
    let cx = (!opts.why_run).then_some(cx);
    apply::execute(plan, policy, cx, &opts.part, &mut report, progress);
    if !opts.why_run {
        report.settle_sensitive_paths(policy);
    }
    report.finish(started.elapsed());
    report
}

/// Before the plan: every pin this run installs is offered by the target's
/// sources, or (as `opts.pins` allows) stood in for by what they offer.
/// Packages already at their pins start no process.
fn pins_in_force(
    policy: &Policy,
    cx: &mut Context,
    opts: &Options,
) -> Result<Vec<Substitution>, Refused> {
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
    pins::ensure(cx.target, &wanted, &installed, &sources, opts.pins).map_err(|error| {
        let mut failed: Vec<usize> = Vec::new();
        for (i, r) in policy.resources.iter().enumerate() {
            let moves = r.id.kind == crate::resource::package::TYPE.name
                && wanted.iter().any(|(n, _)| n == &r.id.name);
            if moves && !failed.iter().any(|&j| policy.resources[j].id == r.id) {
                failed.push(i);
            }
        }
        Refused {
            packages: failed,
            error,
        }
    })
}
