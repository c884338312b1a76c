//! `only_if` / `not_if`: a command on the target whose exit 0 means true,
//! or a question kiln answers itself without starting a process (a path
//! and its type, a mount point, a running service, an open port, a file's
//! text). The plan asks every distinct one once, the commands in
//! parallel; a run asks again only where the target changed since.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::PolicyError;
use crate::platform::target::{ShellOpts, Target};

/// One guard, as the recipe gave it (rendered).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guard {
    /// Run with `/bin/sh -c` on the target.
    Shell(String),
    /// `{ path = "...", type = "file" | "directory" | "link" }`: it exists
    /// (as that type).
    Path {
        path: String,
        kind: Option<PathKind>,
    },
    /// `{ mounted = "..." }`: something is mounted there.
    Mounted(String),
    /// `{ service_running = "..." }`: a live process of that name runs.
    ServiceRunning(String),
    /// `{ port_open = N }`: something accepts connections on the target's
    /// loopback at that TCP port.
    PortOpen(u16),
    /// `{ file_contains = { path = "...", text = "..." } }`.
    FileContains { path: String, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    File,
    Directory,
    Link,
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guard::Shell(c) => write!(f, "{c}"),
            Guard::Path { path, kind: None } => write!(f, "path {path}"),
            Guard::Path {
                path,
                kind: Some(k),
            } => write!(f, "path {path} ({k:?})"),
            Guard::Mounted(p) => write!(f, "mounted {p}"),
            Guard::ServiceRunning(s) => write!(f, "service_running {s}"),
            Guard::PortOpen(p) => write!(f, "port_open {p}"),
            Guard::FileContains { path, text } => write!(f, "file_contains {path}: {text:?}"),
        }
    }
}

const FORMS: &str = "a shell command, or one of { path = \"/run/systemd/system\", type = \"directory\" }, { mounted = \"/var/www/shop\" }, { service_running = \"mariadb\" }, { port_open = 3306 }, { file_contains = { path = \"/etc/x\", text = \"y\" } }";

impl Guard {
    /// Reads a guard from a recipe's value of `key` (already rendered).
    pub fn parse(key: &str, v: toml::Value) -> Result<Guard, PolicyError> {
        let bad = |what: String| {
            PolicyError::new(format!("{key}: {what}")).fix(format!("write {key} as {FORMS}"))
        };
        let mut t = match v {
            toml::Value::String(s) => return Ok(Guard::Shell(s)),
            toml::Value::Table(t) => t,
            other => return Err(bad(format!("a {} is not a guard", other.type_str()))),
        };
        let string = |t: &mut toml::Table, k: &str| -> Result<String, PolicyError> {
            match t.remove(k) {
                Some(toml::Value::String(s)) if s.chars().any(char::is_control) => {
                    Err(bad(format!("{k} holds a control character")))
                }
                Some(toml::Value::String(s)) if !s.is_empty() => Ok(s),
                Some(_) => Err(bad(format!("{k} must be a non-empty string"))),
                None => Err(bad(format!("{k} is missing"))),
            }
        };
        let guard = if t.contains_key("path") {
            let path = string(&mut t, "path")?;
            let kind = match t.remove("type") {
                None => None,
                Some(toml::Value::String(k)) => Some(match k.as_str() {
                    "file" => PathKind::File,
                    "directory" => PathKind::Directory,
                    "link" => PathKind::Link,
                    _ => return Err(bad(format!("type {k:?} is not file, directory or link"))),
                }),
                Some(_) => return Err(bad("type must be a string".into())),
            };
            Guard::Path { path, kind }
        } else if t.contains_key("mounted") {
            Guard::Mounted(string(&mut t, "mounted")?)
        } else if t.contains_key("service_running") {
            Guard::ServiceRunning(string(&mut t, "service_running")?)
        } else if let Some(p) = t.remove("port_open") {
            let port = p
                .as_integer()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0);
            Guard::PortOpen(
                port.ok_or_else(|| bad(format!("port_open {p} is not a TCP port (1-65535)")))?,
            )
        } else if let Some(fc) = t.remove("file_contains") {
            let toml::Value::Table(mut fc) = fc else {
                return Err(bad(
                    "file_contains must be a table with path and text".into()
                ));
            };
            let g = Guard::FileContains {
                path: string(&mut fc, "path")?,
                text: string(&mut fc, "text")?,
            };
            if let Some(k) = fc.keys().next() {
                return Err(bad(format!("file_contains has no {k:?}")));
            }
            g
        } else {
            return Err(bad("no question kiln knows".into()));
        };
        match t.keys().next() {
            Some(k) => Err(bad(format!("{k:?} does not go with the rest"))),
            None => Ok(guard),
        }
    }

    /// Whether the guard holds on `target` now.
    pub fn holds(&self, target: &Target) -> bool {
        match self {
            Guard::Shell(cmd) => target
                .shell(cmd, &ShellOpts::default())
                .map(|o| o.status.success())
                .unwrap_or(false),
            Guard::Path { path, kind } => {
                let meta = match kind {
                    Some(PathKind::Link) => target.fs().symlink_metadata(path),
                    _ => target.fs().metadata(path),
                };
                meta.is_ok_and(|m| match kind {
                    None => true,
                    Some(PathKind::File) => m.is_file(),
                    Some(PathKind::Directory) => m.is_dir(),
                    Some(PathKind::Link) => m.file_type().is_symlink(),
                })
            }
            Guard::Mounted(p) => mounted(target, p),
            Guard::ServiceRunning(name) => crate::resource::service::process_named(target, name),
            Guard::PortOpen(port) => {
                // A --root tree has no network of its own: nothing of it listens.
                !target.is_chroot()
                    && std::net::TcpStream::connect_timeout(
                        &std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                        Duration::from_millis(500),
                    )
                    .is_ok()
            }
            Guard::FileContains { path, text } => target
                .fs()
                .read_to_string(path)
                .is_ok_and(|c| c.contains(text.as_str())),
        }
    }

    fn runs_a_process(&self) -> bool {
        matches!(self, Guard::Shell(_))
    }
}

