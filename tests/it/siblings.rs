//! Siblings follow the pin, on real bookworm roots whose sources include
//! bookworm-security, with versions taken from the archive at test time:
//! a package installed at its newer version is pinned back to the older
//! one (a rollback), and every installed binary package built from the
//! same source moves back with it and is held; pinned forward, all move up.

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
    rollback_and_forward("libapache2-mod-php8.2", "php8.2");
}

#[test]
fn mariadb_rolls_back_and_forward_with_its_siblings() {
    rollback_and_forward("mariadb-server", "mariadb");
}
