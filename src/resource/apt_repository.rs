//! `apt_repository`: a deb822 sources entry and its signing key, so that a
//! cookbook can add a repository before its packages. A changed entry
//! refreshes that repository's index at once, as Chef does.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::file::{File, FileAction, FileChange};
use super::fsmeta::Meta;
use super::state::sha256_file;
use super::{
    Action, BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef,
    actions,
};
use crate::error::PolicyError;
use crate::platform::apt;
use crate::platform::deb822::paragraph;

pub const TYPE: TypeDef = TypeDef::of::<AptRepository>(
    "apt_repository",
    &["uri", "suite", "components", "key", "trusted"],
    build,
);

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
    let adding = !spec
        .actions
        .iter()
        .any(|a| AptRepositoryAction::parse(a) == Some(AptRepositoryAction::Remove));
    let (uri, suite) = match (p.uri, p.suite) {
        (Some(u), Some(s)) => (u, s),
        _ if !adding => (String::new(), String::new()),
        _ => {
            return Err(PolicyError::new("apt_repository needs uri and suite")
                .fix("e.g. uri = \"http://deb.debian.org/debian\", suite = \"bookworm-backports\", components = [\"main\"]"));
        }
    };
    // Each is one word of a deb822 field: a space adds a URI, suite or
    // component of the value's choosing, a newline a field.
    for (field, value) in std::iter::once(("uri", &uri))
        .chain(std::iter::once(("suite", &suite)))
        .chain(p.components.iter().map(|c| ("components", c)))
    {
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PolicyError::new(format!(
                "{field} {value:?} holds a space or a control character: in the deb822 sources file it would add a {field} or a line"
            ))
            .fix(format!(
                "give {field} as one word; several components are a list: components = [\"main\", \"contrib\"]"
            )));
        }
    }
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
    let mut fields = vec![
        ("Types", "deb".to_string()),
        ("URIs", uri.to_string()),
        ("Suites", suite.to_string()),
    ];
    if !flat {
        fields.push(("Components", p.components.join(" ")));
    }
    if let Some(k) = &key {
        fields.push(("Signed-By", k.path.clone()));
    }
    if p.trusted {
        fields.push(("Trusted", "yes".to_string()));
    }
    let text = String::from("# managed by kiln\n") + &paragraph(fields);
    Ok(Box::new(AptRepository {
        name: name.clone(),
        sources: File {
            path: format!("/etc/apt/sources.list.d/{name}.sources"),
            content: Some(text.into_bytes().into()),
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

actions! {
    pub enum AptRepositoryAction {
        Add = "add",
        Remove = "remove",
    }
}

impl AptRepositoryAction {
    fn file_action(self) -> FileAction {
        match self {
            AptRepositoryAction::Add => FileAction::Create,
            AptRepositoryAction::Remove => FileAction::Delete,
        }
    }
}

/// A difference of one of the files (key, then sources entry), by its path.
#[derive(Debug, Serialize)]
pub struct RepoChange {
    /// Which of [`AptRepository::parts`].
    #[serde(skip)]
    part: usize,
    path: String,
    change: FileChange,
}

impl fmt::Display for RepoChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.change)
    }
}

impl Item for RepoChange {
    fn diff(&self) -> Option<String> {
        self.change.diff()
    }
}

impl Converge for AptRepository {
    type Action = AptRepositoryAction;
    type Item = RepoChange;

    fn check(
        &self,
        action: AptRepositoryAction,
        cx: &mut Context,
    ) -> ResourceResult<Vec<RepoChange>> {
        let mut out = Vec::new();
        for (part, f) in self.parts().enumerate() {
            for change in Converge::check(f, action.file_action(), cx)? {
                out.push(RepoChange {
                    part,
                    path: f.path.clone(),
                    change,
                });
            }
        }
        Ok(out)
    }

    fn apply(
        &self,
        action: AptRepositoryAction,
        diff: &[RepoChange],
        cx: &mut Context,
    ) -> ResourceResult<()> {
        for (part, f) in self.parts().enumerate() {
            let changes: Vec<&RepoChange> = diff.iter().filter(|c| c.part == part).collect();
            if changes.is_empty() {
                continue;
            }
            // Each file's share of the difference, as the file planned it.
            let own: Vec<FileChange> = changes.into_iter().map(|c| c.change.clone()).collect();
            Converge::apply(f, action.file_action(), &own, cx)?;
        }
        if action == AptRepositoryAction::Add {
            apt::update_one(cx.target, &self.sources.path).map_err(|e| {
                e.context(format!(
                    "added repository {}, but its index did not update",
                    self.name
                ))
            })?;
        }
        Ok(())
    }

    /// The sources entry and the signing key it writes.
    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        let hash = |p: &str| {
            let tfs = state.target.fs();
            match tfs.symlink_metadata(p) {
                Ok(m) if m.is_file() => {
                    sha256_file(tfs, p).unwrap_or_else(|e| format!("unreadable ({})", e.kind()))
                }
                Ok(_) => "not-a-file".to_string(),
                Err(_) => "absent".to_string(),
            }
        };
        let sources = hash(&format!("/etc/apt/sources.list.d/{name}.sources"));
        let key = ["asc", "gpg"]
            .iter()
            .map(|ext| format!("/etc/apt/keyrings/{name}.{ext}"))
            .find(|p| state.target.fs().symlink_metadata(p).is_ok())
            .map_or_else(|| "none".to_string(), |p| hash(&p));
        Some(format!("sources_sha256={sources} key_sha256={key}"))
    }
}
