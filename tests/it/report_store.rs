//! `kiln server` and `kiln report`: real converges of Debian roots send
//! their signed reports with `--report-to` to a real server on loopback
//! with a temporary store, SQLite or a PostgreSQL cluster of the test's
//! own (the query-centred tests run on both), and the queries answer from
//! it; reports
//! that are forged, unsigned, replayed, oversized or malformed are refused
//! with a status of their own and leave the store as it was.

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kiln::store::record::{self, Envelope, RunRecord};

use crate::support::fleet::{Fleet, spec};
use crate::support::postgres::{self, Backend};
use crate::support::report_server::*;
use crate::support::*;

on_both_backends!(
    converges_report_and_queries_answer_from_the_store,
    bad_reports_are_refused_with_their_status_and_change_nothing,
    the_store_knows_which_hosts_run_which_version_and_hold_it,
    drift_names_the_host_that_differs_from_its_peers,
    retention_prunes_old_runs_but_each_host_s_latest,
    a_server_killed_during_ingest_loses_no_acknowledged_report,
);

fn repo() -> Repo {
    Repo::new()
        .role("web", r#"run_list = ["recipe[motd]"]"#)
        .role("db", r#"run_list = ["recipe[motd]"]"#)
        .recipe(
            "motd",
            "default",
            "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"{{node.fqdn}}\\n\"\n",
        )
}

fn converges_report_and_queries_answer_from_the_store(backend: Backend) {
    need!(DebianRoot);
    let (web, web_key) = host_root();
    let (db, db_key) = host_root();
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        &[
            ("web01.kiln.test", "web", &web_key),
            ("db01.kiln.test", "db", &db_key),
        ],
    );
    let server = Server::start(backend, &inv, &[]);
    let repo = repo();
    converge(&web, &repo, "web01.kiln.test", "web", &server.url)
        .success()
        .stderr_contains("1 run report(s) sent");
    converge(&db, &repo, "db01.kiln.test", "db", &server.url).success();
    // The second run changes nothing, and is reported all the same.
    converge(&web, &repo, "web01.kiln.test", "web", &server.url).success();

    let hosts = server.report(&["hosts"]);
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["fqdn"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db01.kiln.test", "web01.kiln.test"]);
    assert_eq!(hosts[1]["roles"], serde_json::json!(["web"]));
    assert_eq!(hosts[1]["release"], "bookworm");
    assert_eq!(hosts[1]["success"], true);
    assert!(hosts[1]["fingerprint"].as_str().unwrap().len() == 64);
    let web_only = server.report(&["hosts", "--role", "web"]);
    assert_eq!(web_only.as_array().unwrap().len(), 1);
    assert_eq!(web_only[0]["fqdn"], "web01.kiln.test");
    assert!(
        server
            .report(&["hosts", "--failed"])
            .as_array()
            .unwrap()
            .is_empty(),
        "no run failed"
    );

    let runs = server.runs_of("web01.kiln.test");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["changes"][0]["resource"], "file[/etc/motd]");
    assert_eq!(runs[0]["changes"][0]["status"], "updated");
    assert_eq!(runs[1]["changes"], serde_json::json!([]));
    // The people's view says the same.
    kiln()
        .args(["report", "--server", &server.url, "--token-file"])
        .arg(&server.token_file)
        .args(["runs", "web01.kiln.test", "--since", "24h"])
        .run()
        .success()
        .stdout_contains("updated      file[/etc/motd]");
    // Nothing waits on the hosts.
    assert!(outbox(web.path()).is_empty());
}

/// The reports waiting in a target's outbox.
fn outbox(root: &Path) -> Vec<String> {
    std::fs::read_dir(at(root, kiln::outbox::OUTBOX))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_unreachable_server_fails_no_converge_and_gets_the_report_later() {
    need!(DebianRoot);
    let (web, web_key) = host_root();
    // A loopback port that nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let repo = repo();
    converge(&web, &repo, "web01.kiln.test", "web", &closed)
        .success()
        .stderr_contains("kept in /var/lib/kiln/outbox for a later run");
    assert_eq!(outbox(web.path()).len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &web_key)]);
    let server = Server::start(Backend::Sqlite, &inv, &[]);
    converge(&web, &repo, "web01.kiln.test", "web", &server.url)
        .success()
        .stderr_contains("2 run report(s) sent");
    assert!(outbox(web.path()).is_empty());
    let runs = server.runs_of("web01.kiln.test");
    assert_eq!(runs.len(), 2, "the kept report, then this run's");
    assert_eq!(runs[0]["updated"], 1);
    assert_eq!(runs[1]["updated"], 0);
}

