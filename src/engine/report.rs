//! Run reports: one line per changed resource for people, JSON for
//! machines, and the last runs kept on the target under /var/lib/kiln.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::compile::{Compiled, Policy};
use crate::platform::target::Target;
use crate::resource::fsmeta::{Ids, atomic_write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    UpToDate,
    Updated,
    WouldUpdate,
    Skipped,
    Failed,
    FailedIgnored,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub resource: String,
    pub origin: String,
    pub status: Status,
    /// Actions that changed something.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why this entry exists beyond the run list (a notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Reading state, guards and applying, for finding slow resources.
    pub elapsed_ms: f64,
}

impl ResourceReport {
    pub fn new(r: &Compiled) -> Self {
        ResourceReport {
            resource: r.id.to_string(),
            origin: format!("{} ({}:{})", r.origin, r.file.display(), r.line),
            status: Status::UpToDate,
            actions: vec![],
            changes: vec![],
            diff: None,
            error: None,
            note: None,
            elapsed_ms: 0.0,
        }
    }

    pub fn fail(&mut self, e: String) {
        self.status = Status::Failed;
        self.error = Some(e);
    }

    /// The line people see, or nothing for a resource already in place.
    pub fn line(&self) -> Option<String> {
        let tag = match self.status {
            Status::UpToDate => return None,
            Status::Updated => "updated",
            Status::WouldUpdate => "would update",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
            Status::FailedIgnored => "failed (ignored)",
        };
        let mut s = format!("  {tag:<12} {}", self.resource);
        if let Some(n) = &self.note {
            let _ = write!(s, " [{n}]");
        }
        if !self.changes.is_empty() {
            let _ = write!(s, ": {}", self.changes.join(", "));
        }
        if let Some(e) = &self.error {
            let _ = write!(
                s,
                "\n    {}\n    in {}",
                e.replace('\n', "\n    "),
                self.origin
            );
        }
        Some(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kiln_version: &'static str,
    pub started_at: u64,
    pub elapsed_ms: f64,
    pub target: String,
    pub fqdn: String,
    pub roles: Vec<String>,
    /// So that a later run (the agent's) applies the same size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    pub run_list: Vec<String>,
    /// Every resource the policy manages (`type[name]`), for `kiln fingerprint`.
    pub managed: Vec<String>,
    pub why_run: bool,
    pub total: usize,
    pub updated: usize,
    pub failed: usize,
    pub success: bool,
    pub resources: Vec<ResourceReport>,
}

impl Report {
    pub fn new(target: &Target, policy: &Policy, why_run: bool) -> Self {
        let fqdn = policy
            .attributes
            .get("node")
            .and_then(|n| n.get("fqdn"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        Report {
            kiln_version: env!("CARGO_PKG_VERSION"),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            elapsed_ms: 0.0,
            target: target.root().display().to_string(),
            fqdn,
            roles: policy.expanded.role_names(),
            size: policy.size.clone(),
            run_list: policy
                .expanded
                .recipes
                .iter()
                .map(|(c, r)| format!("recipe[{c}::{r}]"))
                .collect(),
            managed: crate::fingerprint::managed_ids(policy),
            why_run,
            total: policy.resources.len(),
            updated: 0,
            failed: 0,
            success: true,
            resources: vec![],
        }
    }

    pub fn push(&mut self, r: ResourceReport) {
        let again = self.resources.iter().any(|x| {
            x.resource == r.resource && matches!(x.status, Status::Updated | Status::WouldUpdate)
        });
        match r.status {
            Status::Updated | Status::WouldUpdate if !again => self.updated += 1,
            Status::Failed => {
                self.failed += 1;
                self.success = false;
            }
            _ => {}
        }
        self.resources.push(r);
    }

    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    }

    pub fn summary(&self) -> String {
        let verb = if self.why_run {
            "would update"
        } else {
            "updated"
        };
        format!(
            "kiln: {}/{} resources {verb}, {} failed in {:.1} ms",
            self.updated, self.total, self.failed, self.elapsed_ms
        )
    }

    /// Keeps this run as `last_run.json` and in a bounded history.
    pub fn save(&self, target: &Target) -> Result<(), String> {
        const KEEP: usize = 20;
        let dir = target.path("/var/lib/kiln");
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs)
            .map_err(|e| format!("cannot create {}: {e}", runs.display()))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let name = format!("{}-{}.json", self.started_at, std::process::id());
        atomic_write(&runs.join(name), &json, 0o600, Ids::default()).map_err(|e| e.to_string())?;
        atomic_write(&dir.join("last_run.json"), &json, 0o600, Ids::default())
            .map_err(|e| e.to_string())?;
        let mut old: Vec<_> = std::fs::read_dir(&runs)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(KEEP);
        for p in &old[..excess] {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}
