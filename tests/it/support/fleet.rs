//! A test fleet: Debian roots (overlays on one cached base root that has
//! openssh-server) each running sshd in its own mount, PID and UTS
//! namespaces, listening on its own 127.x.y.z address, with a client key,
//! host keys and a known_hosts file made per fleet.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use kiln::platform::rootfs;

/// The cached Debian root with openssh-server, from the library's builder.
pub fn ssh_base_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| super::cached_root(&rootfs::SSH_TEST_ROOT))
        .clone()
}

/// An overlay copy of the ssh base root.
pub struct HostRoot(super::TestRoot);

/// [`ssh_base_root`] of another Debian release, from the same recipe.
pub fn ssh_release_root(codename: &str) -> PathBuf {
    let recipe = rootfs::SSH_TEST_ROOT
        .on(codename)
        .unwrap_or_else(|e| panic!("no root recipe for {codename}: {e}"));
    super::cached_root(&recipe)
}

impl HostRoot {
    pub fn new() -> HostRoot {
        HostRoot(super::TestRoot::of(&ssh_base_root(), "kiln-host"))
    }

    /// A host of Debian release `codename`.
    pub fn on(codename: &str) -> HostRoot {
        HostRoot(super::TestRoot::of(
            &ssh_release_root(codename),
            &format!("kiln-host-{codename}"),
        ))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for HostRoot {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// One test host: a root and, while it runs, its sshd.
pub struct TestHost {
    pub fqdn: String,
    pub address: String,
    pub roles: Vec<String>,
    pub canary: bool,
    sshd: Option<Child>,
    // Last: unmounted after sshd is gone.
    pub root: HostRoot,
}

impl TestHost {
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Starts sshd in its own mount, PID and UTS namespaces, chrooted into
    /// the root, on `address:22`, and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.sshd.is_none(), "{} already runs", self.fqdn);
        let root = self.root.path();
        let script = format!(
            "hostname {h} && exec chroot {r} /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config \
             -o ListenAddress={a} -o Port=22 -o HostKey=/etc/ssh/ssh_host_ed25519_key \
             -o UsePAM=no -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
             -o KbdInteractiveAuthentication=no -o UseDNS=no -o MaxStartups=200 -o MaxSessions=200 \
             -o PidFile=none",
            h = self.fqdn,
            r = root.display(),
            a = self.address
        );
        let log = fs::File::create(root.join("var/log/sshd-test.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--uts", "--pid", "--fork", "--kill-child"])
            .arg(format!("--mount-proc={}", root.join("proc").display()))
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("running unshare");
        self.sshd = Some(child);
        let addr: SocketAddr = format!("{}:22", self.address).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(c) = self.sshd.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "sshd of {} exited ({st}): {}",
                    self.fqdn,
                    fs::read_to_string(root.join("var/log/sshd-test.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd of {} does not listen on {addr}",
                self.fqdn
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills sshd and everything in the host's PID namespace.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            // SAFETY: signals the process group this test started.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// The process group of the host's namespaces, while it runs.
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.as_ref().map(Child::id)
    }

    /// Runs a shell command inside the root (chroot), for checks and for
    /// changes "by hand".
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("chroot")
            .arg(self.path())
            .args(["sh", "-c", script])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The installed version of a package, per dpkg.
    pub fn version(&self, package: &str) -> Option<String> {
        let status = fs::read_to_string(self.path().join("var/lib/dpkg/status")).unwrap();
        status.split("\n\n").find_map(|stanza| {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
            };
            (field("Package: ")? == package && field("Status: ")?.ends_with(" installed"))
                .then(|| field("Version: "))?
        })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fleet of test hosts and the inventory that describes it.
pub struct Fleet {
    pub hosts: Vec<TestHost>,
    pub dir: TempDir,
}

/// A /16 of loopback addresses per fleet: 127.<a>.<b>.<host>, unique within
/// the process and (by pid) between processes.
fn next_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id() as usize;
    format!("127.{}.{}", 10 + (pid % 200), (n % 250) + 1)
}

/// A copy of the kiln binary without debug info: what fleet converge sends
/// to each host (KILN_FLEET_BINARY), ~6x smaller than the debug build.
pub fn kiln_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
        // Kept beside the build (one per profile), rebuilt when kiln is.
        let dst = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-stripped");
        let fresh = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if fresh(&dst).is_some() && fresh(&dst) >= fresh(&src) {
            return dst;
        }
        let tmp = dst.with_extension(format!("tmp.{}", std::process::id()));
        let ok = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&src)
            .arg(&tmp)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            fs::copy(&src, &tmp).unwrap();
        }
        // Atomic: test binaries running at the same time may both get here.
        fs::rename(&tmp, &dst).unwrap();
        dst
    })
    .clone()
}

pub struct HostSpec {
    pub fqdn: String,
    pub roles: Vec<String>,
    pub canary: bool,
    /// The host's Debian release (None: the default root's, bookworm).
    pub release: Option<String>,
}

