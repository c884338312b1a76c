//! A VM's life: up, ssh, status, down, destroy, list. Each returns what
//! it came to, and reports progress as [`Event`]s; nothing here prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::accel::{self, Choice};
use super::image::{self, Image, ImageSpec};
use super::lock::{Activity, Holder, VmLock};
use super::qemu::{Machine, Qmp};
use super::state::{self, State, VmDir, now};
use super::{DevvmError, Event, drift, guest, lock, paths, ports, run, sshkey, tools};
use crate::error::{Error, IoContext};
use crate::fingerprint::Fingerprint;

/// Default forwarded ports; a taken one picks the next free.
pub const DEFAULT_SSH_PORT: u16 = 2222;
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// What `up` is asked for.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub name: String,
    /// What it leaves out is the VM's own, else the default.
    pub image: ImageSpec,
    pub accel: Choice,
    pub ssh_port: Option<u16>,
    pub http_port: Option<u16>,
    /// The host directory shared into the VM at the app's docroot.
    pub app_dir: Option<PathBuf>,
    /// How long the VM gets to answer and finish booting.
    pub timeout: Option<Duration>,
    /// Start the VM over: stopped if it runs, a fresh disk on the current
    /// image (of the role, size and release asked for), the app directory kept.
    pub recreate: bool,
}

/// The ssh command line for a VM (without the remote command).
pub fn ssh_command(port: u16) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(sshkey::private_key())
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
        ])
        .arg("root@127.0.0.1");
    c
}

/// The ssh command as a person would type it.
pub fn ssh_line(port: u16) -> String {
    format!(
        "ssh -i {} -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1",
        sshkey::private_key().display()
    )
}

/// Runs `cmd` (its program and arguments) with a deadline; killed (and
/// `None`) when it runs past it.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let handle = duct::cmd(cmd.get_program(), cmd.get_args())
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .ok()?;
    match handle.wait_timeout(timeout) {
        Ok(Some(out)) => Some(out.clone()),
        _ => {
            let _ = handle.kill();
            None
        }
    }
}

/// Whether systemd's status lines on the serial console say sshd has
/// started (by its service, or by its socket where that is how it starts).
fn sshd_started(serial_log: &Path) -> bool {
    let text = fs::read(serial_log).unwrap_or_default();
    String::from_utf8_lossy(&text).lines().any(|l| {
        (l.contains("Started") && l.contains("ssh.service"))
            || (l.contains("Listening on") && l.contains("ssh.socket"))
    })
}

/// Whether sshd greets on the VM's forwarded port. QEMU's user network
/// accepts the connection on the host at once; until the guest has its
/// address the greeting never comes, and an ssh client would sit out its
/// whole connect timeout. This costs at most a second and a half a try.
fn ssh_banner(port: u16) -> bool {
    use std::io::Read as _;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"SSH-"
}

/// A command in the VM over ssh, bounded.
pub fn ssh_run(port: u16, remote: &str, timeout: Duration) -> Option<Output> {
    run_bounded(ssh_command(port).arg(remote), timeout)
}

/// Where a VM serves http on this host.
/// A VM's recorded state. A VM made before its release was recorded
/// takes it from the manifest of the image its disk is on.
pub fn recorded(vm: &VmDir) -> Option<State> {
    let mut s = vm.load()?;
    if s.release.is_empty()
        && let Some(img) = Image::open(&s.image_key)
    {
        s.release = img.manifest.release;
    }
    Some(s)
}

pub fn url(s: &State) -> String {
    format!("http://127.0.0.1:{}/", s.http_port)
}

/// What `up` came to.
#[derive(Debug)]
pub enum Up {
    /// The VM was running already (perhaps booted by another `up` this
    /// one waited for), and serves.
    AlreadyRunning { state: State },
    /// Booted, converged and serving.
    Ready { state: State, took: Duration },
    /// Booted, but the boot converge did not succeed: the VM is left
    /// running for a look. `unit` is the unit's state, `journal` its log.
    ConvergeFailed {
        name: String,
        unit: String,
        journal: String,
    },
}

