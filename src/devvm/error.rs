//! Why a dev VM command stopped, one variant per kind, so that callers and
//! tests tell a VM that is not there from a QEMU that would not start
//! without reading prose. Reaches the top as [`Error::DevVm`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;

use super::accel::KvmUnusable;
use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum DevvmError {
    /// No VM of that name; `suggest_up` adds how to create one.
    #[error(
        "no VM named {name:?} (see kiln devvm list{})",
        if *suggest_up { format!("; create it with kiln devvm up {name}") } else { String::new() }
    )]
    NotFound { name: String, suggest_up: bool },
    #[error("VM {0} is not running: kiln devvm up {0}")]
    NotRunning(String),
    /// A command asks an existing VM for another role, size or release than
    /// it was made with: its disk is of the image it was made on.
    #[error(
        "VM {name} was made with {}; this asks for {}\n  \
         fix: `kiln devvm up {name}` starts it as it was made, or \
         `kiln devvm up {name} {} --recreate` makes it anew (its app directory is kept)",
        differences.iter().map(|d| format!("{} {}", &d.flag[2..], d.made)).collect::<Vec<_>>().join(", "),
        differences.iter().map(|d| format!("{} {}", &d.flag[2..], d.asked)).collect::<Vec<_>>().join(", "),
        differences.iter().map(|d| format!("{} {}", d.flag, d.asked)).collect::<Vec<_>>().join(" ")
    )]
    OtherImage {
        name: String,
        differences: Vec<super::image::Difference>,
    },
    /// Host programs that are not installed, and the packages that ship them.
    #[error(
        "missing host tools: {}\n  fix: apt-get install -y {}",
        programs.join(", "),
        packages.join(" ")
    )]
    MissingTools {
        programs: Vec<&'static str>,
        packages: Vec<&'static str>,
    },
    #[error(
        "building a dev VM image needs root (mmdebstrap, and the namespaces its programs run in): run it with sudo; \
         booting the image does not"
    )]
    NeedsRoot,
    /// `--accel kvm` on a host whose KVM cannot be used.
    #[error("--accel kvm: {0}; use --accel tcg (slow) or --accel auto")]
    KvmUnusable(KvmUnusable),
    /// A host program could not be started.
    #[error("{what}: cannot run {program:?}: {source}")]
    ToolCouldNotRun {
        what: String,
        program: OsString,
        #[source]
        source: std::io::Error,
    },
    /// A host program exited non-zero; `output` holds the end of its
    /// stdout and of its stderr, where not empty.
    #[error("{what} failed ({status}){}", output.iter().map(|o| format!("\n{o}")).collect::<String>())]
    ToolFailed {
        what: String,
        status: ExitStatus,
        output: Vec<String>,
    },
    /// A program inside the image's tree could not be started.
    #[error("{what}: {source}")]
    InTreeCouldNotRun {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A program inside the image's tree exited non-zero.
    #[error("{what} failed ({status}): {tail}")]
    InTreeFailed {
        what: String,
        status: ExitStatus,
        tail: String,
    },
    #[error("QEMU did not start ({status}): {log}")]
    QemuDidNotStart { status: ExitStatus, log: String },
    #[error("QEMU monitor {}: {source}", socket.display())]
    MonitorUnreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU monitor: {0}")]
    MonitorIo(#[source] std::io::Error),
    #[error("QEMU monitor closed the connection")]
    MonitorClosed,
    #[error("QEMU monitor sent {line:?}: {source}")]
    MonitorGarbled {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    /// The monitor answered a command with an error.
    #[error("QEMU monitor: {command}: {error}")]
    MonitorRefused {
        command: String,
        error: serde_json::Value,
    },
    /// The VM did not answer in time (`what` did not happen); it was stopped.
    #[error(
        "VM {name} did not come up within {secs} s ({what}); serial log: {}",
        serial_log.display()
    )]
    BootTimeout {
        name: String,
        secs: u64,
        what: String,
        serial_log: PathBuf,
    },
    /// An `up` found the VM's QEMU running, and it did not answer in
    /// time; not ours to stop.
    #[error(
        "VM {name} runs but did not serve within {secs} s ({what}); serial log: {}\n  \
         fix: look inside with `kiln devvm ssh {name}`, or start it over with \
         `kiln devvm down {name}` then `kiln devvm up {name}`",
        serial_log.display()
    )]
    NotAnswering {
        name: String,
        secs: u64,
        what: String,
        serial_log: PathBuf,
    },
    #[error(
        "QEMU of VM {0} runs but kiln has no record of it (state.json is missing)\n  \
         fix: kiln devvm destroy {0}, then kiln devvm up {0}"
    )]
    RunsWithoutState(String),
    #[error(
        "QEMU exited while VM {name} was booting; serial log: {}, QEMU log: {}",
        serial_log.display(),
        qemu_log.display()
    )]
    QemuExited {
        name: String,
        serial_log: PathBuf,
        qemu_log: PathBuf,
    },
    #[error("converging role {role} into the image failed; nothing was cached")]
    ImageConvergeFailed { role: String },
    /// `--strict-pins` and a cached image built with substitutions; `key`
    /// is the image key as shown (its first 12 characters).
    #[error(
        "the cached image {key} was built with substituted pins ({}), and --strict-pins \
         refuses them; fix the pins (kiln whitelist outdated, stage, promote) or drop \
         --strict-pins",
        substitutions.join(", ")
    )]
    StrictPinsRefuseCachedImage {
        key: String,
        substitutions: Vec<String>,
    },
    #[error("no kernel in {} (is linux-image-amd64 in the base root?)", boot.display())]
    NoKernel { boot: PathBuf },
    #[error("{} is missing: the kernel's initramfs was not generated", initrd.display())]
    NoInitrd { initrd: PathBuf },
    /// The tree lacks a link the disk's own boot loads (Debian's kernel
    /// packages keep them when `do_symlinks` is on, as by default).
    #[error(
        "{link} is missing in the image's tree: the disk's boot loader loads it\n  \
         fix: keep `do_symlinks = yes` in the image's /etc/kernel-img.conf"
    )]
    NoBootLink { link: String },
    /// A box's `vagrant` user needs sudo, which the base root lacks.
    #[error(
        "the image has no /usr/bin/sudo, which Vagrant needs in a box\n  \
         fix: add the sudo package to the role (or the dev VM base root's packages)"
    )]
    NoSudo,
    /// GRUB's core image does not fit before the root partition.
    #[error("GRUB's core image is {bytes} bytes; {room} fit before the root partition")]
    GrubTooBig { bytes: u64, room: u64 },
    /// `devvm ssh` could not replace itself with ssh.
    #[error("cannot run ssh: {0}")]
    SshCouldNotRun(#[source] std::io::Error),
}

