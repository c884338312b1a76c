//! Smoke tests of the integration-test harness itself (tests/support).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{
    Outcome, Repo, TestRoot, at, base_root, group_entry, mode, passwd_entry, tree_hash,
};

#[test]
fn base_root_has_the_tools_kiln_needs() {
    need!(DebianRoot);
    let base = base_root();
    for tool in [
        "usr/sbin/useradd",
        "usr/sbin/groupadd",
        "usr/sbin/update-rc.d",
        "usr/bin/pgrep",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
    ] {
        assert!(
            base.join(tool).is_file(),
            "{tool} missing in {}",
            base.display()
        );
    }
    let root = passwd_entry(&base, "root").expect("root in /etc/passwd");
    assert_eq!(root[2], "0");
    assert_eq!(
        group_entry(&base, "root").expect("root in /etc/group")[2],
        "0"
    );
    assert_eq!(passwd_entry(&base, "no-such-user"), None);
}

#[test]
fn test_roots_are_independent() {
    need!(DebianRoot);
    let a = TestRoot::new();
    let b = TestRoot::new();
    assert_ne!(a.path(), b.path());
    fs::write(at(&a, "/etc/only-in-a"), "a\n").unwrap();
    fs::remove_file(at(&a, "/etc/debian_version")).unwrap();

    assert_eq!(crate::support::read(&a, "/etc/only-in-a"), "a\n");
    assert!(!at(&b, "/etc/only-in-a").exists());
    assert!(!base_root().join("etc/only-in-a").exists());
    assert!(at(&b, "/etc/debian_version").is_file());
    assert!(base_root().join("etc/debian_version").is_file());

    let path = a.path().to_owned();
    drop(a);
    assert!(!path.exists(), "{} survived its TestRoot", path.display());
}

/// Bind-mounts `source` on `target`, as a test that chroots might do.
fn bind_mount(source: &Path, target: &Path) {
    let source = CString::new(source.as_os_str().as_bytes()).unwrap();
    let target = CString::new(target.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths; null type and data are allowed
    // for a bind mount.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
}

#[test]
fn dropping_a_test_root_unmounts_before_removing() {
    need!(DebianRoot);
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("canary"), "still here").unwrap();
    let root = TestRoot::new();
    bind_mount(host.path(), &at(&root, "/mnt"));
    assert!(at(&root, "/mnt/canary").is_file());

    let path = root.path().to_owned();
    drop(root);
    assert!(!path.exists(), "{} survived its TestRoot", path.display());
    assert_eq!(
        fs::read_to_string(host.path().join("canary")).unwrap(),
        "still here",
        "removing a test root reached into a mount inside it"
    );
}

#[test]
fn tree_hash_sees_modes_but_not_scratch_space() {
    need!(DebianRoot);
    let root = TestRoot::new();
    let before = tree_hash(&root);
    assert_eq!(tree_hash(&root), before, "tree_hash is not deterministic");

    fs::write(at(&root, "/tmp/scratch"), "ignored").unwrap();
    fs::create_dir_all(at(&root, "/var/lib/kiln")).unwrap();
    fs::write(at(&root, "/var/lib/kiln/last-run.json"), "{}").unwrap();
    assert_eq!(
        tree_hash(&root),
        before,
        "scratch and report paths are hashed"
    );

    let file = "/etc/debian_version";
    let original = mode(&root, file);
    let changed = original ^ 0o020;
    fs::set_permissions(at(&root, file), fs::Permissions::from_mode(changed)).unwrap();
    assert_eq!(mode(&root, file), changed);
    assert_ne!(
        tree_hash(&root),
        before,
        "a mode change left tree_hash unchanged"
    );
    assert_eq!(mode(base_root(), file), original, "the base root changed");

    fs::set_permissions(at(&root, file), fs::Permissions::from_mode(original)).unwrap();
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn repo_builder_writes_the_policy_layout() {
    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[motd]\"]\n")
        .recipe("motd", "default", "[[resource]]\nfile = \"/etc/motd\"\n")
        .template("motd", "motd.hbs", "{{node.fqdn}}\n")
        .cookbook_file("motd", "logo.bin", [0u8, 1, 2]);
    let dir = repo.path();
    assert_eq!(
        fs::read_to_string(dir.join("whitelist.toml")).unwrap(),
        "[packages]\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cookbooks/motd/metadata.toml")).unwrap(),
        "name = \"motd\"\nversion = \"0.1.0\"\n"
    );
    assert!(dir.join("roles/web.toml").is_file());
    assert!(dir.join("cookbooks/motd/recipes/default.toml").is_file());
    assert!(dir.join("cookbooks/motd/templates/motd.hbs").is_file());
    assert_eq!(
        fs::read(dir.join("cookbooks/motd/files/logo.bin")).unwrap(),
        [0, 1, 2]
    );

    // Explicit metadata is not overwritten by a later recipe.
    let repo = Repo::new()
        .metadata("app", "name = \"app\"\nversion = \"2.0.0\"\n")
        .recipe("app", "default", "")
        .whitelist("[packages]\nmemcached = \"1.6.18-1\"\n");
    assert!(
        fs::read_to_string(repo.path().join("cookbooks/app/metadata.toml"))
            .unwrap()
            .contains("2.0.0")
    );
    assert!(
        fs::read_to_string(repo.path().join("whitelist.toml"))
            .unwrap()
            .contains("memcached")
    );
}

#[test]
#[should_panic(expected = "--- stdout ---\nthe output\n")]
fn outcome_assertions_show_the_output() {
    Outcome {
        command: "kiln check".into(),
        status: 1,
        stdout: "the output\n".into(),
        stderr: String::new(),
    }
    .failure()
    .code(1)
    .stdout_contains("output")
    .success();
}
