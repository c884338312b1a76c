//! A `--root` tree's own programs run only in a sandbox: a planted
//! `/bin/sh`, `apt-cache`, `systemctl` or `useradd` that tries to write on
//! the build host (by absolute path, through /proc, through its parent's
//! descriptors, or by a chroot escape) leaves a sentinel directory outside
//! the target exactly as it was, and never sees the caller's environment.
//! Commands that only read leave the target itself unchanged too.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::Sentinel;
use crate::support::*;

const TOKEN: &str = "KILN-CI-TOKEN-5e0a9c";

/// Where the hostile program leaves what it saw, inside the target.
const SEEN: &str = "/root/kiln-hostile-seen";

/// A program that tries every way out it knows, then dumps what it can
/// see of environments into the target, and fails.
fn hostile(sentinel: &Sentinel) -> String {
    let s = sentinel.dir().display();
    format!(
        r#"#!/bin/dash
S={s}
echo "hostile $0 ran" >&2
echo direct > $S/direct
for r in /proc/[0-9]*/root; do echo proc > "$r$S/via-proc"; done
for f in /proc/[0-9]*/fd/* /proc/[0-9]*/cwd; do
  echo fd > "$f/../../../../../../../../../../..$S/via-fd"
done
/usr/bin/perl -e 'chdir "/"; chroot "/usr" or exit; chdir ".." for 1..64; chroot "."; open(my $f, ">", "$ARGV[0]/escaped") and print $f "escaped\n"' "$S"
{{ env; tr '\0' '\n' < /proc/1/environ; tr '\0' '\n' < /proc/$PPID/environ; }} > {SEEN}
exit 1
"#
    )
}

/// Replaces `path` in the target (not following a link there) with `script`.
fn plant(root: &TestRoot, path: &str, script: &str) {
    let p = root.path().join(path.trim_start_matches('/'));
    let _ = fs::remove_file(&p);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, script).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `args` against `root` with a token in kiln's environment, and
/// asserts the sentinel unchanged and the token nowhere in the output.
fn run_held(root: &TestRoot, sentinel: &Sentinel, repo: &Repo, args: &[&str]) -> Outcome {
    let before = sentinel.hash();
    let out = kiln()
        .args(args)
        .repo(repo)
        .arg("--root")
        .arg(root.path())
        .env("KILN_TEST_TOKEN", TOKEN)
        .run();
    assert_eq!(
        sentinel.hash(),
        before,
        "a program planted in the target wrote on the host: {out:?}"
    );
    assert!(
        !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
        "{out:?}"
    );
    out
}

/// A read-only command: also leaves the target as it was.
fn read_only_held(root: &TestRoot, sentinel: &Sentinel, repo: &Repo, args: &[&str]) -> Outcome {
    let before = tree_hash(root);
    let out = run_held(root, sentinel, repo, args);
    assert_eq!(
        tree_hash(root),
        before,
        "a read-only command changed the target: {out:?}"
    );
    out
}

#[test]
fn a_planted_shell_in_a_why_run_guard_stays_in_the_sandbox() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::new().role("r", "run_list = [\"recipe[g]\"]").recipe(
        "g",
        "default",
        "[[resource]]\nfile = \"/etc/guarded\"\ncontent = \"x\"\nonly_if = \"test -d /run/systemd/system\"\n",
    );
    plant(&root, "/usr/bin/sh", &hostile(&sentinel));
    read_only_held(
        &root,
        &sentinel,
        &repo,
        &["converge", "--role", "r", "--why-run"],
    )
    // It ran, and failed.
    .stdout_contains("only_if false");
}

#[test]
fn a_planted_apt_under_a_why_run_package_stays_in_the_sandbox() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::one_package("r", "tzdata", "[packages]\ntzdata = \"0.0.1-0kiln1\"\n");
    for p in [
        "/usr/bin/apt-cache",
        "/usr/bin/apt-get",
        "/usr/bin/dpkg-query",
    ] {
        plant(&root, p, &hostile(&sentinel));
    }
    // An index, so that the plan asks apt for the pin's siblings.
    fs::write(at(&root, "/var/lib/apt/lists/kiln-probe_Packages"), "").unwrap();
    read_only_held(
        &root,
        &sentinel,
        &repo,
        &["converge", "--role", "r", "--why-run"],
    )
    // It ran, in a tree it could not write.
    .stdout_contains("kiln-hostile-seen: Read-only file system");
}

