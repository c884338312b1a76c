//! `kiln test [--release R] [ROLE]...`: each role converged twice and
//! verified in a throwaway root of each Debian release the whitelist pins,
//! up to `--jobs` roles at once; one line per role and release, JUnit XML
//! and JSON for machines.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Error, IoContext};
use crate::policy::Repository;
use crate::policy::whitelist::Whitelist;
use crate::testing::{self, Options, RoleOutcome};

pub struct TestArgs {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    /// Default: every release the whitelist pins.
    pub releases: Vec<String>,
    pub junit: Option<PathBuf>,
    pub json: bool,
    pub keep: bool,
    pub fqdn: Option<String>,
    pub size: Option<String>,
    pub timeout: Duration,
    /// Substitute vanished pins (the default) or refuse them.
    pub pins: crate::engine::PinMode,
    /// From the base root every time: no checkpoint used or kept.
    pub no_cache: bool,
    /// How many roles are tested at once; 1 tests them one after another.
    pub jobs: usize,
}

/// The cached root `kiln test` builds its targets on (of `release`,
/// default bookworm), built if missing.
pub fn print_base_root(release: Option<&str>) -> Result<i32, Error> {
    let recipe = crate::platform::rootfs::TEST_ROOT.on(release.unwrap_or(testing::DEFAULT_SUITE))?;
    let root = crate::platform::rootfs::base_root(&recipe, &|m| eprintln!("{m}"))?;
    println!("{}", root.display());
    Ok(0)
}

/// `kiln __sandbox` (hidden): the inside of one test target, which prints
/// its outcome as one JSON line for the orchestrator.
pub fn inside(a: testing::inside::InsideArgs) -> Result<i32, Error> {
    Ok(testing::inside::run(a))
}

pub fn run(a: TestArgs) -> Result<i32, Error> {
    let repo = Repository::open(&a.repo)?;
    let roles = if a.roles.is_empty() {
        repo.names_in("roles")
    } else {
        a.roles.clone()
    };
    let whitelist = Whitelist::load(&repo)?;
    let mut releases = Vec::new();
    if a.releases.is_empty() {
        releases = whitelist.releases_or(None, testing::DEFAULT_SUITE)?;
    }
    for r in &a.releases {
        releases.extend(whitelist.releases_or(Some(r), r)?);
    }
    let tty = std::io::stderr().is_terminal();
    let pairs: Vec<(&String, &String)> = releases
        .iter()
        .flat_map(|rel| roles.iter().map(move |role| (rel, role)))
        .collect();
    // One spinner line per running role on a terminal.
    let multi = indicatif::MultiProgress::new();
    if !tty {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // Workers take the next pair in order; each outcome keeps its pair's
    // place, so JSON and JUnit list release, then role, whatever finishes first.
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<RoleOutcome>>> = Mutex::new(vec![None; pairs.len()]);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(release, role)) = pairs.get(i) else {
                break;
            };
            let o = test_one(&a, role, release, tty, &multi);
            if !a.json {
                print_whole(&multi, &result_block(&o));
            }
            done.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(o);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..a.jobs.clamp(1, pairs.len().max(1)) {
            s.spawn(work);
        }
    });
    let outcomes: Vec<RoleOutcome> = done
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect();
    if let Some(path) = &a.junit {
        std::fs::write(path, testing::junit::render(&outcomes))
            .ctx(|| format!("writing {}", path.display()))?;
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
        );
    } else {
        println!(
            "kiln test: {passed}/{} role test(s) passed ({} role(s) on {})",
            outcomes.len(),
            roles.len(),
            releases.join(", ")
        );
    }
    Ok(if passed == outcomes.len() { 0 } else { 1 })
}

/// Tests one role on one release, its progress on its own spinner line (a
/// terminal) or on lines prefixed with the role (no terminal).
fn test_one(
    a: &TestArgs,
    role: &str,
    release: &str,
    tty: bool,
    multi: &indicatif::MultiProgress,
) -> RoleOutcome {
    let opts = Options {
        repo: a.repo.clone(),
        release: release.to_string(),
        fqdn: a.fqdn.clone(),
        size: a.size.clone(),
        keep: a.keep,
        timeout: a.timeout,
        pins: a.pins,
        no_cache: a.no_cache,
    };
    let bar = multi.add(indicatif::ProgressBar::new_spinner());
    if tty {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let progress = |step: &str| {
        if tty {
            bar.set_message(format!("{role} ({release}): {step}"));
        } else if !a.json {
            eprintln!("  {role} ({release}): {step}");
        }
    };
    let o = testing::test_role(role, &opts, &progress);
    bar.finish_and_clear();
    multi.remove(&bar);
    o
}

/// What people read about one finished role: its line, then each failure,
/// the log of a failed role, the kept root and pin warnings.
fn result_block(o: &RoleOutcome) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{}", o.line());
    for c in o.cases() {
        if let Some(f) = c.failure {
            let _ = writeln!(b, "    {}: {}", c.name, f.replace('\n', "\n      "));
        }
    }
    if !o.passed()
        && let Some(log) = &o.log
    {
        let _ = writeln!(b, "    log: {}", log.display());
    }
    if let Some(k) = &o.kept {
        let _ = writeln!(b, "    kept: {}", k.display());
    }
    if !o.inside.substitutions.is_empty() {
        let _ = writeln!(
            b,
            "    warning: {}",
            crate::platform::pins::warning(&o.inside.substitutions, &o.release)
        );
    }
    b
}

/// Prints `block` on stdout in one piece: above the spinners, and with
/// stderr held too, so that no other role's progress line lands inside it
/// when both go to one file.
fn print_whole(multi: &indicatif::MultiProgress, block: &str) {
    multi.suspend(|| {
        let _err = std::io::stderr().lock();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(block.as_bytes());
        let _ = out.flush();
    });
}
