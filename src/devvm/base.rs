//! The base Debian root every dev VM image starts from: bookworm minbase
//! with a kernel, systemd, udev, dbus and openssh-server, built once with
//! mmdebstrap and cached under a key that hashes its recipe.

use std::path::PathBuf;

use super::{step, tools};
use crate::error::Error;
use crate::platform::rootfs::{self, Recipe};

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

/// Bump `version` when the way the root is built changes without the
/// package list changing.
pub const RECIPE: Recipe = Recipe {
    version: "kiln-devvm-base/1",
    suite: "bookworm",
    variant: "minbase",
    include: INCLUDE,
};

/// The recipe as text, for the image key.
pub fn recipe() -> String {
    format!(
        "recipe={}\nsuite={}\nvariant={}\ninclude={}\n",
        RECIPE.version,
        RECIPE.suite,
        RECIPE.variant,
        RECIPE.include.join(",")
    )
}

pub fn key() -> String {
    RECIPE.key()
}

/// The cached root (`~/.cache/kiln/roots/<key>/root`, shared with `kiln
/// test`'s machinery), built now with mmdebstrap if missing. Never written
/// to: copy it.
pub fn root() -> Result<PathBuf, Error> {
    tools::require(&[tools::MMDEBSTRAP])?;
    rootfs::base_root(&RECIPE, &|msg: &str| {
        step(format!(
            "{msg}: kernel, systemd, udev, dbus, openssh-server"
        ))
    })
    .map_err(Error::from)
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
