//! Shared support for kiln's integration tests: a cached Debian root, fresh
//! per-test copies of it, a builder for policy repositories, a runner for the
//! real `kiln` binary and helpers to inspect a target tree.
//!
//! Include it from a test file with `mod support;`. Not every test file uses
//! every item, hence the `#[allow(dead_code)]` on the public ones.

#[allow(dead_code)]
pub mod apt_repo;
#[allow(dead_code)]
pub mod fleet;

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use fs2::FileExt;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// The cached base root
// ---------------------------------------------------------------------------

/// Bump when the way the base root is built changes without any of the
/// other recipe inputs changing: it invalidates every cached root.
const RECIPE_VERSION: &str = "kiln-test-root/1";
const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
/// Packages beyond minbase that kiln's tests need inside the root:
/// useradd/groupadd, update-rc.d, ps/pgrep.
const INCLUDE: &[&str] = &["init-system-helpers", "passwd", "procps"];

/// A Debian root (minbase plus [`INCLUDE`]) built once with mmdebstrap and
/// cached under `~/.cache/kiln/roots/<key>/root`, where `<key>` hashes the
/// build recipe. Never write to it: use [`TestRoot`] for a writable copy.
#[allow(dead_code)]
pub fn base_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(cached_base_root).clone()
}

/// The cache key: the first 16 hex digits of a sha256 over the recipe.
fn recipe_key() -> String {
    let recipe = format!(
        "recipe={RECIPE_VERSION}\nsuite={SUITE}\nvariant={VARIANT}\ninclude={}\n",
        INCLUDE.join(",")
    );
    let mut key = hex(&Sha256::digest(recipe.as_bytes()));
    key.truncate(16);
    key
}

fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set");
    cache.join("kiln").join("roots")
}

