//! `kiln devvm`: developer VMs built from a role and booted with QEMU.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::devvm::accel::Choice;
use crate::devvm::image::{self, BuildRequest};
use crate::devvm::{step, vagrant, vm};
use crate::error::Error;

/// The default VM name and role.
pub const DEFAULT_NAME: &str = "devvm";

#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// The role the VM converges (it defines the sizes).
    #[arg(long, default_value = "devvm")]
    pub role: String,
    /// A size of the role: small, medium, large.
    #[arg(long, default_value = "small")]
    pub size: String,
    /// The Debian release (codename) the VM runs; it must be one the
    /// whitelist pins.
    #[arg(long, default_value = crate::devvm::base::DEFAULT_RELEASE)]
    pub release: String,
    /// Refuse a pinned version that no source offers any more, as production
    /// does, instead of taking what the sources offer (with a warning).
    #[arg(long)]
    pub strict_pins: bool,
}

#[derive(Subcommand, Debug)]
pub enum DevvmCommand {
    /// Build (or find in the cache) the disk image of a role and size.
    Build {
        #[command(flatten)]
        image: ImageArgs,
        /// Rebuild even when the cache has an image for these inputs.
        #[arg(long)]
        force: bool,
    },
    /// Boot a VM (building its image first if needed) and wait until it serves.
    Up {
        /// The VM's name.
        #[arg(default_value = DEFAULT_NAME)]
        name: String,
        #[command(flatten)]
        image: ImageArgs,
        /// kvm, tcg, or auto (KVM when a probe boot shows it works, else TCG).
        #[arg(long, default_value = "auto")]
        accel: Choice,
        /// Host port for ssh (a taken one picks another; default 2222).
        #[arg(long)]
        ssh_port: Option<u16>,
        /// Host port for http (a taken one picks another; default 8080).
        #[arg(long)]
        http_port: Option<u16>,
        /// The app checkout shared into the VM at the app's docroot (default: the repository's app/).
        #[arg(long, value_name = "DIR")]
        app: Option<PathBuf>,
        /// Seconds the VM gets to answer and finish booting (default 900 under TCG, 300 under KVM).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// When the policy changed since the VM was made, start it over on the new image.
        #[arg(long)]
        recreate: bool,
    },
    /// ssh into a running VM (extra arguments are the remote command).
    Ssh {
        #[arg(default_value = DEFAULT_NAME)]
        name: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// State, ports, accel, uptime and fingerprint of a VM.
    Status {
        #[arg(default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Shut a VM down cleanly (ACPI), killing it after a timeout.
    Down {
        #[arg(default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 90)]
        timeout: u64,
    },
    /// Shut a VM down and remove its disk and state.
    Destroy {
        #[arg(default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, value_name = "SECS", default_value_t = 90)]
        timeout: u64,
    },
    /// The VMs and the cached images.
    List,
    /// Package the image as a vagrant-libvirt box and write vagrant/Vagrantfile.
    Box {
        #[command(flatten)]
        image: ImageArgs,
    },
}

fn request(repo: &Path, image: &ImageArgs, force: bool) -> BuildRequest {
    BuildRequest {
        repo: repo.to_path_buf(),
        role: image.role.clone(),
        release: image.release.clone(),
        size: image.size.clone(),
        force,
        strict_pins: image.strict_pins,
    }
}

pub fn run(repo: &Path, cmd: DevvmCommand) -> Result<i32, Error> {
    match cmd {
        DevvmCommand::Build { image, force } => {
            let started = std::time::Instant::now();
            let img = image::build(&request(repo, &image, force))?;
            if img.cached {
                step(format!(
                    "cache hit in {:.2} s: nothing changed since this image was built",
                    started.elapsed().as_secs_f64()
                ));
            }
            println!("{}", img.dir.display());
            Ok(0)
        }
        DevvmCommand::Up {
            name,
            image,
            accel,
            ssh_port,
            http_port,
            app,
            timeout,
            recreate,
        } => vm::up(&vm::UpRequest {
            name,
            build: request(repo, &image, false),
            accel,
            ssh_port,
            http_port,
            app_dir: app,
            timeout: timeout.map(Duration::from_secs),
            recreate,
        }),
        DevvmCommand::Ssh { name, command } => vm::ssh(&name, &command),
        DevvmCommand::Status { name } => vm::status(&name),
        DevvmCommand::Down { name, timeout } => vm::down(&name, Duration::from_secs(timeout)),
        DevvmCommand::Destroy { name, timeout } => vm::destroy(&name, Duration::from_secs(timeout)),
        DevvmCommand::List => vm::list(),
        DevvmCommand::Box { image } => {
            let img = image::build(&request(repo, &image, false))?;
            let out = vagrant::make_box(&img, repo)?;
            println!("{}", out.display());
            Ok(0)
        }
    }
}
