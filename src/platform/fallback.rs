//! Fallback apt sources for pins the ordinary sources no longer carry
//! (`[fallback]` in whitelist.toml): a snapshot.debian.org state of the main
//! and security archives, and the team's own mirrors. A target gets them
//! only when one of its pins needs them.

use std::path::Path;

use serde::Deserialize;

use super::apt;
use super::deb822::paragraph;
use super::target::Target;
use super::tfs::{Owner, atomic_write};
use crate::error::RunError;

/// Where kiln writes the fallback sources on a target.
pub const SOURCES: &str = "/etc/apt/sources.list.d/kiln-fallback.sources";
const KEYRINGS: &str = "/etc/apt/keyrings";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// snapshot.debian.org itself, when neither the whitelist nor the
/// environment names the team's copy.
pub const SNAPSHOT_URI: &str = "http://snapshot.debian.org";
/// Overrides `[fallback] snapshot_uri` for one run: a host that cannot reach
/// the copy the whitelist names (another site, a test) is pointed elsewhere
/// without a policy change.
pub const SNAPSHOT_URI_ENV: &str = "KILN_SNAPSHOT_URI";

/// Where pinned versions come from once the ordinary sources dropped them:
/// kiln adds these to a target only when a pin needs one.
/// (`[fallback]` of whitelist.toml, read by `policy::whitelist`; defined
/// here so that the target side needs nothing from the layers above.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fallback {
    /// A snapshot.debian.org timestamp (`20261121T000000Z`): that day's
    /// main and security archives.
    pub snapshot: Option<String>,
    /// The team's own copy of snapshot.debian.org, for when the real one
    /// cannot be reached; `KILN_SNAPSHOT_URI` overrides it on one run.
    pub snapshot_uri: Option<String>,
    /// The key that copy is signed with, a file of the policy repository,
    /// when it is not Debian's archive key (a copy re-signed by the team).
    pub snapshot_key: Option<String>,
    pub mirrors: Vec<Mirror>,
    pub line: usize,
}

impl Fallback {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.mirrors.is_empty()
    }
}

/// An apt repository of pinned versions, such as `kiln whitelist mirror`
/// writes (a flat repository: suite `./`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub uri: String,
    #[serde(default = "flat_suite")]
    pub suite: String,
    #[serde(default)]
    pub components: Vec<String>,
    /// An armored or binary OpenPGP key file of the repository that signs
    /// the mirror's Release file.
    #[serde(default)]
    pub key: Option<String>,
    /// An unsigned mirror is used only when marked so, on purpose.
    #[serde(default)]
    pub trusted: bool,
}

fn flat_suite() -> String {
    "./".into()
}

/// What to write instead of a `snapshot_uri` (or `KILN_SNAPSHOT_URI`) that
/// [`check_snapshot_uri`] refuses.
pub const SNAPSHOT_URI_FIX: &str = "give the base URL of a copy of snapshot.debian.org, \
     under which /archive/debian/STAMP/ and /archive/debian-security/STAMP/ are served, \
     e.g. \"http://snapshot.example.com\"";

/// What is wrong with the URL of an apt source: worded to follow the
/// value it is about (`uri "x" is not an http(s) URL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriProblem {
    #[error("is not an http(s) URL")]
    NotHttp,
    #[error("names no host")]
    NoHost,
    #[error("holds a space or a control character, which apt's sources cannot carry")]
    Unquotable,
    #[error("holds a space, a query or a fragment, which apt's sources cannot carry")]
    NotABase,
    #[error("already holds /archive/, which kiln appends itself")]
    HoldsArchive,
}

/// The host and path of an http(s) URL that names a host.
pub fn http_rest(u: &str) -> Result<&str, UriProblem> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or(UriProblem::NotHttp)?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err(UriProblem::NoHost);
    }
    Ok(rest)
}

