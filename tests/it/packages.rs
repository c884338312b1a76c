//! Packages from the pinned whitelist, against a local apt repository that
//! the tests build, converging real Debian roots with real apt and dpkg.

use std::process::Command;
use std::time::Duration;

use crate::support::apt_repo::AptRepo;
use crate::support::*;

fn apt_repo() -> AptRepo {
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1")
        .package("kiln-world", "1.0-1")
        .package("kiln-world", "1.1-1")
}

fn policy(whitelist: &str) -> Repo {
    Repo::new()
        .role("web", "run_list = [\"recipe[pkgs]\"]")
        .role("canary", "run_list = [\"role[web]\"]")
        .recipe(
            "pkgs",
            "default",
            "[[resource]]\npackage = \"kiln-hello\"\n\n[[resource]]\npackage = \"kiln-world\"\n",
        )
        .whitelist(whitelist)
}

fn root_with_repo() -> TestRoot {
    let root = TestRoot::new();
    apt_repo().install_into(root.path());
    root
}

/// `(version, held)` as dpkg records it in the root.
fn installed(root: &TestRoot, name: &str) -> Option<(String, bool)> {
    let status = read(root, "/var/lib/dpkg/status");
    status.split("\n\n").find_map(|stanza| {
        let field = |f: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
        };
        if field("Package: ")? != name {
            return None;
        }
        let st = field("Status: ")?;
        st.ends_with(" installed")
            .then(|| (field("Version: ").unwrap(), st.starts_with("hold ")))
    })
}

fn converge(repo: &Repo, root: &TestRoot, fqdn: &str) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "web", "--fqdn", fqdn, "--detailed-exitcodes"])
        .run()
}

/// What `apt-get -s upgrade` inside the root would install.
fn upgrade_wants(root: &TestRoot) -> Vec<String> {
    let out = Command::new("chroot")
        .arg(root.path())
        .args(["apt-get", "-s", "upgrade"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Inst ")
                .map(|s| s.split(' ').next().unwrap().to_string())
        })
        .collect()
}

/// How many apt transactions the root's apt history records.
fn transactions(root: &TestRoot) -> usize {
    std::fs::read_to_string(at(root, "/var/log/apt/history.log"))
        .unwrap_or_default()
        .matches("Start-Date:")
        .count()
}

