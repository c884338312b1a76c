//! Promoting a rollout's attributes and recipes into the place that keeps
//! them for good: a role (`override_attributes`, `run_list`) or a cookbook
//! (`attributes.toml`). People edit these files by hand, so the edit keeps
//! their comments and layout and changes only the keys it moves.

use std::path::PathBuf;
use std::str::FromStr;

use super::Repository;
use super::rollout::GATES;
use super::whitelist::Rollout;
use crate::error::{Error, PolicyError, PolicyErrors};

/// Where `kiln whitelist promote --to` puts a rollout's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `role:NAME`: attributes into its `override_attributes` (the closest
    /// below a rollout's), recipes appended to its `run_list`.
    Role(String),
    /// `cookbook:NAME`: attributes into its `attributes.toml` defaults.
    Cookbook(String),
}

/// A `--to` that names neither a role nor a cookbook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--to {0:?}: expected role:NAME or cookbook:NAME")]
pub struct BadDestination(pub String);

impl FromStr for Destination {
    type Err = BadDestination;
    fn from_str(s: &str) -> Result<Self, BadDestination> {
        match s.split_once(':') {
            Some(("role", n)) if !n.is_empty() => Ok(Destination::Role(n.to_string())),
            Some(("cookbook", n)) if !n.is_empty() => Ok(Destination::Cookbook(n.to_string())),
            _ => Err(BadDestination(s.to_string())),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Role(n) => write!(f, "role:{n}"),
            Destination::Cookbook(n) => write!(f, "cookbook:{n}"),
        }
    }
}

/// A destination file with its new text, not yet written.
pub struct Carried {
    pub path: PathBuf,
    /// The path as messages name it.
    pub shown: PathBuf,
    pub text: String,
    /// The dotted attribute paths and recipes it took.
    pub attributes: Vec<String>,
    pub recipes: Vec<String>,
}

/// The new text of the destination of rollout `rollout` (whose attributes
/// table, as written, is `written`), refusing what would not keep the
/// hosts that were in as they are.
pub fn carry(
    repo: &Repository,
    rollout: &Rollout,
    written: Option<&toml_edit::Item>,
    to: &Destination,
) -> Result<Carried, Error> {
    refuse_gates(repo, &rollout.name)?;
    let leaves = written.map(leaves_of).unwrap_or_default();
    let (rel, under): (String, &[&str]) = match to {
        Destination::Role(n) => {
            repo.role(n)?;
            (format!("roles/{n}.toml"), &["override_attributes"])
        }
        Destination::Cookbook(n) => {
            repo.cookbook(n)?;
            if !rollout.run_list.is_empty() {
                return Err(PolicyError::new(format!(
                    "rollout {:?} appends recipes ({}), and a cookbook has no run list",
                    rollout.name,
                    rollout.run_list.join(", ")
                ))
                .in_file(&repo.display_path("whitelist.toml"))
                .at_line(rollout.run_list_line, None)
                .fix("promote it --to role:NAME, the role whose hosts should run them")
                .into());
            }
            refuse_role_values(repo, &leaves, n)?;
            (format!("cookbooks/{n}/attributes.toml"), &[])
        }
    };
    let path = repo.dir.join(&rel);
    let shown = repo.display_path(&rel);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(PolicyError::new(format!("cannot read: {e}"))
                .in_file(&shown)
                .into());
        }
    };
    let edit_error = |what: &dyn std::fmt::Display| {
        PolicyError::new(what.to_string())
            .in_file(&shown)
            .fix("make it a table there, or promote into another place")
    };
    let mut doc: toml_edit::DocumentMut = old
        .parse()
        .map_err(|e: toml_edit::TomlError| edit_error(&e))?;
    let mut attributes = Vec::new();
    for (path, value) in leaves {
        let mut full: Vec<&str> = under.to_vec();
        full.extend(path.iter().map(String::as_str));
        set(doc.as_table_mut(), &full, value).map_err(|e| edit_error(&e))?;
        attributes.push(path.join("."));
    }
    let mut recipes = Vec::new();
    if !rollout.run_list.is_empty() {
        if !doc.contains_key("run_list") {
            doc["run_list"] = toml_edit::value(toml_edit::Array::new());
        }
        let list = doc["run_list"]
            .as_array_mut()
            .ok_or_else(|| edit_error(&"run_list is not an array"))?;
        for item in &rollout.run_list {
            if !list.iter().any(|v| v.as_str() == Some(item)) {
                list.push(item.as_str());
                recipes.push(item.clone());
            }
        }
    }
    Ok(Carried {
        path,
        shown,
        text: doc.to_string(),
        attributes,
        recipes,
    })
}

