//! `kiln test [ROLE]...`: each role converged twice and verified in a
//! throwaway root; one line per role, JUnit XML and JSON for machines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, IoContext};
use crate::policy::Repository;
use crate::testing::{self, Options, RoleOutcome};

pub struct TestArgs {
    pub repo: PathBuf,
    pub roles: Vec<String>,
    pub junit: Option<PathBuf>,
    pub json: bool,
    pub keep: bool,
    pub fqdn: Option<String>,
    pub size: Option<String>,
    pub timeout: Duration,
}

/// The cached root `kiln test` builds its targets on, built if missing.
pub fn print_base_root() -> Result<i32, Error> {
    let root = crate::platform::rootfs::base_root(&crate::platform::rootfs::TEST_ROOT, &|m| {
        eprintln!("{m}")
    })?;
    println!("{}", root.display());
    Ok(0)
}

pub fn run(a: TestArgs) -> Result<i32, Error> {
    let repo = Repository::open(&a.repo)?;
    let roles = if a.roles.is_empty() {
        repo.names_in("roles")
    } else {
        a.roles.clone()
    };
    let opts = Options {
        repo: a.repo.clone(),
        fqdn: a.fqdn.clone(),
        size: a.size.clone(),
        keep: a.keep,
        timeout: a.timeout,
    };
    let tty = std::io::stderr().is_terminal();
    let mut outcomes: Vec<RoleOutcome> = Vec::new();
    for role in &roles {
        let bar = indicatif::ProgressBar::new_spinner();
        if tty {
            bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let progress = |step: &str| {
            if tty {
                bar.set_message(format!("{role}: {step}"));
            } else if !a.json {
                eprintln!("  {role}: {step}");
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
        println!("kiln test: {passed}/{} role(s) passed", outcomes.len());
    }
    Ok(if passed == outcomes.len() { 0 } else { 1 })
}
