//! The report store's logic, the same tests on each backend: SQLite in a
//! temporary file, and a real PostgreSQL cluster of the test's own
//! (`support::postgres`). Migrations, replays, queries, retention, drift
//! and refusals answer alike on both, and PostgreSQL keeps a replay out
//! when two servers take the same report at once.

use kiln::engine::{Report, ResourceReport, Status};
use kiln::fingerprint::{Fingerprint, Part};
use kiln::store::pg::Postgres;
use kiln::store::pg_tls::TlsError;
use kiln::store::schema::{self, MIGRATIONS};
use kiln::store::sql::{self, Backend, Sql as _, Value, Writes};
use kiln::store::sqlite::Sqlite;
use kiln::store::{
    HostQuery, IngestError, ManagedPackage, Replay, RunRecord, Store as _, StoreError,
};
use tempfile::TempDir;

use crate::support::postgres;

/// Where a test's store lives; [`Backing::open`] may be called again to
/// open the same database, as a restarted server does.
enum Backing {
    Sqlite(TempDir),
    Postgres(postgres::Postgres),
}

impl Backing {
    fn open(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(match self {
            Backing::Sqlite(dir) => Box::new(Sqlite::open(&dir.path().join("sub/kiln.db"))?),
            Backing::Postgres(pg) => Box::new(Postgres::open(&pg.url())?),
        })
    }

    fn new(backend: postgres::Backend) -> Backing {
        match backend {
            postgres::Backend::Sqlite => Backing::Sqlite(tempfile::tempdir().unwrap()),
            postgres::Backend::Postgres => Backing::Postgres(postgres::Postgres::start()),
        }
    }

    fn store(&self) -> Box<dyn Backend> {
        self.open().unwrap()
    }
}

on_both_backends!(
    migrations_run_once_and_a_newer_schema_is_refused,
    hosts_kept_before_their_latest_runs_were_copied_answer_as_before,
    a_host_s_packages_diffs_and_a_package_search_answer_from_the_store,
    replays_are_refused_and_change_nothing,
    queries_answer_from_each_host_s_latest_run,
    retention_keeps_the_latest_run_of_every_host,
    drift_names_the_odd_host_its_parts_and_since_when,
    refusals_are_counted_by_reason,
    two_writers_cannot_both_keep_one_run_or_an_older_one,
    a_write_waits_for_a_prune_that_removes_what_it_would_reuse,
);

fn entry(resource: &str, status: Status) -> ResourceReport {
    let mut e = ResourceReport::default();
    e.resource = resource.into();
    e.status = status;
    if status == Status::Updated {
        e.changes = vec!["content".into()];
    }
    e
}

fn run(fqdn: &str, started_at: u64, roles: &[&str], php: &str) -> RunRecord {
    let report = Report {
        fqdn: fqdn.into(),
        started_at,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        success: true,
        resources: vec![
            entry("file[/etc/motd]", Status::Updated),
            entry("package[php]", Status::UpToDate),
        ],
        ..Report::default()
    };
    let mut r = RunRecord::new(report, "bookworm".into());
    r.packages = vec![ManagedPackage {
        name: "php".into(),
        version: php.into(),
        held: true,
    }];
    r.fingerprint = Some(Fingerprint {
        fingerprint: format!("fp-{php}"),
        parts: vec![Part {
            resource: "package[php]".into(),
            part: format!("version={php}"),
        }],
        substitutions: vec![],
    });
    r
}

