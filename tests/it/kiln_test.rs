//! `kiln test` end to end: a role whose service really starts inside the
//! throwaway target's namespaces and answers HTTP there, on each Debian
//! release the whitelist pins; bad cookbooks fail with the role, the
//! resource and the reason, in the output and in JUnit.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const HTTPD: &str = include_str!("fixtures/tiny/tiny-httpd");
const INIT: &str = include_str!("fixtures/tiny/tiny-httpd.init");

/// The start of a role's line in `kiln test`'s output.
fn line(role: &str, release: &str) -> String {
    format!("{role:<10} {release:<9}  ")
}

/// A port nothing on the host listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A cookbook with a tiny perl HTTP server run by a SysV init script.
fn tiny(repo: Repo) -> Repo {
    tiny_on(repo, 8080)
}

fn tiny_on(repo: Repo, port: u16) -> Repo {
    repo.cookbook_file("tiny", "tiny-httpd", HTTPD)
        .template("tiny", "tiny-httpd.init.hbs", INIT)
        .recipe(
            "tiny",
            "default",
            r#"
[[resource]]
file = "/usr/local/bin/tiny-httpd"
source = "tiny-httpd"
mode = "0755"
notifies = ["restart service[tiny-httpd]"]

[[resource]]
template = "/etc/init.d/tiny-httpd"
source = "tiny-httpd.init.hbs"
mode = "0755"
notifies = ["restart service[tiny-httpd]"]

[[resource]]
service = "tiny-httpd"
action = ["enable", "start"]

[[verify]]
http = "http://127.0.0.1:{{tiny.port}}/"
contains = "hello from kiln"

[[verify]]
port = "{{tiny.port}}"

[[verify]]
service = "tiny-httpd"

[[verify]]
file = "/etc/init.d/tiny-httpd"
contains = "start-stop-daemon"
"#,
        )
        .attributes("tiny", &format!("[tiny]\nport = {port}\n"))
        .role("web", "run_list = [\"recipe[tiny]\"]")
}

/// The leak check looks at every process on the host, so these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn no_leaks() {
    let ps = Command::new("pgrep")
        .args(["-f", "tiny-httpd"])
        .output()
        .unwrap();
    assert!(
        !ps.status.success(),
        "a server started by kiln test is still running on the host: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn a_role_converges_twice_and_its_service_answers_inside_the_target() {
    need!(Sandbox);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    // Both releases pinned (nothing to install): the role runs on each.
    let repo = tiny_on(Repo::new(), port).whitelist("[releases.bookworm]\n[releases.trixie]\n");
    let junit = repo.path().join("junit.xml");
    // A temporary directory of its own: other tests run `kiln test` on a
    // role named web at the same time.
    let tmp = tempfile::tempdir().unwrap();
    let cache = own_kiln_cache();
    kiln()
        .arg("test")
        .repo(&repo)
        .arg("--junit")
        .arg(&junit)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache.path())
        .run()
        .success()
        .stdout_contains(&format!(
            "{}converged (3/3 updated)  idempotent",
            line("web", "bookworm")
        ))
        .stdout_contains(&format!(
            "{}converged (3/3 updated)  idempotent",
            line("web", "trixie")
        ))
        .stdout_contains("verified 4/4")
        .stdout_contains("2/2 role test(s) passed (1 role(s) on bookworm, trixie)");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for release in ["bookworm", "trixie"] {
        assert!(
            xml.contains(&format!(
                "<testsuite name=\"role[web] on {release}\" tests=\"6\" failures=\"0\""
            )),
            "{xml}"
        );
        assert!(
            xml.contains(&format!(
                "classname=\"kiln.{release}.role.web\" name=\"web on {release}: verify http http://127.0.0.1:{port}/\"/>"
            )),
            "{xml}"
        );
    }
    no_leaks();
    nothing_mounted_below(&[tmp.path(), cache.path()]);
    // The service listened inside the target's own network namespace only.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // Again: from the checkpoint kept at the end of the first converge, a
    // reboot of the target there. The file and the init script are in
    // place; the service starts again and answers.
    kiln()
        .arg("test")
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache.path())
        .run()
        .success()
        .stdout_contains(&format!(
            "{}converged (1/3 updated)  idempotent",
            line("web", "bookworm")
        ))
        .stdout_contains("verified 4/4  ")
        .stdout_contains(" s  from checkpoint 3/3 (service[tiny-httpd])\n");
    no_leaks();
    // --no-cache: from the base root, and nothing more kept.
    let store = cache.path().join("kiln/checkpoints");
    let kept = || std::fs::read_dir(&store).unwrap().count();
    let before = kept();
    kiln()
        .args(["test", "--no-cache", "--release", "bookworm"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache.path())
        .run()
        .success()
        .stdout_contains(&format!(
            "{}converged (3/3 updated)  idempotent",
            line("web", "bookworm")
        ))
        .stdout_contains(" s  from the base root\n");
    assert_eq!(kept(), before);
    no_leaks();
    nothing_mounted_below(&[tmp.path(), cache.path()]);
}

