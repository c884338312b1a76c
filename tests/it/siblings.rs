//! Siblings follow the pin, on real bookworm roots whose sources include
//! bookworm-security, with versions taken from the archive at test time:
//! a package installed at its newer version is pinned back to the older
//! one (a rollback), and every installed binary package built from the
//! same source moves back with it and is held; pinned forward, all move up.
//! And on a fresh root, where the package was never installed, a pin below
//! bookworm-security's version installs its siblings at the pin's upload,
//! whether they are tied by `=` or by a `<< V.1~` range.

use crate::support::*;

/// `name -> (version, want)` of every installed package built from `source`.
fn from_source(root: &TestRoot, source: &str) -> Vec<(String, String, String)> {
    let out = in_root(
        root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version} ${db:Status-Want} ${db:Status-Status} ${source:Package}\\n",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "installed" && f[4] == source)
                .then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn rollback_and_forward(package: &str, source: &str) {
    let root = TestRoot::new();
    let (package, older, newer) = archive_pair(&root, &[package]);
    let repo = |version: &str| {
        Repo::one_package(
            "node",
            &package,
            &format!("[packages]\n\"{package}\" = \"{version}\"\n"),
        )
    };
    let converge = |repo: &Repo| {
        kiln()
            .arg("converge")
            .repo(repo)
            .root(&root)
            .args(["--role", "node", "--detailed-exitcodes"])
            .run()
    };
    let all_at = |version_of_pin: &str| {
        let installed = from_source(&root, source);
        assert!(installed.len() > 1, "siblings of {source}: {installed:?}");
        let pin = installed.iter().find(|(n, _, _)| n == &package).unwrap();
        assert_eq!(pin.1, version_of_pin, "{installed:?}");
        for (name, version, want) in &installed {
            assert_eq!(want, "hold", "{name} is not held: {installed:?}");
            // Siblings share the pin's upstream and Debian revision (binNMUs
            // and epochs aside, which these packages do not use).
            assert!(
                version.contains(version_of_pin.rsplit(':').next().unwrap()),
                "{name} {version} did not follow {package} {version_of_pin}: {installed:?}"
            );
        }
    };

    converge(&repo(&newer)).code(2);
    all_at(&newer);

    // The rollback: older pin; the why-run plan names the siblings.
    let back = repo(&older);
    kiln()
        .arg("converge")
        .repo(&back)
        .root(&root)
        .args(["--role", "node", "--why-run"])
        .run()
        .success()
        .stdout_contains(&format!("follows {package}: {newer} -> {older}"));
    converge(&back).code(2);
    all_at(&older);
    converge(&back).code(0);

    // And forward again.
    let forward = repo(&newer);
    converge(&forward).code(2);
    all_at(&newer);
    converge(&forward).code(0);
}

#[test]
fn mod_php_rolls_back_and_forward_with_its_siblings() {
    need!(DebianRoot, Network);
    rollback_and_forward("libapache2-mod-php8.2", "php8.2");
}

#[test]
fn mariadb_rolls_back_and_forward_with_its_siblings() {
    need!(DebianRoot, Network);
    rollback_and_forward("mariadb-server", "mariadb");
}

/// `(name, version, want, source version)` of every installed package built
/// from `source`.
fn uploads_of(root: &TestRoot, source: &str) -> Vec<(String, String, String, String)> {
    let out = in_root(
        root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version} ${db:Status-Want} ${db:Status-Status} ${source:Package} ${source:Version}\\n",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[3] == "installed" && f[4] == source).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[5].to_string(),
                )
            })
        })
        .collect()
}

/// The version of `package` in bookworm itself, when bookworm-security has
/// a newer one today; None (and why) when the archive offers no such pair.
fn below_security(root: &TestRoot, package: &str) -> Result<(String, String), String> {
    let versions = archive_versions(root, package);
    let of = |suite: &str| {
        versions
            .iter()
            .find(|(_, s)| s.split('/').next() == Some(suite))
            .map(|(v, _)| v.clone())
    };
    match (of("bookworm"), of("bookworm-security")) {
        (Some(main), Some(security))
            if kiln::platform::archive::compare(&security, &main).is_gt() =>
        {
            Ok((main, security))
        }
        _ => Err(format!(
            "the archive offers no {package} in bookworm with a newer one in \
             bookworm-security today ({versions:?})"
        )),
    }
}

/// A fresh root pins `package` at its bookworm version below the security
/// archive's: apt's own choice for every sibling would be the security
/// build, which the pin's versioned dependencies refuse. `tie` is the
/// dependency text (`sibling (op`) that makes this the case under test.
fn fresh_host_below_security(package: &str, source: &str, tie: &str) {
    let root = TestRoot::new();
    let (main, security) = match below_security(&root, package) {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("SKIPPED fresh {package} below bookworm-security: {why}");
            return;
        }
    };
    let shown = in_root(&root, &["apt-cache", "show", &format!("{package}={main}")]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    if !shown
        .lines()
        .any(|l| (l.starts_with("Depends: ") || l.starts_with("Pre-Depends: ")) && l.contains(tie))
    {
        eprintln!(
            "SKIPPED fresh {package} below bookworm-security: {package} {main} no longer \
             depends on {tie}..., the tie this case is about:\n{shown}"
        );
        return;
    }
    assert!(
        uploads_of(&root, source).is_empty(),
        "the root is not fresh: {:?}",
        uploads_of(&root, source)
    );
    eprintln!("fresh root: {package} pinned at {main}, bookworm-security has {security}");
    let repo = Repo::one_package(
        "node",
        package,
        &format!("[packages]\n\"{package}\" = \"{main}\"\n"),
    );
    let converge = || {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--role", "node", "--detailed-exitcodes"])
            .run()
    };
    converge().code(2);
    let installed = uploads_of(&root, source);
    let (_, version, _, upload) = installed
        .iter()
        .find(|(n, ..)| n == package)
        .unwrap_or_else(|| panic!("{package} is not installed: {installed:?}"));
    assert_eq!(version, &main, "{installed:?}");
    assert!(installed.len() > 1, "no sibling of {source}: {installed:?}");
    for (name, version, want, from) in &installed {
        assert_eq!(
            from, upload,
            "{name} {version} is not from {source} {upload}: {installed:?}"
        );
        assert_eq!(want, "hold", "{name} is not held: {installed:?}");
    }
    eprintln!("installed from {source} {upload}: {installed:?}");
    converge().code(0);
    assert_eq!(uploads_of(&root, source), installed);
}

#[test]
fn mod_php_on_a_fresh_host_pins_below_security_with_its_exact_siblings() {
    need!(DebianRoot, Network);
    fresh_host_below_security("libapache2-mod-php8.2", "php8.2", "php8.2-common (= ");
}

#[test]
fn nginx_on_a_fresh_host_pins_below_security_with_its_range_siblings() {
    need!(DebianRoot, Network);
    fresh_host_below_security("nginx", "nginx", "nginx-common (<< ");
}
