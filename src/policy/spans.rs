//! Lines of keys in a policy file, for errors found after parsing: serde
//! gives the values, this finds where a person wrote them.

use toml::de::{DeTable, DeValue};

/// The 1-based line where the key at `path` (e.g. `["default_attributes",
/// "node"]`) is written, as a dotted key or in a table header.
pub fn key_line(text: &str, path: &[&str]) -> Option<usize> {
    let table = DeTable::parse(text).ok()?;
    let mut current = table.get_ref();
    let mut found = None;
    for (i, part) in path.iter().enumerate() {
        let (key, value) = current
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == *part)?;
        found = Some(key.span().start);
        if i + 1 == path.len() {
            break;
        }
        match value.get_ref() {
            DeValue::Table(t) => current = t,
            _ => return None,
        }
    }
    found.map(|offset| crate::error::line_col(text, offset).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_headers_dotted_keys_and_inline_tables() {
        let text = "run_list = []\n\n[default_attributes.node]\nfqdn = \"x\"\n\n[sizes.big]\nattributes = { node = { a = 1 } }\n";
        assert_eq!(key_line(text, &["default_attributes", "node"]), Some(3));
        assert_eq!(
            key_line(text, &["default_attributes", "node", "fqdn"]),
            Some(4)
        );
        assert_eq!(
            key_line(text, &["sizes", "big", "attributes", "node"]),
            Some(7)
        );
        assert_eq!(key_line(text, &["run_list"]), Some(1));
        assert_eq!(key_line(text, &["nope"]), None);
    }
}