/// Rows in `table`, counted by the database itself.
fn count(s: &mut dyn Backend, table: &str) -> i64 {
    let rows = s
        .query(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .unwrap();
    rows[0].int(0).unwrap()
}

fn migrations_run_once_and_a_newer_schema_is_refused(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    assert_eq!(sql::version(s.as_mut()).unwrap(), MIGRATIONS.len() as i64);
    drop(s);
    // Opening again applies nothing twice.
    let mut s = b.store();
    assert_eq!(sql::version(s.as_mut()).unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(count(s.as_mut(), "kiln_schema"), MIGRATIONS.len() as i64);
    s.execute(schema::RECORD_VERSION, &[Value::Int(99), Value::Int(0)])
        .unwrap();
    drop(s);
    let Err(e) = b.open() else {
        panic!("a newer schema was opened");
    };
    assert!(matches!(e, StoreError::Newer { found: 99, .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("newer kiln server"), "{message}");
    assert!(!message.contains(postgres::PASSWORD), "{message}");
}

/// Runs `sql` on the test's database without the store, which would
/// migrate it: a database as an older kiln left it.
fn raw_batch(b: &Backing, sql: &str) {
    match b {
        Backing::Sqlite(dir) => {
            std::fs::create_dir_all(dir.path().join("sub")).unwrap();
            let c = rusqlite::Connection::open(dir.path().join("sub/kiln.db")).unwrap();
            c.execute_batch(sql).unwrap();
        }
        Backing::Postgres(pg) => {
            let mut c = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
            c.batch_execute(sql).unwrap();
        }
    }
}

/// Migration 3 copies each host's latest run onto its row, which the
/// reads of the fleet's latest state take from then on.
fn hosts_kept_before_their_latest_runs_were_copied_answer_as_before(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut v2 = format!(
        "{};\n{}\n{}\nINSERT INTO kiln_schema VALUES (1, 0), (2, 0);\n",
        schema::VERSION_TABLE,
        MIGRATIONS[0],
        MIGRATIONS[1]
    );
    let old_run = |id: &str,
                   fqdn: &str,
                   at: u64,
                   release: &str,
                   roles: &str,
                   success: u8,
                   set: &str| {
        format!(
            "INSERT INTO runs (run_id, fqdn, started_at, received_us, elapsed_ms, release, roles, \
             success, updated, failed, total, bundle_serial, kiln_version, fingerprint, \
             package_set, interval_secs) VALUES ('{id}', '{fqdn}', {at}, {at}000000, 12.5, \
             '{release}', '{roles}', {success}, 3, {}, 9, 7, '0.1', 'fp-{set}', 'set-{set}', 60);\n",
            1 - success
        )
    };
    v2 += &old_run("a1", "web01", 100, "bookworm", r#"["web"]"#, 1, "old");
    v2 += &old_run(
        "a2",
        "web01",
        200,
        "bookworm",
        r#"["base","web"]"#,
        1,
        "new",
    );
    v2 += &old_run("b1", "db01", 150, "trixie", r#"["db"]"#, 0, "old");
    v2 += "INSERT INTO hosts (fqdn, latest_run, started_at) VALUES ('web01', 'a2', 200), ('db01', 'b1', 150);
        INSERT INTO host_roles (fqdn, role) VALUES ('web01', 'base'), ('web01', 'web'), ('db01', 'db');
        INSERT INTO package_sets (set_id, name, version, held) VALUES
            ('set-old', 'php', '8.2.1', 1), ('set-new', 'php', '8.2.2', 0), ('set-new', 'curl', '8', 0);";
    raw_batch(b, &v2);

    let mut s = b.store();
    let all = s.hosts(&HostQuery::default(), 200, 3600).unwrap();
    let shown: Vec<_> = all
        .iter()
        .map(|h| {
            let roles = h.roles.join(",");
            (
                h.fqdn.as_str(),
                h.run_id.as_str(),
                h.release.as_str(),
                roles,
                h.success,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("db01", "b1", "trixie", "db".to_string(), false),
            ("web01", "a2", "bookworm", "base,web".to_string(), true),
        ]
    );
    let web = &all[1];
    assert_eq!((web.started_at, web.updated, web.failed), (200, 3, 0));
    assert_eq!((web.elapsed_ms, web.bundle_serial), (12.5, Some(7)));
    assert_eq!(web.interval_secs, Some(60));
    assert_eq!(web.fingerprint.as_deref(), Some("fp-new"));
    assert_eq!(all[0].failed, 1);
    let php: Vec<_> = s.package("php", None).unwrap();
    let php: Vec<_> = php
        .iter()
        .map(|p| (p.fqdn.as_str(), p.version.as_str(), p.held))
        .collect();
    assert_eq!(php, [("db01", "8.2.1", true), ("web01", "8.2.2", false)]);
    assert_eq!(s.host_packages("web01").unwrap().len(), 2);
    // A newer run replaces the copy.
    s.ingest(&run("web01", 300, &["web"], "8.2.3"), 300)
        .unwrap();
    let web = s.hosts(&HostQuery::default(), 300, 3600).unwrap().remove(1);
    assert_eq!((web.started_at, web.roles), (300, vec!["web".to_string()]));
    assert_eq!(s.package("php", Some("8.2.3")).unwrap().len(), 1);
}

fn replays_are_refused_and_change_nothing(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    let first = run("web01", 100, &["web"], "8.2.1");
    s.ingest(&first, 101).unwrap();
    let again = s.ingest(&first, 102).unwrap_err();
    assert!(matches!(again, IngestError::Replay(Replay::SameRun { .. })));
    let older = run("web01", 99, &["web"], "8.2.0");
    let e = s.ingest(&older, 102).unwrap_err();
    assert!(matches!(
        e,
        IngestError::Replay(Replay::Older { newest: 100, .. })
    ));
    assert_eq!(s.count_runs().unwrap(), 1);
    // The same second is not older: two runs may start in one, and
    // they are listed in the order they arrived, whatever their ids.
    let mut arrived = vec![first.run_id.clone()];
    for received in 103..110 {
        let r = run("web01", 100, &["web"], "8.2.1");
        s.ingest(&r, received).unwrap();
        arrived.push(r.run_id);
    }
    assert_eq!(s.count_runs().unwrap(), 8);
    let listed: Vec<String> = s
        .runs("web01", 0)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(listed, arrived);
}

fn queries_answer_from_each_host_s_latest_run(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    s.ingest(&run("web01", 100, &["base", "web"], "8.2.1"), 100)
        .unwrap();
    s.ingest(&run("web01", 200, &["base", "web"], "8.2.2"), 200)
        .unwrap();
    let mut db = run("db01", 150, &["base", "db"], "8.2.1");
    db.report.success = false;
    db.release = "trixie".into();
    db.interval_secs = Some(10);
    s.ingest(&db, 150).unwrap();

    let all = s.hosts(&HostQuery::default(), 200, 3600).unwrap();
    assert_eq!(
        all.iter().map(|h| h.fqdn.as_str()).collect::<Vec<_>>(),
        ["db01", "web01"]
    );
    assert_eq!(all[1].started_at, 200);
    assert_eq!(all[1].roles, ["base", "web"]);
    assert_eq!(all[0].interval_secs, Some(10));
    assert!(!all[0].success);
    let q = |s: &mut dyn Backend, q: HostQuery| -> Vec<String> {
        let out = s.hosts(&q, 200, 3600).unwrap();
        out.into_iter().map(|h| h.fqdn).collect()
    };
    let role = |r: &str| HostQuery {
        role: Some(r.into()),
        ..HostQuery::default()
    };
    assert_eq!(q(s.as_mut(), role("web")), ["web01"]);
    assert_eq!(q(s.as_mut(), role("base")), ["db01", "web01"]);
    assert!(q(s.as_mut(), role("nope")).is_empty());
    let release = HostQuery {
        release: Some("trixie".into()),
        ..HostQuery::default()
    };
    assert_eq!(q(s.as_mut(), release), ["db01"]);
    let failed = HostQuery {
        failed: true,
        ..HostQuery::default()
    };
    assert_eq!(q(s.as_mut(), failed), ["db01"]);
    // db01 reports every 10 s and last did at 150: stale at 200.
    let stale = HostQuery {
        stale: true,
        ..HostQuery::default()
    };
    assert_eq!(q(s.as_mut(), stale), ["db01"]);

    let php = s.package("php", None).unwrap();
    assert_eq!(
        php.iter()
            .map(|p| (p.fqdn.as_str(), p.version.as_str()))
            .collect::<Vec<_>>(),
        [("db01", "8.2.1"), ("web01", "8.2.2")]
    );
    assert!(php.iter().all(|p| p.held));
    let at = s.package("php", Some("8.2.1")).unwrap();
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].fqdn, "db01");

    let runs = s.runs("web01", 0).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].started_at, 100);
    assert_eq!(runs[0].changes.len(), 1, "up-to-date entries are not kept");
    assert_eq!(runs[0].changes[0].resource, "file[/etc/motd]");
    assert_eq!(runs[0].changes[0].status, "updated");
    assert_eq!(runs[0].changes[0].changes, ["content"]);
    assert_eq!(runs[0].changes[0].error, None);
    assert_eq!(runs[0].roles, ["base", "web"]);
    assert_eq!(runs[0].fingerprint.as_deref(), Some("fp-8.2.1"));
    assert_eq!(s.runs("web01", 150).unwrap().len(), 1);

    // A host whose roles change is found by its new ones only; one whose
    // roles stay is found as before.
    s.ingest(&run("web01", 300, &["cache"], "8.2.2"), 300)
        .unwrap();
    assert!(q(s.as_mut(), role("web")).is_empty());
    assert_eq!(q(s.as_mut(), role("cache")), ["web01"]);
    s.ingest(&run("web01", 400, &["cache"], "8.2.2"), 400)
        .unwrap();
    assert_eq!(q(s.as_mut(), role("cache")), ["web01"]);
}

fn a_host_s_packages_diffs_and_a_package_search_answer_from_the_store(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    let mut first = run("web01", 100, &["web"], "8.2.1");
    first.report.resources[0].diff = Some("-old\n+new\n".into());
    s.ingest(&first, 100).unwrap();
    let mut second = run("web01", 200, &["web"], "8.2.2");
    second.packages.push(ManagedPackage {
        name: "libphp-embed".into(),
        version: String::new(),
        held: false,
    });
    s.ingest(&second, 200).unwrap();
    s.ingest(&run("db01", 150, &["db"], "8.2.1"), 150).unwrap();

    // The latest run's packages, by name.
    let pkgs = s.host_packages("web01").unwrap();
    let shown: Vec<(&str, &str, bool)> = pkgs
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.held))
        .collect();
    assert_eq!(shown, [("libphp-embed", "", false), ("php", "8.2.2", true)]);
    assert!(s.host_packages("nobody").unwrap().is_empty());
    // A change's diff is kept with it.
    let runs = s.runs("web01", 0).unwrap();
    assert_eq!(runs[0].changes[0].diff.as_deref(), Some("-old\n+new\n"));
    assert_eq!(runs[1].changes[0].diff, None);

    // A search finds names that contain the words; LIKE's own
    // characters in them are only characters.
    assert_eq!(s.package_names("php", 50).unwrap(), ["libphp-embed", "php"]);
    assert_eq!(s.package_names("hp-e", 50).unwrap(), ["libphp-embed"]);
    assert_eq!(s.package_names("php", 1).unwrap(), ["libphp-embed"]);
    for wild in ["%", "_", "p%p", "\\"] {
        assert!(s.package_names(wild, 50).unwrap().is_empty(), "{wild}");
    }
}

fn retention_keeps_the_latest_run_of_every_host(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    s.ingest(&run("web01", 100, &["web"], "1"), 100).unwrap();
    s.ingest(&run("web01", 200, &["web"], "2"), 200).unwrap();
    s.ingest(&run("web01", 300, &["web"], "3"), 300).unwrap();
    s.ingest(&run("db01", 50, &["db"], "1"), 50).unwrap();
    let gone = s.prune(250).unwrap();
    assert_eq!(gone, 2, "web01's runs at 100 and 200");
    assert_eq!(s.count_runs().unwrap(), 2);
    assert_eq!(s.runs("db01", 0).unwrap().len(), 1, "db01's only run stays");
    assert_eq!(s.runs("web01", 0).unwrap()[0].started_at, 300);
    // What no run refers to went with them; what one does stayed.
    assert_eq!(
        count(s.as_mut(), "fingerprint_parts"),
        2,
        "fp-3 and fp-1 (db01)"
    );
    assert_eq!(count(s.as_mut(), "run_changes"), 2);
    assert_eq!(s.package("php", None).unwrap().len(), 2);
}

fn drift_names_the_odd_host_its_parts_and_since_when(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    s.ingest(&run("web01", 100, &["web"], "1"), 100).unwrap();
    s.ingest(&run("web02", 100, &["web"], "1"), 100).unwrap();
    s.ingest(&run("web03", 100, &["web"], "1"), 100).unwrap();
    s.ingest(&run("web03", 200, &["web"], "2"), 200).unwrap();
    let third = run("web03", 300, &["web"], "2");
    s.ingest(&third, 300).unwrap();
    // Another group: alone, it has nothing to differ from.
    s.ingest(&run("db01", 100, &["db"], "9"), 100).unwrap();
    let d = kiln::store::drift::drift(s.as_mut(), None, true).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].fqdn, "web03");
    assert_eq!(d[0].majority, "fp-1");
    assert_eq!((d[0].with_majority, d[0].group_size), (2, 3));
    assert_eq!(d[0].since, Some(200), "the first run with fp-2");
    assert_eq!(d[0].parts.len(), 1);
    assert_eq!(d[0].parts[0].resource, "package[php]");
    assert_eq!(d[0].parts[0].found.as_deref(), Some("version=2"));
    assert_eq!(d[0].parts[0].expected.as_deref(), Some("version=1"));
    // Asked without the date (as `fleet status` asks): the same hosts and
    // parts, and no run named.
    let without = kiln::store::drift::drift(s.as_mut(), None, false).unwrap();
    assert_eq!(without.len(), 1);
    assert_eq!(without[0].parts, d[0].parts);
    assert_eq!(
        (without[0].since, without[0].since_run.as_deref()),
        (None, None)
    );
    assert!(
        kiln::store::drift::drift(s.as_mut(), Some("db"), true)
            .unwrap()
            .is_empty()
    );
}

