//! An image's disk, made from its tree without mounting anything: an MBR
//! with one partition (sfdisk), an ext4 filesystem made into it from the
//! tree (`mke2fs -d` at the partition's offset), and GRUB's BIOS boot code
//! in the MBR and in the gap before the partition.
//!
//! The disk boots by itself, so a vagrant-libvirt box needs no kernel or
//! initrd file beside it: under `qemu:///system` QEMU runs as its own user
//! and cannot read files under the builder's home. GRUB's core image holds
//! its whole configuration (rescue mode, no `grub.cfg` and no modules in
//! the tree) and boots `/vmlinuz` and `/initrd.img`, the links Debian's
//! kernel packages keep, so a kernel upgraded inside the VM is the one
//! booted next. `kiln devvm up` still boots the kernel directly (QEMU loads
//! it far faster than BIOS disk reads under TCG); both find the root by its
//! label.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{DevvmError, run, tools};
use crate::error::{Error, IoContext};

/// The root filesystem's label: the kernel command line and the fstab
/// name it, so that the root is found however the disk is attached.
pub const ROOT_LABEL: &str = "kiln-root";
/// Where the root partition starts: 1 MiB, the usual alignment, which
/// leaves GRUB the sectors before it.
pub const PARTITION_OFFSET: u64 = 1 << 20;
/// GRUB's BIOS images and modules (Debian's `grub-pc-bin`).
const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
/// The part of the MBR that is boot code; the disk signature and the
/// partition table follow it.
const MBR_CODE: usize = 440;
const SECTOR: u64 = 512;
/// What GRUB loads: the partition, and the modules that read it and boot
/// Linux (their dependencies are added by grub-mkimage).
const GRUB_MODULES: &[&str] = &["biosdisk", "part_msdos", "ext2", "linux", "boot"];

/// The kernel command line of a disk's own boot: the root by label, the
/// console on the serial port (last, so that it is /dev/console) and on
/// the screen.
pub fn boot_cmdline() -> String {
    format!("root=LABEL={ROOT_LABEL} rw console=tty0 console=ttyS0")
}

/// GRUB's configuration, embedded in its core image.
fn grub_config(cmdline: &str) -> String {
    format!("set root=(hd0,msdos1)\nlinux /vmlinuz {cmdline}\ninitrd /initrd.img\nboot\n")
}

/// The host programs [`make`] runs.
pub fn require_tools() -> Result<(), DevvmError> {
    tools::require(&[tools::MKE2FS, tools::SFDISK, tools::GRUB_MKIMAGE])?;
    if !Path::new(GRUB_DIR).join("boot.img").is_file() {
        return Err(DevvmError::MissingTools {
            programs: vec!["GRUB's BIOS boot images (/usr/lib/grub/i386-pc)"],
            packages: vec![tools::GRUB_MKIMAGE.package],
        });
    }
    Ok(())
}

/// Writes a bootable raw disk of `size` bytes at `out` from `tree`;
/// `scratch` holds GRUB's core image while it is made.
pub fn make(tree: &Path, out: &Path, size: u64, scratch: &Path) -> Result<(), Error> {
    for link in ["vmlinuz", "initrd.img"] {
        if fs::symlink_metadata(tree.join(link)).is_err() {
            return Err(DevvmError::NoBootLink {
                link: format!("/{link}"),
            }
            .into());
        }
    }
    File::create(out)
        .and_then(|f| f.set_len(size))
        .ctx(|| format!("creating {}", out.display()))?;
    partition(out)?;
    let blocks = (size - PARTITION_OFFSET) / 4096;
    run(
        Command::new(crate::platform::which("mke2fs").unwrap_or_else(|| "mke2fs".into()))
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", ROOT_LABEL])
            .arg("-E")
            .arg(format!("offset={PARTITION_OFFSET}"))
            .arg("-d")
            .arg(tree)
            .arg(out)
            .arg(blocks.to_string()),
        "mke2fs",
    )?;
    install_grub(out, scratch)
}

/// One bootable Linux partition from [`PARTITION_OFFSET`] to the end.
fn partition(disk: &Path) -> Result<(), Error> {
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DevvmError::ToolCouldNotRun {
            what: "partitioning the disk".into(),
            program: "sfdisk".into(),
            source,
        })?;
    let script = format!(
        "label: dos\nstart={}, type=83, bootable\n",
        PARTITION_OFFSET / SECTOR
    );
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .ctx(|| "writing sfdisk's script".to_string())?;
    }
    let out = child
        .wait_with_output()
        .ctx(|| "waiting for sfdisk".to_string())?;
    if !out.status.success() {
        return Err(DevvmError::ToolFailed {
            what: "partitioning the disk".into(),
            status: out.status,
            output: vec![String::from_utf8_lossy(&out.stderr).trim().to_string()],
        }
        .into());
    }
    Ok(())
}

/// GRUB's boot sector code into the MBR (its partition table kept) and
/// its core image into the sectors after it, as grub-install does on a
/// device.
fn install_grub(disk: &Path, scratch: &Path) -> Result<(), Error> {
    let cfg = scratch.join("grub-embedded.cfg");
    fs::write(&cfg, grub_config(&boot_cmdline())).ctx(|| format!("writing {}", cfg.display()))?;
    let core = scratch.join("core.img");
    run(
        Command::new("grub-mkimage")
            .args([
                "-O",
                "i386-pc",
                "-d",
                GRUB_DIR,
                "-p",
                "(hd0,msdos1)/boot/grub",
                "-c",
            ])
            .arg(&cfg)
            .arg("-o")
            .arg(&core)
            .args(GRUB_MODULES),
        "grub-mkimage",
    )?;
    let core = fs::read(&core).ctx(|| format!("reading {}", core.display()))?;
    let room = PARTITION_OFFSET - SECTOR;
    if core.len() as u64 > room {
        return Err(DevvmError::GrubTooBig {
            bytes: core.len() as u64,
            room,
        }
        .into());
    }
    let mut boot = [0u8; SECTOR as usize];
    let boot_img = Path::new(GRUB_DIR).join("boot.img");
    File::open(&boot_img)
        .and_then(|mut f| f.read_exact(&mut boot))
        .ctx(|| format!("reading {}", boot_img.display()))?;
    let mut f = OpenOptions::new()
        .write(true)
        .open(disk)
        .ctx(|| format!("opening {}", disk.display()))?;
    f.write_all(&boot[..MBR_CODE])
        .and_then(|()| f.seek(SeekFrom::Start(SECTOR)).map(drop))
        .and_then(|()| f.write_all(&core))
        .and_then(|()| f.sync_all())
        .ctx(|| format!("writing GRUB into {}", disk.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_boots_debians_kernel_links_with_the_root_by_label() {
        let c = grub_config(&boot_cmdline());
        assert!(c.starts_with("set root=(hd0,msdos1)\n"), "{c}");
        assert!(
            c.contains("linux /vmlinuz root=LABEL=kiln-root rw console=tty0 console=ttyS0\n"),
            "{c}"
        );
        assert!(c.contains("initrd /initrd.img\nboot\n"), "{c}");
    }
}