impl From<DevvmError> for Error {
    fn from(e: DevvmError) -> Self {
        Error::DevVm(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// The texts as they were before the errors were typed: users and the
    /// integration tests read them.
    #[test]
    fn messages_are_worded_as_before() {
        let e = Error::from(DevvmError::NotFound {
            name: "web".into(),
            suggest_up: false,
        });
        assert!(matches!(&e, Error::DevVm(c) if c.is::<DevvmError>()));
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.render(),
            "error: no VM named \"web\" (see kiln devvm list)"
        );
        let e = DevvmError::NotFound {
            name: "web".into(),
            suggest_up: true,
        };
        assert_eq!(
            e.to_string(),
            "no VM named \"web\" (see kiln devvm list; create it with kiln devvm up web)"
        );
        let e = DevvmError::OtherImage {
            name: "web".into(),
            differences: vec![super::super::image::Difference {
                flag: "--release",
                made: "bookworm".into(),
                asked: "trixie".into(),
            }],
        };
        assert_eq!(
            e.to_string(),
            "VM web was made with release bookworm; this asks for release trixie\n  \
             fix: `kiln devvm up web` starts it as it was made, or \
             `kiln devvm up web --release trixie --recreate` makes it anew (its app directory is kept)"
        );
        assert_eq!(
            DevvmError::NotRunning("web".into()).to_string(),
            "VM web is not running: kiln devvm up web"
        );
        let e = DevvmError::MissingTools {
            programs: vec!["qemu-img", "ssh"],
            packages: vec!["qemu-utils", "openssh-client"],
        };
        assert_eq!(
            e.to_string(),
            "missing host tools: qemu-img, ssh\n  fix: apt-get install -y qemu-utils openssh-client"
        );
        let status = ExitStatus::from_raw(2 << 8);
        let e = DevvmError::ToolFailed {
            what: "mke2fs".into(),
            status,
            output: vec!["out".into(), "err".into()],
        };
        assert_eq!(e.to_string(), "mke2fs failed (exit status: 2)\nout\nerr");
        let e = DevvmError::ToolFailed {
            what: "mke2fs".into(),
            status,
            output: vec![],
        };
        assert_eq!(e.to_string(), "mke2fs failed (exit status: 2)");
        let e = DevvmError::ToolCouldNotRun {
            what: "qemu-img create".into(),
            program: "qemu-img".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(
            e.to_string()
                .starts_with("qemu-img create: cannot run \"qemu-img\": No such file"),
            "{e}"
        );
        let e = DevvmError::BootTimeout {
            name: "web".into(),
            secs: 3,
            what: "ssh never answered".into(),
            serial_log: "/v/serial.log".into(),
        };
        assert_eq!(
            e.to_string(),
            "VM web did not come up within 3 s (ssh never answered); serial log: /v/serial.log"
        );
        let e = DevvmError::StrictPinsRefuseCachedImage {
            key: "0123456789ab".into(),
            substitutions: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "the cached image 0123456789ab was built with substituted pins (a, b), and \
             --strict-pins refuses them; fix the pins (kiln whitelist outdated, stage, \
             promote) or drop --strict-pins"
        );
        let e = DevvmError::MonitorRefused {
            command: "system_powerdown".into(),
            error: serde_json::json!({"class": "GenericError"}),
        };
        assert_eq!(
            e.to_string(),
            "QEMU monitor: system_powerdown: {\"class\":\"GenericError\"}"
        );
        assert_eq!(
            DevvmError::KvmUnusable(KvmUnusable::NoDevice).to_string(),
            "--accel kvm: no /dev/kvm; use --accel tcg (slow) or --accel auto"
        );
    }
}
