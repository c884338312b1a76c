//! The inside of a test target: kiln runs as PID 1 of fresh mount, PID, UTS,
//! IPC and network namespaces (made by `unshare`), then chroots into the
//! target root. Services started there see only loopback, and all die with
//! the namespace when kiln exits.

use std::ffi::CString;
use std::path::Path;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in paths")
}

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
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
        Err(format!(
            "cannot mount {fstype} on {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// Brings the namespace's loopback interface up, as `ip link set lo up` would.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket and ifreq ioctls on a zeroed struct we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
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
            Err(format!("cannot bring up loopback: {err}"))
        }
    }
}

/// Mounts what daemons expect, names the host, and chroots into `root`.
/// Must run as PID 1 of new namespaces.
pub fn enter(root: &Path, hostname: &str) -> Result<(), String> {
    if std::process::id() != 1 {
        return Err("the test sandbox must run as PID 1 of its own namespaces".into());
    }
    mount("proc", &root.join("proc"), "proc", 0, "")?;
    let _ = std::fs::create_dir_all(root.join("dev/pts"));
    let _ = std::fs::create_dir_all(root.join("dev/shm"));
    mount(
        "devpts",
        &root.join("dev/pts"),
        "devpts",
        0,
        "newinstance,ptmxmode=0666",
    )?;
    mount("tmpfs", &root.join("dev/shm"), "tmpfs", 0, "mode=1777")?;
    mount("tmpfs", &root.join("run"), "tmpfs", 0, "mode=0755")?;
    // What a booting system makes in /run before any service starts.
    let lock = root.join("run/lock");
    std::fs::create_dir_all(&lock).map_err(|e| format!("cannot create /run/lock: {e}"))?;
    let _ = std::fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    let h = cstr(hostname);
    // SAFETY: a valid buffer of the given length.
    if unsafe { libc::sethostname(h.as_ptr(), hostname.len()) } != 0 {
        return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
    }
    loopback_up()?;
    std::os::unix::fs::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    std::env::set_current_dir("/").map_err(|e| e.to_string())?;
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
