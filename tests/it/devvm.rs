//! Developer VMs end to end, through the real binary: build the image of the
//! repository's `devvm` role (warm when the cache has it), then one VM's
//! life under TCG, as an engineer lives it (see
//! [`a_dev_vm_lives_through_up_edit_down_destroy_and_recreate`]), leaving
//! no QEMU and no overlay. Boots are the slow part, so there are few.
//!
//! Needs root, mmdebstrap, qemu-system-x86, qemu-utils and e2fsprogs (see
//! scripts/test); a cold image build takes a few minutes, a boot under TCG
//! one to six.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Repo, kiln};

/// The release the VMs here run: not the default one, so that a plain
/// `up` shows that a VM remembers its release.
const RELEASE: &str = "bookworm";

/// A scratch copy of the repository's own policy (roles/, cookbooks/,
/// whitelist.toml) whose bookworm pin of memcached no source offers: a dev
/// VM must come up anyway, on the version the archive offers, and say so.
/// Every test here makes the same copy, so they share one image.
fn policy_repo() -> Repo {
    Repo::policy_with_pin(RELEASE, "memcached", crate::substitute::IMPOSSIBLE)
}

/// VM state (and the data directory of VMs' own app directories) of this
/// test, apart from the engineer's VMs; QEMU is killed and the state
/// removed however the test ends.
struct VmGuard {
    vms: tempfile::TempDir,
    data: tempfile::TempDir,
    name: String,
}

