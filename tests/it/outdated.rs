//! `kiln whitelist outdated` and `stage` against a real bookworm root and
//! the archive as it is today: a pin at the older version shows the newer
//! one (marked when a security archive carries it), a pin that no source
//! offers is flagged, and `stage` writes the rollout that `promote` ends.

use crate::support::*;

fn repo(package: &str, version: &str) -> Repo {
    Repo::one_package(
        "node",
        package,
        &format!("# fleet pins\n[packages]\n{package} = \"{version}\"   # today\n"),
    )
}

#[test]
fn outdated_lists_newer_versions_and_vanished_pins_and_stage_writes_the_rollout() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    let (package, older, newer) = archive_pair(&root, &["memcached", "tzdata"]);
    let newer_is_security = archive_versions(&root, &package)
        .iter()
        .any(|(v, suite)| v == &newer && suite.contains("-security/"));

    let at_older = repo(&package, &older);
    let out = kiln()
        .args([
            "whitelist",
            "outdated",
            "--role",
            "node",
            "--json",
            "--root",
        ])
        .arg(root.path())
        .repo(&at_older)
        .run()
        .success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["package"], package.as_str());
    assert_eq!(row["pin"], older.as_str());
    assert_eq!(row["vanished"], false);
    assert_eq!(row["newer"][0]["version"], newer.as_str(), "{}", out.stdout);
    if newer_is_security {
        assert_eq!(row["security_update"], newer.as_str());
    }
    kiln()
        .args(["whitelist", "outdated", "--role", "node", "--root"])
        .arg(root.path())
        .repo(&at_older)
        .run()
        .success()
        .stdout_contains(&format!("{package} {older} (packages): newer: {newer}"));

    // A pin that no source offers any more is named, with what is offered.
    let vanished = repo(&package, "0.0.1-0kiln1");
    kiln()
        .args(["whitelist", "outdated", "--role", "node", "--root"])
        .arg(root.path())
        .repo(&vanished)
        .run()
        .code(1)
        .stdout_contains(&format!(
            "{package} 0.0.1-0kiln1 (packages): VANISHED: no source offers 0.0.1-0kiln1 (offered: {newer}"
        ))
        .stdout_contains("1 vanished");

    // stage (the named package at its newest version), then promote.
    kiln()
        .args(["whitelist", "stage", "canary-update", &package])
        .args(["--hosts", "web01.*", "--role", "node", "--root"])
        .arg(root.path())
        .repo(&at_older)
        .run()
        .success()
        .stdout_contains(&format!("{package}: {older} -> {newer}"));
    let staged = read(at_older.path(), "whitelist.toml");
    assert!(staged.starts_with("# fleet pins\n"), "{staged}");
    assert!(staged.contains("[rollouts.canary-update]"), "{staged}");
    kiln()
        .args([
            "whitelist",
            "explain",
            "--role",
            "node",
            "--fqdn",
            "web01.example.com",
        ])
        .repo(&at_older)
        .run()
        .success()
        .stdout_contains("rollouts.canary-update");
    kiln()
        .args(["whitelist", "promote", "canary-update"])
        .repo(&at_older)
        .run()
        .success();
    assert_eq!(
        read(at_older.path(), "whitelist.toml"),
        format!("# fleet pins\n[packages]\n{package} = \"{newer}\"   # today\n")
    );
}
