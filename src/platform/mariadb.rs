//! MariaDB over the server's unix socket, in-process: the `mariadb_*`
//! resources read and change databases, accounts and tables through it,
//! so that neither a check nor a change starts a program, and a password
//! travels only inside the protocol (never argv, a file or statement text).
//!
//! kiln runs as root, and Debian's `root@localhost` is identified by the
//! peer's uid on the socket (`unix_socket`), so no credential is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql::prelude::Queryable;

/// Where Debian's server listens (`[client-server] socket`).
pub const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// Long enough for a seed file's statements, short enough that a stuck
/// server fails the run instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Server error numbers kiln tells apart.
const ER_BAD_DB: u16 = 1049;
const ER_NO_SUCH_TABLE: u16 = 1146;

#[derive(Debug, thiserror::Error)]
pub enum MariadbError {
    #[error(
        "cannot reach MariaDB at {}: {source}; start the server first (a service[mariadb] \
         resource with action start, before this one) or set socket to where it listens",
        socket.display()
    )]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: mysql::Error,
    },
    #[error("MariaDB refused to {what}: {source}")]
    Query {
        what: String,
        #[source]
        source: mysql::Error,
    },
    #[error("{0}")]
    Seed(String),
}

/// One connection, opened once per run and kept for the resources after.
pub struct Client {
    socket: PathBuf,
    conn: mysql::Conn,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({})", self.socket.display())
    }
}

/// A database's defaults as the server has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub charset: String,
    pub collation: String,
}

/// An account as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Whether its password is the one asked about (`None`: none was asked).
    pub password_matches: Option<bool>,
}

/// An account's host and what it may do, database by database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    pub host: String,
    pub on: BTreeMap<String, BTreeSet<String>>,
}

