//! Building a dev VM image: an overlay of the base root, the guest
//! configured, the role converged into it with kiln's own engine (`--root`,
//! in parts kept as checkpoints: see [`super::tree`]), kiln and the
//! policy installed, then an ext4 filesystem made from the tree without
//! mounting it and converted to qcow2, with the kernel and initrd beside it
//! for direct kernel boot.
//!
//! Images are cached under `images/<sha256>/`, the sha256 being over every
//! input (see [`Inputs`]); a build is written to a temporary directory that
//! is renamed into place when complete, so a killed build leaves no half image.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

pub use super::guest::Flavor;
use super::guest::{self, GuestConfig};
use super::{DevvmError, base, disk, paths, run, sshkey, tools, tree, user_name};
use crate::engine::{self, Node};
use crate::error::{Error, IoContext, PolicyError};
use crate::platform::pins::Substitution;
use crate::platform::target::Target;
use crate::policy::Repository;

/// Bump when what goes into an image changes without any hashed input changing.
const LAYOUT_VERSION: &str = "kiln-devvm-image/3";

pub const DISK: &str = "disk.qcow2";
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const APP_SEED: &str = "app-seed";
pub const MANIFEST: &str = "manifest.json";
/// The hashed inputs, as text: what to diff when a build misses the cache.
pub const INPUTS: &str = "inputs.txt";

/// What `build` is asked for.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub repo: PathBuf,
    pub role: String,
    /// The Debian release (codename) of the image.
    pub release: String,
    pub size: String,
    /// Rebuild even when the cache has the image.
    pub force: bool,
    /// Refuse vanished pins instead of substituting them.
    pub strict_pins: bool,
    /// Converge from the base root, neither using nor keeping checkpoints.
    pub no_cache: bool,
    /// Whom the image is for: `kiln devvm up`, or a Vagrant box.
    pub flavor: Flavor,
}

/// The role dev VMs converge unless told otherwise.
pub const DEFAULT_ROLE: &str = "devvm";
/// The size of the role unless told otherwise.
pub const DEFAULT_SIZE: &str = "small";

/// The image a command names. What it leaves out is what the VM it works
/// on was made with (a VM's state is the truth about that VM), else the
/// defaults: so a plain `kiln devvm up NAME`, the hint every message
/// gives, never turns a bookworm VM into a trixie one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub repo: PathBuf,
    pub role: Option<String>,
    pub size: Option<String>,
    pub release: Option<String>,
    pub strict_pins: bool,
    pub no_cache: bool,
}

/// One way a command asks for another image than a VM was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The option: `--role`, `--size` or `--release`.
    pub flag: &'static str,
    pub made: String,
    pub asked: String,
}

impl ImageSpec {
    /// The build request: each choice the command gave, else the VM's
    /// (`made`), else the default.
    pub fn request(&self, made: Option<&super::state::State>, force: bool) -> BuildRequest {
        let pick = |given: &Option<String>, made: Option<&str>, default: &str| {
            given
                .clone()
                .or_else(|| made.filter(|m| !m.is_empty()).map(str::to_string))
                .unwrap_or_else(|| default.to_string())
        };
        BuildRequest {
            repo: self.repo.clone(),
            role: pick(&self.role, made.map(|s| s.role.as_str()), DEFAULT_ROLE),
            size: pick(&self.size, made.map(|s| s.size.as_str()), DEFAULT_SIZE),
            release: pick(
                &self.release,
                made.map(|s| s.release.as_str()),
                base::DEFAULT_RELEASE,
            ),
            force,
            strict_pins: self.strict_pins,
            no_cache: self.no_cache,
            flavor: Flavor::Kiln,
        }
    }

