//! Where developer VMs keep their files: everything under
//! `$XDG_CACHE_HOME/kiln` (default `~/.cache/kiln`).
//!
//! ```text
//! roots/<key>/root                the cached Debian root (mmdebstrap, see platform::rootfs)
//! devvm/images/<sha256>/          one built image: disk.qcow2, vmlinuz, initrd.img, manifest.json
//! devvm/vms/<name>/               one VM: overlay.qcow2, state.json, qemu.pid, qmp.sock, serial.log
//! devvm/boxes/                    vagrant boxes
//! devvm/id_ed25519                the engineer's key, authorized for root in every image
//! accel/<host>.json               the KVM probe's verdict for this host
//! ```
//!
//! The engineer's work is not cache: a VM's default app directory lives
//! under `$XDG_DATA_HOME/kiln/devvm/<name>/app` (default
//! `~/.local/share/...`), apart from the VM's state, so that `destroy`
//! keeps it.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Where VMs live instead of the cache, when the command line says so
/// (`KILN_DEVVM_VMS`: tests keep their VMs apart). Set once, at start.
static VMS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Moves VM state to `dir` for the rest of the process.
pub fn set_vms_dir(dir: PathBuf) {
    let _ = VMS_DIR.set(dir);
}

/// `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`: the one cache of kiln.
pub fn cache_root() -> PathBuf {
    crate::platform::rootfs::cache_dir()
}

pub fn devvm_dir() -> PathBuf {
    cache_root().join("devvm")
}

pub fn images_dir() -> PathBuf {
    devvm_dir().join("images")
}

/// VM state (see [`set_vms_dir`]).
pub fn vms_dir() -> PathBuf {
    VMS_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| devvm_dir().join("vms"))
}

pub fn boxes_dir() -> PathBuf {
    devvm_dir().join("boxes")
}

pub fn accel_dir() -> PathBuf {
    cache_root().join("accel")
}

/// `$XDG_DATA_HOME/kiln/devvm`, else `~/.local/share/kiln/devvm`: what
/// kiln keeps of the engineer's across VMs.
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("kiln/devvm")
}

/// Everything kiln keeps for VM `name` outside its state (see [`app_dir`]).
pub fn vm_data_dir(name: &str) -> PathBuf {
    data_dir().join(name)
}

/// The app directory of VM `name` when neither `--app` nor the
/// repository's `app/` gives one.
pub fn app_dir(name: &str) -> PathBuf {
    vm_data_dir(name).join("app")
}
