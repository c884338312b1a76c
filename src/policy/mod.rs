//! The policy repository: roles, cookbooks, recipes, attributes and the
//! package whitelist, loaded from TOML files.

pub mod attributes;
pub mod check;
pub mod cookbook;
pub mod escape;
pub mod files;
pub mod limits;
pub mod recipe;
pub mod render;
pub mod role;
pub mod rollout;
pub mod rollout_edit;
pub mod runlist;
pub mod spans;
pub mod types;
pub mod whitelist;
pub mod whitelist_edit;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::PolicyError;

pub use cookbook::Cookbook;
pub use files::PolicyFile;
pub use role::Role;

/// A policy repository on disk. Roles and cookbooks are read when asked
/// for, so that one broken file does not stop an unrelated converge.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub dir: PathBuf,
    /// Roles already parsed: `kiln check` expands every role, and a deep
    /// chain would otherwise be re-read once per role above it.
    pub(crate) roles: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Role>>>,
}

impl Repository {
    pub fn open(dir: &Path) -> Result<Self, PolicyError> {
        if !dir.join("roles").is_dir() && !dir.join("cookbooks").is_dir() {
            return Err(PolicyError::new(format!(
                "{} is not a kiln policy repository (no roles/ or cookbooks/ in it)",
                dir.display()
            ))
            .fix("run kiln from the repository, or pass --repo DIR"));
        }
        Ok(Repository {
            dir: dir.to_path_buf(),
            ..Repository::default()
        })
    }

    /// The path of a repository file, relative when the repository is the
    /// current directory, for messages.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        if self.dir == Path::new(".") {
            PathBuf::from(rel)
        } else {
            self.dir.join(rel)
        }
    }

    pub fn role(&self, name: &str) -> Result<Role, PolicyError> {
        let cache = |r: &Role| {
            self.roles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), r.clone());
        };
        if let Some(r) = self
            .roles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(r.clone());
        }
        let r = Role::load(self, name)?;
        cache(&r);
        Ok(r)
    }

    pub fn cookbook(&self, name: &str) -> Result<Cookbook, PolicyError> {
        Cookbook::load(self, name)
    }

    /// Names of the `*.toml` files in a repository folder, sorted.
    pub fn names_in(&self, folder: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.join(folder))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                if folder == "cookbooks" {
                    e.path().is_dir().then_some(name)
                } else {
                    name.strip_suffix(".toml").map(str::to_string)
                }
            })
            .collect();
        out.sort();
        out
    }
}

/// Reads and parses a TOML file; syntax errors carry file, line and column.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), PolicyError> {
    let text = crate::platform::hostfile::read_to_string(path)
        .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(path))?;
    let value = toml::from_str(&text).map_err(|e| PolicyError::toml(path, &text, &e))?;
    Ok((value, text))
}
