//! `--root` holds kiln in: symlinks planted in a target tree, absolute or
//! `../` chains, at every place kiln reads, writes, chmods or prunes, lead
//! inside the tree or to a clear error, and a sentinel directory on the
//! build host, outside the root, is left exactly as it was.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use crate::support::apt_repo::AptRepo;
use crate::support::*;

use super::{SECRET, Sentinel};

/// A link `../../…/<host path>` from `from` (a path in the root) that,
/// resolved on the host, reaches `to`.
fn dotdot_to(from: &str, to: &Path) -> String {
    let up = "../".repeat(from.matches('/').count() + 40);
    format!("{up}{}", to.display().to_string().trim_start_matches('/'))
}

fn plant(root: &TestRoot, path: &str, to: impl AsRef<Path>) {
    let p = at(root, path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&p);
    symlink(to, &p).unwrap();
}

/// The secret's content in anything kiln printed, with which run printed it.
fn leaked(outs: &[&Outcome]) -> Vec<String> {
    outs.iter()
        .filter(|o| o.stdout.contains(SECRET) || o.stderr.contains(SECRET))
        .map(|o| o.command.clone())
        .collect()
}

#[test]
fn planted_links_never_lead_kiln_out_of_the_root() {
    need!(DebianRoot);
    let sentinel = Sentinel::new();
    let root = TestRoot::new();
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .install_into(root.path());
    // A file and a mode-only file whose paths link to the host's secret,
    // one by its absolute host path and one by a `../` chain.
    plant(&root, "/etc/app.conf", sentinel.path("secret"));
    plant(
        &root,
        "/etc/app.key",
        dotdot_to("/etc/app.key", &sentinel.path("secret")),
    );
    // An absolute link means the same path inside the root.
    fs::write(at(&root, "/etc/kiln-inroot"), "in-root content\n").unwrap();
    plant(&root, "/etc/app.ini", "/etc/kiln-inroot");
    // A managed directory that links to a host directory.
    plant(
        &root,
        "/srv/hostdir",
        dotdot_to("/srv/hostdir", &sentinel.path("hostdir")),
    );
    // 41 links: one more than the kernel follows.
    for i in 0..40 {
        plant(&root, &format!("/chain/l{i}"), format!("/chain/l{}", i + 1));
    }
    plant(&root, "/chain/l40", sentinel.path("chain-end"));
    // kiln's run history, and apt's policy-rc.d dangling onto the host.
    plant(&root, "/var/lib/kiln/runs", sentinel.path("history"));
    let _ = fs::remove_file(at(&root, "/usr/sbin/policy-rc.d"));
    plant(&root, "/usr/sbin/policy-rc.d", sentinel.path("policy-rc.d"));

    let repo = Repo::new()
        .recipe(
            "hostile",
            "default",
            r#"
[[resource]]
file = "/etc/app.conf"
content = "managed\n"

[[resource]]
file = "/etc/app.key"
mode = "0640"

[[resource]]
file = "/etc/app.ini"
content = "managed ini\n"

[[resource]]
directory = "/srv/hostdir"
mode = "0777"
ignore_failure = true

[[resource]]
file = "/chain/l0/escaped"
content = "x\n"
ignore_failure = true

[[resource]]
package = "kiln-hello"
"#,
        )
        .whitelist("[packages]\nkiln-hello = \"1.0-1\"\n");
    let before = sentinel.hash();
    let converge = |extra: &[&str]| {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--run-list", "recipe[hostile]", "--detailed-exitcodes"])
            .args(extra)
            .run()
    };

    let why = converge(&["--why-run"]);
    assert_eq!(
        sentinel.hash(),
        before,
        "why-run changed the host:\n{why:?}"
    );
    // The absolute link was read inside the root.
    let why = why
        .stdout_contains("-in-root content")
        .stdout_contains("directory[/srv/hostdir]")
        .stdout_contains("leads to no directory on the target")
        .stdout_contains("file[/chain/l0/escaped]")
        .stdout_contains(
            "cannot inspect /chain/l0/escaped: a symlink loop or a chain of more than 40 links",
        );
    assert!(
        fs::symlink_metadata(at(&root, "/etc/app.conf"))
            .unwrap()
            .is_symlink(),
        "why-run changed the root"
    );

    let real = converge(&[])
        .stdout_contains("failed (ignored) directory[/srv/hostdir]")
        .stdout_contains("failed (ignored) file[/chain/l0/escaped]")
        .stdout_contains("a symlink loop or a chain of more than 40 links");
    assert_eq!(
        sentinel.hash(),
        before,
        "the converge changed the host:\n{real:?}"
    );
    assert_eq!(leaked(&[&why, &real]), Vec::<String>::new());

    // What was replaced is each link itself, by a regular file in the root.
    for (path, content, mode_bits) in [
        ("/etc/app.conf", "managed\n", 0o644),
        ("/etc/app.key", "", 0o640),
        ("/etc/app.ini", "managed ini\n", 0o644),
    ] {
        let m = fs::symlink_metadata(at(&root, path)).unwrap();
        assert!(m.is_file(), "{path} is not a regular file");
        assert_eq!(read(&root, path), content, "{path}");
        assert_eq!(mode(&root, path), mode_bits, "{path}");
    }
    assert_eq!(read(&root, "/etc/kiln-inroot"), "in-root content\n");
    assert!(!at(&root, "/chain/l40/escaped").exists());
    // The history link was replaced by kiln's own directory, pruned there.
    let runs = at(&root, "/var/lib/kiln/runs");
    assert!(fs::symlink_metadata(&runs).unwrap().is_dir());
    assert_eq!(fs::read_dir(&runs).unwrap().count(), 1);
    let last = read(&root, "/var/lib/kiln/last_run.json");
    assert!(!last.contains(SECRET));
    // The package installed with kiln's policy-rc.d in the root, and the
    // dangling link is back as it was.
    assert!(passwd_entry(&root, "root").is_some());
    assert!(
        in_root(&root, &["dpkg", "-s", "kiln-hello"])
            .status
            .success()
    );
    assert_eq!(
        fs::read_link(at(&root, "/usr/sbin/policy-rc.d")).unwrap(),
        sentinel.path("policy-rc.d")
    );
    assert!(!sentinel.path("policy-rc.d").exists());
}

