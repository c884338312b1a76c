//! A pin that Debian has replaced never breaks a dev VM or `kiln test`, and
//! never slips onto a production host. A scratch copy of this repository's
//! policy pins trixie's sudo at a version no source can offer: production
//! paths (`converge --root`, `fleet converge`) refuse before any change,
//! `--strict-pins` refuses, and `kiln test` and an opt-in converge take the
//! version the archive offers, warn with the fix, and record it. (The dev VM
//! side is in devvm.rs, whose VM boots such a copy.)

use std::path::Path;

use crate::support::apt_repo::AptRepo;
use crate::support::fleet::{Fleet, spec};
use crate::support::*;

/// No Debian upload can carry this version: `0kiln` sorts below every
/// real revision and names itself.
pub const IMPOSSIBLE: &str = "0.0.1-0kiln1";

fn converge(repo: &Repo, root: &TestRoot, extra: &[&str]) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "base", "--fqdn", "base01.example.com"])
        .args(["--detailed-exitcodes"])
        .args(extra)
        .run()
}

fn dpkg_field(root: &TestRoot, package: &str, format: &str) -> String {
    let out = in_root(root, &["dpkg-query", "-W", "-f", format, package]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn converge_refuses_a_vanished_pin_before_any_change_and_substitutes_only_when_asked() {
    need!(DebianRoot, Network);
    let repo = Repo::policy_with_pin("trixie", "sudo", IMPOSSIBLE);
    let root = TestRoot::on("trixie");
    let offered = archive_versions(&root, "sudo");
    let newest = &offered[0].0;
    let before = tree_hash(&root);

    // Production: refused with kiln's own message, the root untouched.
    for why_run in [false, true] {
        let extra: &[&str] = if why_run { &["--why-run"] } else { &[] };
        let refused = converge(&repo, &root, extra).code(4);
        let said = format!("{}{}", refused.stdout, refused.stderr);
        assert!(
            said.contains(&format!(
                "no source offers the pinned version of sudo {IMPOSSIBLE} (offered: {newest}"
            )),
            "{said}"
        );
        assert!(said.contains("kiln whitelist stage"), "{said}");
        assert!(!said.contains("E: Version"), "apt's bare error: {said}");
        assert_eq!(
            tree_hash(&root),
            before,
            "a refused converge changed the root"
        );
    }

    // For image builds and tests, on request: the archive's version, held,
    // warned about and recorded.
    let substituted = converge(&repo, &root, &["--substitute-vanished-pins"]).code(2);
    let pair = format!("sudo {IMPOSSIBLE} -> {newest}");
    assert!(substituted.stderr.contains(&pair), "{}", substituted.stderr);
    assert!(
        substituted
            .stderr
            .contains("kiln whitelist stage NAME sudo --release trixie"),
        "{}",
        substituted.stderr
    );
    assert_eq!(dpkg_field(&root, "sudo", "${Version}"), *newest);
    assert_eq!(dpkg_field(&root, "sudo", "${db:Status-Want}"), "hold");
    let report: serde_json::Value =
        serde_json::from_str(&read(&root, "/var/lib/kiln/last_run.json")).unwrap();
    assert_eq!(report["pin_mode"], "substitute", "{report}");
    assert_eq!(report["substitutions"][0]["package"], "sudo", "{report}");
    assert_eq!(report["substitutions"][0]["pin"], IMPOSSIBLE, "{report}");
    assert_eq!(
        report["substitutions"][0]["substitute"], *newest,
        "{report}"
    );

    // The second run changes nothing and still declares it.
    converge(&repo, &root, &["--substitute-vanished-pins"])
        .code(0)
        .stderr_contains(&pair);
    kiln()
        .arg("fingerprint")
        .arg("--root")
        .arg(root.path())
        .arg("--explain")
        .run()
        .success()
        .stdout_contains(&format!(
            "# declared difference: package[sudo] pinned {IMPOSSIBLE}, substituted {newest}"
        ));

    // A production converge of that host still refuses, and changes nothing.
    let after = tree_hash(&root);
    converge(&repo, &root, &[])
        .code(4)
        .stdout_contains(&format!(
            "no source offers the pinned version of sudo {IMPOSSIBLE}"
        ));
    assert_eq!(tree_hash(&root), after);
}

#[test]
fn kiln_test_substitutes_a_vanished_pin_with_a_warning_and_strict_pins_refuses() {
    need!(Sandbox, Network);
    let repo = Repo::policy_with_pin("trixie", "sudo", IMPOSSIBLE);
    let junit = repo.path().join("junit.xml");
    let passed = kiln()
        .arg("test")
        .repo(&repo)
        .args(["--release", "trixie", "base", "--junit"])
        .arg(&junit)
        .run()
        .success()
        .stdout_contains("converged (")
        .stdout_contains("idempotent (")
        .stdout_contains(&format!("sudo {IMPOSSIBLE} -> "))
        .stdout_contains("kiln whitelist promote");
    assert!(
        passed.stdout.contains("1/1 role test(s) passed"),
        "{}",
        passed.stdout
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!(
            "<property name=\"kiln.substituted.sudo\" value=\"{IMPOSSIBLE} -&gt; "
        )),
        "{xml}"
    );

    let refused = kiln()
        .arg("test")
        .repo(&repo)
        .args(["--release", "trixie", "base", "--strict-pins"])
        .run()
        .failure();
    assert!(
        refused.stdout.contains(&format!(
            "no source offers the pinned version of sudo {IMPOSSIBLE} (offered: "
        )),
        "{}",
        refused.stdout
    );
    assert!(!refused.stdout.contains("E: Version"), "{}", refused.stdout);
}

#[test]
fn fleet_converge_refuses_a_vanished_pin_before_any_change() {
    need!(Sshd);
    let policy = Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"served by kiln\\n\"\n\n\
             [[resource]]\npackage = \"kiln-hello\"\n",
        )
        .whitelist("[packages]\nkiln-hello = \"9.9-1\"\n");
    let apt = AptRepo::new().package("kiln-hello", "1.0-1");
    let mut fleet = Fleet::new(vec![spec("web01.example.com", &["web"])], |root: &Path| {
        apt.install_into(root);
    });
    fleet.start();
    let out = fleet
        .kiln(&["converge"])
        .arg("--repo")
        .arg(policy.path())
        .run()
        .failure();
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("no source offers the pinned version of kiln-hello 9.9-1 (offered: 1.0-1)"),
        "{said}"
    );
    let host = fleet.host("web01.example.com");
    assert!(
        !host.path().join("etc/kiln-site.conf").exists(),
        "a resource before the package changed the host"
    );
    assert_eq!(host.version("kiln-hello"), None);
}
