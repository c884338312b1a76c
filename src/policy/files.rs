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
    /// Where to read it.
    pub path: PathBuf,
}

/// Editors' and VCS droppings: dotfiles (swap files such as `.x.toml.swp`,
/// `.git`) and `*~` backups.
fn is_dropping(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

impl Repository {
    /// The policy's files, sorted by relative path: [`CONTENTS`] without
    /// editor droppings. A symbolic link anywhere in them is refused: a
    /// bundle or image carries plain files, and a link followed would ship
    /// whatever it points to, inside the repository or not.
    pub fn files(&self) -> Result<Vec<PolicyFile>, PolicyError> {
        let io = |p: &Path, e: &dyn std::fmt::Display| {
            PolicyError::new(format!("cannot read: {e}")).in_file(p)
        };
        let mut out = Vec::new();
        for item in CONTENTS {
            let root = self.dir.join(item);
            if std::fs::symlink_metadata(&root).is_err() {
                continue;
            }
            let walk = walkdir::WalkDir::new(&root)
                .follow_links(false)
                .follow_root_links(false)
                .into_iter()
                .filter_entry(|e| e.depth() == 0 || !is_dropping(&e.file_name().to_string_lossy()));
            for entry in walk {
                let entry = entry.map_err(|e| io(e.path().unwrap_or(&root), &e))?;
                let rel = entry
                    .path()
                    .strip_prefix(&self.dir)
                    .expect("below the repository")
                    .to_string_lossy()
                    .into_owned();
                if entry.path_is_symlink() {
                    return Err(link_refused(&self.display_path(&rel), entry.path()));
                }
                if entry.file_type().is_file() && secret_file_ships(&rel) {
                    out.push(PolicyFile {
                        rel,
                        path: entry.into_path(),
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn link_refused(shown: &Path, path: &Path) -> PolicyError {
    let to = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    PolicyError::new(format!(
        "is a symbolic link (to {to}); the policy is shipped as plain files, and a link would ship what it points to"
    ))
    .in_file(shown)
    .fix(format!(
        "replace the link with a copy of what it points to (cp --remove-destination \"$(readlink -f {p})\" {p}), or remove it",
        p = shown.display()
    ))
}

/// Replaces a file of the policy repository, at `path` as the user gave it
/// (relative to the working directory), creating its directory. The
/// repository is the user's own working tree, never a target, so no
/// target's confined view resolves it.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::platform::hostfile::replace_creating_dir(path, bytes)
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
    fn droppings_are_not_policy_and_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("repo");
        write(&r, "roles/web.toml", "run_list = []\n");
        write(&r, "whitelist.toml", "[packages]\n");
        write(&r, "cookbooks/a/recipes/default.toml", "\n");
        write(&r, "cookbooks/a/recipes/.default.toml.swp", "x");
        write(&r, "cookbooks/a/recipes/default.toml~", "x");
        write(&r, "cookbooks/a/.git/config", "x");
        write(&r, "README.md", "not policy");
        let repo = Repository::open(&r).unwrap();
        let rels: Vec<String> = repo.files().unwrap().into_iter().map(|f| f.rel).collect();
        assert_eq!(
            rels,
            [
                "cookbooks/a/recipes/default.toml",
                "roles/web.toml",
                "whitelist.toml"
            ]
        );
        // Inside the repository, outside it, nowhere, or a whole folder:
        // each link is refused by name.
        write(d.path(), "secret", "outside");
        for (name, to) in [
            (
                "cookbooks/a/recipes/in.toml",
                r.join("cookbooks/a/recipes/default.toml"),
            ),
            ("cookbooks/a/out", d.path().join("secret")),
            ("cookbooks/a/dangling", "/nonexistent".into()),
            ("cookbooks/b", d.path().to_path_buf()),
        ] {
            std::os::unix::fs::symlink(&to, r.join(name)).unwrap();
            let e = repo.files().unwrap_err();
            assert_eq!(e.file.as_deref(), Some(r.join(name).as_path()), "{e}");
            assert!(e.message.contains("is a symbolic link"), "{e}");
            std::fs::remove_file(r.join(name)).unwrap();
        }
    }
}
