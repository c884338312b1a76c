//! Roles: a run list, attributes and, for developer VMs, sizes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Repository, load_toml};
use crate::error::PolicyError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub run_list: Vec<String>,
    #[serde(default)]
    pub default_attributes: toml::Table,
    #[serde(default)]
    pub override_attributes: toml::Table,
    #[serde(default)]
    pub sizes: BTreeMap<String, Size>,
    #[serde(default)]
    pub verify: Vec<toml::Table>,
}

/// A developer VM size: machine resources and the attributes that follow from them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub cpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    #[serde(default)]
    pub attributes: toml::Table,
}

impl Role {
    pub fn load(repo: &Repository, name: &str) -> Result<Role, PolicyError> {
        let rel = format!("roles/{name}.toml");
        let path = repo.dir.join(&rel);
        if !path.is_file() {
            let known = repo.names_in("roles");
            return Err(PolicyError::new(format!("role {name:?} not found ({rel})"))
                .fix(format!("create {rel}, or use one of: {}", known.join(", "))));
        }
        let shown = repo.display_path(&rel);
        if !super::runlist::is_plain_name(name) {
            return Err(PolicyError::new(format!("{name:?} is not a role name"))
                .in_file(&shown)
                .fix("name roles with letters, digits, '-', '_' and '.' only (no leading '.' or '-')"));
        }
        let (mut role, text): (Role, _) = load_toml(&path).map_err(|e| PolicyError {
            file: Some(shown.clone()),
            ..e
        })?;
        role.name = name.to_string();
        role.file = shown;
        role.validate(&text)?;
        Ok(role)
    }

    /// What parses but cannot mean anything: a role that does nothing, and
    /// attributes that facts would silently replace.
    fn validate(&self, text: &str) -> Result<(), PolicyError> {
        use super::attributes::refuse_facts;
        let has_attributes = !self.default_attributes.is_empty()
            || !self.override_attributes.is_empty()
            || !self.sizes.is_empty();
        if self.run_list.is_empty() && !has_attributes {
            return Err(PolicyError::new(format!(
                "role {:?} is empty: no run list and no attributes",
                self.name
            ))
            .in_file(&self.file)
            .fix("add run_list = [\"recipe[COOKBOOK]\"], or delete the file"));
        }
        refuse_facts(
            &self.default_attributes,
            text,
            &self.file,
            &["default_attributes"],
        )?;
        refuse_facts(
            &self.override_attributes,
            text,
            &self.file,
            &["override_attributes"],
        )?;
        for (size, s) in &self.sizes {
            refuse_facts(
                &s.attributes,
                text,
                &self.file,
                &["sizes", size, "attributes"],
            )?;
        }
        Ok(())
    }
}
