//! The transport: the OpenSSH client, one multiplexed master connection per
//! host (ControlMaster), host keys always checked against the inventory's
//! known_hosts file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::inventory::{Host, Inventory};
use crate::platform::private::{PrivateDirError, Purpose, private_dir};

/// How kiln talks to hosts.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The ssh client to run.
    pub program: PathBuf,
    pub known_hosts: PathBuf,
    pub identity: Option<PathBuf>,
    pub accept_new: bool,
    pub control_dir: PathBuf,
    pub connect_timeout: Duration,
    /// The inventory's `ssh_options`.
    pub options: Vec<String>,
}

/// Why a remote command did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshFailure {
    Unreachable(String),
    KeyRefused(String),
    HostKey(String),
    /// The connection dropped while the command ran.
    Lost(String),
    /// Anything else the ssh client reported.
    Other(String),
}

impl SshFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            SshFailure::Unreachable(_) => "unreachable",
            SshFailure::KeyRefused(_) => "key refused",
            SshFailure::HostKey(_) => "host key",
            SshFailure::Lost(_) => "connection lost",
            SshFailure::Other(_) => "ssh",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            SshFailure::Unreachable(s)
            | SshFailure::KeyRefused(s)
            | SshFailure::HostKey(s)
            | SshFailure::Lost(s)
            | SshFailure::Other(s) => s,
        }
    }
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.detail())
    }
}