impl VmGuard {
    fn new(name: &str) -> VmGuard {
        VmGuard {
            vms: tempfile::Builder::new()
                .prefix("kiln-devvm-vms-")
                .tempdir()
                .expect("a temporary VM directory"),
            data: tempfile::Builder::new()
                .prefix("kiln-devvm-data-")
                .tempdir()
                .expect("a temporary data directory"),
            name: name.to_string(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.vms.path().join(&self.name)
    }

    fn kiln(&self) -> crate::support::Kiln {
        kiln()
            .env("KILN_DEVVM_VMS", self.vms.path())
            .env("XDG_DATA_HOME", self.data.path())
    }

    /// The VM's own app directory, kept outside its state.
    fn app_dir(&self) -> PathBuf {
        self.data
            .path()
            .join("kiln/devvm")
            .join(&self.name)
            .join("app")
    }

    fn qemu_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.dir().join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive_qemu(pid).then_some(pid)
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.qemu_pid() {
            // SAFETY: a pid we checked is this test's QEMU.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let t = Instant::now();
            while alive_qemu(pid) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn alive_qemu(pid: i32) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains("qemu-system")
}

/// GET `path` on 127.0.0.1:`port`; the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).unwrap_or_else(|e| panic!("GET {path} on 127.0.0.1:{port}: {e}"))
}

/// GET, or why not: QEMU's forwarded port accepts a connection before the
/// guest listens, then drops it.
fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

fn field(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{stdout}"))
        .trim()
        .to_string()
}

fn port_of(status: &str, key: &str) -> u16 {
    let v = field(status, key);
    v.split_whitespace()
        .next()
        .and_then(|hp| hp.rsplit(':').next())
        .map(|p| p.trim_end_matches('/'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {key} {v:?}"))
}

#[test]
fn missing_host_tools_are_named_with_the_install_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let vms = tempfile::tempdir().expect("tempdir");
    let repo = policy_repo();
    kiln()
        .env("PATH", empty.path())
        .env("KILN_DEVVM_VMS", vms.path())
        .arg("--repo")
        .arg(repo.path())
        .args(["devvm", "up", "notools"])
        .run()
        .failure()
        .stderr_contains("missing host tools: qemu-system-x86_64")
        .stderr_contains("apt-get install -y qemu-system-x86");
}

#[test]
fn commands_on_a_vm_that_does_not_exist_say_so() {
    let g = VmGuard::new("nosuchvm");
    g.kiln()
        .args(["devvm", "status", "nosuchvm"])
        .run()
        .failure()
        .stderr_contains("no VM named");
    let destroyed = g
        .kiln()
        .args(["devvm", "destroy", "nosuchvm"])
        .run()
        .success()
        .stdout_contains("nothing to destroy");
    // down of a missing VM ends as destroy of one does.
    let down = g
        .kiln()
        .args(["devvm", "down", "nosuchvm"])
        .run()
        .stdout_contains("No VM named nosuchvm: nothing to stop");
    assert_eq!(down.status, destroyed.status);
    g.kiln()
        .args(["devvm", "list"])
        .run()
        .success()
        .stdout_contains("No VMs");
}

fn images_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("kiln/devvm/images")
}

#[test]
fn a_killed_build_leaves_no_half_image() {
    need!(VmImage, Network);
    use std::os::unix::process::CommandExt;
    // A role of its own, with content unique to this run (a cache miss),
    // whose converge still runs when the kill comes, however warm the
    // caches: with everything else cached, a build of one file ended
    // within the two seconds the test waits.
    let stamp = format!("{}-{:?}", std::process::id(), Instant::now());
    let repo = crate::support::Repo::new()
        .role(
            "killme",
            "run_list = [\"recipe[killme]\"]\n[sizes.small]\ncpus = 1\nmemory_mb = 512\ndisk_gb = 2\n",
        )
        .recipe(
            "killme",
            "default",
            &format!(
                "[[resource]]\nfile = \"/etc/killme\"\ncontent = \"{stamp}\"\n\n\
                 [[resource]]\nexecute = \"outlast-the-kill\"\ncommand = \"sleep 300\"\n"
            ),
        );
    let vms = tempfile::tempdir().expect("tempdir");
    let images = images_dir();
    let before: Vec<_> = fs::read_dir(&images)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--repo")
        .arg(repo.path())
        .args(["devvm", "build", "--role", "killme", "--size", "small"])
        .env("KILN_DEVVM_VMS", vms.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawning kiln devvm build");
    let pgid = child.id() as i32;
    // Wait for its build directory (after any one-time base root build).
    let t = Instant::now();
    let new_build = || {
        fs::read_dir(&images)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(".build-")
                    && !before.contains(&e.file_name())
            })
    };
    while !new_build() && t.elapsed() < Duration::from_secs(900) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kiln devvm build ended ({status}) before it was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(new_build(), "no build directory appeared");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: the process group of the child we started.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    // The overlay the killed build had mounted goes with the next use of
    // the checkpoint store.
    let work = kiln::platform::rootfs::cache_dir().join("checkpoints/work");
    let killed = format!("-{pgid}-");
    kiln::engine::checkpoint::Store::open().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let work_text = work.display().to_string();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(&work_text) && l.contains(&killed)),
        "the killed build's overlay is still mounted:\n{mounts}"
    );
    assert!(
        !(fs::read_dir(&work).into_iter().flatten().flatten())
            .any(|e| e.file_name().to_string_lossy().contains(&killed)),
        "the killed build's overlay is still in {}",
        work.display()
    );
    // No image directory without its manifest, and the killed one is not listed.
    for e in fs::read_dir(&images).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !name.starts_with('.') {
            assert!(
                e.path().join("manifest.json").is_file(),
                "{} is a half image",
                e.path().display()
            );
        }
    }
    kiln()
        .env("KILN_DEVVM_VMS", vms.path())
        .args(["devvm", "list"])
        .run()
        .success()
        .stdout_lacks("killme");
}

/// A file of an image's root filesystem, read without mounting it.
fn file_in_image(image_dir: &Path, path: &str) -> String {
    file_in_disk(&image_dir.join("disk.qcow2"), path)
}