fn cached_base_root() -> PathBuf {
    let dir = cache_dir();
    let key = recipe_key();
    let done = dir.join(&key);
    let root = done.join("root");
    if root.is_dir() {
        return root;
    }

    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let lock_path = dir.join(format!("{key}.lock"));
    let lock =
        File::create(&lock_path).unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    // flock: excludes other processes and other threads of this one alike.
    lock.lock_exclusive()
        .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if root.is_dir() {
        return root; // someone else built it while we waited
    }

    // Leftovers of a killed build, or a half-populated key directory.
    let build_prefix = format!("{key}.build-");
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .as_bytes()
            .starts_with(build_prefix.as_bytes())
        {
            remove_tree(&entry.path());
        }
    }
    if done.exists() {
        remove_tree(&done);
    }

    let started = Instant::now();
    // Written straight to the stderr handle, not with eprintln!, so that the
    // test harness's output capture does not hide why the first test is slow.
    let _ = writeln!(
        io::stderr().lock(),
        "building cached Debian root {SUITE}/{VARIANT} (+{}) in {} (once)",
        INCLUDE.join(","),
        done.display()
    );
    let build = tempfile::Builder::new()
        .prefix(&build_prefix)
        .tempdir_in(&dir)
        .unwrap_or_else(|e| panic!("creating a build directory in {}: {e}", dir.display()));
    let output = Command::new("mmdebstrap")
        .arg(format!("--variant={VARIANT}"))
        .arg("--mode=root")
        .arg("--format=directory")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(build.path().join("root"))
        .output()
        .unwrap_or_else(|e| panic!("running mmdebstrap (is it installed? see scripts/test): {e}"));
    if !output.status.success() {
        panic!(
            "mmdebstrap failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let build = build.keep();
    fs::set_permissions(&build, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", build.display()));
    fs::rename(&build, &done)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", build.display(), done.display()));
    let _ = writeln!(
        io::stderr().lock(),
        "built cached Debian root {} in {:.1} s",
        root.display(),
        started.elapsed().as_secs_f64()
    );
    root
}

// ---------------------------------------------------------------------------
// A writable copy of the base root for one test
// ---------------------------------------------------------------------------

/// A fresh, writable copy of [`base_root`] for one test: an overlayfs mount
/// over the cached root (upper, work and merged directories in a temporary
/// directory), or a `cp -a` copy where overlayfs is unavailable (or
/// `KILN_TEST_NO_OVERLAY` is set). Dropping it unmounts everything mounted
/// inside and removes it all.
#[allow(dead_code)]
pub struct TestRoot {
    merged: PathBuf,
    overlay: bool,
    // Declared last: dropped after `Drop::drop` has unmounted.
    dir: Option<TempDir>,
}

#[allow(dead_code)]
impl TestRoot {
    pub fn new() -> TestRoot {
        let base = base_root();
        let dir = tempfile::Builder::new()
            .prefix("kiln-root-")
            .tempdir()
            .expect("creating a temporary directory for a test root");
        let merged = dir.path().join("merged");
        fs::create_dir(&merged).expect("creating the merged directory");
        let overlay = match std::env::var_os("KILN_TEST_NO_OVERLAY") {
            Some(_) => Err(io::Error::other("KILN_TEST_NO_OVERLAY is set")),
            None => mount_overlay(&base, dir.path(), &merged),
        };
        let overlay = match overlay {
            Ok(()) => true,
            Err(e) => {
                copy_tree(&base, &merged, &e);
                false
            }
        };
        TestRoot {
            merged,
            overlay,
            dir: Some(dir),
        }
    }

    /// The root directory of the target tree (what `--root` gets).
    pub fn path(&self) -> &Path {
        &self.merged
    }

    /// Whether the copy is an overlay mount (false: a plain `cp -a` copy).
    pub fn is_overlay(&self) -> bool {
        self.overlay
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

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // Also detaches anything a test mounted inside the root (proc,
            // a bind-mounted /dev), so that removal never reaches the host.
            if unmount_below(dir.path()) {
                drop(dir);
            } else {
                let kept = dir.keep();
                let _ = writeln!(
                    io::stderr().lock(),
                    "kiln tests: {} is still mounted; left in place",
                    kept.display()
                );
            }
        }
    }
}

fn mount_overlay(lower: &Path, dir: &Path, merged: &Path) -> io::Result<()> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    fs::create_dir(&upper)?;
    fs::create_dir(&work)?;
    for path in [lower, &upper, &work] {
        let bytes = path.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return Err(io::Error::other(format!(
                "{} cannot be named in overlayfs mount options",
                path.display()
            )));
        }
    }
    let mut options = OsString::from("lowerdir=");
    options.push(lower);
    options.push(",upperdir=");
    options.push(&upper);
    options.push(",workdir=");
    options.push(&work);
    let source = CString::new("overlay").expect("static string");
    let target = cstring(merged.as_os_str())?;
    let options = cstring(&options)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn copy_tree(from: &Path, to: &Path, why: &io::Error) {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        let _ = writeln!(
            io::stderr().lock(),
            "kiln tests: overlay mount failed ({why}); copying test roots with cp -a"
        );
    });
    let output = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from.join("."))
        .arg(to)
        .output()
        .expect("running cp");
    assert!(
        output.status.success(),
        "cp -a {} {} failed: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(io::Error::other)
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = info
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(field))))
        .filter(|mount| mount.starts_with(dir))
        .collect();
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.as_os_str().len()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| (n << 3) | (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Unmounts everything at or below `dir` (lazily when busy). Returns whether
/// nothing is left mounted there, i.e. whether `dir` is safe to remove.
fn unmount_below(dir: &Path) -> bool {
    for mount in mounts_below(dir) {
        let Ok(target) = cstring(mount.as_os_str()) else {
            continue;
        };
        // SAFETY: `target` is a valid NUL-terminated path.
        unsafe {
            if libc::umount2(target.as_ptr(), 0) != 0 {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    mounts_below(dir).is_empty()
}

/// Removes a directory tree, unless something is still mounted inside it.
fn remove_tree(path: &Path) {
    if unmount_below(path) {
        let _ = fs::remove_dir_all(path);
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
#[allow(dead_code)]
pub struct Repo {
    dir: TempDir,
}

#[allow(dead_code)]
impl Repo {
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

// ---------------------------------------------------------------------------
// Running the kiln binary
// ---------------------------------------------------------------------------

/// A command line for the `kiln` binary under test. Arguments are passed in
/// the order the builder methods are called.
#[allow(dead_code)]
pub fn kiln() -> Kiln {
    Kiln {
        command: Command::new(env!("CARGO_BIN_EXE_kiln")),
        line: vec!["kiln".into()],
    }
}

#[allow(dead_code)]
pub struct Kiln {
    command: Command,
    /// For messages: the command line as given.
    line: Vec<String>,
}

#[allow(dead_code)]
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
#[allow(dead_code)]
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (128 + N when killed by signal N).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[allow(dead_code)]
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
    pub fn stderr_lacks(self, needle: &str) -> Outcome {
        if self.stderr.contains(needle) {
            self.fail(&format!("expected stderr not to contain {needle:?}"));
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
/// filesystems, scratch space, kiln's own run reports, caches and logs.
const UNHASHED: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/lib/kiln",
    "var/cache",
    "var/log",
];

/// A sha256 over every entry of the tree at `root` (relative path, file type,
/// permission bits, owner, group, symlink target, device number, content),
/// walked in sorted order, skipping [`UNHASHED`]. Modification times are not
/// part of it. Equal before and after a `--why-run` proves it changed nothing.
#[allow(dead_code)]
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
    hex(&hasher.finalize())
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The host path of `path` (absolute, as seen inside the target) below
/// `root`. Symlinks are not resolved against the root: an absolute link
/// followed from the host points into the host.
#[allow(dead_code)]
pub fn at(root: impl AsRef<Path>, path: &str) -> PathBuf {
    root.as_ref().join(path.trim_start_matches('/'))
}

/// The contents of `path` inside the target, as UTF-8.
#[allow(dead_code)]
pub fn read(root: impl AsRef<Path>, path: &str) -> String {
    let full = at(root, path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The permission bits (including setuid, setgid, sticky) of `path` inside
/// the target; a symlink's own, not its target's.
#[allow(dead_code)]
pub fn mode(root: impl AsRef<Path>, path: &str) -> u32 {
    lstat(root.as_ref(), path).mode() & 0o7777
}

/// `(uid, gid)` of `path` inside the target; a symlink's own.
#[allow(dead_code)]
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
#[allow(dead_code)]
pub fn passwd_entry(root: impl AsRef<Path>, name: &str) -> Option<Vec<String>> {
    colon_entry(root.as_ref(), "/etc/passwd", name)
}

/// The fields of `name`'s line in the target's /etc/group
/// (`[name, x, gid, members]`).
#[allow(dead_code)]
pub fn group_entry(root: impl AsRef<Path>, name: &str) -> Option<Vec<String>> {
    colon_entry(root.as_ref(), "/etc/group", name)
}

fn colon_entry(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    read(root, file)
        .lines()
        .map(|line| line.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|fields| fields[0] == name)
}