/// A remote command's result: ssh worked, the command exited with `code`.
#[derive(Debug)]
pub struct Remote {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// How the ssh client runs, as the command line (or its `KILN_SSH*`
/// variables) says.
#[derive(Debug, Clone)]
pub struct Client {
    pub program: PathBuf,
    /// Where master sockets live (default: `/tmp/kiln-ssh-UID`).
    pub control_dir: Option<PathBuf>,
    pub connect_timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            program: PathBuf::from("ssh"),
            control_dir: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Transport {
    /// Fails when the control directory is not private to this user.
    pub fn for_inventory(
        inv: &Inventory,
        accept_new: bool,
        client: &Client,
    ) -> Result<Transport, PrivateDirError> {
        Ok(Transport {
            program: client.program.clone(),
            known_hosts: absolute(&inv.known_hosts),
            identity: inv.identity.as_deref().map(absolute),
            accept_new,
            control_dir: control_dir(client.control_dir.clone())?,
            options: inv.ssh_options.clone(),
            connect_timeout: client.connect_timeout,
        })
    }

    fn base(&self, host: &Host) -> Command {
        let mut c = Command::new(&self.program);
        // Out of the terminal's process group: a Ctrl-C holds the rollout
        // (kiln's handler) instead of cutting hosts off mid-converge.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let opt = |c: &mut Command, o: String| {
            c.arg("-o").arg(o);
        };
        opt(&mut c, "BatchMode=yes".into());
        opt(&mut c, "ControlMaster=auto".into());
        opt(
            &mut c,
            format!("ControlPath={}/%C", self.control_dir.display()),
        );
        opt(&mut c, "ControlPersist=60".into());
        opt(
            &mut c,
            format!(
                "StrictHostKeyChecking={}",
                if self.accept_new { "accept-new" } else { "yes" }
            ),
        );
        opt(
            &mut c,
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
        );
        opt(&mut c, "GlobalKnownHostsFile=/dev/null".into());
        opt(&mut c, "UpdateHostKeys=no".into());
        // The inventory's known_hosts is reviewed by people: names in clear.
        opt(&mut c, "HashKnownHosts=no".into());
        // Keys only: no GSSAPI attempt (Debian's ssh_config turns it on,
        // and it costs lookups on every connection), no locale sent over.
        opt(&mut c, "GSSAPIAuthentication=no".into());
        opt(&mut c, "PreferredAuthentications=publickey".into());
        opt(
            &mut c,
            format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)),
        );
        opt(&mut c, "ServerAliveInterval=5".into());
        opt(&mut c, "ServerAliveCountMax=3".into());
        opt(&mut c, "LogLevel=ERROR".into());
        for o in &self.options {
            opt(&mut c, o.clone());
        }
        if let Some(id) = &self.identity {
            opt(&mut c, "IdentitiesOnly=yes".into());
            c.arg("-i").arg(id);
        }
        c.arg("-p").arg(host.port.to_string());
        c.arg("-l").arg(&host.user);
        c.arg(&host.address);
        c
    }

    /// Runs `script` with sh on the host, feeding `input` to its stdin.
    pub fn run(
        &self,
        host: &Host,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<Remote, SshFailure> {
        let mut c = self.base(host);
        c.arg("--").arg(script);
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| SshFailure::Other(format!("cannot run ssh: {e}")))?;
        let writer = match (input, child.stdin.take()) {
            (Some(data), Some(mut stdin)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                }))
            }
            _ => None,
        };
        let out = child
            .wait_with_output()
            .map_err(|e| SshFailure::Other(format!("waiting for ssh: {e}")))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        classify(out)
    }

    /// Closes the host's master connection.
    pub fn close(&self, host: &Host) {
        let mut c = self.base(host);
        c.arg("-O").arg("exit");
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn classify(out: Output) -> Result<Remote, SshFailure> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(255);
    if code != 255 {
        return Ok(Remote {
            code,
            stdout: out.stdout,
            stderr,
        });
    }
    let tail: String = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('@'))
        .collect::<Vec<_>>()
        .join("; ");
    let has = |s: &str| stderr.contains(s);
    Err(
        if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key verification failed") {
            if has("No ") && has("host key is known") {
                SshFailure::HostKey(format!(
                    "the host's key is not in the known_hosts file ({tail}); add it, or pass --accept-new-host-keys for first contact"
                ))
            } else if has("HAS CHANGED") {
                SshFailure::HostKey(format!(
                    "the host's key does not match the known_hosts file: possible man-in-the-middle, or a reinstalled host ({tail})"
                ))
            } else {
                SshFailure::HostKey(tail)
            }
        } else if has("Permission denied") {
            SshFailure::KeyRefused(format!("the host refused the login ({tail})"))
        } else if has("Connection refused")
            || has("No route to host")
            || has("timed out")
            || has("Could not resolve")
            || has("Network is unreachable")
        {
            SshFailure::Unreachable(tail)
        } else if stderr.trim().is_empty()
            || has("closed by remote host")
            || has("Connection reset")
            || has("Broken pipe")
            || has("Timeout, server")
            || has("client_loop")
            || has("mux_client")
        {
            SshFailure::Lost(if tail.is_empty() {
                "the connection closed while the command ran (the host went away)".into()
            } else {
                tail
            })
        } else {
            SshFailure::Other(tail)
        },
    )
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// What the ssh control directory is, for a refusal: a master socket logs
/// in as root on every host without a key, so only a directory private to
/// this user will do.
const CONTROL_DIR: Purpose = Purpose {
    what: "the ssh control directory",
    abuse: "use kiln's ssh connections",
    fix: "remove it (if it is not yours, find out who made it), or set KILN_SSH_CONTROL_DIR to a directory of your own",
    elsewhere: "set KILN_SSH_CONTROL_DIR to a directory under one only you and root can write",
};

/// Where master sockets live: short (socket paths are limited to ~100
/// bytes) and private. A directory someone else made (say, in /tmp before
/// us) is refused, not used.
fn control_dir(dir: Option<PathBuf>) -> Result<PathBuf, PrivateDirError> {
    let dir = dir.unwrap_or_else(|| {
        let uid = unsafe { libc::getuid() };
        PathBuf::from(format!("/tmp/kiln-ssh-{uid}"))
    });
    private_dir(&dir, &CONTROL_DIR)?;
    Ok(dir)
}