fn refusals_are_counted_by_reason(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    s.refuse("bad_signature", "web01", 10).unwrap();
    s.refuse("bad_signature", "web02", 11).unwrap();
    s.refuse("unknown_key", "x", 12).unwrap();
    let r = s.refusals().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].reason.as_str(), r[0].count), ("bad_signature", 2));
    assert_eq!((r[0].last_at, r[0].last_detail.as_str()), (11, "web02"));
    assert_eq!(s.count_runs().unwrap(), 0);
}

/// Servers that share a database each have a connection of their own: of
/// the same run sent to all, one keeps it and the others find a replay;
/// of runs of one host sent at once, none older than a kept one stays.
fn two_writers_cannot_both_keep_one_run_or_an_older_one(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    const WRITERS: usize = 4;
    let stores: Vec<Box<dyn Backend>> = (0..WRITERS).map(|_| b.store()).collect();
    let same = run("web01", 100, &["web"], "1");
    let results: Vec<Result<(), IngestError>> = race(stores, |_, s| s.ingest(&same, 100));
    let kept = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(kept, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, IngestError::Replay(Replay::SameRun { .. }))),
        "{results:?}"
    );

    let stores: Vec<Box<dyn Backend>> = (0..WRITERS).map(|_| b.store()).collect();
    let runs: Vec<RunRecord> = (0..WRITERS)
        .map(|i| run("db01", 200 + i as u64, &["db"], "1"))
        .collect();
    let results = race(stores, |i, s| s.ingest(&runs[i], 200));
    let mut s = b.store();
    let kept: Vec<u64> = s
        .runs("db01", 0)
        .unwrap()
        .iter()
        .map(|r| r.started_at)
        .collect();
    assert_eq!(kept.len(), results.iter().filter(|r| r.is_ok()).count());
    assert!(
        kept.contains(&(200 + WRITERS as u64 - 1)),
        "the newest run is kept"
    );
    // Each run refused was older than one that was kept.
    for r in &results {
        match r {
            Ok(()) => {}
            Err(IngestError::Replay(Replay::Older {
                started_at, newest, ..
            })) => assert!(
                started_at < newest && kept.contains(newest),
                "{r:?} {kept:?}"
            ),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(s.count_runs().unwrap(), 1 + kept.len() as u64);
}

/// Runs `f` on each store on a thread of its own, all let go at once.
/// A prune removes the parts and the package list of a fingerprint no
/// kept run uses; a host's write that finds them kept does not add them
/// again. Were the two to interleave, the host's run would name parts
/// that are gone: the write waits until the prune has committed, then
/// finds them gone and adds them.
fn a_write_waits_for_a_prune_that_removes_what_it_would_reuse(backend: postgres::Backend) {
    let b = &Backing::new(backend);
    let mut s = b.store();
    s.ingest(&run("web01", 100, &["web"], "1"), 100).unwrap();
    s.ingest(&run("web01", 300, &["web"], "3"), 300).unwrap();
    let (pruning, pruned) = std::sync::mpsc::channel();
    let mut pruner = b.store();
    let mut writer = b.store();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            pruner
                .write(Writes::All, &mut |tx| {
                    for sql in schema::prune() {
                        let args: &[Value] = if sql.contains("$1") {
                            &[Value::Int(250)]
                        } else {
                            &[]
                        };
                        tx.execute(&sql, args).unwrap();
                    }
                    let _ = pruning.send(());
                    // The window in which a write that did not wait would
                    // find fp-1's parts still there.
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    Ok(())
                })
                .unwrap();
        });
        pruned.recv().unwrap();
        writer
            .ingest(&run("web02", 100, &["web"], "1"), 400)
            .unwrap();
    });
    assert_eq!(s.count_runs().unwrap(), 2, "web01's latest and web02's");
    assert_eq!(
        s.parts("fp-1").unwrap(),
        [("package[php]".to_string(), "version=1".to_string())],
        "web02's run names fp-1, whose parts are kept"
    );
    let php1: Vec<String> = s
        .package("php", Some("1"))
        .unwrap()
        .into_iter()
        .map(|h| h.fqdn)
        .collect();
    assert_eq!(php1, ["web02"]);
}

