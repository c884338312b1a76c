//! Sandboxes: kiln runs as PID 1 of fresh user, mount, PID, UTS, IPC (and
//! network) namespaces (see `namespaces`), makes a target root its `/` with
//! `pivot_root` and lets go of the host's tree, so that no path inside
//! leads out, not even through a second chroot. Two users: a `kiln test`
//! target, where services run and see only loopback, and each program kiln
//! runs in a `--root` tree (`exec`), so that a tree's own programs never run
//! on the host. Everything started inside dies with the namespace.

pub mod exec;
pub mod namespaces;

use std::ffi::CString;
use std::path::Path;

use libc::c_int;

/// Why a sandbox could not be made: the step that failed and the kernel's
/// reason. The process on its way in prints it and exits with its
/// setup-failed status; nothing of the target has run yet.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call or file step, named as it is shown (`cannot mount
    /// proc on /x/proc`, `pivot_root /x`), with the kernel's reason.
    #[error("{step}: {source}")]
    Os {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// Entered by a process that is not PID 1 of fresh namespaces
    /// (`namespaces::enter` first).
    #[error("the {0} must run as PID 1 of its own namespaces")]
    NotInit(&'static str),
}

impl SandboxError {
    fn io(step: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Os {
            step: step.into(),
            source,
        }
    }

    /// `step` failed with the error the last system call left.
    fn last_os(step: impl Into<String>) -> Self {
        SandboxError::io(step, std::io::Error::last_os_error())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in paths")
}

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), SandboxError> {
    let t = cstr(&target.to_string_lossy());
    let (s, f, d) = (cstr(src), cstr(fstype), cstr(data));
    // SAFETY: valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SandboxError::last_os(format!(
            "cannot mount {fstype} on {}",
            target.display()
        )))
    }
}

/// Brings the namespace's loopback interface up, as `ip link set lo up` would.
fn loopback_up() -> Result<(), SandboxError> {
    // SAFETY: a plain socket and ifreq ioctls on a zeroed struct we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(SandboxError::last_os("socket"));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 {
            Ok(())
        } else {
            Err(SandboxError::io("cannot bring up loopback", err))
        }
    }
}

/// Makes `target` read-only: the kernel knobs under /proc are global, and
/// root inside is the host's uid 0 to their permission checks.
fn read_only_mount(target: &Path) -> Result<(), SandboxError> {
    if !target.exists() {
        return Ok(());
    }
    let t = target.to_string_lossy();
    mount(&t, target, "", libc::MS_BIND | libc::MS_REC, "")?;
    mount(
        "none",
        target,
        "",
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "",
    )
}

/// Capabilities the converge has no use for; with them gone, nothing inside
/// can mount (and so undo the read-only knobs), make device nodes or reach
/// kernel facilities. CAP_SYS_CHROOT stays: sshd and other daemons chroot
/// into their own directories, and with the host's tree gone a chroot leads
/// nowhere.
const DROPPED_CAPS: [u32; 16] = [
    9,  // CAP_LINUX_IMMUTABLE
    16, // CAP_SYS_MODULE
    17, // CAP_SYS_RAWIO
    20, // CAP_SYS_PACCT
    21, // CAP_SYS_ADMIN
    22, // CAP_SYS_BOOT
    25, // CAP_SYS_TIME
    27, // CAP_MKNOD
    30, // CAP_AUDIT_CONTROL
    32, // CAP_MAC_OVERRIDE
    33, // CAP_MAC_ADMIN
    34, // CAP_SYSLOG
    35, // CAP_WAKE_ALARM
    36, // CAP_BLOCK_SUSPEND
    38, // CAP_PERFMON
    39, // CAP_BPF
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// What root inside keeps of its capabilities (in its user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    /// All but `DROPPED_CAPS`: what a converge needs (chown, setuid, ...).
    Converge,
    /// None: for commands that only read.
    None,
}

/// The highest capability number any kernel kiln runs on knows.
const LAST_CAP: u32 = 63;

