//! One policy for a fleet on two Debian releases: pins per release chosen
//! by the target's own os-release, cookbook defaults per release, and
//! `kiln check` compiling every role for every pinned release. The
//! versions come from the real archive when the test runs.

use crate::support::*;

/// A role that installs `pkg-{{pkg.flavour}}`: the cookbook's default
/// flavour on bookworm, its trixie overlay on trixie.
fn flavoured(whitelist: &str) -> Repo {
    Repo::new()
        .attributes(
            "pkg",
            "[pkg]\nflavour = \"old\"\n\n[releases.trixie.pkg]\nflavour = \"new\"\n",
        )
        .recipe(
            "pkg",
            "default",
            "[[resource]]\npackage = \"pkg-{{pkg.flavour}}\"\n",
        )
        .role("app", "run_list = [\"recipe[pkg]\"]")
        .whitelist(whitelist)
}

#[test]
fn check_compiles_every_role_for_every_pinned_release() {
    let good = flavoured(
        "[releases.bookworm.packages]\npkg-old = \"1.0-1\"\n\n[releases.trixie.packages]\npkg-new = \"2.0-1\"\n",
    );
    kiln()
        .arg("check")
        .repo(&good)
        .run()
        .success()
        .stdout_contains("1 roles on bookworm, trixie")
        .stdout_lacks("problem");
    kiln()
        .args([
            "whitelist",
            "explain",
            "--role",
            "app",
            "--release",
            "trixie",
        ])
        .repo(&good)
        .run()
        .success()
        .stdout_contains("release trixie:")
        .stdout_contains("pkg-new")
        .stdout_contains("releases.trixie.packages")
        .stdout_lacks("pkg-old");

    // trixie's overlay names a package only bookworm pins: the error names
    // the release and the role, and bookworm is not blamed.
    let bad = flavoured(
        "[releases.bookworm.packages]\npkg-old = \"1.0-1\"\npkg-x = \"1\"\n\n[releases.trixie.packages]\npkg-old = \"2.0-1\"\n",
    );
    let out = kiln().arg("check").repo(&bad).run().failure();
    assert!(
        out.stderr
            .contains("release trixie: role app: package[pkg-new]: package \"pkg-new\" is not on the whitelist"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("release bookworm"), "{}", out.stderr);
    assert!(out.stderr.contains("on bookworm, trixie"), "{}", out.stderr);

    // A rollout for a release nobody pins, and a bad codename, are named
    // with their lines.
    let typo = flavoured(
        "[releases.bookworm.packages]\npkg-old = \"1.0-1\"\n\n[releases.Trixie.packages]\npkg-new = \"2.0-1\"\n\n[rollouts.r]\nreleases = [\"trixy\"]\npackages = { pkg-old = \"1.0-2\" }\n",
    );
    kiln()
        .arg("check")
        .repo(&typo)
        .run()
        .failure()
        .stderr_contains("whitelist.toml:4")
        .stderr_contains("not a Debian release codename")
        .stderr_contains("release \"trixy\" is not pinned");
}

/// The newest version the archive offers `package` in `root`.
fn newest(root: &TestRoot, package: &str) -> String {
    archive_versions(root, package)
        .into_iter()
        .map(|(v, _)| v)
        .max_by(|a, b| kiln::platform::archive::compare(a, b))
        .unwrap_or_else(|| panic!("the archive offers no {package}"))
}

fn installed(root: &TestRoot, package: &str) -> String {
    let out = in_root(root, &["dpkg-query", "-W", "-f", "${Version}", package]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_policy_installs_each_release_its_own_pin() {
    let (bookworm, trixie) = (TestRoot::on("bookworm"), TestRoot::on("trixie"));
    let (old, new) = (newest(&bookworm, "memcached"), newest(&trixie, "memcached"));
    assert_ne!(old, new, "bookworm and trixie ship one memcached version");
    let repo = Repo::one_package(
        "cache",
        "memcached",
        &format!(
            "[releases.bookworm.packages]\nmemcached = \"{old}\"\n\n[releases.trixie.packages]\nmemcached = \"{new}\"\n\n\
             [rollouts.trixie-canary]\nreleases = [\"trixie\"]\nhosts = [\"nobody.*\"]\npackages = {{ memcached = \"{new}\" }}\n"
        ),
    );
    for (root, version, codename) in [(&bookworm, &old, "bookworm"), (&trixie, &new, "trixie")] {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(root)
            .args(["--role", "cache", "--fqdn", "cache01.example.com"])
            .run()
            .success();
        assert_eq!(&installed(root, "memcached"), version, "on {codename}");
        // The audit speaks of the target's own release, and finds it at its pin.
        kiln()
            .args([
                "whitelist",
                "audit",
                "--role",
                "cache",
                "--fqdn",
                "cache01.example.com",
            ])
            .arg("--root")
            .arg(root.path())
            .repo(&repo)
            .run()
            .stdout_contains(&format!("release {codename}, 1 managed package(s)"))
            .stdout_lacks("memcached: pinned");
    }
    // Asking for the other release of a target is refused, naming both.
    kiln()
        .args([
            "whitelist",
            "outdated",
            "--role",
            "cache",
            "--release",
            "bookworm",
            "--root",
        ])
        .arg(trixie.path())
        .repo(&repo)
        .run()
        .failure()
        .stderr_contains("the target runs \"trixie\", not \"bookworm\"");
}
