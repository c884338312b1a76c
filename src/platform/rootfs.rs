//! Debian roots for throwaway targets: a base root built once with
//! mmdebstrap and cached by the sha256 of its recipe, and copy-on-write
//! overlays of it that cost nothing to make or throw away.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fs2::FileExt;
use sha2::{Digest, Sha256};

use crate::error::{CommandFailed, RunError};

/// What goes into a base root; the cache key is a hash of all of it. This is
/// the one builder of Debian roots: `kiln test`, `kiln devvm`, the
/// benchmarks and the integration tests all come here. The constants name
/// the default release; [`Recipe::on`] gives the same recipe for another.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub version: &'static str,
    pub suite: &'static str,
    pub variant: &'static str,
    pub include: &'static [&'static str],
    /// Files (path in the root, content) in place before any package is
    /// installed, so that packages configure themselves by them: a
    /// kernel's initramfs is generated once, the way the files say.
    pub files: &'static [(&'static str, &'static str)],
}

pub const TEST_ROOT: Recipe = Recipe {
    version: "kiln-test-root/1",
    suite: DEFAULT_SUITE,
    variant: "minbase",
    include: &["init-system-helpers", "passwd", "procps"],
    files: &[],
};

/// [`TEST_ROOT`] with sshd: the test hosts of the fleet tests and benchmark.
pub const SSH_TEST_ROOT: Recipe = Recipe {
    include: &["init-system-helpers", "passwd", "procps", "openssh-server"],
    ..TEST_ROOT
};

/// The release roots are built for unless one is asked for.
pub const DEFAULT_SUITE: &str = "bookworm";

impl Recipe {
    /// This recipe for Debian release `codename` (its suite). The host's
    /// debian-archive-keyring must hold that release's keys (bookworm's
    /// 2023.3+deb12u2 holds trixie's); mmdebstrap checks every signature.
    pub fn on(&self, codename: &str) -> Result<Recipe, RunError> {
        let suite = crate::platform::facts::DEBIAN_RELEASES
            .iter()
            .map(|(c, _)| *c)
            .find(|c| *c == codename)
            .ok_or_else(|| {
                RunError::precondition(format!("kiln cannot build a root of release {codename:?}"))
                    .fix(format!(
                        "use one of: {}",
                        crate::platform::facts::DEBIAN_RELEASES
                            .iter()
                            .map(|(c, _)| *c)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
            })?;
        Ok(Recipe { suite, ..*self })
    }

    pub fn key(&self) -> String {
        hex::encode(&Sha256::digest(self.text().as_bytes())[..8])
    }

    /// Everything the root is built from, as text: what [`Recipe::key`]
    /// hashes. A recipe without files has the text (and so the key) it had
    /// before recipes could carry files.
    pub fn text(&self) -> String {
        let mut text = format!(
            "recipe={}\nsuite={}\nvariant={}\ninclude={}\n",
            self.version,
            self.suite,
            self.variant,
            self.include.join(",")
        );
        for (path, content) in self.files {
            text.push_str(&format!(
                "file={path} sha256={}\n",
                crate::digest::sha256_hex(content.as_bytes())
            ));
        }
        text
    }

    /// Writes the recipe's files under `stage`, as they go into the root.
    fn stage_files(&self, stage: &Path) -> Result<(), RunError> {
        for (path, content) in self.files {
            let to = stage.join(path.trim_start_matches('/'));
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(|e| RunError::io("create", dir.display(), e))?;
            }
            fs::write(&to, content).map_err(|e| RunError::io("write", to.display(), e))?;
        }
        Ok(())
    }
}

/// `~/.cache/kiln` (or `$XDG_CACHE_HOME/kiln`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("kiln")
}