/// Tells `on` that another kiln holds VM `name`'s lock, and for what.
fn waiting<'a>(name: &'a str, on: &'a dyn Fn(Event)) -> impl Fn(&Holder) + 'a {
    move |h: &Holder| {
        on(Event::Note(format!(
            "another kiln (pid {}) is {} VM {name}; waiting for it to finish",
            h.pid,
            h.activity.word()
        )))
    }
}

/// Boots VM `req.name`, building its image first when needed, and returns
/// once it serves (ssh and the URL answer), one `up` of a name at a time.
pub fn up(req: &UpRequest, on: &dyn Fn(Event)) -> Result<Up, Error> {
    let vm = VmDir::new(&req.name)?;
    let lock =
        VmLock::acquire(&vm, true, &waiting(&req.name, on))?.expect("up makes the VM's directory");
    let had_state = recorded(&vm).is_some();
    let result = up_locked(req, &vm, &lock, on);
    if result.is_err() && !had_state && recorded(&vm).is_none() && !vm.running() {
        // A first up that failed before QEMU ran leaves no VM behind.
        let _ = fs::remove_dir_all(&vm.dir);
    }
    result
}

fn up_locked(req: &UpRequest, vm: &VmDir, lock: &VmLock, on: &dyn Fn(Event)) -> Result<Up, Error> {
    let step = |msg: String| on(Event::Step(msg));
    lock.set(Activity::Building);
    let old = recorded(vm);
    let build = req.image.request(old.as_ref(), false);
    if let Some(s) = &old
        && !req.recreate
    {
        let differences = req.image.differences(s);
        if !differences.is_empty() {
            return Err(DevvmError::OtherImage {
                name: req.name.clone(),
                differences,
            }
            .into());
        }
    }
    if vm.running() && !req.recreate {
        let Some(s) = old else {
            return Err(DevvmError::RunsWithoutState(req.name.clone()).into());
        };
        // Booted by an up that did not see it through, or long ago: either
        // way it must answer before this says yes.
        tools::require(&[tools::SSH])?;
        lock.set(Activity::Booting);
        step(format!(
            "VM {} is running; checking that it serves",
            req.name
        ));
        let timeout = req.timeout.unwrap_or(default_timeout(&s.accel));
        return Ok(match serve(vm, s, Instant::now(), timeout, false, on)? {
            Served::Ready(state) => Up::AlreadyRunning { state: *state },
            Served::ConvergeFailed { unit, journal } => Up::ConvergeFailed {
                name: req.name.clone(),
                unit,
                journal,
            },
        });
    }
    tools::require(&[tools::QEMU, tools::QEMU_IMG, tools::SSH])?;
    let t0 = Instant::now();
    step(format!(
        "image for role {} size {} on {}",
        build.role, build.size, build.release
    ));
    let img = build_while_probing(req.accel, &build, on)?;
    if img.cached {
        step(format!(
            "image {} from the cache ({})",
            &img.manifest.key[..12],
            img.dir.display()
        ));
    }
    fs::create_dir_all(&vm.dir).ctx(|| format!("creating {}", vm.dir.display()))?;
    // Stopped only now that the image is there: a failed build leaves it running.
    if vm.running() {
        step(format!(
            "stopping VM {} to recreate it (--recreate)",
            req.name
        ));
        down_locked(vm, Duration::from_secs(90), on)?;
    }

    // An existing VM keeps the image its overlay was made on.
    let img = match &old {
        _ if vm.overlay().is_file() && req.recreate => {
            step(format!(
                "a fresh disk on image {} (--recreate; the app directory stays)",
                &img.manifest.key[..12]
            ));
            fs::remove_file(vm.overlay()).ctx(|| format!("removing {}", vm.overlay().display()))?;
            img
        }
        Some(s) if vm.overlay().is_file() && s.image_key != img.manifest.key => {
            match Image::open(&s.image_key) {
                Some(prev) => {
                    on(Event::Note(format!(
                        "VM {} was created from image {}; the policy has changed since \
                         (image {}). `kiln devvm up {} --recreate` starts it over on the new one.",
                        req.name,
                        &s.image_key[..12],
                        &img.manifest.key[..12],
                        req.name
                    )));
                    prev
                }
                None => {
                    on(Event::Note(format!(
                        "the image VM {} was made from is gone; recreating its disk",
                        req.name
                    )));
                    let _ = fs::remove_file(vm.overlay());
                    img
                }
            }
        }
        _ => img,
    };
    if !vm.overlay().is_file() {
        step("creating the VM's copy-on-write disk on the image".into());
        run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(img.disk())
                .arg(vm.overlay()),
            "qemu-img create",
        )?;
    }
    let accel = accel::choose(req.accel, &img.kernel(), on)?;
    // The app share: --app, else what this VM had, else the repository's
    // app/, else the VM's own under the data directory (not its state, so
    // that destroy keeps it); edit it on the host.
    let app_dir = match &req.app_dir {
        Some(d) => fs::canonicalize(d).ctx(|| format!("--app {}", d.display()))?,
        None => {
            let previous = old
                .as_ref()
                .map(|s| s.app_dir.clone())
                .filter(|d| d.is_dir());
            let in_repo = build.repo.join("app");
            match previous {
                Some(d) => d,
                None if in_repo.is_dir() => fs::canonicalize(&in_repo).unwrap_or(in_repo),
                None => {
                    let d = paths::app_dir(&req.name);
                    fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
                    d
                }
            }
        }
    };
    // The share starts with what the cookbooks deploy there, file by file
    // where it has none (never over the engineer's own): from then on their
    // edits rule, since the app cookbook leaves a mounted docroot alone.
    let seed = img.app_seed();
    if seed.is_dir() {
        let ok = Command::new("cp")
            .args(["-a", "-n", "--"])
            .arg(seed.join("."))
            .arg(&app_dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            on(Event::Warning(format!(
                "could not seed the app share {} from {}",
                app_dir.display(),
                seed.display()
            )));
        }
    }
    let app_dir = Some(app_dir);

    // A disk made anew has not booted yet.
    let same_disk = old
        .as_ref()
        .filter(|o| o.image_key == img.manifest.key && !req.recreate);
    let mut attempt = 0;
    let state = loop {
        attempt += 1;
        let ssh_port = ports::pick(req.ssh_port.or(Some(DEFAULT_SSH_PORT)), &[])
            .ctx(|| "finding a free port".to_string())?;
        let http_port = ports::pick(req.http_port.or(Some(DEFAULT_HTTP_PORT)), &[ssh_port])
            .ctx(|| "finding a free port".to_string())?;
        if let Some(p) = req.ssh_port.filter(|p| *p != ssh_port) {
            on(Event::Note(format!(
                "port {p} is taken; ssh is forwarded from {ssh_port}"
            )));
        }
        if let Some(p) = req.http_port.filter(|p| *p != http_port) {
            on(Event::Note(format!(
                "port {p} is taken; http is forwarded from {http_port}"
            )));
        }
        lock.set(Activity::Booting);
        for f in [vm.pidfile(), vm.monitor(), vm.serial_log()] {
            let _ = fs::remove_file(f);
        }
        let m = Machine {
            name: req.name.clone(),
            hostname: hostname(&req.name),
            accel,
            cpus: img.manifest.cpus,
            memory_mb: img.manifest.memory_mb,
            kernel: img.kernel(),
            initrd: img.initrd(),
            disk: vm.overlay(),
            ssh_port,
            http_port,
            app_dir: app_dir.clone(),
            serial_log: vm.serial_log(),
            monitor: vm.monitor(),
            pidfile: vm.pidfile(),
        };
        step(format!(
            "starting QEMU ({}, {} CPUs, {} MB): ssh on 127.0.0.1:{ssh_port}, http on 127.0.0.1:{http_port}",
            accel.name(),
            m.cpus,
            m.memory_mb
        ));
        let log = fs::File::create(vm.qemu_log()).ctx(|| "creating qemu.log".to_string())?;
        let status = Command::new("qemu-system-x86_64")
            .args(m.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().ctx(|| "qemu.log".to_string())?)
            .stderr(log)
            .status()
            .ctx(|| "running qemu-system-x86_64".to_string())?;
        if status.success() && vm.pid().is_some() {
            break State {
                name: req.name.clone(),
                image_key: img.manifest.key.clone(),
                image_dir: img.dir.clone(),
                role: img.manifest.role.clone(),
                size: img.manifest.size.clone(),
                release: img.manifest.release.clone(),
                hostname: m.hostname.clone(),
                cpus: m.cpus,
                memory_mb: m.memory_mb,
                accel: accel.name().into(),
                ssh_port,
                http_port,
                app_dir: app_dir.clone().unwrap_or_default(),
                app_mount: img.manifest.app_mount.clone(),
                started: now(),
                ready: None,
                // A disk made anew has not booted yet.
                boot_fingerprint: same_disk.and_then(|o| o.boot_fingerprint.clone()),
                boot_parts: same_disk.map(|o| o.boot_parts.clone()).unwrap_or_default(),
                failure: None,
            };
        }
        let why = fs::read_to_string(vm.qemu_log()).unwrap_or_default();
        // A port taken between our check and QEMU's bind: try fresh ones.
        if attempt < 3 && why.contains("forwarding rule") {
            continue;
        }
        return Err(DevvmError::QemuDidNotStart {
            status,
            log: why.trim().to_string(),
        }
        .into());
    };
    vm.save(&state)?;
    let timeout = req.timeout.unwrap_or(default_timeout(accel.name()));
    step(format!(
        "booting; waiting for ssh (serial log: {})",
        vm.serial_log().display()
    ));
    Ok(match serve(vm, state, t0, timeout, true, on)? {
        Served::Ready(state) => Up::Ready {
            state: *state,
            took: t0.elapsed(),
        },
        Served::ConvergeFailed { unit, journal } => Up::ConvergeFailed {
            name: req.name.clone(),
            unit,
            journal,
        },
    })
}