/// No overlay of a test target is left mounted below any of `dirs`.
fn nothing_mounted_below(dirs: &[&Path]) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for dir in dirs {
        assert!(
            !mounts.contains(&dir.display().to_string()),
            "an overlay is still mounted below {}:\n{mounts}",
            dir.display()
        );
    }
}

#[test]
fn a_resource_that_changes_every_run_fails_the_role_by_name() {
    need!(Sandbox);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let repo = tiny(Repo::new())
        .recipe(
            "flappy",
            "default",
            "[[resource]]\nexecute = \"always\"\ncommand = \"date > /tmp/stamp\"\n",
        )
        .role("flappy", "run_list = [\"recipe[flappy]\"]");
    let junit = repo.path().join("junit.xml");
    kiln()
        .args(["test", "flappy", "web", "--junit"])
        .arg(&junit)
        .repo(&repo)
        .run()
        .code(1)
        .stdout_contains(&format!("{}converged", line("flappy", "bookworm")))
        .stdout_contains("NOT IDEMPOTENT (1 updated)")
        .stdout_contains("role flappy: not idempotent, the second converge updated 1 resource(s): execute[always]")
        .stdout_contains("1/2 role test(s) passed");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"role[flappy] on bookworm\" tests=\"2\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"role flappy: not idempotent"),
        "{xml}"
    );
    assert!(
        xml.contains("<testsuite name=\"role[web] on bookworm\" tests=\"6\" failures=\"0\""),
        "{xml}"
    );
    no_leaks();
}