/// A base URL that apt can reach and kiln can append snapshot.debian.org's
/// layout to; `Err` says what is wrong with it. The whitelist and the
/// `KILN_SNAPSHOT_URI` environment variable share it, so that one value is
/// not good in one place and refused in the other.
pub fn check_snapshot_uri(u: &str) -> Result<(), UriProblem> {
    let rest = http_rest(u)?;
    if u.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(UriProblem::NotABase);
    }
    // kiln appends the archive's path itself; given twice, every
    // request of apt would 404 with no hint why.
    if rest.contains("/archive/") {
        return Err(UriProblem::HoldsArchive);
    }
    Ok(())
}

/// Why the fallback sources could not be put on a target.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error(
        "{SNAPSHOT_URI_ENV} {value:?} {problem}; {SNAPSHOT_URI_FIX}, or unset it to use the whitelist's"
    )]
    Environment { value: String, problem: UriProblem },
    /// A key file the whitelist names is missing from the policy repository.
    #[error("cannot read the {what} {key}: {source}")]
    Key {
        what: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    /// apt refused the sources (a key that does not sign them, a source
    /// that cannot be reached); they were taken back out.
    #[error(
        "{0}; kiln took the fallback sources back out of the target: make each \
         source and the key the whitelist names for it agree ([fallback] \
         snapshot_key for the snapshot, key for a mirror)"
    )]
    Refused(RunError),
}

/// The deb822 sources of `fallback` for a target of release `codename`,
/// with the snapshot served under `snapshot_uri` (see [`snapshot_uri`]).
pub fn render(fallback: &Fallback, codename: &str, snapshot_uri: &str) -> String {
    let mut out =
        String::from("# Written by kiln: pinned versions the ordinary sources dropped.\n");
    if let Some(stamp) = &fallback.snapshot {
        let base = snapshot_uri.trim_end_matches('/');
        let keyring = snapshot_keyring(fallback);
        let archives = [
            ("debian", format!("{codename} {codename}-updates")),
            ("debian-security", format!("{codename}-security")),
        ];
        for (archive, suites) in archives {
            // Snapshot Release files are past their Valid-Until by design; the
            // signature is still checked, against Debian's key or the copy's own.
            out.push('\n');
            out.push_str(&paragraph([
                ("Types", "deb".to_string()),
                ("URIs", format!("{base}/archive/{archive}/{stamp}/")),
                ("Suites", suites),
                ("Components", "main".to_string()),
                ("Signed-By", keyring.clone()),
                ("Check-Valid-Until", "no".to_string()),
            ]));
        }
    }
    for (i, m) in fallback.mirrors.iter().enumerate() {
        let mut fields = vec![
            ("Types", "deb".to_string()),
            ("URIs", m.uri.clone()),
            ("Suites", m.suite.clone()),
        ];
        if !m.components.is_empty() {
            fields.push(("Components", m.components.join(" ")));
        }
        fields.push(match &m.key {
            Some(_) => ("Signed-By", key_file(i)),
            None => ("Trusted", "yes".to_string()),
        });
        out.push('\n');
        out.push_str(&paragraph(fields));
    }
    out
}

fn key_file(i: usize) -> String {
    format!("{KEYRINGS}/kiln-fallback-{i}.asc")
}

/// Where the snapshot's key lies on the target. A key of the repository
/// keeps its extension, because apt reads `*.asc` as armored and anything
/// else as binary.
fn snapshot_keyring(fallback: &Fallback) -> String {
    match &fallback.snapshot_key {
        Some(k) if k.ends_with(".asc") => format!("{KEYRINGS}/kiln-fallback-snapshot.asc"),
        Some(_) => format!("{KEYRINGS}/kiln-fallback-snapshot.gpg"),
        None => DEBIAN_KEYRING.into(),
    }
}

/// The base URL of the snapshot archive this run uses: `KILN_SNAPSHOT_URI`
/// when set and not empty, else the whitelist's `snapshot_uri`, else
/// snapshot.debian.org. The environment's value is checked here, as
/// `kiln check` checks the whitelist's.
pub fn snapshot_uri(fallback: &Fallback) -> Result<String, FallbackError> {
    choose_snapshot_uri(fallback, std::env::var(SNAPSHOT_URI_ENV).ok())
}

