//! The snapshot fallback, proven without snapshot.debian.org: a copy with
//! its URL layout is served on loopback, signed by a key the test makes,
//! its Release files long expired as snapshot's are. A pin that only the
//! copy carries is installed from it on a real bookworm root, the
//! signature checked; the same converge against a copy signed by another
//! key than the whitelist names is refused by apt, nothing is installed,
//! and the refused sources do not stay behind.

use std::path::Path;

use crate::support::apt_repo::AptRepo;
use crate::support::signing_key::SigningKey;
use crate::support::*;

const STAMP: &str = "20220101T000000Z";
/// Both in the past: only `Check-Valid-Until: no` lets apt read these.
const DATES: &str =
    "Date: Sat, 01 Jan 2022 00:00:00 UTC\nValid-Until: Sat, 08 Jan 2022 00:00:00 UTC\n";

/// snapshot.debian.org's layout under `dir`, for release `codename`: the
/// main archive (with an empty `CODENAME-updates`) carries kiln-snap, the
/// security archive kiln-snap-sec, each signed by `key`.
fn snapshot_copy(dir: &Path, codename: &str, key: &SigningKey) {
    let debian = dir.join("archive/debian").join(STAMP);
    let security = dir.join("archive/debian-security").join(STAMP);
    let releases = [
        AptRepo::new()
            .package("kiln-snap", "2.0-1")
            .write_suite(&debian, codename, DATES),
        AptRepo::new().write_suite(&debian, &format!("{codename}-updates"), DATES),
        AptRepo::new()
            .package("kiln-snap-sec", "2.0-1+deb12u1")
            .write_suite(&security, &format!("{codename}-security"), DATES),
    ];
    for release in releases {
        key.sign_release(&release);
    }
}

/// A role that installs both packages, pinned to what only the copy
/// carries, with `fallback` as the whitelist's `[fallback]` body and
/// `key` as keys/snapshot.asc.
fn policy(fallback: &str, key: &SigningKey) -> Repo {
    Repo::new()
        .role("node", "run_list = [\"recipe[pkg]\"]")
        .recipe(
            "pkg",
            "default",
            "[[resource]]\npackage = \"kiln-snap\"\n\n[[resource]]\npackage = \"kiln-snap-sec\"\n",
        )
        .whitelist(&format!(
            "[packages]\nkiln-snap = \"2.0-1\"\nkiln-snap-sec = \"2.0-1+deb12u1\"\n\n\
             [fallback]\nsnapshot = \"{STAMP}\"\nsnapshot_key = \"keys/snapshot.asc\"\n{fallback}"
        ))
        .file("keys/snapshot.asc", key.public_armored())
}

fn converge(repo: &Repo, root: &TestRoot, snapshot_uri_env: &str) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "node", "--detailed-exitcodes"])
        .env("KILN_SNAPSHOT_URI", snapshot_uri_env)
        .run()
}

fn codename(root: &TestRoot) -> String {
    read(root, "/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("the root names its release")
        .trim_matches('"')
        .to_owned()
}

fn installed(root: &TestRoot, package: &str) -> bool {
    let out = in_root(root, &["dpkg-query", "-W", "-f", "${Status}", package]);
    String::from_utf8_lossy(&out.stdout) == "install ok installed"
}

#[test]
fn a_pin_only_a_snapshot_copy_carries_is_installed_from_it_with_its_signature_checked() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    let codename = codename(&root);
    let archive = SigningKey::new("snapshot");
    let served = tempfile::tempdir().unwrap();
    snapshot_copy(served.path(), &codename, &archive);
    let server = StaticServer::serve(served.path());

    // The environment wins over the whitelist's snapshot_uri, which names
    // a port where nothing answers.
    let repo = policy("snapshot_uri = \"http://127.0.0.1:9\"\n", &archive);
    kiln().arg("check").repo(&repo).run().success();
    let url = server.url();
    converge(&repo, &root, &url)
        .code(2)
        .stdout_contains("install 2.0-1")
        .stdout_contains("install 2.0-1+deb12u1");
    assert_eq!(read(&root, "/usr/share/kiln-snap/version"), "2.0-1\n");
    assert_eq!(
        read(&root, "/usr/share/kiln-snap-sec/version"),
        "2.0-1+deb12u1\n"
    );
    let sources = read(&root, "/etc/apt/sources.list.d/kiln-fallback.sources");
    let base = url.trim_end_matches('/');
    for uri in [
        format!("URIs: {base}/archive/debian/{STAMP}/\nSuites: {codename} {codename}-updates\n"),
        format!("URIs: {base}/archive/debian-security/{STAMP}/\nSuites: {codename}-security\n"),
    ] {
        assert!(sources.contains(&uri), "{sources}");
    }
    assert_eq!(
        sources
            .matches("Signed-By: /etc/apt/keyrings/kiln-fallback-snapshot.asc\n")
            .count(),
        2,
        "{sources}"
    );
    assert!(!sources.contains("Trusted"), "{sources}");
    assert_eq!(
        read(&root, "/etc/apt/keyrings/kiln-fallback-snapshot.asc").as_bytes(),
        archive.public_armored()
    );
    converge(&repo, &root, &url).code(0);

    // The copy really is expired: without Check-Valid-Until: no, apt
    // refuses it.
    let strict: String = sources
        .lines()
        .filter(|l| *l != "Check-Valid-Until: no")
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(at(&root, "/tmp/strict.sources"), strict).unwrap();
    let out = in_root(
        &root,
        &[
            "apt-get",
            "update",
            "-o",
            "Dir::Etc::SourceList=/tmp/strict.sources",
            "-o",
            "Dir::Etc::SourceParts=-",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("is expired"),
        "{said}"
    );
}

#[test]
fn a_snapshot_copy_signed_by_another_key_than_the_whitelist_names_is_refused() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    let codename = codename(&root);
    let archive = SigningKey::new("snapshot");
    let served = tempfile::tempdir().unwrap();
    snapshot_copy(served.path(), &codename, &archive);
    let server = StaticServer::serve(served.path());

    // The whitelist's snapshot_uri points at the copy (an empty
    // KILN_SNAPSHOT_URI leaves it be), but names another key.
    let uri = format!("snapshot_uri = \"{}\"\n", server.url());
    let wrong = policy(&uri, &SigningKey::new("other"));
    let refused = converge(&wrong, &root, "").code(4);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains(&format!(
            "E: The repository '{}archive/debian/{STAMP} {codename} InRelease' is not signed",
            server.url()
        )),
        "{said}"
    );
    assert!(
        said.contains("took the fallback sources back out"),
        "{said}"
    );
    assert!(!installed(&root, "kiln-snap"), "{said}");
    assert!(!installed(&root, "kiln-snap-sec"), "{said}");
    assert!(!at(&root, "/usr/share/kiln-snap").exists());

    // Refused sources do not stay behind to break the target's apt: with
    // the key corrected, the next converge installs.
    assert!(!at(&root, "/etc/apt/sources.list.d/kiln-fallback.sources").exists());
    converge(&policy(&uri, &archive), &root, "")
        .code(2)
        .stdout_contains("install 2.0-1");
    assert_eq!(read(&root, "/usr/share/kiln-snap/version"), "2.0-1\n");
}