/// How long a VM gets to serve, unless `--timeout` says.
fn default_timeout(accel: &str) -> Duration {
    if accel == accel::Accel::Kvm.name() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(900)
    }
}

/// How waiting for a VM to serve ended, short of an error.
enum Served {
    Ready(Box<State>),
    ConvergeFailed { unit: String, journal: String },
}

/// Waits until the VM serves, and records in its state that it does (and
/// its first boot's fingerprint) or why not. A QEMU this `up` started
/// (`ours`) is stopped when the VM never answers; one it found running is
/// left as it is.
fn serve(
    vm: &VmDir,
    mut state: State,
    t0: Instant,
    timeout: Duration,
    ours: bool,
    on: &dyn Fn(Event),
) -> Result<Served, Error> {
    let failed = |state: &mut State, why: String| {
        state.failure = Some(why);
        let _ = vm.save(state);
    };
    let error = match wait_ready(vm, &state, t0, timeout, on) {
        Ok(()) => None,
        Err(Wait::Timeout(what)) if ours => {
            on(Event::Step(format!("{what}; stopping the VM")));
            kill(vm);
            Some(DevvmError::BootTimeout {
                name: vm.name.clone(),
                secs: timeout.as_secs(),
                what,
                serial_log: vm.serial_log(),
            })
        }
        Err(Wait::Timeout(what)) => Some(DevvmError::NotAnswering {
            name: vm.name.clone(),
            secs: timeout.as_secs(),
            what,
            serial_log: vm.serial_log(),
        }),
        Err(Wait::Died) => Some(DevvmError::QemuExited {
            name: vm.name.clone(),
            serial_log: vm.serial_log(),
            qemu_log: vm.qemu_log(),
        }),
        Err(Wait::ConvergeFailed { unit, journal }) => {
            failed(
                &mut state,
                format!(
                    "the boot converge ({}) did not succeed ({unit})",
                    guest::CONVERGE_UNIT
                ),
            );
            return Ok(Served::ConvergeFailed { unit, journal });
        }
    };
    if let Some(e) = error {
        failed(&mut state, e.to_string());
        return Err(e.into());
    }
    state.ready = Some(now());
    state.failure = None;
    if state.boot_fingerprint.is_none() || state.boot_parts.is_empty() {
        let fp = vm_fingerprint(state.ssh_port, &state.app_mount);
        state.boot_fingerprint = fp.as_ref().map(|f| f.fingerprint.clone());
        state.boot_parts = fp.map(|f| f.parts).unwrap_or_default();
    }
    vm.save(&state)?;
    Ok(Served::Ready(Box::new(state)))
}

