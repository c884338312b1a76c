//! `kiln devvm box`: an image of the Vagrant flavor packaged as a
//! vagrant-libvirt box (metadata, a Vagrantfile, the disk, which boots by
//! its own boot loader), a catalog that makes each rebuild a new version
//! of one box, and the repository's `vagrant/Vagrantfile` that uses it.

use std::fs;
use std::path::{Path, PathBuf};

use super::image::Image;
use super::{Event, guest, paths};
use crate::error::{Error, IoContext};

/// The box's own Vagrantfile. Nothing in it is of the builder's machine:
/// Vagrant's own user and key, and the driver decided where `vagrant up`
/// runs (KVM only where it works; `/dev/kvm` existing proves nothing).
pub fn box_vagrantfile(img: &Image) -> String {
    let m = &img.manifest;
    format!(
        r#"# Written by `kiln devvm box`: image {key} of role {role}, size {size}, Debian {release}.
# KVM where QEMU can start a CPU under it, else QEMU's emulator (slow, but
# it boots): decided here, on the machine that runs `vagrant up`.
# KILN_DEVVM_DRIVER=kvm or qemu decides instead.
def kiln_devvm_driver
  forced = ENV["KILN_DEVVM_DRIVER"].to_s
  return forced unless forced.empty?
  return "qemu" unless File.exist?("/dev/kvm")
  # Not ours to open: libvirt's QEMU may still use it.
  return "kvm" unless File.readable?("/dev/kvm") && File.writable?("/dev/kvm")
  pid = Process.spawn("qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "64",
                      "-display", "none", "-nodefaults", "-no-user-config", "-S",
                      [:out, :err] => File::NULL)
  deadline = Time.now + 2
  while Time.now < deadline
    return "qemu" if Process.wait(pid, Process::WNOHANG)
    sleep 0.05
  end
  Process.kill("KILL", pid)
  Process.wait(pid)
  "kvm"
rescue SystemCallError
  "kvm"
end
$kiln_devvm_driver ||= kiln_devvm_driver

Vagrant.configure("2") do |config|
  config.vm.synced_folder ".", "/vagrant", disabled: true
  # Under QEMU's emulator a first boot takes minutes.
  config.vm.boot_timeout = 900
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = $kiln_devvm_driver
    libvirt.cpus = {cpus}
    libvirt.memory = {memory}
    libvirt.disk_bus = "virtio"
  end
end
"#,
        key = &m.key[..12],
        role = ruby_escape(&m.role),
        size = ruby_escape(&m.size),
        release = ruby_escape(&m.release),
        cpus = m.cpus,
        memory = m.memory_mb,
    )
}

pub fn metadata(img: &Image) -> String {
    format!(
        "{{\n  \"provider\": \"libvirt\",\n  \"format\": \"qcow2\",\n  \"virtual_size\": {}\n}}\n",
        img.manifest.disk_gb
    )
}

/// The one template of the repository's `vagrant/Vagrantfile`: the box of
/// the size in `KILN_DEVVM_SIZE` (default small), the app shared, converged
/// by kiln. Placeholders are `@NAME@`, so that Ruby's `#{...}` stays as is.
const REPO_TEMPLATE: &str = include_str!("Vagrantfile.in");

