//! The QEMU command line of a dev VM, and its QMP monitor.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::DevvmError;
use super::accel::Accel;

/// Everything QEMU is started with.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    /// The guest's hostname (see [`Machine::append`]).
    pub hostname: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mb: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub ssh_port: u16,
    pub http_port: u16,
    /// The host directory shared as 9p tag `app`, if any.
    pub app_dir: Option<PathBuf>,
    pub serial_log: PathBuf,
    pub monitor: PathBuf,
    pub pidfile: PathBuf,
}

impl Machine {
    /// The kernel command line: the root by its label, the console on the
    /// serial port, and the VM's hostname: systemd sets it at early boot, so
    /// one image serves VMs of any name (the guest keeps it in
    /// /etc/hostname: see `guest::HOSTNAME_SCRIPT`).
    pub fn append(&self) -> String {
        format!(
            "root=LABEL={} rw console=ttyS0 systemd.hostname={}",
            super::disk::ROOT_LABEL,
            self.hostname
        )
    }

    /// QEMU's arguments (after the program), daemonized.
    pub fn args(&self) -> Vec<OsString> {
        let (accel, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        let mut a: Vec<OsString> = [
            "-name".to_string(),
            format!("kiln-devvm-{0},process=kiln-devvm-{0}", self.name),
            "-machine".into(),
            "q35".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            self.cpus.to_string(),
            "-m".into(),
            self.memory_mb.to_string(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        a.push("-initrd".into());
        a.push(self.initrd.clone().into());
        a.push("-append".into());
        a.push(self.append().into());
        a.push("-drive".into());
        a.push(opt_path(
            "file=",
            &self.disk,
            ",if=virtio,format=qcow2,discard=unmap",
        ));
        a.push("-netdev".into());
        a.push(
            format!(
                "user,id=net0,hostname={},hostfwd=tcp:127.0.0.1:{}-:22,hostfwd=tcp:127.0.0.1:{}-:80",
                self.hostname, self.ssh_port, self.http_port
            )
            .into(),
        );
        a.push("-device".into());
        a.push("virtio-net-pci,netdev=net0".into());
        a.push("-device".into());
        a.push("virtio-rng-pci".into());
        if let Some(dir) = &self.app_dir {
            a.push("-virtfs".into());
            a.push(opt_path(
                "local,path=",
                dir,
                &format!(
                    ",mount_tag={},security_model=mapped-xattr,id=app",
                    super::guest::APP_TAG
                ),
            ));
        }
        a.push("-serial".into());
        a.push(opt_path("file:", &self.serial_log, ""));
        a.push("-qmp".into());
        a.push(opt_path("unix:", &self.monitor, ",server=on,wait=off"));
        a.push("-pidfile".into());
        a.push(self.pidfile.clone().into());
        a.push("-daemonize".into());
        a
    }
}

/// `prefix` + path + `suffix`, with commas in the path doubled as QEMU's
/// option syntax wants.
fn opt_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let p = path.to_string_lossy().replace(',', ",,");
    format!("{prefix}{p}{suffix}").into()
}

/// A QMP session on a VM's monitor socket.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Qmp, DevvmError> {
        let io = |source| DevvmError::MonitorUnreachable {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        q.read_message()?; // the greeting
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<serde_json::Value, DevvmError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(DevvmError::MonitorIo)?;
        if n == 0 {
            return Err(DevvmError::MonitorClosed);
        }
        serde_json::from_str(&line).map_err(|source| DevvmError::MonitorGarbled { line, source })
    }

    /// Runs a command and returns its `return` value (events in between are skipped).
    pub fn execute(&mut self, command: &str) -> Result<serde_json::Value, DevvmError> {
        let msg = serde_json::json!({ "execute": command });
        writeln!(self.writer, "{msg}").map_err(DevvmError::MonitorIo)?;
        loop {
            let v = self.read_message()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(DevvmError::MonitorRefused {
                    command: command.to_string(),
                    error: e.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            name: "t".into(),
            hostname: "t".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mb: 2048,
            kernel: "/i/vmlinuz".into(),
            initrd: "/i/initrd.img".into(),
            disk: "/v/a,b.qcow2".into(),
            ssh_port: 2222,
            http_port: 8080,
            app_dir: Some("/home/me/app".into()),
            serial_log: "/v/serial.log".into(),
            monitor: "/v/qmp.sock".into(),
            pidfile: "/v/qemu.pid".into(),
        }
    }

    #[test]
    fn command_line_has_direct_boot_forwards_and_share() {
        let a: Vec<String> = machine()
            .args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let line = a.join(" ");
        assert!(
            line.contains("-kernel /i/vmlinuz -initrd /i/initrd.img"),
            "{line}"
        );
        assert!(
            line.contains("root=LABEL=kiln-root rw console=ttyS0"),
            "{line}"
        );
        assert!(line.contains("console=ttyS0 systemd.hostname=t "), "{line}");
        assert!(line.contains("user,id=net0,hostname=t,"), "{line}");
        assert!(line.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{line}");
        assert!(line.contains("hostfwd=tcp:127.0.0.1:8080-:80"), "{line}");
        assert!(line.contains("file=/v/a,,b.qcow2,if=virtio"), "{line}");
        assert!(
            line.contains("local,path=/home/me/app,mount_tag=app"),
            "{line}"
        );
        assert!(
            line.contains("-accel tcg -cpu max -smp 2 -m 2048"),
            "{line}"
        );
        assert!(line.ends_with("-daemonize"), "{line}");
    }
}
