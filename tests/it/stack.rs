//! The production stack of this repository (roles/, cookbooks/,
//! whitelist.toml) converged into fresh Debian roots with the real
//! packages from the Debian archive: each role twice, and the second run
//! must change nothing. Needs the network to deb.debian.org (as CI has);
//! services are not started in a `--root` target, so what needs a running
//! MariaDB is skipped by its guards here (`kiln test` covers that part).

use std::path::{Path, PathBuf};

use crate::support::*;

fn policy_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Converges `role` twice; returns the first run's output. A fresh root is
/// nobody's recipient of the production secrets, so the database password
/// is given as a node attribute (which wins over the roles' secret).
fn converge_twice(root: &TestRoot, role: &str, extra: &[&str]) -> Outcome {
    let node = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        node.path(),
        "[attributes.mariadb.app]\npassword = \"stack-test-password\"\n",
    )
    .unwrap();
    let run = || {
        kiln()
            .arg("converge")
            .arg("--repo")
            .arg(policy_repo())
            .root(root)
            .args(["--role", role, "--fqdn", &format!("{role}01.example.com")])
            .arg("--node")
            .arg(node.path())
            .args(extra)
            // The repository's pins age: the stack is about the cookbooks.
            .arg("--substitute-vanished-pins")
            .arg("--detailed-exitcodes")
            .run()
    };
    let first = run().code(2).stdout_contains(" 0 failed");
    let second = run().code(0);
    assert!(
        second
            .stdout
            .lines()
            .any(|l| l.starts_with("kiln: 0/") && l.contains("resources updated")),
        "the second converge of role {role} changed something:\n{}",
        second.stdout
    );
    first
}

fn is_link_to(root: &Path, path: &str, to: &str) -> bool {
    std::fs::read_link(at(root, path)).is_ok_and(|t| t == Path::new(to))
}

/// No process runs inside `root` once a converge is over: in a `--root`
/// target nothing is started (policy-rc.d keeps maintainer scripts from it).
/// Looks at each process's root directory rather than at names, since other
/// work on the machine may run the same daemons in their own sandboxes.
fn nothing_runs_in(root: &TestRoot) {
    let ours = root.path().canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(proc_root) = std::fs::read_link(entry.path().join("root")) else {
            continue;
        };
        if proc_root.starts_with(&ours) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "processes run inside the --root target: {found:?}"
    );
}

#[test]
fn the_policy_repository_checks_clean() {
    kiln()
        .arg("check")
        .arg("--repo")
        .arg(policy_repo())
        .run()
        .success()
        .stdout_contains("ok");
}

#[test]
fn role_base_converges_and_then_changes_nothing() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    converge_twice(&root, "base", &[]);
    assert_eq!(mode(root.path(), "/etc/sudoers.d/sysadmin"), 0o440);
    assert!(read(root.path(), "/etc/motd").contains("base01.example.com"));
    assert!(read(root.path(), "/etc/motd").contains("roles: base"));
    assert!(passwd_entry(root.path(), "ops").is_some());
}

#[test]
fn role_web_converges_and_then_changes_nothing() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    converge_twice(&root, "web", &[]);
    let r = root.path();
    assert!(is_link_to(
        r,
        "/etc/apache2/mods-enabled/mpm_prefork.load",
        "../mods-available/mpm_prefork.load"
    ));
    assert!(is_link_to(
        r,
        "/etc/apache2/mods-enabled/headers.load",
        "../mods-available/headers.load"
    ));
    assert!(
        at(r, "/etc/apache2/mods-enabled/mpm_event.load")
            .symlink_metadata()
            .is_err()
    );
    assert!(
        at(r, "/etc/apache2/sites-enabled/000-default.conf")
            .symlink_metadata()
            .is_err()
    );
    assert!(
        read(r, "/etc/apache2/mods-available/mpm_prefork.conf").contains("MaxRequestWorkers\t 80")
    );
    assert!(read(r, "/etc/apache2/conf-enabled/kiln-security.conf").contains("ServerTokens Prod"));
    assert!(read(r, "/etc/php/8.2/apache2/conf.d/90-kiln.ini").contains("memory_limit = 256M"));
    assert_eq!(mode(r, "/etc/kiln-shop/config.php"), 0o640);
    nothing_runs_in(&root);
}

#[test]
fn role_db_converges_and_then_changes_nothing() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    let first = converge_twice(&root, "db", &[]);
    // No server runs in a --root target: the database steps wait for one.
    first
        .stdout_contains("mariadb_database[shop]: create skipped: --root target")
        .stdout_contains("mariadb_seed[shop.listings]: load schema.sql skipped: --root target");
    assert!(read(root.path(), "/etc/mysql/mariadb.conf.d/60-kiln.cnf").contains("0.0.0.0"));
    nothing_runs_in(&root);
}

#[test]
fn role_cache_converges_and_then_changes_nothing() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    converge_twice(&root, "cache", &[]);
    assert!(read(root.path(), "/etc/memcached.conf").contains("-m 1024"));
    assert!(read(root.path(), "/etc/redis/redis.conf").contains("maxmemory 512mb"));
    nothing_runs_in(&root);
}

#[test]
fn role_devvm_converges_and_then_changes_nothing() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    converge_twice(&root, "devvm", &["--size", "medium"]);
    let r = root.path();
    assert!(
        read(r, "/etc/mysql/mariadb.conf.d/60-kiln.cnf").contains("innodb_buffer_pool_size = 512M")
    );
    assert!(read(r, "/etc/memcached.conf").contains("-m 128"));
    assert!(
        read(r, "/etc/apache2/mods-available/mpm_prefork.conf").contains("MaxRequestWorkers\t 25")
    );
    assert!(read(r, "/var/www/shop/index.php").contains("served from"));
    assert!(read(r, "/etc/motd").contains("roles: base devvm"));
    nothing_runs_in(&root);
}