/// A signed report of `fqdn` started at `started_at`, as a host makes it.
fn signed(key: &HostKey, fqdn: &str, started_at: u64) -> (RunRecord, Envelope) {
    let report = kiln::engine::Report {
        fqdn: fqdn.into(),
        started_at,
        success: true,
        roles: vec!["web".into()],
        ..Default::default()
    };
    let run = RunRecord::new(report, "bookworm".into());
    let payload = serde_json::to_string(&run).unwrap();
    let text = std::fs::read_to_string(&key.private).unwrap();
    let env = record::sign(&payload, &text, "test key").unwrap();
    (run, env)
}

fn body(env: &Envelope) -> Vec<u8> {
    serde_json::to_vec(env).unwrap()
}

fn bad_reports_are_refused_with_their_status_and_change_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let web = host_key(&dir.path().join("web"));
    let db = host_key(&dir.path().join("db"));
    let stranger = host_key(&dir.path().join("stranger"));
    let inv = inventory(
        dir.path(),
        &[
            ("web01.kiln.test", "web", &web.public),
            ("db01.kiln.test", "db", &db.public),
        ],
    );
    let server = Server::start(backend, &inv, &["--max-body", "65536"]);
    let (_, good) = signed(&web, "web01.kiln.test", 1_000);
    assert_eq!(server.post(&body(&good)).0, 201);
    let stored =
        || server.runs_of("web01.kiln.test").len() + server.runs_of("db01.kiln.test").len();
    assert_eq!(stored(), 1);

    let refused = |body: Vec<u8>, status: u16, reason: &str| {
        let (got, answer) = server.post(&body);
        assert_eq!(got, status, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["error"], reason, "{answer}");
        assert!(!v["message"].as_str().unwrap().is_empty());
        assert_eq!(stored(), 1, "the store changed after {reason}");
    };
    // Replayed: the same report again, or a new one older than the newest.
    refused(body(&good), 409, "replay");
    refused(body(&signed(&web, "web01.kiln.test", 999).1), 409, "replay");
    // Unsigned.
    let unsigned = Envelope {
        signature: None,
        ..good.clone()
    };
    refused(body(&unsigned), 401, "unsigned");
    // Forged: a key no inventory host has.
    refused(
        body(&signed(&stranger, "web01.kiln.test", 2_000).1),
        403,
        "unknown_key",
    );
    // Another host's key for web01's report.
    refused(
        body(&signed(&db, "web01.kiln.test", 2_000).1),
        403,
        "wrong_host",
    );
    // The payload changed after signing.
    let (_, fresh) = signed(&web, "web01.kiln.test", 2_000);
    let tampered = Envelope {
        payload: fresh
            .payload
            .replace("\"success\":true", "\"success\":false"),
        ..fresh.clone()
    };
    assert_ne!(tampered.payload, fresh.payload);
    refused(body(&tampered), 401, "bad_signature");
    // Oversized, with or without a length up front.
    refused(vec![b' '; 70_000], 413, "too_large");
    // Malformed: not JSON, unknown fields (envelope, payload), wrong types,
    // each of the payload's well signed.
    refused(b"{not json".to_vec(), 400, "malformed");
    let mut extra = serde_json::to_value(&fresh).unwrap();
    extra["note"] = "hi".into();
    refused(serde_json::to_vec(&extra).unwrap(), 400, "malformed");
    let sign_value = |v: serde_json::Value| {
        let text = std::fs::read_to_string(&web.private).unwrap();
        body(&record::sign(&v.to_string(), &text, "test key").unwrap())
    };
    let (run, _) = signed(&web, "web01.kiln.test", 3_000);
    let mut unknown = serde_json::to_value(&run).unwrap();
    unknown["report"]["colour"] = "blue".into();
    refused(sign_value(unknown), 400, "malformed");
    let mut wrong = serde_json::to_value(&run).unwrap();
    wrong["report"]["updated"] = "many".into();
    refused(sign_value(wrong), 400, "malformed");

    // Each refusal was counted by reason.
    let counts = server.report(&["refusals"]);
    let count = |reason: &str| {
        counts
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["reason"] == reason)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    };
    assert_eq!(count("replay"), 2);
    assert_eq!(count("unsigned"), 1);
    assert_eq!(count("unknown_key"), 1);
    assert_eq!(count("wrong_host"), 1);
    assert_eq!(count("bad_signature"), 1);
    assert_eq!(count("too_large"), 1);
    assert_eq!(count("malformed"), 4);
    // The fresh report itself is still welcome.
    assert_eq!(server.post(&body(&fresh)).0, 201);
    assert_eq!(stored(), 2);

    // Reads need the token.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let hosts = format!("{}/api/v1/hosts", server.url);
    assert_eq!(agent.get(&hosts).call().unwrap().status().as_u16(), 401);
    let wrong_token = agent
        .get(&hosts)
        .header("Authorization", "Bearer not-the-token-at-all")
        .call()
        .unwrap();
    assert_eq!(wrong_token.status().as_u16(), 403);
}

