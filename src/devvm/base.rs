//! The base Debian root every dev VM image starts from: minbase of the
//! release asked for (trixie unless told otherwise) with a kernel, systemd,
//! udev, dbus and openssh-server, built once with mmdebstrap and cached
//! under a key that hashes its recipe.

use std::path::PathBuf;

use super::{Event, tools};
use crate::error::{Error, RunError};
use crate::platform::rootfs::{self, Recipe};

/// The smallest set that boots under systemd, gets an address by DHCP
/// (networkd needs udev), powers off on ACPI (logind needs dbus), serves
/// ssh, and lets kiln manage users, services and packages; and sudo, which
/// a Vagrant box's user needs.
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
    "sudo",
];

/// Bump `version` when the way the root is built changes without the
/// package list changing. Its suite is a default: see [`recipe_on`].
pub const RECIPE: Recipe = Recipe {
    version: "kiln-devvm-base/1",
    suite: rootfs::DEFAULT_SUITE,
    variant: "minbase",
    include: INCLUDE,
    files: FILES,
};

/// The initramfs holds only what finds the root on a VM's disk (virtio,
/// SCSI or SATA; ext4) instead of Debian's `MODULES=most`: 36 MB that the
/// guest kernel unpacks and udev loads through at every boot, which under
/// TCG cost about 5 s of the kernel's 11. A kernel upgraded in the VM gets
/// the same.
pub const FILES: &[(&str, &str)] = &[
    (
        "/etc/initramfs-tools/conf.d/kiln-devvm",
        "# written by kiln devvm: only the modules that find the root disk\n\
         MODULES=list\n\
         RESUME=none\n",
    ),
    (
        "/usr/share/initramfs-tools/modules.d/kiln-devvm",
        "# written by kiln devvm: the root disk on virtio, SCSI or SATA, and ext4\n\
         virtio_pci\nvirtio_blk\nvirtio_scsi\nsd_mod\nahci\nata_piix\next4\ncrc32c_generic\n",
    ),
];

/// The release a dev VM runs unless asked for another: new hosts and new
/// developer VMs are on Debian 13.
pub const DEFAULT_RELEASE: &str = "trixie";

/// The recipe for Debian release `codename`.
pub fn recipe_on(codename: &str) -> Result<Recipe, RunError> {
    RECIPE.on(codename)
}

/// The recipe as text, for the image key.
pub fn recipe(codename: &str) -> Result<String, RunError> {
    Ok(recipe_on(codename)?.text())
}

pub fn key(codename: &str) -> Result<String, RunError> {
    Ok(recipe_on(codename)?.key())
}

/// The cached root (`~/.cache/kiln/roots/<key>/root`, shared with `kiln
/// test`'s machinery) of release `codename`, built now with mmdebstrap if
/// missing. Never written to: copy it.
pub fn root(codename: &str, on: &dyn Fn(Event)) -> Result<PathBuf, Error> {
    tools::require(&[tools::MMDEBSTRAP])?;
    rootfs::base_root(&recipe_on(codename)?, &|msg: &str| {
        on(Event::Step(format!(
            "{msg}: kernel, systemd, udev, dbus, openssh-server"
        )))
    })
    .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_short() {
        assert_eq!(key("trixie").unwrap(), key("trixie").unwrap());
        assert_eq!(key("trixie").unwrap().len(), 16);
        assert_ne!(key("trixie").unwrap(), key("bookworm").unwrap());
        assert!(recipe("trixie").unwrap().contains("suite=trixie\n"));
        assert!(recipe("bookworm").unwrap().contains("openssh-server"));
        assert!(
            recipe("bookworm")
                .unwrap()
                .contains("file=/etc/initramfs-tools/conf.d/kiln-devvm sha256="),
            "the initramfs configuration is part of the key"
        );
    }
}
