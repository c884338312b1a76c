//! The fingerprint of a target: one sha256 over the state of the resources
//! kiln manages there, read from the target itself (files, /etc/passwd and
//! /etc/group, the dpkg status file, rc links and systemd wants/ links; no
//! process is run), never from the policy, so that drift changes it.
//!
//! Each managed resource contributes one part, a line such as
//! `file[/etc/motd] sha256=… owner=root group=root mode=0644`. Parts hold
//! nothing host-specific (no times, inode numbers or host paths; owners by
//! their names on the target), so that a resource two roles manage alike has
//! the same part on both hosts and two hosts compare line by line with diff.
//! The fingerprint is the sha256 of the sorted lines, each ending in `\n`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::target::Target;
pub use crate::resource::state::{State, clean, link_to, missing, sha256_file};
use crate::resource::{ResourceId, type_def};

/// One managed resource's contribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// `type[name]`
    pub resource: String,
    /// Its state on the target, e.g. `sha256=… owner=root group=root mode=0644`.
    pub part: String,
}

impl Part {
    /// The line `--explain` prints and the fingerprint hashes.
    pub fn line(&self) -> String {
        format!("{} {}", self.resource, self.part)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fingerprint {
    /// sha256 (hex) over the parts' lines, sorted, each ending in a newline.
    pub fingerprint: String,
    #[serde(default)]
    pub parts: Vec<Part>,
    /// Pins the last run could not have and what it installed instead: a
    /// declared difference, so a package part that differs from
    /// production's is never a silent one. Not hashed (the parts are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitutions: Vec<crate::platform::pins::Substitution>,
}

impl Fingerprint {
    /// A fingerprint as `kiln fingerprint --json` prints it.
    pub fn parse(text: &str) -> Result<Fingerprint, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// One line per part, sorted, then the fingerprint.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            s.push_str(&p.line());
            s.push('\n');
        }
        for sub in &self.substitutions {
            s.push_str(&format!(
                "# declared difference: package[{}] pinned {}, substituted {} (no source offers the pin)\n",
                sub.package, sub.pin, sub.substitute
            ));
        }
        s.push_str(&self.fingerprint);
        s.push('\n');
        s
    }
}

/// The fingerprint of `target` over the resources `ids` (`type[name]`).
/// `execute` resources contribute nothing.
pub fn compute(target: &Target, ids: &[String]) -> Fingerprint {
    let mut state = State::new(target);
    let unique: BTreeSet<&String> = ids.iter().collect();
    let mut parts: Vec<Part> = unique
        .into_iter()
        .filter_map(|s| {
            let id = ResourceId::parse(s)?;
            let part = match type_def(&id.kind) {
                Some(t) => (t.fingerprint)(&id.name, &mut state)?,
                // A report written by a kiln that knew more types.
                None => "state=unknown (kiln fingerprint does not read this type)".to_string(),
            };
            Some(Part {
                resource: clean(&id.to_string()),
                part,
            })
        })
        .collect();
    parts.sort_by_key(Part::line);
    Fingerprint {
        substitutions: Vec::new(),
        fingerprint: hash(&parts),
        parts,
    }
}

