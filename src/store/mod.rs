//! The fleet's memory: every host's run reports, kept by `kiln server` and
//! queried by `kiln report`, so that questions about the fleet are answered
//! from one database instead of an ssh session per host. One schema
//! ([`schema`]) behind one trait ([`Store`]), written once ([`sql`]) for
//! two backends: embedded SQLite for one server, PostgreSQL for several.

pub mod drift;
pub mod pg;
pub mod pg_tls;
pub mod record;
pub mod rollout;
pub mod schema;
pub mod sql;
pub mod sqlite;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use record::{Envelope, ManagedPackage, RunRecord};

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the report store {what}: {source}")]
    Db {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the report store {store} has schema version {found}, newer than this kiln knows ({known}); \
         run the newer kiln server, or point --database at another database"
    )]
    Newer {
        /// The file, or the URL without its password.
        store: String,
        found: i64,
        known: i64,
    },
    #[error(transparent)]
    Tls(#[from] pg_tls::TlsError),
}

/// The database of `kiln server --database`: a URL that starts with
/// `postgres://` or `postgresql://` is PostgreSQL, anything else the path
/// of a SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("--database is empty; give the path of a SQLite file or a postgres:// URL")]
    Empty,
    #[error(
        "--database {url} is not a PostgreSQL URL ({reason}); write it as \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    Url { url: String, reason: String },
    #[error(
        "--database {url}: kiln does not take sslmode={value}; use disable, prefer, \
         require, verify-ca or verify-full"
    )]
    SslMode { url: String, value: String },
}

impl std::str::FromStr for Database {
    type Err = DatabaseError;

    fn from_str(s: &str) -> Result<Database, DatabaseError> {
        if s.is_empty() {
            return Err(DatabaseError::Empty);
        }
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Ok(Database::Sqlite(PathBuf::from(s)));
        }
        pg_tls::PgUrl::parse(s)?;
        Ok(Database::Postgres(s.to_string()))
    }
}

/// Shows the file, or the URL without its password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl Database {
    /// Opens the store, bringing its schema to this kiln's version.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Database::Sqlite(path) => Box::new(sqlite::Sqlite::open(path)?),
            Database::Postgres(url) => Box::new(pg::Postgres::open(url)?),
        })
    }
}

/// `url` with the password (after `user:`, or a `password=` parameter)
/// replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before, query) = rest
        .split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)));
    // The user part ends at the last '@': a password may hold a '/' or an
    // '@' its writer did not escape. Too much hidden is the safe mistake.
    let before = match before.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => before.to_string(),
        },
        None => before.to_string(),
    };
    let query = query.map(|q| {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        format!("?{}", params.join("&"))
    });
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{before}{}", query.unwrap_or_default())
}

/// Why a report was not kept though it was well signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("run {run_id} of {fqdn} is already stored: a replay")]
    SameRun { fqdn: String, run_id: String },
    #[error(
        "run {run_id} of {fqdn} started at {started_at}, before the host's newest stored run ({newest}): a replay"
    )]
    Older {
        fqdn: String,
        run_id: String,
        started_at: u64,
        newest: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Replay(#[from] Replay),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which hosts `kiln report hosts` lists (their latest runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostQuery {
    pub role: Option<String>,
    pub release: Option<String>,
    /// Only hosts whose latest run failed.
    pub failed: bool,
    /// Only stale hosts (see [`HostRow::is_stale`]).
    pub stale: bool,
}

/// A host as its latest run left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRow {
    pub fqdn: String,
    pub release: String,
    pub roles: Vec<String>,
    pub started_at: u64,
    pub success: bool,
    pub updated: u64,
    pub failed: u64,
    pub fingerprint: Option<String>,
    pub interval_secs: Option<u64>,
    pub run_id: String,
    #[serde(default)]
    pub elapsed_ms: f64,
    /// The serial of the bundle the run converged, if it came from one.
    #[serde(default)]
    pub bundle_serial: Option<u64>,
    /// Whether the host is stale at the time of the query.
    #[serde(default)]
    pub stale: bool,
}

impl HostRow {
    /// No report within twice the host's interval, or within `default`
    /// for a host that sent none (runs started by hand).
    pub fn is_stale(&self, now: u64, default: u64) -> bool {
        let allowed = self.interval_secs.map_or(default, |i| i.saturating_mul(2));
        now.saturating_sub(self.started_at) > allowed
    }
}

/// A host that has a package, from its latest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageHost {
    pub fqdn: String,
    pub version: String,
    pub held: bool,
}

/// One stored run and what it changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub run_id: String,
    pub started_at: u64,
    pub elapsed_ms: f64,
    pub success: bool,
    pub updated: u64,
    pub failed: u64,
    pub fingerprint: Option<String>,
    pub release: String,
    pub roles: Vec<String>,
    pub changes: Vec<ChangeRow>,
}

/// A resource a run did not find up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRow {
    pub resource: String,
    pub status: String,
    pub changes: Vec<String>,
    pub error: Option<String>,
    /// What the change was, as the host's report showed it (a secret's
    /// diff is redacted by the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// How often reports were refused, by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    pub reason: String,
    pub count: u64,
    pub last_at: u64,
    pub last_detail: String,
}

