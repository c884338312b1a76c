//! `kiln test`: for each role a throwaway target (an overlay on the cached
//! base root), converge, converge again (anything updated the second time
//! fails), then the role's verify checks, with services really running in
//! private namespaces. Torn down even on failure unless kept.

pub mod inside;
pub mod junit;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use shared_child::SharedChild;

use crate::engine::checkpoint::{self, Layers, Store};
use crate::engine::{self, Node};
use crate::error::{PolicyError, PolicyErrors, RunError};
use crate::platform::dpkg::Dpkg;
use crate::platform::pins::{self, PinMode};
pub use crate::platform::rootfs::DEFAULT_SUITE;
use crate::platform::rootfs::{self, Overlay, TEST_ROOT};
use crate::platform::target::Target;
use crate::platform::{apt, pincache, siblings};
use crate::policy::Repository;
use inside::{CUT, Cut, InsideOutcome, PHASE, PartFile};

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
    /// Converge from the base root, neither using nor keeping checkpoints.
    pub no_cache: bool,
}

/// What happened to one role.
#[derive(Debug, Clone, Serialize)]
pub struct RoleOutcome {
    pub role: String,
    pub release: String,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Set up, policy and sandbox problems. Never set with the inside's
    /// own `error` (the two share one JSON key: at most one is written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub inside: InsideOutcome,
    /// Where the target was kept (`--keep`) and where the log is.
    pub kept: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Where the converge started: `from checkpoint N/M (RESOURCE)`, or
    /// `from the base root`.
    pub start: Option<String>,
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
        parts.extend(self.start.clone());
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
        start: None,
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
    let recipe = TEST_ROOT.on(&opts.release)?;
    let base = rootfs::base_root(&recipe, progress)?;
    // Policy errors surface before any root is made.
    let node = Node::role(role).named(&fqdn).sized(opts.size.clone());
    let facts = node.facts(&Target::at_root(&base));
    let policy = engine::compile(&repo, &node, &facts, &crate::secrets::Placeholder)?;
    let store = match opts.no_cache {
        true => None,
        false => Some(Store::open()?),
    };
    // Logs are kept after a failure, for a person to read: in a directory
    // of theirs alone, so that no link planted there can aim the write
    // elsewhere. Without the cache, the overlays go there too.
    let logs = crate::platform::private::scratch_dir("kiln-test").map_err(RunError::from)?;
    let work = match &store {
        Some(s) => s.work_dir(),
        None => logs.clone(),
    };
    let name = format!("{role}-{}", opts.release);
    let log_path = logs.join(format!("{name}.log"));
    std::fs::File::create(&log_path).map_err(|e| RunError::io("create", log_path.display(), e))?;
    o.log = Some(log_path.clone());

    let mut layers = Layers::new(&base, &work, &name);
    let cached_lists = rootfs::cache_dir().join("apt/lists").join(&opts.release);
    let index = || checkpoint::index_digest(&[&base.join(LISTS), &cached_lists]);
    // What the pins resolve to with this index: asked of apt in a first
    // overlay (on the base root), unless an earlier test asked already.
    let question = format!(
        "resolve\nroot={}\nindex={}\npins={:?}\nmode={:?}\nfallback={:?}\n",
        recipe.key(),
        index(),
        policy.install_pins(),
        opts.pins,
        policy.fallback.as_deref().map(|f| &f.fallback),
    );
    let question = crate::digest::sha256_hex(question.as_bytes());
    let mut first_overlay = None;
    let answer = store.as_ref().and_then(|s| s.answer::<Packages>(&question));
    let packages = match answer {
        Some(p) => p,
        None => {
            let overlay = layers.mount()?;
            let p = resolve_packages(&overlay, &policy, opts, progress)?;
            if let Some(s) = &store {
                s.keep_answer(&question, &p);
            }
            first_overlay = Some(overlay);
            p
        }
    };