fn race<T: Send>(
    stores: Vec<Box<dyn Backend>>,
    f: impl Fn(usize, &mut dyn Backend) -> T + Sync,
) -> Vec<T> {
    let start = std::sync::Barrier::new(stores.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let (start, f) = (&start, &f);
                scope.spawn(move || {
                    start.wait();
                    f(i, s.as_mut())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn an_unreachable_postgres_is_named_without_its_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "postgres://kiln:{}@127.0.0.1:{closed}/kiln",
        postgres::PASSWORD
    );
    let Err(e) = Postgres::open(&url) else {
        panic!("nothing listens on {closed}");
    };
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "postgres://kiln:***@127.0.0.1:{closed}/kiln cannot be connected to"
        )),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains(postgres::PASSWORD), "{message}");
}

#[test]
fn a_postgres_store_connects_again_after_losing_its_connection() {
    need!(Postgres);
    let pg = postgres::Postgres::start();
    let mut s = Postgres::open(&pg.url()).unwrap();
    s.ingest(&run("web01", 100, &["web"], "1"), 100).unwrap();
    end_other_connections(&pg.url());
    // The request that finds the connection lost fails; the next works.
    let _ = s.count_runs();
    assert_eq!(s.count_runs().unwrap(), 1);
    s.ingest(&run("web01", 200, &["web"], "1"), 200).unwrap();
    assert_eq!(s.count_runs().unwrap(), 2);
}

