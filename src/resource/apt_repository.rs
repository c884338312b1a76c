//! `apt_repository`: a deb822 sources entry and its signing key, so that a
//! cookbook can add a repository before its packages. A changed entry
//! refreshes that repository's index at once, as Chef does.

use serde::Deserialize;

use super::file::File;
use super::fsmeta::Meta;
use super::{BuildEnv, Change, Context, Resource, ResourceResult, Spec, TypeDef};
use crate::error::PolicyError;
use crate::platform::apt;

pub const TYPE: TypeDef = TypeDef {
    name: "apt_repository",
    actions: &["add", "remove"],
    properties: &["uri", "suite", "components", "key", "trusted"],
    build,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    uri: Option<String>,
    suite: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    /// A key file in the cookbook's `files/` (armored or binary OpenPGP).
    key: Option<String>,
    /// `Trusted: yes`, for local repositories without signatures.
    #[serde(default)]
    trusted: bool,
}

#[derive(Debug)]
struct AptRepository {
    name: String,
    sources: File,
    key: Option<File>,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    let name = &spec.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(
            PolicyError::new(format!("{name:?} cannot name a sources file"))
                .fix("use letters, digits, '-', '_' and '.' only"),
        );
    }
    let adding = !spec.actions.iter().any(|a| a == "remove");
    let (uri, suite) = match (p.uri, p.suite) {
        (Some(u), Some(s)) => (u, s),
        _ if !adding => (String::new(), String::new()),
        _ => {
            return Err(PolicyError::new("apt_repository needs uri and suite")
                .fix("e.g. uri = \"http://deb.debian.org/debian\", suite = \"bookworm-backports\", components = [\"main\"]"));
        }
    };
    let flat = suite.ends_with('/');
    if adding && !flat && p.components.is_empty() {
        return Err(PolicyError::new(format!(
            "suite {suite:?} needs components (e.g. [\"main\"]); only a flat suite ending in '/' has none"
        )));
    }
    let key = match &p.key {
        Some(k) => {
            let bytes = env.cookbook_file("files", k)?;
            let ext = if bytes.starts_with(b"-----BEGIN PGP") {
                "asc"
            } else {
                "gpg"
            };
            Some(File {
                path: format!("/etc/apt/keyrings/{name}.{ext}"),
                content: Some(bytes),
                meta: Meta {
                    mode: Some(0o644),
                    ..Meta::default()
                },
                sensitive: false,
            })
        }
        None => None,
    };
    let mut text = format!("# managed by kiln\nTypes: deb\nURIs: {uri}\nSuites: {suite}\n");
    if !flat {
        text.push_str(&format!("Components: {}\n", p.components.join(" ")));
    }
    if let Some(k) = &key {
        text.push_str(&format!("Signed-By: {}\n", k.path));
    }
    if p.trusted {
        text.push_str("Trusted: yes\n");
    }
    Ok(Box::new(AptRepository {
        name: name.clone(),
        sources: File {
            path: format!("/etc/apt/sources.list.d/{name}.sources"),
            content: Some(text.into_bytes()),
            meta: Meta {
                mode: Some(0o644),
                ..Meta::default()
            },
            sensitive: false,
        },
        key,
    }))
}

impl AptRepository {
    fn parts(&self) -> impl Iterator<Item = &File> {
        self.key.iter().chain(std::iter::once(&self.sources))
    }
}

impl Resource for AptRepository {
    fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
        let file_action = if action == "remove" {
            "delete"
        } else {
            "create"
        };
        let mut out = Vec::new();
        for f in self.parts() {
            for c in f.check(file_action, cx)? {
                out.push(Change {
                    summary: format!("{}: {}", f.path, c.summary),
                    ..c
                });
            }
        }
        Ok(out)
    }

    fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
        let file_action = if action == "remove" {
            "delete"
        } else {
            "create"
        };
        for f in self.parts() {
            if !f.check(file_action, cx)?.is_empty() {
                f.apply(file_action, cx)?;
            }
        }
        if action == "add" {
            apt::update_one(cx.target, &self.sources.path).map_err(|e| {
                format!(
                    "added repository {}, but its index did not update: {e}",
                    self.name
                )
            })?;
        }
        Ok(())
    }
}