/// What a table holds, as far as a seed cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Missing,
    Empty,
    Filled,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Missing => "missing",
            Table::Empty => "empty",
            Table::Filled => "filled",
        })
    }
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, MariadbError> {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(socket.to_string_lossy()))
            .user(Some("root"))
            .prefer_socket(true)
            .read_timeout(Some(TIMEOUT))
            .write_timeout(Some(TIMEOUT));
        let conn = mysql::Conn::new(opts).map_err(|source| MariadbError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        })?;
        Ok(Client {
            socket: socket.to_path_buf(),
            conn,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the connection still answers (a restart in between drops it).
    pub fn alive(&mut self) -> bool {
        self.conn.ping().is_ok()
    }

    fn query_err(what: impl Into<String>) -> impl FnOnce(mysql::Error) -> MariadbError {
        let what = what.into();
        move |source| MariadbError::Query { what, source }
    }

    pub fn database(&mut self, name: &str) -> Result<Option<Database>, MariadbError> {
        let row: Option<(String, String)> = self
            .conn
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .map_err(Self::query_err(format!("read database {name}")))?;
        Ok(row.map(|(charset, collation)| Database { charset, collation }))
    }

    /// The account `user@host`, and whether `password` is its password.
    pub fn account(
        &mut self,
        user: &str,
        host: &str,
        password: Option<&str>,
    ) -> Result<Option<Account>, MariadbError> {
        let what = || format!("read account {}", account_name(user, host));
        let found: Option<(String, Option<String>)> = self
            .conn
            .exec_first(
                "SELECT authentication_string, PASSWORD(?) FROM mysql.user \
                 WHERE User = ? AND Host = ?",
                (password.unwrap_or_default(), user, host),
            )
            .map_err(Self::query_err(what()))?;
        Ok(found.map(|(have, want)| Account {
            password_matches: password.map(|_| want.is_some_and(|w| w == have)),
        }))
    }

    /// The privileges `user@host` holds on every table of `database`, by
    /// their GRANT names; `all` says whether they are all there are.
    pub fn privileges(
        &mut self,
        user: &str,
        host: &str,
        database: &str,
    ) -> Result<(BTreeSet<String>, bool), MariadbError> {
        let what = || {
            format!(
                "read the privileges of {} on {database}",
                account_name(user, host)
            )
        };
        let grantee = account_name(user, host);
        let names: Vec<String> = self
            .conn
            .exec(
                "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE GRANTEE = ? AND TABLE_SCHEMA = ?",
                (grantee, database),
            )
            .map_err(Self::query_err(what()))?;
        // "ALL" is whatever this server's version counts as all: every
        // privilege column of the account's mysql.db row but GRANT OPTION.
        let row: Option<mysql::Row> = self
            .conn
            .exec_first(
                "SELECT * FROM mysql.db WHERE User = ? AND Host = ? AND Db = ?",
                (user, host, database),
            )
            .map_err(Self::query_err(what()))?;
        let all = row.is_some_and(|row| {
            let columns = row.columns();
            columns.iter().enumerate().all(|(i, c)| {
                let name = c.name_str();
                !name.ends_with("_priv")
                    || name == "Grant_priv"
                    || row.get::<String, _>(i).as_deref() == Some("Y")
            })
        });
        Ok((names.into_iter().collect(), all))
    }

    /// Every account named `user`: its host and its privileges by database.
    pub fn accounts_named(&mut self, user: &str) -> Result<Vec<Privileges>, MariadbError> {
        let what = || format!("read the accounts named {user}");
        let hosts: Vec<String> = self
            .conn
            .exec(
                "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host",
                (user,),
            )
            .map_err(Self::query_err(what()))?;
        let mut out = Vec::new();
        for host in hosts {
            let rows: Vec<(String, String)> = self
                .conn
                .exec(
                    "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                     WHERE GRANTEE = ?",
                    (account_name(user, &host),),
                )
                .map_err(Self::query_err(what()))?;
            let mut on = BTreeMap::<String, BTreeSet<String>>::new();
            for (db, privilege) in rows {
                on.entry(db).or_default().insert(privilege);
            }
            out.push(Privileges { host, on });
        }
        Ok(out)
    }

    pub fn table(&mut self, database: &str, table: &str) -> Result<Table, MariadbError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{})",
            ident(database),
            ident(table)
        );
        match self.conn.query_first::<bool, _>(sql) {
            Ok(Some(true)) => Ok(Table::Filled),
            Ok(_) => Ok(Table::Empty),
            Err(mysql::Error::MySqlError(e)) if [ER_BAD_DB, ER_NO_SUCH_TABLE].contains(&e.code) => {
                Ok(Table::Missing)
            }
            Err(source) => Err(MariadbError::Query {
                what: format!("read table {database}.{table}"),
                source,
            }),
        }
    }

    /// Runs statements kiln wrote itself (identifiers and literals quoted
    /// here), one or several separated by `;`.
    pub fn run(&mut self, what: &str, sql: &str) -> Result<(), MariadbError> {
        self.conn.query_drop(sql).map_err(Self::query_err(what))
    }

    /// Sets `user@host`'s password from the server's own hash of it, so
    /// that the password itself is only ever a bound parameter.
    pub fn set_password(
        &mut self,
        user: &str,
        host: &str,
        password: &str,
        create: bool,
    ) -> Result<(), MariadbError> {
        let name = account_name(user, host);
        let hash: Option<String> = self
            .conn
            .exec_first("SELECT PASSWORD(?)", (password,))
            .map_err(Self::query_err(format!("hash the password of {name}")))?;
        let hash = hash.unwrap_or_default();
        let verb = if create {
            "CREATE USER IF NOT EXISTS"
        } else {
            "ALTER USER"
        };
        let sql = format!("{verb} {name} IDENTIFIED BY PASSWORD {}", literal(&hash));
        let what = if create {
            "create"
        } else {
            "set the password of"
        };
        self.run(&format!("{what} {name}"), &sql)
    }

    /// Loads `sql` (a file's statements) into `database`.
    pub fn load(&mut self, database: &str, sql: &str) -> Result<(), MariadbError> {
        self.run(
            &format!("use database {database}"),
            &format!("USE {}", ident(database)),
        )?;
        self.run(&format!("load statements into {database}"), sql)
    }
}

/// `'user'@'host'`, as SQL and messages name an account.
pub fn account_name(user: &str, host: &str) -> String {
    format!("{}@{}", literal(user), literal(host))
}

/// An identifier in backquotes; a backquote inside is doubled.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A string literal in single quotes. The resources refuse names with a
/// backslash (see [`check_name`]), whose meaning depends on the server's
/// `sql_mode`, so doubling the quote is all there is to do.
pub fn literal(s: &str) -> String {
    debug_assert!(!s.contains('\\'), "names with a backslash are refused");
    format!("'{}'", s.replace('\'', "''"))
}

/// Why `name` cannot be a database, table, account or host name kiln
/// writes into SQL, if it cannot: empty, too long, or holding a quote, a
/// backslash or a control character.
pub fn check_name(name: &str, max: usize) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > max {
        Some("is too long")
    } else if name
        .chars()
        .any(|c| matches!(c, '\'' | '"' | '`' | '\\') || c.is_control())
    {
        Some("holds a quote, a backslash or a control character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("shop"), "`shop`");
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("o'k"), "'o''k'");
        assert_eq!(check_name("shop", 64), None);
        for bad in ["", "a'b", "a\\b", "a`b", "a\nb", &"x".repeat(65)] {
            assert!(check_name(bad, 64).is_some(), "{bad:?}");
        }
        assert_eq!(account_name("shop", "%"), "'shop'@'%'");
    }
}
