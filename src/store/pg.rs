//! The shared store: PostgreSQL, for fleets that outgrow one machine. Any
//! number of `kiln server` processes may use one database, since a server
//! keeps no state of its own. Writes that could race take advisory locks
//! (one per host, and one for the store that pruning holds alone), so a
//! write's replay checks see every earlier write of its host committed,
//! and writes of different hosts never wait on or undo each other:
//! SERIALIZABLE had them retried, under load ten times over, and then
//! failed. Migrations take an advisory lock of their own.
//!
//! The connection is encrypted as the URL's `sslmode` says, libpq's way
//! (`pg_tls`): by default only if the server offers TLS, and unchecked
//! unless `sslrootcert` is given; `verify-full` for a database across a
//! network that is not the server's own.

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type, private::BytesMut};
use postgres::{Client, GenericClient, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::pg_tls::PgUrl;
use super::sql::{self, Backend, DbError, Row, Sql, Value, Writes, db};
use super::{IngestError, StoreError};

/// Tries of one write that PostgreSQL found deadlocked: with the locks
/// below, none is expected; a retry costs less than a refused report.
const ATTEMPTS: u32 = 5;
/// Held shared by every host's write and alone by pruning ("kilS").
const STORE_LOCK: i64 = 0x6b69_6c53;
/// A host's lock: the two-key form ("kilH", the name's hash), which never
/// meets the one-key locks above; hosts whose names hash alike only wait
/// for each other.
const HOST_LOCK: &str =
    "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock(1802071112, hashtext($2))";
const ALONE_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
/// Held by the transaction that migrates, so that servers starting
/// together migrate one after the other ("kiln" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b69_6c6e;
/// How long a connection suspected lost has to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Postgres {
    client: Client,
    /// The statements prepared on this connection, by their text: a
    /// statement run again is one round trip, not two (a write runs ten).
    prepared: HashMap<String, Statement>,
    /// To connect again (with its password, never shown).
    url: PgUrl,
    tls: MakeRustlsConnect,
    /// The last statement failed: the connection may be lost.
    suspect: bool,
}

impl Postgres {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
    /// with `sslmode` and `sslrootcert` as libpq takes them) and brings
    /// its schema to this kiln's version.
    pub fn open(url: &str) -> Result<Postgres, StoreError> {
        let url = PgUrl::parse(url).map_err(|e| StoreError::Db {
            what: "URL cannot be used".into(),
            source: Box::new(e),
        })?;
        let tls = url.connector()?;
        let client = connect(&url, &tls)?;
        let mut p = Postgres {
            client,
            prepared: HashMap::new(),
            url,
            tls,
            suspect: false,
        };
        sql::migrate(&mut p)?;
        Ok(p)
    }

    /// The connection, made again when it was lost (the database
    /// restarted, or the network dropped it): the request that found it
    /// lost failed, the next ones need no restart of the server. Checked
    /// only after a failure, so that a request costs no extra round trip.
    fn client(&mut self) -> Result<(&mut Client, &mut HashMap<String, Statement>), DbError> {
        if self.suspect && (self.client.is_closed() || self.client.is_valid(CHECK_TIMEOUT).is_err())
        {
            // Still suspect if this fails: the next request tries again.
            self.client = connect(&self.url, &self.tls).map_err(Box::new)?;
            self.prepared.clear();
        }
        self.suspect = false;
        Ok((&mut self.client, &mut self.prepared))
    }

