//! Fleet rollouts over SSH against test hosts: Debian roots running sshd in
//! their own namespaces on 127.x.y.z, each with the local apt repository.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::apt_repo::AptRepo;
use support::fleet::{Fleet, HostSpec, spec};
use support::*;

fn apt_repo() -> AptRepo {
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1")
        .package("kiln-hello", "3.0+broken-1")
}

/// The web role: a pinned package, a managed file, and health checks (the
/// package at its pin; "broken" builds fail the second check).
fn policy(hello: &str) -> Repo {
    Repo::new()
        .role(
            "web",
            r#"run_list = ["recipe[site]"]

[[verify]]
package = "kiln-hello"

[[verify]]
command = "! grep -q broken /usr/share/kiln-hello/version"
timeout = 0
"#,
        )
        .recipe(
            "site",
            "default",
            r#"[[resource]]
package = "kiln-hello"

[[resource]]
file = "/etc/kiln-site.conf"
content = "served by {{node.fqdn}}\n"

[[resource]]
execute = "slow"
command = "touch /tmp/slow-started && sleep 20"
only_if = "test -e /etc/kiln-slow"
"#,
        )
        .whitelist(&format!("[packages]\nkiln-hello = \"{hello}\"\n"))
}

fn set_pin(repo: &Repo, hello: &str) {
    std::fs::write(
        repo.path().join("whitelist.toml"),
        format!("[packages]\nkiln-hello = \"{hello}\"\n"),
    )
    .unwrap();
}

fn web_fleet(n: usize, canaries: &[usize]) -> Fleet {
    let repo = apt_repo();
    let specs: Vec<HostSpec> = (0..n)
        .map(|i| {
            let mut s = spec(&format!("web{:02}.example.com", i + 1), &["web"]);
            s.canary = canaries.contains(&i);
            s
        })
        .collect();
    let mut f = Fleet::new(specs, |root: &Path| {
        repo.install_into(root);
    });
    f.start();
    f
}

fn json(o: &Outcome) -> serde_json::Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", o.stdout, o.stderr))
}

fn host<'a>(report: &'a serde_json::Value, fqdn: &str) -> &'a serde_json::Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["fqdn"] == fqdn)
        .unwrap_or_else(|| panic!("{fqdn} not in the report"))
}

fn versions(f: &Fleet) -> Vec<Option<String>> {
    f.hosts.iter().map(|h| h.version("kiln-hello")).collect()
}

#[test]
fn rollout_reaches_the_canary_first_then_all_and_rolls_back() {
    let f = web_fleet(8, &[4]);
    let repo = policy("1.0-1");

    // First contact: kiln and the bundle go to every host, all converge.
    let o = f
        .kiln(&["converge", "--json", "--batch", "50%", "--parallel", "4"])
        .repo(&repo)
        .run()
        .success();
    let r = json(&o);
    assert_eq!(r["totals"]["changed"], 8, "{}", o.stdout);
    assert_eq!(r["batches"][0]["name"], "canary");
    assert_eq!(r["batches"][0]["hosts"][0], "web05.example.com");
    for h in r["hosts"].as_array().unwrap() {
        assert_eq!(h["sent_binary"], true);
        assert_eq!(h["sent_bundle"], true);
        assert_eq!(h["health"].as_array().unwrap().len(), 2, "{h}");
    }
    assert!(versions(&f).iter().all(|v| v.as_deref() == Some("1.0-1")));
    assert_eq!(
        read(f.host("web03.example.com").path(), "/etc/kiln-site.conf"),
        "served by web03.example.com\n"
    );

    // Nothing changed: nothing is sent again, nothing converges differently.
    let o = f.kiln(&["converge", "--json"]).repo(&repo).run().success();
    let r = json(&o);
    assert_eq!(r["totals"]["unchanged"], 8, "{}", o.stdout);
    for h in r["hosts"].as_array().unwrap() {
        assert_eq!(h["sent_binary"], false, "{h}");
        assert_eq!(h["sent_bundle"], false, "{h}");
    }

    // A whitelist rollout: the canary first (its line comes first), then all.
    set_pin(&repo, "2.0-1");
    let o = f
        .kiln(&["converge", "--batch", "3", "--parallel", "2"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("== canary (1/4): 1 host(s)");
    let first_host_line = o.stdout.lines().find(|l| l.starts_with("  web")).unwrap();
    assert!(
        first_host_line.contains("web05.example.com") && first_host_line.contains("changed"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("package[kiln-hello]: upgrade 1.0-1 -> 2.0-1")
            || o.stdout.contains("2.0-1"),
        "{}",
        o.stdout
    );
    assert!(versions(&f).iter().all(|v| v.as_deref() == Some("2.0-1")));

    // Why-run fleetwide: which package moves from which version to which,
    // and nothing changes.
    set_pin(&repo, "1.0-1");
    let o = f
        .kiln(&["converge", "--why-run", "--json"])
        .repo(&repo)
        .run()
        .success();
    let r = json(&o);
    assert_eq!(r["totals"]["would_change"], 8, "{}", o.stdout);
    let changes = host(&r, "web02.example.com")["changes"].to_string();
    assert!(
        changes.contains("2.0-1") && changes.contains("1.0-1"),
        "{changes}"
    );
    assert!(versions(&f).iter().all(|v| v.as_deref() == Some("2.0-1")));

    // Rollback by pinning the old version: a downgrade on every host.
    f.kiln(&["converge", "--batch", "4"])
        .repo(&repo)
        .run()
        .success();
    assert!(versions(&f).iter().all(|v| v.as_deref() == Some("1.0-1")));
}

#[test]
fn malformed_inventory_is_an_error_before_any_connection() {
    let repo = policy("1.0-1");
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.toml");
    std::fs::write(
        &inv,
        "known_hosts = \"known_hosts\"\n[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nrols = [\"web\"]\n",
    )
    .unwrap();
    let started = Instant::now();
    kiln()
        .repo(&repo)
        .args(["fleet", "converge", "--inventory"])
        .arg(&inv)
        .run()
        .failure()
        .stderr_contains("inventory.toml:4")
        .stderr_contains("fix:");
    std::fs::write(
        &inv,
        "known_hosts = \"known_hosts\"\n[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"nope\"]\n",
    )
    .unwrap();
    kiln()
        .repo(&repo)
        .args(["fleet", "converge", "--inventory"])
        .arg(&inv)
        .run()
        .failure()
        .stderr_contains("role \"nope\"");
    assert!(started.elapsed() < Duration::from_secs(5));
}
