//! Attribute tables and their precedence merge.

use std::path::Path;

use crate::error::PolicyError;

/// The top-level attribute that holds the facts kiln gathers on the target.
pub const FACTS: &str = "node";

/// Refuses a `node` table in policy attributes: facts are laid over every
/// attribute last, so a value set there would be dropped without a word.
/// `at` is where the table sits in `text` (e.g. `["default_attributes"]`).
pub fn refuse_facts(
    table: &toml::Table,
    text: &str,
    file: &Path,
    at: &[&str],
) -> Result<(), PolicyError> {
    let Some(toml::Value::Table(facts)) = table.get(FACTS) else {
        if table.contains_key(FACTS) {
            return Err(facts_error(text, file, at, None));
        }
        return Ok(());
    };
    Err(facts_error(
        text,
        file,
        at,
        facts.keys().next().map(String::as_str),
    ))
}

fn facts_error(text: &str, file: &Path, at: &[&str], first: Option<&str>) -> PolicyError {
    let mut path: Vec<&str> = at.to_vec();
    path.push(FACTS);
    let shown = match first {
        Some(k) => format!("{FACTS}.{k}"),
        None => FACTS.to_string(),
    };
    let mut e = PolicyError::new(format!(
        "{shown} is a fact kiln gathers on the target (node.fqdn, node.codename, ...): \
         policy cannot set it"
    ))
    .in_file(file)
    .fix("put the value under the cookbook's own attributes, e.g. [default_attributes.COOKBOOK]");
    if let Some(line) = super::spans::key_line(text, &path) {
        e = e.at_line(line, None);
    }
    e
}

/// Merges `over` into `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_cannot_be_set_by_policy() {
        let text = "[default_attributes.node]\nfqdn = \"evil\"\n";
        let t: toml::Table = toml::from_str(text).unwrap();
        let da = t["default_attributes"].as_table().unwrap();
        let e = refuse_facts(da, text, Path::new("roles/r.toml"), &["default_attributes"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("roles/r.toml:1: node.fqdn is a fact"), "{e}");
        let fine: toml::Table = toml::from_str("[nodejs]\nversion = 1\n").unwrap();
        assert!(refuse_facts(&fine, "", Path::new("x"), &[]).is_ok());
    }

    #[test]
    fn deep_merge_replaces_leaves_only() {
        let mut a: toml::Table = toml::from_str("[x]\na = 1\nb = 2\n[y]\nz = [1]").unwrap();
        let b: toml::Table = toml::from_str("[x]\nb = 3\nc = 4\n[y]\nz = [2]").unwrap();
        merge(&mut a, &b);
        assert_eq!(
            a,
            toml::from_str("[x]\na = 1\nb = 3\nc = 4\n[y]\nz = [2]").unwrap()
        );
    }
}