/// A database that keeps run reports. Writes are whole or not at all: a
/// report either is stored with everything it carries, or leaves the
/// store as it was.
pub trait Store: Send {
    /// Keeps `run`, unless it is a replay (its id is stored, or it is
    /// older than the host's newest run). `received_us` (microseconds
    /// since the epoch) orders runs that started in the same second.
    fn ingest(&mut self, run: &RunRecord, received_us: u64) -> Result<(), IngestError>;
    /// Counts a refused report under `reason`.
    fn refuse(&mut self, reason: &str, detail: &str, at: u64) -> Result<(), StoreError>;
    fn refusals(&mut self) -> Result<Vec<RefusalCount>, StoreError>;
    /// The latest run of each host that `q` selects, by fqdn; `now` and
    /// `stale_after` judge staleness.
    fn hosts(
        &mut self,
        q: &HostQuery,
        now: u64,
        stale_after: u64,
    ) -> Result<Vec<HostRow>, StoreError>;
    /// Hosts whose latest run has package `name` (at `version`).
    fn package(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Vec<PackageHost>, StoreError>;
    /// The packages of `fqdn`'s latest run, by name.
    fn host_packages(&mut self, fqdn: &str) -> Result<Vec<ManagedPackage>, StoreError>;
    /// Up to `limit` names of kept packages that contain `part`.
    fn package_names(&mut self, part: &str, limit: u64) -> Result<Vec<String>, StoreError>;
    /// The runs of `fqdn` that started at or after `since`, oldest first.
    fn runs(&mut self, fqdn: &str, since: u64) -> Result<Vec<RunRow>, StoreError>;
    /// Removes runs that started before `cutoff`, except each host's
    /// latest; returns how many went.
    fn prune(&mut self, cutoff: u64) -> Result<u64, StoreError>;
    fn count_runs(&mut self) -> Result<u64, StoreError>;
    /// The parts of a stored fingerprint: (resource, part).
    fn parts(&mut self, fingerprint: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The parts of several stored fingerprints: (fingerprint, resource,
    /// part), in one read however many.
    fn parts_of(
        &mut self,
        fingerprints: &[&str],
    ) -> Result<Vec<(String, String, String)>, StoreError>;
    /// The runs of several hosts, each host's newest first: (fqdn, run id,
    /// started at, fingerprint).
    fn histories(&mut self, fqdns: &[&str]) -> Result<Vec<History>, StoreError>;
}

/// One run in a host's history of fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub fqdn: String,
    pub run_id: String,
    pub started_at: u64,
    pub fingerprint: Option<String>,
}

/// How long before `now` a stored time `t` was, as people say it
/// (`90s ago`, `12m ago`, `5h ago`, `3d ago`).
pub fn ago(now: u64, t: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..120 => format!("{d}s ago"),
        120..7200 => format!("{}m ago", d / 60),
        7200..172_800 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86_400),
    }
}

/// The digest under which a package list is kept once.
pub fn package_set_id(packages: &[ManagedPackage]) -> String {
    let mut lines: Vec<String> = packages
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.held))
        .collect();
    lines.sort();
    crate::digest::sha256_hex(lines.concat().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_twice_the_interval_or_the_default() {
        let mut h = HostRow {
            fqdn: "a".into(),
            release: "bookworm".into(),
            roles: vec![],
            started_at: 1000,
            success: true,
            updated: 0,
            failed: 0,
            fingerprint: None,
            interval_secs: Some(600),
            run_id: "r".into(),
            elapsed_ms: 0.0,
            bundle_serial: None,
            stale: false,
        };
        assert!(!h.is_stale(2200, 60));
        assert!(h.is_stale(2201, 60));
        h.interval_secs = None;
        assert!(!h.is_stale(1060, 60));
        assert!(h.is_stale(1061, 60));
        // A clock behind the host's is not staleness.
        assert!(!h.is_stale(0, 60));
    }

    #[test]
    fn a_database_is_postgres_by_its_scheme_and_shown_without_its_password() {
        let pg = |s: &str| Database::Postgres(s.into());
        assert_eq!(
            "kiln.db".parse::<Database>().unwrap(),
            Database::Sqlite("kiln.db".into())
        );
        assert_eq!(
            "postgres://kiln@db/kiln".parse::<Database>().unwrap(),
            pg("postgres://kiln@db/kiln")
        );
        let url = "postgresql://kiln:s3cret@db:5433/kiln?password=s3cret&sslmode=disable";
        let d: Database = url.parse().unwrap();
        assert_eq!(d, pg(url));
        assert_eq!(
            d.to_string(),
            "postgresql://kiln:***@db:5433/kiln?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://a:b@c@h/x"), "postgres://a:***@h/x");
        assert_eq!(redact("postgres://a:b/c@h/x"), "postgres://a:***@h/x");
        assert_eq!(redact("postgres://a@h/x"), "postgres://a@h/x");
        assert!(matches!("".parse::<Database>(), Err(DatabaseError::Empty)));
        let e = "postgres://kiln:s3cret@db:notaport/kiln"
            .parse::<Database>()
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("kiln:***@db"), "{e}");
    }

    #[test]
    fn a_package_list_has_one_id_whatever_its_order() {
        let p = |n: &str| ManagedPackage {
            name: n.into(),
            version: "1".into(),
            held: true,
        };
        assert_eq!(
            package_set_id(&[p("a"), p("b")]),
            package_set_id(&[p("b"), p("a")])
        );
        assert_ne!(package_set_id(&[p("a")]), package_set_id(&[p("b")]));
    }
}