/// Ends every connection to `url`'s database but one's own, as a restart
/// of the database would; there must be one (the store's).
fn end_other_connections(url: &str) {
    let mut admin = Postgres::open(url).unwrap();
    let ended = admin
        .query(
            // Materialized first, so that this connection is not ended too.
            "WITH others AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND datname = current_database()) \
             SELECT pid FROM others WHERE pg_terminate_backend(pid)",
            &[],
        )
        .unwrap();
    assert_eq!(ended.len(), 1, "the store's one connection");
}

/// Whether the store's connection is encrypted, as the server sees it.
fn encrypted(s: &mut Postgres) -> bool {
    let rows = s
        .query(
            "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    rows[0].int(0).unwrap() == 1
}

/// Why a store at `url` refuses to open over TLS, and its message, which
/// names the URL without its password.
fn tls_refusal(url: &str) -> (TlsError, String) {
    let e = match Postgres::open(url) {
        Err(StoreError::Tls(e)) => e,
        Err(e) => panic!("{url}: not refused for TLS: {e}"),
        Ok(_) => panic!("{url}: opened"),
    };
    let message = e.to_string();
    assert!(message.contains("kiln:***@"), "{message}");
    assert!(!message.contains(postgres::PASSWORD), "{message}");
    (e, message)
}

/// `url` with `params` (`sslmode=…&…`) after it.
fn with_params(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

#[test]
fn verify_full_with_the_server_s_ca_keeps_and_reads_reports_over_tls() {
    need!(Postgres);
    let pg = postgres::Postgres::start_tls();
    let ca = pg.ca().display();
    let url = with_params(&pg.url(), &format!("sslmode=verify-full&sslrootcert={ca}"));
    let mut s = Postgres::open(&url).unwrap();
    assert!(encrypted(&mut s));
    s.ingest(&run("web01", 100, &["web"], "8.2.1"), 100)
        .unwrap();
    // Connected again after a loss, with the same checks.
    end_other_connections(&url);
    let _ = s.count_runs();
    assert!(encrypted(&mut s));
    let hosts = s.hosts(&HostQuery::default(), 100, 3600).unwrap();
    let hosts: Vec<_> = hosts
        .iter()
        .map(|h| (h.fqdn.as_str(), h.started_at))
        .collect();
    assert_eq!(hosts, [("web01", 100)]);

    // The certificate names 127.0.0.1 only: verify-full refuses another
    // name of the host, verify-ca checks the CA alone.
    let by_name = url.replace("@127.0.0.1:", "@localhost:");
    let (e, message) = tls_refusal(&by_name);
    assert!(matches!(e, TlsError::WrongName { .. }), "{message}");
    assert!(message.contains("sslmode=verify-ca"), "{message}");
    let mut s = Postgres::open(&by_name.replace("verify-full", "verify-ca")).unwrap();
    assert!(encrypted(&mut s));
    assert_eq!(s.count_runs().unwrap(), 1);
}

#[test]
fn a_certificate_of_another_ca_is_refused_and_nothing_is_kept() {
    need!(Postgres);
    let pg = postgres::Postgres::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let other = postgres::TestCa::new(dir.path(), "other-ca");
    // require with a CA given checks it, as libpq's does.
    for mode in ["verify-full", "verify-ca", "require"] {
        let params = format!("sslmode={mode}&sslrootcert={}", other.pem.display());
        let (e, message) = tls_refusal(&with_params(&pg.url(), &params));
        assert!(matches!(e, TlsError::Untrusted { .. }), "{mode}: {message}");
        let ca = other.pem.display().to_string();
        assert!(message.contains(&ca), "{message}");
        assert!(message.contains("give sslrootcert=FILE"), "{message}");
    }
    // Refused before the schema was made: nothing was written.
    let mut plain = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    let row = plain
        .query_one("SELECT to_regclass('kiln_schema') IS NULL", &[])
        .unwrap();
    assert!(row.get::<_, bool>(0), "a store was made");
}

#[test]
fn require_needs_a_server_that_offers_tls_and_disable_needs_none() {
    need!(Postgres);
    let plain = postgres::Postgres::start();
    for mode in ["require", "verify-full"] {
        let url = with_params(&plain.url(), &format!("sslmode={mode}"));
        let (e, message) = tls_refusal(&url);
        assert!(matches!(e, TlsError::NotOffered { .. }), "{message}");
        let needs = format!("sslmode={mode} needs TLS");
        assert!(message.contains(&needs), "{message}");
        assert!(message.contains("ssl_cert_file"), "{message}");
    }

    let tls = postgres::Postgres::start_tls();
    let mut s = Postgres::open(&with_params(&tls.url(), "sslmode=disable")).unwrap();
    assert!(!encrypted(&mut s));
    s.ingest(&run("web01", 100, &["web"], "8.2.1"), 100)
        .unwrap();
    assert_eq!(s.package("php", Some("8.2.1")).unwrap().len(), 1);
    // require without a CA encrypts and checks no certificate, as libpq's.
    let mut s = Postgres::open(&with_params(&tls.url(), "sslmode=require")).unwrap();
    assert!(encrypted(&mut s));
    assert_eq!(s.count_runs().unwrap(), 1);
}

/// Every report rewrites its host's row. PostgreSQL writes it in place
/// (HOT, no index entry) only while no index covers a column the write
/// sets, and where the row's page has room, which `hosts`'s fillfactor
/// keeps (migration 4).
#[test]
fn a_host_s_row_is_rewritten_in_place_on_postgres() {
    need!(Postgres);
    let pg = postgres::Postgres::start();
    let mut s = Postgres::open(&pg.url()).unwrap();
    let (_, set) = schema::UPSERT_HOST.split_once("DO UPDATE SET").unwrap();
    let set: Vec<&str> = set
        .split(',')
        .filter_map(|a| a.split_once('=').map(|(column, _)| column.trim()))
        .collect();
    assert!(
        set.contains(&"latest_run") && set.contains(&"package_set"),
        "{set:?}"
    );
    let indexed = s
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = 'hosts'::regclass ORDER BY 1",
            &[],
        )
        .unwrap();
    let indexed: Vec<String> = indexed.iter().map(|r| r.text(0).unwrap()).collect();
    assert_eq!(indexed, ["fqdn"]);
    assert!(!set.contains(&"fqdn"), "{set:?}");
    let options = s
        .query(
            "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'hosts'::regclass",
            &[],
        )
        .unwrap();
    assert_eq!(options[0].text(0).unwrap(), "fillfactor=70");

    for at in [100, 200, 300] {
        s.ingest(&run("web01", at, &["web"], "1"), at).unwrap();
    }
    // This connection's counts, handed on once it is idle.
    s.batch("SELECT pg_stat_force_next_flush()").unwrap();
    let updates = s
        .query(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'hosts'",
            &[],
        )
        .unwrap();
    let updates = (updates[0].int(0).unwrap(), updates[0].int(1).unwrap());
    assert_eq!(updates, (2, 2), "(updated, of them in place)");
}