fn choose_snapshot_uri(fallback: &Fallback, env: Option<String>) -> Result<String, FallbackError> {
    match env {
        Some(v) if !v.is_empty() => match check_snapshot_uri(&v) {
            Ok(()) => Ok(v),
            Err(problem) => Err(FallbackError::Environment { value: v, problem }),
        },
        _ => Ok(fallback
            .snapshot_uri
            .clone()
            .unwrap_or_else(|| SNAPSHOT_URI.into())),
    }
}

/// Writes the fallback sources (and their keys, copied from the policy
/// repository at `repo`) into the target and refreshes apt's lists of them;
/// sources apt refuses are removed again. Returns false when `fallback`
/// names nothing, so there is nothing to try.
pub fn install(target: &Target, fallback: &Fallback, repo: &Path) -> Result<bool, FallbackError> {
    if fallback.is_empty() {
        return Ok(false);
    }
    let codename = codename(target);
    let snapshot_uri = snapshot_uri(fallback)?;
    for (i, m) in fallback.mirrors.iter().enumerate() {
        if let Some(key) = &m.key {
            copy_key(target, repo, key, &key_file(i), "fallback mirror key")?;
        }
    }
    if fallback.snapshot.is_some()
        && let Some(key) = &fallback.snapshot_key
    {
        copy_key(
            target,
            repo,
            key,
            &snapshot_keyring(fallback),
            "[fallback] snapshot_key",
        )?;
    }
    atomic_write(
        target.fs(),
        SOURCES,
        render(fallback, &codename, &snapshot_uri).as_bytes(),
        0o644,
        Owner::default(),
    )?;
    // A source apt refuses (signed by another key than the one named) fails
    // every later `apt-get update` on the target, the next run's first one
    // included, whatever the policy says by then. So these sources are
    // refreshed alone first and taken back out when apt refuses them.
    if let Err(e) = apt::update_one(target, SOURCES) {
        let _ = target.fs().remove_file(SOURCES);
        for key in installed_keys(fallback) {
            let _ = target.fs().remove_file(key);
        }
        return Err(FallbackError::Refused(e));
    }
    Ok(true)
}

/// Takes the fallback sources (and the keys copied for them) out of the
/// target again, when they did not help.
pub fn remove(target: &Target, fallback: &Fallback) {
    let _ = target.fs().remove_file(SOURCES);
    for key in installed_keys(fallback) {
        let _ = target.fs().remove_file(key);
    }
}

/// The key files [`install`] copies into the target.
fn installed_keys(fallback: &Fallback) -> Vec<String> {
    let mirrors = (fallback.mirrors.iter().enumerate())
        .filter(|(_, m)| m.key.is_some())
        .map(|(i, _)| key_file(i));
    let snapshot = (fallback.snapshot.is_some() && fallback.snapshot_key.is_some())
        .then(|| snapshot_keyring(fallback));
    mirrors.chain(snapshot).collect()
}

/// Copies a key file of the policy repository to `path` on the target, so
/// that the sources' Signed-By names a file the target holds.
fn copy_key(
    target: &Target,
    repo: &Path,
    key: &str,
    path: &str,
    what: &'static str,
) -> Result<(), FallbackError> {
    let bytes = std::fs::read(repo.join(key)).map_err(|source| FallbackError::Key {
        what,
        key: key.to_string(),
        source,
    })?;
    if let Some(dir) = Path::new(path).parent() {
        target
            .fs()
            .create_dir_all(dir, 0o755)
            .map_err(|e| RunError::io("create", dir.display(), e))?;
    }
    atomic_write(target.fs(), path, &bytes, 0o644, Owner::default())?;
    Ok(())
}

