//! `mariadb_user`: an account `user@host`, its password and its privileges
//! on one database, read and changed over the server's socket. The password
//! (often a secret) is only ever a bound parameter: the account gets the
//! server's hash of it, and reports and why-run say "(redacted)".
//! Privileges are added, never taken away, as Chef's grant does.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::mariadb_database::{socket, sql_name};
use super::{
    Action, BuildEnv, Context, Converge, Item, Resource, ResourceResult, ServerAt, Spec, State,
    TypeDef, actions,
};
use crate::error::{PolicyError, RunError};
use crate::platform::mariadb::{account_name, ident};

pub const TYPE: TypeDef = TypeDef::of::<MariadbUser>(
    "mariadb_user",
    &["host", "password", "database", "privileges", "socket"],
    build,
)
.secrets_in(&["password"]);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    host: Option<String>,
    password: Option<String>,
    database: Option<String>,
    #[serde(default)]
    privileges: Vec<String>,
    socket: Option<String>,
}

/// The privileges one may grant on a database's tables, by their GRANT names.
const DATABASE_PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EVENT",
    "TRIGGER",
    "DELETE HISTORY",
    "SHOW CREATE ROUTINE",
];

/// What the account may do on `database`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    /// `ALL`: whatever the server counts as all.
    All,
    Some(BTreeSet<String>),
}

#[derive(Debug)]
pub struct MariadbUser {
    user: String,
    host: String,
    password: Option<String>,
    grant: Option<(String, Grant)>,
    socket: PathBuf,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    sql_name("account", &spec.name, 80)?;
    let host = p.host.unwrap_or_else(|| "localhost".to_string());
    sql_name("host", &host, 255)?;
    if p.password.as_deref().is_some_and(|pw| pw.contains('\0')) {
        return Err(PolicyError::new("the password holds a NUL byte"));
    }
    let grant = match (p.database, p.privileges.is_empty()) {
        (None, true) => None,
        (None, false) => {
            return Err(PolicyError::new(format!(
                "mariadb_user {:?} has privileges but no database",
                spec.name
            ))
            .fix("name the database they are on: database = \"shop\""));
        }
        (Some(db), _) => {
            sql_name("database", &db, 64)?;
            Some((db, grant(&p.privileges)?))
        }
    };
    Ok(Box::new(MariadbUser {
        user: spec.name.clone(),
        host,
        password: p.password,
        grant,
        socket: socket(p.socket)?,
    }))
}

/// `["ALL"]`, or names from [`DATABASE_PRIVILEGES`] in any case and spacing.
fn grant(privileges: &[String]) -> Result<Grant, PolicyError> {
    let mut names = BTreeSet::new();
    for p in privileges {
        let name = p.split_whitespace().collect::<Vec<_>>().join(" ");
        let name = name.to_ascii_uppercase();
        if name == "ALL" || name == "ALL PRIVILEGES" {
            return Ok(Grant::All);
        }
        if !DATABASE_PRIVILEGES.contains(&name.as_str()) {
            return Err(PolicyError::new(format!(
                "{p:?} is not a privilege on a database's tables"
            ))
            .fix(format!(
                "use \"ALL\" or some of {}",
                DATABASE_PRIVILEGES.join(", ")
            )));
        }
        names.insert(name);
    }
    Ok(Grant::Some(names))
}

actions! {
    pub enum UserAction {
        Create = "create",
        Drop = "drop",
    }
}

/// One difference of an account. Passwords never appear in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum UserChange {
    Create {
        password: bool,
    },
    Password,
    Grant {
        database: String,
        privileges: Vec<String>,
    },
    Drop,
    SkippedInRoot(&'static str),
}

impl fmt::Display for UserChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserChange::Create { password: true } => {
                write!(f, "create account with password (redacted)")
            }
            UserChange::Create { password: false } => write!(f, "create account"),
            UserChange::Password => write!(f, "set password (redacted)"),
            UserChange::Grant {
                database,
                privileges,
            } => write!(f, "grant {} on {database}.*", privileges.join(", ")),
            UserChange::Drop => write!(f, "drop account"),
            UserChange::SkippedInRoot(a) => {
                write!(f, "{a} skipped: --root target (no server runs there)")
            }
        }
    }
}

impl Item for UserChange {
    fn skipped(&self) -> bool {
        matches!(self, UserChange::SkippedInRoot(_))
    }
}

impl MariadbUser {
    fn account(&self) -> String {
        account_name(&self.user, &self.host)
    }

    /// What a grant still has to add, given what the account holds.
    fn missing(&self, have: Option<(&BTreeSet<String>, bool)>) -> Option<UserChange> {
        let (database, want) = self.grant.as_ref()?;
        let privileges = match (want, have) {
            (Grant::All, Some((_, true))) => return None,
            (Grant::All, _) => vec!["ALL".to_string()],
            (Grant::Some(want), have) => {
                let none = BTreeSet::new();
                let have = have.map_or(&none, |h| h.0);
                let missing: Vec<String> = want.difference(have).cloned().collect();
                if missing.is_empty() {
                    return None;
                }
                missing
            }
        };
        Some(UserChange::Grant {
            database: database.clone(),
            privileges,
        })
    }