fn the_store_knows_which_hosts_run_which_version_and_hold_it(backend: Backend) {
    need!(DebianRoot);
    let apt = crate::support::apt_repo::AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1");
    let repo = Repo::new()
        .role("web", r#"run_list = ["recipe[pkgs]"]"#)
        .recipe("pkgs", "default", "[[resource]]\npackage = \"kiln-hello\"\n")
        .whitelist(
            "[packages]\nkiln-hello = \"1.0-1\"\n\n[rollouts.hello-2]\nhosts = [\"web02.*\"]\npackages = { kiln-hello = \"2.0-1\" }\n",
        );
    let (web1, key1) = host_root();
    let (web2, key2) = host_root();
    apt.install_into(web1.path());
    apt.install_into(web2.path());
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        &[
            ("web01.kiln.test", "web", &key1),
            ("web02.kiln.test", "web", &key2),
        ],
    );
    let server = Server::start(backend, &inv, &[]);
    converge(&web1, &repo, "web01.kiln.test", "web", &server.url).success();
    converge(&web2, &repo, "web02.kiln.test", "web", &server.url).success();

    let all = server.report(&["package", "kiln-hello"]);
    assert_eq!(
        all,
        serde_json::json!([
            {"fqdn": "web01.kiln.test", "version": "1.0-1", "held": true},
            {"fqdn": "web02.kiln.test", "version": "2.0-1", "held": true},
        ])
    );
    let new = server.report(&["package", "kiln-hello", "--version", "2.0-1"]);
    assert_eq!(new.as_array().unwrap().len(), 1);
    assert_eq!(new[0]["fqdn"], "web02.kiln.test");
    assert!(
        server
            .report(&["package", "kiln-world"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn drift_names_the_host_that_differs_from_its_peers(backend: Backend) {
    need!(DebianRoot);
    // A guard leaves a host's own file in place: its fingerprint then
    // differs from its peers' in that part.
    let repo = Repo::new()
        .role("web", r#"run_list = ["recipe[app]"]"#)
        .recipe(
            "app",
            "default",
            "[[resource]]\nfile = \"/etc/app.conf\"\ncontent = \"workers = 4\\n\"\nnot_if = { path = \"/etc/app.local\", type = \"file\" }\n",
        );
    let roots: Vec<(TestRoot, String)> = (0..3).map(|_| host_root()).collect();
    std::fs::write(at(&roots[2].0, "/etc/app.conf"), "workers = 64\n").unwrap();
    std::fs::write(at(&roots[2].0, "/etc/app.local"), "").unwrap();
    let names = ["web01.kiln.test", "web02.kiln.test", "web03.kiln.test"];
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(&roots)
        .map(|(n, (_, k))| (*n, "web", k.as_str()))
        .collect();
    let inv = inventory(dir.path(), &hosts);
    let server = Server::start(backend, &inv, &[]);
    for (n, (root, _)) in names.iter().zip(&roots) {
        converge(root, &repo, n, "web", &server.url).success();
    }
    let drift = server.report(&["drift", "--role", "web"]);
    let drift = drift.as_array().unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["fqdn"], "web03.kiln.test");
    assert_eq!(drift[0]["with_majority"], 2);
    assert_eq!(drift[0]["parts"][0]["resource"], "file[/etc/app.conf]");
    let runs = server.runs_of("web03.kiln.test");
    assert_eq!(drift[0]["since_run"], runs[0]["run_id"]);
    // fleet status asks for drift without the date (no runs read), and
    // names the same host and part.
    let out = kiln()
        .args(["fleet", "status", "--server", &server.url, "--token-file"])
        .arg(&server.token_file)
        .arg("--inventory")
        .arg(&inv)
        .run()
        .failure();
    let web03 = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web03.kiln.test"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(web03.contains("DRIFT: 1 resource(s)"), "{web03}");
    out.stdout_contains("file[/etc/app.conf]");
}

fn retention_prunes_old_runs_but_each_host_s_latest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let web = host_key(&dir.path().join("web"));
    let db = host_key(&dir.path().join("db"));
    let inv = inventory(
        dir.path(),
        &[
            ("web01.kiln.test", "web", &web.public),
            ("db01.kiln.test", "db", &db.public),
        ],
    );
    let server = Server::start(backend, &inv, &["--retention-days", "1"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = now - 3 * 86_400;
    for (key, fqdn, t) in [
        (&web, "web01.kiln.test", old),
        (&web, "web01.kiln.test", now - 60),
        (&db, "db01.kiln.test", old),
    ] {
        assert_eq!(server.post(&body(&signed(key, fqdn, t).1)).0, 201);
    }
    assert_eq!(server.runs_of("web01.kiln.test").len(), 2);
    // A restart prunes: web01's old run goes, db01's only run stays.
    let store = server.stop();
    let server = Server::start_in(store, &inv, &["--retention-days", "1"]);
    let web_runs = server.runs_of("web01.kiln.test");
    assert_eq!(web_runs.len(), 1);
    assert_eq!(web_runs[0]["started_at"], now - 60);
    assert_eq!(server.runs_of("db01.kiln.test").len(), 1);
}

#[test]
fn servers_that_share_a_postgres_database_keep_a_report_once() {
    need!(Postgres);
    let dir = tempfile::tempdir().unwrap();
    let web = host_key(&dir.path().join("web"));
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &web.public)]);
    let first = Server::start(Backend::Postgres, &inv, &[]);
    let second = Server::start_in(first.kept.share(), &inv, &[]);
    // The same report to both at once: one keeps it, one finds a replay.
    let (_, report) = signed(&web, "web01.kiln.test", 1_000);
    let mut statuses: Vec<u16> = std::thread::scope(|s| {
        let posts: Vec<_> = [&first, &second]
            .map(|server| s.spawn(|| server.post(&body(&report)).0))
            .into_iter()
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    // What one keeps, the other answers from; an older run is a replay at either.
    assert_eq!(
        second
            .post(&body(&signed(&web, "web01.kiln.test", 2_000).1))
            .0,
        201
    );
    assert_eq!(
        first
            .post(&body(&signed(&web, "web01.kiln.test", 1_500).1))
            .0,
        409
    );
    for server in [&first, &second] {
        let runs = server.runs_of("web01.kiln.test");
        let starts: Vec<&serde_json::Value> = runs.iter().map(|r| &r["started_at"]).collect();
        assert_eq!(starts, [1_000, 2_000]);
    }
}

#[test]
fn a_host_added_to_the_inventory_reports_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let web = host_key(&dir.path().join("web"));
    let db = host_key(&dir.path().join("db"));
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &web.public)]);
    let server = Server::start(Backend::Sqlite, &inv, &[]);
    let (_, report) = signed(&db, "db01.kiln.test", 1_000);
    assert_eq!(server.post(&body(&report)).0, 403);
    inventory(
        dir.path(),
        &[
            ("web01.kiln.test", "web", &web.public),
            ("db01.kiln.test", "db", &db.public),
        ],
    );
    let (status, answer) = server.post(&body(&report));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(server.runs_of("db01.kiln.test").len(), 1);
}

