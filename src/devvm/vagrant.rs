//! `kiln devvm box`: an image packaged as a vagrant-libvirt box (metadata,
//! a Vagrantfile with direct kernel boot, the disk), and the repository's
//! `vagrant/Vagrantfile` that uses it.

use std::fs;
use std::path::{Path, PathBuf};

use super::image::Image;
use super::qemu::APPEND;
use super::{guest, paths, sshkey, step};
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

/// The repository's `vagrant/Vagrantfile`: the box of the size in
/// `KILN_DEVVM_SIZE` (default small), the app shared, converged by kiln.
pub fn repo_vagrantfile(role: &str, app_mount: &str) -> String {
    format!(
        r#"# -*- mode: ruby -*-
# Dev VM with Vagrant (vagrant-libvirt), for engineers who prefer it to
# `kiln devvm up`. Build the box first:
#
#   kiln devvm box --role {role} --size small      # or medium, large
#   KILN_DEVVM_SIZE=small vagrant up --provider=libvirt
#
# The box boots its own kernel (direct kernel boot) and has kiln and the
# policy inside; provisioning converges the role again, which after a boot
# changes nothing.

SIZE = ENV.fetch("KILN_DEVVM_SIZE", "small")
ROLE = ENV.fetch("KILN_DEVVM_ROLE", "{role}")
BOX_FILE = File.expand_path("~/.cache/kiln/devvm/boxes/#{{ROLE}}-#{{SIZE}}.box")
APP_DIR = File.expand_path("../app", __dir__)

Vagrant.configure("2") do |config|
  config.vm.box = "kiln/#{{ROLE}}-#{{SIZE}}"
  config.vm.box_url = "file://#{{BOX_FILE}}"
  config.vm.network :forwarded_port, guest: 80, host: 8080, host_ip: "127.0.0.1", auto_correct: true
  if File.directory?(APP_DIR)
    config.vm.synced_folder APP_DIR, "{app_mount}", type: "9p", accessmode: "mapped", mount: true
  end
  config.vm.provision "shell",
    inline: "{kiln} --repo {policy} converge --role #{{ROLE}} --size #{{SIZE}}"
end
"#,
        kiln = guest::KILN_BIN,
        policy = guest::POLICY_DIR,
    )
}

/// The box file of a role and size.
pub fn box_path(role: &str, size: &str) -> PathBuf {
    paths::boxes_dir().join(format!("{role}-{size}.box"))
}

/// Packages `img` as a box; writes `repo/vagrant/Vagrantfile` if missing.
pub fn make_box(img: &Image, repo: &Path) -> Result<PathBuf, Error> {
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
    step(format!("packaging {}", out.display()));
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
    let vf = repo.join("vagrant/Vagrantfile");
    if vf.exists() {
        println!("{} exists; left as it is", vf.display());
    } else {
        fs::create_dir_all(repo.join("vagrant")).ctx(|| "creating vagrant/".to_string())?;
        fs::write(
            &vf,
            repo_vagrantfile(&img.manifest.role, &img.manifest.app_mount),
        )
        .ctx(|| format!("writing {}", vf.display()))?;
        println!("wrote {}", vf.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_vagrantfile_has_size_variable_and_provisioner() {
        let v = repo_vagrantfile("devvm", "/var/www/html");
        assert!(
            v.contains(r#"SIZE = ENV.fetch("KILN_DEVVM_SIZE", "small")"#),
            "{v}"
        );
        assert!(v.contains("converge --role #{ROLE} --size #{SIZE}"), "{v}");
        assert!(v.contains(r#""/var/www/html", type: "9p""#), "{v}");
    }
}
