//! A pin fetched once is not lost on that machine. `kiln test` and dev VM
//! image builds keep the packages they download in kiln's cache
//! (`~/.cache/kiln/apt/archives`, files named as apt names them); when the
//! archive has dropped a pinned version, the cached file is served to the
//! target as a flat repository inside it, before any fallback source or
//! substitution is tried.
//!
//! The repository is marked trusted: its files are ones apt already
//! checked against a signed index when it downloaded them into the cache,
//! which only root on this machine writes.

use std::path::{Path, PathBuf};

use super::deb822::paragraph;
use super::rootfs;
use super::target::{Target, capture};
use super::tfs::{Owner as Ids, atomic_write, sha256_file};
use crate::error::RunError;

/// Where the cached packages are put inside the target.
const DIR: &str = "/var/cache/kiln/pins";
/// The apt source that names them.
pub const SOURCES: &str = "/etc/apt/sources.list.d/kiln-pins.sources";

/// The package files of kiln's cache.
pub fn archives() -> PathBuf {
    rootfs::cache_dir().join("apt").join("archives")
}

/// apt's file name for a package version, without the architecture:
/// `name_version_` with the epoch's colon escaped as apt does.
fn prefix(name: &str, version: &str) -> String {
    format!("{name}_{}_", version.replace(':', "%3a"))
}

/// Serves the cached files of `pins` to the target; false when the cache
/// holds none of them (nothing was written).
pub fn serve(target: &Target, pins: &[(String, String)]) -> Result<bool, RunError> {
    let Ok(entries) = std::fs::read_dir(archives()) else {
        return Ok(false);
    };
    let names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    let found: Vec<&String> = pins
        .iter()
        .filter_map(|(n, v)| {
            let p = prefix(n, v);
            names.iter().find(|f| f.starts_with(&p))
        })
        .collect();
    if found.is_empty() {
        return Ok(false);
    }
    let tfs = target.fs();
    tfs.create_dir_all(DIR, 0o755)
        .map_err(|e| RunError::io("create", format_args!("{DIR} in the target"), e))?;
    let mut index = String::new();
    for file in found {
        let bytes = std::fs::read(archives().join(file)).map_err(|e| {
            RunError::io("read", format_args!("{file} from kiln's package cache"), e)
        })?;
        let path = format!("{DIR}/{file}");
        atomic_write(tfs, &path, &bytes, 0o644, Ids::default())?;
        let out = capture(target.command(&["dpkg-deb", "-f", &path]))
            .map_err(|e| RunError::io("run", "dpkg-deb", e))?;
        if !out.status.success() {
            // A damaged file in the cache is no source: leave it out.
            let _ = tfs.remove_file(&path);
            continue;
        }
        let control = String::from_utf8_lossy(&out.stdout);
        index.push_str(control.trim_end());
        let sha256 = sha256_file(tfs, &path).map_err(|e| RunError::io("read", &path, e))?;
        index.push('\n');
        index.push_str(&paragraph([
            ("Filename", format!("./{file}")),
            ("Size", bytes.len().to_string()),
            ("SHA256", sha256),
        ]));
        index.push('\n');
    }
    if index.is_empty() {
        return Ok(false);
    }
    atomic_write(
        tfs,
        format!("{DIR}/Packages"),
        index.as_bytes(),
        0o644,
        Ids::default(),
    )?;
    let sources =
        String::from("# Written by kiln: pinned versions from kiln's own package cache.\n")
            + &paragraph([
                ("Types", "deb".to_string()),
                ("URIs", format!("file:{DIR}")),
                ("Suites", "./".to_string()),
                ("Trusted", "yes".to_string()),
            ]);
    atomic_write(tfs, SOURCES, sources.as_bytes(), 0o644, Ids::default())?;
    Ok(true)
}

/// Keeps the package files of `dir` (a target's apt archive) in kiln's cache.
pub fn keep(dir: &Path) {
    copy_files(dir, &archives());
}

/// Copies the regular files of `from` that `to` lacks (or has at another
/// size), each through a temporary name: the package cache that spares warm
/// runs the download.
pub fn copy_files(from: &Path, to: &Path) {
    for (file, dest) in missing_files(from, to) {
        let _ = super::hostfile::replace_with(&dest, |f| {
            std::io::copy(&mut std::fs::File::open(file)?, f).map(drop)
        });
    }
}

/// [`copy_files`] into a throwaway target (a `kiln test` overlay): plain
/// copies, without the fsync of each file and directory, since a crash
/// discards the target anyway. A cached index and archive are some 200
/// files, and each fsync waits for the disk.
pub fn stage_files(from: &Path, to: &Path) {
    for (file, dest) in missing_files(from, to) {
        let _ = std::fs::copy(file, dest);
    }
}

/// The regular files of `from` (never what a link there points to, never
/// apt's lock, never a dot file) that `to` lacks or has at another size,
/// with where each goes. Dot files are the temporaries of a copy under way
/// (roles tested at once fill the cache together): staged into a target
/// and copied back, a half-written one would stay in the cache for good.
fn missing_files(from: &Path, to: &Path) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Vec::new();
    };
    let _ = std::fs::create_dir_all(to);
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.path().symlink_metadata().ok()?;
            let name = e.file_name();
            if !meta.is_file() || name == "lock" || name.as_encoded_bytes().starts_with(b".") {
                return None;
            }
            let dest = to.join(&name);
            let same = std::fs::metadata(&dest).is_ok_and(|m| m.len() == meta.len());
            (!same).then(|| (e.path(), dest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_escape_the_epoch_as_apt_does() {
        assert_eq!(
            prefix("mariadb-server", "1:11.8.6-0+deb13u1"),
            "mariadb-server_1%3a11.8.6-0+deb13u1_"
        );
        assert_eq!(prefix("sudo", "1.9.16p2-3"), "sudo_1.9.16p2-3_");
    }

    /// Roles tested at once copy the same package into the cache while
    /// others stage it: a reader sees no file or the whole one, and no
    /// temporary is staged or kept.
    #[test]
    fn concurrent_copies_show_a_reader_the_whole_file_or_none() {
        let (from, cache, target) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let deb: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(from.path().join("big_1.0_amd64.deb"), &deb).unwrap();
        // A copy under way elsewhere, as the cache's own temporary names it.
        std::fs::write(cache.path().join(".tmpAbC123"), &deb[..100]).unwrap();
        let dest = cache.path().join("big_1.0_amd64.deb");
        let writing = std::sync::atomic::AtomicUsize::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    copy_files(from.path(), cache.path());
                    writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            let mut reads = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 || reads == 0 {
                if let Ok(seen) = std::fs::read(&dest) {
                    assert!(
                        seen == deb,
                        "a reader saw {} of {} bytes",
                        seen.len(),
                        deb.len()
                    );
                }
                reads += 1;
            }
        });
        stage_files(cache.path(), target.path());
        let names = |d: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(target.path()), ["big_1.0_amd64.deb"]);
        assert_eq!(
            std::fs::read(target.path().join("big_1.0_amd64.deb")).unwrap(),
            deb
        );
        // Copied back from the target, the cache gains no temporary either.
        std::fs::write(target.path().join(".tmpXyZ789"), b"half").unwrap();
        copy_files(target.path(), cache.path());
        assert_eq!(names(cache.path()), [".tmpAbC123", "big_1.0_amd64.deb"]);
    }
}