#[test]
fn a_server_without_a_token_or_inventory_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let web = host_key(&dir.path().join("web"));
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &web.public)]);
    let db = dir.path().join("kiln.db");
    let server = |inventory: &Path, token: &Path| {
        kiln()
            .args(["server", "--listen", "127.0.0.1:0", "--database"])
            .arg(&db)
            .arg("--inventory")
            .arg(inventory)
            .arg("--token-file")
            .arg(token)
            .run()
            .failure()
    };
    server(&inv, &dir.path().join("no-token")).stderr_contains("the token file");
    std::fs::write(dir.path().join("short"), "abc\n").unwrap();
    server(&inv, &dir.path().join("short")).stderr_contains("fewer than 16 characters");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    server(&dir.path().join("none.toml"), &dir.path().join("token")).stderr_contains("none.toml");
    assert!(!db.exists(), "a server that did not start made a database");
    // A PostgreSQL URL that is wrong, or names no server, is shown
    // without its password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (port, says) in [
        ("notaport".to_string(), "is not a PostgreSQL URL"),
        (closed.to_string(), "cannot be connected to"),
    ] {
        let url = format!(
            "postgres://kiln:{}@127.0.0.1:{port}/kiln",
            postgres::PASSWORD
        );
        let out = kiln()
            .args(["server", "--listen", "127.0.0.1:0", "--database", &url])
            .arg("--inventory")
            .arg(&inv)
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .run()
            .failure()
            .stderr_contains(says)
            .stderr_contains(&format!("postgres://kiln:***@127.0.0.1:{port}/kiln"));
        assert!(!out.stderr.contains(postgres::PASSWORD), "{}", out.stderr);
    }
}

