//! `kiln test`: for each role a throwaway target (an overlay on the cached
//! base root), converge, converge again (anything updated the second time
//! fails), then the role's verify checks, with services really running in
//! private namespaces. Torn down even on failure unless kept.

pub mod checkpoint;
pub mod inside;
pub mod junit;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use shared_child::SharedChild;

use crate::engine::{self, Node};
use crate::error::{PolicyError, PolicyErrors, RunError};
use crate::platform::dpkg::Dpkg;
use crate::platform::pins::{self, PinMode};
pub use crate::platform::rootfs::DEFAULT_SUITE;
use crate::platform::rootfs::{self, Overlay, TEST_ROOT};
use crate::platform::target::Target;
use crate::platform::{apt, pincache, siblings};
use crate::policy::Repository;
use inside::{InsideOutcome, PHASE};

pub struct Options {
    pub repo: PathBuf,
    /// The Debian release (codename) of the throwaway root.
    pub release: String,
    pub fqdn: Option<String>,
    pub size: Option<String>,
    pub keep: bool,
    /// How long one role may take before it is stopped.
    pub timeout: Duration,
    /// Substitute vanished pins (the default) or refuse them.
    pub pins: PinMode,
}

/// What happened to one role.
#[derive(Debug, Clone, Serialize)]
pub struct RoleOutcome {
    pub role: String,
    pub release: String,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Set up, policy and sandbox problems.
    pub error: Option<String>,
    #[serde(flatten)]
    pub inside: InsideOutcome,
    /// Where the target was kept (`--keep`) and where the log is.
    pub kept: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A named step with its failure, for reports and JUnit.
pub struct Case {
    pub name: String,
    pub failure: Option<String>,
}

impl RoleOutcome {
    pub fn passed(&self) -> bool {
        self.cases().iter().all(|c| c.failure.is_none())
    }

    pub fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        let first_failure = self
            .error
            .clone()
            .or_else(|| self.inside.error.clone())
            .or_else(|| {
                self.inside
                    .first
                    .as_ref()
                    .filter(|f| !f.failed.is_empty())
                    .map(|f| {
                        format!(
                            "role {}: converge failed: {}",
                            self.role,
                            f.failed.join("; ")
                        )
                    })
            });
        let converged = first_failure.is_none() && self.inside.first.is_some();
        cases.push(Case {
            name: "converge".into(),
            failure: first_failure.or_else(|| (!converged).then(|| "did not converge".into())),
        });
        let second = match &self.inside.second {
            _ if !converged => Some("not reached: the first converge failed".to_string()),
            None => Some("the second converge did not run".to_string()),
            Some(s) if !s.failed.is_empty() => Some(format!(
                "role {}: the second converge failed: {}",
                self.role,
                s.failed.join("; ")
            )),
            Some(s) if !s.updated.is_empty() => Some(format!(
                "role {}: not idempotent, the second converge updated {} resource(s): {}",
                self.role,
                s.updated.len(),
                s.updated.join("; ")
            )),
            Some(_) => None,
        };
        cases.push(Case {
            name: "idempotent".into(),
            failure: second,
        });
        for v in &self.inside.verify {
            cases.push(Case {
                name: format!("verify {}", v.check),
                failure: (!v.ok).then(|| {
                    format!(
                        "role {}: {} ({}): {}",
                        self.role, v.check, v.origin, v.detail
                    )
                }),
            });
        }
        cases
    }

    /// The one line people see for the role.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("{:<10} {:<9}", self.role, self.release)];
        match &self.inside.first {
            Some(f) if f.failed.is_empty() && self.inside.error.is_none() => parts.push(format!(
                "converged ({}/{} updated)",
                f.updated.len(),
                f.total
            )),
            _ => parts.push("NOT CONVERGED".into()),
        }
        match &self.inside.second {
            Some(s) if s.updated.is_empty() && s.failed.is_empty() => {
                parts.push(format!("idempotent ({:.0} ms)", s.elapsed_ms))
            }
            Some(s) => parts.push(format!("NOT IDEMPOTENT ({} updated)", s.updated.len())),
            None => {}
        }
        let v = &self.inside.verify;
        if self.inside.second.is_some() {
            let ok = v.iter().filter(|c| c.ok).count();
            parts.push(if ok == v.len() {
                format!("verified {ok}/{}", v.len())
            } else {
                format!("VERIFY FAILED {ok}/{}", v.len())
            });
        }
        parts.push(format!("{:.1} s", self.elapsed.as_secs_f64()));
        parts.join("  ")
    }
}

/// Tests one role end to end. `progress` hears each step.
pub fn test_role(role: &str, opts: &Options, progress: &dyn Fn(&str)) -> RoleOutcome {
    let started = Instant::now();
    let mut o = RoleOutcome {
        role: role.to_string(),
        release: opts.release.clone(),
        elapsed: Duration::ZERO,
        error: None,
        inside: InsideOutcome::default(),
        kept: None,
        log: None,
    };
    if let Err(e) = run(role, opts, progress, &mut o) {
        o.error = Some(format!("role {role} on {}: {e}", opts.release));
    }
    o.elapsed = started.elapsed();
    o
}

