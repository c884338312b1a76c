//! Cookbooks: metadata, default attributes, recipes, templates and files.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::recipe::Recipe;
use super::{Repository, load_toml};
use crate::error::PolicyError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub depends: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Cookbook {
    pub name: String,
    pub dir: PathBuf,
    /// `cookbooks/<name>` as messages show it.
    pub display_dir: PathBuf,
    pub metadata: Metadata,
    pub attributes: toml::Table,
    /// `[releases.CODENAME]` of attributes.toml: defaults for targets of
    /// that Debian release, laid over `attributes` (before any role's).
    pub release_attributes: std::collections::BTreeMap<String, toml::Table>,
    /// `[types.COOKBOOK]` of attributes.toml: what its attributes may hold.
    pub types: super::types::Types,
}

impl Cookbook {
    pub fn load(repo: &Repository, name: &str) -> Result<Cookbook, PolicyError> {
        if !super::runlist::is_plain_name(name) {
            return Err(PolicyError::new(format!(
                "{name:?} is not a cookbook name: it would be read from outside cookbooks/"
            ))
            .fix("name cookbooks with letters, digits, '-', '_' and '.' only (no '/', no leading '.')"));
        }
        let rel = format!("cookbooks/{name}");
        let dir = repo.dir.join(&rel);
        let display_dir = repo.display_path(&rel);
        let meta_path = dir.join("metadata.toml");
        if !dir.is_dir() {
            return Err(
                PolicyError::new(format!("cookbook {name:?} not found ({rel}/)")).fix(format!(
                    "create {rel}/metadata.toml, or use one of: {}",
                    repo.names_in("cookbooks").join(", ")
                )),
            );
        }
        if !meta_path.is_file() {
            return Err(
                PolicyError::new(format!("cookbook {name:?} has no metadata.toml"))
                    .in_file(&display_dir.join("metadata.toml"))
                    .fix("add metadata.toml with name and version"),
            );
        }
        let top = repo
            .dir
            .canonicalize()
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&repo.dir))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&display_dir))?;
        if !dir.starts_with(&top) {
            return Err(PolicyError::new(format!(
                "cookbook {name:?} is a symbolic link to {}, outside the repository",
                dir.display()
            ))
            .in_file(&display_dir)
            .fix(format!(
                "copy the cookbook into {rel}/ instead of linking to it"
            )));
        }
        let meta_path = dir.join("metadata.toml");
        inside(&dir, &meta_path, &display_dir.join("metadata.toml"))?;
        let (metadata, _): (Metadata, _) =
            load_toml(&meta_path).map_err(|e| relabel(e, &display_dir.join("metadata.toml")))?;
        if metadata.name != name {
            return Err(PolicyError::new(format!(
                "metadata names the cookbook {:?} but its folder is {name:?}",
                metadata.name
            ))
            .in_file(&display_dir.join("metadata.toml"))
            .fix("make the name and the folder agree"));
        }
        let attr_path = dir.join("attributes.toml");
        let mut attributes = if attr_path.is_file() {
            inside(&dir, &attr_path, &display_dir.join("attributes.toml"))?;
            load_toml(&attr_path)
                .map_err(|e| relabel(e, &display_dir.join("attributes.toml")))?
                .0
        } else {
            toml::Table::new()
        };
        let release_attributes =
            split_releases(&mut attributes, &display_dir.join("attributes.toml"))?;
        let types =
            super::types::split_types(&mut attributes, &display_dir.join("attributes.toml"))?;
        Ok(Cookbook {
            name: name.to_string(),
            dir,
            display_dir,
            metadata,
            attributes,
            release_attributes,
            types,
        })
    }

    /// The defaults for a target of release `codename`: the release's
    /// overlay laid over the cookbook's own defaults.
    pub fn release_overlay(&self, codename: &str) -> Option<&toml::Table> {
        self.release_attributes.get(codename)
    }

    pub fn recipe(&self, name: &str) -> Result<Recipe, PolicyError> {
        let path = self.dir.join("recipes").join(format!("{name}.toml"));
        let shown = self
            .display_dir
            .join("recipes")
            .join(format!("{name}.toml"));
        if !path.is_file() {
            return Err(
                PolicyError::new(format!("recipe {}::{name} not found", self.name))
                    .in_file(&shown)
                    .fix(format!("create {}, or fix the run list", shown.display())),
            );
        }
        inside(&self.dir, &path, &shown)?;
        Recipe::load(&path, &shown, &self.name, name)
    }

    pub fn recipe_names(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.join("recipes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".toml")
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    /// A file under `templates/` or `files/`, refusing paths that leave the cookbook.
    pub fn source_path(&self, folder: &str, source: &str) -> Result<PathBuf, PolicyError> {
        let rel = Path::new(source);
        let escapes = rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(PolicyError::new(format!(
                "source {source:?} escapes the cookbook's {folder}/ folder"
            ))
            .fix(format!(
                "put the file in {}/{folder}/ and name it relative to that folder",
                self.display_dir.display()
            )));
        }
        let path = self.dir.join(folder).join(rel);
        if !path.is_file() {
            return Err(PolicyError::new(format!(
                "source {source:?} not found in {}/{folder}/",
                self.display_dir.display()
            ))
            .fix(format!(
                "add {}/{folder}/{source}",
                self.display_dir.display()
            )));
        }
        inside(&self.dir, &path, &self.display_dir.join(folder).join(rel))?;
        Ok(path)
    }
}

