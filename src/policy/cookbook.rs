//! Cookbooks: metadata, default attributes, recipes, templates and files.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::attributes::refuse_facts;
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

impl Metadata {
    /// A version that orders (MAJOR.MINOR.PATCH, as Chef and semver write
    /// them) and dependencies that name cookbooks.
    fn validate(&self, text: &str, file: &Path) -> Result<(), PolicyError> {
        let line = |key: &str| super::spans::key_line(text, &[key]);
        let at = |e: PolicyError, key: &str| match line(key) {
            Some(l) => e.at_line(l, None),
            None => e,
        };
        if !is_version(&self.version) {
            return Err(at(
                PolicyError::new(format!(
                    "version {:?} is not MAJOR.MINOR.PATCH",
                    self.version
                ))
                .in_file(file)
                .fix("write the version as three numbers, e.g. version = \"1.2.0\""),
                "version",
            ));
        }
        if let Some(bad) = self
            .depends
            .iter()
            .find(|d| !super::runlist::is_plain_name(d))
        {
            return Err(at(
                PolicyError::new(format!(
                    "cookbook {:?} depends on {bad:?}, which is not a cookbook name",
                    self.name
                ))
                    .in_file(file)
                    .fix("list cookbook names: letters, digits, '-', '_' and '.' (no leading '.' or '-')"),
                "depends",
            ));
        }
        Ok(())
    }
}