#[test]
fn installs_at_the_pin_holds_it_and_moves_with_it() {
    need!(DebianRoot);
    let root = root_with_repo();
    let pins = |hello: &str| {
        policy(&format!(
            "[packages]\nkiln-hello = \"{hello}\"\nkiln-world = \"1.0-1\"\n"
        ))
    };

    // A fresh root has no package index: kiln updates it, then installs
    // both packages in one transaction, and holds them.
    let before = transactions(&root);
    converge(&pins("1.0-1"), &root, "web02.example.com")
        .code(2)
        .stdout_contains("package[kiln-hello]: install 1.0-1")
        .stdout_contains("package[kiln-world]: install 1.0-1");
    assert_eq!(
        transactions(&root) - before,
        1,
        "one apt transaction for both"
    );
    assert_eq!(installed(&root, "kiln-hello"), Some(("1.0-1".into(), true)));
    assert_eq!(installed(&root, "kiln-world"), Some(("1.0-1".into(), true)));
    assert_eq!(read(&root, "/usr/share/kiln-hello/version"), "1.0-1\n");
    converge(&pins("1.0-1"), &root, "web02.example.com").code(0);
    assert!(
        upgrade_wants(&root).is_empty(),
        "apt-get upgrade would move a pin"
    );

    // Up, then back down: a rollback is a downgrade kiln performs.
    converge(&pins("2.0-1"), &root, "web02.example.com")
        .code(2)
        .stdout_contains("upgrade 1.0-1 -> 2.0-1");
    assert_eq!(installed(&root, "kiln-hello"), Some(("2.0-1".into(), true)));
    assert_eq!(read(&root, "/usr/share/kiln-hello/version"), "2.0-1\n");
    converge(&pins("2.0-1"), &root, "web02.example.com").code(0);

    converge(&pins("1.0-1"), &root, "web02.example.com")
        .code(2)
        .stdout_contains("downgrade 2.0-1 -> 1.0-1");
    assert_eq!(installed(&root, "kiln-hello"), Some(("1.0-1".into(), true)));
    converge(&pins("1.0-1"), &root, "web02.example.com").code(0);
    assert!(upgrade_wants(&root).is_empty());

    // Someone unholds by hand: kiln holds again.
    Command::new("chroot")
        .arg(root.path())
        .args(["apt-mark", "unhold", "kiln-world"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    converge(&pins("1.0-1"), &root, "web02.example.com")
        .code(2)
        .stdout_contains("package[kiln-world]: hold at 1.0-1");
    assert_eq!(installed(&root, "kiln-world"), Some(("1.0-1".into(), true)));
}

#[test]
fn a_rollout_reaches_matching_hosts_only() {
    need!(DebianRoot);
    let repo = policy(
        r#"
[packages]
kiln-hello = "1.0-1"
kiln-world = "1.0-1"

# newer hello on web01 and on canaries first
[rollouts.hello-2]
hosts = ["web01.*"]
roles = ["canary"]
packages = { kiln-hello = "2.0-1" }
"#,
    );
    let web01 = root_with_repo();
    let web02 = root_with_repo();
    converge(&repo, &web01, "web01.example.com").code(2);
    converge(&repo, &web02, "web02.example.com").code(2);
    assert_eq!(installed(&web01, "kiln-hello").unwrap().0, "2.0-1");
    assert_eq!(installed(&web02, "kiln-hello").unwrap().0, "1.0-1");
    converge(&repo, &web01, "web01.example.com").code(0);
    converge(&repo, &web02, "web02.example.com").code(0);

    // A role in the expanded run list matches too.
    let canary = root_with_repo();
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&canary)
        .args(["--role", "canary", "--fqdn", "db09.example.com"])
        .run()
        .success();
    assert_eq!(installed(&canary, "kiln-hello").unwrap().0, "2.0-1");
}

#[test]
fn a_package_off_the_whitelist_is_refused_before_anything_changes() {
    need!(DebianRoot);
    let repo = policy("[packages]\nkiln-hello = \"1.0-1\"\n");
    let root = root_with_repo();
    let before = tree_hash(&root);
    converge(&repo, &root, "web02.example.com")
        .code(1)
        .stderr_contains("package \"kiln-world\" is not on the whitelist")
        .stderr_contains("whitelist.toml");
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn an_unknown_version_fails_naming_the_offered_ones_and_changes_nothing_else() {
    need!(DebianRoot);
    let root = root_with_repo();
    let good = policy("[packages]\nkiln-hello = \"1.0-1\"\nkiln-world = \"1.0-1\"\n");
    converge(&good, &root, "web02.example.com").code(2);

    let bad = policy("[packages]\nkiln-hello = \"2.0-1\"\nkiln-world = \"9.9-1\"\n");
    let out = converge(&bad, &root, "web02.example.com")
        .code(4)
        .stdout_contains(
            "no source offers the pinned version of kiln-world 9.9-1 (offered: 1.1-1, 1.0-1)",
        );
    // Reported per package.
    assert!(
        out.stdout.contains("FAILED       package[kiln-hello]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("FAILED       package[kiln-world]"),
        "{}",
        out.stdout
    );
    // The transaction failed as a whole: hello did not move either, and both stay held.
    assert_eq!(installed(&root, "kiln-hello"), Some(("1.0-1".into(), true)));
    assert_eq!(installed(&root, "kiln-world"), Some(("1.0-1".into(), true)));
    // The next good run is clean.
    converge(&good, &root, "web02.example.com").code(0);
}

/// Installs kiln-hello and kiln-world 1.0-1 into `root`.
fn install_both(root: &TestRoot) {
    converge(
        &policy("[packages]\nkiln-hello = \"1.0-1\"\nkiln-world = \"1.0-1\"\n"),
        root,
        "h",
    )
    .code(2);
}

/// Converges a recipe that removes kiln-hello and purges kiln-world.
fn remove_both(root: &TestRoot) -> Outcome {
    let repo = Repo::new()
        .recipe(
            "gone",
            "default",
            "[[resource]]\npackage = \"kiln-hello\"\naction = \"remove\"\n\n[[resource]]\npackage = \"kiln-world\"\naction = \"purge\"\n",
        )
        .whitelist("[packages]\n");
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(root)
        .args(["--run-list", "recipe[gone]", "--detailed-exitcodes"])
        .run()
}

#[test]
fn remove_and_purge() {
    need!(DebianRoot);
    let root = root_with_repo();
    install_both(&root);
    let run = || remove_both(&root);
    run()
        .code(2)
        .stdout_contains("remove 1.0-1")
        .stdout_contains("purge");
    assert_eq!(installed(&root, "kiln-hello"), None);
    assert_eq!(installed(&root, "kiln-world"), None);
    run().code(0);
}

#[test]
fn a_users_tree_keeps_dpkgs_syncs() {
    need!(DebianRoot);
    let root = root_with_repo();
    let before = apt_command_lines(&root).len();
    install_both(&root);
    remove_both(&root).code(2);
    // An install, a remove and a purge, none with the throwaway targets' option.
    let lines = apt_command_lines(&root)[before..].to_vec();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" install ") && l.contains("--force-confold")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains(" remove ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(" purge ")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("unsafe-io")),
        "a --root converge ran dpkg without its syncs: {lines:?}"
    );
}

/// Runs `cmd` with sh inside `root`, as an operator would by hand.
fn sh_in(root: &TestRoot, cmd: &str) {
    let out = Command::new("chroot")
        .arg(root.path())
        .args(["sh", "-c", cmd])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn explain_shows_a_roles_pins_and_audit_spares_the_base_image() {
    need!(DebianRoot);
    let repo = policy(
        "[packages]\nkiln-hello = \"1.0-1\"\nkiln-world = \"1.0-1\"\nkiln-other = \"9.9-1\"\n",
    );
    // Only the pins the role's packages use; without a role, every pin.
    kiln()
        .args(["whitelist", "explain", "--role", "web"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("kiln-hello")
        .stdout_contains("kiln-world")
        .stdout_lacks("kiln-other");
    kiln()
        .args(["whitelist", "explain"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("kiln-other");

    // A package the image came with, before kiln first ran, is the image's;
    // one installed by hand after it is a finding.
    let root = TestRoot::new();
    let mut apt = apt_repo();
    apt.package_with("kiln-image", "0.1-1", "");
    apt.package_with("kiln-extra", "0.1-1", "");
    apt.install_into(root.path());
    sh_in(&root, "apt-get update -q && apt-get install -y kiln-image");
    // dpkg's log counts seconds.
    std::thread::sleep(Duration::from_millis(1100));
    converge(&repo, &root, "web02.example.com").code(2);
    kiln()
        .args(["whitelist", "audit"])
        .repo(&repo)
        .root(&root)
        .run()
        .success()
        .stdout_contains("2 managed package(s), 0 finding(s)");
    std::thread::sleep(Duration::from_millis(1100));
    sh_in(&root, "apt-get install -y kiln-extra");
    kiln()
        .args(["whitelist", "audit"])
        .repo(&repo)
        .root(&root)
        .run()
        .code(1)
        .stdout_contains("kiln-extra: installed by hand (0.1-1)")
        .stdout_lacks("kiln-image")
        .stdout_contains("1 finding(s)");
}

#[test]
fn explain_promote_and_audit() {
    need!(DebianRoot);
    let repo = policy(
        r#"# fleet pins
[packages]
kiln-hello = "1.0-1"   # stable
kiln-world = "1.0-1"

# trying world 1.1 on web01 first
[rollouts.world-1-1]
hosts = ["web01.*"]
packages = { kiln-world = "1.1-1" }
"#,
    );
    kiln()
        .args([
            "whitelist",
            "explain",
            "--fqdn",
            "web01.example.com",
            "--role",
            "web",
        ])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("kiln-world  1.1-1")
        .stdout_contains("rollouts.world-1-1");
    kiln()
        .args(["whitelist", "explain", "--fqdn", "web02.example.com"])
        .repo(&repo)
        .run()
        .success()
        .stdout_lacks("rollouts.world-1-1");

    // Audit a converged root after someone installs by hand.
    let root = root_with_repo();
    converge(&repo, &root, "web02.example.com").code(2);
    kiln()
        .args(["whitelist", "audit"])
        .repo(&repo)
        .root(&root)
        .run()
        .success()
        .stdout_contains("2 managed package(s), 0 finding(s)");
    let sh = |cmd: &str| {
        let out = Command::new("chroot")
            .arg(root.path())
            .args(["sh", "-c", cmd])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("apt-mark unhold kiln-hello && apt-get install -y --allow-downgrades kiln-hello=2.0-1");
    let mut extra = apt_repo();
    extra.package_with("kiln-extra", "0.1-1", "");
    extra.install_into(root.path());
    sh("apt-get update -q && apt-get install -y kiln-extra");
    kiln()
        .args(["whitelist", "audit"])
        .repo(&repo)
        .root(&root)
        .run()
        .code(1)
        .stdout_contains("kiln-hello: pinned 1.0-1 (packages), installed 2.0-1")
        .stdout_contains("kiln-extra: installed by hand (0.1-1)");
    // The next converge repairs the managed package.
    converge(&repo, &root, "web02.example.com")
        .code(2)
        .stdout_contains("downgrade 2.0-1 -> 1.0-1");

    // Promote: the rollout's version becomes the base pin, comments stay.
    kiln()
        .args(["whitelist", "promote", "world-1-1"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("kiln-world: 1.0-1 -> 1.1-1");
    let text = std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap();
    assert!(
        text.starts_with("# fleet pins\n[packages]\nkiln-hello = \"1.0-1\"   # stable\n"),
        "{text}"
    );
    assert!(text.contains("kiln-world = \"1.1-1\""), "{text}");
    assert!(!text.contains("rollouts"), "{text}");
    kiln().arg("check").repo(&repo).run().success();
    converge(&repo, &root, "web02.example.com")
        .code(2)
        .stdout_contains("upgrade 1.0-1 -> 1.1-1");
    kiln()
        .args(["whitelist", "promote", "world-1-1"])
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("no rollout \"world-1-1\"");
}

#[test]
fn check_validates_the_whitelist() {
    let repo = policy(
        "[packages]\nkiln-hello = \"1.0-1\"\nkiln-world = \"one point oh\"\n\n[rollouts.x]\npackages = { kiln-hello = \"2.0-1\" }\n",
    );
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("whitelist.toml:3: package \"kiln-world\": \"one point oh\" is not a valid Debian version")
        .stderr_contains("rollout \"x\" matches no host");
}

#[test]
fn apt_repository_adds_a_source_before_its_packages() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    apt_repo().write_into(root.path());
    let repo = Repo::new()
        .recipe(
            "local",
            "default",
            r#"
[[resource]]
apt_repository = "kiln-local"
uri = "file:/srv/kiln-apt"
suite = "./"
trusted = true

[[resource]]
package = "kiln-hello"
"#,
        )
        .whitelist("[packages]\nkiln-hello = \"2.0-1\"\n");
    let run = || {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--run-list", "recipe[local]", "--detailed-exitcodes"])
            .run()
    };
    run().code(2).stdout_contains("apt_repository[kiln-local]");
    assert_eq!(
        read(&root, "/etc/apt/sources.list.d/kiln-local.sources"),
        "# managed by kiln\nTypes: deb\nURIs: file:/srv/kiln-apt\nSuites: ./\nTrusted: yes\n"
    );
    assert_eq!(installed(&root, "kiln-hello"), Some(("2.0-1".into(), true)));
    run().code(0);
}

/// apt keeps its view of what is installed in a binary cache
/// (`pkgcache.bin`), trusted while dpkg's status file has the size and the
/// mtime (in whole seconds) it had when the cache was made. Something else
/// that changes a package to a version of the same length within that
/// second (a killed run's dpkg, a `dpkg -i`) leaves apt sure that the old
/// version is still there: the rollback to it was a silent no-op, and the
/// converge failed with "apt reported no error".
#[test]
fn a_rollback_happens_when_apt_s_cache_of_dpkg_s_status_is_stale() {
    need!(DebianRoot);
    let root = root_with_repo();
    let one = policy("[packages]\nkiln-hello = \"1.0-1\"\nkiln-world = \"1.0-1\"\n");
    converge(&one, &root, "web01").code(2);
    assert_eq!(installed(&root, "kiln-hello"), Some(("1.0-1".into(), true)));
    // apt's cache, made now from a status that has 1.0-1, not held.
    sh_in(
        &root,
        "apt-mark unhold kiln-hello >/dev/null && apt-cache policy kiln-hello >/dev/null",
    );
    let status = root.path().join("var/lib/dpkg/status");
    let before = std::fs::metadata(&status).unwrap();
    // 2.0-1 by dpkg alone; the status file then gets its old mtime back.
    sh_in(
        &root,
        "dpkg -i /srv/kiln-apt/kiln-hello_2.0-1_all.deb >/dev/null",
    );
    let f = std::fs::File::options().append(true).open(&status).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    let after = std::fs::metadata(&status).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "the same size, as apt compares it"
    );
    assert_eq!(
        installed(&root, "kiln-hello"),
        Some(("2.0-1".into(), false))
    );
    converge(&one, &root, "web01")
        .code(2)
        .stdout_contains("downgrade 2.0-1 -> 1.0-1");
    assert_eq!(installed(&root, "kiln-hello"), Some(("1.0-1".into(), true)));
}
