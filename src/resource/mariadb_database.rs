//! `mariadb_database`: a database and its default character set and
//! collation, read and changed over the server's socket. In a `--root`
//! tree no server runs: the change is reported as skipped, and the first
//! converge of the running system makes it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    Action, BuildEnv, Context, Converge, Item, Resource, ResourceResult, ServerAt, Spec, State,
    TypeDef, actions,
};
use crate::error::{PolicyError, RunError};
use crate::platform::mariadb::{self, DEFAULT_SOCKET, ident, literal};

pub const TYPE: TypeDef = TypeDef::of::<MariadbDatabase>(
    "mariadb_database",
    &["charset", "collation", "socket"],
    build,
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    charset: Option<String>,
    collation: Option<String>,
    socket: Option<String>,
}

#[derive(Debug)]
pub struct MariadbDatabase {
    name: String,
    charset: String,
    collation: Option<String>,
    socket: PathBuf,
}

/// The server's default for new databases on Debian, and what the shop uses.
const DEFAULT_CHARSET: &str = "utf8mb4";

/// Checks a name that goes into SQL: a database, table, account or host.
pub(super) fn sql_name(what: &str, name: &str, max: usize) -> Result<(), PolicyError> {
    match mariadb::check_name(name, max) {
        None => Ok(()),
        Some(why) => Err(
            PolicyError::new(format!("{what} {name:?} {why}")).fix(format!(
                "use letters, digits and _ in the {what} (at most {max} characters)"
            )),
        ),
    }
}

/// The `socket` property: where the server listens, an absolute path.
pub(super) fn socket(socket: Option<String>) -> Result<PathBuf, PolicyError> {
    let s = socket.unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    if !s.starts_with('/') {
        return Err(
            PolicyError::new(format!("socket {s:?} is not an absolute path"))
                .fix(format!("give the server's socket, e.g. {DEFAULT_SOCKET:?}")),
        );
    }
    Ok(PathBuf::from(s))
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    sql_name("database", &spec.name, 64)?;
    let charset = p.charset.unwrap_or_else(|| DEFAULT_CHARSET.to_string());
    sql_name("charset", &charset, 32)?;
    if let Some(c) = &p.collation {
        sql_name("collation", c, 64)?;
    }
    Ok(Box::new(MariadbDatabase {
        name: spec.name.clone(),
        charset,
        collation: p.collation,
        socket: socket(p.socket)?,
    }))
}

actions! {
    pub enum DatabaseAction {
        Create = "create",
        Drop = "drop",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DatabaseChange {
    Create {
        charset: String,
        collation: Option<String>,
    },
    /// Its defaults differ: `from` is what the server has.
    Alter {
        from: String,
        charset: String,
        collation: Option<String>,
    },
    Drop,
    SkippedInRoot(&'static str),
}

fn defaults(charset: &str, collation: &Option<String>) -> String {
    match collation {
        Some(c) => format!("{charset}, {c}"),
        None => charset.to_string(),
    }
}

impl fmt::Display for DatabaseChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseChange::Create { charset, collation } => {
                write!(f, "create database ({})", defaults(charset, collation))
            }
            DatabaseChange::Alter {
                from,
                charset,
                collation,
            } => write!(
                f,
                "change defaults from {from} to {}",
                defaults(charset, collation)
            ),
            DatabaseChange::Drop => write!(f, "drop database"),
            DatabaseChange::SkippedInRoot(a) => {
                write!(f, "{a} skipped: --root target (no server runs there)")
            }
        }
    }
}

impl Item for DatabaseChange {
    fn skipped(&self) -> bool {
        matches!(self, DatabaseChange::SkippedInRoot(_))
    }
}

impl MariadbDatabase {
    fn create(&self) -> DatabaseChange {
        DatabaseChange::Create {
            charset: self.charset.clone(),
            collation: self.collation.clone(),
        }
    }

    fn clauses(&self) -> String {
        let mut sql = format!(" CHARACTER SET {}", literal(&self.charset));
        if let Some(c) = &self.collation {
            sql.push_str(&format!(" COLLATE {}", literal(c)));
        }
        sql
    }
}

impl Converge for MariadbDatabase {
    type Action = DatabaseAction;
    type Item = DatabaseChange;

    fn check(
        &self,
        action: DatabaseAction,
        cx: &mut Context,
    ) -> ResourceResult<Vec<DatabaseChange>> {
        let c = match cx.mariadb(&self.socket) {
            ServerAt::Up(c) => c,
            ServerAt::Root => return Ok(vec![DatabaseChange::SkippedInRoot(action.name())]),
            // Not up yet (the package or service comes earlier in this run).
            ServerAt::Unreachable(_) => {
                return Ok(match action {
                    DatabaseAction::Create => vec![self.create()],
                    DatabaseAction::Drop => Vec::new(),
                });
            }
        };
        let have = c.database(&self.name).map_err(RunError::platform)?;
        Ok(match (action, have) {
            (DatabaseAction::Create, None) => vec![self.create()],
            (DatabaseAction::Create, Some(db)) => {
                let charset_ok = db.charset.eq_ignore_ascii_case(&self.charset);
                let collation_ok = self
                    .collation
                    .as_ref()
                    .is_none_or(|c| c.eq_ignore_ascii_case(&db.collation));
                if charset_ok && collation_ok {
                    Vec::new()
                } else {
                    vec![DatabaseChange::Alter {
                        from: format!("{}, {}", db.charset, db.collation),
                        charset: self.charset.clone(),
                        collation: self.collation.clone(),
                    }]
                }
            }
            (DatabaseAction::Drop, Some(_)) => vec![DatabaseChange::Drop],
            (DatabaseAction::Drop, None) => Vec::new(),
        })
    }

    fn apply(
        &self,
        _: DatabaseAction,
        diff: &[DatabaseChange],
        cx: &mut Context,
    ) -> ResourceResult<()> {
        let c = cx.mariadb(&self.socket).required()?;
        let name = ident(&self.name);
        for change in diff {
            let (what, sql) = match change {
                DatabaseChange::Create { .. } => (
                    "create database",
                    format!("CREATE DATABASE IF NOT EXISTS {name}{}", self.clauses()),
                ),
                DatabaseChange::Alter { .. } => (
                    "change database",
                    format!("ALTER DATABASE {name}{}", self.clauses()),
                ),
                DatabaseChange::Drop => ("drop database", format!("DROP DATABASE {name}")),
                DatabaseChange::SkippedInRoot(_) => continue,
            };
            c.run(&format!("{what} {}", self.name), &sql)
                .map_err(RunError::platform)?;
        }
        Ok(())
    }

    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        state.mariadb(|c| {
            Ok(match c.database(name)? {
                None => "absent".to_string(),
                Some(db) => format!("charset={} collation={}", db.charset, db.collation),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_people_say_them() {
        let c = DatabaseChange::Alter {
            from: "latin1, latin1_swedish_ci".into(),
            charset: "utf8mb4".into(),
            collation: None,
        };
        assert_eq!(
            c.to_string(),
            "change defaults from latin1, latin1_swedish_ci to utf8mb4"
        );
        assert!(DatabaseChange::SkippedInRoot("create").skipped());
    }

    #[test]
    fn names_with_quotes_are_refused() {
        assert!(sql_name("database", "shop", 64).is_ok());
        let e = sql_name("database", "sh`op", 64).unwrap_err();
        assert!(e.fix.unwrap().contains("letters, digits"));
        assert!(socket(Some("run/x.sock".into())).is_err());
    }
}
