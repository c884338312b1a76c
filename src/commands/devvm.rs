//! `kiln devvm`: developer VMs built from a role and booted with QEMU. The
//! work is `devvm`'s; this renders its progress and outcomes and picks the
//! exit code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::devvm::image::{self, BuildRequest, ImageSpec};
use crate::devvm::state::{VmDir, human_age, human_duration, now};
use crate::devvm::vagrant::{self, RepoVagrantfile};
use crate::devvm::vm::{self, App, Destroy, Down, Fingerprints, Listing, Status, Up};
use crate::devvm::{Event, guest};
use crate::error::Error;

/// The default VM name and role.
pub const DEFAULT_NAME: &str = "devvm";

/// One `kiln devvm` subcommand, with what it works on.
pub enum Devvm {
    Build(BuildRequest),
    Up(vm::UpRequest),
    Ssh {
        name: String,
        command: Vec<String>,
    },
    Status {
        name: String,
    },
    Down {
        name: String,
        timeout: Duration,
    },
    /// `purge`: the VM's default app directory goes too.
    Destroy {
        name: String,
        timeout: Duration,
        purge: bool,
    },
    List,
    /// `vm`: the VM whose role, size and release fill what `image` leaves out.
    Box {
        image: ImageSpec,
        vm: String,
    },
}

/// `vms_dir`: where VMs keep their state, instead of kiln's cache.
pub fn run(vms_dir: Option<PathBuf>, cmd: Devvm) -> Result<i32, Error> {
    if let Some(dir) = vms_dir {
        crate::devvm::paths::set_vms_dir(dir);
    }
    let on = &progress;
    match cmd {
        Devvm::Build(req) => {
            let started = Instant::now();
            let img = image::build(&req, on)?;
            if img.cached {
                progress(Event::Step(format!(
                    "cache hit in {:.2} s: nothing changed since this image was built",
                    started.elapsed().as_secs_f64()
                )));
            }
            println!("{}", img.dir.display());
            Ok(0)
        }
        Devvm::Up(req) => Ok(show_up(&vm::up(&req, on)?)),
        Devvm::Ssh { name, command } => match vm::ssh(&name, &command)? {},
        Devvm::Status { name } => {
            show_status(&vm::status(&name)?);
            Ok(0)
        }
        Devvm::Down { name, timeout } => {
            show_down(&name, vm::down(&name, timeout, on)?);
            Ok(0)
        }
        Devvm::Destroy {
            name,
            timeout,
            purge,
        } => {
            match vm::destroy(&name, timeout, purge, on)? {
                Destroy::Absent { app } => {
                    println!("No VM named {name}: nothing to destroy.");
                    show_app(&name, &app);
                }
                Destroy::Destroyed { down, app } => {
                    if let Some(d) = down {
                        show_down(&name, d);
                    }
                    println!("VM {name} is destroyed (its image stays cached).");
                    show_app(&name, &app);
                }
            }
            Ok(0)
        }
        Devvm::List => {
            show_list(&vm::list());
            Ok(0)
        }
        Devvm::Box { image, vm } => {
            let mut req = image.request(vm::recorded(&VmDir::new(&vm)?).as_ref(), false);
            req.flavor = crate::devvm::image::Flavor::Vagrant;
            let img = image::build(&req, on)?;
            let boxed = vagrant::make_box(&img, &req.repo, on)?;
            match &boxed.vagrantfile {
                RepoVagrantfile::UpToDate(vf) => println!("{} is up to date", vf.display()),
                RepoVagrantfile::Kept { path, role } => println!(
                    "{} differs from what kiln writes for role {role}; left as it is \
                     (remove it and run `kiln devvm box --role {role} --size {} --release {}` \
                     again to have it written afresh)",
                    path.display(),
                    req.size,
                    req.release
                ),
                RepoVagrantfile::Written(vf) => println!("wrote {}", vf.display()),
            }
            println!(
                "box kiln/{} version {}{} (catalog {})",
                boxed.name,
                boxed.version,
                if boxed.cached {
                    ", packaged before"
                } else {
                    ""
                },
                boxed.catalog.display()
            );
            println!(
                "start it: cd {}/vagrant && KILN_DEVVM_ROLE={} KILN_DEVVM_SIZE={} KILN_DEVVM_RELEASE={} \
                 vagrant up --provider=libvirt",
                req.repo.display(),
                req.role,
                req.size,
                req.release
            );
            println!("{}", boxed.path.display());
            Ok(0)
        }
    }
}

