//! Fallback apt sources for pins the ordinary sources no longer carry
//! (`[fallback]` in whitelist.toml): a snapshot.debian.org state of the main
//! and security archives, and the team's own mirrors. A target gets them
//! only when one of its pins needs them.

use std::path::Path;

use super::target::Target;
use crate::policy::whitelist::Fallback;
use crate::resource::fsmeta::{Ids, atomic_write};

/// Where kiln writes the fallback sources on a target.
pub const SOURCES: &str = "/etc/apt/sources.list.d/kiln-fallback.sources";
const KEYRINGS: &str = "/etc/apt/keyrings";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The deb822 sources of `fallback` for a target of release `codename`.
pub fn render(fallback: &Fallback, codename: &str) -> String {
    let mut out =
        String::from("# Written by kiln: pinned versions the ordinary sources dropped.\n");
    if let Some(stamp) = &fallback.snapshot {
        // Snapshot Release files are past their Valid-Until by design.
        out.push_str(&format!(
            "\nTypes: deb\nURIs: http://snapshot.debian.org/archive/debian/{stamp}/\n\
             Suites: {codename} {codename}-updates\nComponents: main\n\
             Signed-By: {DEBIAN_KEYRING}\nCheck-Valid-Until: no\n\
             \nTypes: deb\nURIs: http://snapshot.debian.org/archive/debian-security/{stamp}/\n\
             Suites: {codename}-security\nComponents: main\n\
             Signed-By: {DEBIAN_KEYRING}\nCheck-Valid-Until: no\n"
        ));
    }
    for (i, m) in fallback.mirrors.iter().enumerate() {
        out.push_str(&format!(
            "\nTypes: deb\nURIs: {}\nSuites: {}\n",
            m.uri, m.suite
        ));
        if !m.components.is_empty() {
            out.push_str(&format!("Components: {}\n", m.components.join(" ")));
        }
        match &m.key {
            Some(_) => out.push_str(&format!("Signed-By: {}\n", key_file(i))),
            None => out.push_str("Trusted: yes\n"),
        }
    }
    out
}

fn key_file(i: usize) -> String {
    format!("{KEYRINGS}/kiln-fallback-{i}.asc")
}

/// Writes the fallback sources (and mirror keys, copied from the policy
/// repository at `repo`) into the target. Returns false when `fallback`
/// names nothing, so there is nothing to try.
pub fn install(target: &Target, fallback: &Fallback, repo: &Path) -> Result<bool, String> {
    if fallback.is_empty() {
        return Ok(false);
    }
    let codename = codename(target);
    for (i, m) in fallback.mirrors.iter().enumerate() {
        if let Some(key) = &m.key {
            let bytes = std::fs::read(repo.join(key))
                .map_err(|e| format!("cannot read the fallback mirror key {key}: {e}"))?;
            let path = key_file(i);
            if let Some(dir) = std::path::Path::new(&path).parent() {
                target
                    .fs()
                    .create_dir_all(dir, 0o755)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            atomic_write(target.fs(), &path, &bytes, 0o644, Ids::default())?;
        }
    }
    atomic_write(
        target.fs(),
        SOURCES,
        render(fallback, &codename).as_bytes(),
        0o644,
        Ids::default(),
    )?;
    Ok(true)
}

/// Takes the fallback sources out of the target again.
pub fn remove(target: &Target) {
    let _ = target.fs().remove_file(SOURCES);
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
    use crate::policy::whitelist::Mirror;

    #[test]
    fn snapshot_and_mirrors_render_as_deb822() {
        let f = Fallback {
            snapshot: Some("20261121T000000Z".into()),
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
            line: 1,
        };
        let text = render(&f, "bookworm");
        assert!(text.contains("URIs: http://snapshot.debian.org/archive/debian/20261121T000000Z/\nSuites: bookworm bookworm-updates\n"));
        assert!(text.contains("URIs: http://snapshot.debian.org/archive/debian-security/20261121T000000Z/\nSuites: bookworm-security\n"));
        assert!(text.contains("Check-Valid-Until: no"));
        assert!(text.contains("URIs: https://apt.example.com/kiln\nSuites: ./\nSigned-By: /etc/apt/keyrings/kiln-fallback-0.asc\n"));
        assert!(text.contains("URIs: http://127.0.0.1:8080\nSuites: ./\nTrusted: yes\n"));
    }
}