    /// What this asks for that differs from what the VM was made with.
    pub fn differences(&self, made: &super::state::State) -> Vec<Difference> {
        [
            ("--role", &self.role, &made.role),
            ("--size", &self.size, &made.size),
            ("--release", &self.release, &made.release),
        ]
        .into_iter()
        .filter_map(|(flag, asked, made)| match asked {
            Some(a) if !made.is_empty() && a != made => Some(Difference {
                flag,
                made: made.clone(),
                asked: a.clone(),
            }),
            _ => None,
        })
        .collect()
    }
}

/// What an image is and how to boot it; `manifest.json` in its directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub role: String,
    /// The Debian release (codename); images from before releases were bookworm.
    #[serde(default = "bookworm")]
    pub release: String,
    pub size: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    pub hostname: String,
    /// Where the app share is mounted inside (the app's docroot).
    pub app_mount: String,
    pub kiln_version: String,
    pub base_key: String,
    pub created: u64,
    pub build_seconds: f64,
    /// `kiln fingerprint` of the tree, when this kiln has that command.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Whom the image is for; images from before flavors were kiln's.
    #[serde(default)]
    pub flavor: Flavor,
    /// Pins no source offered at build time and what the image has instead:
    /// a declared difference from production.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitutions: Vec<Substitution>,
}

fn bookworm() -> String {
    "bookworm".into()
}

/// A built image in the cache.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Whether it came from the cache.
    pub cached: bool,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(INITRD)
    }
    /// What the cookbooks deployed where the app share is mounted: the
    /// starting content of a new VM's share.
    pub fn app_seed(&self) -> PathBuf {
        self.dir.join(APP_SEED)
    }

    /// The image with this key, if the cache holds a complete one.
    pub fn open(key: &str) -> Option<Image> {
        let dir = paths::images_dir().join(key);
        let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        Some(Image {
            dir,
            manifest,
            cached: true,
        })
    }
}

/// Every input of an image, resolved; its sha256 is the cache key.
#[derive(Debug)]
pub struct Inputs {
    pub role: String,
    pub release: String,
    pub size: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    pub hostname: String,
    pub app_mount: String,
    pub kiln_binary: String,
    pub authorized_key: String,
    pub flavor: Flavor,
    pub text: String,
}

impl Inputs {
    /// Resolves the role's size and attributes (compiling the policy, so
    /// that a policy error surfaces before anything is built) and hashes
    /// every input.
    pub fn resolve(req: &BuildRequest) -> Result<Inputs, Error> {
        let repo = Repository::open(&req.repo)?;
        let role = repo.role(&req.role)?;
        let hostname = format!("devvm-{}", user_name());
        // Compiled as on the image's release, which must be a pinned one.
        crate::policy::whitelist::Whitelist::load(&repo)?.release(&req.release)?;
        let node = Node::role(&req.role)
            .named(&hostname)
            .sized(Some(req.size.clone()))
            .on(&req.release);
        let facts = node.facts(&Target::host());
        let policy = engine::compile(&repo, &node, &facts, &crate::secrets::Placeholder)?;
        let size = policy
            .expanded
            .roles
            .iter()
            .find_map(|r| r.sizes.get(&req.size))
            .cloned()
            .ok_or_else(|| {
                PolicyError::new(format!("role {:?} has no size {:?}", role.name, req.size))
                    .in_file(&role.file)
                    .fix("add [sizes.NAME] with cpus, memory_mb and disk_gb")
            })?;
        let app_mount = app_mount(&policy.attributes);
        let kiln_binary = policy
            .attributes
            .get("kiln")
            .and_then(|k| k.get("binary"))
            .and_then(|b| b.as_str())
            .filter(|b| b.starts_with('/'))
            .unwrap_or(guest::KILN_BIN)
            .to_string();
        let authorized_key = sshkey::ensure()?;

        let mut text = format!(
            "layout={LAYOUT_VERSION}\nflavor={}\nbase={}\nrole={}\nsize={}\ncpus={}\nmemory_mb={}\ndisk_gb={}\nhostname={hostname}\napp_mount={app_mount}\nkiln_binary={kiln_binary}\nkey={authorized_key}\n",
            req.flavor.name(),
            base::recipe(&req.release)?,
            req.role,
            req.size,
            size.cpus,
            size.memory_mb,
            size.disk_gb,
        );
        let exe = super::self_exe();
        text.push_str(&format!(
            "kiln={} {}\n",
            env!("CARGO_PKG_VERSION"),
            crate::digest::sha256_file(&exe).ctx(|| format!("hashing {}", exe.display()))?
        ));
        for f in repo.files()? {
            let sum = crate::digest::sha256_file(&f.path)
                .ctx(|| format!("hashing {}", f.path.display()))?;
            text.push_str(&format!("file {} {sum}\n", f.rel));
        }
        Ok(Inputs {
            role: req.role.clone(),
            release: req.release.clone(),
            size: req.size.clone(),
            cpus: size.cpus,
            memory_mb: size.memory_mb,
            disk_gb: size.disk_gb,
            hostname,
            app_mount,
            kiln_binary,
            authorized_key,
            flavor: req.flavor,
            text,
        })
    }

