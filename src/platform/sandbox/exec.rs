//! One program of a `--root` tree, run in a sandbox rather than through
//! chroot: the tree's own `/bin/sh`, apt or useradd may be anyone's, and
//! as host root a chroot does not hold it (a second chroot walks out).
//!
//! [`Target`](crate::platform::target::Target) starts kiln again as
//! `kiln __root-exec --root DIR [--read-only] -- ARGV...`, with the
//! environment it means the program to have and nothing else; that process
//! makes the namespaces, becomes PID 1 inside, enters the tree and runs the
//! program as its child, then exits with the program's status.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::namespaces::{self, Network};
use super::{close_inherited, enter_tree, reap_until};

/// The hidden subcommand that runs one program in a tree.
pub const SUBCOMMAND: &str = "__root-exec";

/// This very kiln binary, even if the file it came from was replaced.
pub const SELF: &str = "/proc/self/exe";

/// Exit status when the sandbox could not be set up.
const SETUP_FAILED: i32 = 125;

/// The arguments of [`SUBCOMMAND`], in the order it takes them.
pub fn args(root: &Path, read_only: bool, argv: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![SUBCOMMAND.into(), "--root".into(), root.into()];
    if read_only {
        a.push("--read-only".into());
    }
    a.push("--".into());
    a.extend(argv.iter().map(OsString::from));
    a
}

/// Runs `argv` in the tree at `root`; returns (as exit code) its status.
/// Must be called while the process has one thread.
pub fn run(root: &Path, read_only: bool, argv: &[OsString]) -> i32 {
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("kiln {SUBCOMMAND}: no program to run");
        return SETUP_FAILED;
    };
    // A reading command needs no network; a converge's apt fetches.
    let network = if read_only {
        Network::Own
    } else {
        Network::Host
    };
    if let Err(e) = namespaces::enter(network) {
        eprintln!("kiln: cannot make the sandbox for {}: {e}", root.display());
        return SETUP_FAILED;
    }
    // From here on, PID 1 of the new namespaces.
    if let Err(e) = enter_tree(root, read_only) {
        eprintln!("kiln: cannot enter {} in a sandbox: {e}", root.display());
        return SETUP_FAILED;
    }
    // Neither /proc/1 nor a ptrace shows what PID 1 holds.
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // A session of its own, without the caller's terminal: /dev/tty then
    // opens nothing, and no TIOCSTI types commands into the caller's shell.
    // SAFETY: setsid has no preconditions; it fails only for a group leader.
    unsafe { libc::setsid() };
    // SAFETY: this process has one thread.
    let worker = unsafe { libc::fork() };
    if worker < 0 {
        eprintln!("kiln: fork: {}", std::io::Error::last_os_error());
        return SETUP_FAILED;
    }
    close_inherited();
    if worker > 0 {
        // The program's exit ends the namespace and whatever it left running.
        std::process::exit(reap_until(worker));
    }
    let e = std::process::Command::new(program).args(rest).exec();
    // As a shell says it: 127 for a program that is not there, else 126.
    eprintln!(
        "kiln: cannot run {} in the target: {e}",
        program.to_string_lossy()
    );
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    std::process::exit(code)
}