#[test]
fn a_lock_file_link_is_refused_and_nothing_is_truncated() {
    need!(DebianRoot);
    let sentinel = Sentinel::new();
    let root = TestRoot::new();
    plant(&root, "/run/kiln.lock", sentinel.path("victim"));
    let repo = Repo::new().recipe(
        "f",
        "default",
        "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hi\\n\"\n",
    );
    let before = sentinel.hash();
    for extra in [vec!["--why-run"], vec![]] {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--run-list", "recipe[f]"])
            .args(&extra)
            .run()
            .failure()
            .stderr_contains(
                "kiln.lock is a symlink; kiln takes its run lock only on a regular file",
            );
        assert_eq!(sentinel.hash(), before, "{extra:?} changed the host");
    }
    assert!(at(&root, "/run/kiln.lock").is_symlink());
    let motd = fs::read_to_string(at(&root, "/etc/motd")).unwrap_or_default();
    assert_ne!(motd, "hi\n", "the run went on without its lock");
}

/// Special files planted in a `--root` tree where kiln reads (a managed
/// file, os-release) are clear errors, never read and never waited on: a
/// FIFO, a character device (`/dev/zero`'s numbers) and a block device.
#[test]
fn special_files_in_a_root_are_never_read() {
    need!(DebianRoot);
    use std::process::Command;
    let repo = Repo::new()
        .recipe(
            "cb",
            "default",
            "[[resource]]\nfile = \"/etc/fifo\"\ncontent = \"x\\n\"\nignore_failure = true\n\n\
             [[resource]]\nfile = \"/etc/zero\"\ncontent = \"x\\n\"\nignore_failure = true\n\n\
             [[resource]]\nfile = \"/etc/disk\"\ncontent = \"x\\n\"\nignore_failure = true\n",
        )
        .role("node", "run_list = [\"recipe[cb]\"]");
    let root = TestRoot::new();
    let r = root.path();
    let made = |args: &[&str]| {
        let ok = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(ok.success(), "{args:?}");
    };
    let at_root = |p: &str| r.join(p).display().to_string();
    made(&["mkfifo", &at_root("etc/fifo")]);
    made(&["mknod", &at_root("etc/zero"), "c", "1", "5"]);
    made(&["mknod", &at_root("etc/disk"), "b", "7", "0"]);
    fs::remove_file(r.join("etc/os-release")).ok();
    made(&["mkfifo", &at_root("etc/os-release")]);
    for why_run in [true, false] {
        let mut k = kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--role", "node"]);
        if why_run {
            k = k.arg("--why-run");
        }
        let out = k.run().success();
        let said = format!("{}{}", out.stdout, out.stderr);
        for (path, kind) in [
            ("/etc/fifo", "a FIFO"),
            ("/etc/zero", "a character device"),
            ("/etc/disk", "a block device"),
        ] {
            assert!(
                said.contains(&format!("{path} is {kind}, not a regular file")),
                "{path}: {said}"
            );
        }
    }
}

/// A managed path that is a hard link (here to a file elsewhere in the
/// tree, as a planted link to a host file would be) is never read, shown
/// or changed in place: with content it is replaced by a file of its own,
/// and the other name keeps its content and mode; a mode-only resource on
/// it is refused.
#[test]
fn hard_linked_files_are_replaced_never_changed_in_place() {
    need!(DebianRoot);
    use std::os::unix::fs::MetadataExt;
    let root = TestRoot::new();
    let r = root.path();
    fs::write(r.join("etc/other-name"), "SHARED-CONTENT-4711\n").unwrap();
    fs::set_permissions(r.join("etc/other-name"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(r.join("etc/other-name"), r.join("etc/managed")).unwrap();
    fs::hard_link(r.join("etc/other-name"), r.join("etc/mode-only")).unwrap();
    let repo = Repo::new()
        .recipe(
            "cb",
            "default",
            "[[resource]]\nfile = \"/etc/managed\"\ncontent = \"kiln's\\n\"\nmode = \"0644\"\n\n\
             [[resource]]\nfile = \"/etc/mode-only\"\nmode = \"0666\"\nignore_failure = true\n",
        )
        .role("node", "run_list = [\"recipe[cb]\"]");
    let run = |extra: &[&str]| {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--role", "node"])
            .args(extra)
            .run()
            .success()
    };
    let why = run(&["--why-run"]);
    assert!(!why.stdout.contains("SHARED-CONTENT"), "{}", why.stdout);
    assert!(
        why.stdout.contains("hard links; kiln replaces it"),
        "{}",
        why.stdout
    );
    let out = run(&[]);
    assert!(!out.stdout.contains("SHARED-CONTENT"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("kiln changes no file that other names share in place"),
        "{}",
        out.stdout
    );
    assert_eq!(read(&root, "/etc/managed"), "kiln's\n");
    assert_eq!(fs::metadata(r.join("etc/managed")).unwrap().nlink(), 1);
    assert_eq!(read(&root, "/etc/other-name"), "SHARED-CONTENT-4711\n");
    assert_eq!(mode(&root, "/etc/other-name"), 0o600);
    assert_eq!(mode(&root, "/etc/mode-only"), 0o600);
}