/// Drops capabilities (see [`Caps`]) from the bounding set (no program run
/// later gets them back) and from this process, and sets no_new_privs (no
/// set-user-ID or file-capability program gains anything).
fn restrict(caps: Caps) -> Result<(), SandboxError> {
    let dropped: Vec<u32> = match caps {
        Caps::Converge => DROPPED_CAPS.to_vec(),
        Caps::None => (0..=LAST_CAP).collect(),
    };
    for &cap in &dropped {
        // SAFETY: plain prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: a capability this kernel does not know.
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(SandboxError::last_os(format!(
                "cannot drop capability {cap}"
            )));
        }
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(SandboxError::last_os("capget"));
    }
    for &cap in &dropped {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        data[word].inheritable &= !bit;
    }
    // SAFETY: as above, with the sets we just read, made smaller.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(SandboxError::last_os("capset"));
    }
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::last_os("no_new_privs"));
    }
    Ok(())
}

/// Makes `root` the new `/` and detaches the old one, host and all.
fn pivot_into(root: &Path) -> Result<(), SandboxError> {
    std::env::set_current_dir(root)
        .map_err(|e| SandboxError::io(format!("cd {}", root.display()), e))?;
    // pivot_root(".", "."): the old root ends up mounted on top of the new
    // one, where it is detached; no directory in the target is needed.
    // SAFETY: valid C strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(SandboxError::last_os(format!(
            "pivot_root {}",
            root.display()
        )));
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(SandboxError::last_os("cannot detach the host's root"));
    }
    std::env::set_current_dir("/").map_err(|e| SandboxError::io("cd /", e))
}

