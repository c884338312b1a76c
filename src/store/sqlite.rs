//! The embedded store: one SQLite file, the way a team of one starts. One
//! connection, used by one request at a time (the server holds it behind a
//! lock); WAL with full syncs, so that a report acknowledged is on disk.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{self, MIGRATIONS};
use super::{
    ChangeRow, HostQuery, HostRow, IngestError, PackageHost, RefusalCount, Replay, RunRecord,
    RunRow, Store, StoreError, package_set_id,
};
use crate::engine::Status;

pub struct Sqlite {
    conn: Connection,
    path: String,
}

fn db(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Db {
        what,
        source: Box::new(e),
    }
}

/// SQLite keeps integers as i64; the store's times and counts fit.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Sqlite {
    /// Opens (creating it and its directory) the database at `path` and
    /// brings its schema to this kiln's version.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
                what: format!("directory {} cannot be made", dir.display()),
                source: Box::new(e),
            })?;
        }
        let conn = Connection::open(path).map_err(db(format!("{shown} cannot be opened")))?;
        Sqlite::setup(conn, shown)
    }

    /// A store in memory, for tests of the query logic.
    pub fn in_memory() -> Result<Sqlite, StoreError> {
        let conn = Connection::open_in_memory().map_err(db("in memory cannot be opened"))?;
        Sqlite::setup(conn, ":memory:".into())
    }

    fn setup(conn: Connection, path: String) -> Result<Sqlite, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(30)))
            .map_err(db(format!("{path} cannot be set up")))?;
        let mut s = Sqlite { conn, path };
        s.migrate()?;
        Ok(s)
    }

    /// Applies each migration this database lacks, each in a transaction
    /// of its own with the version it reaches.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.conn
            .execute(schema::VERSION_TABLE, [])
            .map_err(db(format!("{path}: schema table")))?;
        let known = MIGRATIONS.len() as i64;
        let found = self.version()?;
        if found > known {
            return Err(StoreError::Newer { path, found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            let at = now();
            let tx = self
                .conn
                .transaction()
                .map_err(db(format!("{path}: migration {version}")))?;
            tx.execute_batch(sql)
                .and_then(|_| tx.execute(schema::RECORD_VERSION, params![version, at]))
                .and_then(|_| tx.commit())
                .map_err(db(format!("{path}: migration {version}")))?;
        }
        Ok(())
    }

    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(schema::CURRENT_VERSION, [], |r| r.get(0))
            .map_err(db(format!("{}: schema version", self.path)))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Store for Sqlite {
    fn ingest(&mut self, run: &RunRecord, received_us: u64) -> Result<(), IngestError> {
        let r = &run.report;
        let what = format!("cannot keep run {} of {}", run.run_id, run.fqdn);
        // IMMEDIATE: the write lock first, so that two servers on one file
        // cannot both pass the replay check.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db(&what))?;
        let seen: i64 = tx
            .query_row(schema::RUN_EXISTS, params![run.run_id], |x| x.get(0))
            .map_err(db(&what))?;
        if seen > 0 {
            return Err(Replay::SameRun {
                fqdn: run.fqdn.clone(),
                run_id: run.run_id.clone(),
            }
            .into());
        }
        let newest: Option<i64> = tx
            .query_row(schema::HOST_NEWEST, params![run.fqdn], |x| x.get(0))
            .optional()
            .map_err(db(&what))?;
        if let Some(newest) = newest
            && int(r.started_at) < newest
        {
            return Err(Replay::Older {
                fqdn: run.fqdn.clone(),
                run_id: run.run_id.clone(),
                started_at: r.started_at,
                newest: uint(newest),
            }
            .into());
        }
        let fingerprint = run.fingerprint.as_ref().map(|f| f.fingerprint.clone());
        if let Some(f) = &run.fingerprint {
            for p in &f.parts {
                tx.execute(
                    schema::INSERT_PART,
                    params![f.fingerprint, p.resource, p.part],
                )
                .map_err(db(&what))?;
            }
        }
        let set = package_set_id(&run.packages);
        for p in &run.packages {
            tx.execute(
                schema::INSERT_PACKAGE,
                params![set, p.name, p.version, p.held as i64],
            )
            .map_err(db(&what))?;
        }
        let roles = serde_json::to_string(&r.roles).unwrap_or_default();
        tx.execute(
            schema::INSERT_RUN,
            params![
                run.run_id,
                run.fqdn,
                int(r.started_at),
                int(received_us),
                r.elapsed_ms,
                run.release,
                roles,
                r.success as i64,
                r.updated as i64,
                r.failed as i64,
                r.total as i64,
                r.bundle_serial.map(int),
                r.kiln_version,
                fingerprint,
                set,
                run.interval_secs.map(int),
            ],
        )
        .map_err(db(&what))?;
        let changed = r.resources.iter().filter(|e| e.status != Status::UpToDate);
        for (seq, e) in changed.enumerate() {
            tx.execute(
                schema::INSERT_CHANGE,
                params![
                    run.run_id,
                    seq as i64,
                    e.resource,
                    status_name(e.status),
                    serde_json::to_string(&e.changes).unwrap_or_default(),
                    e.error,
                ],
            )
            .map_err(db(&what))?;
        }
        for (seq, c) in run.checks.iter().flatten().enumerate() {
            tx.execute(
                schema::INSERT_CHECK,
                params![
                    run.run_id,
                    seq as i64,
                    c.check,
                    c.origin,
                    c.ok as i64,
                    c.detail
                ],
            )
            .map_err(db(&what))?;
        }
        for s in &r.substitutions {
            tx.execute(
                schema::INSERT_SUBSTITUTION,
                params![run.run_id, s.package, s.pin, s.substitute],
            )
            .map_err(db(&what))?;
        }
        tx.execute(
            schema::UPSERT_HOST,
            params![run.fqdn, run.run_id, int(r.started_at)],
        )
        .map_err(db(&what))?;
        tx.execute(schema::CLEAR_ROLES, params![run.fqdn])
            .map_err(db(&what))?;
        for role in &r.roles {
            tx.execute(schema::INSERT_ROLE, params![run.fqdn, role])
                .map_err(db(&what))?;
        }
        tx.commit().map_err(db(&what))?;
        Ok(())
    }

    fn refuse(&mut self, reason: &str, detail: &str, at: u64) -> Result<(), StoreError> {
        self.conn
            .execute(schema::COUNT_REFUSAL, params![reason, int(at), detail])
            .map_err(db("cannot count a refused report"))?;
        Ok(())
    }

    fn refusals(&mut self) -> Result<Vec<RefusalCount>, StoreError> {
        let what = "cannot list refusals";
        let mut st = self.conn.prepare(schema::REFUSALS).map_err(db(what))?;
        let rows = st
            .query_map([], |r| {
                Ok(RefusalCount {
                    reason: r.get(0)?,
                    count: uint(r.get(1)?),
                    last_at: uint(r.get(2)?),
                    last_detail: r.get(3)?,
                })
            })
            .map_err(db(what))?;
        rows.collect::<Result<_, _>>().map_err(db(what))
    }

    fn hosts(
        &mut self,
        q: &HostQuery,
        now: u64,
        stale_after: u64,
    ) -> Result<Vec<HostRow>, StoreError> {
        let what = "cannot list hosts";
        let mut sql = format!("{} WHERE 1 = 1", schema::HOSTS);
        let mut args: Vec<String> = Vec::new();
        if let Some(role) = &q.role {
            args.push(role.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM host_roles x WHERE x.fqdn = h.fqdn AND x.role = ${})",
                args.len()
            ));
        }
        if let Some(release) = &q.release {
            args.push(release.clone());
            sql.push_str(&format!(" AND r.release = ${}", args.len()));
        }
        if q.failed {
            sql.push_str(" AND r.success = 0");
        }
        sql.push_str(" ORDER BY h.fqdn");
        let mut st = self.conn.prepare(&sql).map_err(db(what))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                let roles: String = r.get(2)?;
                Ok(HostRow {
                    fqdn: r.get(0)?,
                    release: r.get(1)?,
                    roles: serde_json::from_str(&roles).unwrap_or_default(),
                    started_at: uint(r.get(3)?),
                    success: r.get::<_, i64>(4)? != 0,
                    updated: uint(r.get(5)?),
                    failed: uint(r.get(6)?),
                    fingerprint: r.get(7)?,
                    interval_secs: r.get::<_, Option<i64>>(8)?.map(uint),
                    run_id: r.get(9)?,
                    stale: false,
                })
            })
            .map_err(db(what))?;
        let mut out: Vec<HostRow> = rows.collect::<Result<_, _>>().map_err(db(what))?;
        for h in &mut out {
            h.stale = h.is_stale(now, stale_after);
        }
        if q.stale {
            out.retain(|h| h.stale);
        }
        Ok(out)
    }

    fn package(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Vec<PackageHost>, StoreError> {
        let what = format!("cannot list the hosts of package {name}");
        let mut sql = schema::PACKAGE.to_string();
        let mut args = vec![name.to_string()];
        if let Some(v) = version {
            args.push(v.to_string());
            sql.push_str(" AND p.version = $2");
        }
        sql.push_str(" ORDER BY h.fqdn");
        let mut st = self.conn.prepare(&sql).map_err(db(&what))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(PackageHost {
                    fqdn: r.get(0)?,
                    version: r.get(1)?,
                    held: r.get::<_, i64>(2)? != 0,
                })
            })
            .map_err(db(&what))?;
        rows.collect::<Result<_, _>>().map_err(db(&what))
    }

    fn runs(&mut self, fqdn: &str, since: u64) -> Result<Vec<RunRow>, StoreError> {
        let what = format!("cannot list the runs of {fqdn}");
        let mut st = self.conn.prepare(schema::RUNS).map_err(db(&what))?;
        let rows = st
            .query_map(params![fqdn, int(since)], |r| {
                let roles: String = r.get(8)?;
                Ok(RunRow {
                    run_id: r.get(0)?,
                    started_at: uint(r.get(1)?),
                    elapsed_ms: r.get(2)?,
                    success: r.get::<_, i64>(3)? != 0,
                    updated: uint(r.get(4)?),
                    failed: uint(r.get(5)?),
                    fingerprint: r.get(6)?,
                    release: r.get(7)?,
                    roles: serde_json::from_str(&roles).unwrap_or_default(),
                    changes: Vec::new(),
                })
            })
            .map_err(db(&what))?;
        let mut runs: Vec<RunRow> = rows.collect::<Result<_, _>>().map_err(db(&what))?;
        let mut st = self.conn.prepare(schema::RUN_CHANGES).map_err(db(&what))?;
        let changes = st
            .query_map(params![fqdn, int(since)], |r| {
                let list: String = r.get(3)?;
                Ok((
                    r.get::<_, String>(0)?,
                    ChangeRow {
                        resource: r.get(1)?,
                        status: r.get(2)?,
                        changes: serde_json::from_str(&list).unwrap_or_default(),
                        error: r.get(4)?,
                    },
                ))
            })
            .map_err(db(&what))?;
        for c in changes {
            let (id, change) = c.map_err(db(&what))?;
            if let Some(run) = runs.iter_mut().find(|r| r.run_id == id) {
                run.changes.push(change);
            }
        }
        Ok(runs)
    }

    fn prune(&mut self, cutoff: u64) -> Result<u64, StoreError> {
        let what = "cannot prune old runs";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db(what))?;
        let mut gone = 0;
        for (i, sql) in schema::prune().iter().enumerate() {
            let n = if sql.contains("$1") {
                tx.execute(sql, params![int(cutoff)])
            } else {
                tx.execute(sql, [])
            }
            .map_err(db(what))?;
            // The fourth statement removes the runs themselves.
            if i == 3 {
                gone = n as u64;
            }
        }
        tx.commit().map_err(db(what))?;
        Ok(gone)
    }

    fn count_runs(&mut self) -> Result<u64, StoreError> {
        self.conn
            .query_row(schema::COUNT_RUNS, [], |r| r.get::<_, i64>(0))
            .map(uint)
            .map_err(db("cannot count runs"))
    }

    fn parts(&mut self, fingerprint: &str) -> Result<Vec<(String, String)>, StoreError> {
        let what = format!("cannot read the parts of fingerprint {fingerprint}");
        let mut st = self.conn.prepare(schema::PARTS).map_err(db(&what))?;
        let rows = st
            .query_map(params![fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db(&what))?;
        rows.collect::<Result<_, _>>().map_err(db(&what))
    }

    fn fingerprints(
        &mut self,
        fqdn: &str,
    ) -> Result<Vec<(String, u64, Option<String>)>, StoreError> {
        let what = format!("cannot read the fingerprints of {fqdn}");
        let mut st = self.conn.prepare(schema::FINGERPRINTS).map_err(db(&what))?;
        let rows = st
            .query_map(params![fqdn], |r| {
                Ok((r.get(0)?, uint(r.get(1)?), r.get(2)?))
            })
            .map_err(db(&what))?;
        rows.collect::<Result<_, _>>().map_err(db(&what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Report, ResourceReport};
    use crate::fingerprint::{Fingerprint, Part};
    use crate::store::ManagedPackage;

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

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/kiln.db");
        let s = Sqlite::open(&path).unwrap();
        assert_eq!(s.version().unwrap(), MIGRATIONS.len() as i64);
        drop(s);
        // Opening again applies nothing twice.
        let s = Sqlite::open(&path).unwrap();
        assert_eq!(s.version().unwrap(), MIGRATIONS.len() as i64);
        s.conn
            .execute(schema::RECORD_VERSION, params![99, 0])
            .unwrap();
        drop(s);
        let Err(e) = Sqlite::open(&path) else {
            panic!("a newer schema was opened");
        };
        assert!(matches!(e, StoreError::Newer { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("newer kiln server"), "{e}");
    }

    #[test]
    fn replays_are_refused_and_change_nothing() {
        let mut s = Sqlite::in_memory().unwrap();
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

    #[test]
    fn queries_answer_from_each_host_s_latest_run() {
        let mut s = Sqlite::in_memory().unwrap();
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
        let q = |s: &mut Sqlite, q: HostQuery| -> Vec<String> {
            let out = s.hosts(&q, 200, 3600).unwrap();
            out.into_iter().map(|h| h.fqdn).collect()
        };
        let role = |r: &str| HostQuery {
            role: Some(r.into()),
            ..HostQuery::default()
        };
        assert_eq!(q(&mut s, role("web")), ["web01"]);
        assert_eq!(q(&mut s, role("base")), ["db01", "web01"]);
        assert!(q(&mut s, role("nope")).is_empty());
        let release = HostQuery {
            release: Some("trixie".into()),
            ..HostQuery::default()
        };
        assert_eq!(q(&mut s, release), ["db01"]);
        let failed = HostQuery {
            failed: true,
            ..HostQuery::default()
        };
        assert_eq!(q(&mut s, failed), ["db01"]);
        // db01 reports every 10 s and last did at 150: stale at 200.
        let stale = HostQuery {
            stale: true,
            ..HostQuery::default()
        };
        assert_eq!(q(&mut s, stale), ["db01"]);

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
        assert_eq!(s.runs("web01", 150).unwrap().len(), 1);
    }

    #[test]
    fn retention_keeps_the_latest_run_of_every_host() {
        let mut s = Sqlite::in_memory().unwrap();
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
        let parts: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM fingerprint_parts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(parts, 2, "fp-3 and fp-1 (db01)");
        let changes: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM run_changes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(changes, 2);
        assert_eq!(s.package("php", None).unwrap().len(), 2);
    }

    #[test]
    fn drift_names_the_odd_host_its_parts_and_since_when() {
        let mut s = Sqlite::in_memory().unwrap();
        s.ingest(&run("web01", 100, &["web"], "1"), 100).unwrap();
        s.ingest(&run("web02", 100, &["web"], "1"), 100).unwrap();
        s.ingest(&run("web03", 100, &["web"], "1"), 100).unwrap();
        s.ingest(&run("web03", 200, &["web"], "2"), 200).unwrap();
        let third = run("web03", 300, &["web"], "2");
        s.ingest(&third, 300).unwrap();
        // Another group: alone, it has nothing to differ from.
        s.ingest(&run("db01", 100, &["db"], "9"), 100).unwrap();
        let d = crate::store::drift::drift(&mut s, None).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].fqdn, "web03");
        assert_eq!(d[0].majority, "fp-1");
        assert_eq!((d[0].with_majority, d[0].group_size), (2, 3));
        assert_eq!(d[0].since, 200, "the first run with fp-2");
        assert_eq!(d[0].parts.len(), 1);
        assert_eq!(d[0].parts[0].resource, "package[php]");
        assert_eq!(d[0].parts[0].found.as_deref(), Some("version=2"));
        assert_eq!(d[0].parts[0].expected.as_deref(), Some("version=1"));
        assert!(
            crate::store::drift::drift(&mut s, Some("db"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut s = Sqlite::in_memory().unwrap();
        s.refuse("bad_signature", "web01", 10).unwrap();
        s.refuse("bad_signature", "web02", 11).unwrap();
        s.refuse("unknown_key", "x", 12).unwrap();
        let r = s.refusals().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].reason.as_str(), r[0].count), ("bad_signature", 2));
        assert_eq!(r[0].last_detail, "web02");
        assert_eq!(s.count_runs().unwrap(), 0);
    }
}