/// `MAJOR.MINOR.PATCH`, each a number without leading zeros.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 9
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
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
                "{name:?} is not a cookbook name: cookbooks are read from cookbooks/NAME, \
                 and names that begin with '-' or '.' or hold '/' are refused"
            ))
            .in_file(&repo.display_path("cookbooks"))
            .fix("name cookbooks with letters, digits, '-', '_' and '.' only (no '/', no leading '.' or '-')"));
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
        // Where the kernel could not tell, the cookbook is known by its
        // canonical path from here on, as checked.
        let dir = if crate::platform::hostfile::resolves_beneath(&repo.dir, &dir) {
            dir
        } else {
            let top = repo
                .dir
                .canonicalize()
                .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&repo.dir))?;
            let real = dir
                .canonicalize()
                .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&display_dir))?;
            if !real.starts_with(&top) {
                return Err(PolicyError::new(format!(
                    "cookbook {name:?} is a symbolic link to {}, outside the repository",
                    real.display()
                ))
                .in_file(&display_dir)
                .fix(format!(
                    "copy the cookbook into {rel}/ instead of linking to it"
                )));
            }
            real
        };
        let meta_path = dir.join("metadata.toml");
        inside(&dir, &meta_path, &display_dir.join("metadata.toml"))?;
        let meta_shown = display_dir.join("metadata.toml");
        let (metadata, meta_text): (Metadata, _) =
            load_toml(&meta_path).map_err(|e| relabel(e, &meta_shown))?;
        metadata.validate(&meta_text, &meta_shown)?;
        if metadata.name != name {
            return Err(PolicyError::new(format!(
                "metadata names the cookbook {:?} but its folder is {name:?}",
                metadata.name
            ))
            .in_file(&display_dir.join("metadata.toml"))
            .fix("make the name and the folder agree"));
        }
        let attr_path = dir.join("attributes.toml");
        let attr_shown = display_dir.join("attributes.toml");
        let (mut attributes, attr_text) = if attr_path.is_file() {
            inside(&dir, &attr_path, &attr_shown)?;
            load_toml(&attr_path).map_err(|e| relabel(e, &attr_shown))?
        } else {
            (toml::Table::new(), String::new())
        };
        let release_attributes = split_releases(&mut attributes, &attr_text, &attr_shown)?;
        let types = super::types::split_types(&mut attributes, &attr_shown)?;
        refuse_facts(&attributes, &attr_text, &attr_shown, &[])?;
        for (codename, overlay) in &release_attributes {
            refuse_facts(overlay, &attr_text, &attr_shown, &["releases", codename])?;
        }
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
/// elsewhere on the machine that runs it. The kernel answers in one call;
/// when it cannot tell (a link to an absolute path), the canonical paths do.
fn inside(dir: &Path, path: &Path, shown: &Path) -> Result<(), PolicyError> {
    if crate::platform::hostfile::resolves_beneath(dir, path) {
        return Ok(());
    }
    let canonical = |p: &Path| {
        p.canonicalize()
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(shown))
    };
    let real = canonical(path)?;
    if real.starts_with(canonical(dir)?) {
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
    text: &str,
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
        .map(|(codename, v)| {
            let at = |e: PolicyError| match super::spans::key_line(text, &["releases", &codename]) {
                Some(l) => e.at_line(l, None),
                None => e,
            };
            match v {
                toml::Value::Table(_) if !super::whitelist::DEBIAN_CODENAMES.contains(&codename.as_str()) => {
                    Err(at(PolicyError::new(format!(
                        "[releases.{codename}]: {codename:?} is not a Debian release kiln knows"
                    ))
                    .in_file(file)
                    .fix(format!(
                        "name a Debian codename: {}",
                        super::whitelist::DEBIAN_CODENAMES.join(", ")
                    ))))
                }
                toml::Value::Table(t) => Ok((codename, t)),
                _ => Err(at(PolicyError::new(format!(
                    "[releases.{codename}] must be a table named by a Debian codename (lowercase letters)"
                ))
                .in_file(file)
                .fix(fix))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookbook_or_its_file_linked_from_outside_the_repository_is_refused() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let (top, out) = (d.path().join("repo"), d.path().join("out"));
        let book = |dir: &Path, name: &str| {
            std::fs::create_dir_all(dir.join("recipes")).unwrap();
            let meta = format!("name = \"{name}\"\nversion = \"0.1.0\"\n");
            std::fs::write(dir.join("metadata.toml"), meta).unwrap();
            std::fs::write(dir.join("recipes/default.toml"), "").unwrap();
        };
        std::fs::create_dir_all(top.join("cookbooks")).unwrap();
        book(&top.join("cookbooks/own"), "own");
        book(&top.join("shared/alias"), "alias");
        book(&out.join("far"), "far");
        symlink("../shared/alias", top.join("cookbooks/alias")).unwrap();
        symlink(top.join("shared/alias"), top.join("cookbooks/abs")).unwrap();
        symlink(out.join("far"), top.join("cookbooks/far")).unwrap();
        let repo = Repository::open(&top).unwrap();
        assert!(
            Cookbook::load(&repo, "own")
                .unwrap()
                .recipe("default")
                .is_ok()
        );
        // A link that stays inside, relative or absolute, is the cookbook.
        assert!(Cookbook::load(&repo, "alias").is_ok());
        let e = Cookbook::load(&repo, "abs").unwrap_err().to_string();
        assert!(e.contains("names the cookbook \"alias\""), "{e}");
        let e = Cookbook::load(&repo, "far").unwrap_err().to_string();
        assert!(e.contains("outside the repository"), "{e}");
        // A recipe linked out of its cookbook is refused by its own name.
        std::fs::write(out.join("r.toml"), "").unwrap();
        symlink(
            out.join("r.toml"),
            top.join("cookbooks/own/recipes/out.toml"),
        )
        .unwrap();
        symlink(
            "../../../../out/r.toml",
            top.join("cookbooks/own/recipes/rel.toml"),
        )
        .unwrap();
        let own = Cookbook::load(&repo, "own").unwrap();
        for r in ["out", "rel"] {
            let e = own.recipe(r).unwrap_err().to_string();
            assert!(e.contains("outside the cookbook"), "{r}: {e}");
        }
    }

    #[test]
    fn release_defaults_are_taken_out_of_the_attributes() {
        let mut t: toml::Table = toml::from_str(
            "[php]\nversion = \"8.2\"\n\n[releases.trixie.php]\nversion = \"8.4\"\n",
        )
        .unwrap();
        let r = split_releases(&mut t, "", Path::new("attributes.toml")).unwrap();
        assert!(!t.contains_key("releases"));
        assert_eq!(r["trixie"]["php"]["version"].as_str(), Some("8.4"));
        let mut bad: toml::Table = toml::from_str("[releases]\nTrixie = 1\n").unwrap();
        let e =
            split_releases(&mut bad, "", Path::new("cookbooks/php/attributes.toml")).unwrap_err();
        assert!(
            e.to_string().contains("cookbooks/php/attributes.toml"),
            "{e}"
        );
        assert!(e.to_string().contains("[releases.Trixie]"), "{e}");
        let text = "[releases.bogus.php]\nversion = \"1\"\n";
        let mut unknown: toml::Table = toml::from_str(text).unwrap();
        let e = split_releases(&mut unknown, text, Path::new("a.toml")).unwrap_err();
        assert!(
            e.to_string().starts_with("a.toml:1: [releases.bogus]"),
            "{e}"
        );
    }

    #[test]
    fn versions_are_three_numbers() {
        for good in ["1.0.0", "0.10.3", "12.0.999"] {
            assert!(is_version(good), "{good}");
        }
        for bad in [
            "banana",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1..0",
            "1.0.0-rc1",
            "",
        ] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
