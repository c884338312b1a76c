//! Fleet rollouts over SSH against test hosts: Debian roots running sshd in
//! their own namespaces on 127.x.y.z, each with the local apt repository.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::apt_repo::AptRepo;
use crate::support::fleet::{Fleet, HostSpec, spec};
use crate::support::*;

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
content = "served by kiln\n"

[[resource]]
execute = "slow"
command = "touch /tmp/slow-started && sleep $(cat /etc/kiln-slow)"
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
    need!(Sshd);
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
        "served by kiln\n"
    );

    // Nothing changed: nothing is sent again, nothing converges differently.
    let o = f.kiln(&["converge", "--json"]).repo(&repo).run().success();
    let r = json(&o);
    assert_eq!(r["totals"]["unchanged"], 8, "{}", o.stdout);
    for h in r["hosts"].as_array().unwrap() {
        assert_eq!(h["sent_binary"], false, "{h}");
        assert_eq!(h["sent_bundle"], false, "{h}");
    }

    // A host whose key is not in known_hosts is refused, unless first
    // contact is allowed with --accept-new-host-keys (which records it).
    let kh = std::fs::read_to_string(f.known_hosts()).unwrap();
    let web08 = f.host("web08.example.com").address.clone();
    let without: String = kh
        .lines()
        .filter(|l| !l.starts_with(&format!("{web08} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(f.known_hosts(), &without).unwrap();
    f.close_masters();
    let o = f
        .kiln(&["converge", "--json", "--hosts", "web08*"])
        .repo(&repo)
        .run()
        .failure();
    let r = json(&o);
    assert_eq!(r["totals"]["hosts"], 1, "--hosts selects: {}", o.stdout);
    assert_eq!(host(&r, "web08.example.com")["failure"]["kind"], "host key");
    assert!(
        failure(&r, "web08.example.com").contains("not in the known_hosts"),
        "{}",
        o.stdout
    );
    f.kiln(&["converge", "--hosts", "web08*", "--accept-new-host-keys"])
        .repo(&repo)
        .run()
        .success();
    assert!(
        std::fs::read_to_string(f.known_hosts())
            .unwrap()
            .contains(&web08)
    );

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
    let o = f
        .kiln(&["converge", "--why-run"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("would change:");
    assert!(
        o.stdout.lines().any(|l| l.contains("package[kiln-hello]")
            && l.contains("2.0-1 -> 1.0-1")
            && l.contains("(8 hosts)")),
        "{}",
        o.stdout
    );

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

fn state<'a>(r: &'a serde_json::Value, fqdn: &str) -> &'a str {
    host(r, fqdn)["state"].as_str().unwrap()
}

fn failure(r: &serde_json::Value, fqdn: &str) -> String {
    host(r, fqdn)["failure"].to_string()
}

#[test]
fn a_failed_canary_health_check_holds_the_push_and_status_shows_drift() {
    need!(Sshd);
    let f = web_fleet(8, &[0]);
    let repo = policy("1.0-1");
    f.kiln(&["converge", "--batch", "4"])
        .repo(&repo)
        .run()
        .success();

    // 3.0+broken-1 installs fine but fails the role's health check on the
    // canary: the push holds, no other host is touched.
    set_pin(&repo, "3.0+broken-1");
    let o = f
        .kiln(&["converge", "--batch", "4"])
        .repo(&repo)
        .run()
        .failure()
        .stdout_contains("PUSH HOLD: canary web01.example.com failed")
        .stdout_contains("health check failed");
    let o2 = f
        .kiln(&["converge", "--json", "--batch", "4"])
        .repo(&repo)
        .run()
        .failure();
    let r = json(&o2);
    assert_eq!(r["held"], true);
    assert_eq!(r["totals"]["failed"], 1, "{}", o2.stdout);
    assert_eq!(r["totals"]["not_reached"], 7, "{}", o2.stdout);
    assert!(
        failure(&r, "web01.example.com").contains("broken"),
        "{}",
        o.stdout
    );
    assert_eq!(state(&r, "web05.example.com"), "not_reached");
    assert_eq!(
        f.host("web01.example.com").version("kiln-hello").as_deref(),
        Some("3.0+broken-1")
    );
    for h in &f.hosts[1..] {
        assert_eq!(
            h.version("kiln-hello").as_deref(),
            Some("1.0-1"),
            "{}",
            h.fqdn
        );
    }

    // Rollback by pinning the old version: the canary goes back down.
    set_pin(&repo, "1.0-1");
    f.kiln(&["converge"]).repo(&repo).run().success();
    assert!(versions(&f).iter().all(|v| v.as_deref() == Some("1.0-1")));

    // Status: no drift, then a change by hand on one host shows as drift,
    // with the part that differs.
    let o = f.kiln(&["status"]).repo(&repo).run().success();
    assert!(o.stdout.contains("no drift"), "{}", o.stdout);
    std::fs::write(
        at(f.host("web06.example.com").path(), "/etc/kiln-site.conf"),
        "edited by hand\n",
    )
    .unwrap();
    let o = f
        .kiln(&["status"])
        .repo(&repo)
        .run()
        .failure()
        .stdout_contains("drift on web06.example.com (roles web, bookworm):")
        .stdout_contains("file[/etc/kiln-site.conf]: update content");
    let j = f.kiln(&["status", "--json"]).repo(&repo).run().failure();
    let s = json(&j);
    let hosts = s["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 8);
    assert!(
        hosts.iter().all(|h| h["last_run"]["success"] == true),
        "{}",
        o.stdout
    );
    assert_eq!(s["drift"].as_array().unwrap().len(), 1, "{}", j.stdout);
    assert_eq!(s["drift"][0]["fqdn"], "web06.example.com");
}

/// A policy where every host differs by design: a motd with the host's
/// fqdn, and a rollout that gives web01 another package version.
fn policy_per_host() -> Repo {
    policy("1.0-1")
        .recipe(
            "site",
            "default",
            r#"[[resource]]
package = "kiln-hello"

[[resource]]
file = "/etc/kiln-site.conf"
content = "served by kiln\n"

[[resource]]
template = "/etc/motd"
source = "motd.hbs"
"#,
        )
        .template("site", "motd.hbs", "{{site.greeting}} from {{node.fqdn}}\n")
        .attributes("site", "[site]\ngreeting = \"hello\"\n")
        .whitelist(
            r#"[packages]
kiln-hello = "1.0-1"

[rollouts.hello-2]
hosts = ["web01.*"]
packages = { kiln-hello = "2.0-1" }
"#,
        )
}

#[test]
fn status_judges_each_host_against_its_own_policy() {
    need!(Sshd);
    let f = web_fleet(3, &[]);
    let repo = policy_per_host();
    f.kiln(&["converge"]).repo(&repo).run().success();
    assert_eq!(
        read(f.host("web01.example.com").path(), "/etc/motd"),
        "hello from web01.example.com\n"
    );
    assert_eq!(
        f.host("web01.example.com").version("kiln-hello").as_deref(),
        Some("2.0-1")
    );

    // Freshly converged: every fingerprint differs (motd, the rollout),
    // and that is no drift.
    let o = f
        .kiln(&["status"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("no drift")
        .stdout_lacks("DRIFT");
    let j = json(&f.kiln(&["status", "--json"]).repo(&repo).run().success());
    assert_eq!(j["drift"], serde_json::json!([]), "{}", o.stdout);

    // A line added by hand to a managed file on one host: that host, that
    // resource, with a diff, and no other host.
    let conf = at(f.host("web02.example.com").path(), "/etc/kiln-site.conf");
    std::fs::write(&conf, "served by kiln\nadded by hand\n").unwrap();
    let o = f
        .kiln(&["status"])
        .repo(&repo)
        .run()
        .failure()
        .stdout_contains("drift on web02.example.com (roles web, bookworm):")
        .stdout_contains("file[/etc/kiln-site.conf]: update content")
        .stdout_contains("-added by hand");
    for clean in ["web01.example.com", "web03.example.com"] {
        assert!(
            !o.stdout.contains(&format!("drift on {clean}")),
            "{}",
            o.stdout
        );
    }
    let j = json(&f.kiln(&["status", "--json"]).repo(&repo).run().failure());
    let drift = j["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{j}");
    assert_eq!(drift[0]["fqdn"], "web02.example.com");
    assert_eq!(
        drift[0]["resources"][0]["resource"],
        "file[/etc/kiln-site.conf]"
    );
    assert_eq!(drift[0]["parts"], serde_json::json!([]), "{j}");

    // The fleet's why-run shows the same diff.
    f.kiln(&["converge", "--why-run"])
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("file[/etc/kiln-site.conf]: update content")
        .stdout_contains("-added by hand");
}

#[test]
fn faults_are_reported_per_host_and_count_toward_max_fail() {
    need!(Sshd);
    let mut f = web_fleet(8, &[]);
    let repo = policy("1.0-1");
    f.kiln(&["converge"]).repo(&repo).run().success();
    f.close_masters();

    // web02: unreachable (nothing listens). web03: refuses our key. web04:
    // its host key changed. web05: sha256sum there disagrees with the
    // bundle. web06: its converge fails. web07: dies mid-converge.
    f.host_mut("web02.example.com").kill();
    std::fs::remove_file(at(
        f.host("web03.example.com").path(),
        "/root/.ssh/authorized_keys",
    ))
    .unwrap();
    let kh = std::fs::read_to_string(f.known_hosts()).unwrap();
    let web04 = f.host("web04.example.com").address.clone();
    let other = kh
        .lines()
        .find(|l| !l.starts_with(&format!("{web04} ")))
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let kh: String = kh
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{web04} ")) {
                format!("{web04} {other}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(f.known_hosts(), kh).unwrap();
    let fake = at(f.host("web05.example.com").path(), "/usr/bin/sha256sum");
    std::fs::remove_file(&fake).unwrap();
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"0000000000000000000000000000000000000000000000000000000000000000  $1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .unwrap();
    std::fs::remove_file(at(
        f.host("web06.example.com").path(),
        "/etc/kiln-site.conf",
    ))
    .unwrap();
    std::fs::create_dir(at(
        f.host("web06.example.com").path(),
        "/etc/kiln-site.conf",
    ))
    .unwrap();
    std::fs::create_dir(at(
        f.host("web06.example.com").path(),
        "/etc/kiln-site.conf/x",
    ))
    .unwrap();
    std::fs::write(
        at(f.host("web07.example.com").path(), "/etc/kiln-slow"),
        "20",
    )
    .unwrap();

    set_pin(&repo, "2.0-1");
    let started = at(f.host("web07.example.com").path(), "/tmp/slow-started");
    let o = std::thread::scope(|s| {
        let run = s.spawn(|| {
            f.kiln(&["converge", "--json", "--max-fail", "10", "--parallel", "8"])
                .repo(&repo)
                .run()
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while !started.exists() {
            assert!(
                Instant::now() < deadline,
                "web07 never reached its slow step"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Safe: the other thread only reads the fleet's paths.
        let pid_group = f.host("web07.example.com").sshd_pid().unwrap();
        unsafe {
            libc::kill(-(pid_group as i32), libc::SIGKILL);
        }
        run.join().unwrap()
    });
    let o = o.failure();
    let r = json(&o);
    let all = o.stdout.clone();
    assert_eq!(state(&r, "web01.example.com"), "changed", "{all}");
    assert_eq!(state(&r, "web08.example.com"), "changed", "{all}");
    let expect = [
        ("web02.example.com", "unreachable"),
        ("web03.example.com", "key refused"),
        ("web04.example.com", "host key"),
        ("web05.example.com", "bundle hash mismatch"),
        ("web06.example.com", "converge failed"),
        ("web07.example.com", "host lost mid-converge"),
    ];
    for (h, kind) in expect {
        assert_eq!(state(&r, h), "failed", "{h}: {all}");
        assert_eq!(host(&r, h)["failure"]["kind"], kind, "{h}: {all}");
    }
    assert!(
        failure(&r, "web04.example.com").contains("does not match"),
        "{all}"
    );
    assert!(
        failure(&r, "web06.example.com").contains("kiln-site.conf"),
        "{all}"
    );
    assert_eq!(r["totals"]["failed"], 6);
    assert_eq!(r["held"], false, "6 failures are within --max-fail 10");

    // --max-fail 0, one host at a time: the first failure (web02) holds
    // the push; no host after it is touched.
    let o = f
        .kiln(&["converge", "--json", "--parallel", "1"])
        .repo(&repo)
        .run()
        .failure();
    let r = json(&o);
    assert_eq!(r["held"], true);
    assert_eq!(state(&r, "web01.example.com"), "unchanged");
    assert_eq!(state(&r, "web02.example.com"), "failed");
    for h in ["web03", "web04", "web05", "web06", "web07", "web08"] {
        assert_eq!(
            state(&r, &format!("{h}.example.com")),
            "not_reached",
            "{}",
            o.stdout
        );
    }
}

#[test]
fn ctrl_c_holds_the_push_and_lets_hosts_in_flight_finish() {
    need!(Sshd);
    let f = web_fleet(3, &[]);
    let repo = policy("1.0-1");
    f.kiln(&["converge"]).repo(&repo).run().success();
    std::fs::write(
        at(f.host("web01.example.com").path(), "/etc/kiln-slow"),
        "3",
    )
    .unwrap();
    set_pin(&repo, "2.0-1");
    let control = f.dir.path().join("ctl");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_SSH_CONTROL_DIR", &control)
        .env("KILN_FLEET_BINARY", crate::support::fleet::kiln_binary())
        .arg("--repo")
        .arg(repo.path())
        .args([
            "fleet",
            "converge",
            "--json",
            "--parallel",
            "1",
            "--inventory",
        ])
        .arg(f.inventory())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = at(f.host("web01.example.com").path(), "/tmp/slow-started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "web01 never reached its slow step"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signals the kiln process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["held"], true);
    assert!(
        r["hold_reason"].as_str().unwrap().contains("interrupted"),
        "{stdout}"
    );
    assert_eq!(state(&r, "web01.example.com"), "changed", "{stdout}");
    assert_eq!(state(&r, "web02.example.com"), "not_reached", "{stdout}");
    assert_eq!(state(&r, "web03.example.com"), "not_reached", "{stdout}");
    assert_eq!(
        f.host("web01.example.com").version("kiln-hello").as_deref(),
        Some("2.0-1")
    );
    assert_eq!(
        f.host("web02.example.com").version("kiln-hello").as_deref(),
        Some("1.0-1")
    );
}

#[test]
fn the_push_hold_names_a_failed_canary_and_what_changed_on_it() {
    need!(Sshd);
    let f = web_fleet(2, &[0]);
    let repo = policy("1.0-1");
    f.kiln(&["converge"]).repo(&repo).run().success();
    // The canary upgrades, then fails its health check: it is left changed,
    // and the summary says so, with the change, instead of "changed: none".
    set_pin(&repo, "3.0+broken-1");
    let o = f
        .kiln(&["converge"])
        .repo(&repo)
        .run()
        .failure()
        .stdout_contains("PUSH HOLD: canary web01.example.com failed")
        .stdout_contains("  changed: web01.example.com (failed)\n")
        .stdout_contains("    web01.example.com, before it failed:\n");
    let hold = &o.stdout[o.stdout.find("PUSH HOLD").unwrap()..];
    let left = hold
        .lines()
        .skip_while(|l| !l.contains("before it failed"))
        .nth(1)
        .unwrap_or("");
    assert!(
        left.contains("package[kiln-hello]") && left.contains("1.0-1 -> 3.0+broken-1"),
        "{}",
        o.stdout
    );
    assert!(hold.contains("not reached: web02.example.com"), "{hold}");
}

/// A host's strings reach the terminal as text: escape sequences planted
/// in its os-release are shown escaped, never sent raw.
#[test]
fn a_hosts_escape_sequences_never_reach_the_terminal() {
    need!(Sshd);
    let f = web_fleet(1, &[]);
    let repo = policy("1.0-1");
    f.kiln(&["converge"]).repo(&repo).run().success();
    let host = f.host("web01.example.com");
    let os = std::fs::read_to_string(at(host.path(), "/etc/os-release")).unwrap();
    let planted: String = os
        .lines()
        .map(|l| match l.strip_prefix("VERSION_CODENAME=") {
            Some(v) => format!("VERSION_CODENAME={v}\x1b]0;owned\x07\x1b[2J\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = at(host.path(), "/etc/os-release");
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, planted).unwrap();
    let out = f.kiln(&["status"]).repo(&repo).run();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains('\x1b') && !all.contains('\x07'), "{all:?}");
    assert!(all.contains("\\x1b]0;owned\\x07\\x1b[2J"), "{all}");
}