/// Progress on stderr, so that stdout stays for results; the image's
/// converge prints its resources on stdout, as `kiln converge` does.
fn progress(e: Event) {
    match e {
        Event::Step(msg) => eprintln!("==> {msg}"),
        Event::Note(msg) => eprintln!("note: {msg}"),
        Event::Warning(msg) => eprintln!("warning: {msg}"),
        Event::Booting { elapsed, console } => {
            eprintln!("    ... {:.0} s, {console}", elapsed.as_secs_f64())
        }
        Event::Converged(line) | Event::ConvergeSummary(line) => println!("{line}"),
    }
}

/// Prints how `up` ended; returns the exit code.
fn show_up(up: &Up) -> i32 {
    match up {
        Up::AlreadyRunning { state } => {
            println!("VM {} is already running, and serves.", state.name);
            println!("url: {}", vm::url(state));
            println!(
                "ssh: {}   (or: kiln devvm ssh {})",
                vm::ssh_line(state.ssh_port),
                state.name
            );
            0
        }
        Up::Ready { state, took } => {
            progress(Event::Step(format!(
                "VM {} is up in {:.0} s",
                state.name,
                took.as_secs_f64()
            )));
            println!("url: {}", vm::url(state));
            println!(
                "ssh: {}   (or: kiln devvm ssh {})",
                vm::ssh_line(state.ssh_port),
                state.name
            );
            if !state.app_dir.as_os_str().is_empty() {
                println!(
                    "app: {} is {} in the VM",
                    state.app_dir.display(),
                    state.app_mount
                );
            }
            0
        }
        Up::ConvergeFailed {
            name,
            unit,
            journal,
        } => {
            eprintln!(
                "error: the boot converge ({}) did not succeed ({unit}):\n{journal}",
                guest::CONVERGE_UNIT
            );
            eprintln!("VM {name} is left running for a look: kiln devvm ssh {name}");
            1
        }
    }
}

/// What `destroy` did with the app directory, so that the engineer's
/// work never goes without a word.
fn show_app(name: &str, app: &App) {
    match app {
        App::None => {}
        App::Kept(d) => println!(
            "Its app directory {} is kept: the next `kiln devvm up {name}` shares it again \
             (`kiln devvm destroy {name} --purge` removes it).",
            d.display()
        ),
        App::Purged(d) => println!("Its app directory {} is removed (--purge).", d.display()),
        App::Theirs(d) => println!("Its app directory {} is yours and stays.", d.display()),
    }
}

fn show_down(name: &str, d: Down) {
    match d {
        Down::Absent => println!("No VM named {name}: nothing to stop."),
        Down::NotRunning => println!("VM {name} is not running."),
        Down::Stopped { took } => {
            println!("VM {name} is stopped ({:.0} s).", took.as_secs_f64())
        }
    }
}

fn show_status(st: &Status) {
    println!("name:     {}", st.name);
    println!("state:    {}", st.phase);
    let Some(s) = &st.state else {
        return;
    };
    println!(
        "role:     {} (size {}, {} CPUs, {} MB)",
        s.role, s.size, s.cpus, s.memory_mb
    );
    println!("release:  {}", s.release);
    println!("hostname: {}", s.hostname);
    println!("accel:    {}", s.accel);
    println!("image:    {}", s.image_dir.display());
    if st.running {
        println!(
            "uptime:   {}",
            human_duration(now().saturating_sub(s.started))
        );
        println!(
            "ssh:      127.0.0.1:{}  ({})",
            s.ssh_port,
            vm::ssh_line(s.ssh_port)
        );
        println!("http:     {}", vm::url(s));
    }
    if !s.app_dir.as_os_str().is_empty() {
        println!("app:      {} -> {}", s.app_dir.display(), s.app_mount);
        if s.app_dir == crate::devvm::paths::app_dir(&s.name) {
            println!("          (this VM's own: destroy keeps it, destroy --purge removes it)");
        }
    }
    if !st.running {
        println!("started:  {}", human_age(now().saturating_sub(s.started)));
    }
    println!("serial:   {}", st.serial_log.display());
    if !st.substitutions.is_empty() {
        println!(
            "pins:     substituted (a declared difference from production: no source offers the pin): {}",
            st.substitutions.join(", ")
        );
    }
    if let Some(f) = &st.fingerprint {
        println!("fingerprint: {}", fingerprint_line(&s.name, f));
    }
}

fn short(fp: &str) -> &str {
    &fp[..12.min(fp.len())]
}

