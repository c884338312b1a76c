//! `kiln report`: questions about the fleet, answered by `kiln server`'s
//! store instead of by each host.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::server::client::Reader;
use crate::store::drift::Drift;
use crate::store::{HostQuery, HostRow, PackageHost, RefusalCount, RunRow};
use crate::text::terminal_safe;

/// Where the store is and how to read it.
pub struct Server {
    pub url: String,
    pub token_file: PathBuf,
    pub json: bool,
}

pub enum Question {
    Hosts(HostQuery),
    Package {
        name: String,
        version: Option<String>,
    },
    Runs {
        fqdn: String,
        since: Option<Duration>,
    },
    Drift {
        role: Option<String>,
    },
    /// A rollout of the whitelist in `repo`.
    Rollout {
        name: String,
        repo: PathBuf,
    },
    Refusals,
}

pub(crate) fn reader(s: &Server) -> Result<Reader, Error> {
    let token = std::fs::read_to_string(&s.token_file).map_err(|e| {
        Error::Usage(format!(
            "cannot read the server's token from {}: {e}; pass --token-file FILE",
            s.token_file.display()
        ))
    })?;
    Ok(Reader {
        base: s.url.clone(),
        token: token.trim().to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn failed(e: crate::server::client::ClientError) -> Error {
    Error::Run(crate::error::RunError::platform(e))
}

pub fn run(s: &Server, q: Question) -> Result<i32, Error> {
    let r = reader(s)?;
    let mut out = std::io::stdout().lock();
    let text = match q {
        Question::Hosts(q) => {
            let mut args = Vec::new();
            if let Some(role) = &q.role {
                args.push(("role", role.clone()));
            }
            if let Some(release) = &q.release {
                args.push(("release", release.clone()));
            }
            if q.failed {
                args.push(("failed", "1".into()));
            }
            if q.stale {
                args.push(("stale", "1".into()));
            }
            let hosts: Vec<HostRow> = r.get("/api/v1/hosts", &args).map_err(failed)?;
            if s.json {
                serde_json::to_string_pretty(&hosts).unwrap_or_default()
            } else {
                hosts_table(&hosts, unix_now())
            }
        }
        Question::Package { name, version } => {
            let args: Vec<(&str, String)> =
                version.iter().map(|v| ("version", v.clone())).collect();
            let hosts: Vec<PackageHost> = r
                .get(&format!("/api/v1/packages/{name}"), &args)
                .map_err(failed)?;
            if s.json {
                serde_json::to_string_pretty(&hosts).unwrap_or_default()
            } else {
                hosts
                    .iter()
                    .map(|h| {
                        let version = if h.version.is_empty() {
                            "(not installed)"
                        } else {
                            &h.version
                        };
                        let held = if h.held { "held" } else { "not held" };
                        format!("{:<40} {name} {version} {held}\n", h.fqdn)
                    })
                    .collect()
            }
        }
        Question::Runs { fqdn, since } => {
            let from = since.map_or(0, |d| unix_now().saturating_sub(d.as_secs()));
            let runs: Vec<RunRow> = r
                .get(
                    &format!("/api/v1/hosts/{fqdn}/runs"),
                    &[("since", from.to_string())],
                )
                .map_err(failed)?;
            if s.json {
                serde_json::to_string_pretty(&runs).unwrap_or_default()
            } else {
                runs_text(&runs)
            }
        }
        Question::Rollout { name, repo } => {
            let repo = crate::policy::Repository::open(&repo)?;
            let whitelist = crate::policy::whitelist::Whitelist::load(&repo)?;
            let Some(rollout) = whitelist.rollouts.get(&name) else {
                let known: Vec<&String> = whitelist.rollouts.keys().collect();
                return Err(Error::Usage(format!(
                    "the whitelist has no rollout {name:?}; its rollouts: {known:?}"
                )));
            };
            let hosts: Vec<HostRow> = r.get("/api/v1/hosts", &[]).map_err(failed)?;
            let mut installed = std::collections::BTreeMap::new();
            for p in rollout.packages.keys() {
                let at: Vec<PackageHost> = r
                    .get(&format!("/api/v1/packages/{p}"), &[])
                    .map_err(failed)?;
                installed.insert(p.clone(), at);
            }
            let p = crate::store::rollout::progress(&name, rollout, &hosts, &installed);
            if s.json {
                serde_json::to_string_pretty(&p).unwrap_or_default()
            } else {
                let mut t = format!(
                    "rollout {name}: {} of {} matching hosts report its versions\n",
                    p.done,
                    p.hosts.len()
                );
                for h in &p.hosts {
                    let found: Vec<String> = h
                        .found
                        .iter()
                        .map(|(k, v)| format!("{k} {}", if v.is_empty() { "(none)" } else { v }))
                        .collect();
                    let mark = if h.done { "done" } else { "not yet" };
                    t.push_str(&format!(
                        "  {:<40} {mark:<8} {}\n",
                        h.fqdn,
                        found.join(", ")
                    ));
                }
                t
            }
        }
        Question::Drift { role } => {
            let args: Vec<(&str, String)> = role.iter().map(|r| ("role", r.clone())).collect();
            let rows: Vec<Drift> = r.get("/api/v1/drift", &args).map_err(failed)?;
            if s.json {
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            } else {
                drift_text(&rows)
            }
        }
        Question::Refusals => {
            let rows: Vec<RefusalCount> = r.get("/api/v1/refusals", &[]).map_err(failed)?;
            if s.json {
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            } else {
                rows.iter()
                    .map(|c| format!("{:<14} {:>8}  last: {}\n", c.reason, c.count, c.last_detail))
                    .collect()
            }
        }
    };
    let _ = write!(out, "{}", terminal_safe(&text));
    if s.json {
        let _ = writeln!(out);
    }
    Ok(0)
}

fn hosts_table(hosts: &[HostRow], now: u64) -> String {
    let mut s = String::new();
    for h in hosts {
        let state = if h.success { "ok" } else { "FAILED" };
        let stale = if h.stale { " STALE" } else { "" };
        s.push_str(&format!(
            "{:<40} {:<10} {:<24} {state:<6} {} updated, {} failed, {}{stale}\n",
            h.fqdn,
            h.release,
            h.roles.join(","),
            h.updated,
            h.failed,
            crate::store::ago(now, h.started_at),
        ));
    }
    s
}

fn runs_text(runs: &[RunRow]) -> String {
    let mut s = String::new();
    for r in runs {
        let state = if r.success { "ok" } else { "FAILED" };
        s.push_str(&format!(
            "run {} at {} ({state}, {} updated, {} failed)\n",
            r.run_id,
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.started_at)),
            r.updated,
            r.failed
        ));
        for c in &r.changes {
            s.push_str(&format!("  {:<12} {}", c.status, c.resource));
            if !c.changes.is_empty() {
                s.push_str(&format!(": {}", c.changes.join(", ")));
            }
            s.push('\n');
            if let Some(e) = &c.error {
                s.push_str(&format!("    {}\n", e.replace('\n', "\n    ")));
            }
        }
    }
    s
}

fn drift_text(rows: &[Drift]) -> String {
    let mut s = String::new();
    for d in rows {
        s.push_str(&format!(
            "{} ({}, {}): differs from {} of {} hosts since run {} at {}\n",
            d.fqdn,
            d.roles.join(","),
            d.release,
            d.with_majority,
            d.group_size,
            d.since_run.as_deref().unwrap_or_default(),
            humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(d.since.unwrap_or_default())
            ),
        ));
        for p in &d.parts {
            let none = "(absent)";
            s.push_str(&format!(
                "  {}: {} (most: {})\n",
                p.resource,
                p.found.as_deref().unwrap_or(none),
                p.expected.as_deref().unwrap_or(none)
            ));
        }
    }
    s
}
