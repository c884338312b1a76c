//! `mariadb_seed`: an SQL file from the cookbook, loaded once into a
//! database: when the table the resource is named after (`db.table`) is
//! missing or empty. Once the table has rows it is the application's, and
//! kiln leaves it alone, so the file's statements need not be idempotent.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::mariadb_database::{socket, sql_name};
use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, ServerAt, Spec, State, TypeDef,
    actions,
};
use crate::error::{PolicyError, RunError};
use crate::platform::mariadb::{MariadbError, Table};

pub const TYPE: TypeDef = TypeDef::of::<MariadbSeed>("mariadb_seed", &["source", "socket"], build);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    source: String,
    socket: Option<String>,
}

#[derive(Debug)]
pub struct MariadbSeed {
    database: String,
    table: String,
    source: String,
    sql: String,
    socket: PathBuf,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    let Some((database, table)) = spec.name.split_once('.') else {
        return Err(PolicyError::new(format!(
            "mariadb_seed {:?} does not name a table as database.table",
            spec.name
        ))
        .fix("name the table the file fills, e.g. mariadb_seed = \"shop.listings\""));
    };
    sql_name("database", database, 64)?;
    sql_name("table", table, 64)?;
    let sql = String::from_utf8(env.cookbook_file("files", &p.source)?.to_vec()).map_err(|_| {
        PolicyError::new(format!("files/{} is not UTF-8 text", p.source))
            .fix("save the SQL file as UTF-8")
    })?;
    if sql.trim().is_empty() {
        return Err(PolicyError::new(format!("files/{} is empty", p.source))
            .fix("give the statements that create and fill the table"));
    }
    Ok(Box::new(MariadbSeed {
        database: database.to_string(),
        table: table.to_string(),
        source: p.source,
        sql,
        socket: socket(p.socket)?,
    }))
}

actions! {
    pub enum SeedAction {
        Load = "load",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SeedChange {
    /// `table` is what the server has now: missing or empty.
    Load {
        source: String,
        table: String,
    },
    SkippedInRoot {
        source: String,
    },
}

impl fmt::Display for SeedChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedChange::Load { source, table } => {
                write!(f, "load {source} (the table is {table})")
            }
            SeedChange::SkippedInRoot { source } => write!(
                f,
                "load {source} skipped: --root target (no server runs there)"
            ),
        }
    }
}

impl Item for SeedChange {
    fn skipped(&self) -> bool {
        matches!(self, SeedChange::SkippedInRoot { .. })
    }
}

impl MariadbSeed {
    fn load(&self, table: Table) -> Vec<SeedChange> {
        vec![SeedChange::Load {
            source: self.source.clone(),
            table: table.to_string(),
        }]
    }
}

impl Converge for MariadbSeed {
    type Action = SeedAction;
    type Item = SeedChange;

    fn check(&self, _: SeedAction, cx: &mut Context) -> ResourceResult<Vec<SeedChange>> {
        let table = match cx.mariadb(&self.socket) {
            ServerAt::Up(c) => c
                .table(&self.database, &self.table)
                .map_err(RunError::platform)?,
            ServerAt::Root => {
                return Ok(vec![SeedChange::SkippedInRoot {
                    source: self.source.clone(),
                }]);
            }
            ServerAt::Unreachable(_) => Table::Missing,
        };
        Ok(match table {
            Table::Filled => Vec::new(),
            t => self.load(t),
        })
    }

    fn apply(&self, _: SeedAction, _: &[SeedChange], cx: &mut Context) -> ResourceResult<()> {
        let c = cx.mariadb(&self.socket).required()?;
        c.load(&self.database, &self.sql)
            .map_err(RunError::platform)?;
        // A file that leaves the table empty would be loaded again on
        // every run: say so now.
        match c
            .table(&self.database, &self.table)
            .map_err(RunError::platform)?
        {
            Table::Filled => Ok(()),
            t => Err(RunError::platform(MariadbError::Seed(format!(
                "files/{} was loaded, but {}.{} is still {t}; the file must create \
                 and fill the table the resource is named after",
                self.source, self.database, self.table
            )))),
        }
    }

    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        let (database, table) = name.split_once('.')?;
        state.mariadb(|c| Ok(format!("table {}", c.table(database, table)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_says_why() {
        let c = SeedChange::Load {
            source: "schema.sql".into(),
            table: Table::Empty.to_string(),
        };
        assert_eq!(c.to_string(), "load schema.sql (the table is empty)");
        assert!(
            SeedChange::SkippedInRoot {
                source: "s.sql".into()
            }
            .skipped()
        );
    }
}