    // Where to start: the deepest checkpoint still valid, or the base root.
    let mut cuts = Vec::new();
    // The last resource the start's tree has converged.
    let mut done: Option<usize> = None;
    let seed = format!(
        "kiln={}\nroot={}\nrelease={}\nfqdn={fqdn}\nsize={:?}\npins={:?}\nindex={}\n",
        checkpoint::kiln_digest()?,
        recipe.key(),
        opts.release,
        opts.size,
        opts.pins,
        index(),
    );
    // Test values of secrets follow the seed, not the run: a converge from a
    // checkpoint and one from the base root hold the same values.
    let mut part = PartFile {
        test_key: Some(checkpoint::test_key(&seed)),
        ..PartFile::default()
    };
    let mut from = "from the base root".to_string();
    if let Some(store) = &store {
        let part_of = |i: usize| {
            let r = &policy.resources[i];
            let is_package = r.id.kind == crate::resource::package::TYPE.name;
            match packages.keys.get(&r.id.name) {
                Some(p) if is_package => p.clone(),
                _ => String::new(),
            }
        };
        cuts = checkpoint::cuts(&policy, &repo_dir, seed.as_bytes(), &part_of);
        if let Some(start) = store.find(&cuts)? {
            let m = layers.start_from(start);
            from = m.shown();
            cuts.retain(|c| c.until > m.until);
            part.pending = m.pending;
            part.test_key = Some(m.test_key);
            done = Some(m.until);
            // Its index is the one the key was made with.
            first_overlay = None;
        }
    }
    let mut overlay = match first_overlay {
        Some(o) => o,
        None if done.is_some() => layers.mount()?,
        None => {
            let o = layers.mount()?;
            pincache::stage_files(&cached_lists, &o.root().join(LISTS));
            o
        }
    };
    progress(&from);
    o.start = Some(from);
    // Inside the sandbox there is no network: the packages still to install
    // are fetched now (into kiln's cache, shared by every target).
    let installs_after = |until: Option<usize>| {
        let installs = |r: &engine::compile::Compiled| {
            r.id.kind == crate::resource::package::TYPE.name
                && r.actions.iter().any(|a| a == "install")
        };
        (policy.resources.iter().enumerate())
            .any(|(i, r)| until.is_none_or(|u| i > u) && installs(r))
    };
    if installs_after(done) {
        download(&overlay, &packages.download, progress)?;
    }

    let exe = Exe::open()?;
    let deadline = Instant::now() + opts.timeout;
    if opts.keep {
        overlay.keep();
        o.kept = Some(overlay.root().to_path_buf());
    }
    // One sandbox: the first converge stops at each cut while its tree is
    // copied into a checkpoint; then converge again, verify.
    part.cuts = cuts.iter().map(|c| c.until).collect();
    let parent = layers.top().map(str::to_string);
    let mut last: Option<checkpoint::Copied> = None;
    let mut at_cut = |cut: &Cut| {
        let (Some(store), Some(c)) = (&store, cuts.iter().find(|c| c.until == cut.until)) else {
            return;
        };
        let meta = checkpoint::Meta {
            key: c.key.clone(),
            parent: parent.clone(),
            until: c.until,
            total: policy.resources.len(),
            resource: c.resource.clone(),
            pending: cut.pending.clone(),
            test_key: part.test_key.clone().unwrap_or_default(),
            bytes: 0,
        };
        match store.keep_copy(&overlay.upper(), meta, last.as_ref()) {
            Ok(copied) => {
                progress(&format!(
                    "kept checkpoint {}/{} ({})",
                    c.until + 1,
                    policy.resources.len(),
                    c.resource
                ));
                last = Some(copied);
            }
            Err(e) => progress(&format!("warning: checkpoint not kept: {e}")),
        }
    };
    progress("converging");
    o.inside = sandbox(
        &exe,
        &overlay,
        role,
        &fqdn,
        &repo_dir,
        opts,
        &part,
        &log_path,
        deadline,
        progress,
        &mut at_cut,
    )?;
    Ok(())
}

/// A Debian tree's apt index and package files.
const LISTS: &str = "var/lib/apt/lists";
const ARCHIVES: &str = "var/cache/apt/archives";

/// The pinned packages of a role as its transactions resolve them.
#[derive(Serialize, serde::Deserialize)]
struct Packages {
    /// Per pinned package, what its transaction installs: the pin (or what
    /// stands in for it) and its source's other packages, for the keys.
    keys: BTreeMap<String, String>,
    /// Every pin and sibling, for the download.
    download: Vec<(String, String)>,
}

/// Resolves the role's pins in the first overlay, which is on the base
/// root, with kiln's cached index staged (and refreshed if a pin is not in
/// it): the converge's own rules for a pin no source offers (kiln's cache,
/// [fallback], then refused or substituted, with kiln's own message), and
/// the siblings that follow each pin (the same source's upload).
fn resolve_packages(
    overlay: &Overlay,
    policy: &engine::Policy,
    opts: &Options,
    progress: &dyn Fn(&str),
) -> Result<Packages, TestError> {
    let lists = overlay.root().join(LISTS);
    let cached_lists = rootfs::cache_dir().join("apt/lists").join(&opts.release);
    pincache::stage_files(&cached_lists, &lists);
    let mut out = Packages {
        keys: BTreeMap::new(),
        download: Vec::new(),
    };
    let pins = policy.install_pins();
    if pins.is_empty() {
        return Ok(out);
    }
    progress(&format!("resolving {} pinned package(s)", pins.len()));
    let target = Target::at_root(overlay.root());
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
    let siblings = siblings::resolve(&target, &pins, &dpkg).map_err(RunError::from)?;
    pincache::copy_files(&lists, &cached_lists);
    out.download = pins.clone();
    (out.download).extend(siblings.iter().map(|s| (s.name.clone(), s.version.clone())));
    for (name, version) in &pins {
        let mut with: Vec<String> = (siblings.iter())
            .filter(|s| &s.follows == name)
            .map(|s| format!("{}={}", s.name, s.version))
            .collect();
        with.sort();
        let key = format!("{name}={version} {}", with.join(" "));
        out.keys.insert(name.clone(), key);
    }
    Ok(out)
}

