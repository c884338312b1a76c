//! Verify checks (`[[verify]]` in recipes and roles): what `kiln test` runs
//! after converging, and what fleet rollouts use as health checks.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, RunError};
use crate::platform::dpkg::Dpkg;
use crate::platform::target::{ShellOpts, Target, output_tail};
use crate::policy::render::Renderer;
use crate::policy::whitelist::Pin;
use crate::resource::{BuildEnv, Context, Spec, type_def};

/// One check, rendered against the node's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Http {
        url: String,
        status: u16,
        contains: Option<String>,
    },
    Port {
        host: String,
        port: u16,
    },
    Command {
        command: String,
    },
    File {
        path: String,
        contains: Option<String>,
    },
    Package {
        name: String,
    },
    Service {
        name: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub probe: Probe,
    /// Where it is declared, for messages.
    pub origin: String,
    /// How long a check that needs a service may keep retrying.
    pub timeout: Duration,
}

const KINDS: &[&str] = &["http", "port", "command", "file", "package", "service"];
const KEYS: &[&str] = &[
    "http",
    "port",
    "command",
    "file",
    "package",
    "service",
    "status",
    "contains",
    "host",
    "timeout",
    "description",
];

/// How one check went: what `kiln verify`, `kiln test` and the fleet's
/// health checks report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub check: String,
    pub origin: String,
    pub ok: bool,
    pub detail: String,
}

