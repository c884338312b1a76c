//! Names under a shared `$TMPDIR` that kiln uses, made first by someone
//! else. Every route: `kiln test`'s logs and scratch overlays, the
//! throwaway roots of `whitelist outdated --release` and `whitelist
//! mirror`, and the hash of the binary a fleet push sends (which once
//! lived there). A directory of another user's, or a link, is refused with
//! its name and the fix, and nothing it leads to changes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::Sentinel;
use crate::support::fleet::{Fleet, kiln_binary, spec};
use crate::support::*;

const NOBODY: u32 = 65534;

/// A directory as /tmp is: anyone may create in it, sticky.
fn shared_tmp() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    tmp
}

/// `name` under `tmp` made by nobody, with every log kiln test could
/// write there a link to the sentinel's victim; or `name` a link to the
/// sentinel itself.
fn plant(tmp: &Path, name: &str, link: bool, sentinel: &Sentinel) {
    let dir = tmp.join(name);
    if link {
        std::os::unix::fs::symlink(sentinel.dir(), &dir).unwrap();
        return;
    }
    std::fs::create_dir(&dir).unwrap();
    for log in ["node-bookworm.log", "node-trixie.log"] {
        std::os::unix::fs::symlink(sentinel.path("victim"), dir.join(log)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

fn repo() -> Repo {
    Repo::new()
        .role("node", r#"run_list = ["recipe[motd]"]"#)
        .recipe(
            "motd",
            "default",
            "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"hi\\n\"\n\n[[resource]]\npackage = \"memcached\"\n",
        )
        .whitelist("[packages]\nmemcached = \"1.6.18-1\"\n")
}

#[test]
fn scratch_directories_someone_else_made_under_tmpdir_are_refused() {
    need!(DebianRoot, Network, Root);
    let repo = repo();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap().to_string();
    let routes: [(&str, Vec<&str>); 3] = [
        ("kiln-test", vec!["test", "node", "--release", "bookworm"]),
        (
            "kiln-whitelist",
            vec![
                "whitelist",
                "outdated",
                "--role",
                "node",
                "--release",
                "trixie",
            ],
        ),
        (
            "kiln-mirror",
            vec!["whitelist", "mirror", "--role", "node", "--out", &out],
        ),
    ];
    for (name, args) in &routes {
        for link in [false, true] {
            let sentinel = Sentinel::new();
            let before = sentinel.hash();
            let tmp = shared_tmp();
            plant(tmp.path(), name, link, &sentinel);
            let planted = tmp.path().join(name);
            let o = kiln()
                .args(args)
                .repo(&repo)
                .env("TMPDIR", tmp.path())
                .run()
                .failure();
            // kiln test reports it as the role's failure, on stdout.
            let said = format!("{}{}", o.stdout, o.stderr);
            let why = match link {
                true => "is not a directory (a link or a file)",
                false => "is owned by uid 65534, not by you",
            };
            let whole = format!("kiln's scratch directory {} {why}", planted.display());
            assert!(said.contains(&whole), "{name}, link {link}: {said}");
            assert!(said.contains("set TMPDIR"), "{name}: {said}");
            assert_eq!(
                sentinel.hash(),
                before,
                "{name}, link {link}: the sentinel changed"
            );
            // Nothing was mounted or made in the directory planted (a
            // link's far end is the sentinel, hashed above).
            if !link {
                let made = std::fs::read_dir(&planted).unwrap().count();
                assert_eq!(made, 2, "{name}: only the planted links");
            }
        }
    }
}

/// A hash under /tmp that someone else wrote first, naming any binary's
/// hash for kiln's: hosts would be told to expect that one. kiln hashes
/// its binary itself and keeps the hash in its own cache.
#[test]
fn a_binary_hash_planted_under_tmpdir_is_never_read() {
    use std::os::unix::fs::MetadataExt as _;
    need!(Sshd);
    let mut f = Fleet::new(vec![spec("web01.example.com", &["web"])], |_| {});
    f.start();
    let tmp = shared_tmp();
    let cache = tempfile::tempdir().unwrap();
    let m = std::fs::metadata(kiln_binary()).unwrap();
    let key = format!(
        "{}-{}-{}-{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec() ^ m.mtime()
    );
    let uid = unsafe { libc::getuid() };
    let planted = tmp.path().join(format!("kiln-binary-sha-{uid}"));
    let lie = format!("{key} {}\n", "0".repeat(64));
    std::fs::write(&planted, &lie).unwrap();
    let site = Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"one\\n\"\n",
        )
        .whitelist("[packages]\n");
    f.kiln(&["converge"])
        .repo(&site)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache.path())
        .run()
        .success();
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), lie);
    let kept = std::fs::read_to_string(cache.path().join("kiln/binary-sha")).unwrap();
    assert!(kept.starts_with(&format!("{key} ")), "{kept}");
    assert!(!kept.contains(&"0".repeat(64)), "{kept}");
}
