//! Rollouts beyond packages: a `[rollouts.NAME]` that carries attributes,
//! recipes and gates to some hosts (by name, role or a stable percentage)
//! and not to others, converged on real Debian roots; `kiln whitelist
//! explain --rollout` over an inventory; and what `kiln check` refuses.

use crate::support::*;

/// A web role whose template, gated files and appended recipe depend on
/// whether the host is in rollout `bigpool`; `whitelist` decides who is.
fn web_repo(whitelist: &str) -> Repo {
    Repo::new()
        .role(
            "web",
            "run_list = [\"recipe[app]\"]\n[override_attributes.app]\nworkers = 8\n",
        )
        .attributes("app", "[app]\nworkers = 4\n")
        .template(
            "app",
            "app.conf.hbs",
            "workers={{app.workers}}\n{{#if (in_rollout \"bigpool\")}}pool=new\n{{else}}pool=old\n{{/if}}",
        )
        .recipe(
            "app",
            "default",
            r#"
[[resource]]
template = "/etc/app.conf"
source = "app.conf.hbs"

[[resource]]
file = "/etc/app-canary"
content = "canary\n"
only_in_rollout = "bigpool"

[[resource]]
file = "/etc/app-stable"
content = "stable\n"
not_in_rollout = "bigpool"
"#,
        )
        .recipe(
            "extra",
            "default",
            "[[resource]]\nfile = \"/etc/extra\"\ncontent = \"extra\\n\"\n",
        )
        .whitelist(whitelist)
}

fn converge(repo: &Repo, root: &TestRoot, fqdn: &str) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "web", "--fqdn", fqdn])
        .run()
}

const BIGPOOL_FOR_WEB01: &str = r#"[packages]

[rollouts.bigpool]
hosts = ["web01.example.com"]
run_list = ["recipe[extra]"]
attributes = { app = { workers = 16 } }
"#;

#[test]
fn a_rollout_carries_attributes_recipes_and_gates_to_its_hosts_only() {
    need!(DebianRoot);
    let repo = web_repo(BIGPOOL_FOR_WEB01);
    let (inside, outside) = (TestRoot::new(), TestRoot::new());
    converge(&repo, &inside, "web01.example.com").success();
    converge(&repo, &outside, "web02.example.com").success();

    // In: the rollout's value wins over the role's override_attributes,
    // the template's section and the gated file are there, and its recipe
    // ran; the file gated to hosts outside is not.
    assert_eq!(read(&inside, "/etc/app.conf"), "workers=16\npool=new\n");
    assert_eq!(read(&inside, "/etc/app-canary"), "canary\n");
    assert_eq!(read(&inside, "/etc/extra"), "extra\n");
    assert!(!at(&inside, "/etc/app-stable").exists());

    // Out: the role's value, the other section, the other gate.
    assert_eq!(read(&outside, "/etc/app.conf"), "workers=8\npool=old\n");
    assert_eq!(read(&outside, "/etc/app-stable"), "stable\n");
    assert!(!at(&outside, "/etc/app-canary").exists());
    assert!(!at(&outside, "/etc/extra").exists());

    // A second run on the host in the rollout changes nothing.
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&inside)
        .args(["--role", "web", "--fqdn", "web01.example.com"])
        .arg("--detailed-exitcodes")
        .run()
        .code(0);

    // Promote would leave the gates naming a rollout that is gone: refused,
    // each gate at its file and line, and nothing is written.
    let before = std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap();
    let role = std::fs::read_to_string(repo.path().join("roles/web.toml")).unwrap();
    let out = kiln()
        .args(["whitelist", "promote", "bigpool"])
        .repo(&repo)
        .run()
        .failure();
    assert!(out.stderr.contains("--to role:NAME"), "{}", out.stderr);
    let out = kiln()
        .args(["whitelist", "promote", "bigpool", "--to", "role:web"])
        .repo(&repo)
        .run()
        .failure();
    for at in [
        "cookbooks/app/recipes/default.toml:6: only_in_rollout",
        "cookbooks/app/recipes/default.toml:11: not_in_rollout",
        "cookbooks/app/templates/app.conf.hbs:2: in_rollout",
    ] {
        assert!(out.stderr.contains(at), "no {at} in:\n{}", out.stderr);
    }
    assert!(out.stderr.contains("fix: "), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("roles/web.toml")).unwrap(),
        role
    );
}