    pub fn key(&self) -> String {
        crate::digest::sha256_hex(self.text.as_bytes())
    }
}

/// Where the app share goes: `devvm.app_mount`, else the app cookbook's
/// docroot, else Apache's, else `/srv/app`.
pub fn app_mount(attrs: &toml::Table) -> String {
    let get = |a: &str, b: &str| {
        attrs
            .get(a)
            .and_then(|v| v.get(b))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    get("devvm", "app_mount")
        .or_else(|| get("app", "docroot"))
        .or_else(|| get("apache2", "docroot"))
        .unwrap_or_else(|| "/srv/app".to_string())
}

/// The image for `req`: from the cache when every input is unchanged, else
/// built, reporting its steps and its converge to `on`.
pub fn build(req: &BuildRequest, on: &dyn Fn(super::Event)) -> Result<Image, Error> {
    build_with(req, on, &|_| {})
}

/// [`build`], calling `base_ready` with the base root's kernel once the
/// base root is there and the rest of the build (a minute or more) begins:
/// what needs only a guest kernel can run beside it.
pub fn build_with(
    req: &BuildRequest,
    on: &dyn Fn(super::Event),
    base_ready: &dyn Fn(&Path),
) -> Result<Image, Error> {
    let step = |msg: String| on(super::Event::Step(msg));
    let inputs = Inputs::resolve(req)?;
    let key = inputs.key();
    if !req.force
        && let Some(img) = Image::open(&key)
    {
        return cached(img, req, on);
    }
    tools::require(&[tools::MMDEBSTRAP, tools::QEMU_IMG])?;
    disk::require_tools()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DevvmError::NeedsRoot.into());
    }
    let images = paths::images_dir();
    fs::create_dir_all(&images).ctx(|| format!("creating {}", images.display()))?;
    // One build of a key at a time; a second builder waits and takes the result.
    let lock_path = images.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).ctx(|| format!("opening {}", lock_path.display()))?;
    lock.lock_exclusive()
        .ctx(|| format!("locking {}", lock_path.display()))?;
    if !req.force
        && let Some(img) = Image::open(&key)
    {
        return cached(img, req, on);
    }
    let started = Instant::now();
    clean_leftovers(&images, &key);
    let base = base::root(&inputs.release, on)?;
    base_ready(&newest_kernel(&base)?.0);
    let work = tempfile::Builder::new()
        .prefix(&format!(".build-{key}-"))
        .tempdir_in(&images)
        .ctx(|| format!("creating a build directory in {}", images.display()))?;
    let out = work.path().join("image");
    fs::create_dir(&out).ctx(|| format!("creating {}", out.display()))?;

    let cfg = GuestConfig {
        hostname: &inputs.hostname,
        role: &inputs.role,
        size: &inputs.size,
        authorized_key: &inputs.authorized_key,
        app_mount: &inputs.app_mount,
        kiln_binary: &inputs.kiln_binary,
    };
    let request = tree::Request {
        repo: &req.repo,
        release: &inputs.release,
        no_cache: req.no_cache,
        strict_pins: req.strict_pins,
    };
    let converged = tree::converge(&request, &cfg, &base, work.path(), on)?;
    let report = converged.report;
    // The rest of the build changes a last overlay, thrown away with it.
    let overlay = converged.overlay;
    let tree = overlay.root().to_path_buf();
    // The share hides the image's docroot at boot; a new share starts as
    // what the cookbooks put there.
    let docroot = tree.join(inputs.app_mount.trim_start_matches('/'));
    if docroot.is_dir() {
        run(
            Command::new("cp")
                .arg("-a")
                .arg(&docroot)
                .arg(out.join(APP_SEED)),
            "keeping the deployed app for the share",
        )?;
    }
    step("installing kiln, the policy and the boot converge unit".into());
    guest::install_kiln(&tree, &req.repo, &cfg)?;
    if inputs.flavor == Flavor::Vagrant {
        step("making it a Vagrant box's: the vagrant user, sudo, no share in fstab".into());
        guest::for_vagrant(&tree, &cfg)?;
    }
    let fingerprint = fingerprint(&tree, &req.repo, &inputs.app_mount);
    extract_boot_files(&tree, &out)?;
    // A pin fetched once is not lost on this machine: keep the packages
    // in kiln's cache (see platform::pincache), then out of the image.
    crate::platform::pincache::keep(&tree.join("var/cache/apt/archives"));
    // Package caches do not belong in an image.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_dir(&tree.join(dir));
    }

    step(format!(
        "making a {} GB disk from the tree: ext4 (mke2fs -d) in one partition, GRUB before it",
        inputs.disk_gb
    ));
    let raw = work.path().join("disk.raw");
    disk::make(&tree, &raw, inputs.disk_gb << 30, work.path())?;
    drop(overlay);
    step("converting to qcow2".into());
    run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(out.join(DISK)),
        "qemu-img convert",
    )?;
    let _ = fs::remove_file(&raw);

    let manifest = Manifest {
        key: key.clone(),
        role: inputs.role.clone(),
        release: inputs.release.clone(),
        size: inputs.size.clone(),
        cpus: inputs.cpus,
        memory_mb: inputs.memory_mb,
        disk_gb: inputs.disk_gb,
        hostname: inputs.hostname.clone(),
        app_mount: inputs.app_mount.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        base_key: base::key(&inputs.release)?,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        build_seconds: started.elapsed().as_secs_f64(),
        fingerprint,
        flavor: inputs.flavor,
        substitutions: report.substitutions.clone(),
    };
    fs::write(out.join(INPUTS), &inputs.text).ctx(|| "writing inputs.txt".to_string())?;
    let mut f = File::create(out.join(MANIFEST)).ctx(|| "writing manifest.json".to_string())?;
    serde_json::to_writer_pretty(&mut f, &manifest)
        .map_err(std::io::Error::other)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .ctx(|| "writing manifest.json".to_string())?;
    let dest = images.join(&key);
    if dest.exists() {
        fs::remove_dir_all(&dest).ctx(|| format!("removing the old {}", dest.display()))?;
    }
    fs::rename(&out, &dest).ctx(|| format!("renaming the image into {}", dest.display()))?;
    drop(work);
    prune(KEEP_IMAGES, on);
    step(format!(
        "image {} built in {:.0} s",
        &key[..12],
        started.elapsed().as_secs_f64()
    ));
    Ok(Image {
        dir: dest,
        manifest,
        cached: false,
    })
}

