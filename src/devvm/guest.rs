//! What kiln writes into an image's tree besides the role: hostname,
//! fstab with the app share, DHCP on the virtio NIC, the root key, kiln
//! and its policy, and the unit that converges at boot.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::DevvmError;
use crate::error::{Error, IoContext};
use crate::platform::target::{Target, output_tail};
use crate::platform::tfs::Tfs;
use crate::policy::Repository;

/// Where the policy repository lives inside a VM.
pub const POLICY_DIR: &str = "/etc/kiln/policy";
/// kiln inside a VM.
pub const KILN_BIN: &str = "/usr/local/bin/kiln";
/// The 9p mount tag of the app share.
pub const APP_TAG: &str = "app";
/// The unit that converges the role at boot.
pub const CONVERGE_UNIT: &str = "kiln-converge.service";
/// Keeps the hostname systemd was given on the kernel command line (the
/// VM's name) in /etc/hostname and /etc/hosts, before the boot converge
/// takes its node name from there.
pub const HOSTNAME_SCRIPT: &str = "/usr/local/lib/kiln/devvm-hostname";

/// Units masked in a dev VM (see [`configure`]).
pub const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "dpkg-db-backup.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
];

/// Whom an image is for. A box is handed to colleagues, so it holds no
/// trace of its builder: no key of theirs, and Vagrant's conventions for
/// the rest (the `vagrant` user with Vagrant's insecure key, which Vagrant
/// replaces on first up; passwordless sudo; shares mounted by Vagrant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Booted by `kiln devvm up`: root over ssh with the engineer's key.
    #[default]
    Kiln,
    /// Packaged by `kiln devvm box` for vagrant-libvirt.
    Vagrant,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Kiln => "kiln",
            Flavor::Vagrant => "vagrant",
        }
    }
}

/// Vagrant's well-known insecure public key: every Vagrant knows its
/// private half, logs in with it once, and puts a key of its own in its place.
pub const VAGRANT_INSECURE_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key";

/// Everything the guest files depend on.
pub struct GuestConfig<'a> {
    pub hostname: &'a str,
    pub role: &'a str,
    pub size: &'a str,
    pub authorized_key: &'a str,
    /// Where the app share is mounted (the app's docroot).
    pub app_mount: &'a str,
    /// Where the kiln binary goes (the policy's `kiln.binary`, which
    /// /usr/local/bin/kiln may link to), else [`KILN_BIN`].
    pub kiln_binary: &'a str,
}

/// The tree's files, every path resolved inside it by the kernel (an
/// absolute link never leads out of the tree).
fn in_tree(tree: &Path) -> Tfs {
    Tfs::new(tree, true)
}

/// Creates the directories leading to `path` in the tree.
fn parents(t: &Tfs, path: &str) -> Result<(), Error> {
    let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
    t.create_dir_all(parent, 0o755)
        .ctx(|| format!("creating {} in the image", parent.display()))
}

fn write_bytes(tree: &Path, path: &str, content: &[u8], mode: u32) -> Result<(), Error> {
    let t = in_tree(tree);
    parents(&t, path)?;
    // A symlink (e.g. /etc/resolv.conf) is replaced, never followed.
    t.write_atomic(path, content, mode, Default::default())
        .ctx(|| format!("writing {path} in the image"))
}

fn write(tree: &Path, path: &str, content: &str, mode: u32) -> Result<(), Error> {
    write_bytes(tree, path, content.as_bytes(), mode)
}

fn symlink(tree: &Path, path: &str, to: &str) -> Result<(), Error> {
    let t = in_tree(tree);
    parents(&t, path)?;
    let _ = t.remove_file(path);
    t.symlink(to, path)
        .ctx(|| format!("linking {path} in the image"))
}

/// The fstab: the root by its label, and, for `kiln devvm up`, the app
/// share (nofail: a VM booted without the share still comes up). Vagrant
/// mounts the shares it is given itself, so a box's fstab names none.
pub fn fstab(app_mount: &str, flavor: Flavor) -> String {
    let root = format!(
        "# written by kiln devvm\n\
         LABEL={} / ext4 defaults,errors=remount-ro 0 1\n",
        super::disk::ROOT_LABEL
    );
    match flavor {
        Flavor::Kiln => format!(
            "{root}{APP_TAG} {app_mount} 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n"
        ),
        Flavor::Vagrant => root,
    }
}