/// Whether something is mounted at `path` of the target, as its system's
/// mount table says (a `--root` tree's paths lie below its root).
fn mounted(target: &Target, path: &str) -> bool {
    let at = target.root().join(path.trim_start_matches('/'));
    let at = at.to_string_lossy();
    let at = at.trim_end_matches('/');
    crate::platform::rootfs::mount_points()
        .iter()
        .any(|m| m.to_string_lossy().trim_end_matches('/') == at)
}

/// Guards already asked, with their verdicts.
pub type Guards = HashMap<Guard, bool>;

/// Asks every distinct guard of the resources before planning: they only
/// read state. The commands run at once, since a no-op run is mostly
/// waiting on them; kiln's own questions take microseconds.
pub fn in_parallel<'a>(guards: impl IntoIterator<Item = &'a Guard>, target: &Target) -> Guards {
    let mut all: Vec<&Guard> = guards.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    let (shell, own): (Vec<&Guard>, Vec<&Guard>) =
        all.into_iter().partition(|g| g.runs_a_process());
    let mut known: Guards = own
        .into_iter()
        .map(|g| (g.clone(), g.holds(target)))
        .collect();
    known.extend(std::thread::scope(|s| {
        let handles: Vec<_> = shell
            .iter()
            .map(|g| s.spawn(move || ((*g).clone(), g.holds(target))))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    }));
    known
}

/// Why a resource with these guards is skipped, if one says so: a verdict
/// in `known`, else the guard asked now.
pub fn skips(
    only_if: Option<&Guard>,
    not_if: Option<&Guard>,
    target: &Target,
    known: &Guards,
) -> Option<String> {
    let holds = |g: &Guard| known.get(g).copied().unwrap_or_else(|| g.holds(target));
    if let Some(g) = only_if
        && !holds(g)
    {
        return Some("only_if false".into());
    }
    if let Some(g) = not_if
        && holds(g)
    {
        return Some("not_if true".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(text: &str) -> Result<Guard, PolicyError> {
        let t: toml::Table = toml::from_str(&format!("g = {text}")).unwrap();
        Guard::parse("only_if", t["g"].clone())
    }

    #[test]
    fn tables_are_questions_and_strings_commands() {
        assert_eq!(
            guard("\"test -d /x\"").unwrap(),
            Guard::Shell("test -d /x".into())
        );
        assert_eq!(
            guard("{ path = \"/run/systemd/system\", type = \"directory\" }").unwrap(),
            Guard::Path {
                path: "/run/systemd/system".into(),
                kind: Some(PathKind::Directory)
            }
        );
        assert_eq!(
            guard("{ port_open = 3306 }").unwrap(),
            Guard::PortOpen(3306)
        );
        assert_eq!(
            guard("{ file_contains = { path = \"/etc/a\", text = \"b\" } }").unwrap(),
            Guard::FileContains {
                path: "/etc/a".into(),
                text: "b".into()
            }
        );
        for bad in [
            "3",
            "{ port_open = 70000 }",
            "{ path = \"/x\", type = \"pipe\" }",
            "{ path = \"/x\", mounted = \"/y\" }",
            "{ nothing = 1 }",
            "{ file_contains = { path = \"/x\" } }",
            "{ mounted = \"/a\\nb\" }",
        ] {
            let e = guard(bad).unwrap_err().to_string();
            assert!(e.starts_with("only_if: "), "{bad}: {e}");
        }
    }

    #[test]
    fn kilns_own_questions_start_no_process_and_answer_the_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/a"), "one\ntwo\n").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("etc/l")).unwrap();
        let target = Target::at_root(dir.path());
        let holds = |text: &str| guard(text).unwrap().holds(&target);
        assert!(holds("{ path = \"/etc/a\", type = \"file\" }"));
        assert!(holds("{ path = \"/etc\", type = \"directory\" }"));
        assert!(holds("{ path = \"/etc/l\", type = \"link\" }"));
        assert!(!holds("{ path = \"/etc/a\", type = \"directory\" }"));
        assert!(!holds("{ path = \"/nothing\" }"));
        assert!(holds(
            "{ file_contains = { path = \"/etc/a\", text = \"two\" } }"
        ));
        assert!(!holds(
            "{ file_contains = { path = \"/etc/a\", text = \"three\" } }"
        ));
        // A tree has no processes or network of its own.
        assert!(!holds("{ service_running = \"init\" }"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!holds(&format!("{{ port_open = {port} }}")));
        // The running system: its own mounts, ports and processes.
        let host = Target::host();
        assert!(guard("{ mounted = \"/proc\" }").unwrap().holds(&host));
        assert!(!guard("{ mounted = \"/etc\" }").unwrap().holds(&host));
        assert!(
            guard(&format!("{{ port_open = {port} }}"))
                .unwrap()
                .holds(&host)
        );
        drop(listener);
        assert!(
            !guard(&format!("{{ port_open = {port} }}"))
                .unwrap()
                .holds(&host)
        );
    }
}
