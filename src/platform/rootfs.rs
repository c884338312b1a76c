//! Debian roots for throwaway targets: a base root built once with
//! mmdebstrap and cached by the sha256 of its recipe, and copy-on-write
//! overlays of it that cost nothing to make or throw away.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use fs2::FileExt;
use sha2::{Digest, Sha256};

use crate::error::{CommandFailed, RunError};

/// What goes into a base root. The key is shared with the test harness
/// (tests/support), so `kiln test` and `cargo test` use one cached root.
pub struct Recipe {
    pub version: &'static str,
    pub suite: &'static str,
    pub variant: &'static str,
    pub include: &'static [&'static str],
}

pub const TEST_ROOT: Recipe = Recipe {
    version: "kiln-test-root/1",
    suite: "bookworm",
    variant: "minbase",
    include: &["init-system-helpers", "passwd", "procps"],
};

impl Recipe {
    pub fn key(&self) -> String {
        let text = format!(
            "recipe={}\nsuite={}\nvariant={}\ninclude={}\n",
            self.version,
            self.suite,
            self.variant,
            self.include.join(",")
        );
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
    if which("mmdebstrap").is_none() {
        return Err(RunError::precondition("mmdebstrap is not installed")
            .fix("install it with: apt-get install -y mmdebstrap"));
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
    let out = Command::new("mmdebstrap")
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

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|c| c.is_file())
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
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .output()
            .map_err(|e| RunError::spawn("mount", e))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            let tail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(
                RunError::precondition(format!("cannot mount an overlay: {tail}"))
                    .fix("kiln test needs root and overlayfs"),
            );
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

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if !self.keep {
            remove_tree(&self.dir);
        }
    }
}

/// Unmounts everything mounted at or below `path`, deepest first (lazily if
/// busy), then deletes the tree, never following into a mount.
pub fn remove_tree(path: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut below: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(path))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &below {
        let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: a valid C string; umount2 only reads it.
        unsafe {
            if libc::umount2(c.as_ptr(), 0) != 0 {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    let still = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m).starts_with(path));
    if !still {
        let _ = fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_the_test_harness() {
        // tests/support computes the same key for the same recipe.
        assert_eq!(TEST_ROOT.key().len(), 16);
        assert_eq!(TEST_ROOT.key(), "a23ba8f150240707");
    }
}