/// A cached image, unless `--strict-pins` refuses the substitutions it was built with.
fn cached(img: Image, req: &BuildRequest, on: &dyn Fn(super::Event)) -> Result<Image, Error> {
    let subs = &img.manifest.substitutions;
    if req.strict_pins && !subs.is_empty() {
        return Err(DevvmError::StrictPinsRefuseCachedImage {
            key: img.manifest.key[..12.min(img.manifest.key.len())].to_string(),
            substitutions: subs.iter().map(ToString::to_string).collect(),
        }
        .into());
    }
    if !subs.is_empty() {
        on(super::Event::Warning(crate::platform::pins::warning(
            subs,
            &img.manifest.release,
        )));
    }
    Ok(img)
}

/// Build directories of killed builds: `.build-<key>-*` whose key's lock
/// nobody holds (ours is held by this very build, so ours are leftovers).
fn clean_leftovers(images: &Path, ours: &str) {
    for e in fs::read_dir(images).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".build-") else {
            continue;
        };
        let Some((key, _)) = rest.split_once('-') else {
            continue;
        };
        if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        // No lock file: no build ever held it.
        let abandoned = key == ours
            || File::open(images.join(format!("{key}.lock")))
                .map_or(true, |f| f.try_lock_exclusive().is_ok());
        if abandoned {
            // A `--no-cache` build's overlay may still be mounted there.
            crate::platform::rootfs::remove_tree(&e.path());
        }
    }
}