/// Why one role's test could not produce a result (a failed converge or
/// check is a result, in the outcome, not one of these).
#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("timed out after {secs} s; the log is {}", log.display())]
    TimedOut { secs: u64, log: PathBuf },
    #[error("the sandbox ended ({status}) without a result; the log is {}", log.display())]
    NoResult {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

impl From<PolicyError> for TestError {
    fn from(e: PolicyError) -> Self {
        TestError::Policy(PolicyErrors(vec![e]))
    }
}

fn run(
    role: &str,
    opts: &Options,
    progress: &dyn Fn(&str),
    o: &mut RoleOutcome,
) -> Result<(), TestError> {
    let fqdn = opts
        .fqdn
        .clone()
        .unwrap_or_else(|| format!("test-{role}.kiln.test"));
    let repo_dir = std::fs::canonicalize(&opts.repo)
        .map_err(|e| RunError::io("open", opts.repo.display(), e))?;
    let repo = Repository::open(&repo_dir)?;
    progress("preparing the root");
    let base = rootfs::base_root(&TEST_ROOT.on(&opts.release)?, progress)?;
    // Policy errors surface before any root is made.
    let node = Node::role(role).named(&fqdn).sized(opts.size.clone());
    let facts = node.facts(&Target::at_root(&base));
    let policy = engine::compile(&repo, &node, &facts, &crate::secrets::Placeholder)?;
    let mut overlay = Overlay::new(
        &base,
        &std::env::temp_dir().join("kiln-test"),
        &format!("{role}-{}", opts.release),
    )?;
    if opts.keep {
        overlay.keep();
        o.kept = Some(overlay.root().to_path_buf());
    }
    let log_path = overlay.dir().join("kiln-test.log");
    o.log = Some(log_path.clone());

    // Inside the sandbox there is no network: fetch the pinned packages now.
    let pins = policy.install_pins();
    if !pins.is_empty() {
        progress(&format!("downloading {} pinned package(s)", pins.len()));
        // Package files are shared (their names carry version and
        // architecture); each release keeps its own index.
        let cache = rootfs::cache_dir().join("apt");
        let cached_lists = cache.join("lists").join(&opts.release);
        let (archives, lists) = (
            overlay.root().join("var/cache/apt/archives"),
            overlay.root().join("var/lib/apt/lists"),
        );
        pincache::stage_files(&cache.join("archives"), &archives);
        pincache::stage_files(&cached_lists, &lists);
        let target = Target::at_root(overlay.root());
        // The converge's own rules for a pin no source offers, here where
        // the network is: refreshed index, kiln's cache, [fallback], then
        // refused or substituted, with kiln's own message.
        let dpkg = Dpkg::read(&target);
        let wanted: Vec<(String, String)> = pins
            .iter()
            .filter(|(n, v)| dpkg.installed(n).is_none_or(|i| &i.version != v))
            .cloned()
            .collect();
        let installed = |n: &str| dpkg.installed(n).map(|i| i.version.clone());
        let fb = policy.fallback.as_deref();
        let sources = pins::Sources {
            fallback: fb.map(|f| &f.fallback),
            repo: fb.map_or(Path::new("."), |f| f.repo.as_path()),
            change: true,
            defer_unknown: false,
        };
        let subs = pins::ensure(&target, &wanted, &installed, &sources, opts.pins)?;
        let pins = pins::substituted(&pins, &subs);
        // Siblings of the pins follow them (the same source's upload).
        let pins = siblings::with_pins(&target, &pins).map_err(RunError::from)?;
        apt::download(&target, &pins)?;
        pincache::copy_files(&archives, &cache.join("archives"));
        pincache::copy_files(&lists, &cached_lists);
    }

    progress("converging");
    // Through an open descriptor: the sandbox runs this very binary even if
    // the file is replaced (a rebuild) while the test runs.
    let exe_file = std::fs::File::open("/proc/self/exe")
        .map_err(|e| RunError::io("open", "/proc/self/exe", e))?;
    let exe = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&exe_file)
    );
    // The sandbox makes its own namespaces (`namespaces`), user first.
    let mut cmd = Command::new(&exe);
    // The role sees a fixed environment, never the caller's (a CI token
    // would be readable in /proc/1/environ).
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", "/root");
    cmd.arg("__sandbox")
        .arg("--root")
        .arg(overlay.root())
        .arg("--repo")
        .arg(&repo_dir)
        .args(["--role", role, "--fqdn", &fqdn]);
    if let Some(s) = &opts.size {
        cmd.args(["--size", s]);
    }
    if opts.pins == PinMode::Strict {
        cmd.arg("--strict-pins");
    }
    let child = SharedChild::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| RunError::io("run", "the sandbox", e))?;
    let stderr = child.take_stderr().expect("piped");
    let mut log = std::fs::File::create(&log_path)
        .map_err(|e| RunError::io("create", log_path.display(), e))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(p) = line.strip_prefix(PHASE) {
                let _ = tx.send(p.to_string());
            }
        }
    });
    let mut stdout = child.take_stdout().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + opts.timeout;
    // Phases as they come, until the sandbox closes stderr (it ended) or time is up.
    while let Ok(p) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        progress(&p);
    }
    let status = match child
        .wait_deadline(deadline)
        .map_err(|e| RunError::io("wait for", "the sandbox", e))?
    {
        Some(s) => Some(s),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    let _ = reader.join();
    let stdout = out_reader.join().unwrap_or_default();
    let kept_log = keep_log(&format!("{role}-{}", opts.release), &log_path);
    o.log = kept_log.or(o.log.take());
    let log = || o.log.clone().unwrap_or_else(|| PathBuf::from("?"));
    let Some(status) = status else {
        return Err(TestError::TimedOut {
            secs: opts.timeout.as_secs(),
            log: log(),
        });
    };
    let last = stdout.lines().last().unwrap_or_default();
    o.inside =
        serde_json::from_str(last).map_err(|_| TestError::NoResult { status, log: log() })?;
    Ok(())
}

/// Copies the sandbox log out of the target, which is about to be removed.
fn keep_log(role: &str, log: &Path) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("kiln-test");
    let dest = dir.join(format!("{role}.log"));
    std::fs::copy(log, &dest).ok().map(|_| dest)
}
