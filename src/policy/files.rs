//! Which files make up the policy: what a bundle carries, what a dev VM
//! image is keyed on and installs. Decided here once, so the two agree.

use std::path::{Path, PathBuf};

use super::Repository;
use crate::error::PolicyError;

/// What belongs to the policy, relative to the repository.
/// `secrets` carries only ciphertext (`*.age`) and `recipients.toml`.
pub const CONTENTS: &[&str] = &["roles", "cookbooks", "whitelist.toml", "secrets"];

/// Whether a file under `secrets/` may travel: never a stray cleartext.
fn secret_file_ships(rel: &str) -> bool {
    !rel.starts_with("secrets/") || rel.ends_with(".age") || rel == crate::secrets::RECIPIENTS
}

/// One file of the policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyFile {
    /// Relative to the repository, `/`-separated.
    pub rel: String,
    /// Where to read it (a link inside the repository is followed).
    pub path: PathBuf,
}

/// Editors' and VCS droppings: dotfiles (swap files such as `.x.toml.swp`,
/// `.git`) and `*~` backups.
fn is_dropping(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

impl Repository {
    /// The policy's files, sorted by relative path: [`CONTENTS`] without
    /// editor droppings, and without links that lead out of the repository
    /// (or nowhere), so that nothing outside it is shipped or hashed.
    pub fn files(&self) -> Result<Vec<PolicyFile>, PolicyError> {
        let io = |p: &Path, e: &dyn std::fmt::Display| {
            PolicyError::new(format!("cannot read: {e}")).in_file(p)
        };
        let top = self.dir.canonicalize().map_err(|e| io(&self.dir, &e))?;
        let inside = |p: &Path| p.canonicalize().is_ok_and(|c| c.starts_with(&top));
        let mut out = Vec::new();
        for item in CONTENTS {
            let root = self.dir.join(item);
            if std::fs::symlink_metadata(&root).is_err() || !inside(&root) {
                continue;
            }
            let walk = walkdir::WalkDir::new(&root)
                .follow_links(true)
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0
                        || !is_dropping(&e.file_name().to_string_lossy())
                            && (!e.path_is_symlink() || inside(e.path()))
                });
            for entry in walk {
                let entry = match entry {
                    Ok(e) => e,
                    // A dangling link leads nowhere: not policy.
                    Err(e) if e.path().is_some_and(|p| p.is_symlink() && !p.exists()) => continue,
                    Err(e) => return Err(io(e.path().unwrap_or(&root), &e)),
                };
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(&self.dir)
                    .expect("below the repository")
                    .to_string_lossy()
                    .into_owned();
                if !secret_file_ships(&rel) {
                    continue;
                }
                out.push(PolicyFile {
                    rel,
                    path: entry.into_path(),
                });
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn droppings_and_links_out_are_not_policy() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("repo");
        write(&r, "roles/web.toml", "run_list = []\n");
        write(&r, "whitelist.toml", "[packages]\n");
        write(&r, "cookbooks/a/recipes/default.toml", "\n");
        write(&r, "cookbooks/a/recipes/.default.toml.swp", "x");
        write(&r, "cookbooks/a/recipes/default.toml~", "x");
        write(&r, "cookbooks/a/.git/config", "x");
        write(&r, "README.md", "not policy");
        write(d.path(), "secret", "outside");
        std::os::unix::fs::symlink(d.path().join("secret"), r.join("cookbooks/a/out")).unwrap();
        std::os::unix::fs::symlink("default.toml", r.join("cookbooks/a/recipes/in.toml")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", r.join("cookbooks/a/dangling")).unwrap();
        let repo = Repository::open(&r).unwrap();
        let rels: Vec<String> = repo.files().unwrap().into_iter().map(|f| f.rel).collect();
        assert_eq!(
            rels,
            [
                "cookbooks/a/recipes/default.toml",
                "cookbooks/a/recipes/in.toml",
                "roles/web.toml",
                "whitelist.toml"
            ]
        );
    }
}
