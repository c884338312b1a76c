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
    need!(DebianRoot, Network);
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
    let outdated = |release: &str| {
        kiln()
            .args([
                "whitelist",
                "outdated",
                "--role",
                "cache",
                "--release",
                release,
            ])
            .repo(&repo)
    };
    // Asking for the other release of a target is refused, naming both.
    outdated("bookworm")
        .arg("--root")
        .arg(trixie.path())
        .run()
        .failure()
        .stderr_contains("the target runs \"trixie\", not \"bookworm\"");
    // Without --root, outdated reads the archive of the release asked for
    // in a throwaway root: the trixie pin is trixie's newest.
    outdated("trixie")
        .run()
        .success()
        .stdout_contains(&format!(
            "memcached {new} (releases.trixie.packages): current"
        ))
        .stdout_contains("release trixie, 1 pin(s)");
}

/// A fleet in the middle of a release upgrade: two web hosts on bookworm,
/// two on trixie. One rollout reaches the trixie hosts only; status lists
/// the hosts by release and judges drift within a release, where the
/// versions differ by design between releases.
#[test]
fn a_fleet_on_two_releases_rolls_out_to_trixie_only_and_groups_status() {
    need!(Sshd);
    use crate::support::apt_repo::AptRepo;
    use crate::support::fleet::{Fleet, spec};
    let apt = AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1");
    let specs = [
        "web01-bookworm",
        "web02-bookworm",
        "web03-trixie",
        "web04-trixie",
    ]
    .iter()
    .map(|name| {
        let mut s = spec(&format!("{name}.example.com"), &["web"]);
        s.release = Some(name.split('-').nth(1).unwrap().to_string());
        s
    })
    .collect();
    let mut f = Fleet::new(specs, |root: &std::path::Path| {
        apt.install_into(root);
    });
    f.start();
    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            "[[resource]]\npackage = \"kiln-hello\"\n\n[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"{{site.greeting}}\\n\"\n",
        )
        .attributes(
            "site",
            "[site]\ngreeting = \"hello bookworm\"\n\n[releases.trixie.site]\ngreeting = \"hello trixie\"\n",
        )
        .whitelist(
            "[packages]\nkiln-hello = \"1.0-1\"\n\n[releases.bookworm]\n\n[releases.trixie]\n\n\
             [rollouts.trixie-first]\nreleases = [\"trixie\"]\npackages = { kiln-hello = \"2.0-1\" }\n",
        );
    f.kiln(&["converge"]).repo(&repo).run().success();
    for h in &f.hosts {
        let trixie = h.fqdn.contains("trixie");
        assert_eq!(
            h.version("kiln-hello").as_deref(),
            Some(if trixie { "2.0-1" } else { "1.0-1" }),
            "{}",
            h.fqdn
        );
        assert_eq!(
            read(h.path(), "/etc/kiln-site.conf"),
            if trixie {
                "hello trixie\n"
            } else {
                "hello bookworm\n"
            }
        );
    }
    // Grouped by release; hosts of one role differ between releases by
    // design, and that is not drift.
    let o = f.kiln(&["status"]).repo(&repo).run().success();
    let bookworm = o
        .stdout
        .find("release bookworm (2 host(s)):")
        .expect(&o.stdout);
    let trixie = o
        .stdout
        .find("release trixie (2 host(s)):")
        .expect(&o.stdout);
    let pos = |h: &str| o.stdout.find(h).unwrap();
    assert!(bookworm < pos("web01-bookworm") && pos("web02-bookworm") < trixie);
    assert!(trixie < pos("web03-trixie") && trixie < pos("web04-trixie"));
    assert!(o.stdout.contains("no drift"), "{}", o.stdout);
    // A change by hand on one trixie host is drift among the trixie hosts.
    std::fs::write(
        at(
            f.host("web04-trixie.example.com").path(),
            "/etc/kiln-site.conf",
        ),
        "edited\n",
    )
    .unwrap();
    let o = f.kiln(&["status", "--json"]).repo(&repo).run().failure();
    let s: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(s["drift"].as_array().unwrap().len(), 1, "{}", o.stdout);
    assert_eq!(s["drift"][0]["release"], "trixie");
    // Judged against its own policy: the edited host, not its neighbour.
    assert_eq!(s["drift"][0]["fqdn"], "web04-trixie.example.com");
    let releases: Vec<&str> = s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["release"].as_str().unwrap())
        .collect();
    assert_eq!(releases, ["bookworm", "bookworm", "trixie", "trixie"]);
}
