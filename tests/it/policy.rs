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

/// Role tests' kept roots, by (role, release).
type Kept = BTreeMap<(String, String), PathBuf>;

/// `kiln test --keep ARGS` of every role of `repo` with `cache` as the kiln
/// cache: its outcome, each role's line, and the kept roots.
fn kiln_test(repo: &Path, cache: &Path, args: &[&str]) -> (Outcome, Vec<String>, Kept) {
    let out = kiln()
        .env("XDG_CACHE_HOME", cache)
        .args(["test", "--keep"])
        .args(args)
        .arg("--repo")
        .arg(repo)
        .run();
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    let kept: Kept = lines
        .windows(2)
        .filter_map(|w| {
            let mut words = w[0].split_whitespace();
            let role = words.next()?;
            let release = words.next()?;
            let path = w[1].trim().strip_prefix("kept: ")?;
            Some(((role.to_string(), release.to_string()), PathBuf::from(path)))
        })
        .collect();
    let roles = lines
        .iter()
        .filter(|l| l.contains(" s  from "))
        .cloned()
        .collect();
    (out, roles, kept)
}

fn remove_kept(kept: &Kept) {
    for p in kept.values() {
        kiln::platform::rootfs::remove_tree(p.parent().unwrap());
    }
}

#[test]
fn every_role_passes_kiln_test_and_shared_resources_have_equal_fingerprints() {
    need!(Sandbox, Network);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    kiln().arg("check").arg("--repo").arg(&repo).run().success();
    let junit = tempfile::NamedTempFile::new().unwrap();
    let cache = own_kiln_cache();
    let (out, _, kept) = kiln_test(
        &repo,
        cache.path(),
        &["--junit", &junit.path().to_string_lossy()],
    );
    let cleanup = || remove_kept(&kept);
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
    // The checkpoints the run above kept, put to use after a change late in
    // every run list: the targets must equal those converged from scratch.
    a_converge_from_a_checkpoint_equals_one_from_the_base_root(&repo, cache.path());
}

/// A copy of the policy in `repo` with a change late in every role's run
/// list (a recipe appended, with one file) and a one-line change in the
/// app's template (web, devvm).
fn late_change(repo: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for item in ["roles", "cookbooks", "whitelist.toml", "secrets"] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(repo.join(item))
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(status.success(), "cp {item}");
    }
    let roles = copy.path().join("roles");
    for entry in std::fs::read_dir(&roles).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
        let list = doc["run_list"]
            .as_array_mut()
            .expect("every role has a run list");
        list.push("recipe[late]");
        std::fs::write(&path, doc.to_string()).unwrap();
    }
    let late = copy.path().join("cookbooks/late");
    std::fs::create_dir_all(late.join("recipes")).unwrap();
    std::fs::write(
        late.join("metadata.toml"),
        "name = \"late\"\nversion = \"1.0.0\"\ndescription = \"a change late in the run list\"\n",
    )
    .unwrap();
    std::fs::write(
        late.join("recipes/default.toml"),
        "[[resource]]\nfile = \"/etc/kiln-late\"\ncontent = \"late\\n\"\nowner = \"root\"\ngroup = \"root\"\nmode = \"0644\"\n",
    )
    .unwrap();
    let template = copy.path().join("cookbooks/app/templates/config.php.hbs");
    let mut text = std::fs::read_to_string(&template).unwrap();
    text.push_str("// one line more\n");
    std::fs::write(&template, text).unwrap();
    kiln()
        .arg("check")
        .arg("--repo")
        .arg(copy.path())
        .run()
        .success();
    copy
}

fn a_converge_from_a_checkpoint_equals_one_from_the_base_root(repo: &Path, cache: &Path) {
    let changed = late_change(repo);
    let (resumed_out, resumed_lines, resumed) = kiln_test(changed.path(), cache, &[]);
    let (scratch_out, scratch_lines, scratch) = kiln_test(changed.path(), cache, &["--no-cache"]);
    let cleanup = || {
        remove_kept(&resumed);
        remove_kept(&scratch);
    };
    if resumed_out.status != 0 || scratch_out.status != 0 {
        cleanup();
        panic!(
            "kiln test failed:\nfrom checkpoints:\n{}\n{}\nfrom the base root:\n{}\n{}",
            resumed_out.stdout, resumed_out.stderr, scratch_out.stdout, scratch_out.stderr
        );
    }
    let mut problems = Vec::new();
    if resumed_lines.len() != 10 || scratch_lines.len() != 10 {
        problems.push(format!(
            "10 roles each:\n{resumed_lines:#?}\n{scratch_lines:#?}"
        ));
    }
    problems.extend(
        (resumed_lines.iter())
            .filter(|l| !l.contains("from checkpoint "))
            .map(|l| format!("not from a checkpoint: {l}")),
    );
    problems.extend(
        (scratch_lines.iter())
            .filter(|l| !l.ends_with("from the base root"))
            .map(|l| format!("--no-cache, yet: {l}")),
    );
    for (key, root) in &scratch {
        let Some(other) = resumed.get(key) else {
            problems.push(format!("{key:?}: no target from a checkpoint"));
            continue;
        };
        let (want, got) = (parts(root), parts(other));
        let (want_state, got_state) = (managed(root, &want), managed(other, &got));
        for (what, want, got) in [
            ("fingerprint part", &want, &got),
            ("state", &want_state, &got_state),
        ] {
            let ids: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
            for id in ids {
                if want.get(id) != got.get(id) {
                    problems.push(format!(
                        "{} on {}: {what} of {id}\n  from the base root: {:?}\n  from a checkpoint:  {:?}",
                        key.0,
                        key.1,
                        want.get(id),
                        got.get(id)
                    ));
                }
            }
        }
    }
    cleanup();
    assert!(
        problems.is_empty(),
        "a converge from a checkpoint differs from one from the base root:\n{}",
        problems.join("\n")
    );
}

/// What a role manages, entry by entry: each path its file, template,
/// directory and link resources name (mode, owner, group, and content or
/// link target), the accounts, and dpkg's record of the packages.
fn managed(root: &Path, parts: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let named = parts.keys().filter_map(|id| {
        let (kind, rest) = id.split_once('[')?;
        let path = rest.strip_suffix(']')?;
        ["file", "template", "directory", "link", "cookbook_file"]
            .contains(&kind)
            .then(|| path.to_string())
    });
    let mut out = BTreeMap::new();
    let fixed = ["/etc/passwd", "/etc/group", "/var/lib/dpkg/status"];
    for path in named.chain(fixed.map(String::from)) {
        let full = root.join(path.trim_start_matches('/'));
        let state = match std::fs::symlink_metadata(&full) {
            Err(_) => "absent".to_string(),
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&full).unwrap().display())
                } else if m.is_file() {
                    hex::encode(sha2::Sha256::digest(std::fs::read(&full).unwrap()))
                } else {
                    "directory".to_string()
                };
                format!("{:o} {}:{} {what}", m.mode(), m.uid(), m.gid())
            }
        };
        out.insert(path, state);
    }
    out
}