#[test]
fn a_fleet_push_has_each_host_report_signed_with_its_own_key() {
    need!(Sshd);
    let mut f = Fleet::new(
        vec![
            spec("web01.example.com", &["web"]),
            spec("db01.example.com", &["db"]),
        ],
        |_: &Path| {},
    );
    f.start();
    // The server trusts the keys the fleet's own known_hosts records.
    let server = Server::start(Backend::Sqlite, &f.inventory(), &[]);
    let repo = repo();
    f.kiln(&["converge", "--report-to", &server.url])
        .repo(&repo)
        .run()
        .success();
    let names = |hosts: serde_json::Value| -> Vec<String> {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["fqdn"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(server.report(&["hosts"])),
        ["db01.example.com", "web01.example.com"]
    );
    assert_eq!(
        server.runs_of("web01.example.com")[0]["changes"][0]["resource"],
        "file[/etc/motd]"
    );

    // The inventory's report_to serves a push without the flag; a why-run
    // reports nothing.
    let text = std::fs::read_to_string(f.inventory()).unwrap();
    std::fs::write(
        f.inventory(),
        format!("report_to = \"{}\"\n{text}", server.url),
    )
    .unwrap();
    f.kiln(&["converge", "--why-run"])
        .repo(&repo)
        .run()
        .success();
    assert_eq!(server.runs_of("web01.example.com").len(), 1);
    f.kiln(&["converge"]).repo(&repo).run().success();
    let runs = server.runs_of("web01.example.com");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["changes"], serde_json::json!([]));
    for h in ["web01.example.com", "db01.example.com"] {
        assert!(
            outbox(f.host(h).path()).is_empty(),
            "{h} keeps no report back"
        );
    }

    // fleet status from the store: the same table, no ssh (the hosts' sshd
    // are stopped), and a host of the inventory that never reported says so.
    for h in ["web01.example.com", "db01.example.com"] {
        f.host_mut(h).kill();
    }
    let status = |json: bool| {
        let mut args = vec!["status", "--server", &server.url, "--token-file"];
        let token = server.token_file.to_str().unwrap().to_string();
        args.push(&token);
        if json {
            args.push("--json");
        }
        f.kiln(&args).repo(&repo).run()
    };
    let out = status(false)
        .success()
        .stdout_contains("release bookworm (2 host(s)):")
        .stdout_contains("no drift: every reporting host is as most of its peers are");
    let web = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web01.example.com"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(web.contains(" ok "), "{web}");
    let doc: serde_json::Value = serde_json::from_str(&status(true).success().stdout).unwrap();
    assert_eq!(doc["hosts"][1]["last_run"]["updated"], 0, "{doc}");
    let text = std::fs::read_to_string(f.inventory()).unwrap();
    std::fs::write(
        f.inventory(),
        format!(
            "{text}\n[hosts.\"web09.example.com\"]\naddress = \"127.0.9.9\"\nroles = [\"web\"]\n"
        ),
    )
    .unwrap();
    status(false)
        .failure()
        .stdout_contains("no report in the store");
}

