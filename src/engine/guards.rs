//! `only_if` / `not_if`: commands on the target whose exit 0 means true.
//! The plan runs every distinct one once, in parallel; a run asks again
//! only where the target changed since.

use std::collections::HashMap;

use super::compile::Compiled;
use crate::platform::target::{ShellOpts, Target};

/// Guard commands already run, with their verdicts.
pub type Guards = HashMap<String, bool>;

fn run_guard(target: &Target, cmd: &str) -> bool {
    target
        .shell(cmd, &ShellOpts::default())
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs every distinct guard of `resources` at once, before planning: they
/// only read state, and a no-op run is mostly waiting on them.
pub fn in_parallel(resources: &[Compiled], target: &Target) -> Guards {
    let mut cmds: Vec<&str> = resources
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

/// Why `r` is skipped, if a guard says so: a verdict in `known`, else the
/// command run now.
pub fn skips(r: &Compiled, target: &Target, known: &Guards) -> Option<String> {
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