/// The cached base root for `recipe`, built with mmdebstrap when missing.
/// Concurrent callers wait for one build; a killed build leaves nothing
/// that looks finished (it is renamed into place only when complete).
pub fn base_root(recipe: &Recipe, progress: &dyn Fn(&str)) -> Result<PathBuf, RunError> {
    let dir = cache_dir().join("roots");
    let key = recipe.key();
    let done = dir.join(&key);
    let root = done.join("root");
    if root.is_dir() {
        return Ok(root);
    }
    fs::create_dir_all(&dir).map_err(|e| RunError::io("create", dir.display(), e))?;
    let lock_path = dir.join(format!("{key}.lock"));
    let lock =
        File::create(&lock_path).map_err(|e| RunError::io("open", lock_path.display(), e))?;
    lock.lock_exclusive()
        .map_err(|e| RunError::io("lock", lock_path.display(), e))?;
    if root.is_dir() {
        return Ok(root);
    }
    if super::which("mmdebstrap").is_none() {
        return Err(RunError::precondition("mmdebstrap is not installed")
            .fix("install it with: apt-get install -y mmdebstrap"));
    }
    // mmdebstrap checks the archive's signatures with the host's keyring: a
    // release newer than the keyring fails there, with a vaguer message.
    if !has_release_keys(recipe.suite) {
        return Err(RunError::precondition(format!(
            "this host's debian-archive-keyring has no keys of {} (no {KEYRINGS}/debian-archive-{}-stable.gpg)",
            recipe.suite, recipe.suite
        ))
        .fix("update it with: apt-get update && apt-get install -y debian-archive-keyring (bookworm's 2023.3+deb12u2 holds trixie's keys)"));
    }
    // Leftovers of a killed build.
    let prefix = format!("{key}.build-");
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            remove_tree(&e.path());
        }
    }
    progress(&format!(
        "building the base Debian root ({} {}, once; about a minute)",
        recipe.suite, recipe.variant
    ));
    let build = dir.join(format!("{prefix}{}", std::process::id()));
    fs::create_dir_all(&build).map_err(|e| RunError::io("create", build.display(), e))?;
    let mut mmdebstrap = Command::new("mmdebstrap");
    if !recipe.files.is_empty() {
        let stage = build.join("files");
        recipe.stage_files(&stage)?;
        // Copied in before the first package is unpacked; mmdebstrap runs
        // the hook with the root as $1.
        let stage = shlex::try_quote(&stage.to_string_lossy())
            .map_err(|_| {
                RunError::io("quote", stage.display(), io::ErrorKind::InvalidInput.into())
            })?
            .into_owned();
        mmdebstrap.arg(format!("--setup-hook=cp -R -- {stage}/. \"$1\"/"));
    }
    let out = mmdebstrap
        .arg(format!("--variant={}", recipe.variant))
        .arg("--mode=root")
        .arg("--format=directory")
        .arg(format!("--include={}", recipe.include.join(",")))
        .arg(recipe.suite)
        .arg(build.join("root"))
        .output()
        .map_err(|e| RunError::spawn("mmdebstrap", e))?;
    if !out.status.success() {
        remove_tree(&build);
        let tail = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        let mut failed = CommandFailed::new(&["mmdebstrap"], out.status, tail);
        failed.quoted = false;
        return Err(failed.into());
    }
    fs::rename(&build, &done).map_err(|e| RunError::io("rename", build.display(), e))?;
    Ok(root)
}

const KEYRINGS: &str = "/usr/share/keyrings";

/// Whether debian-archive-keyring holds a release's archive keys (named
/// `.gpg`, or `.pgp` as newer versions name them). A host without Debian's
/// keyrings at all is left to mmdebstrap's own checks.
fn has_release_keys(suite: &str) -> bool {
    !Path::new(KEYRINGS).is_dir()
        || ["gpg", "pgp"].iter().any(|ext| {
            Path::new(KEYRINGS)
                .join(format!("debian-archive-{suite}-stable.{ext}"))
                .exists()
        })
}

/// A writable copy-on-write view of a base root; unmounted and removed on drop
/// unless kept.
pub struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
    keep: bool,
}

impl Overlay {
    pub fn new(lower: &Path, parent: &Path, name: &str) -> Result<Overlay, RunError> {
        Overlay::stacked(&[lower.to_path_buf()], parent, name)
    }

