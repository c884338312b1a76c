//! Developer VMs: a disk image built from a role with kiln's own engine,
//! booted with QEMU, reached over forwarded localhost ports.
//!
//! One concern a file: [`paths`] (where everything lives), [`tools`] (host
//! programs), [`base`] (the cached Debian root), [`guest`] (what kiln writes
//! into the tree), [`sshkey`], [`disk`] (a bootable disk from a tree),
//! [`image`] (build and cache), [`accel`] (KVM or
//! TCG), [`ports`], [`qemu`] (command line and monitor), [`drift`] (the app
//! share is not drift), [`state`] (one VM's files), [`lock`] (one `up`,
//! `down` or `destroy` of a VM at a time), [`vm`] (up, down, status, and
//! the phase `list` and `status` share), [`vagrant`] (the box). They
//! return what happened and report progress as [`Event`]s; `commands::devvm`
//! renders both.

pub mod accel;
pub mod base;
pub mod disk;
pub mod drift;
pub mod error;
pub mod guest;
pub mod image;
pub mod lock;
pub mod paths;
pub mod ports;
pub mod qemu;
pub mod sshkey;
pub mod state;
pub mod tools;
pub mod tree;
pub mod vagrant;
pub mod vm;

use std::process::Command;
use std::time::Duration;

pub use error::DevvmError;

/// This very kiln binary: `/proc/self/exe`, which stays readable even when
/// a rebuild replaces the file it was started from.
pub fn self_exe() -> std::path::PathBuf {
    let proc = std::path::PathBuf::from("/proc/self/exe");
    if proc.exists() {
        proc
    } else {
        std::env::current_exe().unwrap_or(proc)
    }
}

/// Runs a host command to completion; a non-zero exit is an error that
/// carries the command's output.
pub fn run(cmd: &mut Command, what: &str) -> Result<String, DevvmError> {
    let out = cmd.output().map_err(|source| DevvmError::ToolCouldNotRun {
        what: what.to_string(),
        program: cmd.get_program().to_os_string(),
        source,
    })?;
    if !out.status.success() {
        let mut output = Vec::new();
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            let text = text.trim();
            if !text.is_empty() {
                // The end of a long log is where the reason is.
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                output.push(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
        return Err(DevvmError::ToolFailed {
            what: what.to_string(),
            status: out.status,
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The engineer's login name: the one behind sudo when there is one.
pub fn user_name() -> String {
    for var in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
            && v != "root"
        {
            return sanitize(&v);
        }
    }
    "root".into()
}

/// A string reduced to what a hostname label or a file name may hold.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "user".into() } else { out }
}

/// What devvm work reports while it goes, for the command to render:
/// nothing under `devvm/` prints, and a boot takes minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next step of a long piece of work.
    Step(String),
    /// Something the engineer should know (a taken port, an older image kept).
    Note(String),
    /// Something went wrong without stopping the work.
    Warning(String),
    /// Still waiting for a booting VM: the time since `up` began, and the
    /// last line on its serial console.
    Booting { elapsed: Duration, console: String },
    /// A changed resource of the converge that builds an image.
    Converged(String),
    /// That converge's summary.
    ConvergeSummary(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_hostname_characters() {
        assert_eq!(sanitize("Jane.Doe"), "jane-doe");
        assert_eq!(sanitize("__"), "user");
    }

    #[test]
    fn a_failed_host_command_carries_the_end_of_its_output() {
        let e = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "the step",
        )
        .unwrap_err();
        assert!(matches!(e, DevvmError::ToolFailed { .. }), "{e:?}");
        assert_eq!(e.to_string(), "the step failed (exit status: 3)\nout\nerr");
        let e = run(&mut Command::new("/nonexistent/kiln-tool"), "the step").unwrap_err();
        assert!(matches!(e, DevvmError::ToolCouldNotRun { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("the step: cannot run \"/nonexistent/kiln-tool\": "),
            "{e}"
        );
    }
}