#[test]
fn a_planted_apt_cache_under_whitelist_outdated_stays_in_the_sandbox() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::one_package("r", "tzdata", "[packages]\ntzdata = \"0.0.1-0kiln1\"\n");
    plant(&root, "/usr/bin/apt-cache", &hostile(&sentinel));
    fs::write(at(&root, "/var/lib/apt/lists/kiln-probe_Packages"), "").unwrap();
    read_only_held(
        &root,
        &sentinel,
        &repo,
        &["whitelist", "outdated", "--role", "r"],
    )
    .failure()
    .stderr_contains("kiln-hostile-seen: Read-only file system");
}

#[test]
fn a_planted_apt_cache_under_whitelist_explain_siblings_stays_in_the_sandbox() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::one_package("r", "tzdata", "[packages]\ntzdata = \"0.0.1-0kiln1\"\n");
    plant(&root, "/usr/bin/apt-cache", &hostile(&sentinel));
    read_only_held(
        &root,
        &sentinel,
        &repo,
        &["whitelist", "explain", "--role", "r", "--siblings"],
    );
}

#[test]
fn a_planted_systemctl_in_a_why_run_service_check_stays_in_the_sandbox() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::new().role("r", "run_list = [\"recipe[s]\"]").recipe(
        "s",
        "default",
        "[[resource]]\nservice = \"kiln-probe\"\naction = [\"enable\"]\n",
    );
    let unit = at(&root, "/usr/lib/systemd/system/kiln-probe.service");
    fs::write(
        unit,
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    plant(&root, "/usr/bin/systemctl", &hostile(&sentinel));
    read_only_held(
        &root,
        &sentinel,
        &repo,
        &["converge", "--role", "r", "--why-run"],
    )
    .stdout_contains("would update service[kiln-probe]: enable");
}

#[test]
fn a_planted_useradd_in_a_converge_stays_in_the_sandbox_without_the_callers_environment() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::new().role("r", "run_list = [\"recipe[u]\"]").recipe(
        "u",
        "default",
        "[[resource]]\nuser = \"kilnhostile\"\n",
    );
    plant(&root, "/usr/sbin/useradd", &hostile(&sentinel));
    let out = run_held(&root, &sentinel, &repo, &["converge", "--role", "r"]);
    // It ran, in the target, and saw none of kiln's caller's environment.
    let seen = fs::read_to_string(at(&root, SEEN))
        .unwrap_or_else(|e| panic!("the planted useradd left nothing ({e}): {out:?}"));
    assert!(
        !seen.contains(TOKEN),
        "the planted program saw the caller's token:\n{seen}"
    );
    assert!(seen.contains("PATH="), "{seen}");
}

#[test]
fn an_execute_in_a_converge_gets_the_policys_environment_and_nothing_of_the_callers() {
    need!(DebianRoot);
    let (root, sentinel) = (TestRoot::new(), Sentinel::new());
    let repo = Repo::new().role("r", "run_list = [\"recipe[e]\"]").recipe(
        "e",
        "default",
        "[[resource]]\nexecute = \"probe\"\ncommand = \"/usr/local/bin/kiln-probe\"\n\
         environment = { KILN_POLICY_VAR = \"from-policy\" }\n",
    );
    plant(&root, "/usr/local/bin/kiln-probe", &hostile(&sentinel));
    let out = run_held(&root, &sentinel, &repo, &["converge", "--role", "r"]);
    let seen = fs::read_to_string(at(&root, SEEN))
        .unwrap_or_else(|e| panic!("the execute left nothing ({e}): {out:?}"));
    assert!(
        !seen.contains(TOKEN),
        "the execute saw the caller's token:\n{seen}"
    );
    assert!(seen.contains("KILN_POLICY_VAR=from-policy"), "{seen}");
}
