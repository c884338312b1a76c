//! The store's logic written once over plain SQL values, so that a replay
//! check, a migration or a row's mapping is the same on SQLite and on
//! PostgreSQL: a backend only sends statements ([`Sql`]) and says how a
//! write is kept apart from concurrent ones ([`Backend`]).

use super::schema::{self, MIGRATIONS};
use super::{
    ChangeRow, History, HostQuery, HostRow, IngestError, ManagedPackage, PackageHost, RefusalCount,
    Replay, RunRecord, RunRow, Store, StoreError, package_set_id,
};
use crate::engine::Status;

/// What a database driver failed with, kept as the source of a
/// [`StoreError::Db`].
pub type DbError = Box<dyn std::error::Error + Send + Sync>;

/// A value bound to a statement or read from a row: the schema keeps
/// only integers, doubles and text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// Times and counts are u64 in kiln and BIGINT in the schema; they fit.
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Int(b as i64)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Real(x)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Text(s.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The arguments of a statement, each converted to a [`Value`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Value::from($v)),*] };
}

/// One row of a result, read by column index.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| format!("no column {i} in the result").into())
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i)?
            .ok_or_else(|| format!("column {i} is NULL").into())
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            v => Err(format!("column {i} is not an integer: {v:?}").into()),
        }
    }

    /// A time or a count, never negative in the store.
    pub fn uint(&self, i: usize) -> Result<u64, DbError> {
        Ok(u64::try_from(self.int(i)?).unwrap_or(0))
    }

    pub fn flag(&self, i: usize) -> Result<bool, DbError> {
        Ok(self.int(i)? != 0)
    }

    pub fn real(&self, i: usize) -> Result<f64, DbError> {
        match self.at(i)? {
            Value::Real(x) => Ok(*x),
            Value::Int(n) => Ok(*n as f64),
            v => Err(format!("column {i} is not a number: {v:?}").into()),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?
            .ok_or_else(|| format!("column {i} is NULL").into())
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(format!("column {i} is not text: {v:?}").into()),
        }
    }

    /// A JSON list kept as text (roles, a change's list).
    fn list(&self, i: usize) -> Result<Vec<String>, DbError> {
        Ok(serde_json::from_str(&self.text(i)?).unwrap_or_default())
    }
}

/// Statements on one connection, in a transaction or not.
pub trait Sql {
    /// Runs one statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Runs several statements without arguments (a migration).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
}

/// A database that can keep the store: statements, and transactions that
/// no other writer (another thread, another server on the same
/// database) can interleave with.
pub trait Backend: Sql + Send {
    /// The database, as messages show it (a URL without its password).
    fn shown(&self) -> &str;
    /// Runs `f` in a write transaction and commits it when `f` succeeds;
    /// rolls it back otherwise. `f` may run more than once, when the
    /// database asks for a retry. No other write of `scope` runs beside it.
    fn write(
        &mut self,
        scope: Writes<'_>,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), IngestError>,
    ) -> Result<(), IngestError>;
    /// Runs `f` in a transaction that changes the schema, one at a time
    /// across every server of the database.
    fn migration(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// What this database runs besides a migration, by the version it
    /// reaches ([`schema::POSTGRES_ONLY`]).
    fn own_migrations(&self) -> &'static [(i64, &'static str)] {
        &[]
    }
}

/// What a write may race with. A backend with several writers at once
/// runs the writes of one scope one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes<'a> {
    /// One host's run: its replay checks read only that host's rows and
    /// content-addressed rows that are only ever added.
    Host(&'a str),
    /// Every host's rows (pruning removes runs, parts and package lists
    /// that a host's write may be about to use).
    All,
}

/// Maps a driver's error to the store's, saying what could not be done.
pub fn db<E: Into<DbError>>(what: impl Into<String>) -> impl FnOnce(E) -> StoreError {
    let what = what.into();
    move |e| StoreError::Db {
        what,
        source: e.into(),
    }
}

/// Values bound at most to one statement's list: far below either
/// database's limit on parameters.
const LIST_CHUNK: usize = 500;

/// Runs `sql` and reads each row with `read`; `what` says what could not
/// be done if that fails.
fn select<S: Sql + ?Sized, T>(
    s: &mut S,
    sql: &str,
    args: &[Value],
    what: &str,
    read: impl Fn(&Row) -> Result<T, DbError>,
) -> Result<Vec<T>, StoreError> {
    s.query(sql, args)
        .and_then(|rows| rows.iter().map(read).collect())
        .map_err(db(what))
}

