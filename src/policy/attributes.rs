//! Attribute tables and their precedence merge.

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