/// An inventory of `n` web hosts, `web000.example.com` up.
fn fleet(repo: &Repo, n: usize) -> std::path::PathBuf {
    let mut text = String::from("known_hosts = \"known_hosts\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[hosts.\"web{i:03}.example.com\"]\naddress = \"10.0.{}.{}\"\nroles = [\"web\"]\n",
            i / 200,
            i % 200 + 1
        ));
    }
    let path = repo.path().join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `kiln whitelist explain --rollout bigpool --inventory INVENTORY`
fn explain_bigpool(repo: &Repo, inventory: &std::path::Path) -> Kiln {
    kiln()
        .args(["whitelist", "explain", "--rollout", "bigpool"])
        .arg("--inventory")
        .arg(inventory)
        .repo(repo)
}

/// The fqdns `explain --rollout bigpool --json` lists in, and all it lists.
fn explain(repo: &Repo, inventory: &std::path::Path) -> (Vec<String>, usize) {
    let out = explain_bigpool(repo, inventory)
        .arg("--json")
        .run()
        .success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    for h in hosts {
        assert!(!h["reason"].as_str().unwrap().is_empty(), "{h}");
    }
    let inside = hosts
        .iter()
        .filter(|h| h["in"] == true)
        .map(|h| h["fqdn"].as_str().unwrap().to_string())
        .collect();
    (inside, hosts.len())
}

fn percent_rollout(percent: u32) -> String {
    format!(
        "[packages]\n\n[rollouts.bigpool]\nhosts = [\"web007.example.com\"]\nroles = [\"web\"]\npercent = {percent}\nattributes = {{ app = {{ workers = 16 }} }}\n"
    )
}