/// The fingerprint of `parts`, sorted as [`compute`] sorts them.
pub fn hash(parts: &[Part]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.line().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    use crate::platform::accounts::Accounts;

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          deploy:x:2501:2500::/home/deploy:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:syslog,deploy\nwebops:x:2500:\n";

    /// A target tree with accounts, a file, a directory and a link.
    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join("etc/passwd"), PASSWD).unwrap();
        fs::write(p.join("etc/group"), GROUP).unwrap();
        fs::create_dir_all(p.join("srv/app")).unwrap();
        fs::set_permissions(p.join("srv/app"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(p.join("srv/app/config.ini"), "port=8080\n").unwrap();
        fs::set_permissions(
            p.join("srv/app/config.ini"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        symlink("/srv/app", p.join("srv/current")).unwrap();
        dir
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parts(t: &Target, list: &[&str]) -> Vec<String> {
        compute(t, &ids(list))
            .parts
            .iter()
            .map(Part::line)
            .collect()
    }

    /// The owner name of paths a test creates: whoever runs the tests.
    fn me(dir: &Path) -> (String, String) {
        let m = fs::metadata(dir).unwrap();
        let a = Accounts::parse(PASSWD, GROUP);
        let u = a
            .users
            .values()
            .find(|u| u.uid == m.uid())
            .map_or(m.uid().to_string(), |u| u.name.clone());
        let g = a
            .group_name(m.gid())
            .map_or(m.gid().to_string(), str::to_string);
        (u, g)
    }

    #[test]
    fn parts_read_the_state_of_each_type() {
        let r = root();
        let t = Target::at_root(r.path());
        let (u, g) = me(r.path());
        let hash = crate::digest::sha256_hex(b"port=8080\n");
        assert_eq!(
            parts(
                &t,
                &[
                    "template[/srv/app/config.ini]",
                    "directory[/srv/app]",
                    "link[/srv/current]",
                    "user[deploy]",
                    "group[adm]",
                    "group[webops]",
                    "file[/etc/missing]",
                    "user[nobody]",
                    "execute[make-marker]",
                ]
            ),
            [
                format!("directory[/srv/app] owner={u} group={g} mode=0750"),
                "file[/etc/missing] absent".to_string(),
                "group[adm] gid=4 members=deploy,syslog".to_string(),
                "group[webops] gid=2500 members=".to_string(),
                format!("link[/srv/current] to=/srv/app owner={u} group={g}"),
                format!(
                    "template[/srv/app/config.ini] sha256={hash} owner={u} group={g} mode=0640"
                ),
                "user[deploy] uid=2501 gid=2500 home=/home/deploy shell=/bin/bash groups=adm"
                    .to_string(),
                "user[nobody] absent".to_string(),
            ]
        );
    }

    #[test]
    fn the_total_is_the_hash_of_the_explained_lines() {
        let r = root();
        let t = Target::at_root(r.path());
        let fp = compute(&t, &ids(&["directory[/srv/app]", "user[deploy]"]));
        let text = fp.explain();
        let (body, last) = text.trim_end().rsplit_once('\n').unwrap();
        assert_eq!(last, fp.fingerprint);
        assert_eq!(
            fp.fingerprint,
            crate::digest::sha256_hex(format!("{body}\n").as_bytes())
        );
        // Order and repetition of the ids do not matter.
        let again = compute(
            &t,
            &ids(&["user[deploy]", "directory[/srv/app]", "user[deploy]"]),
        );
        assert_eq!(again.fingerprint, fp.fingerprint);
    }

    #[test]
    fn drift_changes_only_the_drifted_part() {
        let r = root();
        let t = Target::at_root(r.path());
        let list = ["file[/srv/app/config.ini]", "directory[/srv/app]"];
        let before = compute(&t, &ids(&list));
        fs::set_permissions(
            r.path().join("srv/app/config.ini"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let after = compute(&t, &ids(&list));
        assert_ne!(before.fingerprint, after.fingerprint);
        assert_eq!(before.parts[0], after.parts[0]);
        assert!(after.parts[1].part.ends_with("mode=0644"), "{after:?}");
        // Content too, and a symlink put in a file's place.
        fs::write(r.path().join("srv/app/config.ini"), "port=9090\n").unwrap();
        assert_ne!(compute(&t, &ids(&list)).parts[1], after.parts[1]);
        fs::remove_file(r.path().join("srv/app/config.ini")).unwrap();
        symlink("/etc/passwd", r.path().join("srv/app/config.ini")).unwrap();
        assert_eq!(
            compute(&t, &ids(&list)).parts[1].part,
            "kind=symlink to=/etc/passwd"
        );
    }

    #[test]
    fn the_same_state_in_two_roots_gives_the_same_parts() {
        let (a, b) = (root(), root());
        let list = ids(&[
            "file[/srv/app/config.ini]",
            "directory[/srv/app]",
            "link[/srv/current]",
            "user[deploy]",
        ]);
        let fa = compute(&Target::at_root(a.path()), &list);
        let fb = compute(&Target::at_root(b.path()), &list);
        assert_eq!(fa.explain(), fb.explain());
    }

    #[test]
    fn packages_come_from_the_dpkg_status_file() {
        let r = root();
        fs::create_dir_all(r.path().join("var/lib/dpkg")).unwrap();
        fs::write(
            r.path().join("var/lib/dpkg/status"),
            "Package: memcached\nStatus: hold ok installed\nVersion: 1.6.18-1\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n",
        )
        .unwrap();
        let t = Target::at_root(r.path());
        assert_eq!(
            parts(
                &t,
                &["package[memcached]", "package[gone]", "package[never]"]
            ),
            [
                "package[gone] state=config-files version=1.0",
                "package[memcached] version=1.6.18-1",
                "package[never] absent",
            ]
        );
    }

    #[test]
    fn sysv_services_are_enabled_by_their_rc_links() {
        let r = root();
        let p = r.path();
        fs::create_dir_all(p.join("etc/init.d")).unwrap();
        fs::create_dir_all(p.join("etc/rc2.d")).unwrap();
        fs::write(p.join("etc/init.d/on"), "#!/bin/sh\n").unwrap();
        fs::write(p.join("etc/init.d/off"), "#!/bin/sh\n").unwrap();
        symlink("../init.d/on", p.join("etc/rc2.d/S01on")).unwrap();
        symlink("../init.d/off", p.join("etc/rc2.d/K01off")).unwrap();
        let t = Target::at_root(p);
        assert_eq!(
            parts(
                &t,
                &["service[on]", "service[off.service]", "service[none]"]
            ),
            [
                "service[none] absent",
                "service[off.service] enabled=no",
                "service[on] enabled=yes",
            ]
        );
    }

    #[test]
    fn systemd_units_are_read_from_wants_links() {
        let r = root();
        let p = r.path();
        let lib = p.join("lib/systemd/system");
        let etc = p.join("etc/systemd/system");
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(etc.join("multi-user.target.wants")).unwrap();
        fs::create_dir_all(p.join("usr/bin")).unwrap();
        fs::write(p.join("usr/bin/systemctl"), "").unwrap();
        let installable = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";
        for u in ["redis-server", "memcached", "hidden", "getty@"] {
            fs::write(lib.join(format!("{u}.service")), installable).unwrap();
        }
        fs::write(
            lib.join("static.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        symlink(
            "/lib/systemd/system/redis-server.service",
            etc.join("multi-user.target.wants/redis-server.service"),
        )
        .unwrap();
        symlink(
            "/lib/systemd/system/getty@.service",
            etc.join("multi-user.target.wants/getty@tty1.service"),
        )
        .unwrap();
        symlink("/dev/null", etc.join("hidden.service")).unwrap();
        // A SysV script systemd runs through its generator.
        fs::create_dir_all(p.join("etc/init.d")).unwrap();
        fs::write(p.join("etc/init.d/legacy"), "#!/bin/sh\n").unwrap();
        let t = Target::at_root(p);
        assert!(t.uses_systemd());
        assert_eq!(
            parts(
                &t,
                &[
                    "service[redis-server]",
                    "service[memcached]",
                    "service[hidden]",
                    "service[static]",
                    "service[getty@tty1]",
                    "service[legacy]",
                ]
            ),
            [
                "service[getty@tty1] enabled=yes",
                "service[hidden] enabled=masked",
                "service[legacy] enabled=no",
                "service[memcached] enabled=no",
                "service[redis-server] enabled=yes",
                "service[static] enabled=static",
            ]
        );
    }

    #[test]
    fn apt_repositories_hash_their_sources_and_key() {
        let r = root();
        let p = r.path();
        fs::create_dir_all(p.join("etc/apt/sources.list.d")).unwrap();
        fs::write(
            p.join("etc/apt/sources.list.d/local.sources"),
            "Types: deb\n",
        )
        .unwrap();
        let t = Target::at_root(p);
        let h = crate::digest::sha256_hex(b"Types: deb\n");
        assert_eq!(
            parts(&t, &["apt_repository[local]", "apt_repository[gone]"]),
            [
                "apt_repository[gone] sources_sha256=absent key_sha256=none".to_string(),
                format!("apt_repository[local] sources_sha256={h} key_sha256=none"),
            ]
        );
    }

    #[test]
    fn control_characters_stay_on_one_line() {
        assert_eq!(clean("a\nb"), "a\\nb");
        assert_eq!(clean("/etc/motd"), "/etc/motd");
    }
}