fn a_server_killed_during_ingest_loses_no_acknowledged_report(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<(String, HostKey)> = (0..8)
        .map(|i| {
            let fqdn = format!("web{i:02}.kiln.test");
            let key = host_key(&dir.path().join(&fqdn));
            (fqdn, key)
        })
        .collect();
    let listed: Vec<(&str, &str, &str)> = hosts
        .iter()
        .map(|(f, k)| (f.as_str(), "web", k.public.as_str()))
        .collect();
    let inv = inventory(dir.path(), &listed);
    let mut server = Server::start(backend, &inv, &[]);
    let url = format!("{}/api/v1/reports", server.url);
    // A day ago: within the retention, which the restart applies.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 86_400;
    // Each sender posts its host's runs in order until the server is gone,
    // and keeps the ids of those the server acknowledged (201).
    let acknowledged: Vec<Vec<String>> = std::thread::scope(|s| {
        let senders: Vec<_> = hosts
            .iter()
            .map(|(fqdn, key)| {
                let url = url.clone();
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut acked = Vec::new();
                    for n in 0..100_000u64 {
                        let (run, env) = signed(key, fqdn, start + n);
                        match agent.post(&url).send(&body(&env)) {
                            Ok(r) if r.status().as_u16() == 201 => acked.push(run.run_id),
                            // The body says what the server could not do.
                            Ok(r) => {
                                let status = r.status();
                                let said = r.into_body().read_to_string().unwrap_or_default();
                                panic!("{fqdn}: HTTP {status}: {said}")
                            }
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let _ = server.child.kill();
        senders.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let _ = server.child.wait();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(
        total > 8,
        "the senders had time to send ({total} acknowledged)"
    );

    let server = Server::start_in(server.stop(), &inv, &[]);
    for ((fqdn, _), acked) in hosts.iter().zip(&acknowledged) {
        let stored: std::collections::BTreeSet<String> = server
            .runs_of(fqdn)
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        for id in acked {
            assert!(
                stored.contains(id),
                "{fqdn}: run {id} was acknowledged, then lost"
            );
        }
    }
}

/// A host root with kiln in /usr/local/bin, a host key of its own, and
/// the motd policy in /srv/policy; the key's public half.
fn agent_root() -> (crate::support::fleet::HostRoot, String) {
    let root = crate::support::fleet::HostRoot::new();
    std::fs::copy(
        crate::support::fleet::kiln_binary(),
        root.path().join("usr/local/bin/kiln"),
    )
    .unwrap();
    // The root's own host key, made anew here.
    for f in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
        let _ = std::fs::remove_file(root.path().join("etc/ssh").join(f));
    }
    let key = host_key(&root.path().join("etc/ssh"));
    let policy = repo().recipe(
        "motd",
        "default",
        "[[resource]]\nfile = \"/etc/motd\"\ncontent = \"{{node.fqdn}}\\n\"\n\n\
         [[verify]]\nfile = \"/etc/motd\"\ncontains = \"agent01\"\n",
    );
    let copied = Command::new("cp")
        .arg("-a")
        .arg(policy.path().join("."))
        .arg(root.path().join("srv/policy"))
        .status()
        .unwrap();
    assert!(copied.success());
    (root, key.public)
}

/// `kiln agent` in `root` for agent01 reporting to `url`, with `extra`.
fn agent_in(root: &Path, url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args([
            "/usr/local/bin/kiln",
            "agent",
            "--splay",
            "0",
            "--source",
            "/srv/policy",
        ])
        .args([
            "--role",
            "web",
            "--fqdn",
            "agent01.kiln.test",
            "--report-to",
            url,
        ])
        .args(extra)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    c
}

#[test]
fn an_agent_reports_each_run_with_its_interval() {
    need!(DebianRoot);
    let (root, key) = agent_root();
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), &[("agent01.kiln.test", "web", &key)]);
    let server = Server::start(Backend::Sqlite, &inv, &[]);
    let out = agent_in(root.path(), &server.url, &["--once", "--interval", "10m"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 run report(s) sent"), "{text}");
    let hosts = server.report(&["hosts"]);
    assert_eq!(hosts[0]["fqdn"], "agent01.kiln.test", "{hosts}");
    assert_eq!(hosts[0]["interval_secs"], 600, "{hosts}");
    assert_eq!(hosts[0]["stale"], false, "{hosts}");
    assert_eq!(
        server.runs_of("agent01.kiln.test")[0]["changes"][0]["resource"],
        "file[/etc/motd]"
    );
}

/// A test CA, and a certificate for 127.0.0.1 it signed, with its key:
/// (ca, cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn a_server_with_a_certificate_speaks_https_only() {
    need!(DebianRoot);
    let (web, web_key) = host_root();
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &web_key)]);
    let (ca, cert, key) = certificate(dir.path());
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start(Backend::Sqlite, &inv, &["--tls-cert", c, "--tls-key", k]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    // A host that trusts the certificate reports; one that does not keeps
    // its report for later, and its run still succeeds.
    converge(&web, &repo(), "web01.kiln.test", "web", &server.url)
        .success()
        .stderr_contains("kept in /var/lib/kiln/outbox");
    assert_eq!(outbox(web.path()).len(), 1);
    kiln()
        .arg("converge")
        .repo(&repo())
        .root(&web)
        .args(["--fqdn", "web01.kiln.test", "--role", "web", "--report-to"])
        .arg(&server.url)
        .env("SSL_CERT_FILE", &ca)
        .run()
        .success()
        .stderr_contains("2 run report(s) sent");
    let read = |url: &str| {
        kiln()
            .args(["report", "--server", url, "--token-file"])
            .arg(&server.token_file)
            .args(["hosts", "--json"])
            .env("SSL_CERT_FILE", &ca)
            .run()
    };
    let hosts: serde_json::Value =
        serde_json::from_str(&read(&server.url).success().stdout).unwrap();
    assert_eq!(hosts[0]["fqdn"], "web01.kiln.test");
    // Nothing answers plain HTTP on that port.
    read(&server.url.replace("https://", "http://")).failure();
}

#[test]
fn a_server_stopped_by_sigterm_or_sigint_exits_cleanly_and_leaves_no_socket_behind() {
    let dir = tempfile::tempdir().unwrap();
    let key = host_key(&dir.path().join("web01")).public;
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &key)]);
    let (_, cert, key) = certificate(dir.path());
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let mut server = Server::start(Backend::Sqlite, &inv, &["--tls-cert", c, "--tls-key", k]);
        // The HTTPS side hands connections to plain HTTP on a unix socket
        // in a private directory of the server's own.
        let tmp = server.kept.tmp();
        let entries = || std::fs::read_dir(&tmp).unwrap().count();
        assert_eq!(entries(), 1, "{name}: the private socket directory");
        assert!(server.signal(signal).is_none(), "{name}: it was running");
        let status = server.wait_for(std::time::Duration::from_secs(10));
        let status = status.unwrap_or_else(|| panic!("{name}: still running after 10 s"));
        assert!(status.success(), "{name}: {status}");
        assert_eq!(entries(), 0, "{name}: the private directory is left behind");
    }
}