/// The schema's version in the database (0 before any migration).
pub fn version(s: &mut dyn Sql) -> Result<i64, DbError> {
    s.query(schema::CURRENT_VERSION, &[])?
        .first()
        .ok_or("no schema version")?
        .int(0)
}

/// Applies each migration the database lacks, each in a transaction of
/// its own with the version it reaches. Each transaction reads the
/// version again: another server may have migrated meanwhile.
pub fn migrate(b: &mut dyn Backend) -> Result<(), StoreError> {
    let shown = b.shown().to_string();
    let known = MIGRATIONS.len() as i64;
    let own = b.own_migrations();
    loop {
        let mut done = false;
        b.migration(&mut |tx| {
            tx.execute(schema::VERSION_TABLE, &[])
                .map_err(db(format!("{shown}: schema table")))?;
            let found = version(tx).map_err(db(format!("{shown}: schema version")))?;
            if found > known {
                return Err(StoreError::Newer {
                    store: shown.clone(),
                    found,
                    known,
                });
            }
            let Some(sql) = MIGRATIONS.get(found as usize) else {
                done = true;
                return Ok(());
            };
            let what = format!("{shown}: migration {}", found + 1);
            tx.batch(sql).map_err(db(&what))?;
            for (_, sql) in own.iter().filter(|(v, _)| *v == found + 1) {
                tx.batch(sql).map_err(db(&what))?;
            }
            tx.execute(schema::RECORD_VERSION, args![found + 1, unix_now()])
                .map_err(db(&what))?;
            Ok(())
        })?;
        if done {
            return Ok(());
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Keeps `run` in the open write transaction `tx`, unless it is a
/// replay. The checks are inside the transaction, so that two servers
/// cannot both pass them.
fn keep(tx: &mut dyn Sql, run: &RunRecord, received_us: u64) -> Result<(), IngestError> {
    let r = &run.report;
    let what = format!("cannot keep run {} of {}", run.run_id, run.fqdn);
    let set = package_set_id(&run.packages);
    let fingerprint = run.fingerprint.as_ref().map(|f| &f.fingerprint);
    let before = tx
        .query(
            schema::BEFORE_KEEP,
            args![
                &run.run_id,
                &run.fqdn,
                fingerprint.map_or("", |f| f.as_str()),
                &set
            ],
        )
        .and_then(|rows| rows.into_iter().next().ok_or_else(|| "no answer".into()))
        .map_err(db(&what))?;
    let read = |i: usize| before.opt_int(i).map_err(db(&what));
    if read(0)?.unwrap_or(0) > 0 {
        return Err(Replay::SameRun {
            fqdn: run.fqdn.clone(),
            run_id: run.run_id.clone(),
        }
        .into());
    }
    if let Some(newest) = read(1)?.map(|n| u64::try_from(n).unwrap_or(0))
        && r.started_at < newest
    {
        return Err(Replay::Older {
            fqdn: run.fqdn.clone(),
            run_id: run.run_id.clone(),
            started_at: r.started_at,
            newest,
        }
        .into());
    }
    let roles = serde_json::to_string(&r.roles).unwrap_or_default();
    let roles_kept = before.opt_text(2).map_err(db(&what))?.as_deref() == Some(roles.as_str());
    let parts_kept = fingerprint.is_none() || read(3)?.unwrap_or(0) > 0;
    let set_kept = read(4)?.unwrap_or(0) > 0;
    let mut exec = |sql: &str, args: &[Value]| tx.execute(sql, args).map_err(db(&what));
    if let Some(f) = run.fingerprint.as_ref().filter(|_| !parts_kept) {
        for p in &f.parts {
            exec(
                schema::INSERT_PART,
                args![&f.fingerprint, &p.resource, &p.part],
            )?;
        }
    }
    if !set_kept {
        for p in &run.packages {
            exec(
                schema::INSERT_PACKAGE,
                args![&set, &p.name, &p.version, p.held],
            )?;
        }
    }
    exec(
        schema::INSERT_RUN,
        args![
            &run.run_id,
            &run.fqdn,
            r.started_at,
            received_us,
            r.elapsed_ms,
            &run.release,
            &roles,
            r.success,
            r.updated as u64,
            r.failed as u64,
            r.total as u64,
            r.bundle_serial,
            &r.kiln_version,
            fingerprint,
            &set,
            run.interval_secs,
        ],
    )?;
    let changed = r.resources.iter().filter(|e| e.status != Status::UpToDate);
    for (seq, e) in changed.enumerate() {
        exec(
            schema::INSERT_CHANGE,
            args![
                &run.run_id,
                seq as u64,
                &e.resource,
                status_name(e.status).as_str(),
                serde_json::to_string(&e.changes)
                    .unwrap_or_default()
                    .as_str(),
                e.error.as_ref(),
                e.diff.as_ref(),
            ],
        )?;
    }
    for (seq, c) in run.checks.iter().flatten().enumerate() {
        exec(
            schema::INSERT_CHECK,
            args![
                &run.run_id,
                seq as u64,
                &c.check,
                &c.origin,
                c.ok,
                &c.detail
            ],
        )?;
    }
    for s in &r.substitutions {
        exec(
            schema::INSERT_SUBSTITUTION,
            args![&run.run_id, &s.package, &s.pin, &s.substitute],
        )?;
    }
    exec(
        schema::UPSERT_HOST,
        args![
            &run.fqdn,
            &run.run_id,
            r.started_at,
            &run.release,
            &roles,
            r.elapsed_ms,
            r.success,
            r.updated as u64,
            r.failed as u64,
            r.bundle_serial,
            fingerprint,
            &set,
            run.interval_secs,
        ],
    )?;
    // The roles a filter reads, as the latest run has them; unchanged for
    // most runs.
    if !roles_kept {
        exec(schema::CLEAR_ROLES, args![&run.fqdn])?;
        for role in &r.roles {
            exec(schema::INSERT_ROLE, args![&run.fqdn, role])?;
        }
    }
    Ok(())
}

/// Every backend is a store: the logic above, on its statements.
impl<B: Backend + ?Sized> Store for B {
    fn ingest(&mut self, run: &RunRecord, received_us: u64) -> Result<(), IngestError> {
        self.write(Writes::Host(&run.fqdn), &mut |tx| {
            keep(tx, run, received_us)
        })
    }

    fn refuse(&mut self, reason: &str, detail: &str, at: u64) -> Result<(), StoreError> {
        self.execute(schema::COUNT_REFUSAL, args![reason, at, detail])
            .map_err(db("cannot count a refused report"))?;
        Ok(())
    }

    fn refusals(&mut self) -> Result<Vec<RefusalCount>, StoreError> {
        select(self, schema::REFUSALS, &[], "cannot list refusals", |r| {
            Ok(RefusalCount {
                reason: r.text(0)?,
                count: r.uint(1)?,
                last_at: r.uint(2)?,
                last_detail: r.text(3)?,
            })
        })
    }

    fn hosts(
        &mut self,
        q: &HostQuery,
        now: u64,
        stale_after: u64,
    ) -> Result<Vec<HostRow>, StoreError> {
        let mut sql = format!("{} WHERE 1 = 1", schema::HOSTS);
        let mut args: Vec<Value> = Vec::new();
        if let Some(role) = &q.role {
            args.push(role.into());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM host_roles x WHERE x.fqdn = h.fqdn AND x.role = ${})",
                args.len()
            ));
        }
        if let Some(release) = &q.release {
            args.push(release.into());
            sql.push_str(&format!(" AND h.release = ${}", args.len()));
        }
        if q.failed {
            sql.push_str(" AND h.success = 0");
        }
        sql.push_str(" ORDER BY h.fqdn");
        let mut out = select(self, &sql, &args, "cannot list hosts", |r| {
            Ok(HostRow {
                fqdn: r.text(0)?,
                release: r.text(1)?,
                roles: r.list(2)?,
                started_at: r.uint(3)?,
                success: r.flag(4)?,
                updated: r.uint(5)?,
                failed: r.uint(6)?,
                fingerprint: r.opt_text(7)?,
                interval_secs: r.opt_int(8)?.map(|n| n.max(0) as u64),
                run_id: r.text(9)?,
                elapsed_ms: r.real(10)?,
                bundle_serial: r.opt_int(11)?.map(|n| n.max(0) as u64),
                stale: false,
            })
        })?;
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
        let mut sql = schema::PACKAGE.to_string();
        let mut args = vec![Value::from(name)];
        if let Some(v) = version {
            args.push(v.into());
            sql.push_str(" AND p.version = $2");
        }
        sql.push_str(" ORDER BY h.fqdn");
        let what = format!("cannot list the hosts of package {name}");
        select(self, &sql, &args, &what, |r| {
            Ok(PackageHost {
                fqdn: r.text(0)?,
                version: r.text(1)?,
                held: r.flag(2)?,
            })
        })
    }

    fn host_packages(&mut self, fqdn: &str) -> Result<Vec<ManagedPackage>, StoreError> {
        let what = format!("cannot list the packages of {fqdn}");
        select(self, schema::HOST_PACKAGES, args![fqdn], &what, |r| {
            Ok(ManagedPackage {
                name: r.text(0)?,
                version: r.text(1)?,
                held: r.flag(2)?,
            })
        })
    }

    fn package_names(&mut self, part: &str, limit: u64) -> Result<Vec<String>, StoreError> {
        let mut pattern = String::from("%");
        for c in part.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let what = format!("cannot search packages for {part:?}");
        select(
            self,
            schema::PACKAGE_NAMES,
            args![pattern.as_str(), limit],
            &what,
            |r| r.text(0),
        )
    }

    fn runs(&mut self, fqdn: &str, since: u64) -> Result<Vec<RunRow>, StoreError> {
        let what = format!("cannot list the runs of {fqdn}");
        let mut runs = select(self, schema::RUNS, args![fqdn, since], &what, |r| {
            Ok(RunRow {
                run_id: r.text(0)?,
                started_at: r.uint(1)?,
                elapsed_ms: r.real(2)?,
                success: r.flag(3)?,
                updated: r.uint(4)?,
                failed: r.uint(5)?,
                fingerprint: r.opt_text(6)?,
                release: r.text(7)?,
                roles: r.list(8)?,
                changes: Vec::new(),
            })
        })?;
        let changes = select(self, schema::RUN_CHANGES, args![fqdn, since], &what, |r| {
            let change = ChangeRow {
                resource: r.text(1)?,
                status: r.text(2)?,
                changes: r.list(3)?,
                error: r.opt_text(4)?,
                diff: r.opt_text(5)?,
            };
            Ok((r.text(0)?, change))
        })?;
        for (id, change) in changes {
            if let Some(run) = runs.iter_mut().find(|r| r.run_id == id) {
                run.changes.push(change);
            }
        }
        Ok(runs)
    }

    fn prune(&mut self, cutoff: u64) -> Result<u64, StoreError> {
        let what = "cannot prune old runs";
        let mut gone = 0;
        let done = self.write(Writes::All, &mut |tx| {
            for (i, sql) in schema::prune().iter().enumerate() {
                let args = if sql.contains("$1") {
                    vec![Value::from(cutoff)]
                } else {
                    Vec::new()
                };
                let n = tx.execute(sql, &args).map_err(db(what))?;
                // The fourth statement removes the runs themselves.
                if i == 3 {
                    gone = n;
                }
            }
            Ok(())
        });
        match done {
            Ok(()) => Ok(gone),
            Err(IngestError::Store(e)) => Err(e),
            Err(IngestError::Replay(r)) => Err(db(what)(r)),
        }
    }

    fn count_runs(&mut self) -> Result<u64, StoreError> {
        self.query(schema::COUNT_RUNS, &[])
            .and_then(|rows| rows.first().ok_or("no count")?.uint(0))
            .map_err(db("cannot count runs"))
    }

    fn parts(&mut self, fingerprint: &str) -> Result<Vec<(String, String)>, StoreError> {
        let what = format!("cannot read the parts of fingerprint {fingerprint}");
        select(self, schema::PARTS, args![fingerprint], &what, |r| {
            Ok((r.text(0)?, r.text(1)?))
        })
    }

    fn parts_of(
        &mut self,
        fingerprints: &[&str],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in fingerprints.chunks(LIST_CHUNK) {
            let args: Vec<Value> = chunk.iter().map(|f| Value::from(*f)).collect();
            let sql = schema::with_list(schema::PARTS_OF, chunk.len());
            out.extend(select(
                self,
                &sql,
                &args,
                "cannot read fingerprints' parts",
                |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)),
            )?);
        }
        Ok(out)
    }

    fn histories(&mut self, fqdns: &[&str]) -> Result<Vec<History>, StoreError> {
        let mut out = Vec::new();
        for chunk in fqdns.chunks(LIST_CHUNK) {
            let args: Vec<Value> = chunk.iter().map(|f| Value::from(*f)).collect();
            let sql = schema::with_list(schema::HISTORIES, chunk.len());
            out.extend(select(self, &sql, &args, "cannot read hosts' runs", |r| {
                Ok(History {
                    fqdn: r.text(0)?,
                    run_id: r.text(1)?,
                    started_at: r.uint(2)?,
                    fingerprint: r.opt_text(3)?,
                })
            })?);
        }
        Ok(out)
    }
}
