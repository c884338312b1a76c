//! KVM or TCG. `/dev/kvm` existing proves nothing (on some hosts guest
//! kernels hang under it), so `auto` boots the image's kernel under KVM once,
//! without a root disk, and requires the kernel to reach its "cannot mount
//! root" panic on the serial console within a short time. The verdict is
//! cached per host (hostname, host kernel, QEMU version, CPU model) under
//! `~/.cache/kiln/accel/`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{DevvmError, Event, paths};
use crate::error::Error;

/// What the guest kernel prints when it has finished booting and finds no
/// root: proof that it ran to the end of its initialization.
const MARKERS: &[&str] = &["VFS: Unable to mount root", "Kernel panic"];
/// A working KVM gets there in a second or two; TCG takes ~20 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Kvm,
    Tcg,
}

/// An `--accel` value that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: use kvm, tcg or auto")]
pub struct UnknownAccel(pub String);

impl std::str::FromStr for Choice {
    type Err = UnknownAccel;
    fn from_str(s: &str) -> Result<Self, UnknownAccel> {
        match s {
            "auto" => Ok(Choice::Auto),
            "kvm" => Ok(Choice::Kvm),
            "tcg" => Ok(Choice::Tcg),
            _ => Err(UnknownAccel(s.to_string())),
        }
    }
}

/// Why this host's KVM cannot be used, before any probe boot.
#[derive(Debug, thiserror::Error)]
pub enum KvmUnusable {
    #[error("no /dev/kvm")]
    NoDevice,
    #[error("/dev/kvm cannot be opened ({0})")]
    CannotOpen(std::io::Error),
}

/// The probe's cached conclusion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub kvm: bool,
    pub reason: String,
    pub probed_at: u64,
    pub host: String,
}

/// Identifies this host's virtualization stack: a verdict holds until one of these changes.
fn host_identity() -> String {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("")
        .to_string();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "host={}\nkernel={}\ncpu={cpu}\nqemu={qemu}\n",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/osrelease"),
    )
}

fn verdict_path(identity: &str) -> std::path::PathBuf {
    let mut k = crate::digest::sha256_hex(identity.as_bytes());
    k.truncate(16);
    paths::accel_dir().join(format!("{k}.json"))
}

/// The cached verdict for this host, if any.
pub fn cached() -> Option<Verdict> {
    let text = fs::read_to_string(verdict_path(&host_identity())).ok()?;
    serde_json::from_str(&text).ok()
}

/// Resolves `--accel` to what QEMU gets, probing (once per host) for `auto`.
/// `kernel` is a guest kernel to probe with. Warns of TCG through `on`.
pub fn choose(choice: Choice, kernel: &Path, on: &dyn Fn(Event)) -> Result<Accel, Error> {
    match choice {
        Choice::Tcg => Ok(Accel::Tcg),
        Choice::Kvm => {
            if let Err(why) = kvm_device() {
                return Err(DevvmError::KvmUnusable(why).into());
            }
            Ok(Accel::Kvm)
        }
        Choice::Auto => {
            let v = verdict(kernel, on);
            if v.kvm {
                Ok(Accel::Kvm)
            } else {
                on(Event::Warning(format!(
                    "KVM is not usable here ({}); using TCG software emulation, which is \
                     several times slower (verdict cached in {}; delete it to probe again)",
                    v.reason,
                    verdict_path(&host_identity()).display()
                )));
                Ok(Accel::Tcg)
            }
        }
    }
}

/// The cached verdict, or a fresh probe's (then cached).
pub fn verdict(kernel: &Path, on: &dyn Fn(Event)) -> Verdict {
    let identity = host_identity();
    let path = verdict_path(&identity);
    if let Ok(text) = fs::read_to_string(&path)
        && let Ok(v) = serde_json::from_str::<Verdict>(&text)
    {
        return v;
    }
    let (kvm, reason) = match kvm_device() {
        Err(why) => (false, why.to_string()),
        Ok(()) => {
            on(Event::Step(
                "probing whether KVM really works (a bounded test boot, once per host)".into(),
            ));
            probe(kernel)
        }
    };
    let v = Verdict {
        kvm,
        reason,
        probed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        host: identity,
    };
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(&v) {
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, text).is_ok() {
            let _ = fs::rename(&tmp, &path);
        }
    }
    v
}

/// Whether /dev/kvm is there and openable read-write.
fn kvm_device() -> Result<(), KvmUnusable> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KvmUnusable::NoDevice),
        Err(e) => Err(KvmUnusable::CannotOpen(e)),
    }
}

/// Boots `kernel` under KVM with no disk and waits for its root panic.
fn probe(kernel: &Path) -> (bool, String) {
    let dir = match tempfile::Builder::new().prefix("kiln-kvm-probe-").tempdir() {
        Ok(d) => d,
        Err(e) => return (false, format!("cannot create a probe directory: {e}")),
    };
    let log = dir.path().join("serial.log");
    let err = dir.path().join("qemu.err");
    let Ok(errfile) = fs::File::create(&err) else {
        return (false, "cannot create the probe's log".into());
    };
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errfile)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run qemu-system-x86_64: {e}")),
    };
    let seen = |log: &Path| {
        let text = fs::read_to_string(log).unwrap_or_default();
        MARKERS.iter().any(|m| text.contains(m))
    };
    loop {
        if seen(&log) {
            let _ = child.kill();
            let _ = child.wait();
            return (
                true,
                format!(
                    "a guest kernel booted under KVM in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        if let Ok(Some(status)) = child.try_wait() {
            if seen(&log) {
                continue;
            }
            let stderr = fs::read_to_string(&err).unwrap_or_default();
            return (
                false,
                format!(
                    "QEMU with -accel kvm exited ({status}) before the guest kernel finished booting: {}",
                    stderr.trim()
                ),
            );
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let printed = fs::metadata(&log).map_or(0, |m| m.len());
            return (
                false,
                format!(
                    "a guest kernel under KVM did not finish booting within {} s \
                     ({printed} bytes on its serial console): KVM hangs on this host",
                    PROBE_TIMEOUT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses() {
        assert_eq!("auto".parse::<Choice>(), Ok(Choice::Auto));
        assert_eq!("tcg".parse::<Choice>(), Ok(Choice::Tcg));
        let e = "xen".parse::<Choice>().unwrap_err();
        assert_eq!(e.to_string(), "\"xen\": use kvm, tcg or auto");
    }
}