/// A server that takes connections and never answers: each is kept,
/// and counted, and known closed once the client gives up on it.
struct Silent {
    url: String,
    seen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let list = seen.clone();
        // Ends with the test process; its connections hold nothing.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let closed = Arc::new(AtomicBool::new(false));
                list.lock().unwrap().push(closed.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    closed.store(true, Ordering::SeqCst);
                });
            }
        });
        Silent { url, seen }
    }

    /// (connections taken, of which still open).
    fn connections(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap();
        let open = seen.iter().filter(|c| !c.load(Ordering::SeqCst)).count();
        (seen.len(), open)
    }
}

#[test]
fn an_agent_converges_on_while_its_report_waits_on_a_silent_server() {
    need!(DebianRoot);
    let (root, _) = agent_root();
    let server = Silent::start();
    let mut child = agent_in(root.path(), &server.url, &["--interval", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // The agent logs a line per event on stdout; problems go to stderr.
    let (tx, rx) = std::sync::mpsc::channel();
    let err_tx = tx.clone();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    // The first run's report goes to a server that never answers (a
    // request waits 15 s for it); the next runs come a second apart all
    // the same, their reports left in the outbox while the first is
    // still being sent. (The third run's start says the second's report
    // is kept.)
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while log
        .iter()
        .filter(|l: &&String| l.contains("converged:"))
        .count()
        < 3
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(e) => {
                log.push(format!("({e:?})"));
                break;
            }
        }
    }
    let connections = server.connections();
    let pgid = child.id() as i32;
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let text = log.join("\n");
    assert_eq!(
        log.iter().filter(|l| l.contains("converged:")).count(),
        3,
        "{text}"
    );
    assert_eq!(
        connections,
        (1, 1),
        "one report on its way, its request still open: the runs did not wait for it\n{text}"
    );
    assert!(outbox(root.path()).len() >= 2, "{text}");
}