/// The unit that converges the role at boot, once the share is mounted and
/// the network is up, so that what needs running services happens here.
pub fn converge_unit(role: &str, size: &str, app_mount: &str) -> String {
    // The share is `nofail`, so nothing orders it before local-fs.target:
    // order after it here, but without requiring it.
    let mount = mount_unit(app_mount);
    format!(
        "# written by kiln devvm\n\
         [Unit]\n\
         Description=kiln converge of role {role} ({size})\n\
         Wants=network-online.target\n\
         After=network-online.target local-fs.target {mount}\n\
         Wants={mount}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         WorkingDirectory={POLICY_DIR}\n\
         ExecStartPre={HOSTNAME_SCRIPT}\n\
         ExecStart={KILN_BIN} --repo {POLICY_DIR} converge --role {role} --size {size} --substitute-vanished-pins\n\
         TimeoutStartSec=30min\n\
         StandardOutput=journal+console\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The systemd mount unit of a path, as `systemd-escape --path --suffix=mount`.
pub fn mount_unit(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b':' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push_str(".mount");
    out
}

/// Writes the guest configuration into `tree`, before the role is converged.
pub fn configure(tree: &Path, c: &GuestConfig) -> Result<(), Error> {
    write(tree, "/etc/hostname", &format!("{}\n", c.hostname), 0o644)?;
    write(
        tree,
        "/etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            c.hostname
        ),
        0o644,
    )?;
    write(tree, "/etc/fstab", &fstab(c.app_mount, Flavor::Kiln), 0o644)?;
    in_tree(tree)
        .create_dir_all(c.app_mount, 0o755)
        .ctx(|| format!("creating {} in the image", c.app_mount))?;
    write(
        tree,
        "/etc/systemd/network/10-kiln-devvm.network",
        "# written by kiln devvm: DHCP on the virtio NIC of QEMU user networking\n\
         [Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
        0o644,
    )?;
    write(
        tree,
        "/etc/resolv.conf",
        "# written by kiln devvm: QEMU user networking's DNS\nnameserver 10.0.2.3\n",
        0o644,
    )?;
    symlink(
        tree,
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/lib/systemd/system/systemd-networkd.service",
    )?;
    symlink(
        tree,
        "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service",
        "/lib/systemd/system/systemd-networkd-wait-online.service",
    )?;
    write(
        tree,
        "/root/.ssh/authorized_keys",
        &format!("{}\n", c.authorized_key),
        0o600,
    )?;
    let t = in_tree(tree);
    t.set_meta("/root/.ssh", Default::default(), Some(0o700), false)
        .ctx(|| "chmod /root/.ssh".to_string())?;
    // Host keys of this image, not of the shared base root.
    for name in t.read_dir("/etc/ssh").unwrap_or_default() {
        if name.to_string_lossy().starts_with("ssh_host_") {
            let _ = t.remove_file(Path::new("/etc/ssh").join(name));
        }
    }
    // The tree's own ssh-keygen.
    run_in_tree(
        tree,
        "generating the image's ssh host keys",
        &["ssh-keygen", "-A"],
    )?;
    // Periodic housekeeping that would otherwise run at every first boot
    // and, under TCG, delay the VM by a minute: a dev VM is rebuilt, not
    // maintained.
    for unit in MASKED {
        symlink(tree, &format!("/etc/systemd/system/{unit}"), "/dev/null")?;
    }
    // The machine id is made at first boot, per VM.
    write(tree, "/etc/machine-id", "", 0o444)?;
    Ok(())
}

/// Installs kiln (this very binary), the policy repository and the boot
/// converge unit into `tree`, after the role is converged.
pub fn install_kiln(tree: &Path, repo: &Path, c: &GuestConfig) -> Result<(), Error> {
    let t = in_tree(tree);
    let exe = super::self_exe();
    let bytes = fs::read(&exe).ctx(|| format!("reading {}", exe.display()))?;
    write_bytes(tree, c.kiln_binary, &bytes, 0o755)?;
    // /usr/local/bin/kiln: the binary itself, or the policy's link to it.
    if c.kiln_binary != KILN_BIN && t.symlink_metadata(KILN_BIN).is_err() {
        symlink(tree, KILN_BIN, c.kiln_binary)?;
    }
    let _ = t.remove_dir_all(POLICY_DIR);
    t.create_dir_all(POLICY_DIR, 0o755)
        .ctx(|| format!("creating {POLICY_DIR} in the image"))?;
    for f in Repository::open(repo)?.files()? {
        let to = Path::new(POLICY_DIR).join(&f.rel);
        let to = to.to_string_lossy();
        let bytes = fs::read(&f.path).ctx(|| format!("reading {}", f.path.display()))?;
        let mode = fs::metadata(&f.path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        write_bytes(tree, &to, &bytes, mode)?;
    }
    write(
        tree,
        &format!("/etc/systemd/system/{CONVERGE_UNIT}"),
        &converge_unit(c.role, c.size, c.app_mount),
        0o644,
    )?;
    symlink(
        tree,
        &format!("/etc/systemd/system/multi-user.target.wants/{CONVERGE_UNIT}"),
        &format!("/etc/systemd/system/{CONVERGE_UNIT}"),
    )?;
    write(
        tree,
        HOSTNAME_SCRIPT,
        "#!/bin/sh\n\
         # written by kiln devvm: the hostname systemd set from the kernel command\n\
         # line (the VM's name) is the one /etc/hostname and /etc/hosts name.\n\
         set -e\n\
         h=$(hostname)\n\
         [ \"$(cat /etc/hostname 2>/dev/null)\" = \"$h\" ] || echo \"$h\" > /etc/hostname\n\
         sed -i \"s/^127\\.0\\.1\\.1[[:space:]].*/127.0.1.1\\t$h/\" /etc/hosts\n",
        0o755,
    )?;
    write(
        tree,
        "/etc/profile.d/kiln.sh",
        &format!(
            "# written by kiln devvm: kiln's policy repository in this VM\n\
             alias kiln='{KILN_BIN} --repo {POLICY_DIR}'\n"
        ),
        0o644,
    )?;
    Ok(())
}

/// Turns a converged tree into a Vagrant box's ([`Flavor::Vagrant`]),
/// after the converge, so that the box shares every checkpoint with the
/// images `kiln devvm up` boots.
pub fn for_vagrant(tree: &Path, c: &GuestConfig) -> Result<(), Error> {
    write(
        tree,
        "/etc/fstab",
        &fstab(c.app_mount, Flavor::Vagrant),
        0o644,
    )?;
    // The builder's key goes; the box is anyone's.
    write(tree, "/root/.ssh/authorized_keys", "", 0o600)?;
    // A name of the box's, not of whoever built it.
    write(tree, "/etc/hostname", &format!("{}\n", c.role), 0o644)?;
    write(
        tree,
        "/etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            c.role
        ),
        0o644,
    )?;
    if in_tree(tree).symlink_metadata("/usr/bin/sudo").is_err() {
        return Err(DevvmError::NoSudo.into());
    }
    write(
        tree,
        "/etc/sudoers.d/vagrant",
        "# written by kiln devvm box: Vagrant's convention\nvagrant ALL=(ALL) NOPASSWD: ALL\n",
        0o440,
    )?;
    // The user and the ownership of its key are the tree's own programs'
    // business (its passwd, its ids).
    let what = "adding the vagrant user";
    let script = "set -e\n\
         id vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group vagrant\n\
         install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh\n\
         printf '%s\\n' \"$1\" > /home/vagrant/.ssh/authorized_keys\n\
         chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys\n\
         chmod 0600 /home/vagrant/.ssh/authorized_keys\n";
    run_in_tree(
        tree,
        what,
        &["sh", "-c", script, "sh", VAGRANT_INSECURE_KEY],
    )
}

/// Runs one of the tree's own programs, in the sandbox every `--root`
/// program gets; non-zero is an error with the end of its output.
fn run_in_tree(tree: &Path, what: &str, argv: &[&str]) -> Result<(), Error> {
    let out = Target::at_root(tree)
        .run(argv)
        .map_err(|source| DevvmError::InTreeCouldNotRun {
            what: what.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(DevvmError::InTreeFailed {
            what: what.to_string(),
            status: out.status,
            tail: output_tail(&out),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_mounts_the_share_at_the_docroot() {
        let f = fstab("/var/www/html", Flavor::Kiln);
        assert!(f.contains("app /var/www/html 9p trans=virtio"), "{f}");
        assert!(f.contains("\nLABEL=kiln-root / ext4 "), "{f}");
        let f = fstab("/var/www/html", Flavor::Vagrant);
        assert!(f.contains("\nLABEL=kiln-root / ext4 "), "{f}");
        assert!(!f.contains("9p"), "Vagrant mounts its own shares: {f}");
    }

    #[test]
    fn unit_converges_the_role_and_size() {
        let u = converge_unit("devvm", "small", "/srv/app");
        assert!(u.contains("converge --role devvm --size small"), "{u}");
        assert!(u.contains("After=network-online.target local-fs.target srv-app.mount"));
        assert!(
            u.contains(&format!("ExecStartPre={HOSTNAME_SCRIPT}\n")),
            "{u}"
        );
    }

    #[test]
    fn mount_units_are_escaped_like_systemd_escape() {
        assert_eq!(mount_unit("/var/www/html"), "var-www-html.mount");
        assert_eq!(mount_unit("/srv/my-app"), "srv-my\\x2dapp.mount");
    }
}
