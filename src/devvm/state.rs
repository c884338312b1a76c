//! One VM's files: `vms/<name>/` with its overlay disk, QEMU's pidfile,
//! monitor socket and serial log, and `state.json`.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::paths;
use crate::error::{Error, IoContext};

/// What `up` recorded about a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub image_key: String,
    pub image_dir: PathBuf,
    pub role: String,
    pub size: String,
    /// The Debian release (codename); empty in states from before it was
    /// recorded, where [`VmDir::load`] takes the image's.
    #[serde(default)]
    pub release: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub accel: String,
    pub ssh_port: u16,
    pub http_port: u16,
    pub app_dir: PathBuf,
    pub app_mount: String,
    /// Unix seconds QEMU was started.
    pub started: u64,
    /// Unix seconds the VM answered as ready, if it did.
    #[serde(default)]
    pub ready: Option<u64>,
    /// `kiln fingerprint` in the VM when it was first ready, the app share
    /// recorded as the mount (see [`super::drift`]).
    #[serde(default)]
    pub boot_fingerprint: Option<String>,
    /// Its parts, to name what drifted; empty in states from before the
    /// share was left out, whose fingerprint is not comparable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_parts: Vec<crate::fingerprint::Part>,
    /// Why its last boot did not come to serving, until the next one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The files of VM `name`.
#[derive(Debug, Clone)]
pub struct VmDir {
    pub name: String,
    pub dir: PathBuf,
}

impl VmDir {
    pub fn new(name: &str) -> Result<VmDir, Error> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            return Err(Error::Usage(format!(
                "{name:?} is not a VM name: use letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(VmDir {
            name: name.to_string(),
            dir: paths::vms_dir().join(name),
        })
    }

    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn monitor(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    pub fn load(&self) -> Option<State> {
        let text = fs::read_to_string(self.state_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, s: &State) -> Result<(), Error> {
        let path = self.state_file();
        let text = serde_json::to_string_pretty(s).expect("state serializes");
        crate::platform::hostfile::replace(&path, (text + "\n").as_bytes())
            .ctx(|| format!("writing {}", path.display()))
    }

    /// QEMU's pid, when its pidfile names a live QEMU process.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_qemu(pid).then_some(pid)
    }

    pub fn running(&self) -> bool {
        self.pid().is_some()
    }
}

/// Whether `pid` is a live QEMU process (not a reused pid).
pub fn is_qemu(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie has exited: only its parent has not reaped it yet.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie
        && cmdline
            .split(|&b| b == 0)
            .next()
            .is_some_and(|argv0| String::from_utf8_lossy(argv0).contains("qemu-system"))
}

/// Every VM with a directory, sorted by name.
pub fn all() -> Vec<VmDir> {
    let mut out: Vec<VmDir> = fs::read_dir(paths::vms_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| VmDir::new(&e.file_name().to_string_lossy()).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `1h 02m`, `3m 05s`, `42s`.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// How long ago, as a person says it: `42 s ago`, `3 min ago`, `5 h ago`,
/// `2 days ago`.
pub fn human_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        86400..172800 => "1 day ago".into(),
        _ => format!("{} days ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(VmDir::new("devvm").is_ok());
        assert!(VmDir::new("../x").is_err());
        assert!(VmDir::new("").is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m 05s");
        assert_eq!(human_duration(3720), "1h 02m");
        assert_eq!(human_age(42), "42 s ago");
        assert_eq!(human_age(185), "3 min ago");
        assert_eq!(human_age(5 * 3600 + 59), "5 h ago");
        assert_eq!(human_age(86400 + 5), "1 day ago");
        assert_eq!(human_age(3 * 86400), "3 days ago");
    }

    #[test]
    fn our_own_pid_is_not_qemu() {
        assert!(!is_qemu(std::process::id() as i32));
        assert!(!is_qemu(0));
    }
}