    fn create(&self) -> Vec<UserChange> {
        let mut diff = vec![UserChange::Create {
            password: self.password.is_some(),
        }];
        diff.extend(self.missing(None));
        diff
    }
}

impl Converge for MariadbUser {
    type Action = UserAction;
    type Item = UserChange;

    fn check(&self, action: UserAction, cx: &mut Context) -> ResourceResult<Vec<UserChange>> {
        let c = match cx.mariadb(&self.socket) {
            ServerAt::Up(c) => c,
            ServerAt::Root => return Ok(vec![UserChange::SkippedInRoot(action.name())]),
            ServerAt::Unreachable(_) => {
                return Ok(match action {
                    UserAction::Create => self.create(),
                    UserAction::Drop => Vec::new(),
                });
            }
        };
        let have = c
            .account(&self.user, &self.host, self.password.as_deref())
            .map_err(RunError::platform)?;
        let Some(account) = have else {
            return Ok(match action {
                UserAction::Create => self.create(),
                UserAction::Drop => Vec::new(),
            });
        };
        if action == UserAction::Drop {
            return Ok(vec![UserChange::Drop]);
        }
        let mut diff = Vec::new();
        if account.password_matches == Some(false) {
            diff.push(UserChange::Password);
        }
        if let Some((database, _)) = &self.grant {
            let (names, all) = c
                .privileges(&self.user, &self.host, database)
                .map_err(RunError::platform)?;
            diff.extend(self.missing(Some((&names, all))));
        }
        Ok(diff)
    }

    fn apply(&self, _: UserAction, diff: &[UserChange], cx: &mut Context) -> ResourceResult<()> {
        let c = cx.mariadb(&self.socket).required()?;
        let account = self.account();
        for change in diff {
            match change {
                UserChange::Create { .. } => match &self.password {
                    Some(pw) => c.set_password(&self.user, &self.host, pw, true),
                    None => c.run(
                        &format!("create {account}"),
                        &format!("CREATE USER IF NOT EXISTS {account}"),
                    ),
                },
                UserChange::Password => {
                    let pw = self.password.as_deref().unwrap_or_default();
                    c.set_password(&self.user, &self.host, pw, false)
                }
                UserChange::Grant {
                    database,
                    privileges,
                } => {
                    let privileges = privileges.join(", ");
                    c.run(
                        &format!("grant {privileges} on {database} to {account}"),
                        &format!("GRANT {privileges} ON {}.* TO {account}", ident(database)),
                    )
                }
                UserChange::Drop => c.run(
                    &format!("drop {account}"),
                    &format!("DROP USER IF EXISTS {account}"),
                ),
                UserChange::SkippedInRoot(_) => continue,
            }
            .map_err(RunError::platform)?;
        }
        Ok(())
    }

    /// Every account of that name: its host and privileges by database.
    /// Not its password: a fingerprint must not let anyone test guesses.
    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        state.mariadb(|c| {
            let accounts = c.accounts_named(name)?;
            if accounts.is_empty() {
                return Ok("absent".to_string());
            }
            Ok(accounts
                .iter()
                .map(|a| {
                    let on: Vec<String> =
                        a.on.iter()
                            .map(|(db, p)| {
                                format!("{db}:{}", p.iter().cloned().collect::<Vec<_>>().join(","))
                            })
                            .collect();
                    format!("host={} {}", a.host, on.join(" "))
                        .trim_end()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("; "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grant: Option<Grant>) -> MariadbUser {
        MariadbUser {
            user: "shop".into(),
            host: "%".into(),
            password: Some("pw".into()),
            grant: grant.map(|g| ("shop".to_string(), g)),
            socket: PathBuf::from("/run/mysqld/mysqld.sock"),
        }
    }

    #[test]
    fn privileges_are_named_as_grant_names_them() {
        let g = grant(&["select".into(), "Create  Temporary tables".into()]).unwrap();
        let want: BTreeSet<String> = ["SELECT", "CREATE TEMPORARY TABLES"]
            .map(String::from)
            .into();
        assert_eq!(g, Grant::Some(want));
        assert_eq!(grant(&["all privileges".into()]).unwrap(), Grant::All);
        let e = grant(&["SUPER".into()]).unwrap_err();
        assert!(e.fix.unwrap().contains("ALL"));
    }

    #[test]
    fn a_grant_adds_only_what_is_missing() {
        let have: BTreeSet<String> = ["SELECT".to_string()].into();
        let u = user(Some(grant(&["SELECT".into(), "INSERT".into()]).unwrap()));
        assert_eq!(
            u.missing(Some((&have, false))),
            Some(UserChange::Grant {
                database: "shop".into(),
                privileges: vec!["INSERT".into()]
            })
        );
        let all = user(Some(Grant::All));
        assert_eq!(all.missing(Some((&have, true))), None);
        assert!(all.missing(Some((&have, false))).is_some());
        assert_eq!(user(None).missing(None), None);
    }

    #[test]
    fn the_password_is_never_shown() {
        let u = user(None);
        for c in u.create().iter().chain([&UserChange::Password]) {
            let shown = format!("{c} {}", serde_json::to_string(c).unwrap());
            assert!(!shown.contains("pw\""), "{shown}");
        }
        assert_eq!(UserChange::Password.to_string(), "set password (redacted)");
    }
}
