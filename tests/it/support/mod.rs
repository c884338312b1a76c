//! Shared support for kiln's integration tests: a cached Debian root, fresh
//! per-test copies of it, a builder for policy repositories, a runner for the
//! real `kiln` binary and helpers to inspect a target tree.

pub mod apt_repo;
pub mod browser;
pub mod fleet;
pub mod need;
#[macro_use]
pub mod postgres;
pub mod report_server;
pub mod signing_key;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln::platform::rootfs;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The first line of a test that needs more than a build ([`need`]):
/// `need!(DebianRoot, Network);` returns from the test, after one line
/// that says why, when one of them is missing here. (The fleet benchmark
/// shares this module and skips nothing.)
#[allow(unused_macros)]
macro_rules! need {
    ($($need:ident),+ $(,)?) => {
        if !$crate::support::need::met(&[$($crate::support::need::Need::$need),+]) {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Debian roots: the library's one builder and its overlays
// ---------------------------------------------------------------------------

/// The cached Debian root of `recipe`, built once by the library's builder
/// (`kiln::platform::rootfs`), as `kiln test` builds it. Never write to it:
/// use [`TestRoot`] for a writable copy.
pub fn cached_root(recipe: &rootfs::Recipe) -> PathBuf {
    need::assert_root("a Debian root");
    rootfs::base_root(recipe, &|message| {
        // Straight to the stderr handle, not eprintln!, so that the test
        // harness's capture does not hide why the first test is slow.
        let _ = writeln!(io::stderr().lock(), "kiln tests: {message}");
    })
    .unwrap_or_else(|e| panic!("building the cached Debian root: {e}"))
}

/// The base root of `kiln test` (minbase, passwd, init-system-helpers, procps).
pub fn base_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| cached_root(&rootfs::TEST_ROOT)).clone()
}

/// [`base_root`] of another Debian release (`trixie`), built by the same
/// recipe with that suite.
pub fn release_root(codename: &str) -> PathBuf {
    let recipe = rootfs::TEST_ROOT
        .on(codename)
        .unwrap_or_else(|e| panic!("no root recipe for {codename}: {e}"));
    cached_root(&recipe)
}

/// A fresh, writable copy of a cached root for one test: the library's
/// overlayfs [`rootfs::Overlay`] in a temporary directory. Dropping it
/// unmounts everything mounted inside (proc, a bind-mounted /dev) and
/// removes it all, never reaching through a mount into the host.
pub struct TestRoot {
    overlay: rootfs::Overlay,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        TestRoot::of(&base_root(), "kiln-root")
    }

    /// A fresh copy of the `kiln test` root of release `codename`.
    pub fn on(codename: &str) -> TestRoot {
        TestRoot::of(&release_root(codename), &format!("kiln-root-{codename}"))
    }

    pub fn of(lower: &Path, name: &str) -> TestRoot {
        let overlay = rootfs::Overlay::new(lower, &std::env::temp_dir(), name)
            .unwrap_or_else(|e| panic!("a test root over {}: {e}", lower.display()));
        TestRoot { overlay }
    }

    /// The root directory of the target tree (what `--root` gets).
    pub fn path(&self) -> &Path {
        self.overlay.root()
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<Path> for TestRoot {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

// ---------------------------------------------------------------------------
// Policy repositories
// ---------------------------------------------------------------------------

/// A policy repository in a temporary directory, built fluently:
///
/// ```ignore
/// let repo = Repo::new()
///     .role("web", r#"run_list = ["recipe[motd]"]"#)
///     .recipe("motd", "default", "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hi\"\n");
/// ```
///
/// Files are written as the builder goes; a later call for the same path
/// replaces the earlier file. `whitelist.toml` starts with an empty
/// `[packages]` table.
pub struct Repo {
    dir: TempDir,
}

impl Repo {
    /// A repository whose role `role` installs one package, with `whitelist`
    /// as its whitelist.toml: what the package tests converge.
    pub fn one_package(role: &str, package: &str, whitelist: &str) -> Repo {
        Repo::new()
            .role(role, "run_list = [\"recipe[pkg]\"]")
            .recipe(
                "pkg",
                "default",
                &format!("[[resource]]\npackage = \"{package}\"\n"),
            )
            .whitelist(whitelist)
    }

    pub fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("kiln-repo-")
            .tempdir()
            .expect("creating a temporary policy repository");
        Repo { dir }.whitelist("[packages]\n")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A scratch copy of this repository's own policy: roles, cookbooks,
    /// whitelist, secrets, vagrant.
    pub fn own_policy() -> Repo {
        let repo = Repo::new();
        let own = Path::new(env!("CARGO_MANIFEST_DIR"));
        for part in ["roles", "cookbooks", "secrets", "vagrant", "whitelist.toml"] {
            let ok = std::process::Command::new("cp")
                .arg("-a")
                .arg(own.join(part))
                .arg(repo.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "copying {part} of the policy");
        }
        repo
    }

    /// A scratch copy of this repository's own policy (roles, cookbooks,
    /// whitelist, secrets, vagrant) with the pin of `package` for `release`
    /// set to `version`: a version that no source offers, on purpose.
    pub fn policy_with_pin(release: &str, package: &str, version: &str) -> Repo {
        let repo = Repo::own_policy();
        let path = repo.path().join("whitelist.toml");
        let mut doc: toml_edit::DocumentMut = fs::read_to_string(&path).unwrap().parse().unwrap();
        doc["releases"][release]["packages"][package] = toml_edit::value(version);
        fs::write(&path, doc.to_string()).unwrap();
        repo
    }

    /// Writes `contents` at `path` (relative to the repository), creating
    /// parent directories.
    pub fn file(self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Repo {
        let path = path.as_ref();
        assert!(
            path.is_relative(),
            "Repo::file wants a path relative to the repository, got {}",
            path.display()
        );
        let full = self.path().join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&full, contents).unwrap_or_else(|e| panic!("writing {}: {e}", full.display()));
        self
    }

    /// `roles/<name>.toml`
    pub fn role(self, name: &str, toml: &str) -> Repo {
        self.file(format!("roles/{name}.toml"), toml)
    }

    /// `cookbooks/<cookbook>/metadata.toml`
    pub fn metadata(self, cookbook: &str, toml: &str) -> Repo {
        self.file(format!("cookbooks/{cookbook}/metadata.toml"), toml)
    }

    /// `cookbooks/<cookbook>/recipes/<recipe>.toml`, plus a minimal
    /// `metadata.toml` if the cookbook has none yet.
    pub fn recipe(self, cookbook: &str, recipe: &str, toml: &str) -> Repo {
        let metadata = self
            .path()
            .join(format!("cookbooks/{cookbook}/metadata.toml"));
        let repo = if metadata.exists() {
            self
        } else {
            self.metadata(
                cookbook,
                &format!("name = \"{cookbook}\"\nversion = \"0.1.0\"\n"),
            )
        };
        repo.file(format!("cookbooks/{cookbook}/recipes/{recipe}.toml"), toml)
    }

    /// `cookbooks/<cookbook>/attributes.toml`
    pub fn attributes(self, cookbook: &str, toml: &str) -> Repo {
        self.file(format!("cookbooks/{cookbook}/attributes.toml"), toml)
    }

    /// `cookbooks/<cookbook>/templates/<name>` (`name` includes `.hbs`).
    pub fn template(self, cookbook: &str, name: &str, text: &str) -> Repo {
        self.file(format!("cookbooks/{cookbook}/templates/{name}"), text)
    }

    /// `cookbooks/<cookbook>/files/<name>`
    pub fn cookbook_file(self, cookbook: &str, name: &str, bytes: impl AsRef<[u8]>) -> Repo {
        self.file(format!("cookbooks/{cookbook}/files/{name}"), bytes)
    }

    /// Replaces `whitelist.toml`.
    pub fn whitelist(self, toml: &str) -> Repo {
        self.file("whitelist.toml", toml)
    }
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<Path> for Repo {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// Runs `c` and returns what it printed; its failure fails the test with
/// its output.
pub fn succeed(c: &mut Command) -> Vec<u8> {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// Running the kiln binary
// ---------------------------------------------------------------------------

/// A command line for the `kiln` binary under test. Arguments are passed in
/// the order the builder methods are called.
pub fn kiln() -> Kiln {
    Kiln {
        command: Command::new(env!("CARGO_BIN_EXE_kiln")),
        line: vec!["kiln".into()],
    }
}

pub struct Kiln {
    command: Command,
    /// For messages: the command line as given.
    line: Vec<String>,
}

impl Kiln {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Kiln {
        self.line.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> Kiln
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Kiln::arg)
    }

    /// `--repo DIR`
    pub fn repo(self, repo: &Repo) -> Kiln {
        self.arg("--repo").arg(repo.path())
    }

    /// `--root DIR`
    pub fn root(self, root: &TestRoot) -> Kiln {
        self.arg("--root").arg(root.path())
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Kiln {
        self.command.env(key, value);
        self
    }

    /// Runs in `dir`, as a user does from inside a repository.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Kiln {
        self.command.current_dir(dir);
        self
    }

    /// Runs to completion, stdin closed, capturing stdout and stderr.
    pub fn run(mut self) -> Outcome {
        let output = self
            .command
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.line.join(" ")));
        let status = output
            .status
            .code()
            .or_else(|| output.status.signal().map(|signal| 128 + signal))
            .expect("an exit status is a code or a signal");
        Outcome {
            command: self.line.join(" "),
            status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What a kiln run did. The assertions panic with the whole output on a
/// mismatch and return the outcome, so that they chain.
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (128 + N when killed by signal N).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    #[track_caller]
    pub fn success(self) -> Outcome {
        if self.status != 0 {
            self.fail("expected success (exit 0)");
        }
        self
    }

    #[track_caller]
    pub fn failure(self) -> Outcome {
        if self.status == 0 {
            self.fail("expected failure (non-zero exit)");
        }
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Outcome {
        if self.status != code {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Outcome {
        if !self.stdout.contains(needle) {
            self.fail(&format!("expected stdout to contain {needle:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Outcome {
        if !self.stderr.contains(needle) {
            self.fail(&format!("expected stderr to contain {needle:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stdout_lacks(self, needle: &str) -> Outcome {
        if self.stdout.contains(needle) {
            self.fail(&format!("expected stdout not to contain {needle:?}"));
        }
        self
    }

    #[track_caller]
    fn fail(&self, expectation: &str) -> ! {
        panic!(
            "{expectation}\ncommand: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.command, self.status, self.stdout, self.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// Inspecting a target tree
// ---------------------------------------------------------------------------

/// Top-level directories and subtrees that [`tree_hash`] ignores: kernel
/// filesystems, scratch space, kiln's own run reports, caches (apt's
/// package index among them) and logs.
const UNHASHED: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/lib/kiln",
    "var/cache",
    "var/lib/apt/lists",
    "var/log",
];

/// A kiln cache of its own (`XDG_CACHE_HOME`) for one test's `kiln test`
/// checkpoints, sharing the built Debian roots and the package cache of the
/// usual one.
pub fn own_kiln_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = kiln::platform::rootfs::cache_dir();
    std::fs::create_dir_all(dir.path().join("kiln")).unwrap();
    for sub in ["roots", "apt"] {
        std::fs::create_dir_all(real.join(sub)).unwrap();
        std::os::unix::fs::symlink(real.join(sub), dir.path().join("kiln").join(sub)).unwrap();
    }
    dir
}

/// A sha256 over every entry of the tree at `root` (relative path, file type,
/// permission bits, owner, group, symlink target, device number, content),
/// walked in sorted order, skipping [`UNHASHED`]. Modification times are not
/// part of it. Equal before and after a `--why-run` proves it changed nothing.
pub fn tree_hash(root: impl AsRef<Path>) -> String {
    let root = root.as_ref();
    let mut hasher = Sha256::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            !UNHASHED.iter().any(|skip| relative == Path::new(skip))
        });
    for entry in walk {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("walkdir stays below its root");
        let meta = entry
            .metadata()
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let kind = meta.file_type();
        let tag: &[u8] = if kind.is_dir() {
            b"d"
        } else if kind.is_file() {
            b"f"
        } else if kind.is_symlink() {
            b"l"
        } else if kind.is_char_device() {
            b"c"
        } else if kind.is_block_device() {
            b"b"
        } else if kind.is_fifo() {
            b"p"
        } else {
            b"s"
        };
        field(&mut hasher, relative.as_os_str().as_bytes());
        field(&mut hasher, tag);
        hasher.update((meta.mode() & 0o7777).to_le_bytes());
        hasher.update(meta.uid().to_le_bytes());
        hasher.update(meta.gid().to_le_bytes());
        if kind.is_symlink() {
            let target =
                fs::read_link(path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
            field(&mut hasher, target.as_os_str().as_bytes());
        } else if kind.is_char_device() || kind.is_block_device() {
            hasher.update(meta.rdev().to_le_bytes());
        } else if kind.is_file() {
            hasher.update(meta.len().to_le_bytes());
            hash_content(&mut hasher, path);
        }
    }
    hex::encode(hasher.finalize())
}

/// A length-prefixed field, so that concatenations cannot collide.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn hash_content(hasher: &mut Sha256, path: &Path) {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }
}

/// The host path of `path` (absolute, as seen inside the target) below
/// `root`. Symlinks are not resolved against the root: an absolute link
/// followed from the host points into the host.
pub fn at(root: impl AsRef<Path>, path: &str) -> PathBuf {
    root.as_ref().join(path.trim_start_matches('/'))
}

/// The root `kiln test --keep` kept, from its output's `kept: ` line.
pub fn kept_root(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("kept: "))
        .map(PathBuf::from)
}

/// The command lines of the apt transactions the root's apt history
/// records, oldest first: the dpkg options kiln passed are in them.
pub fn apt_command_lines(root: impl AsRef<Path>) -> Vec<String> {
    fs::read_to_string(at(root, "/var/log/apt/history.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("Commandline: ").map(str::to_string))
        .collect()
}

/// The contents of `path` inside the target, as UTF-8.
pub fn read(root: impl AsRef<Path>, path: &str) -> String {
    let full = at(root, path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The permission bits (including setuid, setgid, sticky) of `path` inside
/// the target; a symlink's own, not its target's.
pub fn mode(root: impl AsRef<Path>, path: &str) -> u32 {
    lstat(root.as_ref(), path).mode() & 0o7777
}

/// `(uid, gid)` of `path` inside the target; a symlink's own.
pub fn owner(root: impl AsRef<Path>, path: &str) -> (u32, u32) {
    let meta = lstat(root.as_ref(), path);
    (meta.uid(), meta.gid())
}

fn lstat(root: &Path, path: &str) -> fs::Metadata {
    let full = at(root, path);
    fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("stat {}: {e}", full.display()))
}

/// The fields of `name`'s line in the target's /etc/passwd
/// (`[name, x, uid, gid, gecos, home, shell]`).
pub fn passwd_entry(root: impl AsRef<Path>, name: &str) -> Option<Vec<String>> {
    colon_entry(root.as_ref(), "/etc/passwd", name)
}

/// The fields of `name`'s line in the target's /etc/group
/// (`[name, x, gid, members]`).
pub fn group_entry(root: impl AsRef<Path>, name: &str) -> Option<Vec<String>> {
    colon_entry(root.as_ref(), "/etc/group", name)
}

fn colon_entry(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    read(root, file)
        .lines()
        .map(|line| line.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|fields| fields[0] == name)
}

// ---------------------------------------------------------------------------
// Versions from the archive, as it is today
// ---------------------------------------------------------------------------

/// Runs a command inside the target (chroot), with a plain PATH and locale.
pub fn in_root(root: impl AsRef<Path>, args: &[&str]) -> std::process::Output {
    let root = root.as_ref();
    Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("chroot {}: {e}", root.display()))
}

/// Runs `apt-get update` in `root` (once per root) and returns the versions
/// of `package` that its sources offer, newest first, with their suite
/// (`bookworm-security/main`). Tests take real version pairs from here at
/// run time, so that a Debian update never makes them rot.
pub fn archive_versions(root: impl AsRef<Path>, package: &str) -> Vec<(String, String)> {
    let root = root.as_ref();
    let chroot = |args: &[&str]| in_root(root, args);
    if !root.join("var/lib/apt/lists/lock").exists()
        || fs::read_dir(root.join("var/lib/apt/lists"))
            .map(|d| {
                d.flatten()
                    .all(|e| !e.file_name().as_bytes().ends_with(b"Packages"))
            })
            .unwrap_or(true)
    {
        let out = chroot(&["apt-get", "update", "-qq"]);
        assert!(
            out.status.success(),
            "apt-get update in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = chroot(&["apt-cache", "madison", package]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let suite = fields.get(2)?.split_whitespace().nth(1)?;
            Some((fields.get(1)?.to_string(), suite.to_string()))
        })
        .collect()
}

/// The first of `candidates` that the archive offers in two versions, as
/// (package, older, newer): a real upgrade, and a real rollback.
pub fn archive_pair(root: impl AsRef<Path>, candidates: &[&str]) -> (String, String, String) {
    for package in candidates {
        let mut versions: Vec<String> = Vec::new();
        for (version, _) in archive_versions(root.as_ref(), package) {
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        if let [newer, .., older] = versions.as_slice() {
            return (package.to_string(), older.clone(), newer.clone());
        }
    }
    panic!(
        "none of {candidates:?} has two versions in the archive today; \
         add a package that does to this test's candidates"
    );
}

// ---------------------------------------------------------------------------
// A static file server on loopback
// ---------------------------------------------------------------------------

/// Serves the files below a directory over HTTP on 127.0.0.1 (GET and
/// HEAD, 404 otherwise), as any web server would publish an apt repository.
/// Stopped when dropped.
pub struct StaticServer {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    pub fn serve(dir: &Path) -> StaticServer {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut request = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" || header == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let mut words = request.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
                // apt asks for `+` and `~` percent-encoded.
                let relative = percent_decode(path.trim_start_matches('/'));
                let file = (!relative.split('/').any(|c| c == ".."))
                    .then(|| dir.join(relative))
                    .filter(|p| p.is_file())
                    .and_then(|p| fs::read(p).ok());
                let _ = match file {
                    Some(body) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        conn.write_all(head.as_bytes()).and_then(|_| {
                            if method == "HEAD" {
                                Ok(())
                            } else {
                                conn.write_all(&body)
                            }
                        })
                    }
                    None => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        StaticServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
