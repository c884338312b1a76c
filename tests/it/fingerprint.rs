//! `kiln fingerprint` against real Debian roots: hosts converged alike
//! fingerprint alike, drift shows as exactly the drifted resource's line,
//! and a resource two roles manage alike has one part on both.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use crate::support::apt_repo::AptRepo;
use crate::support::*;
use sha2::{Digest, Sha256};

const SHARED_CONF: &str = "port=11211\nmax_connections=64\n";

/// Roles `web` and `cache` share the `common` recipe and differ by one file each.
fn fixture() -> Repo {
    Repo::new()
        .whitelist("[packages]\nkiln-hello = \"1.0-1\"\n")
        .role("web", r#"run_list = ["recipe[common]", "recipe[web]"]"#)
        .role("cache", r#"run_list = ["recipe[common]", "recipe[cache]"]"#)
        .attributes("common", "[common]\nport = 11211\n")
        .template(
            "common",
            "shared.conf.hbs",
            "port={{common.port}}\nmax_connections=64\n",
        )
        .cookbook_file(
            "common",
            "kiln-fp.init",
            "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: kiln-fp\n# Required-Start:\n# Required-Stop:\n# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n# Short-Description: fingerprint demo\n### END INIT INFO\nexit 0\n",
        )
        .recipe(
            "common",
            "default",
            r#"
[[resource]]
group = "fpops"
gid = 2600

[[resource]]
user = "fpuser"
uid = 2601
group = "fpops"
groups = ["adm"]
home = "/home/fpuser"
shell = "/bin/bash"
manage_home = true

[[resource]]
package = "kiln-hello"

[[resource]]
directory = "/etc/kiln-fp"
mode = "0755"

[[resource]]
template = "/etc/kiln-fp/shared.conf"
source = "shared.conf.hbs"
owner = "fpuser"
group = "fpops"
mode = "0640"
notifies = ["run execute[reload-fp]"]

[[resource]]
file = "/etc/kiln-fp/secret"
content = "hunter2\n"
mode = "0600"
sensitive = true

[[resource]]
link = "/etc/kiln-fp/current"
to = "/etc/kiln-fp/shared.conf"

[[resource]]
execute = "reload-fp"
command = "echo reloaded >> /etc/kiln-fp/reloads"
action = "nothing"

[[resource]]
execute = "stamp"
command = "echo stamped > /etc/kiln-fp/stamp"
creates = "/etc/kiln-fp/stamp"

[[resource]]
file = "/etc/init.d/kiln-fp"
source = "kiln-fp.init"
mode = "0755"

[[resource]]
service = "kiln-fp"
action = ["enable", "start"]
"#,
        )
        .recipe(
            "web",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-fp/web.conf\"\ncontent = \"web\\n\"\n",
        )
        .recipe(
            "cache",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-fp/cache.conf\"\ncontent = \"cache\\n\"\n",
        )
}

/// A fresh root whose only apt source is a local repository with kiln-hello.
fn root() -> TestRoot {
    let root = TestRoot::new();
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .install_into(root.path());
    root
}

fn converge(repo: &Repo, root: &TestRoot, role: &str, fqdn: &str) {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", role, "--fqdn", fqdn])
        .run()
        .success();
}

fn fingerprint(root: &TestRoot, extra: &[&str]) -> Outcome {
    kiln()
        .arg("fingerprint")
        .root(root)
        .args(extra)
        .run()
        .success()
}

/// `--explain`: the part lines, and the total on the last line.
fn explain(root: &TestRoot) -> (Vec<String>, String) {
    let out = fingerprint(root, &["--explain"]);
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    let total = lines.pop().expect("a total line");
    (lines, total)
}

#[test]
fn hosts_converged_alike_match_until_one_drifts() {
    need!(DebianRoot);
    let repo = fixture();
    let (a, b) = (root(), root());
    // Different names: nothing host-specific reaches the parts.
    converge(&repo, &a, "web", "web01.example.com");
    converge(&repo, &b, "web", "web02.example.com");

    let (fa, fb) = (fingerprint(&a, &[]), fingerprint(&b, &[]));
    let total = fa.stdout.trim().to_string();
    assert_eq!(total.len(), 64, "{}", fa.stdout);
    assert!(total.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fa.stdout, fb.stdout);

    let (lines_a, total_a) = explain(&a);
    let (lines_b, total_b) = explain(&b);
    assert_eq!(lines_a, lines_b);
    assert_eq!(total_a, total);
    assert_eq!(total_b, total);
    // Sorted, one line per managed resource, and the total is their hash.
    let mut sorted = lines_a.clone();
    sorted.sort();
    assert_eq!(lines_a, sorted);
    let body: String = lines_a.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(hex::encode(Sha256::digest(body.as_bytes())), total);

    let shared = format!(
        "template[/etc/kiln-fp/shared.conf] sha256={} owner=fpuser group=fpops mode=0640",
        hex::encode(Sha256::digest(SHARED_CONF.as_bytes()))
    );
    for want in [
        shared.as_str(),
        "directory[/etc/kiln-fp] owner=root group=root mode=0755",
        "link[/etc/kiln-fp/current] to=/etc/kiln-fp/shared.conf owner=root group=root",
        "user[fpuser] uid=2601 gid=2600 home=/home/fpuser shell=/bin/bash groups=adm",
        "package[kiln-hello] version=1.0-1",
        "service[kiln-fp] enabled=yes",
        "file[/etc/kiln-fp/web.conf] sha256=",
    ] {
        assert!(
            lines_a.iter().any(|l| l.starts_with(want)),
            "no line {want:?} in\n{}",
            lines_a.join("\n")
        );
    }
    assert!(
        lines_a
            .iter()
            .any(|l| l.starts_with("group[fpops] gid=2600 members="))
    );
    // execute contributes nothing; a sensitive file only its hash.
    assert!(!lines_a.iter().any(|l| l.starts_with("execute[")));
    let secret = format!(
        "file[/etc/kiln-fp/secret] sha256={} owner=root group=root mode=0600",
        hex::encode(Sha256::digest(b"hunter2\n"))
    );
    assert!(lines_a.contains(&secret), "{}", lines_a.join("\n"));
    assert!(!lines_a.iter().any(|l| l.contains("hunter2")));
    assert_eq!(lines_a.len(), 10, "{}", lines_a.join("\n"));

    // --json gives the same fingerprint and parts.
    let json: serde_json::Value =
        serde_json::from_str(&fingerprint(&a, &["--json"]).stdout).unwrap();
    assert_eq!(json["fingerprint"], total.as_str());
    let parts = json["parts"].as_array().unwrap();
    assert_eq!(parts.len(), lines_a.len());
    assert_eq!(
        format!(
            "{} {}",
            parts[0]["resource"].as_str().unwrap(),
            parts[0]["part"].as_str().unwrap()
        ),
        lines_a[0]
    );

    // Drift by hand: one file's mode on one host.
    std::fs::set_permissions(
        at(&b, "/etc/kiln-fp/shared.conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (drifted, drifted_total) = explain(&b);
    assert_ne!(drifted_total, total);
    assert_ne!(fingerprint(&b, &[]).stdout, fa.stdout);
    let before: BTreeSet<&String> = lines_a.iter().collect();
    let after: BTreeSet<&String> = drifted.iter().collect();
    let gone: Vec<&&String> = before.difference(&after).collect();
    let new: Vec<&&String> = after.difference(&before).collect();
    assert_eq!(gone, [&&shared]);
    assert_eq!(
        new,
        [&&shared.replace("mode=0640", "mode=0644")],
        "{}",
        drifted.join("\n")
    );

    // The next converge repairs it, and the fingerprints agree again.
    converge(&repo, &b, "web", "web02.example.com");
    assert_eq!(fingerprint(&b, &[]).stdout, fa.stdout);
}

#[test]
fn a_resource_two_roles_manage_alike_has_one_part() {
    need!(DebianRoot);
    let repo = fixture();
    let (web, cache) = (root(), root());
    converge(&repo, &web, "web", "web01.example.com");
    converge(&repo, &cache, "cache", "cache01.example.com");

    let (w, w_total) = explain(&web);
    let (c, c_total) = explain(&cache);
    assert_ne!(w_total, c_total);
    let w: BTreeSet<&String> = w.iter().collect();
    let c: BTreeSet<&String> = c.iter().collect();
    let only_web: Vec<&str> = w.difference(&c).map(|l| l.as_str()).collect();
    let only_cache: Vec<&str> = c.difference(&w).map(|l| l.as_str()).collect();
    // Everything of the common recipe is the same line on both hosts.
    assert_eq!(only_web.len(), 1, "{only_web:?}");
    assert!(only_web[0].starts_with("file[/etc/kiln-fp/web.conf] "));
    assert_eq!(only_cache.len(), 1, "{only_cache:?}");
    assert!(only_cache[0].starts_with("file[/etc/kiln-fp/cache.conf] "));
    assert!(
        w.iter()
            .any(|l| l.starts_with("template[/etc/kiln-fp/shared.conf] "))
    );
}

#[test]
fn without_a_last_run_it_says_what_to_do_and_policy_can_stand_in() {
    need!(DebianRoot);
    let repo = fixture();
    let root = root();
    kiln()
        .arg("fingerprint")
        .root(&root)
        .run()
        .code(1)
        .stderr_contains("no kiln run recorded")
        .stderr_contains("run kiln converge first, or pass --role R to fingerprint by policy");

    // By policy, before any converge: the same resources, as they are now.
    let by_policy = kiln()
        .arg("fingerprint")
        .repo(&repo)
        .root(&root)
        .args(["--role", "web", "--explain"])
        .run()
        .success()
        .stdout_contains("template[/etc/kiln-fp/shared.conf] absent")
        .stdout_contains("user[fpuser] absent")
        .stdout_contains("package[kiln-hello] absent")
        .stdout_contains("service[kiln-fp] absent");
    assert_eq!(by_policy.stdout.lines().count(), 11, "{}", by_policy.stdout);

    // After a converge, the last run and the policy name the same resources.
    converge(&repo, &root, "web", "web01.example.com");
    let from_run = fingerprint(&root, &["--explain"]);
    let from_policy = kiln()
        .arg("fingerprint")
        .repo(&repo)
        .root(&root)
        .args(["--role", "web", "--fqdn", "web01.example.com", "--explain"])
        .run()
        .success();
    assert_eq!(from_run.stdout, from_policy.stdout);
    assert_ne!(from_run.stdout, by_policy.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&read(&root, "/var/lib/kiln/last_run.json")).unwrap();
    let managed = report["managed"].as_array().unwrap();
    assert!(managed.iter().any(|m| m == "execute[stamp]"));
    // Only notified: it manages nothing of its own.
    assert!(!managed.iter().any(|m| m == "execute[reload-fp]"));
}