/// The target's release codename (`bookworm`), from its os-release.
pub fn codename(target: &Target) -> String {
    let text = (target.fs().read_to_string("/etc/os-release"))
        .or_else(|_| target.fs().read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(stamp: &str) -> Fallback {
        Fallback {
            snapshot: Some(stamp.into()),
            line: 1,
            ..Fallback::default()
        }
    }

    #[test]
    fn snapshot_and_mirrors_render_as_deb822() {
        let f = Fallback {
            mirrors: vec![
                Mirror {
                    uri: "https://apt.example.com/kiln".into(),
                    suite: "./".into(),
                    components: vec![],
                    key: Some("keys/mirror.asc".into()),
                    trusted: false,
                },
                Mirror {
                    uri: "http://127.0.0.1:8080".into(),
                    suite: "./".into(),
                    components: vec![],
                    key: None,
                    trusted: true,
                },
            ],
            ..snapshot("20261121T000000Z")
        };
        let text = render(&f, "bookworm", SNAPSHOT_URI);
        assert!(text.contains("URIs: http://snapshot.debian.org/archive/debian/20261121T000000Z/\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\nCheck-Valid-Until: no\n"), "{text}");
        assert!(text.contains("URIs: http://snapshot.debian.org/archive/debian-security/20261121T000000Z/\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\nCheck-Valid-Until: no\n"), "{text}");
        assert!(text.contains("URIs: https://apt.example.com/kiln\nSuites: ./\nSigned-By: /etc/apt/keyrings/kiln-fallback-0.asc\n"));
        assert!(text.contains("URIs: http://127.0.0.1:8080\nSuites: ./\nTrusted: yes\n"));
        // Only the mirror marked so is trusted without a signature.
        assert_eq!(text.matches("Trusted: yes").count(), 1, "{text}");
    }

    #[test]
    fn a_snapshot_copy_renders_at_its_own_uri_with_its_own_key() {
        let mut f = Fallback {
            snapshot_uri: Some("https://snap.example.com/".into()),
            snapshot_key: Some("keys/snapshot.asc".into()),
            ..snapshot("20261121T000000Z")
        };
        let uri = choose_snapshot_uri(&f, None).unwrap();
        let text = render(&f, "trixie", &uri);
        assert!(text.contains("URIs: https://snap.example.com/archive/debian/20261121T000000Z/\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /etc/apt/keyrings/kiln-fallback-snapshot.asc\nCheck-Valid-Until: no\n"), "{text}");
        assert!(text.contains("URIs: https://snap.example.com/archive/debian-security/20261121T000000Z/\nSuites: trixie-security\n"), "{text}");
        assert!(!text.contains("Trusted"), "{text}");
        f.snapshot_key = Some("keys/snapshot.gpg".into());
        assert!(
            render(&f, "trixie", &uri)
                .contains("Signed-By: /etc/apt/keyrings/kiln-fallback-snapshot.gpg\n")
        );
    }

    #[test]
    fn the_environment_overrides_the_whitelists_snapshot_uri() {
        let plain = snapshot("20261121T000000Z");
        assert_eq!(choose_snapshot_uri(&plain, None).unwrap(), SNAPSHOT_URI);
        let f = Fallback {
            snapshot_uri: Some("http://snap.example.com".into()),
            ..plain
        };
        assert_eq!(
            choose_snapshot_uri(&f, Some("http://127.0.0.1:8080".into())).unwrap(),
            "http://127.0.0.1:8080"
        );
        // Set but empty is unset, as shells make it easy to write.
        assert_eq!(
            choose_snapshot_uri(&f, Some(String::new())).unwrap(),
            "http://snap.example.com"
        );
        let e = choose_snapshot_uri(&f, Some("snap.example.com".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KILN_SNAPSHOT_URI \"snap.example.com\" is not an http(s) URL")
                && e.contains("or unset it"),
            "{e}"
        );
        for (uri, problem) in [
            ("http://", UriProblem::NoHost),
            ("https://h/x?y", UriProblem::NotABase),
            ("http://h/archive/debian/", UriProblem::HoldsArchive),
        ] {
            assert_eq!(check_snapshot_uri(uri), Err(problem), "{uri}");
        }
    }
}
