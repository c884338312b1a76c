//! `kiln converge`.

use std::io::Write;

use crate::engine::{self, Converge, Event};
use crate::error::Error;
use crate::text::terminal_safe;

/// Converges and prints: one line per changed resource (with diffs under
/// `--why-run`) and a summary, or the report as JSON (under `--why-run`,
/// with the plan). A real run's report then goes to `report_to`, which
/// never changes the exit code. Returns the exit code.
pub fn run(
    c: &Converge,
    json: bool,
    detailed_exitcodes: bool,
    report_to: Option<&str>,
) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    let why_run = c.why_run;
    let report = engine::converge(c, &mut |e| match e {
        Event::Resource(_) if json => {}
        Event::Resource(r) => {
            if let Some(line) = r.line() {
                let _ = writeln!(out, "{}", terminal_safe(&line));
                if why_run && let Some(d) = &r.diff {
                    for l in d.lines() {
                        let _ = writeln!(out, "      {}", terminal_safe(l));
                    }
                }
            }
        }
        Event::Warning(w) => eprintln!("warning: {}", terminal_safe(w)),
    })?;
    if json {
        let mut doc = report.to_json();
        // A why-run's report is its plan rendered: the typed plan goes with it.
        if let (Some(plan), Some(o)) = (&report.plan, doc.as_object_mut()) {
            o.insert("plan".into(), plan.clone());
        }
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    } else {
        let _ = writeln!(out, "{}", report.summary());
    }
    if let Some(url) = report_to.filter(|_| !why_run) {
        let target = match &c.root {
            Some(dir) => crate::platform::target::Target::at_root(dir),
            None => crate::platform::target::Target::host(),
        };
        let mut warn = |w: String| eprintln!("warning: {}", terminal_safe(&w));
        let d = crate::outbox::report_run(&target, &report, url, &Default::default(), &mut warn);
        if d.sent > 0 {
            eprintln!(
                "kiln: {} run report(s) sent to {}",
                d.sent,
                terminal_safe(url)
            );
        }
    }
    let changed = report.updated > 0;
    let failed = !report.success;
    Ok(match (detailed_exitcodes, changed, failed) {
        (false, _, true) => 1,
        (false, _, false) => 0,
        (true, false, false) => 0,
        (true, true, false) => 2,
        (true, false, true) => 4,
        (true, true, true) => 6,
    })
}