    /// An overlay of several read-only layers, the topmost first: `kiln
    /// test`'s checkpoints over a base root.
    pub fn stacked(lower: &[PathBuf], parent: &Path, name: &str) -> Result<Overlay, RunError> {
        fs::create_dir_all(parent).map_err(|e| RunError::io("create", parent.display(), e))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(parent)
            .map_err(|e| RunError::io("create a directory in", parent.display(), e))?
            .keep();
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).map_err(|e| RunError::io("create", d.display(), e))?;
        }
        if let Err(e) = mount_overlay(lower, &upper, &work, &merged) {
            let _ = fs::remove_dir_all(&dir);
            return Err(RunError::precondition(format!(
                "cannot mount an overlay at {}: {e}",
                merged.display()
            ))
            .fix("kiln test needs root and overlayfs"));
        }
        Ok(Overlay {
            dir,
            merged,
            keep: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.merged
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the overlay keeps what was changed through it.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Leaves the overlay mounted when dropped, for a person to look at;
    /// marked so, so that a later cleanup of leftovers spares it.
    pub fn keep(&mut self) {
        self.keep = true;
        let _ = fs::write(self.dir.join(KEPT), "");
    }

    /// Unmounts the overlay, leaving its upper directory (the changes made
    /// through it) to be kept as a layer of another.
    pub fn unmount(mut self) -> Result<Unmounted, RunError> {
        self.keep = true;
        if !unmount_below(&self.merged) {
            return Err(RunError::precondition(format!(
                "{} stays mounted",
                self.merged.display()
            )));
        }
        Ok(Unmounted {
            dir: self.dir.clone(),
        })
    }
}

/// The mark of an overlay kept on purpose (`--keep`).
pub const KEPT: &str = "kept";

/// An unmounted overlay's directories, removed on drop.
pub struct Unmounted {
    dir: PathBuf,
}

impl Unmounted {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
}

impl Drop for Unmounted {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if !self.keep {
            remove_tree(&self.dir);
        }
    }
}

fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> io::Result<()> {
    for path in lower.iter().map(PathBuf::as_path).chain([upper, work]) {
        if path
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(io::Error::other(format!(
                "{} cannot be named in overlayfs mount options (',', ':' or '\\')",
                path.display()
            )));
        }
    }
    let mut options = OsString::from("lowerdir=");
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            options.push(":");
        }
        options.push(l);
    }
    // An upper directory may become a lower layer of another overlay (a
    // checkpoint): nothing in it may need a feature to be read back.
    options.push(",index=off,metacopy=off,redirect_dir=off");
    options.push(",upperdir=");
    options.push(upper);
    options.push(",workdir=");
    options.push(work);
    let source = c"overlay";
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

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(io::Error::other)
}

/// Every mount point of this system, from /proc/self/mountinfo.
pub fn mount_points() -> Vec<PathBuf> {
    mounts_below(Path::new("/"))
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

/// Unmounts everything at or below `dir`, deepest first (lazily when busy).
/// Returns whether nothing is left mounted there, i.e. whether removing
/// `dir` cannot reach into a mount.
pub fn unmount_below(dir: &Path) -> bool {
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

/// Unmounts everything mounted at or below `path`, then deletes the tree;
/// leaves it in place when something there stays mounted.
pub fn remove_tree(path: &Path) {
    if unmount_below(path) {
        let _ = fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_recipe() {
        assert_eq!(TEST_ROOT.key().len(), 16);
        assert_eq!(TEST_ROOT.key(), "a23ba8f150240707");
        assert_ne!(SSH_TEST_ROOT.key(), TEST_ROOT.key());
        // The suite is part of the key; bookworm's stays what it was.
        let trixie = TEST_ROOT.on("trixie").unwrap();
        assert_eq!(trixie.suite, "trixie");
        assert_eq!(trixie.key(), "e8563c9e4d94f41c");
        assert_eq!(TEST_ROOT.on("bookworm").unwrap().key(), TEST_ROOT.key());
        assert!(TEST_ROOT.on("sarge; rm -rf /").is_err());
        // This bookworm host's keyring holds both releases' keys.
        if Path::new("/usr/share/keyrings/debian-archive-bookworm-stable.gpg").exists() {
            assert!(has_release_keys("bookworm") && has_release_keys("trixie"));
            assert!(!has_release_keys("sarge"));
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape_mountinfo(br"/plain\"), b"/plain\\");
    }
}