/// How many images the cache keeps (besides those a VM uses).
const KEEP_IMAGES: usize = 3;

/// Removes all but the `keep` newest images, sparing any a VM's disk is on.
pub fn prune(keep: usize, on: &dyn Fn(super::Event)) {
    let used: Vec<String> = super::state::all()
        .iter()
        .filter_map(|vm| vm.load())
        .map(|s| s.image_key)
        .collect();
    let open = open_files();
    for img in list().into_iter().skip(keep) {
        if !used.contains(&img.manifest.key) && !open.iter().any(|f| f.starts_with(&img.dir)) {
            on(super::Event::Step(format!(
                "removing old image {} (the cache keeps {keep})",
                &img.manifest.key[..12]
            )));
            let _ = fs::remove_dir_all(&img.dir);
            let _ = fs::remove_file(img.dir.with_extension("lock"));
        }
    }
}

/// Every file a running process holds open: the QEMU of a VM whose state
/// lives elsewhere (another `KILN_DEVVM_VMS`) reads its image's disk, and
/// removing that image would break the VM's next boot.
fn open_files() -> Vec<PathBuf> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .flat_map(|p| {
            fs::read_dir(p.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .collect()
}

fn clear_dir(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Copies the newest kernel and its initrd out of the tree's /boot.
fn extract_boot_files(tree: &Path, out: &Path) -> Result<(), Error> {
    let (kernel, initrd) = newest_kernel(tree)?;
    fs::copy(kernel, out.join(KERNEL)).ctx(|| "copying the kernel".to_string())?;
    fs::copy(&initrd, out.join(INITRD)).ctx(|| "copying the initrd".to_string())?;
    Ok(())
}

/// The newest kernel in the tree's /boot and its initrd (files, not the
/// tree's links, so that nothing resolves outside the tree).
fn newest_kernel(tree: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let boot = tree.join("boot");
    let mut kernels: Vec<String> = fs::read_dir(&boot)
        .ctx(|| format!("reading {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    kernels.sort_by(|a, b| {
        a.parse::<debversion::Version>()
            .ok()
            .zip(b.parse::<debversion::Version>().ok())
            .map_or_else(|| a.cmp(b), |(x, y)| x.cmp(&y))
    });
    let Some(version) = kernels.pop() else {
        return Err(DevvmError::NoKernel { boot }.into());
    };
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(DevvmError::NoInitrd { initrd }.into());
    }
    Ok((boot.join(format!("vmlinuz-{version}")), initrd))
}

/// The tree's `kiln fingerprint` (of its last run: the build's converge),
/// with the app share recorded as the mount as a VM's is, if this kiln
/// has the command.
fn fingerprint(tree: &Path, repo: &Path, app_mount: &str) -> Option<String> {
    let exe = super::self_exe();
    let out = Command::new(exe)
        .arg("--repo")
        .arg(repo)
        .args(["fingerprint", "--json", "--root"])
        .arg(tree)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let fp = crate::fingerprint::Fingerprint::parse(&String::from_utf8_lossy(&out.stdout)).ok()?;
    Some(super::drift::share_as_mount(&fp, app_mount).fingerprint)
}

/// Every cached image, newest first.
pub fn list() -> Vec<Image> {
    let mut out: Vec<Image> = fs::read_dir(paths::images_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Image::open(&e.file_name().to_string_lossy()))
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.manifest.created));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_open_in_a_process_is_seen_as_in_use() {
        let held = tempfile::tempdir().expect("tempdir");
        let idle = tempfile::tempdir().expect("tempdir");
        fs::write(held.path().join("disk.qcow2"), b"x").expect("write");
        fs::write(idle.path().join("disk.qcow2"), b"x").expect("write");
        let _open = File::open(held.path().join("disk.qcow2")).expect("open");
        let open = open_files();
        assert!(open.iter().any(|f| f.starts_with(held.path())));
        assert!(!open.iter().any(|f| f.starts_with(idle.path())));
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    #[test]
    fn the_key_covers_policy_files_and_size() {
        let repo = tempfile::tempdir().expect("tempdir");
        let r = repo.path();
        write(
            r,
            "roles/vm.toml",
            "run_list = [\"recipe[web]\"]\n\
             [sizes.small]\ncpus = 1\nmemory_mb = 512\ndisk_gb = 2\n\
             [sizes.large]\ncpus = 2\nmemory_mb = 1024\ndisk_gb = 4\n",
        );
        write(
            r,
            "cookbooks/web/metadata.toml",
            "name = \"web\"\nversion = \"0.1.0\"\n",
        );
        write(
            r,
            "cookbooks/web/attributes.toml",
            "[app]\ndocroot = \"/srv/www\"\n",
        );
        write(
            r,
            "cookbooks/web/recipes/default.toml",
            "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hi\"\n",
        );
        write(r, "whitelist.toml", "[packages]\n");
        let req = |size: &str| BuildRequest {
            repo: r.to_path_buf(),
            role: "vm".into(),
            release: "trixie".into(),
            size: size.into(),
            force: false,
            strict_pins: false,
            no_cache: false,
            flavor: Flavor::Kiln,
        };
        let a = Inputs::resolve(&req("small")).expect("inputs");
        assert_eq!(a.app_mount, "/srv/www");
        assert_eq!((a.cpus, a.memory_mb, a.disk_gb), (1, 512, 2));
        let again = Inputs::resolve(&req("small")).expect("inputs");
        assert_eq!(a.key(), again.key(), "unchanged inputs, same key");
        let large = Inputs::resolve(&req("large")).expect("inputs");
        assert_ne!(a.key(), large.key());
        write(
            r,
            "cookbooks/web/recipes/default.toml",
            "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hello\"\n",
        );
        let edited = Inputs::resolve(&req("small")).expect("inputs");
        assert_ne!(a.key(), edited.key(), "a cookbook edit is a new image");
        let err = Inputs::resolve(&req("huge")).expect_err("no such size");
        assert!(err.to_string().contains("huge"), "{err}");
    }

    #[test]
    fn editor_droppings_change_neither_the_image_key_nor_the_bundle() {
        let repo = tempfile::tempdir().expect("tempdir");
        let r = repo.path();
        write(
            r,
            "roles/vm.toml",
            "run_list = [\"recipe[web]\"]\n[sizes.small]\ncpus = 1\nmemory_mb = 512\ndisk_gb = 2\n",
        );
        write(
            r,
            "cookbooks/web/metadata.toml",
            "name = \"web\"\nversion = \"0.1.0\"\n",
        );
        write(
            r,
            "cookbooks/web/recipes/default.toml",
            "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hi\"\n",
        );
        write(r, "whitelist.toml", "[packages]\n");
        let req = BuildRequest {
            repo: r.to_path_buf(),
            role: "vm".into(),
            release: "trixie".into(),
            size: "small".into(),
            force: false,
            strict_pins: false,
            no_cache: false,
            flavor: Flavor::Kiln,
        };
        let key = || Inputs::resolve(&req).expect("inputs").key();
        let bundle = || {
            crate::fleet::bundle::Bundle::build(r, &[], None)
                .expect("bundle")
                .meta
                .content
        };
        let (key_before, bundle_before) = (key(), bundle());
        write(r, "cookbooks/web/recipes/.foo.toml.swp", "swap");
        write(r, "cookbooks/web/recipes/default.toml~", "backup");
        write(r, "cookbooks/web/.foo.toml.swp", "swap");
        assert_eq!(key(), key_before, "an editor's files are not a new image");
        assert_eq!(bundle(), bundle_before, "nor a new bundle");
        write(r, "cookbooks/web/recipes/extra.toml", "\n");
        assert_ne!(key(), key_before, "a real file is");
        assert_ne!(bundle(), bundle_before);
    }

    /// A VM's state is the truth about that VM: what a command leaves out
    /// is the VM's, and what it gives otherwise is a difference.
    #[test]
    fn a_vms_own_choices_fill_what_the_command_leaves_out() {
        let made = crate::devvm::state::State {
            name: "dev".into(),
            image_key: String::new(),
            image_dir: PathBuf::new(),
            role: "devvm".into(),
            size: "medium".into(),
            release: "bookworm".into(),
            hostname: "dev".into(),
            cpus: 1,
            memory_mb: 512,
            accel: "tcg".into(),
            ssh_port: 2222,
            http_port: 8080,
            app_dir: PathBuf::new(),
            app_mount: "/srv/app".into(),
            started: 0,
            ready: None,
            boot_fingerprint: None,
            boot_parts: Vec::new(),
            failure: None,
        };
        let plain = ImageSpec {
            repo: "/p".into(),
            role: None,
            size: None,
            release: None,
            strict_pins: false,
            no_cache: false,
        };
        let r = plain.request(Some(&made), false);
        assert_eq!((r.role.as_str(), r.size.as_str()), ("devvm", "medium"));
        assert_eq!(r.release, "bookworm");
        assert!(plain.differences(&made).is_empty());
        let r = plain.request(None, true);
        assert_eq!(
            (r.role.as_str(), r.size.as_str()),
            (DEFAULT_ROLE, DEFAULT_SIZE)
        );
        assert_eq!(r.release, base::DEFAULT_RELEASE);
        assert!(r.force);
        let other = ImageSpec {
            release: Some("trixie".into()),
            size: Some("medium".into()),
            ..plain.clone()
        };
        assert_eq!(
            other.differences(&made),
            [Difference {
                flag: "--release",
                made: "bookworm".into(),
                asked: "trixie".into(),
            }]
        );
        assert_eq!(other.request(Some(&made), false).release, "trixie");
        // A state from before the release was recorded differs in nothing.
        let old = crate::devvm::state::State {
            release: String::new(),
            ..made
        };
        assert!(other.differences(&old).is_empty());
    }

    #[test]
    fn app_mount_prefers_devvm_then_app_then_apache() {
        let t: toml::Table =
            toml::from_str("[apache2]\ndocroot = \"/var/www/html\"\n").expect("toml");
        assert_eq!(app_mount(&t), "/var/www/html");
        let t: toml::Table = toml::from_str(
            "[apache2]\ndocroot = \"/var/www/html\"\n[app]\ndocroot = \"/srv/shop\"\n",
        )
        .expect("toml");
        assert_eq!(app_mount(&t), "/srv/shop");
        assert_eq!(app_mount(&toml::Table::new()), "/srv/app");
    }
}