/// Fetches `set` (and what apt pulls in with it) into kiln's package cache
/// through the target at `overlay`, which keeps a copy.
fn download(
    overlay: &Overlay,
    set: &[(String, String)],
    progress: &dyn Fn(&str),
) -> Result<(), TestError> {
    stage_debs(overlay.root());
    if set.is_empty() {
        return Ok(());
    }
    progress(&format!("downloading {} package(s)", set.len()));
    apt::download(&Target::at_root(overlay.root()), set)?;
    let archives = overlay.root().join(ARCHIVES);
    pincache::copy_files(&archives, &rootfs::cache_dir().join("apt/archives"));
    Ok(())
}

/// Gives a throwaway target kiln's cached package files (their names
/// carry version and architecture: one cache for every release).
fn stage_debs(root: &Path) {
    let cache = rootfs::cache_dir().join("apt/archives");
    pincache::stage_files(&cache, &root.join(ARCHIVES));
}

/// What the sandbox says on stderr, besides its log.
enum Said {
    Phase(String),
    Cut(Cut),
}

/// This very binary, through an open descriptor: the sandbox runs it even
/// if the file is replaced (a rebuild) while the test runs.
struct Exe {
    _file: std::fs::File,
    path: String,
}

impl Exe {
    fn open() -> Result<Exe, RunError> {
        let file = std::fs::File::open("/proc/self/exe")
            .map_err(|e| RunError::io("open", "/proc/self/exe", e))?;
        let path = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&file)
        );
        Ok(Exe { _file: file, path })
    }
}

/// Runs one part of the role's test in a sandbox on `overlay` and reads
/// its outcome; its stderr goes to the role's log.
#[allow(clippy::too_many_arguments)]
fn sandbox(
    exe: &Exe,
    overlay: &Overlay,
    role: &str,
    fqdn: &str,
    repo_dir: &Path,
    opts: &Options,
    part: &PartFile,
    log_path: &Path,
    deadline: Instant,
    progress: &dyn Fn(&str),
    at_cut: &mut dyn FnMut(&Cut),
) -> Result<InsideOutcome, TestError> {
    // Outside the target's root: read before the sandbox is entered.
    let part_path = overlay.dir().join("part.json");
    let json = serde_json::to_vec(part).unwrap_or_default();
    std::fs::write(&part_path, json).map_err(|e| RunError::io("write", part_path.display(), e))?;
    // The sandbox makes its own namespaces (`namespaces`), user first.
    let mut cmd = Command::new(&exe.path);
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
        .arg(repo_dir)
        .args(["--role", role, "--fqdn", fqdn])
        .arg("--part")
        .arg(&part_path);
    if let Some(s) = &opts.size {
        cmd.args(["--size", s]);
    }
    if opts.pins == PinMode::Strict {
        cmd.arg("--strict-pins");
    }
    let child = SharedChild::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| RunError::io("run", "the sandbox", e))?;
    let stderr = child.take_stderr().expect("piped");
    let mut go = child.take_stdin().expect("piped");
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .map_err(|e| RunError::io("open", log_path.display(), e))?;
    let (tx, rx) = std::sync::mpsc::channel::<Said>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(p) = line.strip_prefix(PHASE) {
                let _ = tx.send(Said::Phase(p.to_string()));
            } else if let Some(c) = line
                .strip_prefix(CUT)
                .and_then(|c| serde_json::from_str(c).ok())
            {
                let _ = tx.send(Said::Cut(c));
            }
        }
    });
    let mut stdout = child.take_stdout().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    // Phases and cuts as they come, until the sandbox closes stderr (it
    // ended) or time is up. At a cut the sandbox waits for a line.
    while let Ok(said) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        match said {
            Said::Phase(p) => progress(&p),
            Said::Cut(c) => {
                at_cut(&c);
                let _ = writeln!(go, "go");
            }
        }
    }
    drop(go);
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
    let Some(status) = status else {
        return Err(TestError::TimedOut {
            secs: opts.timeout.as_secs(),
            log: log_path.to_path_buf(),
        });
    };
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|_| TestError::NoResult {
        status,
        log: log_path.to_path_buf(),
    })
}
