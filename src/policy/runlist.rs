//! Run-list expansion: roles within roles, each recipe once at its first
//! position, cycles refused with the cycle printed.

use super::{Repository, Role};
use crate::error::PolicyError;

/// One run-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Role(String),
    /// Cookbook and recipe (`default` when not named).
    Recipe(String, String),
}

impl Item {
    /// `role[web]`, `recipe[apache2]`, `recipe[apache2::mods]`, or a bare recipe name.
    pub fn parse(s: &str) -> Result<Item, PolicyError> {
        let s = s.trim();
        let bad = || {
            PolicyError::new(format!(
                "run-list item {s:?} is not role[NAME] or recipe[COOKBOOK::RECIPE]"
            ))
            .fix("write items as \"role[base]\" or \"recipe[apache2]\"")
        };
        let (kind, inner) = if let Some(r) = s.strip_prefix("role[") {
            ("role", r.strip_suffix(']').ok_or_else(bad)?)
        } else if let Some(r) = s.strip_prefix("recipe[") {
            ("recipe", r.strip_suffix(']').ok_or_else(bad)?)
        } else {
            ("recipe", s)
        };
        let valid = |n: &str| is_plain_name(n);
        if kind == "role" {
            return if valid(inner) {
                Ok(Item::Role(inner.to_string()))
            } else {
                Err(bad())
            };
        }
        let (cb, r) = inner.split_once("::").unwrap_or((inner, "default"));
        if valid(cb) && valid(r) {
            Ok(Item::Recipe(cb.to_string(), r.to_string()))
        } else {
            Err(bad())
        }
    }
}

/// How deep roles may include roles. Deeper is a mistake, and refusing it
/// keeps expansion (and `kiln check`, which expands every role) bounded.
pub const MAX_ROLE_DEPTH: usize = 64;

const TOO_DEEP: &str = "roles nest more than";

/// Whether `e` is the refusal of a role chain deeper than `MAX_ROLE_DEPTH`:
/// `kiln check` reports a chain once, from its top, not once per level.
pub fn is_too_deep(e: &PolicyError) -> bool {
    e.message.starts_with(TOO_DEEP)
}

/// A role, cookbook or recipe name: letters, digits, `-`, `_` and `.`, not
/// starting with a dot, so that it can never name `..` or a hidden folder.
pub fn is_plain_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(['.', '-'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The expanded run list.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    /// Roles in the order their attributes apply (first appearance).
    pub roles: Vec<Role>,
    /// `(cookbook, recipe)` in run order, each once.
    pub recipes: Vec<(String, String)>,
}

impl Expanded {
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.name.clone()).collect()
    }
}

pub fn expand(repo: &Repository, items: &[String]) -> Result<Expanded, PolicyError> {
    let mut out = Expanded::default();
    let mut stack = Vec::new();
    walk(repo, items, &mut stack, &mut out)?;
    Ok(out)
}

fn walk(
    repo: &Repository,
    items: &[String],
    stack: &mut Vec<String>,
    out: &mut Expanded,
) -> Result<(), PolicyError> {
    for raw in items {
        let item = Item::parse(raw).map_err(|e| match stack.last() {
            Some(r) => e.in_file(&repo.display_path(&format!("roles/{r}.toml"))),
            None => e,
        })?;
        match item {
            Item::Recipe(cb, r) => {
                if !out.recipes.iter().any(|(c, n)| *c == cb && *n == r) {
                    out.recipes.push((cb, r));
                }
            }
            Item::Role(name) => {
                if let Some(pos) = stack.iter().position(|s| *s == name) {
                    let mut cycle: Vec<String> =
                        stack[pos..].iter().map(|s| format!("role[{s}]")).collect();
                    cycle.push(format!("role[{name}]"));
                    return Err(PolicyError::new(format!(
                        "run-list cycle: {}",
                        cycle.join(" -> ")
                    ))
                    .in_file(&repo.display_path(&format!("roles/{}.toml", stack[stack.len() - 1])))
                    .fix("remove one of these role[...] entries so that no role includes itself"));
                }
                if out.roles.iter().any(|r| r.name == name) {
                    continue;
                }
                if stack.len() >= MAX_ROLE_DEPTH {
                    let parent = &stack[stack.len() - 1];
                    return Err(PolicyError::new(format!(
                        "{TOO_DEEP} {MAX_ROLE_DEPTH} deep: role[{}] -> ... -> role[{parent}] -> role[{name}]",
                        stack[0]
                    ))
                    .in_file(&repo.display_path(&format!("roles/{parent}.toml")))
                    .fix(format!(
                        "flatten the chain: list the recipes of deep roles directly, so that roles nest at most {MAX_ROLE_DEPTH} levels"
                    )));
                }
                let role = repo.role(&name)?;
                let children = role.run_list.clone();
                stack.push(name);
                out.roles.push(role);
                walk(repo, &children, stack, out)?;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> (tempfile::TempDir, Repository) {
        let d = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let r = Repository::open(d.path()).unwrap();
        (d, r)
    }

    #[test]
    fn parses_items() {
        assert_eq!(Item::parse("role[web]").unwrap(), Item::Role("web".into()));
        assert_eq!(
            Item::parse("recipe[a::b]").unwrap(),
            Item::Recipe("a".into(), "b".into())
        );
        assert_eq!(
            Item::parse("apache2").unwrap(),
            Item::Recipe("apache2".into(), "default".into())
        );
        assert!(Item::parse("role[web").is_err());
        assert!(Item::parse("recipe[../x]").is_err());
        assert!(Item::parse("recipe[..]").is_err());
        assert!(Item::parse("recipe[.]").is_err());
        assert!(Item::parse("role[..]").is_err());
        assert!(Item::parse("recipe[a/b]").is_err());
    }

    #[test]
    fn recipes_run_once_at_first_position() {
        let (_d, r) = repo(&[
            (
                "roles/base.toml",
                "run_list = [\"recipe[a]\", \"recipe[b]\"]",
            ),
            (
                "roles/web.toml",
                "run_list = [\"recipe[b]\", \"role[base]\", \"recipe[c]\", \"recipe[a]\"]",
            ),
        ]);
        let e = expand(&r, &["role[web]".into()]).unwrap();
        let names: Vec<String> = e.recipes.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(e.role_names(), ["web", "base"]);
    }

    #[test]
    fn cycles_are_printed() {
        let (_d, r) = repo(&[
            ("roles/a.toml", "run_list = [\"role[b]\"]"),
            ("roles/b.toml", "run_list = [\"role[c]\"]"),
            ("roles/c.toml", "run_list = [\"role[a]\"]"),
        ]);
        let err = expand(&r, &["role[a]".into()]).unwrap_err();
        assert!(
            err.message
                .contains("role[a] -> role[b] -> role[c] -> role[a]"),
            "{err}"
        );
    }

    #[test]
    fn deep_chains_are_refused_not_overflowed() {
        let n = 200;
        let files: Vec<(String, String)> = (0..n)
            .map(|i| {
                (
                    format!("roles/r{i}.toml"),
                    format!("run_list = [\"role[r{}]\"]", i + 1),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (_d, r) = repo(&refs);
        let err = expand(&r, &["role[r0]".into()]).unwrap_err();
        assert!(err.message.contains("more than 64 deep"), "{err}");
        assert!(err.file.unwrap().ends_with("roles/r63.toml"));
        assert!(expand(&r, &["role[r150]".into()]).is_err());
    }
}