/// `vagrant/Vagrantfile` for a role whose app share is `app_mount`.
pub fn repo_vagrantfile(role: &str, app_mount: &str) -> String {
    let mut out = String::with_capacity(REPO_TEMPLATE.len());
    let mut rest = REPO_TEMPLATE;
    // One pass, so that a value holding `@NAME@` is never expanded again.
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let value = tail.find('@').and_then(|end| {
            let v = match &tail[..end] {
                "ROLE" => ruby_escape(role),
                // The release new dev VMs get; a box of another is asked
                // for with KILN_DEVVM_RELEASE.
                "RELEASE" => super::base::DEFAULT_RELEASE.to_string(),
                "APP_MOUNT" => ruby_escape(app_mount),
                "KILN" => guest::KILN_BIN.to_string(),
                "POLICY" => guest::POLICY_DIR.to_string(),
                "UNIT" => guest::CONVERGE_UNIT.to_string(),
                _ => return None,
            };
            Some((v, end))
        });
        match value {
            Some((v, end)) => {
                out.push_str(&v);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('@');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `s` as the inside of a Ruby double-quoted string: a role or mount path
/// from the policy stays data, never code (`#{`) or a new line.
fn ruby_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '"' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// What became of the repository's `vagrant/Vagrantfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoVagrantfile {
    UpToDate(PathBuf),
    /// It differs from the template: the engineer's, left alone.
    Kept {
        path: PathBuf,
        role: String,
    },
    Written(PathBuf),
}

/// A packaged box, its catalog, and the repository's Vagrantfile that uses it.
#[derive(Debug)]
pub struct Boxed {
    pub path: PathBuf,
    /// The box's name in Vagrant (`kiln/NAME`) and in the cache.
    pub name: String,
    pub version: String,
    pub catalog: PathBuf,
    /// Whether this version was packaged already.
    pub cached: bool,
    pub vagrantfile: RepoVagrantfile,
}

/// Writes `repo/vagrant/Vagrantfile` when missing. One that differs from
/// the template is the engineer's: it is left alone.
fn write_repo_vagrantfile(
    repo: &Path,
    role: &str,
    app_mount: &str,
) -> Result<RepoVagrantfile, Error> {
    let dir = repo.join("vagrant");
    let vf = dir.join("Vagrantfile");
    let want = repo_vagrantfile(role, app_mount);
    match fs::read_to_string(&vf) {
        Ok(have) if have == want => Ok(RepoVagrantfile::UpToDate(vf)),
        Ok(_) => Ok(RepoVagrantfile::Kept {
            path: vf,
            role: role.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
            write_atomic(&vf, &want)?;
            Ok(RepoVagrantfile::Written(vf))
        }
        Err(e) => Err(e).ctx(|| format!("reading {}", vf.display())),
    }
}

/// A box's name: role, size and release, so that boxes of each live side
/// by side in Vagrant.
pub fn box_name(role: &str, size: &str, release: &str) -> String {
    format!("{role}-{size}-{release}")
}

/// The catalog Vagrant reads a box's versions from (`config.vm.box_url`).
pub fn catalog_path(name: &str) -> PathBuf {
    paths::boxes_dir().join(format!("{name}.json"))
}

/// A box version's file.
pub fn box_path(name: &str, version: &str) -> PathBuf {
    paths::boxes_dir().join(format!("{name}-{version}.box"))
}

/// A box's version: when its image was built, as YEAR.MMDD.HHMMSS.
/// Vagrant compares versions part by part as numbers, so a rebuilt image
/// is a newer version of the same box: `vagrant box update` takes it.
pub fn version(created: u64) -> String {
    let stamp = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(created),
    )
    .to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let part = |r: std::ops::Range<usize>| {
        digits
            .get(r)
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!("{}.{}.{}", part(0..4), part(4..8), part(8..14))
}

/// A `file://` URL of a local path, with what URLs reserve escaped.
fn file_url(path: &Path) -> String {
    let mut out = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Vagrant's box catalog: one box, its newest version, the file's sha256.
pub fn catalog(name: &str, version: &str, file: &Path, sha256: &str) -> String {
    let doc = serde_json::json!({
        "name": format!("kiln/{name}"),
        "description": "kiln dev VM: made by `kiln devvm box`",
        "versions": [{
            "version": version,
            "providers": [{
                "name": "libvirt",
                "url": file_url(file),
                "checksum_type": "sha256",
                "checksum": sha256,
            }],
        }],
    });
    format!("{doc:#}\n")
}

/// The version a catalog offers, if it reads as one.
fn catalog_version(path: &Path) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    doc["versions"][0]["version"].as_str().map(str::to_string)
}

/// Writes `path` whole or not at all, readable by all: the engineer's
/// Vagrant reads what a `sudo kiln devvm box` wrote.
fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    crate::platform::tfs::Tfs::new(Path::new("/"), false)
        .write_atomic(path, text.as_bytes(), 0o644, Default::default())
        .ctx(|| format!("writing {}", path.display()))
}

/// Packages `img` (of the Vagrant flavor) as a box version, unless that
/// version is packaged already; points the box's catalog at it and drops
/// older versions' files; writes `repo/vagrant/Vagrantfile` if missing.
pub fn make_box(img: &Image, repo: &Path, on: &dyn Fn(Event)) -> Result<Boxed, Error> {
    let m = &img.manifest;
    let name = box_name(&m.role, &m.size, &m.release);
    let version = version(m.created);
    let out = box_path(&name, &version);
    let catalog_file = catalog_path(&name);
    let dir = paths::boxes_dir();
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let cached = out.is_file() && catalog_version(&catalog_file).as_deref() == Some(&version);
    if !cached {
        package(img, &dir, &out, on)?;
        let sum = crate::digest::sha256_file(&out).ctx(|| format!("hashing {}", out.display()))?;
        write_atomic(&catalog_file, &catalog(&name, &version, &out, &sum))?;
        // Older versions: Vagrant keeps what it added; the cache keeps one.
        let prefix = format!("{name}-");
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let older = file
                .strip_prefix(&prefix)
                .and_then(|v| v.strip_suffix(".box"))
                .is_some_and(|v| {
                    v != version && v.split('.').all(|p| p.bytes().all(|b| b.is_ascii_digit()))
                });
            if older {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let vagrantfile = write_repo_vagrantfile(repo, &m.role, &m.app_mount)?;
    Ok(Boxed {
        path: out,
        name,
        version,
        catalog: catalog_file,
        cached,
        vagrantfile,
    })
}

/// The box file: metadata, its Vagrantfile and the disk, as a tar.
fn package(img: &Image, dir: &Path, out: &Path, on: &dyn Fn(Event)) -> Result<(), Error> {
    let stage = tempfile::Builder::new()
        .prefix(".box-")
        .tempdir_in(dir)
        .ctx(|| format!("creating a directory in {}", dir.display()))?;
    let s = stage.path();
    fs::write(s.join("metadata.json"), metadata(img)).ctx(|| "metadata.json".to_string())?;
    fs::write(s.join("Vagrantfile"), box_vagrantfile(img)).ctx(|| "Vagrantfile".to_string())?;
    std::os::unix::fs::symlink(img.disk(), s.join("box.img"))
        .ctx(|| "linking box.img".to_string())?;
    on(Event::Step(format!("packaging {}", out.display())));
    let tmp = dir.join(format!(
        ".{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    // The staged link is followed: the box holds the image's disk.
    let mut tar =
        tar::Builder::new(fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?);
    for name in ["metadata.json", "Vagrantfile", "box.img"] {
        tar.append_path_with_name(s.join(name), name)
            .ctx(|| format!("packaging {name}"))?;
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out).ctx(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kiln devvm box` resolves for this repository with its defaults:
    /// role devvm, whose app share is the apache2 cookbook's docroot.
    const REPO_ROLE: &str = "devvm";
    const REPO_APP_MOUNT: &str = "/var/www/shop";

    fn committed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant/Vagrantfile")
    }

    #[test]
    fn the_repository_vagrantfile_is_written_once_then_left_to_the_engineer() {
        let repo = tempfile::tempdir().unwrap();
        let vf = repo.path().join("vagrant/Vagrantfile");
        let write = || write_repo_vagrantfile(repo.path(), "devvm", "/srv/app").unwrap();
        assert_eq!(write(), RepoVagrantfile::Written(vf.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&vf).unwrap().permissions().mode() & 0o777,
            0o644,
            "the engineer's Vagrant reads it"
        );
        assert_eq!(write(), RepoVagrantfile::UpToDate(vf.clone()));
        fs::write(&vf, "# mine\n").unwrap();
        assert_eq!(
            write(),
            RepoVagrantfile::Kept {
                path: vf.clone(),
                role: "devvm".into()
            }
        );
        assert_eq!(fs::read_to_string(&vf).unwrap(), "# mine\n");
    }

    /// The committed file is the template rendered with the repository's
    /// defaults, byte for byte. `KILN_WRITE_VAGRANTFILE=1` writes it.
    #[test]
    fn box_files_are_replaced_whole_and_readable_by_anyone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("devvm-small-bookworm.json");
        write_atomic(&f, "old").expect("first write");
        write_atomic(&f, "new").expect("second write");
        assert_eq!(fs::read_to_string(&f).expect("read"), "new");
        let mode = fs::metadata(&f).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            fs::read_dir(d.path()).expect("dir").count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn committed_vagrantfile_is_the_rendered_template() {
        let want = repo_vagrantfile(REPO_ROLE, REPO_APP_MOUNT);
        if std::env::var_os("KILN_WRITE_VAGRANTFILE").is_some() {
            fs::write(committed(), &want).expect("writing vagrant/Vagrantfile");
        }
        let have = fs::read_to_string(committed()).expect("reading vagrant/Vagrantfile");
        assert!(
            have == want,
            "vagrant/Vagrantfile differs from src/devvm/Vagrantfile.in rendered for role \
             {REPO_ROLE}; edit the template, then regenerate the file with\n  \
             KILN_WRITE_VAGRANTFILE=1 cargo test --lib committed_vagrantfile\n\
             --- committed\n{have}\n--- rendered\n{want}"
        );
    }

    #[test]
    fn repo_app_mount_is_the_devvm_roles_share() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut attrs = toml::Table::new();
        for cookbook in ["apache2", "app"] {
            let file = dir.join(format!("cookbooks/{cookbook}/attributes.toml"));
            if let Ok(text) = fs::read_to_string(&file) {
                attrs.extend(toml::from_str::<toml::Table>(&text).expect("attributes"));
            }
        }
        let role: toml::Table =
            toml::from_str(&fs::read_to_string(dir.join("roles/devvm.toml")).expect("role"))
                .expect("role toml");
        if let Some(toml::Value::Table(d)) = role.get("default_attributes") {
            for key in ["devvm", "app", "apache2"] {
                if let Some(toml::Value::Table(t)) = d.get(key) {
                    let slot = attrs
                        .entry(key)
                        .or_insert_with(|| toml::Value::Table(Default::default()));
                    if let toml::Value::Table(s) = slot {
                        s.extend(t.clone());
                    }
                }
            }
        }
        assert_eq!(super::super::image::app_mount(&attrs), REPO_APP_MOUNT);
    }

    #[test]
    fn repo_vagrantfile_has_size_variable_and_provisioner() {
        let v = repo_vagrantfile("devvm", "/var/www/html");
        assert!(
            v.contains(r#"SIZE = ENV.fetch("KILN_DEVVM_SIZE", "small")"#),
            "{v}"
        );
        assert!(v.contains("converge --role #{ROLE} --size #{SIZE}"), "{v}");
        assert!(v.contains(r#""/var/www/html", type: "virtiofs""#), "{v}");
        assert!(!v.contains('@'), "{v}");
    }

    #[test]
    fn a_box_version_is_when_its_image_was_built_and_orders_as_numbers() {
        // 2026-12-04T11:40:49Z, and a January morning after it.
        assert_eq!(version(1_796_384_449), "2026.1204.114049");
        let later = version(1_799_139_600);
        assert_eq!(later, "2027.105.90000");
        let parts = |v: &str| {
            v.split('.')
                .map(|p| p.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        };
        assert!(parts(&later) > parts("2026.1204.114049"));
    }

    #[test]
    fn the_catalog_names_the_box_its_version_and_the_files_checksum() {
        let c = catalog(
            "devvm-small-trixie",
            "2026.1204.114049",
            Path::new("/home/a b/.cache/kiln/devvm/boxes/x.box"),
            "ab12",
        );
        let doc: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(doc["name"], "kiln/devvm-small-trixie");
        let v = &doc["versions"][0];
        assert_eq!(v["version"], "2026.1204.114049");
        let p = &v["providers"][0];
        assert_eq!(p["name"], "libvirt");
        assert_eq!(p["url"], "file:///home/a%20b/.cache/kiln/devvm/boxes/x.box");
        assert_eq!(
            (&p["checksum_type"], &p["checksum"]),
            (&"sha256".into(), &"ab12".into())
        );
    }

    #[test]
    fn policy_values_stay_inside_their_ruby_strings() {
        let v = repo_vagrantfile("a\"b\nc", "/x\"; system(\"id\") #{`id`} @ROLE@ \\");
        assert!(
            v.contains(r#"ENV.fetch("KILN_DEVVM_ROLE", "a\"b\nc")"#),
            "{v}"
        );
        assert!(
            v.contains(r#"APP_DIR, "/x\"; system(\"id\") \#{`id`} @ROLE@ \\", type"#),
            "{v}"
        );
        assert_eq!(v.lines().count(), REPO_TEMPLATE.lines().count(), "{v}");
    }
}
