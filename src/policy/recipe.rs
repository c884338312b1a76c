//! Recipes: ordered `[[resource]]` tables and `[[verify]]` checks.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Lines, PolicyError};

#[derive(Debug, Clone)]
pub struct Recipe {
    pub cookbook: String,
    pub name: String,
    pub file: PathBuf,
    pub resources: Vec<RawResource>,
    pub verify: Vec<toml::Table>,
}

/// A resource table as written, with its line for messages.
#[derive(Debug, Clone)]
pub struct RawResource {
    pub table: toml::Table,
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    resource: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    verify: Vec<toml::Table>,
}

impl Recipe {
    pub fn load(
        path: &Path,
        shown: &Path,
        cookbook: &str,
        name: &str,
    ) -> Result<Recipe, PolicyError> {
        let text = crate::platform::hostfile::read_to_string(path)
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(shown))?;
        let file: RecipeFile = toml::from_str(&text).map_err(|e| {
            PolicyError::toml(shown, &text, &e)
                .fix("a recipe holds [[resource]] and [[verify]] tables only")
        })?;
        let lines = Lines::new(&text);
        let resources = file
            .resource
            .into_iter()
            .map(|s| {
                let line = lines.line(s.span().start);
                RawResource {
                    table: s.into_inner(),
                    line,
                }
            })
            .collect();
        Ok(Recipe {
            cookbook: cookbook.to_string(),
            name: name.to_string(),
            file: shown.to_path_buf(),
            resources,
            verify: file.verify,
        })
    }

    /// `cookbook::recipe`, as run lists name it.
    pub fn id(&self) -> String {
        format!("{}::{}", self.cookbook, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_keep_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "# c\n[[resource]]\nfile = \"/a\"\n\n[[resource]]\ndirectory = \"/b\"\n",
        )
        .unwrap();
        let r = Recipe::load(&p, &p, "cb", "default").unwrap();
        assert_eq!(r.resources.len(), 2);
        assert_eq!(r.resources[0].line, 2);
        assert_eq!(r.resources[1].line, 5);
    }
}