#[test]
fn a_service_that_fails_to_start_and_a_template_error_are_reported() {
    need!(Sandbox);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let repo = Repo::new()
        .cookbook_file(
            "broken",
            "broken.init",
            INIT.replace("--exec /usr/bin/perl", "--exec /usr/bin/false"),
        )
        .recipe(
            "broken",
            "default",
            r#"
[[resource]]
file = "/etc/init.d/broken"
source = "broken.init"
mode = "0755"

[[resource]]
service = "broken"
action = ["enable", "start"]

[[verify]]
port = 8080
timeout = 1
"#,
        )
        .role("broken", "run_list = [\"recipe[broken]\"]")
        .template("tpl", "t.hbs", "{{missing.attribute}}\n")
        .recipe(
            "tpl",
            "default",
            "[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n",
        )
        .role("tpl", "run_list = [\"recipe[tpl]\"]");
    let junit = repo.path().join("junit.xml");
    let out = kiln()
        .args(["test", "broken", "tpl", "--junit"])
        .arg(&junit)
        .repo(&repo)
        .run()
        .code(1)
        .stdout_contains(&format!("{}NOT CONVERGED", line("broken", "bookworm")))
        .stdout_contains("role broken: converge failed: service[broken]: service broken: start reported success, but the service is not running")
        .stdout_contains(&format!("{}NOT CONVERGED", line("tpl", "bookworm")))
        .stdout_contains("\"missing.attribute\" is not defined");
    assert!(out.stdout.contains("0/2 role test(s) passed"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("role broken: converge failed: service[broken]"),
        "{xml}"
    );
    assert!(xml.contains("missing.attribute"), "{xml}");
}

#[test]
fn the_throwaway_target_runs_dpkg_without_its_syncs() {
    need!(Sandbox, DebianRoot, Network);
    // One package, pinned at what bookworm offers today.
    let (version, _) = archive_versions(TestRoot::on("bookworm"), "sudo")
        .into_iter()
        .next()
        .expect("bookworm offers sudo");
    let repo = Repo::one_package(
        "pkg",
        "sudo",
        &format!("[packages]\nsudo = \"{version}\"\n"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln()
        .args(["test", "pkg", "--release", "bookworm", "--keep"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .run();
    let kept = kept_root(&out.stdout);
    let lines = kept.as_ref().map(apt_command_lines).unwrap_or_default();
    if let Some(k) = &kept {
        kiln::platform::rootfs::remove_tree(k.parent().unwrap());
    }
    out.success().stdout_contains("1/1 role test(s) passed");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" install ") && l.contains("Dpkg::Options::=--force-unsafe-io")),
        "kiln test installed without --force-unsafe-io: {lines:?}"
    );
}

#[test]
fn roles_tested_at_once_print_whole_blocks_and_report_in_release_then_role_order() {
    need!(Sandbox);
    // `slow` takes a while, so `quick` (started beside it) finishes first:
    // completion order is not the order of the report.
    let repo = Repo::new()
        .recipe(
            "slow",
            "default",
            r#"
[[resource]]
execute = "slow"
command = "sleep 2 && mkdir -p /var/lib/slow"
creates = "/var/lib/slow"

[[resource]]
file = "/etc/one"
content = "one\n"
"#,
        )
        .role("slow", "run_list = [\"recipe[slow]\"]")
        .recipe(
            "quick",
            "default",
            "[[resource]]\ndirectory = \"/srv/two\"\nmode = \"0750\"\n",
        )
        .role("quick", "run_list = [\"recipe[quick]\"]")
        .whitelist("[releases.bookworm]\n[releases.trixie]\n");
    // The roles in the order named, on each release.
    let pairs = [
        ("bookworm", "slow"),
        ("bookworm", "quick"),
        ("trixie", "slow"),
        ("trixie", "quick"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let junit = repo.path().join("junit.xml");
    let out = kiln()
        .args(["test", "slow", "quick", "--jobs", "2", "--keep", "--junit"])
        .arg(&junit)
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .run();
    let stdout = out.stdout.clone();
    let lines: Vec<&str> = stdout.lines().collect();
    // Each role's block: its line, then `kept: ` with its own root.
    let mut kept = Vec::new();
    for w in lines.windows(2) {
        if let Some(k) = w[1].trim().strip_prefix("kept: ") {
            kept.push((w[0].to_string(), PathBuf::from(k)));
        }
    }
    let files: Vec<(String, bool)> = kept
        .iter()
        .map(|(_, k)| {
            (
                std::fs::read_to_string(k.join("etc/one")).unwrap_or_default(),
                k.join("srv/two").is_dir(),
            )
        })
        .collect();
    for (_, k) in &kept {
        kiln::platform::rootfs::remove_tree(k.parent().unwrap());
    }
    let out = out
        .success()
        .stdout_contains("4/4 role test(s) passed (2 role(s) on bookworm, trixie)");
    // Four blocks of two lines and the summary, nothing between them.
    assert_eq!(lines.len(), 9, "{}", out.stdout);
    assert_eq!(kept.len(), 4, "{}", out.stdout);
    for (release, role) in pairs {
        let i = kept
            .iter()
            .position(|(l, _)| l.starts_with(&line(role, release)))
            .unwrap_or_else(|| panic!("no whole block for {role} on {release}:\n{}", out.stdout));
        let (l, k) = &kept[i];
        assert!(l.contains("converged") && l.contains("verified 0/0"), "{l}");
        let dir = k.parent().unwrap().file_name().unwrap().to_string_lossy();
        assert!(
            dir.starts_with(&format!("{role}-{release}-")),
            "{l} kept {k:?}"
        );
        assert_eq!(
            files[i],
            (
                String::from(if role == "slow" { "one\n" } else { "" }),
                role == "quick"
            )
        );
    }
    // JUnit and JSON list release, then role, whatever finished first.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let at: Vec<usize> = pairs
        .iter()
        .map(|(release, role)| {
            xml.find(&format!("<testsuite name=\"role[{role}] on {release}\""))
                .unwrap_or_else(|| panic!("{role} on {release} missing:\n{xml}"))
        })
        .collect();
    assert!(at.is_sorted(), "{xml}");
    let out = kiln()
        .args(["test", "slow", "quick", "--jobs", "2", "--json"])
        .repo(&repo)
        .env("TMPDIR", tmp.path())
        .run()
        .success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout));
    let order: Vec<(&str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["release"].as_str().unwrap(), o["role"].as_str().unwrap()))
        .collect();
    assert_eq!(order, pairs);
}