/// Every value of an attributes table as written, with its dotted path.
fn leaves_of(item: &toml_edit::Item) -> Vec<(Vec<String>, toml_edit::Value)> {
    fn walk(
        t: &dyn toml_edit::TableLike,
        path: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, toml_edit::Value)>,
    ) {
        for (k, v) in t.iter() {
            path.push(k.to_string());
            match v.as_table_like() {
                Some(inner) => walk(inner, path, out),
                None => {
                    if let Some(v) = v.as_value() {
                        let mut v = v.clone();
                        v.decor_mut().clear();
                        out.push((path.clone(), v));
                    }
                }
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    if let Some(t) = item.as_table_like() {
        walk(t, &mut Vec::new(), &mut out);
    }
    out
}

/// Where a promoted value meets a destination of the other shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Clash {
    #[error("{0} is a table, and the rollout sets a value there")]
    TableWhereValue(String),
    #[error("{0} is a value, and the rollout sets keys below it")]
    ValueWhereTable(String),
}

/// Sets the value at `path` below `table`, making the tables between
/// (implicit: a header only where a value sits), and keeping the comment
/// after a value it replaces.
fn set(
    table: &mut dyn toml_edit::TableLike,
    path: &[&str],
    value: toml_edit::Value,
) -> Result<(), Clash> {
    let (first, rest) = path.split_first().expect("a path has a key");
    if rest.is_empty() {
        match table.get_mut(first) {
            Some(toml_edit::Item::Value(old)) => {
                let decor = old.decor().clone();
                *old = value;
                *old.decor_mut() = decor;
            }
            Some(_) => return Err(Clash::TableWhereValue(first.to_string())),
            None => {
                table.insert(first, toml_edit::Item::Value(value));
            }
        }
        return Ok(());
    }
    if table.get(first).is_none() {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        // A blank line before a new header, as people write them.
        t.decor_mut().set_prefix("\n");
        table.insert(first, toml_edit::Item::Table(t));
    }
    let inner = table
        .get_mut(first)
        .and_then(|i| i.as_table_like_mut())
        .ok_or_else(|| Clash::ValueWhereTable(first.to_string()))?;
    set(inner, rest, value)
}

/// A gate or template that asks for the rollout would name a rollout that
/// no longer exists: each must go first, as the user decides.
fn refuse_gates(repo: &Repository, name: &str) -> Result<(), Error> {
    let mut errors = Vec::new();
    let fix = format!(
        "keep what hosts in the rollout get: delete only_in_rollout = {name:?} (and resources with not_in_rollout = {name:?}), \
         and keep the in_rollout section's first branch; then promote again"
    );
    for cb in repo.names_in("cookbooks") {
        let Ok(cookbook) = repo.cookbook(&cb) else {
            continue;
        };
        for r in cookbook.recipe_names() {
            let Ok(recipe) = cookbook.recipe(&r) else {
                continue;
            };
            for raw in &recipe.resources {
                for gate in GATES {
                    if raw.table.get(*gate).and_then(|v| v.as_str()) == Some(name) {
                        errors.push(
                            PolicyError::new(format!(
                                "{gate} = {name:?}: the gate would name a rollout that promote deletes"
                            ))
                            .in_file(&recipe.file)
                            .at_line(raw.line, None)
                            .fix(fix.clone()),
                        );
                    }
                }
            }
        }
        let templates = cookbook.dir.join("templates");
        for entry in walkdir::WalkDir::new(&templates)
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
        {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let rel = entry
                .path()
                .strip_prefix(&cookbook.dir)
                .unwrap_or(entry.path());
            for (i, line) in text.lines().enumerate() {
                if asks_for(line, name) {
                    errors.push(
                        PolicyError::new(format!(
                            "in_rollout {name:?}: the template would ask for a rollout that promote deletes"
                        ))
                        .in_file(&cookbook.display_dir.join(rel))
                        .at_line(i + 1, None)
                        .fix(fix.clone()),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PolicyErrors(errors).into())
    }
}

/// Whether a template line asks `in_rollout "NAME"`.
fn asks_for(line: &str, name: &str) -> bool {
    line.match_indices("in_rollout").any(|(i, m)| {
        let rest = line[i + m.len()..].trim_start();
        rest.strip_prefix('"')
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with('"'))
    })
}

/// A cookbook default loses to any role's value: promoting there would
/// change hosts of that role. Each such role value is named.
fn refuse_role_values(
    repo: &Repository,
    leaves: &[(Vec<String>, toml_edit::Value)],
    cookbook: &str,
) -> Result<(), Error> {
    let mut errors = Vec::new();
    for role in repo.names_in("roles") {
        let Ok(r) = repo.role(&role) else {
            continue;
        };
        let text = std::fs::read_to_string(repo.dir.join(format!("roles/{role}.toml")))
            .unwrap_or_default();
        let mut tables: Vec<(Vec<String>, &toml::Table)> = vec![
            (vec!["default_attributes".into()], &r.default_attributes),
            (vec!["override_attributes".into()], &r.override_attributes),
        ];
        for (size, s) in &r.sizes {
            tables.push((
                vec!["sizes".into(), size.clone(), "attributes".into()],
                &s.attributes,
            ));
        }
        for (path, _) in leaves {
            for (under, table) in &tables {
                if lookup(table, path).is_some() {
                    let mut at: Vec<&str> = under.iter().map(String::as_str).collect();
                    at.extend(path.iter().map(String::as_str));
                    let dotted = path.join(".");
                    errors.push(
                        PolicyError::new(format!(
                            "role {role} sets {dotted} in {}, which wins over cookbook {cookbook}'s default",
                            under.join(".")
                        ))
                        .in_file(&r.file)
                        .at_line(super::spans::key_line(&text, &at).unwrap_or(1), None)
                        .fix(format!(
                            "promote --to role:{role}, or delete {dotted} from that role first"
                        )),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PolicyErrors(errors).into())
    }
}

fn lookup<'t>(table: &'t toml::Table, path: &[String]) -> Option<&'t toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        lookup(v.as_table()?, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_gates_are_found_in_template_lines() {
        assert_eq!(
            "role:db".parse::<Destination>(),
            Ok(Destination::Role("db".into()))
        );
        assert_eq!(
            "cookbook:mariadb".parse::<Destination>(),
            Ok(Destination::Cookbook("mariadb".into()))
        );
        assert!("db".parse::<Destination>().is_err());
        assert!("role:".parse::<Destination>().is_err());
        assert!(asks_for("{{#if (in_rollout \"buf\")}}x{{/if}}", "buf"));
        assert!(asks_for("{{#if (in_rollout  \"buf\" )}}", "buf"));
        assert!(!asks_for("{{#if (in_rollout \"bufpool\")}}", "buf"));
    }

    #[test]
    fn values_land_below_their_tables_keeping_comments() {
        let mut doc: toml_edit::DocumentMut =
            "# the db role\nrun_list = [\"recipe[mariadb]\"]\n\n[override_attributes.mariadb]\n# memory\ninnodb_buffer_pool_mb = 256 # small\n"
                .parse()
                .unwrap();
        let written: toml_edit::DocumentMut =
            "attributes = { mariadb = { innodb_buffer_pool_mb = 512, max_connections = 50 }, app = { x = \"y\" } }\n"
                .parse()
                .unwrap();
        for (path, v) in leaves_of(&written["attributes"]) {
            let mut full = vec!["override_attributes"];
            full.extend(path.iter().map(String::as_str));
            set(doc.as_table_mut(), &full, v).unwrap();
        }
        let text = doc.to_string();
        assert!(
            text.starts_with("# the db role\nrun_list = [\"recipe[mariadb]\"]\n\n[override_attributes.mariadb]\n# memory\ninnodb_buffer_pool_mb = 512 # small\nmax_connections = 50\n"),
            "{text}"
        );
        assert!(
            text.contains("[override_attributes.app]\nx = \"y\"\n"),
            "{text}"
        );
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            back["override_attributes"]["mariadb"]["innodb_buffer_pool_mb"].as_integer(),
            Some(512)
        );
    }

    #[test]
    fn a_value_and_a_table_do_not_replace_each_other() {
        let mut doc: toml_edit::DocumentMut = "[a]\nb = 1\n".parse().unwrap();
        let v = || toml_edit::Value::from(2);
        assert_eq!(
            set(doc.as_table_mut(), &["a"], v()),
            Err(Clash::TableWhereValue("a".into()))
        );
        assert_eq!(
            set(doc.as_table_mut(), &["a", "b", "c"], v()),
            Err(Clash::ValueWhereTable("b".into()))
        );
        assert_eq!(doc.to_string(), "[a]\nb = 1\n");
    }
}
