//! `kiln devvm box`: an image packaged as a vagrant-libvirt box (metadata,
//! a Vagrantfile with direct kernel boot, the disk), and the repository's
//! `vagrant/Vagrantfile` that uses it.

use std::fs;
use std::path::{Path, PathBuf};

use super::image::Image;
use super::qemu::APPEND;
use super::{Event, guest, paths, sshkey};
use crate::error::{Error, IoContext};

/// The box's own Vagrantfile: boot the kernel and initrd that ship in the
/// box, root over ssh with the engineer's dev VM key.
pub fn box_vagrantfile(img: &Image) -> String {
    let m = &img.manifest;
    format!(
        r#"# Written by `kiln devvm box`: image {key} of role {role}, size {size}.
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.private_key_path = "{key_path}"
  config.ssh.insert_key = false
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
    libvirt.cpus = {cpus}
    libvirt.memory = {memory}
    libvirt.disk_bus = "virtio"
    libvirt.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    libvirt.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    libvirt.cmd_line = "{append}"
  end
end
"#,
        key = &m.key[..12],
        role = m.role,
        size = m.size,
        key_path = sshkey::private_key().display(),
        cpus = m.cpus,
        memory = m.memory_mb,
        append = APPEND,
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
                "APP_MOUNT" => ruby_escape(app_mount),
                "KILN" => guest::KILN_BIN.to_string(),
                "POLICY" => guest::POLICY_DIR.to_string(),
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

/// A packaged box, and the repository's Vagrantfile that uses it.
#[derive(Debug)]
pub struct Boxed {
    pub path: PathBuf,
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
            // Written whole or not at all.
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .ctx(|| format!("creating a file in {}", dir.display()))?;
            std::io::Write::write_all(&mut tmp, want.as_bytes())
                .and_then(|()| tmp.as_file().sync_all())
                .ctx(|| format!("writing {}", vf.display()))?;
            tmp.persist(&vf)
                .map_err(|e| e.error)
                .ctx(|| format!("writing {}", vf.display()))?;
            Ok(RepoVagrantfile::Written(vf))
        }
        Err(e) => Err(e).ctx(|| format!("reading {}", vf.display())),
    }
}

/// The box file of a role and size.
pub fn box_path(role: &str, size: &str) -> PathBuf {
    paths::boxes_dir().join(format!("{role}-{size}.box"))
}

/// Packages `img` as a box; writes `repo/vagrant/Vagrantfile` if missing.
pub fn make_box(img: &Image, repo: &Path, on: &dyn Fn(Event)) -> Result<Boxed, Error> {
    let out = box_path(&img.manifest.role, &img.manifest.size);
    let dir = paths::boxes_dir();
    fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".box-")
        .tempdir_in(&dir)
        .ctx(|| format!("creating a directory in {}", dir.display()))?;
    let s = stage.path();
    fs::write(s.join("metadata.json"), metadata(img)).ctx(|| "metadata.json".to_string())?;
    fs::write(s.join("Vagrantfile"), box_vagrantfile(img)).ctx(|| "Vagrantfile".to_string())?;
    for (name, from) in [
        ("box.img", img.disk()),
        ("vmlinuz", img.kernel()),
        ("initrd.img", img.initrd()),
    ] {
        std::os::unix::fs::symlink(&from, s.join(name)).ctx(|| format!("linking {name}"))?;
    }
    on(Event::Step(format!("packaging {}", out.display())));
    let tmp = dir.join(format!(
        ".{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    // The staged links are followed: the box holds the image's files.
    let mut tar =
        tar::Builder::new(fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?);
    for name in [
        "metadata.json",
        "Vagrantfile",
        "box.img",
        "vmlinuz",
        "initrd.img",
    ] {
        tar.append_path_with_name(s.join(name), name)
            .ctx(|| format!("packaging {name}"))?;
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &out).ctx(|| format!("renaming to {}", out.display()))?;
    let vagrantfile = write_repo_vagrantfile(repo, &img.manifest.role, &img.manifest.app_mount)?;
    Ok(Boxed {
        path: out,
        vagrantfile,
    })
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
        assert!(v.contains(r#""/var/www/html", type: "9p""#), "{v}");
        assert!(!v.contains('@'), "{v}");
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
