//! The embedded store: one SQLite file, the way a team of one starts. One
//! connection, used by one request at a time (the server holds it behind a
//! lock); WAL with full syncs, so that a report acknowledged is on disk.

use std::path::Path;

use rusqlite::types::Value as Lite;
use rusqlite::{Connection, TransactionBehavior};

use super::sql::{self, Backend, DbError, Row, Sql, Value, Writes, db};
use super::{IngestError, StoreError};

pub struct Sqlite {
    conn: Connection,
    path: String,
}

impl Sqlite {
    /// Opens (creating it and its directory) the database at `path` and
    /// brings its schema to this kiln's version.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(db(format!("directory {} cannot be made", dir.display())))?;
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
        sql::migrate(&mut s)?;
        Ok(s)
    }

    /// IMMEDIATE: the write lock first, so that two servers on one file
    /// cannot both pass a check made inside the transaction.
    fn immediate<E: From<StoreError>>(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), E>,
    ) -> Result<(), E> {
        let what = format!("{}: a write transaction", self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&what))?;
        f(&mut Conn(&tx))?;
        tx.commit().map_err(db(&what))?;
        Ok(())
    }
}

/// Statements on a connection or on a transaction (which derefs to one).
struct Conn<'a>(&'a Connection);

fn to_lite(v: &Value) -> Lite {
    match v {
        Value::Null => Lite::Null,
        Value::Int(n) => Lite::Integer(*n),
        Value::Real(x) => Lite::Real(*x),
        Value::Text(s) => Lite::Text(s.clone()),
    }
}

fn from_lite(v: Lite) -> Result<Value, DbError> {
    Ok(match v {
        Lite::Null => Value::Null,
        Lite::Integer(n) => Value::Int(n),
        Lite::Real(x) => Value::Real(x),
        Lite::Text(s) => Value::Text(s),
        Lite::Blob(_) => return Err("a blob where the schema has none".into()),
    })
}

impl Sql for Conn<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let n = self
            .0
            .execute(sql, rusqlite::params_from_iter(args.iter().map(to_lite)))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut st = self.0.prepare(sql)?;
        let width = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args.iter().map(to_lite)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = (0..width)
                .map(|i| from_lite(r.get::<_, Lite>(i)?))
                .collect::<Result<_, DbError>>()?;
            out.push(Row(row));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

impl Sql for Sqlite {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        Conn(&self.conn).execute(sql, args)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        Conn(&self.conn).query(sql, args)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Conn(&self.conn).batch(sql)
    }
}

impl Backend for Sqlite {
    fn shown(&self) -> &str {
        &self.path
    }

    /// SQLite has one writer at a time whatever the scope.
    fn write(
        &mut self,
        _: Writes<'_>,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        self.immediate(f)
    }

    fn migration(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.immediate(f)
    }
}