/// Mounts what daemons expect, names the host, makes `root` the only tree
/// there is and drops what the converge does not need. Must run as PID 1
/// of new namespaces (`namespaces::enter`).
pub fn enter(root: &Path, hostname: &str) -> Result<(), SandboxError> {
    if std::process::id() != 1 {
        return Err(SandboxError::NotInit("test sandbox"));
    }
    // The root must be a mount point of its own to become `/`.
    mount(
        &root.to_string_lossy(),
        root,
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    mount(
        "proc",
        &root.join("proc"),
        "proc",
        nosuid | nodev | noexec,
        "",
    )?;
    for knob in [
        "proc/sys",
        "proc/sysrq-trigger",
        "proc/irq",
        "proc/bus",
        "proc/fs",
    ] {
        read_only_mount(&root.join(knob))?;
    }
    let _ = std::fs::create_dir_all(root.join("dev/pts"));
    let _ = std::fs::create_dir_all(root.join("dev/shm"));
    mount(
        "devpts",
        &root.join("dev/pts"),
        "devpts",
        nosuid | noexec,
        "newinstance,ptmxmode=0666",
    )?;
    mount(
        "tmpfs",
        &root.join("dev/shm"),
        "tmpfs",
        nosuid | nodev,
        "mode=1777",
    )?;
    mount(
        "tmpfs",
        &root.join("run"),
        "tmpfs",
        nosuid | nodev,
        "mode=0755",
    )?;
    // The host's console is not the target's.
    let console = root.join("dev/console");
    if console.exists() {
        mount(
            &root.join("dev/null").to_string_lossy(),
            &console,
            "",
            libc::MS_BIND,
            "",
        )?;
    }
    // What a booting system makes in /run before any service starts.
    let lock = root.join("run/lock");
    std::fs::create_dir_all(&lock).map_err(|e| SandboxError::io("cannot create /run/lock", e))?;
    let _ = std::fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    let h = cstr(hostname);
    // SAFETY: a valid buffer of the given length.
    if unsafe { libc::sethostname(h.as_ptr(), hostname.len()) } != 0 {
        return Err(SandboxError::last_os("sethostname"));
    }
    loopback_up()?;
    pivot_into(root)?;
    restrict(Caps::Converge)?;
    // A clean environment for the services kiln starts.
    for (k, _) in std::env::vars_os() {
        if k != "TERM" {
            // SAFETY: single-threaded at this point: no other thread reads the environment.
            unsafe { std::env::remove_var(&k) };
        }
    }
    // SAFETY: as above.
    unsafe {
        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        std::env::set_var("HOME", "/root");
        std::env::set_var("LANG", "C.UTF-8");
    }
    Ok(())
}

/// The host devices a program in a `--root` tree may use: nothing that
/// reaches a disk, a console or kernel memory.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Makes `root` (a `--root` tree) the only tree there is for one program:
/// mounted without devices or set-user-ID (and read-only if asked), a
/// fresh /proc, and a /dev with [`DEVICES`] only. Must run as PID 1 of new
/// namespaces (`namespaces::enter`).
pub fn enter_tree(root: &Path, read_only: bool) -> Result<(), SandboxError> {
    if std::process::id() != 1 {
        return Err(SandboxError::NotInit("sandbox of a --root program"));
    }
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    let r = root.to_string_lossy();
    mount(&r, root, "", libc::MS_BIND | libc::MS_REC, "")?;
    // A device node planted in the tree opens nothing.
    let ro = if read_only { libc::MS_RDONLY } else { 0 };
    mount(
        "none",
        root,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | nosuid | nodev | ro,
        "",
    )?;
    // A mount point the tree lacks is made, unless the tree may not change.
    let dir = |name: &str| -> Option<std::path::PathBuf> {
        let p = root.join(name);
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        (is_dir || (!read_only && std::fs::create_dir(&p).is_ok())).then_some(p)
    };
    if let Some(proc) = dir("proc") {
        mount("proc", &proc, "proc", nosuid | nodev | noexec, "")?;
        for knob in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
            read_only_mount(&proc.join(knob))?;
        }
    }
    if let Some(dev) = dir("dev") {
        mount("tmpfs", &dev, "tmpfs", nosuid | noexec, "mode=0755")?;
        for name in DEVICES {
            if !Path::new("/dev").join(name).exists() {
                continue;
            }
            let node = dev.join(name);
            std::fs::write(&node, "")
                .map_err(|e| SandboxError::io(format!("cannot create /dev/{name}"), e))?;
            mount(&format!("/dev/{name}"), &node, "", libc::MS_BIND, "")?;
        }
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(to, dev.join(link))
                .map_err(|e| SandboxError::io(format!("cannot link /dev/{link}"), e))?;
        }
    }
    // Scratch space for a program that only reads the tree.
    if read_only && let Some(tmp) = dir("tmp") {
        mount("tmpfs", &tmp, "tmpfs", nosuid | nodev, "mode=1777")?;
    }
    pivot_into(root)?;
    restrict(if read_only {
        Caps::None
    } else {
        Caps::Converge
    })
}

/// Closes every descriptor above stderr. Only for a process that owns no
/// descriptor any more (PID 1 before it reaps, a program before its exec).
pub fn close_inherited() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|fd| *fd > 2) {
        // SAFETY: the process owns no descriptor it will use again.
        unsafe { libc::close(fd) };
    }
}

/// Reaps every child until `worker` exits; returns its exit code.
pub fn reap_until(worker: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status of a child we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == worker || pid < 0 {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pid_1_of_new_namespaces_may_enter() {
        // A test process is never PID 1: refused before any mount.
        let e = enter_tree(Path::new("/nonexistent"), true).unwrap_err();
        assert!(matches!(e, SandboxError::NotInit(_)));
        assert_eq!(
            e.to_string(),
            "the sandbox of a --root program must run as PID 1 of its own namespaces"
        );
        let e = enter(Path::new("/nonexistent"), "h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the test sandbox must run as PID 1 of its own namespaces"
        );
        let os = SandboxError::io(
            "cannot create /run/lock",
            std::io::Error::from_raw_os_error(libc::EROFS),
        );
        assert!(
            os.to_string()
                .starts_with("cannot create /run/lock: Read-only file system"),
            "{os}"
        );
    }
}
