//! `kiln whitelist mirror`: a plain apt repository of pinned versions, their
//! siblings and what they pull in beyond a base Debian root, so that a team
//! can publish the versions it pins on any HTTP server and keep installing
//! them after the archive has moved on. The index is written by Debian's own
//! apt-ftparchive.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::apt;
use super::rootfs::{self, Overlay, TEST_ROOT};
use super::siblings;
use super::target::{Target, output_tail};
use crate::error::RunError;
use crate::platform::facts::DEBIAN_RELEASES;

/// Fills `out` with the .deb files for each set of `pins` (the base pins,
/// then each rollout's) and writes `Packages`, `Packages.gz` and `Release`
/// there (a flat repository: suite `./`), reading the archive of Debian
/// release `release`. Returns the packages' file names.
pub fn write(
    out: &Path,
    release: &str,
    pin_sets: &[Vec<(String, String)>],
    progress: &dyn Fn(&str),
) -> Result<Vec<String>, RunError> {
    if super::which("apt-ftparchive").is_none() {
        return Err(RunError::precondition("apt-ftparchive is not installed")
            .fix("install it with: apt-get install -y apt-utils"));
    }
    // A host whose release kiln builds no root of gets the default one.
    let recipe = if DEBIAN_RELEASES.iter().any(|(c, _)| *c == release) {
        TEST_ROOT.on(release)?
    } else {
        TEST_ROOT
    };
    let base = rootfs::base_root(&recipe, progress)?;
    let overlay = Overlay::new(
        &base,
        &super::private::scratch_dir("kiln-mirror")?,
        "mirror",
    )?;
    let target = Target::at_root(overlay.root());
    progress("reading the archive's index");
    apt::update(&target)?;
    for pins in pin_sets {
        let all = siblings::with_pins(&target, pins)?;
        progress(&format!(
            "downloading {} pinned package(s) and what they need",
            all.len()
        ));
        apt::download(&target, &all)?;
    }
    fs::create_dir_all(out).map_err(|e| RunError::io("create", out.display(), e))?;
    let mut names = Vec::new();
    let archives = overlay.root().join("var/cache/apt/archives");
    let unreadable = |e| RunError::io("read", archives.display(), e);
    for entry in fs::read_dir(&archives).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_file()) && name.ends_with(".deb") {
            fs::copy(entry.path(), out.join(&name)).map_err(|e| {
                RunError::io("copy", format_args!("{name} to {}", out.display()), e)
            })?;
            names.push(name);
        }
    }
    names.sort();
    index(out)?;
    Ok(names)
}

/// `Packages`, `Packages.gz` and `Release` for the .deb files in `dir`.
fn index(dir: &Path) -> Result<(), RunError> {
    let run = |args: &[&str]| {
        let out = Command::new("apt-ftparchive")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| RunError::io("run", "apt-ftparchive", e))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RunError::precondition(format!(
                "apt-ftparchive {} failed: {}",
                args.join(" "),
                output_tail(&out)
            )))
        }
    };
    let packages = run(&["packages", "."])?;
    let write = |name: &str, bytes: &[u8]| {
        fs::write(dir.join(name), bytes).map_err(|e| RunError::io("write", name, e))
    };
    write("Packages", &packages)?;
    let gz = Command::new("gzip")
        .args(["-9nkf", "Packages"])
        .current_dir(dir)
        .status()
        .map_err(|e| RunError::io("run", "gzip", e))?;
    if !gz.success() {
        return Err(RunError::precondition("gzip Packages failed"));
    }
    let release = run(&["release", "."])?;
    write("Release", &release)
}