/// `kiln devvm box`: a box anyone can be handed. It holds the disk and no
/// kernel beside it, nothing of its builder (no path, no key), a catalog
/// names it as one version of the box of its role, size and release, and
/// its disk boots by its own loader, as libvirt boots it, and serves the
/// shop page. A second `box` packages nothing again.
#[test]
fn a_box_is_anyones_and_boots_by_its_own_loader() {
    need!(VmImage, Network, Qemu);
    let policy = policy_repo();
    let repo = policy.path().to_path_buf();
    let g = VmGuard::new(&format!("box-{}", std::process::id()));
    let make = || {
        g.kiln()
            .arg("--repo")
            .arg(&repo)
            .args(["devvm", "box", "--release", RELEASE])
            .run()
            .success()
    };
    let t = Instant::now();
    let boxed = make();
    eprintln!("box: {:.1} s", t.elapsed().as_secs_f64());
    let box_file = PathBuf::from(boxed.stdout.lines().last().unwrap_or("").trim());
    let name = format!("devvm-small-{RELEASE}");
    let boxes = box_file.parent().expect("the boxes directory");
    assert!(
        box_file
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}-"))),
        "{}",
        box_file.display()
    );
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&box_file)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mut entries: Vec<&str> = listing.lines().collect();
    entries.sort_unstable();
    assert_eq!(entries, ["Vagrantfile", "box.img", "metadata.json"]);
    let unpacked = tempfile::Builder::new()
        .prefix("kiln-devvm-box-")
        .tempdir()
        .expect("tempdir");
    let ok = std::process::Command::new("tar")
        .arg("xf")
        .arg(&box_file)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "unpacking {}", box_file.display());
    let vagrantfile = fs::read_to_string(unpacked.path().join("Vagrantfile")).expect("Vagrantfile");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for builders in [
        home.as_str(),
        ".cache",
        "private_key_path",
        "kernel",
        "ssh.username",
    ] {
        assert!(
            !vagrantfile.contains(builders),
            "the box's Vagrantfile names {builders:?}:\n{vagrantfile}"
        );
    }
    assert!(
        vagrantfile.contains("libvirt.driver = $kiln_devvm_driver"),
        "{vagrantfile}"
    );

    // The catalog: this version, this file, its sha256.
    let catalog_file = boxes.join(format!("{name}.json"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(&catalog_file)
            .expect("the catalog")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o644,
        "the engineer's Vagrant reads the catalog"
    );
    let catalog: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&catalog_file).expect("the catalog"))
            .expect("catalog JSON");
    assert_eq!(catalog["name"], format!("kiln/{name}"));
    let version = &catalog["versions"][0];
    let provider = &version["providers"][0];
    assert_eq!(provider["name"], "libvirt");
    assert_eq!(
        provider["url"].as_str().unwrap_or(""),
        format!("file://{}", box_file.display())
    );
    let sum = std::process::Command::new("sha256sum")
        .arg(&box_file)
        .output()
        .expect("sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(provider["checksum"].as_str(), sum.split_whitespace().next());
    let again = make();
    assert!(again.stdout.contains("packaged before"), "{}", again.stdout);
    assert!(
        again.stdout.contains(&format!(
            "version {}",
            version["version"].as_str().unwrap_or("?")
        )),
        "{}",
        again.stdout
    );

    // Inside: the vagrant user with Vagrant's key, sudo without a
    // password, no key of the builder's, no share in fstab.
    let disk = unpacked.path().join("box.img");
    let image_file = |path: &str| file_in_disk(&disk, path);
    assert!(
        image_file("/home/vagrant/.ssh/authorized_keys").contains("vagrant insecure public key")
    );
    assert!(image_file("/etc/sudoers.d/vagrant").contains("vagrant ALL=(ALL) NOPASSWD: ALL"));
    assert_eq!(image_file("/root/.ssh/authorized_keys").trim(), "");
    let fstab = image_file("/etc/fstab");
    assert!(fstab.contains("LABEL=kiln-root / ext4"), "{fstab}");
    assert!(!fstab.contains("9p"), "{fstab}");

    // Booted as libvirt boots it: the disk alone, no kernel given.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let serial = unpacked.path().join("serial.log");
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,if=virtio,snapshot=on",
            disk.display()
        ))
        .args(["-nic"])
        .arg(format!(
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:80"
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting QEMU");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _qemu = Kill(&mut qemu);
    let t = Instant::now();
    let served = loop {
        if let Ok((200, body)) = &try_http_get(port, "/")
            && body.contains("Walnut serving board")
        {
            break true;
        }
        if t.elapsed() > Duration::from_secs(600) {
            break false;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let log = fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        served,
        "the box's disk did not serve the shop page in 600 s; serial log:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    eprintln!("box boot to page: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        log.contains("BOOT_IMAGE=/vmlinuz root=LABEL=kiln-root"),
        "not booted by GRUB from the disk's own /vmlinuz:\n{}",
        &log[..log.len().min(4000)]
    );
    drop(_qemu);

    // Then with real Vagrant on libvirt's system connection, as an
    // engineer who prefers it: no override, the driver chosen where
    // `vagrant up` runs. The script removes what it made in Vagrant and
    // libvirt, pass or fail. Asked for with KILN_TEST_VAGRANT=1 (after
    // `scripts/check-host-tools --vagrant`): CI leaves it out (see the README).
    if std::env::var_os("KILN_TEST_VAGRANT").is_none_or(|v| v != "1") {
        eprintln!("it::devvm: the box under real Vagrant is left out; KILN_TEST_VAGRANT=1 runs it");
        return;
    }
    need!(Vagrant);
    let t = Instant::now();
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/devvm-vagrant"),
    )
    .args(["--release", RELEASE, "--repo"])
    .arg(&repo)
    .env("KILN", env!("CARGO_BIN_EXE_kiln"))
    .env("KILN_DEVVM_VMS", g.vms.path())
    .output()
    .expect("running scripts/devvm-vagrant");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail = &text[text.len().saturating_sub(6000)..];
    assert!(
        out.status.success(),
        "scripts/devvm-vagrant failed:\n{tail}"
    );
    assert_eq!(text.matches(": HTTP 200").count(), 2, "{tail}");
    assert!(
        text.contains("kiln: 0/"),
        "provisioning changed something:\n{tail}"
    );
    eprintln!(
        "vagrant up, page, halt, up, page, destroy: {:.1} s\n{}",
        t.elapsed().as_secs_f64(),
        &text[text.rfind("==> times").unwrap_or(text.len())..]
    );
}

/// A file of a dev VM disk's root partition, read without mounting it.
fn file_in_disk(disk: &Path, path: &str) -> String {
    let raw = tempfile::Builder::new()
        .prefix("kiln-devvm-raw-")
        .tempdir()
        .expect("tempdir");
    let part = raw.path().join("root.raw");
    // The root partition alone, as QEMU's raw driver reads it at its offset.
    let ok = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", "--image-opts"])
        .arg(format!(
            "driver=raw,offset=1048576,file.driver=qcow2,file.file.filename={}",
            disk.display()
        ))
        .arg(&part)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "qemu-img convert of {}", disk.display());
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(&part)
        .output()
        .expect("debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_rebuild_after_a_late_change_starts_from_a_checkpoint() {
    need!(VmImage, Network);
    let repo = Repo::own_policy();
    let vms = tempfile::tempdir().expect("tempdir");
    let build = |extra: &[&str]| {
        kiln()
            .env("KILN_DEVVM_VMS", vms.path())
            .arg("--repo")
            .arg(repo.path())
            .args(["devvm", "build", "--role", "devvm", "--size", "small"])
            .args(extra)
            .run()
            .success()
    };
    // Forced: an image from an earlier run would leave the checkpoints unused.
    build(&["--force"]);
    // The app cookbook's template, converged after the last package.
    let stamp = format!("// rebuilt {}-{:?}", std::process::id(), Instant::now());
    let template = repo.path().join("cookbooks/app/templates/config.php.hbs");
    let text = fs::read_to_string(&template).expect("the app's template");
    fs::write(&template, format!("{text}{stamp}\n")).expect("writing the template");
    let again = build(&[])
        .stderr_contains("from checkpoint ")
        .stdout_contains("updated      template[")
        .stdout_lacks("updated      package[");
    assert!(
        again.stderr.contains("(package["),
        "the start is the end of a package transaction:\n{}",
        again.stderr
    );
    let image_dir = PathBuf::from(again.stdout.lines().last().unwrap_or("").trim());
    let config = file_in_image(&image_dir, "/etc/kiln-shop/config.php");
    assert!(config.contains(&stamp), "the image's config.php:\n{config}");
}

#[test]
fn a_vm_that_does_not_answer_in_time_is_stopped() {
    need!(VmImage, Network, Qemu);
    let g = VmGuard::new(&format!("slow-{}", std::process::id()));
    let app = tempfile::tempdir().expect("tempdir");
    let repo = policy_repo();
    let out = g
        .kiln()
        .arg("--repo")
        .arg(repo.path())
        .args(["devvm", "up", &g.name, "--accel", "tcg", "--timeout", "3"])
        .args(["--release", RELEASE])
        .arg("--app")
        .arg(app.path())
        .run()
        .failure()
        .stderr_contains("did not come up within 3 s")
        .stderr_contains("serial log: ");
    assert!(
        out.stderr
            .contains(&g.dir().join("serial.log").display().to_string()),
        "{}",
        out.stderr
    );
    assert!(g.qemu_pid().is_none(), "QEMU still runs after the timeout");
    // Failed, with the reason, in status and list alike.
    g.kiln()
        .args(["devvm", "status", &g.name])
        .run()
        .success()
        .stdout_contains("state:    failed: VM ")
        .stdout_contains("did not come up within 3 s");
    let list = g.kiln().args(["devvm", "list"]).run().success();
    assert_eq!(listed_phase(&list.stdout, &g.name), "failed");
    g.kiln().args(["devvm", "destroy", &g.name]).run().success();
}

/// The phase `list` gives VM `name`.
fn listed_phase(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
        .to_string()
}

/// An engineer's weeks with one VM, in as few boots as that takes (four,
/// under TCG): `up --release bookworm` while a second `up` of the same name
/// waits for it; edits from the host and from inside; `status` (release,
/// no drift); a plain `up` of the running VM; `down` and a plain `up`
/// (still bookworm, the edits served); `destroy` and `up` (the file
/// written inside the VM survives); `--recreate` of the running VM; and
/// `destroy --purge`. On the way: the image cache, the box, a taken port.
#[test]
fn a_dev_vm_lives_through_up_edit_down_destroy_and_recreate() {
    need!(VmImage, Network, Qemu);
    let policy = policy_repo();
    let repo = policy.path().to_path_buf();
    let g = VmGuard::new(&format!("life-{}", std::process::id()));
    // No --app and no app/ in the repository: the VM's own app directory,
    // outside its state, with a file of the host's before the first up.
    let app = g.app_dir();
    fs::create_dir_all(&app).expect("an app directory");
    fs::write(app.join("hello.txt"), "hello from the host, v1\n").expect("writing");
    let build = || {
        g.kiln()
            .arg("--repo")
            .arg(&repo)
            .args(["devvm", "build", "--release", RELEASE])
    };

    // Build (a cache hit when nothing changed since the last build), then
    // a second build must be a cache hit.
    let t = Instant::now();
    let vanished = format!("memcached {} -> ", crate::substitute::IMPOSSIBLE);
    build()
        .run()
        .success()
        .stderr_contains(&vanished)
        .stderr_contains("kiln whitelist promote");
    eprintln!("build: {:.1} s", t.elapsed().as_secs_f64());
    // As production would: refused, naming the pin.
    build()
        .arg("--strict-pins")
        .run()
        .failure()
        .stderr_contains("--strict-pins refuses them");
    let warm = build().run().success().stderr_contains("cache hit");
    let image_dir = PathBuf::from(warm.stdout.trim());
    assert!(image_dir.join("disk.qcow2").is_file());

    // The first up, on a taken http port, and a second up of the same
    // name while it runs: the second waits, and says so.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let up = |extra: &[&str]| {
        g.kiln()
            .arg("--repo")
            .arg(&repo)
            .args(["devvm", "up", &g.name, "--accel", "tcg", "--timeout", "900"])
            .args(extra)
    };
    let t = Instant::now();
    let first = {
        let cmd = up(&["--release", RELEASE, "--http-port", &busy_port.to_string()]);
        std::thread::spawn(move || cmd.run())
    };
    // Until the first up has made the VM and taken its lock, `list` does
    // not show it building or booting.
    let mut seen = String::new();
    while !first.is_finished() && !["building", "booting"].contains(&seen.as_str()) {
        let list = g.kiln().args(["devvm", "list"]).run().success();
        if list.stdout.contains(&g.name) {
            seen = listed_phase(&list.stdout, &g.name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        ["building", "booting"].contains(&seen.as_str()),
        "an up in progress is listed as {seen:?}"
    );
    // status and list read one state machine: while the first up holds
    // the VM they say the same, unless it came to serve in between.
    let status = g.kiln().args(["devvm", "status", &g.name]).run().success();
    let list = g.kiln().args(["devvm", "list"]).run().success();
    let (said, listed) = (
        field(&status.stdout, "state:"),
        listed_phase(&list.stdout, &g.name),
    );
    assert!(
        said == listed || (listed == "running" && ["building", "booting"].contains(&said.as_str())),
        "status says {said:?}, list then {listed:?}"
    );
    // Plain: the release is the one the first up records.
    let second = up(&[]).run();
    eprintln!(
        "second up, waiting for the first: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let second = second
        .success()
        .stderr_contains("another kiln (pid ")
        .stderr_contains(&format!("VM {}; waiting for it to finish", g.name))
        .stdout_contains("already running, and serves");
    // Its exit 0 means the URL answers now.
    let http_port = port_of(&second.stdout, "url:");
    assert_ne!(http_port, busy_port);
    let (code, body) = http_get(http_port, "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Walnut serving board"), "{body}");
    let first = first.join().expect("the first up");
    eprintln!(
        "up (boot to serving, TCG): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if first.status != 0 {
        let log = fs::read_to_string(g.dir().join("serial.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "serial log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    first
        .success()
        .stdout_contains(&format!("url: http://127.0.0.1:{http_port}/"))
        .stdout_contains("ssh: ssh -i ")
        .stderr_contains(&format!("port {busy_port} is taken"));
    drop(busy);
    let pid = g.qemu_pid().expect("QEMU runs after up");

    // The stack's services, through `kiln devvm ssh`; the hostname is the
    // VM's name, in /etc/hostname too (kiln's node name).
    let active = g
        .kiln()
        .args(["devvm", "ssh", &g.name, "--"])
        .args([
            "systemctl",
            "is-active",
            "apache2",
            "mariadb",
            "memcached",
            "redis-server",
        ])
        .run()
        .success();
    assert_eq!(
        active.stdout.split_whitespace().collect::<Vec<_>>(),
        ["active"; 4],
        "{}",
        active.stdout
    );
    g.kiln()
        .args(["devvm", "ssh", &g.name, "--", "hostname; cat /etc/hostname"])
        .run()
        .success()
        .stdout_contains(&format!("{0}\n{0}\n", g.name));
    // A fresh VM is clean by the whitelist's audit: nothing of the base
    // image's, nothing by hand. The one finding allowed is the memcached
    // this policy pins to a version no source offers (substituted).
    let audit = g
        .kiln()
        .args(["devvm", "ssh", &g.name, "--"])
        .arg("/usr/local/bin/kiln --repo /etc/kiln/policy whitelist audit")
        .run();
    assert!(
        audit
            .stdout
            .contains("kiln whitelist audit: release bookworm"),
        "{}",
        audit.stdout
    );
    for line in audit.stdout.lines().filter(|l| l.starts_with("  ")) {
        assert!(
            line.trim_start().starts_with("memcached"),
            "a finding in a fresh VM: {line}\n{}",
            audit.stdout
        );
    }

    // Edits: the host's file, then the host's edit on the next GET; a file
    // written inside the VM as root lands in the same directory; editing a
    // file the app cookbook deployed into the share is not drift.
    let (code, body) = http_get(http_port, "/hello.txt");
    assert_eq!((code, body.as_str()), (200, "hello from the host, v1\n"));
    fs::write(app.join("hello.txt"), "hello from the host, v2\n").expect("editing");
    let (code, body) = http_get(http_port, "/hello.txt");
    assert_eq!((code, body.as_str()), (200, "hello from the host, v2\n"));
    let status = g.kiln().args(["devvm", "status", &g.name]).run().success();
    let mount = field(&status.stdout, "app:")
        .rsplit(" -> ")
        .next()
        .expect("the app mount")
        .to_string();
    g.kiln()
        .args(["devvm", "ssh", &g.name, "--"])
        .arg(format!("echo written inside the VM > {mount}/inside.txt"))
        .run()
        .success();
    let inside = "written inside the VM\n";
    assert_eq!(
        fs::read_to_string(app.join("inside.txt")).expect("the edit from inside, on the host"),
        inside
    );
    let index = app.join("index.php");
    let page = fs::read_to_string(&index).expect("the deployed index.php in the share");
    fs::write(&index, format!("{page}\n<!-- edited on the host -->\n")).expect("editing");
    g.kiln()
        .args(["devvm", "status", &g.name])
        .run()
        .success()
        .stdout_contains("state:    running")
        .stdout_contains(&format!("release:  {RELEASE}"))
        .stdout_contains(&format!("hostname: {}", g.name))
        .stdout_contains("accel:    tcg")
        .stdout_contains("unchanged since first boot")
        .stdout_contains(&format!("the app share {mount} is yours"))
        .stdout_lacks("DRIFTED")
        .stdout_contains("pins:     substituted")
        .stdout_contains(&vanished)
        .stdout_contains(&format!("app:      {} -> ", app.display()))
        .stdout_contains("destroy keeps it");
    let list = g.kiln().args(["devvm", "list"]).run().success();
    assert_eq!(listed_phase(&list.stdout, &g.name), "running");
    assert!(
        list.stdout.contains(&format!(" {RELEASE} ")),
        "{}",
        list.stdout
    );

    // A plain up of the running VM: the same VM, exit 0. Another release is
    // an error that names --recreate, and leaves it running.
    up(&[])
        .run()
        .success()
        .stdout_contains("already running")
        .stdout_contains(&format!("url: http://127.0.0.1:{http_port}/"));
    assert_eq!(g.qemu_pid(), Some(pid), "the same QEMU");
    up(&["--release", "trixie"])
        .run()
        .failure()
        .stderr_contains(&format!("VM {} was made with release {RELEASE}", g.name))
        .stderr_contains(&format!(
            "kiln devvm up {} --release trixie --recreate",
            g.name
        ));
    assert_eq!(g.qemu_pid(), Some(pid), "QEMU runs after a refused up");

    // kiln inside uses systemd, and after the boot converge changes nothing.
    g.kiln()
        .args(["devvm", "ssh", &g.name, "--"])
        .args([
            "/usr/local/bin/kiln",
            "--repo",
            "/etc/kiln/policy",
            "converge",
            "--role",
            "devvm",
            "--size",
            "small",
            "--substitute-vanished-pins",
        ])
        .run()
        .success()
        .stdout_contains("kiln: 0/");

    // down (ACPI), then a plain up: still bookworm, the edits served.
    g.kiln()
        .args(["devvm", "down", &g.name, "--timeout", "120"])
        .run()
        .success()
        .stdout_contains("is stopped");
    assert!(!alive_qemu(pid), "QEMU {pid} still runs after down");
    g.kiln()
        .args(["devvm", "status", &g.name])
        .run()
        .success()
        .stdout_contains("state:    stopped")
        .stdout_contains(&format!("release:  {RELEASE}"));
    let t = Instant::now();
    let again = up(&[]).run().success();
    eprintln!("plain up after down: {:.1} s", t.elapsed().as_secs_f64());
    let http_port = port_of(&again.stdout, "url:");
    assert_eq!(
        http_get(http_port, "/hello.txt"),
        (200, "hello from the host, v2\n".to_string())
    );
    assert_eq!(
        http_get(http_port, "/inside.txt"),
        (200, inside.to_string())
    );
    g.kiln()
        .args(["devvm", "status", &g.name])
        .run()
        .success()
        .stdout_contains(&format!("release:  {RELEASE}"))
        .stdout_lacks("DRIFTED");

    // destroy keeps the VM's own app directory, and says so; an up of the
    // same name shares it again: the file written inside is served.
    let pid = g.qemu_pid().expect("QEMU's pid");
    g.kiln()
        .args(["devvm", "destroy", &g.name])
        .run()
        .success()
        .stdout_contains("destroyed")
        .stdout_contains(&format!("Its app directory {} is kept", app.display()))
        .stdout_contains("--purge");
    assert!(!g.dir().exists());
    assert!(!alive_qemu(pid));
    assert!(
        image_dir.join("disk.qcow2").is_file(),
        "the image stays cached"
    );
    assert_eq!(
        fs::read_to_string(app.join("inside.txt")).expect("the edit survives destroy"),
        inside
    );
    let t = Instant::now();
    let again = up(&["--release", RELEASE]).run().success();
    eprintln!("up after destroy: {:.1} s", t.elapsed().as_secs_f64());
    let http_port = port_of(&again.stdout, "url:");
    assert_eq!(
        http_get(http_port, "/inside.txt"),
        (200, inside.to_string())
    );

    // --recreate of the running VM stops it first and keeps the app.
    let pid = g.qemu_pid().expect("QEMU's pid");
    let t = Instant::now();
    let recreated = up(&["--recreate"])
        .run()
        .success()
        .stderr_contains(&format!("stopping VM {} to recreate it", g.name))
        .stderr_contains("a fresh disk on image");
    eprintln!("up --recreate: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        !alive_qemu(pid),
        "the first QEMU still runs after --recreate"
    );
    let http_port = port_of(&recreated.stdout, "url:");
    assert_eq!(
        http_get(http_port, "/inside.txt"),
        (200, inside.to_string())
    );

    // --purge removes the VM's own app directory too.
    g.kiln()
        .args(["devvm", "destroy", &g.name, "--purge"])
        .run()
        .success()
        .stdout_contains("destroyed")
        .stdout_contains("is removed (--purge)");
    assert!(!app.exists(), "{} outlives --purge", app.display());
    assert!(!g.dir().exists());
}
