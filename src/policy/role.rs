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
        let (mut role, _): (Role, _) = load_toml(&path)?;
        role.name = name.to_string();
        role.file = repo.display_path(&rel);
        Ok(role)
    }
}
