//! `kiln devvm`: developer VMs built from a role and booted with QEMU.

use std::path::PathBuf;
use std::time::Duration;

use crate::devvm::image::{self, BuildRequest};
use crate::devvm::{step, vagrant, vm};
use crate::error::Error;

/// The default VM name and role.
pub const DEFAULT_NAME: &str = "devvm";

/// One `kiln devvm` subcommand, with what it works on.
pub enum Devvm {
    Build(BuildRequest),
    Up(vm::UpRequest),
    Ssh { name: String, command: Vec<String> },
    Status { name: String },
    Down { name: String, timeout: Duration },
    Destroy { name: String, timeout: Duration },
    List,
    Box(BuildRequest),
}

/// `vms_dir`: where VMs keep their state, instead of kiln's cache.
pub fn run(vms_dir: Option<PathBuf>, cmd: Devvm) -> Result<i32, Error> {
    if let Some(dir) = vms_dir {
        crate::devvm::paths::set_vms_dir(dir);
    }
    match cmd {
        Devvm::Build(req) => {
            let started = std::time::Instant::now();
            let img = image::build(&req)?;
            if img.cached {
                step(format!(
                    "cache hit in {:.2} s: nothing changed since this image was built",
                    started.elapsed().as_secs_f64()
                ));
            }
            println!("{}", img.dir.display());
            Ok(0)
        }
        Devvm::Up(req) => vm::up(&req),
        Devvm::Ssh { name, command } => vm::ssh(&name, &command),
        Devvm::Status { name } => vm::status(&name),
        Devvm::Down { name, timeout } => vm::down(&name, timeout),
        Devvm::Destroy { name, timeout } => vm::destroy(&name, timeout),
        Devvm::List => vm::list(),
        Devvm::Box(req) => {
            let img = image::build(&req)?;
            let out = vagrant::make_box(&img, &req.repo)?;
            println!("{}", out.display());
            Ok(0)
        }
    }
}
