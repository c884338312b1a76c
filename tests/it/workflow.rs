//! The README's rollout of a security update, end to end, as an ops
//! engineer new to kiln runs it: a git checkout of the policy, every command
//! run from inside it with the default `--repo`, three test hosts over ssh
//! with one canary. outdated, stage (the canary), fleet converge (only the
//! canary changes), promote (git diff shows it), fleet converge (all), then
//! a rollback pin and a converge.

use std::path::Path;
use std::process::Command;

use crate::support::apt_repo::AptRepo;
use crate::support::fleet::{Fleet, spec};
use crate::support::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=ops", "-c", "user.email=ops@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(o: &Outcome) -> serde_json::Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", o.stdout, o.stderr))
}

#[test]
fn a_security_update_goes_to_the_canary_then_everywhere_and_rolls_back() {
    need!(Sshd);
    let apt = AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "1.0-1+deb12u1");
    let mut specs = vec![
        spec("web01.example.com", &["web"]),
        spec("web02.example.com", &["web"]),
        spec("web03.example.com", &["web"]),
    ];
    specs[0].canary = true;
    let mut f = Fleet::new(specs, |root: &Path| {
        apt.install_into(root);
    });
    f.start();

    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            "[[resource]]\npackage = \"kiln-hello\"\n\n\
             [[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"served by kiln\\n\"\n",
        )
        .whitelist("# the fleet's pins\n[packages]\nkiln-hello = \"1.0-1\"\n");
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "policy"]);
    let here = |args: &[&str]| kiln().current_dir(dir).args(args);
    let push = || f.kiln(&["converge", "--json"]).current_dir(dir).run();
    let versions =
        || -> Vec<Option<String>> { f.hosts.iter().map(|h| h.version("kiln-hello")).collect() };
    let all = |v: &str| vec![Some(v.to_string()); 3];

    let r = json(&push().success());
    assert_eq!(r["totals"]["changed"], 3, "{r}");
    assert_eq!(versions(), all("1.0-1"));

    // What the canary's sources offer beyond the pins.
    let canary = f.host("web01.example.com").path().to_path_buf();
    here(&["whitelist", "outdated", "--role", "web", "--root"])
        .arg(&canary)
        .run()
        .success()
        .stdout_contains("kiln-hello 1.0-1 (packages): newer: 1.0-1+deb12u1");
    here(&["whitelist", "stage", "hello-sec", "kiln-hello"])
        .args(["--hosts", "web01.*", "--role", "web", "--root"])
        .arg(&canary)
        .run()
        .success()
        .stdout_contains("kiln-hello: 1.0-1 -> 1.0-1+deb12u1");
    assert!(git(dir, &["diff"]).contains("+[rollouts.hello-sec]"));
    assert!(!Path::new("/whitelist.toml").exists());

    // Canary first: only it changes.
    let r = json(&push().success());
    assert_eq!(r["totals"]["changed"], 1, "{r}");
    assert_eq!(
        versions(),
        [
            Some("1.0-1+deb12u1".to_string()),
            Some("1.0-1".into()),
            Some("1.0-1".into())
        ]
    );

    // Promote: the rollout's version becomes the fleet's pin.
    here(&["whitelist", "promote", "hello-sec"]).run().success();
    let diff = git(dir, &["diff"]);
    assert!(diff.contains("+kiln-hello = \"1.0-1+deb12u1\""), "{diff}");
    assert!(!diff.contains("[rollouts.hello-sec]"), "{diff}");
    let r = json(&push().success());
    assert_eq!(r["totals"]["changed"], 2, "{r}");
    assert_eq!(versions(), all("1.0-1+deb12u1"));
    git(dir, &["commit", "-qam", "promote hello-sec"]);

    // It misbehaves: pin the old version back and converge.
    git(dir, &["revert", "--no-edit", "HEAD"]);
    let r = json(&push().success());
    assert_eq!(r["totals"]["changed"], 3, "{r}");
    assert_eq!(versions(), all("1.0-1"));
    for h in &f.hosts {
        let want = h.sh("dpkg-query -W -f '${db:Status-Want}' kiln-hello");
        assert_eq!(want.trim(), "hold", "{} after the rollback", h.fqdn);
    }
    let r = json(&push().success());
    assert_eq!(r["totals"]["unchanged"], 3, "{r}");
}