/// Refuses a cookbook file that is a symbolic link leading out of the
/// cookbook: policy must not read (and ship to targets) files from
/// elsewhere on the machine that runs it. `dir` is canonical.
fn inside(dir: &Path, path: &Path, shown: &Path) -> Result<(), PolicyError> {
    let real = path
        .canonicalize()
        .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(shown))?;
    if real.starts_with(dir) {
        return Ok(());
    }
    Err(PolicyError::new(format!(
        "{} is a symbolic link to {}, outside the cookbook",
        shown.display(),
        real.display()
    ))
    .in_file(shown)
    .fix("copy the file into the cookbook instead of linking to it"))
}

/// Shows a repository-relative path in an error instead of the absolute one.
fn relabel(mut e: PolicyError, shown: &Path) -> PolicyError {
    e.file = Some(shown.to_path_buf());
    e
}

/// Takes `[releases.CODENAME]` out of a cookbook's attributes: `releases`
/// is the one reserved top-level key, and each of its entries must be a
/// table keyed by a codename.
fn split_releases(
    attributes: &mut toml::Table,
    file: &Path,
) -> Result<std::collections::BTreeMap<String, toml::Table>, PolicyError> {
    let Some(value) = attributes.remove("releases") else {
        return Ok(Default::default());
    };
    let fix =
        "write release defaults as [releases.trixie.COOKBOOK] KEY = VALUE (a table per codename)";
    let toml::Value::Table(t) = value else {
        return Err(
            PolicyError::new("releases must be a table of [releases.CODENAME] tables")
                .in_file(file)
                .fix(fix),
        );
    };
    t.into_iter()
        .map(|(codename, v)| match v {
            toml::Value::Table(t) if super::whitelist::is_codename(&codename) => Ok((codename, t)),
            _ => Err(PolicyError::new(format!(
                "[releases.{codename}] must be a table named by a Debian codename (lowercase letters)"
            ))
            .in_file(file)
            .fix(fix)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_defaults_are_taken_out_of_the_attributes() {
        let mut t: toml::Table = toml::from_str(
            "[php]\nversion = \"8.2\"\n\n[releases.trixie.php]\nversion = \"8.4\"\n",
        )
        .unwrap();
        let r = split_releases(&mut t, Path::new("attributes.toml")).unwrap();
        assert!(!t.contains_key("releases"));
        assert_eq!(r["trixie"]["php"]["version"].as_str(), Some("8.4"));
        let mut bad: toml::Table = toml::from_str("[releases]\nTrixie = 1\n").unwrap();
        let e = split_releases(&mut bad, Path::new("cookbooks/php/attributes.toml")).unwrap_err();
        assert!(
            e.to_string().contains("cookbooks/php/attributes.toml"),
            "{e}"
        );
        assert!(e.to_string().contains("[releases.Trixie]"), "{e}");
    }
}