/// Why a check failed: the `detail` of its outcome, which `kiln test`,
/// `kiln verify` and fleet health checks show next to the check's name.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailed {
    /// The request did not get an answer (or its body could not be read).
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("status {got}, expected {expected}")]
    Status { got: u16, expected: u16 },
    #[error("status {got}, but the body does not contain {wanted:?} (body starts: {start:?})")]
    Body {
        got: u16,
        wanted: String,
        start: String,
    },
    #[error("{0}")]
    Resolve(#[source] std::io::Error),
    #[error("no address")]
    NoAddress,
    #[error("nothing accepts connections: {0}")]
    Refused(#[source] std::io::Error),
    /// The command's shell could not be started.
    #[error("{0}")]
    Start(#[source] std::io::Error),
    #[error("{status}: {tail}")]
    Exit {
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not contain {wanted:?}")]
    Missing { path: String, wanted: String },
    #[error("{0} is not installed")]
    NotInstalled(String),
    #[error("{name} is at {installed}, pinned {pin} ({rule})")]
    OffPin {
        name: String,
        installed: String,
        pin: String,
        rule: String,
    },
    #[error("{0}")]
    Service(PolicyError),
    #[error("{name} cannot run here: {why}")]
    CannotRun { name: String, why: String },
    #[error("{0} is not running")]
    NotRunning(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs every check, in order; one failing does not stop the others.
pub fn run_all(
    checks: &[Check],
    target: &Target,
    pins: &BTreeMap<String, Pin>,
) -> Vec<CheckOutcome> {
    checks
        .iter()
        .map(|c| {
            let r = c.run(target, pins);
            CheckOutcome {
                check: c.label(),
                origin: c.origin.clone(),
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e.to_string()),
            }
        })
        .collect()
}

impl Check {
    /// Parses and renders one `[[verify]]` table.
    pub fn parse(
        table: &toml::Table,
        renderer: &Renderer,
        origin: &str,
    ) -> Result<Check, PolicyError> {
        for k in table.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(PolicyError::new(format!("verify check: unknown key {k:?}"))
                    .fix(format!("valid keys: {}", KEYS.join(", "))));
            }
        }
        let kinds: Vec<&&str> = KINDS.iter().filter(|k| table.contains_key(**k)).collect();
        let [kind] = kinds.as_slice() else {
            return Err(PolicyError::new(format!(
                "a verify check needs exactly one of {} (found {})",
                KINDS.join(", "),
                kinds.len()
            )));
        };
        let text = |key: &str| -> Result<Option<String>, PolicyError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => renderer
                    .render(s)
                    .map(Some)
                    .map_err(|f| PolicyError::new(format!("verify check, {key}: {}", f.message))),
                Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
                Some(other) => Err(PolicyError::new(format!(
                    "verify check, {key}: expected a string, found {}",
                    other.type_str()
                ))),
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, PolicyError> {
            match text(key)? {
                None => Ok(default),
                Some(s) => s.trim().parse().map_err(|_| {
                    PolicyError::new(format!("verify check, {key}: {s:?} is not a number"))
                }),
            }
        };
        let main = text(kind)?.unwrap_or_default();
        let contains = text("contains")?;
        let probe = match **kind {
            "http" => Probe::Http {
                url: main,
                status: match number("status", 200)? {
                    s @ 100..=599 => s as u16,
                    s => {
                        return Err(PolicyError::new(format!(
                            "verify check, status: {s} is not an HTTP status"
                        ))
                        .fix("use a status from 100 to 599, e.g. status = 200"));
                    }
                },
                contains,
            },
            "port" => Probe::Port {
                host: text("host")?.unwrap_or_else(|| "127.0.0.1".into()),
                port: main.parse().map_err(|_| {
                    PolicyError::new(format!("verify check, port: {main:?} is not a port number"))
                })?,
            },
            "command" => Probe::Command { command: main },
            "file" => Probe::File {
                path: main,
                contains,
            },
            "package" => Probe::Package { name: main },
            _ => Probe::Service { name: main },
        };
        Ok(Check {
            probe,
            origin: origin.to_string(),
            timeout: Duration::from_secs(number("timeout", 30)?),
        })
    }

    /// A short name for reports: `http http://127.0.0.1/`.
    pub fn label(&self) -> String {
        match &self.probe {
            Probe::Http { url, .. } => format!("http {url}"),
            Probe::Port { host, port } => format!("port {host}:{port}"),
            Probe::Command { command } => format!("command {command}"),
            Probe::File { path, .. } => format!("file {path}"),
            Probe::Package { name } => format!("package {name}"),
            Probe::Service { name } => format!("service {name}"),
        }
    }

    /// Runs the check on `target`, retrying until its timeout for checks that
    /// wait on a service coming up. `Ok` carries a short detail.
    pub fn run(
        &self,
        target: &Target,
        pins: &BTreeMap<String, Pin>,
    ) -> Result<String, CheckFailed> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let r = self.once(target, pins);
            let retry = matches!(
                self.probe,
                Probe::Http { .. }
                    | Probe::Port { .. }
                    | Probe::Service { .. }
                    | Probe::Command { .. }
            );
            if r.is_ok() || !retry || Instant::now() >= deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn once(&self, target: &Target, pins: &BTreeMap<String, Pin>) -> Result<String, CheckFailed> {
        match &self.probe {
            Probe::Http {
                url,
                status,
                contains,
            } => {
                let (got, body) = http_get(url)?;
                if got != *status {
                    return Err(CheckFailed::Status {
                        got,
                        expected: *status,
                    });
                }
                if let Some(c) = contains
                    && !body.contains(c.as_str())
                {
                    return Err(CheckFailed::Body {
                        got,
                        wanted: c.clone(),
                        start: body.chars().take(200).collect(),
                    });
                }
                Ok(format!("status {got}"))
            }
            Probe::Port { host, port } => {
                let addr: SocketAddr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(CheckFailed::Resolve)?
                    .next()
                    .ok_or(CheckFailed::NoAddress)?;
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map(|_| "listening".to_string())
                    .map_err(CheckFailed::Refused)
            }
            Probe::Command { command } => {
                let out = target
                    .shell(command, &ShellOpts::default())
                    .map_err(CheckFailed::Start)?;
                if out.status.success() {
                    Ok("exit 0".into())
                } else {
                    Err(CheckFailed::Exit {
                        status: out.status,
                        tail: output_tail(&out),
                    })
                }
            }
            Probe::File { path, contains } => {
                let text =
                    target
                        .fs()
                        .read_to_string(path)
                        .map_err(|source| CheckFailed::Unreadable {
                            path: path.clone(),
                            source,
                        })?;
                match contains {
                    Some(c) if !text.contains(c.as_str()) => Err(CheckFailed::Missing {
                        path: path.clone(),
                        wanted: c.clone(),
                    }),
                    _ => Ok("present".into()),
                }
            }
            Probe::Package { name } => {
                let dpkg = Dpkg::read(target);
                let installed = dpkg
                    .installed(name)
                    .ok_or_else(|| CheckFailed::NotInstalled(name.clone()))?;
                match pins.get(name) {
                    Some(pin) if pin.version != installed.version => Err(CheckFailed::OffPin {
                        name: name.clone(),
                        installed: installed.version.clone(),
                        pin: pin.version.clone(),
                        rule: pin.rule.clone(),
                    }),
                    Some(pin) => Ok(format!("at its pin {}", pin.version)),
                    None => Ok(format!("installed {}", installed.version)),
                }
            }
            Probe::Service { name } => {
                let def = type_def("service").expect("service type");
                let spec = Spec {
                    name: name.clone(),
                    props: toml::Table::new(),
                    sensitive: false,
                    secret: false,
                    actions: vec!["start".into()],
                };
                let svc = (def.build)(&spec, &NoFiles).map_err(CheckFailed::Service)?;
                let mut cx = Context::new(target);
                let changes = svc.plan("start", &mut cx)?.changes;
                match changes.iter().find(|c| !c.skipped) {
                    None if changes.is_empty() => Ok("running".into()),
                    None => Err(CheckFailed::CannotRun {
                        name: name.clone(),
                        why: changes[0].summary.clone(),
                    }),
                    Some(_) => Err(CheckFailed::NotRunning(name.clone())),
                }
            }
        }
    }
}

/// A plain HTTP GET: (status, body).
pub(crate) fn http_get(url: &str) -> Result<(u16, String), CheckFailed> {
    let failed = |reason: String| CheckFailed::Http {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .map_err(|e| failed(format!("reading the body: {e}")))?;
    Ok((status, body))
}

/// Verify checks build resources that need no cookbook files.
struct NoFiles;

impl BuildEnv for NoFiles {
    fn cookbook_file(&self, _: &str, source: &str) -> Result<std::sync::Arc<[u8]>, PolicyError> {
        Err(PolicyError::new(format!(
            "no cookbook files here ({source})"
        )))
    }
    fn render_template(
        &self,
        source: &str,
        _: Option<&toml::Table>,
    ) -> Result<String, PolicyError> {
        Err(PolicyError::new(format!("no templates here ({source})")))
    }
    fn pin(&self, _: &str) -> Option<Pin> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Check, PolicyError> {
        let r = Renderer::new(&toml::from_str("[app]\nport = 8080").unwrap());
        Check::parse(&toml::from_str(text).unwrap(), &r, "test")
    }

    #[test]
    fn parses_and_renders() {
        let c = parse("http = \"http://127.0.0.1:{{app.port}}/\"\ncontains = \"shop\"").unwrap();
        assert_eq!(
            c.probe,
            Probe::Http {
                url: "http://127.0.0.1:8080/".into(),
                status: 200,
                contains: Some("shop".into())
            }
        );
        assert_eq!(
            parse("port = 11211").unwrap().label(),
            "port 127.0.0.1:11211"
        );
        assert!(parse("port = 1\nhttp = \"x\"").is_err());
        assert!(parse("prot = 1").is_err());
        assert!(parse("http = \"{{nope}}\"").is_err());
    }

    #[test]
    fn file_and_command_checks_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/x"), "hello world").unwrap();
        let t = Target::at_root(dir.path());
        let pins = BTreeMap::new();
        assert!(
            parse("file = \"/etc/x\"\ncontains = \"world\"")
                .unwrap()
                .run(&t, &pins)
                .is_ok()
        );
        assert!(
            parse("file = \"/etc/x\"\ncontains = \"mars\"")
                .unwrap()
                .run(&t, &pins)
                .is_err()
        );
        let host = Target::host();
        let fail = parse("command = \"exit 3\"\ntimeout = 0")
            .unwrap()
            .run(&host, &pins);
        assert!(fail.unwrap_err().to_string().contains("3"));
    }

    #[test]
    fn port_check_sees_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = parse(&format!("port = {port}\ntimeout = 0")).unwrap();
        assert!(c.run(&Target::host(), &BTreeMap::new()).is_ok());
        // The same port on a loopback address nothing listens on: refused.
        // (Not the dropped port itself: a parallel test may take it again.)
        let elsewhere = parse(&format!(
            "port = {port}
host = \"127.0.0.87\"
timeout = 0"
        ))
        .unwrap();
        assert!(elsewhere.run(&Target::host(), &BTreeMap::new()).is_err());
        drop(l);
    }
}
