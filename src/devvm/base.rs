//! The base Debian root every dev VM image starts from: bookworm minbase
//! with a kernel, systemd, udev, dbus and openssh-server, built once with
//! mmdebstrap and cached under a key that hashes its recipe.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use fs2::FileExt;
use sha2::{Digest, Sha256};

use super::{hex, paths, run, step, tools};
use crate::error::{Error, IoContext};

/// Bump when the way the root is built changes without the lists below changing.
const RECIPE_VERSION: &str = "kiln-devvm-base/1";
const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
/// The smallest set that boots under systemd, gets an address by DHCP
/// (networkd needs udev), powers off on ACPI (logind needs dbus), serves
/// ssh, and lets kiln manage users, services and packages.
pub const INCLUDE: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "ca-certificates",
    "iproute2",
    "passwd",
    "procps",
    "init-system-helpers",
];

/// The recipe as text: what the cache key hashes.
pub fn recipe() -> String {
    format!(
        "recipe={RECIPE_VERSION}\nsuite={SUITE}\nvariant={VARIANT}\ninclude={}\n",
        INCLUDE.join(",")
    )
}

pub fn key() -> String {
    let mut k = hex(&Sha256::digest(recipe().as_bytes()));
    k.truncate(16);
    k
}

/// The cached root, built now if missing. Never written to: copy it.
pub fn root() -> Result<PathBuf, Error> {
    let dir = paths::base_dir();
    let key = key();
    let done = dir.join(&key);
    let root = done.join("root");
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    tools::require(&[tools::MMDEBSTRAP])?;
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).ctx(|| format!("opening {}", lock_path.display()))?;
    lock.lock_exclusive()
        .ctx(|| format!("locking {}", lock_path.display()))?;
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    // Leftovers of a killed build.
    let prefix = format!("{key}.build-");
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    if done.exists() {
        let _ = fs::remove_dir_all(&done);
    }
    step(format!(
        "building the base Debian root ({SUITE}/{VARIANT} + kernel, systemd, openssh-server) once, in {}",
        done.display()
    ));
    let started = Instant::now();
    let build = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&dir)
        .ctx(|| format!("creating a build directory in {}", dir.display()))?;
    run(
        Command::new("mmdebstrap")
            .arg(format!("--variant={VARIANT}"))
            .arg("--mode=root")
            .arg("--format=directory")
            .arg(format!("--include={}", INCLUDE.join(",")))
            .arg(SUITE)
            .arg(build.path().join("root")),
        "mmdebstrap",
    )?;
    let build = build.keep();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&build, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", build.display()))?;
    fs::rename(&build, &done).ctx(|| format!("renaming {}", build.display()))?;
    step(format!(
        "base root ready in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_short() {
        assert_eq!(key(), key());
        assert_eq!(key().len(), 16);
        assert!(recipe().contains("openssh-server"));
    }
}