#[test]
fn a_percentage_keeps_its_hosts_when_raised_and_explain_lists_who_is_in() {
    let repo = web_repo(&percent_rollout(0));
    let inventory = fleet(&repo, 60);
    // At 0%, only the host named in hosts.
    let (zero, all) = explain(&repo, &inventory);
    assert_eq!((zero, all), (vec!["web007.example.com".to_string()], 60));
    let text = explain_bigpool(&repo, &inventory).run().success();
    assert!(
        text.stdout.lines().any(|l| l.contains("in ")
            && l.contains("web007.example.com")
            && l.contains("named in hosts")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("is not below 0%"), "{}", text.stdout);

    let mut before: Vec<String> = Vec::new();
    for percent in [10, 25, 50, 100] {
        let repo = web_repo(&percent_rollout(percent));
        let (inside, _) = explain(&repo, &inventory);
        for h in &before {
            assert!(inside.contains(h), "{h} left the rollout at {percent}%");
        }
        assert!(inside.contains(&"web007.example.com".to_string()));
        before = inside;
    }
    assert_eq!(before.len(), 60);
}

#[test]
fn the_hosts_explain_lists_get_the_rollout_and_the_others_do_not() {
    need!(DebianRoot);
    let repo = web_repo(&percent_rollout(50));
    let inventory = fleet(&repo, 20);
    let (inside, _) = explain(&repo, &inventory);
    let host_in = inside
        .iter()
        .find(|h| h.as_str() != "web007.example.com")
        .expect("some host of 20 falls within 50%")
        .clone();
    let host_out = (0..20)
        .map(|i| format!("web{i:03}.example.com"))
        .find(|h| !inside.contains(h))
        .expect("some host of 20 falls beyond 50%");
    let (a, b) = (TestRoot::new(), TestRoot::new());
    converge(&repo, &a, &host_in).success();
    converge(&repo, &b, &host_out).success();
    assert_eq!(read(&a, "/etc/app.conf"), "workers=16\npool=new\n");
    assert_eq!(read(&b, "/etc/app.conf"), "workers=8\npool=old\n");
}

#[test]
fn check_refuses_unknown_gates_bad_percentages_and_clashing_rollouts() {
    let repo = web_repo(
        r#"[packages]

[rollouts.bigpool]
roles = ["web"]
percent = 150
attributes = { app = { workers = 16 } }

[rollouts.smallpool]
roles = ["web"]
attributes = { app = { workers = 2 } }

[rollouts.canaries]
hosts = ["web00*"]
[rollouts.canaries.attributes.app]
workers = 32
"#,
    )
    .recipe(
        "extra",
        "default",
        "[[resource]]\nfile = \"/etc/extra\"\ncontent = \"x\\n\"\nonly_in_rollout = \"bigpol\"\n",
    )
    .role("other", "run_list = [\"recipe[extra]\"]\n");
    let out = kiln().arg("check").repo(&repo).run().failure();
    let err = &out.stderr;
    let has = |place: &str, what: &str, fix: &str| {
        assert!(
            err.lines().any(|l| l.contains(place) && l.contains(what)) && err.contains(fix),
            "no {place} {what:?} with {fix:?} in:\n{err}"
        );
    };
    has(
        "cookbooks/extra/recipes/default.toml:1",
        "only_in_rollout: rollout \"bigpol\" is not defined",
        "name one of: bigpool, canaries, smallpool",
    );
    has(
        "whitelist.toml:5",
        "percent = 150 is outside 0-100",
        "from 0 to 100",
    );
    has(
        "whitelist.toml:10",
        "rollouts \"bigpool\" (line 6) and \"smallpool\" both set app.workers on hosts of role web",
        "set app.workers in one of them only",
    );
    // Stage refuses what check would, and writes nothing.
    let out = kiln()
        .args([
            "whitelist",
            "stage",
            "more",
            "--roles",
            "web",
            "--percent",
            "101",
        ])
        .args(["--attribute", "app.workers=3"])
        .repo(&repo)
        .run()
        .failure();
    assert!(
        out.stderr.contains("--percent 101 is outside 0-100"),
        "{}",
        out.stderr
    );
    let out = kiln()
        .args(["whitelist", "stage", "more", "--roles", "web"])
        .args(["--attribute", "workers=3"])
        .repo(&repo)
        .run()
        .failure();
    assert!(
        out.stderr.contains("under its cookbook's name") && out.stderr.contains("fix: "),
        "{}",
        out.stderr
    );
    // A pattern and a role meet on a host of the fleet only.
    assert!(!err.contains("\"canaries\""), "{err}");
    fleet(&repo, 2);
    let out = kiln().arg("check").repo(&repo).run().failure();
    assert!(
        out.stderr.lines().any(|l| l.contains("whitelist.toml:15")
            && l.contains("and \"canaries\" both set app.workers on web000.example.com")),
        "{}",
        out.stderr
    );
}

/// A db role and a MariaDB server setting, as the mariadb cookbook writes
/// it (the server itself is not installed: the config is what a rollout
/// changes). Each file carries comments that edits must keep.
fn db_repo() -> Repo {
    Repo::new()
        .role("db", DB_ROLE)
        .attributes(
            "mariadb",
            "# the cookbook's defaults\n[mariadb]\ninnodb_buffer_pool_mb = 128\n",
        )
        .template(
            "mariadb",
            "kiln.cnf.hbs",
            "[mysqld]\ninnodb_buffer_pool_size = {{mariadb.innodb_buffer_pool_mb}}M\n",
        )
        .recipe(
            "mariadb",
            "default",
            "[[resource]]\ndirectory = \"/etc/mysql/mariadb.conf.d\"\nrecursive = true\n\n\
             [[resource]]\ntemplate = \"/etc/mysql/mariadb.conf.d/60-kiln.cnf\"\nsource = \"kiln.cnf.hbs\"\n",
        )
        .whitelist(DB_WHITELIST)
}

const DB_ROLE: &str = "# Production database node\ndescription = \"db\"\nrun_list = [\"recipe[mariadb]\"]  # the server\n";
const DB_WHITELIST: &str = "# every package kiln may install\n[packages]\n";
const CNF: &str = "/etc/mysql/mariadb.conf.d/60-kiln.cnf";

/// The buffer pool a host's config sets, in MB.
fn pool(host: &crate::support::fleet::TestHost) -> String {
    read(host.path(), CNF)
        .lines()
        .find_map(|l| l.strip_prefix("innodb_buffer_pool_size = "))
        .unwrap_or_else(|| panic!("no pool in {}'s config", host.fqdn))
        .to_string()
}

fn fleet_json(o: &Outcome) -> serde_json::Value {
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", o.stdout, o.stderr))
}

/// Each host's result in a `fleet converge --json`, by fqdn.
fn states(
    r: &serde_json::Value,
) -> std::collections::BTreeMap<String, (String, serde_json::Value)> {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["fqdn"].as_str().unwrap().to_string(),
                (
                    h["state"].as_str().unwrap().to_string(),
                    h["rollouts"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_fleet_takes_a_mariadb_setting_by_percent_then_by_role_after_promote() {
    need!(Sshd);
    use crate::support::fleet::{Fleet, spec};
    let repo = db_repo();
    let names: Vec<String> = (1..=5).map(|i| format!("db{i:02}.example.com")).collect();
    let mut f = Fleet::new(names.iter().map(|n| spec(n, &["db"])).collect(), |_| {});
    f.start();
    let inventory = f.inventory();

    // Stage: db01 by name, half of the db hosts by share.
    kiln()
        .args([
            "whitelist",
            "stage",
            "bufpool",
            "--roles",
            "db",
            "--percent",
            "50",
        ])
        .args(["--hosts", "db01.example.com"])
        .args(["--attribute", "mariadb.innodb_buffer_pool_mb=512"])
        .repo(&repo)
        .run()
        .success();
    kiln().arg("check").repo(&repo).run().success();
    let explain = |repo: &Repo| -> Vec<String> {
        let out = kiln()
            .args(["whitelist", "explain", "--rollout", "bufpool", "--json"])
            .arg("--inventory")
            .arg(&inventory)
            .repo(repo)
            .run()
            .success();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["in"] == true)
            .map(|h| h["fqdn"].as_str().unwrap().to_string())
            .collect()
    };
    let half = explain(&repo);
    assert!(half.contains(&names[0]), "{half:?}");
    assert!(half.len() > 1 && half.len() < 5, "50% of 5 hosts: {half:?}");

    // The rollout's hosts only, its named host first as the canary.
    let r = fleet_json(
        &f.kiln(&["converge", "--rollout", "bufpool", "--json"])
            .repo(&repo)
            .run()
            .success(),
    );
    assert_eq!(r["batches"][0]["name"], "canary", "{r}");
    assert_eq!(r["batches"][0]["hosts"], serde_json::json!([names[0]]));
    let s = states(&r);
    assert_eq!(s.keys().cloned().collect::<Vec<_>>(), half, "{r}");
    for (state, rollouts) in s.values() {
        assert_eq!(state, "changed");
        assert_eq!(rollouts, &serde_json::json!(["bufpool"]));
    }

    // Everyone: the others get the cookbook's value, those in keep theirs.
    let text = f.kiln(&["converge"]).repo(&repo).run().success().stdout;
    assert!(text.contains("rollouts: bufpool"), "{text}");
    for h in &f.hosts {
        let want = if half.contains(&h.fqdn) {
            "512M"
        } else {
            "128M"
        };
        assert_eq!(pool(h), want, "{}", h.fqdn);
    }
    let last: serde_json::Value =
        serde_json::from_str(&read(f.hosts[0].path(), "/var/lib/kiln/last_run.json")).unwrap();
    assert_eq!(last["rollouts"], serde_json::json!(["bufpool"]));
    let status: serde_json::Value = serde_json::from_str(
        &f.kiln(&["status", "--json"])
            .repo(&repo)
            .run()
            .success()
            .stdout,
    )
    .unwrap();
    for h in status["hosts"].as_array().unwrap() {
        let want: Vec<&str> = if half.contains(&h["fqdn"].as_str().unwrap().to_string()) {
            vec!["bufpool"]
        } else {
            vec![]
        };
        assert_eq!(h["last_run"]["rollouts"], serde_json::json!(want), "{h}");
    }

    // 100%: every host that was in stays in and changes nothing.
    let wl = std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap();
    std::fs::write(
        repo.path().join("whitelist.toml"),
        wl.replace("percent = 50", "percent = 100"),
    )
    .unwrap();
    assert_eq!(explain(&repo), names);
    let s = states(&fleet_json(
        &f.kiln(&["converge", "--json"]).repo(&repo).run().success(),
    ));
    for (fqdn, (state, _)) in &s {
        let want = if half.contains(fqdn) {
            "unchanged"
        } else {
            "changed"
        };
        assert_eq!(state, want, "{fqdn}");
    }
    assert!(f.hosts.iter().all(|h| pool(h) == "512M"));
    let fingerprints = |repo: &Repo| -> Vec<serde_json::Value> {
        let out = f.kiln(&["status", "--json"]).repo(repo).run().success();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["fingerprint"].clone())
            .collect()
    };
    let in_rollout = fingerprints(&repo);

    // Promote into the db role: the whitelist is as it was before stage,
    // the role keeps its comments and gains the value, and nothing moves.
    kiln()
        .args(["whitelist", "promote", "bufpool", "--to", "role:db"])
        .repo(&repo)
        .run()
        .success();
    assert_eq!(
        std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap(),
        DB_WHITELIST
    );
    let role = std::fs::read_to_string(repo.path().join("roles/db.toml")).unwrap();
    assert_eq!(
        role,
        format!("{DB_ROLE}\n[override_attributes.mariadb]\ninnodb_buffer_pool_mb = 512\n"),
    );
    kiln().arg("check").repo(&repo).run().success();
    let s = states(&fleet_json(
        &f.kiln(&["converge", "--json"]).repo(&repo).run().success(),
    ));
    for (fqdn, (state, rollouts)) in &s {
        assert_eq!(state, "unchanged", "{fqdn}");
        assert!(rollouts.is_null(), "{fqdn}: {rollouts}");
    }
    // The rollout reached the fingerprint only through the config it wrote.
    assert!(in_rollout.iter().all(|f| f.is_string()), "{in_rollout:?}");
    assert_eq!(fingerprints(&repo), in_rollout);
}

#[test]
fn promote_to_a_cookbook_keeps_its_comments_and_refuses_where_a_role_would_win() {
    let stage = |repo: &Repo| {
        kiln()
            .args([
                "whitelist",
                "stage",
                "bufpool",
                "--hosts",
                "db01.example.com",
            ])
            .args(["--attribute", "mariadb.innodb_buffer_pool_mb=512"])
            .repo(repo)
            .run()
            .success();
    };
    let repo = db_repo();
    stage(&repo);
    kiln()
        .args([
            "whitelist",
            "promote",
            "bufpool",
            "--to",
            "cookbook:mariadb",
        ])
        .repo(&repo)
        .run()
        .success();
    assert_eq!(
        std::fs::read_to_string(repo.path().join("cookbooks/mariadb/attributes.toml")).unwrap(),
        "# the cookbook's defaults\n[mariadb]\ninnodb_buffer_pool_mb = 512\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap(),
        DB_WHITELIST
    );

    // A role's default would beat the cookbook's: refused at the role's line.
    let role = format!("{DB_ROLE}\n[default_attributes.mariadb]\ninnodb_buffer_pool_mb = 64\n");
    let repo = db_repo().role("db", &role);
    stage(&repo);
    let staged = std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap();
    let out = kiln()
        .args([
            "whitelist",
            "promote",
            "bufpool",
            "--to",
            "cookbook:mariadb",
        ])
        .repo(&repo)
        .run()
        .failure();
    assert!(
        out.stderr
            .contains("roles/db.toml:6: role db sets mariadb.innodb_buffer_pool_mb")
            && out.stderr.contains("fix: promote --to role:db"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join("whitelist.toml")).unwrap(),
        staged
    );
    assert!(
        std::fs::read_to_string(repo.path().join("cookbooks/mariadb/attributes.toml"))
            .unwrap()
            .contains("= 128")
    );
}