pub fn spec(fqdn: &str, roles: &[&str]) -> HostSpec {
    HostSpec {
        fqdn: fqdn.into(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        canary: false,
        release: None,
    }
}

impl Fleet {
    /// Builds the hosts (not yet started), keys, known_hosts and
    /// inventory.toml. `prepare` runs on each root before sshd starts.
    pub fn new(specs: Vec<HostSpec>, prepare: impl Fn(&Path)) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("kiln-fleet-")
            .tempdir()
            .unwrap();
        let key = dir.path().join("id_ed25519");
        keygen(&key, "kiln-fleet-test");
        let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
        // Bundles are signed (the inventory's signing_key) and every host
        // trusts that key, as the kiln cookbook would have set it up.
        let signing = dir.path().join("signing_key");
        keygen(&signing, "ops@kiln-fleet-test");
        let allowed = format!(
            "ops@kiln-fleet-test {}",
            fs::read_to_string(signing.with_extension("pub")).unwrap()
        );
        let prefix = next_prefix();
        let mut hosts = Vec::new();
        let mut known = String::new();
        for (i, s) in specs.into_iter().enumerate() {
            let root = match &s.release {
                Some(codename) => HostRoot::on(codename),
                None => HostRoot::new(),
            };
            let r = root.path();
            for e in fs::read_dir(r.join("etc/ssh")).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                    fs::remove_file(e.path()).unwrap();
                }
            }
            let hk = r.join("etc/ssh/ssh_host_ed25519_key");
            keygen(&hk, &s.fqdn);
            let address = format!("{prefix}.{}", i + 1);
            known.push_str(&format!(
                "{address} {}",
                fs::read_to_string(hk.with_extension("pub")).unwrap()
            ));
            let ssh = r.join("root/.ssh");
            fs::create_dir_all(&ssh).unwrap();
            fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
            fs::write(ssh.join("authorized_keys"), &pubkey).unwrap();
            fs::create_dir_all(r.join("run/sshd")).unwrap();
            fs::write(r.join("etc/hostname"), format!("{}\n", s.fqdn)).unwrap();
            fs::create_dir_all(r.join("etc/kiln")).unwrap();
            fs::write(r.join("etc/kiln/allowed_signers"), &allowed).unwrap();
            prepare(r);
            hosts.push(TestHost {
                fqdn: s.fqdn,
                address,
                roles: s.roles,
                canary: s.canary,
                sshd: None,
                root,
            });
        }
        fs::write(dir.path().join("known_hosts"), known).unwrap();
        let fleet = Fleet { hosts, dir };
        fleet.write_inventory();
        fleet
    }

    pub fn write_inventory(&self) {
        let mut inv = String::from(
            "# made by the test\nknown_hosts = \"known_hosts\"\nidentity = \"id_ed25519\"\nsigning_key = \"signing_key\"\n\n[defaults]\nuser = \"root\"\n",
        );
        for h in &self.hosts {
            inv.push_str(&format!(
                "\n[hosts.\"{}\"]\naddress = \"{}\"\nroles = [{}]\n",
                h.fqdn,
                h.address,
                h.roles
                    .iter()
                    .map(|r| format!("\"{r}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if h.canary {
                inv.push_str("canary = true\n");
            }
        }
        fs::write(self.inventory(), inv).unwrap();
    }

    /// Starts every host's sshd, in parallel.
    pub fn start(&mut self) {
        std::thread::scope(|s| {
            for h in &mut self.hosts {
                s.spawn(move || h.start());
            }
        });
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.toml")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    pub fn host(&self, fqdn: &str) -> &TestHost {
        self.hosts
            .iter()
            .find(|h| h.fqdn == fqdn)
            .unwrap_or_else(|| panic!("no host {fqdn}"))
    }

    pub fn host_mut(&mut self, fqdn: &str) -> &mut TestHost {
        self.hosts
            .iter_mut()
            .find(|h| h.fqdn == fqdn)
            .unwrap_or_else(|| panic!("no host {fqdn}"))
    }

    /// `kiln fleet ARGS... --inventory FILE`, with a private ssh control
    /// directory and the stripped kiln binary.
    pub fn kiln(&self, args: &[&str]) -> super::Kiln {
        let control = self.dir.path().join("ctl");
        fs::create_dir_all(&control).unwrap();
        super::kiln()
            .env("KILN_SSH_CONTROL_DIR", &control)
            .env("KILN_FLEET_BINARY", kiln_binary())
            .env("KILN_SSH_CONNECT_TIMEOUT", "5")
            .arg("fleet")
            .args(args)
            .arg("--inventory")
            .arg(self.inventory())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.close_masters();
        for h in &mut self.hosts {
            h.kill();
        }
    }
}

impl Fleet {
    /// Closes the ssh master connections kiln left (in this fleet's control
    /// directory), so that the next run connects afresh.
    pub fn close_masters(&self) {
        let control = self.dir.path().join("ctl");
        if let Ok(entries) = fs::read_dir(&control) {
            for e in entries.flatten() {
                let _ = Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", e.path().display()))
                    .args(["-O", "exit", "x"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
