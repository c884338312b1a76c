//! This repository's own roles under `kiln test`, as CI runs them: every
//! role, on every Debian release the whitelist pins (bookworm and trixie),
//! converges, converges again without change, and passes its verify
//! checks (for devvm: the shop page through Apache with listings from
//! MariaDB, the second request served from memcached, the Redis counter).
//! Then the parity rule, per release: a resource that devvm and a production
//! role both manage on one release has the same fingerprint part on both,
//! except the differences the roles declare on purpose (sizes, listen
//! addresses, the motd naming the role).
//! Needs the network to deb.debian.org, as CI has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

const AGENT: &str = "template[/etc/systemd/system/kiln-agent.service]";
/// The php.ini drop-in, whose path names the release's PHP (8.2, 8.4).
const PHP_INI: &str = "template[/etc/php/PHP/apache2/conf.d/90-kiln.ini]";
const RELEASES: &[(&str, &str)] = &[("bookworm", "8.2"), ("trixie", "8.4")];

/// Resources whose content the roles make differ on purpose, per production role.
const DECLARED: &[(&str, &[&str])] = &[
    (
        "web",
        &[
            // motd names the roles; workers and php memory follow the size.
            "template[/etc/motd]",
            "template[/etc/apache2/mods-available/mpm_prefork.conf]",
            PHP_INI,
            // the vhost's ServerName is the node's fqdn
            "template[/etc/apache2/sites-available/shop.conf]",
            // the database password: a secret (a random value in kiln test)
            // in production, a development value of its own on a dev VM
            "template[/etc/kiln-shop/config.php]",
            // a dev VM's agent converges from the policy in its image
            AGENT,
        ],
    ),
    (
        "db",
        &[
            "template[/etc/motd]",
            // buffer pool from the size; listens on all addresses in production
            "template[/etc/mysql/mariadb.conf.d/60-kiln.cnf]",
            AGENT,
        ],
    ),
    (
        "cache",
        &[
            "template[/etc/motd]",
            // memory from the size; listen addresses
            "template[/etc/memcached.conf]",
            "template[/etc/redis/redis.conf]",
            AGENT,
        ],
    ),
    ("base", &["template[/etc/motd]", AGENT]),
];

fn parts(root: &Path) -> BTreeMap<String, String> {
    let out = kiln()
        .args(["fingerprint", "--explain", "--root"])
        .arg(root)
        .run()
        .success();
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_role_passes_kiln_test_and_shared_resources_have_equal_fingerprints() {
    need!(Sandbox, Network);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    kiln().arg("check").arg("--repo").arg(&repo).run().success();
    let junit = tempfile::NamedTempFile::new().unwrap();
    let out = kiln()
        .args(["test", "--keep", "--junit"])
        .arg(junit.path())
        .arg("--repo")
        .arg(&repo)
        .run();
    // (role, release) -> the kept root.
    let kept: BTreeMap<(String, String), PathBuf> = out
        .stdout
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter_map(|w| {
            let mut words = w[0].split_whitespace();
            let role = words.next()?;
            let release = words.next()?;
            let path = w[1].trim().strip_prefix("kept: ")?;
            Some(((role.to_string(), release.to_string()), PathBuf::from(path)))
        })
        .collect();
    let cleanup = || {
        for p in kept.values() {
            kiln::platform::rootfs::remove_tree(p.parent().unwrap());
        }
    };
    if out.status != 0 {
        cleanup();
        panic!("kiln test failed:\n{}\n{}", out.stdout, out.stderr);
    }
    assert!(
        out.stdout
            .contains("10/10 role test(s) passed (5 role(s) on bookworm, trixie)"),
        "{}",
        out.stdout
    );
    assert_eq!(kept.len(), 10, "{kept:?}");
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 10, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    for (release, _) in RELEASES {
        assert!(
            xml.contains(&format!(
                "name=\"devvm on {release}: verify http http://127.0.0.1/\""
            )),
            "{xml}"
        );
    }

    let mut unexpected = Vec::new();
    for ((release, php), (role, declared)) in RELEASES
        .iter()
        .flat_map(|r| DECLARED.iter().map(move |d| (r, d)))
    {
        let key = |role: &str| (role.to_string(), release.to_string());
        let devvm = parts(&kept[&key("devvm")]);
        let declared: Vec<String> = declared
            .iter()
            .map(|d| d.replace("/PHP/", &format!("/{php}/")))
            .collect();
        let other = parts(&kept[&key(role)]);
        let role = format!("{role} on {release}");
        let shared: Vec<&String> = other.keys().filter(|k| devvm.contains_key(*k)).collect();
        assert!(
            shared.len() >= 10,
            "{role} shares only {} resources with devvm",
            shared.len()
        );
        for id in shared {
            let differs = other[id] != devvm[id];
            let on_purpose = declared.contains(id);
            if differs && !on_purpose {
                unexpected.push(format!(
                    "{role}: {id}\n  devvm: {}\n  {role}: {}",
                    devvm[id], other[id]
                ));
            }
            if !differs && on_purpose {
                unexpected.push(format!("{role}: {id} is declared to differ but does not"));
            }
        }
    }
    cleanup();
    assert!(
        unexpected.is_empty(),
        "parity broken:\n{}",
        unexpected.join("\n")
    );
}