/// The VM's fingerprint against the image's and its first boot's.
fn fingerprint_line(name: &str, f: &Fingerprints) -> String {
    let Some(now) = &f.now else {
        return "unknown (kiln fingerprint did not run in the VM)".into();
    };
    let vs_image = match &f.image {
        Some(i) if i == now => "matches the image".to_string(),
        Some(i) => format!(
            "differs from the image's {} (the boot converge ran what needs running services)",
            short(i)
        ),
        None => "the image has none".to_string(),
    };
    let vs_boot = match &f.first_boot {
        Some(b) if b == now => "unchanged since first boot".to_string(),
        Some(b) => format!(
            "DRIFTED since first boot ({}): kiln devvm ssh {} -- kiln --repo {} fingerprint --explain{}",
            short(b),
            name,
            guest::POLICY_DIR,
            if f.moved.is_empty() {
                String::new()
            } else {
                format!("; what moved: {}", f.moved.join(", "))
            }
        ),
        None => "no first-boot fingerprint".to_string(),
    };
    let share = match &f.share {
        Some(m) => format!(" (the app share {m} is yours: its edits are not drift)"),
        None => String::new(),
    };
    format!("{}; {vs_image}; {vs_boot}{share}", short(now))
}

/// Every VM, one line each, then the cached images.
fn show_list(l: &Listing) {
    if l.vms.is_empty() {
        println!("No VMs. Create one with: kiln devvm up");
    } else {
        println!(
            "{:<16} {:<8} {:<10} {:<7} {:<9} {:<5} {:>6} {:>6}  UPTIME",
            "NAME", "STATE", "ROLE", "SIZE", "RELEASE", "ACCEL", "SSH", "HTTP"
        );
        for vm in &l.vms {
            let running = vm.running;
            match &vm.state {
                Some(s) => println!(
                    "{:<16} {:<8} {:<10} {:<7} {:<9} {:<5} {:>6} {:>6}  {}",
                    s.name,
                    vm.phase.word(),
                    s.role,
                    s.size,
                    s.release,
                    s.accel,
                    s.ssh_port,
                    s.http_port,
                    if running {
                        human_duration(now().saturating_sub(s.started))
                    } else {
                        "-".into()
                    }
                ),
                None => println!("{:<16} {:<8} (no state yet)", vm.name, vm.phase.word()),
            }
        }
        // What went wrong, below the table, where it has room.
        for vm in &l.vms {
            if let vm::Phase::Failed(why) = &vm.phase {
                println!("{} failed: {why}", vm.name);
            }
        }
    }
    if let Some(v) = &l.kvm {
        println!();
        println!(
            "KVM: {} ({})",
            if v.kvm {
                "works here"
            } else {
                "not usable here, VMs use TCG"
            },
            v.reason
        );
    }
    if !l.images.is_empty() {
        println!();
        println!(
            "{:<14} {:<10} {:<7} {:<9} {:>5}  BUILT",
            "IMAGE", "ROLE", "SIZE", "RELEASE", "DISK"
        );
        for i in &l.images {
            println!(
                "{:<14} {:<10} {:<7} {:<9} {:>4}G  {}",
                &i.manifest.key[..12],
                i.manifest.role,
                i.manifest.size,
                i.manifest.release,
                i.manifest.disk_gb,
                human_age(now().saturating_sub(i.manifest.created))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_read_against_the_image_and_the_first_boot() {
        let fp = |c: char| Some(c.to_string().repeat(64));
        let line = |now, image, first_boot| {
            fingerprint_line(
                "dev",
                &Fingerprints {
                    now,
                    image,
                    first_boot,
                    moved: Vec::new(),
                    share: None,
                },
            )
        };
        assert_eq!(
            line(fp('a'), fp('a'), fp('a')),
            "aaaaaaaaaaaa; matches the image; unchanged since first boot"
        );
        let drifted = line(fp('a'), fp('b'), fp('c'));
        assert!(
            drifted.contains("differs from the image's bbbbbbbbbbbb"),
            "{drifted}"
        );
        assert!(
            drifted.contains("DRIFTED since first boot (cccccccccccc): kiln devvm ssh dev --"),
            "{drifted}"
        );
        assert!(line(None, fp('a'), None).starts_with("unknown"));
        let named = fingerprint_line(
            "dev",
            &Fingerprints {
                now: fp('a'),
                image: fp('a'),
                first_boot: fp('c'),
                moved: vec!["file[/etc/motd]".into(), "package[curl]".into()],
                share: Some("/var/www/shop".into()),
            },
        );
        assert!(
            named.ends_with(
                "; what moved: file[/etc/motd], package[curl] \
                 (the app share /var/www/shop is yours: its edits are not drift)"
            ),
            "{named}"
        );
    }
}
