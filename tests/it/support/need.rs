//! The two test tiers. A plain `cargo test`, as any user and offline, runs
//! every test that needs only a build: the policy-level ones. A test that
//! needs more says so in its first line, `need!(DebianRoot, Network);`, and
//! when something is missing it passes at once, after one line on stderr
//! that names it and says why. `scripts/test` sets `KILN_TEST_REQUIRE_ALL=1`,
//! under which a missing need fails the test instead, so that CI can never
//! pass by skipping.

use std::io::{self, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::OnceLock;
use std::time::Duration;

/// Set by `scripts/test`: every test must run.
pub const REQUIRE_ALL: &str = "KILN_TEST_REQUIRE_ALL";

/// What a test needs beyond a build of kiln.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Overlay copies of a cached Debian root (`TestRoot`, `HostRoot`):
    /// mounts, chroot, and mmdebstrap to build the cache.
    DebianRoot,
    /// sshd test hosts on 127.x.y.z, each a Debian root in its own
    /// namespaces.
    Sshd,
    /// `kiln test`'s sandbox: Debian roots in namespaces.
    Sandbox,
    /// A dev VM image, built with mmdebstrap and namespaces.
    VmImage,
    /// Anything else only root may do (a chown to another user).
    Root,
    /// Debian's archive at run time: versions read with apt, packages
    /// installed from it.
    Network,
    /// QEMU, to boot a dev VM.
    Qemu,
    /// A PostgreSQL server of Debian's to start clusters of
    /// ([`super::postgres`]).
    Postgres,
    /// Vagrant with vagrant-libvirt, and libvirt's daemon answering on
    /// the system connection (`scripts/check-host-tools --vagrant`).
    Vagrant,
    /// Debian's Chromium, headless, to open the dashboard's pages as a
    /// user's browser does ([`super::browser`]).
    Chromium,
}

impl Need {
    /// What is missing here for this need, and what for (empty when it
    /// says enough), or `None` when the need is met.
    fn missing(self) -> Option<(&'static str, &'static str)> {
        match self {
            Need::DebianRoot if !root() => Some(("root", "Debian roots are overlay mounts")),
            Need::Sshd if !root() => Some(("root", "sshd test hosts run in namespaces")),
            Need::Sandbox if !root() => Some(("root", "kiln test's sandbox")),
            Need::VmImage if !root() => Some(("root", "dev VM images are built with mmdebstrap")),
            Need::Root if !root() => Some(("root", "")),
            Need::Network if !network() => Some(("the network", "Debian's archive")),
            Need::Qemu if which::which("qemu-system-x86_64").is_err() => {
                Some(("QEMU", "qemu-system-x86_64"))
            }
            Need::Postgres if super::postgres::bin_dir().is_none() => {
                Some(("PostgreSQL", "the postgresql package's initdb"))
            }
            Need::Vagrant if !vagrant_libvirt() => Some((
                "Vagrant",
                "vagrant, vagrant-libvirt and a running libvirtd: scripts/check-host-tools --vagrant",
            )),
            Need::Chromium if super::browser::chromium_program().is_none() => {
                Some(("Chromium", "the chromium package's browser"))
            }
            _ => None,
        }
    }
}

/// Vagrant, its libvirt plugin, and libvirtd on `qemu:///system`.
fn vagrant_libvirt() -> bool {
    let ok = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::path::Path::new("/usr/share/doc/vagrant-libvirt/copyright").exists()
        && ok("vagrant", &["--version"])
        && ok("virsh", &["-c", "qemu:///system", "version"])
}

/// Whether the calling test may run: true when every one of `needs` is met.
/// Otherwise prints `skipped it::NAME: needs root (...), the network (...)`
/// and returns false, or, under [`REQUIRE_ALL`], fails the test with the
/// same words.
pub fn met(needs: &[Need]) -> bool {
    // Each missing thing once, with all it is wanted for.
    let mut missing: Vec<(&str, Vec<&str>)> = Vec::new();
    for (thing, purpose) in needs.iter().filter_map(|n| n.missing()) {
        match missing.iter_mut().find(|(t, _)| *t == thing) {
            Some((_, purposes)) => purposes.push(purpose),
            None => missing.push((thing, vec![purpose])),
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing
        .iter()
        .map(|(thing, purposes)| {
            let purposes: Vec<&str> = purposes.iter().copied().filter(|p| !p.is_empty()).collect();
            match purposes.as_slice() {
                [] => thing.to_string(),
                _ => format!("{thing} ({})", purposes.join("; ")),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let test = test_name();
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| v == "1") {
        panic!("it::{test} needs {why}, and {REQUIRE_ALL}=1 allows no skipped test");
    }
    // Straight to the stderr handle, past the harness's capture, so that
    // every skip is seen; in one write, so that no other output splits it.
    let line = format!("skipped it::{test}: needs {why}\n");
    let _ = io::stderr().write_all(line.as_bytes());
    false
}

/// For the harness's root-only parts: a test that reaches one without its
/// `need!` line fails naming the fix, not with mmdebstrap's "need to be root".
pub fn assert_root(what: &str) {
    assert!(
        root(),
        "it::{}: {what} needs root; make `need!(DebianRoot);` (or Sshd, Sandbox) \
         the test's first line",
        test_name()
    );
}

/// libtest names each test's thread after the test.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("an unnamed test")
        .to_string()
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether Debian's archive answers, asked once per test run.
fn network() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    *UP.get_or_init(|| {
        ("deb.debian.org", 80)
            .to_socket_addrs()
            .into_iter()
            .flatten()
            .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok())
    })
}
