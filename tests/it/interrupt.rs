//! Runs that are killed or that overlap: managed files are old or new,
//! never partial; a second run waits for the first, then gives up clearly.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const BIG: usize = 48 << 20;

fn repo() -> Repo {
    Repo::new()
        .cookbook_file("big", "a.bin", vec![b'a'; BIG])
        .cookbook_file("big", "b.bin", vec![b'b'; BIG])
        .recipe(
            "big",
            "default",
            r#"
[[resource]]
file = "/srv/small-1"
content = "{{big.which}}{{big.which}}{{big.which}}\n"

[[resource]]
file = "/srv/large.bin"
source = "{{big.which}}.bin"

[[resource]]
file = "/srv/small-2"
content = "{{big.which}}\n"
mode = "0600"
"#,
        )
        .file("a.toml", "[attributes.big]\nwhich = \"a\"\n")
        .file("b.toml", "[attributes.big]\nwhich = \"b\"\n")
}

/// Old or new content, never a mix or a truncation.
fn whole(root: &TestRoot) {
    let large = at(root, "/srv/large.bin");
    if let Ok(bytes) = std::fs::read(&large) {
        assert_eq!(bytes.len(), BIG, "large file truncated");
        let first = bytes[0];
        assert!(first == b'a' || first == b'b');
        assert!(
            bytes.iter().all(|b| *b == first),
            "large file mixes old and new"
        );
    }
    if let Ok(s) = std::fs::read_to_string(at(root, "/srv/small-1")) {
        assert!(s == "aaa\n" || s == "bbb\n", "small-1 is {s:?}");
    }
    if let Ok(s) = std::fs::read_to_string(at(root, "/srv/small-2")) {
        assert!(s == "a\n" || s == "b\n", "small-2 is {s:?}");
    }
}

#[test]
fn sigkill_at_any_moment_leaves_old_or_new_files() {
    need!(DebianRoot);
    let repo = repo();
    let root = TestRoot::new();
    let mut killed_mid_run = 0;
    for i in 0..16u64 {
        let node = repo
            .path()
            .join(if i % 2 == 0 { "a.toml" } else { "b.toml" });
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("converge")
            .arg("--repo")
            .arg(repo.path())
            .arg("--root")
            .arg(root.path())
            .arg("--run-list")
            .arg("recipe[big]")
            .arg("--node")
            .arg(&node)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + i * 17));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        whole(&root);
    }
    assert!(killed_mid_run > 0, "no run was killed while running");

    // The next run repairs: clean, then idempotent, with no temporary files left.
    let node = repo.path().join("a.toml");
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--run-list", "recipe[big]", "--node"])
        .arg(&node)
        .run()
        .success();
    whole(&root);
    assert_eq!(read(&root, "/srv/small-2"), "a\n");
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args([
            "--run-list",
            "recipe[big]",
            "--detailed-exitcodes",
            "--node",
        ])
        .arg(&node)
        .run()
        .code(0)
        .stdout_contains("0/3 resources updated");
    let leftovers: Vec<_> = std::fs::read_dir(at(&root, "/srv"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kiln"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_second_run_waits_for_the_lock_then_names_the_holder() {
    need!(DebianRoot);
    let repo = Repo::new().recipe(
        "slow",
        "default",
        "[[resource]]\nexecute = \"wait\"\ncommand = \"touch /tmp/kiln-holding && sleep 60\"\n",
    );
    let root = TestRoot::new();
    let mut first = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["converge", "--run-list", "recipe[slow]", "--repo"])
        .arg(repo.path())
        .arg("--root")
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // The lock is taken before any resource runs: once the command has
    // left its marker, the first run holds it.
    let marker = at(&root, "/tmp/kiln-holding");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the first converge ended ({status}) before holding the lock");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first converge did not start its command in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--run-list", "recipe[slow]"])
        .env("KILN_LOCK_TIMEOUT", "1")
        .run();
    // Stop the holder and the command it runs.
    // SAFETY: signals the process group this test created.
    unsafe { libc::kill(-(first.id() as i32), libc::SIGKILL) };
    first.wait().unwrap();
    second
        .code(1)
        .stderr_contains("another kiln run holds the lock")
        .stderr_contains(&format!("pid {}", first.id()));
}
