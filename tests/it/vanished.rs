//! A pin that no source offers any more never strands a host: converge
//! refuses before it changes anything, naming the versions that are
//! offered, and with a fallback source in whitelist.toml (a repository
//! served on loopback that still carries the version) the same converge
//! succeeds.

use crate::support::apt_repo::AptRepo;
use crate::support::*;

fn repo(package: &str, version: &str, fallback: &str) -> Repo {
    Repo::one_package(
        "node",
        package,
        &format!("[packages]\n{package} = \"{version}\"\n{fallback}"),
    )
}

fn converge(repo: &Repo, root: &TestRoot) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "node", "--detailed-exitcodes"])
        .run()
}

#[test]
fn a_vanished_pin_is_refused_before_any_change_and_a_fallback_source_serves_it() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    let offered = archive_versions(&root, "memcached");
    let before = tree_hash(&root);
    let failed = converge(&repo("memcached", "0.0.1-0kiln1", ""), &root).code(4);
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        said.contains("no source offers the pinned version of memcached 0.0.1-0kiln1 (offered: "),
        "{said}"
    );
    assert!(said.contains(&offered[0].0), "{said}");
    assert!(said.contains("[fallback]"), "{said}");
    assert_eq!(
        tree_hash(&root),
        before,
        "a refused converge changed the root"
    );

    // A version only the team's repository still carries.
    let carried = tempfile::tempdir().unwrap();
    let dir = AptRepo::new()
        .package("kiln-pinned", "2.0-1")
        .write_into(carried.path());
    let server = StaticServer::serve(&dir);
    converge(&repo("kiln-pinned", "2.0-1", ""), &root)
        .code(4)
        .stdout_contains("kiln-pinned 2.0-1 (offered: none)");
    let with_fallback = repo(
        "kiln-pinned",
        "2.0-1",
        &format!(
            "\n[fallback]\n[[fallback.mirrors]]\nuri = \"{}\"\ntrusted = true\n",
            server.url()
        ),
    );
    converge(&with_fallback, &root)
        .code(2)
        .stdout_contains("install 2.0-1");
    assert_eq!(read(&root, "/usr/share/kiln-pinned/version"), "2.0-1\n");
    assert!(read(&root, "/etc/apt/sources.list.d/kiln-fallback.sources").contains(&server.url()));
    converge(&with_fallback, &root).code(0);
}

/// A pin fetched once is not lost on that machine: a version that only
/// kiln's own package cache still holds (as `kiln test` and dev VM builds
/// leave it there) is served to the target before anything is refused or
/// substituted, on a production converge too.
#[test]
fn a_pin_only_kilns_package_cache_holds_is_installed_from_it() {
    need!(DebianRoot);
    let root = TestRoot::new();
    let cache = tempfile::tempdir().unwrap();
    let built = tempfile::tempdir().unwrap();
    let dir = AptRepo::new()
        .package("kiln-cached", "3.0-1")
        .write_into(built.path());
    let archives = cache.path().join("kiln/apt/archives");
    std::fs::create_dir_all(&archives).unwrap();
    let deb = "kiln-cached_3.0-1_all.deb";
    std::fs::copy(dir.join(deb), archives.join(deb)).unwrap();
    let repo = repo("kiln-cached", "3.0-1", "");
    let run = |cache: &std::path::Path| {
        kiln()
            .env("XDG_CACHE_HOME", cache)
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--role", "node", "--detailed-exitcodes"])
            .run()
    };
    // Without the cache nothing offers it.
    let empty = tempfile::tempdir().unwrap();
    run(empty.path()).code(4).stdout_contains(
        "no source offers the pinned version of kiln-cached 3.0-1 (offered: none)",
    );
    run(cache.path()).code(2).stdout_contains("install 3.0-1");
    assert_eq!(read(&root, "/usr/share/kiln-cached/version"), "3.0-1\n");
    assert!(
        read(&root, "/etc/apt/sources.list.d/kiln-pins.sources")
            .contains("file:/var/cache/kiln/pins")
    );
    run(cache.path()).code(0);
}
