//! The `kiln test` sandbox holds a role in: an `execute` that tries the
//! double-chroot escape, a write to a host path, reading a host-only file
//! and making a block device gets nowhere, and the host is unchanged.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;

const ESCAPE: &str = include_str!("fixtures/escape/escape.pl");

/// What the execute does: the perl escape, a block device, the kernel's
/// global knobs. Results go to a file in the target the verify checks read.
const ATTEMPTS: &str = r#"
[[resource]]
file = "/usr/local/bin/escape.pl"
source = "escape.pl"
mode = "0755"

[[resource]]
execute = "try to leave the target"
creates = "/var/tmp/escape.txt"
command = """
out=/var/tmp/escape.new
perl /usr/local/bin/escape.pl '{{escape.host}}' > $out 2>&1
if mknod /var/tmp/blockdev b 8 0 2>/var/tmp/mknod.err; then
  echo 'mknod: made' >> $out
else
  echo "mknod: failed $(cat /var/tmp/mknod.err)" >> $out
fi
if test -w /proc/sys/kernel/core_pattern; then
  echo 'core_pattern: writable' >> $out
else
  echo 'core_pattern: read-only' >> $out
fi
mv $out /var/tmp/escape.txt
"""

[[verify]]
command = "grep -q '^escape-write: failed' /var/tmp/escape.txt"

[[verify]]
command = "grep -q '^escape-read: failed' /var/tmp/escape.txt"

[[verify]]
command = "grep -q '^direct-read: failed' /var/tmp/escape.txt"

[[verify]]
command = "! grep -q '{{escape.secret}}' /var/tmp/escape.txt"

[[verify]]
command = "grep -q '^mknod: failed' /var/tmp/escape.txt && ! test -e /var/tmp/blockdev"

[[verify]]
command = "grep -q '^core_pattern: read-only' /var/tmp/escape.txt"
"#;

#[test]
fn a_role_cannot_leave_the_test_sandbox() {
    need!(Sandbox);
    // The host directory the role aims at, with a file only the host has.
    let host = tempfile::tempdir().unwrap();
    let secret = format!(
        "host-only-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::write(host.path().join("sentinel"), &secret).unwrap();
    let before = tree_hash(host.path());
    let repo = Repo::new()
        .cookbook_file("escape", "escape.pl", ESCAPE)
        .recipe("escape", "default", ATTEMPTS)
        .attributes(
            "escape",
            &format!(
                "[escape]\nhost = \"{}\"\nsecret = \"{secret}\"\n",
                host.path().display()
            ),
        )
        .role("escape", "run_list = [\"recipe[escape]\"]");
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln()
        .args(["test", "escape"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .run();
    let log = std::fs::read_to_string(tmp.path().join("kiln-test/escape-bookworm.log"))
        .unwrap_or_default();
    out.success()
        .stdout_contains("verified 6/6")
        .stdout_contains("1/1 role test(s) passed");
    // The host saw nothing: no new file, the sentinel as it was.
    assert!(!host.path().join("escaped").exists(), "{log}");
    assert!(!host.path().join("direct").exists(), "{log}");
    assert_eq!(tree_hash(host.path()), before, "{log}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("sentinel")).unwrap(),
        secret
    );
}

#[test]
fn a_role_that_outlives_its_timeout_is_torn_down_whole() {
    need!(Sandbox);
    // A number no other test sleeps for, to find the process by.
    let repo = Repo::new()
        .recipe(
            "hang",
            "default",
            "[[resource]]\nexecute = \"hang\"\ncommand = \"sleep 987654 & sleep 987654\"\n",
        )
        .role("hang", "run_list = [\"recipe[hang]\"]");
    let tmp = tempfile::tempdir().unwrap();
    let cache = own_kiln_cache();
    kiln()
        .args(["test", "hang", "--timeout", "3"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache.path())
        .run()
        .code(1)
        .stdout_contains("role hang on bookworm: timed out after 3 s");
    // Killing the sandbox's outer process ends the namespaces and all in them.
    let started = std::time::Instant::now();
    let left = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 987654"])
            .status()
            .unwrap()
            .success()
    };
    while left() && started.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!left(), "a process of the timed-out role is still running");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for dir in [tmp.path(), cache.path()] {
        assert!(
            !mounts.contains(&dir.display().to_string()),
            "the target is still mounted"
        );
    }
}

/// Every route of the inherited kind, from inside: each open descriptor,
/// working directory and root of every process the role can see, walked
/// up by `..` towards a host-only file, and every environment it can read,
/// searched for a token that only the caller's environment holds.
const LOOK: &str = r#"
[[resource]]
execute = "look for the host"
creates = "/var/tmp/look.txt"
command = """
out=/var/tmp/look.new
: > $out
for f in /proc/[0-9]*/fd/* /proc/[0-9]*/cwd /proc/[0-9]*/root; do
  up="$f"
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do
    if test -e "$up{{look.host}}/sentinel"; then echo "host reached through $f" >> $out; break; fi
    up="$up/.."
  done
done
for e in /proc/[0-9]*/environ; do
  if tr '\\0' '\\n' < "$e" 2>/dev/null | grep -q '^KILN_TEST_CALLER_TOKEN='; then
    echo "the caller's environment in $e" >> $out
  fi
done
mv $out /var/tmp/look.txt
"""

[[verify]]
command = "! test -s /var/tmp/look.txt"
"#;

#[test]
fn nothing_of_the_host_is_inherited_by_a_role() {
    need!(Sandbox);
    let host = tempfile::Builder::new()
        .prefix("kiln-inherited-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(host.path().join("sentinel"), "host only").unwrap();
    let repo = Repo::new()
        .recipe("look", "default", LOOK)
        .attributes(
            "look",
            &format!("[look]\nhost = \"{}\"\n", host.path().display()),
        )
        .role("look", "run_list = [\"recipe[look]\"]");
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln()
        .args(["test", "look", "--keep"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .env("KILN_TEST_CALLER_TOKEN", "ci-secret-token")
        .run();
    let kept = kept_root(&out.stdout);
    let found = kept
        .as_ref()
        .and_then(|k| std::fs::read_to_string(k.join("var/tmp/look.txt")).ok())
        .unwrap_or_default();
    if let Some(k) = &kept {
        kiln::platform::rootfs::remove_tree(k.parent().unwrap());
    }
    assert!(found.is_empty(), "the role reached the host:\n{found}");
    out.success()
        .stdout_contains("verified 1/1")
        .stdout_contains("1/1 role test(s) passed");
}
