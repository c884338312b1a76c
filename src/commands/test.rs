//! `kiln test [--release R] [ROLE]...`: each role converged twice and
//! verified in a throwaway root of each Debian release the whitelist pins;
//! one line per role and release, JUnit XML and JSON for machines.

use std::io::IsTerminal;
use std::path::PathBuf;
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
    let mut outcomes: Vec<RoleOutcome> = Vec::new();
    let jobs = releases
        .iter()
        .flat_map(|rel| roles.iter().map(move |role| (rel, role)));
    for (release, role) in jobs {
        let opts = Options {
            repo: a.repo.clone(),
            release: release.clone(),
            fqdn: a.fqdn.clone(),
            size: a.size.clone(),
            keep: a.keep,
            timeout: a.timeout,
            pins: a.pins,
            no_cache: a.no_cache,
        };
        let bar = indicatif::ProgressBar::new_spinner();
        if tty {
            bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
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
        if !a.json {
            println!("{}", o.line());
            for c in o.cases() {
                if let Some(f) = c.failure {
                    println!("    {}: {}", c.name, f.replace('\n', "\n      "));
                }
            }
            if !o.passed()
                && let Some(log) = &o.log
            {
                println!("    log: {}", log.display());
            }
            if let Some(k) = &o.kept {
                println!("    kept: {}", k.display());
            }
            if !o.inside.substitutions.is_empty() {
                println!(
                    "    warning: {}",
                    crate::platform::pins::warning(&o.inside.substitutions, &o.release)
                );
            }
        }
        outcomes.push(o);
    }
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
