//! `kiln whitelist mirror` writes an apt repository that any HTTP server
//! can publish: a fresh Debian root whose only source is that repository
//! (served on loopback) converges a role's pinned packages from it.

use crate::support::*;

#[test]
fn a_mirror_is_the_only_source_a_fresh_root_needs_for_its_pins() {
    need!(DebianRoot, Network);
    let probe = TestRoot::new();
    let (package, older, _newer) = archive_pair(&probe, &["memcached"]);
    drop(probe);
    let repo = Repo::one_package(
        "cache",
        &package,
        &format!("[packages]\n{package} = \"{older}\"\n"),
    );
    let out = tempfile::tempdir().unwrap();
    kiln()
        .args(["whitelist", "mirror", "--role", "cache", "--out"])
        .arg(out.path())
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("kiln whitelist mirror:");
    let packages = read(out.path(), "Packages");
    assert!(
        packages.contains(&format!("Package: {package}\n")),
        "{packages}"
    );
    assert!(
        packages.contains(&format!("Version: {older}\n")),
        "{packages}"
    );
    assert!(read(out.path(), "Release").contains("SHA256:"));

    let server = StaticServer::serve(out.path());
    let root = TestRoot::new();
    // The mirror is the root's only source.
    let _ = std::fs::remove_file(at(&root, "/etc/apt/sources.list"));
    for e in std::fs::read_dir(at(&root, "/etc/apt/sources.list.d")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(at(&root, "/var/lib/apt/lists")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::write(
        at(&root, "/etc/apt/sources.list.d/mirror.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: ./\nTrusted: yes\n",
            server.url()
        ),
    )
    .unwrap();
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--role", "cache", "--detailed-exitcodes"])
        .run()
        .code(2)
        .stdout_contains(&format!("install {older}"));
    let status = read(&root, "/var/lib/dpkg/status");
    assert!(
        status.contains(&format!("Package: {package}\nStatus: hold ok installed\n")),
        "{package} not installed and held"
    );
}
