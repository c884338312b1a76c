//! The namespaces of a sandbox (a `kiln test` target, or one program run in
//! a `--root` tree), made by kiln itself rather than by `unshare(1)`: a user
//! namespace comes first and owns the mount, PID, UTS, IPC and (unless the
//! program needs the host's network) network namespaces made with it, so
//! that root inside holds its capabilities only over those, never over the
//! host (no device nodes, no block filesystems, no raising of host limits).
//!
//! Three processes: the caller stays outside and writes the new namespace's
//! id maps (only a process outside may map more than one id), the second
//! makes the namespaces, the third is PID 1 inside. Each waits for the next
//! and exits with its status; each dies with its parent.

use std::io::Error;

use libc::c_int;

use super::SandboxError;

const FLAGS: c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// An identity map of the first 65536 ids: the owners dpkg records on the
/// overlay stay the real ones, and every id a package creates is mapped.
const ID_MAP: &str = "0 0 65536\n";

/// Exit status of a process on the way in that could not go on.
const SETUP_FAILED: c_int = 125;

fn os_err(what: &str) -> SandboxError {
    SandboxError::last_os(what)
}

fn pipe() -> Result<(c_int, c_int), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe"));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(fd) };
}

/// One byte through a pipe: `true` if it came, `false` on end of file.
fn receive(fd: c_int) -> bool {
    let mut b = 0u8;
    loop {
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n < 0 && Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return n == 1;
    }
}

fn send(fd: c_int) {
    // SAFETY: writes one byte from a local.
    unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) };
}

/// Waits for `pid`, then ends this process with its status.
fn exit_with(pid: libc::pid_t) -> ! {
    let mut status = 0;
    let code = loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                SETUP_FAILED
            };
        }
        if Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break SETUP_FAILED;
        }
    };
    // SAFETY: ends the process without running this copy's destructors.
    unsafe { libc::_exit(code) }
}

fn fail(msg: &str) -> ! {
    eprintln!("kiln sandbox: {msg}");
    // SAFETY: as in `exit_with`.
    unsafe { libc::_exit(SETUP_FAILED) }
}

/// Be killed when the parent dies; `alive` (the read end of a pipe whose
/// only writer is the parent) tells whether it already has.
fn die_with_parent(alive: c_int) {
    // SAFETY: plain prctl and poll calls on values we own.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let mut p = libc::pollfd {
            fd: alive,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLHUP != 0 {
            libc::_exit(SETUP_FAILED);
        }
    }
    close(alive);
}

fn fork() -> Result<libc::pid_t, SandboxError> {
    // SAFETY: the caller is single-threaded (the sandbox forks before any
    // thread starts), so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(os_err("fork"))
    } else {
        Ok(pid)
    }
}

fn write_map(pid: libc::pid_t, file: &str) -> Result<(), SandboxError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, ID_MAP).map_err(|e| SandboxError::io(format!("cannot write {path}"), e))
}

/// Whether the sandbox gets a network of its own (loopback only) or keeps
/// the host's, where apt fetches from (root inside has no capability over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Own,
    Host,
}

/// Returns in PID 1 of fresh user, mount, PID, UTS, IPC and (with
/// `Network::Own`) network namespaces, with every mount private to them.
/// Must be called while the process has one thread.
pub fn enter(network: Network) -> Result<(), SandboxError> {
    let flags = match network {
        Network::Own => FLAGS | libc::CLONE_NEWNET,
        Network::Host => FLAGS,
    };
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (alive_r, alive_w) = pipe()?;
    let maker = fork()?;
    if maker > 0 {
        close(ready_w);
        close(go_r);
        close(alive_r);
        if !receive(ready_r) {
            exit_with(maker);
        }
        let mapped = write_map(maker, "uid_map").and_then(|()| write_map(maker, "gid_map"));
        if let Err(e) = mapped {
            // SAFETY: kills our own child, which waits for us.
            unsafe { libc::kill(maker, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: reaps that child.
            unsafe { libc::waitpid(maker, &mut status, 0) };
            return Err(e);
        }
        send(go_w);
        exit_with(maker);
    }
    close(ready_r);
    close(go_w);
    close(alive_w);
    die_with_parent(alive_r);
    // SAFETY: this process has one thread, as unshare(CLONE_NEWUSER) needs.
    if unsafe { libc::unshare(flags) } != 0 {
        fail(&os_err("unshare").to_string());
    }
    send(ready_w);
    close(ready_w);
    if !receive(go_r) {
        fail("the id maps were not written");
    }
    close(go_r);
    let (alive_r, alive_w) = pipe().unwrap_or_else(|e| fail(&e.to_string()));
    let init = fork().unwrap_or_else(|e| fail(&e.to_string()));
    if init > 0 {
        close(alive_r);
        exit_with(init);
    }
    close(alive_w);
    die_with_parent(alive_r);
    // Nothing mounted in here propagates back out.
    // SAFETY: valid C strings; no data.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(os_err("cannot make the mounts private"));
    }
    Ok(())
}