/// Builds the image. On a host's first `up` with `--accel auto`, the KVM
/// probe (a bounded test boot that mostly waits, up to 20 s) runs beside
/// the build, on the base root's kernel, instead of after it.
fn build_while_probing(
    choice: Choice,
    build: &image::BuildRequest,
    on: &dyn Fn(Event),
) -> Result<Image, Error> {
    if choice != Choice::Auto || accel::cached().is_some() {
        return image::build(build, on);
    }
    std::thread::scope(|scope| {
        let probe = std::cell::RefCell::new(None);
        let img = image::build_with(build, on, &|kernel| {
            on(Event::Step(
                "probing whether KVM really works, beside the build (a bounded test boot, once per host)"
                    .into(),
            ));
            let kernel = kernel.to_path_buf();
            *probe.borrow_mut() = Some(scope.spawn(move || accel::verdict(&kernel, &|_| {})));
        });
        if let Some(probe) = probe.into_inner() {
            let _ = probe.join();
        }
        img
    })
}

/// A VM's hostname: its name, as a hostname label may spell it.
pub fn hostname(name: &str) -> String {
    super::sanitize(name)
}

enum Wait {
    Timeout(String),
    Died,
    ConvergeFailed { unit: String, journal: String },
}

fn wait_ready(
    vm: &VmDir,
    s: &State,
    t0: Instant,
    timeout: Duration,
    on: &dyn Fn(Event),
) -> Result<(), Wait> {
    let step = |msg: String| on(Event::Step(msg));
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut last_note = Instant::now();
    let mut greeted = false;
    let waited = Instant::now();
    // One session, once sshd greets: each ssh login costs a second or more
    // under TCG. It waits for the boot to finish, then reads the unit.
    let remote = format!(
        "systemctl is-system-running --wait; systemctl show -p ActiveState -p Result --value {}",
        guest::CONVERGE_UNIT
    );
    let out = loop {
        if !vm.running() {
            return Err(Wait::Died);
        }
        if left().is_zero() {
            return Err(Wait::Timeout(if greeted {
                "systemd did not finish starting units".into()
            } else {
                "ssh never answered".into()
            }));
        }
        // Knocking before sshd listens costs more than it finds: QEMU's
        // user network keeps resending every abandoned connection to the
        // guest, and when sshd starts, the pile of them trips its
        // MaxStartups (10 s and more lost under TCG). So knock only once
        // the console says sshd is up, or, for a console that never says,
        // after a minute.
        let knock =
            greeted || sshd_started(&vm.serial_log()) || waited.elapsed() > Duration::from_secs(60);
        if knock && ssh_banner(s.ssh_port) {
            if !greeted {
                greeted = true;
                step(format!(
                    "ssh answers ({:.0} s); waiting for systemd to finish starting units and for {}",
                    t0.elapsed().as_secs_f64(),
                    guest::CONVERGE_UNIT
                ));
            }
            match ssh_run(s.ssh_port, &remote, left()) {
                None => {
                    return Err(Wait::Timeout(
                        "systemd did not finish starting units".into(),
                    ));
                }
                // 255 is ssh's own failure: sshd not ready for logins yet.
                Some(o) if o.status.code() != Some(255) => break o,
                Some(_) => {}
            }
        }
        if last_note.elapsed() > Duration::from_secs(30) {
            last_note = Instant::now();
            on(Event::Booting {
                elapsed: t0.elapsed(),
                console: boot_progress(&vm.serial_log()),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    let verdict = lines.next().unwrap_or_default().to_string();
    let unit = lines.collect::<Vec<_>>().join(" ");
    if !unit.contains("success") || !unit.contains("active") {
        let journal = ssh_run(
            s.ssh_port,
            &format!("journalctl -b -u {} --no-pager -n 40", guest::CONVERGE_UNIT),
            Duration::from_secs(30),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
        return Err(Wait::ConvergeFailed { unit, journal });
    }
    if verdict != "running" {
        let failed = ssh_run(
            s.ssh_port,
            "systemctl --failed --no-legend --plain",
            Duration::from_secs(30),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
        on(Event::Warning(format!(
            "systemd reports {verdict:?}; failed units:\n{failed}"
        )));
    }
    // The URL kiln prints must answer (any HTTP status: an error page is
    // the engineer's to read).
    let url = url(s);
    let mut told = false;
    while let Err(e) = crate::verify::http_get(&url) {
        if !vm.running() {
            return Err(Wait::Died);
        }
        if left().is_zero() {
            return Err(Wait::Timeout(format!("{url} never answered ({e})")));
        }
        if !told {
            step(format!("waiting for {url} to answer"));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// The last meaningful line of the serial console, for progress.
fn boot_progress(log: &Path) -> String {
    let text = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(|l| {
            let l: String = l.chars().filter(|c| !c.is_control()).collect();
            l.chars().take(100).collect::<String>()
        })
        .unwrap_or_else(|| "no console output yet".into())
}

/// Kills QEMU now.
fn kill(vm: &VmDir) {
    if let Some(pid) = vm.pid() {
        // SAFETY: signalling a pid we checked is our QEMU.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let t = Instant::now();
        while vm.running() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = fs::remove_file(vm.pidfile());
    let _ = fs::remove_file(vm.monitor());
}

/// What `down` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// There is no such VM.
    Absent,
    NotRunning,
    /// Powered off (or killed after the timeout) in `took`.
    Stopped {
        took: Duration,
    },
}

/// A clean shutdown: ACPI power button through the monitor, then, after
/// `timeout`, QEMU is killed.
pub fn down(name: &str, timeout: Duration, on: &dyn Fn(Event)) -> Result<Down, Error> {
    let vm = VmDir::new(name)?;
    let Some(lock) = VmLock::acquire(&vm, false, &waiting(name, on))? else {
        return Ok(Down::Absent);
    };
    lock.set(Activity::Stopping);
    down_locked(&vm, timeout, on)
}

/// [`down`], under the VM's lock.
fn down_locked(vm: &VmDir, timeout: Duration, on: &dyn Fn(Event)) -> Result<Down, Error> {
    let name = &vm.name;
    if !vm.running() {
        let _ = fs::remove_file(vm.pidfile());
        return Ok(Down::NotRunning);
    }
    on(Event::Step(format!(
        "ACPI shutdown of VM {name} (up to {} s)",
        timeout.as_secs()
    )));
    let t = Instant::now();
    match Qmp::connect(&vm.monitor()).and_then(|mut q| q.execute("system_powerdown")) {
        Ok(_) => {
            while vm.running() && t.elapsed() < timeout {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Err(e) => on(Event::Warning(e.to_string())),
    }
    if vm.running() {
        on(Event::Warning(format!(
            "VM {name} did not power off in time; killing QEMU"
        )));
        kill(vm);
    } else {
        let _ = fs::remove_file(vm.pidfile());
        let _ = fs::remove_file(vm.monitor());
    }
    Ok(Down::Stopped { took: t.elapsed() })
}

/// What `destroy` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destroy {
    /// There was no such VM; `app` is what became of a default app
    /// directory left by an earlier one.
    Absent { app: App },
    /// Removed; `down` is how it was stopped first, if it ran.
    Destroyed { down: Option<Down>, app: App },
}

/// What `destroy` did with the VM's app directory: the engineer's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// The VM had none.
    None,
    /// kiln's default one, kept for the next VM of this name.
    Kept(PathBuf),
    /// kiln's default one, removed (`--purge`).
    Purged(PathBuf),
    /// `--app` or the repository's `app/`: the engineer's own, never touched.
    Theirs(PathBuf),
}

/// down, then the VM's overlay and state are removed. Its default app
/// directory is kept (moved out of the state, where VMs made before it
/// lived elsewhere had it), unless `purge`.
pub fn destroy(
    name: &str,
    timeout: Duration,
    purge: bool,
    on: &dyn Fn(Event),
) -> Result<Destroy, Error> {
    let vm = VmDir::new(name)?;
    let default_app = paths::app_dir(name);
    let purge_default = || -> Result<App, Error> {
        if !default_app.exists() {
            return Ok(App::None);
        }
        let dir = paths::vm_data_dir(name);
        fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))?;
        Ok(App::Purged(default_app.clone()))
    };
    let Some(lock) = VmLock::acquire(&vm, false, &waiting(name, on))? else {
        let app = if purge {
            purge_default()?
        } else if default_app.is_dir() {
            App::Kept(default_app.clone())
        } else {
            App::None
        };
        return Ok(Destroy::Absent { app });
    };
    lock.set(Activity::Stopping);
    let down = if vm.running() {
        Some(down_locked(&vm, timeout, on)?)
    } else {
        None
    };
    let used = vm
        .load()
        .map(|s| s.app_dir)
        .filter(|d| !d.as_os_str().is_empty());
    let app = match used {
        // A VM made before the data directory had its app in its state.
        Some(d) if d.starts_with(&vm.dir) && d.is_dir() => {
            if purge {
                purge_default()?;
                App::Purged(d)
            } else {
                let to = if default_app.exists() {
                    paths::vm_data_dir(name).join(format!("app-{}", now()))
                } else {
                    default_app.clone()
                };
                let parent = paths::vm_data_dir(name);
                fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
                fs::rename(&d, &to).ctx(|| {
                    format!(
                        "keeping the app directory: moving {} to {}",
                        d.display(),
                        to.display()
                    )
                })?;
                App::Kept(to)
            }
        }
        Some(d) if d == default_app && !purge => App::Kept(d),
        Some(d) if d == default_app => purge_default()?,
        Some(d) if d.starts_with(&vm.dir) => App::None,
        Some(d) => App::Theirs(d),
        None if purge => purge_default()?,
        None => App::None,
    };
    // Removed under the lock: a waiting `up` then makes a new VM.
    fs::remove_dir_all(&vm.dir).ctx(|| format!("removing {}", vm.dir.display()))?;
    drop(lock);
    Ok(Destroy::Destroyed { down, app })
}

/// Replaces this process with ssh into the VM; returns only when it cannot.
pub fn ssh(name: &str, command: &[String]) -> Result<std::convert::Infallible, Error> {
    use std::os::unix::process::CommandExt;
    let vm = VmDir::new(name)?;
    let Some(s) = recorded(&vm).filter(|_| vm.running()) else {
        return Err(DevvmError::NotRunning(name.to_string()).into());
    };
    tools::require(&[tools::SSH])?;
    let mut c = ssh_command(s.ssh_port);
    // Interactive: no BatchMode restriction matters for key auth; a tty when no command.
    if command.is_empty() {
        c.arg("-t");
    }
    c.args(command);
    let e = c.exec();
    Err(DevvmError::SshCouldNotRun(e).into())
}

/// Where a VM is in its life: the one answer `list` and `status` give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// An `up` is building or finding its image.
    Building,
    /// An `up` started QEMU and waits for the VM to serve.
    Booting,
    /// QEMU runs and the VM served when its `up` last looked.
    Running,
    Stopped,
    /// Why it is neither running nor stopped as it should be.
    Failed(String),
}

impl Phase {
    /// One word, for a table column.
    pub fn word(&self) -> &'static str {
        match self {
            Phase::Building => "building",
            Phase::Booting => "booting",
            Phase::Running => "running",
            Phase::Stopped => "stopped",
            Phase::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Failed(why) => write!(f, "failed: {why}"),
            p => f.write_str(p.word()),
        }
    }
}

/// The phase of `vm`, whose state is `state`: what an `up` in progress
/// says it does, else what its QEMU and its last `up` came to.
pub fn phase(vm: &VmDir, state: Option<&State>) -> Phase {
    match lock::holder(vm).map(|h| h.activity) {
        Some(Activity::Building) => return Phase::Building,
        Some(Activity::Booting) => return Phase::Booting,
        Some(Activity::Stopping) | None => {}
    }
    let running = vm.running();
    match state {
        None if running => Phase::Failed(format!(
            "QEMU runs without a recorded state: kiln devvm destroy {}",
            vm.name
        )),
        None => Phase::Failed(format!(
            "its first up did not finish: kiln devvm up {0}, or kiln devvm destroy {0}",
            vm.name
        )),
        Some(s) => match &s.failure {
            Some(why) => Phase::Failed(why.clone()),
            None if running && s.ready.is_some() => Phase::Running,
            None if running => Phase::Failed(format!(
                "no up saw it serve (interrupted?): kiln devvm up {} waits until it does",
                vm.name
            )),
            None => Phase::Stopped,
        },
    }
}

/// One VM as `status` finds it.
#[derive(Debug)]
pub struct Status {
    pub name: String,
    pub phase: Phase,
    /// `None` while its first `up` builds.
    pub state: Option<State>,
    pub running: bool,
    pub serial_log: PathBuf,
    /// Pins its image substituted (a declared difference from production).
    pub substitutions: Vec<String>,
    /// Asked of the VM only while it runs.
    pub fingerprint: Option<Fingerprints>,
}

/// The VM's fingerprint now, beside the image's (its build converge) and
/// its own first boot's (after the converge that needs running services),
/// each with the app share recorded as the mount (see [`super::drift`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// `None` when `kiln fingerprint` did not run in the VM.
    pub now: Option<String>,
    pub image: Option<String>,
    pub first_boot: Option<String>,
    /// The resources that moved since first boot.
    pub moved: Vec<String>,
    /// The app share, left out of all three.
    pub share: Option<String>,
}

/// One VM's status.
pub fn status(name: &str) -> Result<Status, Error> {
    let vm = VmDir::new(name)?;
    if !vm.exists() {
        return Err(DevvmError::NotFound {
            name: name.to_string(),
            suggest_up: true,
        }
        .into());
    }
    let state = recorded(&vm);
    let phase = phase(&vm, state.as_ref());
    let running = vm.running();
    let image = state.as_ref().and_then(|s| Image::open(&s.image_key));
    let substitutions = image
        .as_ref()
        .map(|i| {
            i.manifest
                .substitutions
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    // Asked of a VM that serves: one still booting may not answer ssh yet.
    let fingerprint = state.as_ref().filter(|_| phase == Phase::Running).map(|s| {
        let now = vm_fingerprint(s.ssh_port, &s.app_mount);
        // A first boot recorded before the share was left out compares with nothing.
        let first_boot = s
            .boot_fingerprint
            .clone()
            .filter(|_| !s.boot_parts.is_empty());
        Fingerprints {
            moved: match (&now, &first_boot) {
                (Some(n), Some(_)) => drift::moved(&s.boot_parts, &n.parts),
                _ => Vec::new(),
            },
            now: now.map(|n| n.fingerprint),
            image: image.and_then(|i| i.manifest.fingerprint),
            first_boot,
            share: (!s.app_dir.as_os_str().is_empty()).then(|| s.app_mount.clone()),
        }
    });
    Ok(Status {
        name: vm.name.clone(),
        phase,
        state,
        running,
        serial_log: vm.serial_log(),
        substitutions,
        fingerprint,
    })
}

/// The VM's `kiln fingerprint` (of its last run) with the app share at
/// `app_mount` recorded as the mount, if kiln there has the command.
fn vm_fingerprint(port: u16, app_mount: &str) -> Option<Fingerprint> {
    let cmd = format!(
        "{} --repo {} fingerprint --json",
        guest::KILN_BIN,
        guest::POLICY_DIR
    );
    let o = ssh_run(port, &cmd, Duration::from_secs(120))?;
    if !o.status.success() {
        return None;
    }
    let fp = Fingerprint::parse(&String::from_utf8_lossy(&o.stdout)).ok()?;
    Some(drift::share_as_mount(&fp, app_mount))
}

/// One VM of `list`: its phase, and its state when readable.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub running: bool,
    pub phase: Phase,
    pub state: Option<State>,
}

/// Every VM, this host's KVM verdict if probed, and the cached images.
#[derive(Debug)]
pub struct Listing {
    pub vms: Vec<Listed>,
    pub kvm: Option<accel::Verdict>,
    pub images: Vec<Image>,
}

pub fn list() -> Listing {
    Listing {
        vms: state::all()
            .into_iter()
            .map(|vm| {
                let state = recorded(&vm);
                Listed {
                    running: vm.running(),
                    phase: phase(&vm, state.as_ref()),
                    state,
                    name: vm.name,
                }
            })
            .collect(),
        kvm: accel::cached(),
        images: image::list(),
    }
}