    /// Runs `f` on the connection, marking it suspect if `f` fails.
    fn on<T>(
        &mut self,
        f: impl FnOnce(Conn<'_, Client>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let (client, prepared) = self.client()?;
        let done = f(Conn(client, prepared));
        self.suspect = done.is_err();
        done
    }
}

/// A connection, refused with a [`super::pg_tls::TlsError`] when TLS is
/// what failed.
fn connect(url: &PgUrl, tls: &MakeRustlsConnect) -> Result<Client, StoreError> {
    url.config
        .connect(tls.clone())
        .map_err(|e| match url.refused(&e) {
            Some(refused) => refused.into(),
            None => db_pg(format!("{} cannot be connected to", url.shown))(e),
        })
}

/// A driver's error with what the server said: `postgres::Error` shows
/// only "db error" and keeps the server's message as its source.
#[derive(Debug)]
struct PgError(postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::error::Error as _;
        match (self.0.as_db_error(), self.0.source()) {
            (Some(server), _) => write!(f, "{server}"),
            (None, Some(cause)) => write!(f, "{}: {cause}", self.0),
            (None, None) => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

fn pg(e: postgres::Error) -> DbError {
    Box::new(PgError(e))
}

/// [`db`] for the driver's own calls.
fn db_pg(what: impl Into<String>) -> impl FnOnce(postgres::Error) -> StoreError {
    let to_store = db(what);
    move |e| to_store(pg(e))
}

/// Whether `e` is PostgreSQL asking for the transaction to be run again.
fn retryable(e: &IngestError) -> bool {
    let IngestError::Store(StoreError::Db { source, .. }) = e else {
        return false;
    };
    let code = source.downcast_ref::<PgError>().and_then(|e| e.0.code());
    code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, DbError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => n.to_sql_checked(ty, out),
            Value::Real(x) => x.to_sql_checked(ty, out),
            Value::Text(s) => s.to_sql_checked(ty, out),
        }
    }

    /// Each variant checks its own type in `to_sql`.
    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, DbError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, DbError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::FLOAT8) || <String as FromSql>::accepts(ty)
    }
}

/// Statements on the client or on one of its transactions, and the
/// connection's prepared statements.
struct Conn<'a, C>(&'a mut C, &'a mut HashMap<String, Statement>);

impl<C: GenericClient> Conn<'_, C> {
    /// `sql` prepared, once per connection: a statement prepared in a
    /// transaction outlives it, even one rolled back.
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.1.get(sql) {
            return Ok(s.clone());
        }
        let s = self.0.prepare(sql).map_err(pg)?;
        self.1.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn bound(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Sql for Conn<'_, C> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let s = self.statement(sql)?;
        self.0.execute(&s, &bound(args)).map_err(pg)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let s = self.statement(sql)?;
        let rows = self.0.query(&s, &bound(args)).map_err(pg)?;
        rows.iter()
            .map(|r| {
                let row = (0..r.len())
                    .map(|i| r.try_get::<_, Value>(i).map_err(pg))
                    .collect::<Result<_, _>>()?;
                Ok(Row(row))
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.0.batch_execute(sql).map_err(pg)
    }
}

impl Sql for Postgres {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        self.on(|mut c| c.execute(sql, args))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        self.on(|mut c| c.query(sql, args))
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.on(|mut c| c.batch(sql))
    }
}

impl Backend for Postgres {
    fn shown(&self) -> &str {
        &self.url.shown
    }

    fn write(
        &mut self,
        scope: Writes<'_>,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let what = format!("{}: a write transaction", self.url.shown);
        let mut attempt = 1;
        loop {
            let done = (|| {
                let (client, prepared) = self.client().map_err(db(&what))?;
                // READ COMMITTED: each statement sees what was committed
                // before it, which the locks make every earlier write
                // of this scope.
                let mut tx = client.transaction().map_err(db_pg(&what))?;
                let mut conn = Conn(&mut tx, prepared);
                match scope {
                    Writes::Host(fqdn) => {
                        conn.execute(HOST_LOCK, &[STORE_LOCK.into(), fqdn.into()])
                    }
                    Writes::All => conn.execute(ALONE_LOCK, &[STORE_LOCK.into()]),
                }
                .map_err(db(&what))?;
                f(&mut conn)?;
                tx.commit().map_err(db_pg(&what))?;
                Ok(())
            })();
            self.suspect = matches!(done, Err(IngestError::Store(_)));
            match done {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    // Apart, and at random within the step, so that the
                    // racing writers do not meet again.
                    let step = 5u64 << attempt.min(5);
                    let mut r = [0u8; 8];
                    let _ = getrandom::fill(&mut r);
                    let wait = step / 2 + u64::from_le_bytes(r) % step;
                    std::thread::sleep(Duration::from_millis(wait));
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    fn own_migrations(&self) -> &'static [(i64, &'static str)] {
        super::schema::POSTGRES_ONLY
    }

    fn migration(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let what = format!("{}: a migration", self.url.shown);
        let done = (|| {
            let (client, prepared) = self.client().map_err(db(&what))?;
            let mut tx = client.transaction().map_err(db_pg(&what))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(db_pg(&what))?;
            f(&mut Conn(&mut tx, prepared))?;
            tx.commit().map_err(db_pg(&what))
        })();
        self.suspect = done.is_err();
        done
    }
}
