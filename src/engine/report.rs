//! Run reports: one line per changed resource for people, JSON for
//! machines, and the last runs kept on the target under /var/lib/kiln.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::compile::Policy;
use crate::error::RunError;
use crate::platform::pins::{PinMode, Substitution};
use crate::platform::target::Target;
use crate::resource::fsmeta::{Ids, atomic_write};
use crate::resource::{Change, Planned};

/// Where a target keeps its last run; the agent, `fingerprint`, `whitelist
/// audit` and `fleet status` all read it back.
pub const LAST_RUN: &str = "/var/lib/kiln/last_run.json";
/// The bounded history of runs beside it.
const RUNS: &str = "/var/lib/kiln/runs";
/// When kiln first ran on the target (seconds since the epoch): the history
/// is bounded, and `whitelist audit` tells a base image's packages from
/// those installed later by this time.
const FIRST_RUN: &str = "/var/lib/kiln/first_run";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    UpToDate,
    Updated,
    WouldUpdate,
    Skipped,
    Failed,
    FailedIgnored,
}

/// One resource's entry of a [`Report`]; its fields are in name order too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceReport {
    /// Actions that changed something.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Reading state, guards and applying, for finding slow resources.
    pub elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why this entry exists beyond the run list (a notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub origin: String,
    /// The target moved between the plan and this step (an earlier step
    /// changed it): checked again, it did what it found then, which is
    /// not what the plan said.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replanned: bool,
    pub resource: String,
    pub status: Status,
    /// Whether the resource's path held a secret, now or in the last
    /// run: its diff is then never shown (see [`ResourceReport::redact`]).
    #[serde(skip)]
    hide_diff: bool,
}

impl Policy {
    /// How reports, logs and plans name resource `i`: `type[name]`, or for a
    /// sensitive resource `type[sensitive #N]`, N counting the policy's
    /// distinct sensitive resources in order. That is stable from run to
    /// run of one policy and, unlike a hash of the name, cannot be checked
    /// against a guessed secret. The real id stays in memory for notifications.
    pub fn shown_id(&self, i: usize) -> String {
        let r = &self.resources[i];
        if !r.sensitive {
            return r.id.to_string();
        }
        let mut seen: Vec<&crate::resource::ResourceId> = Vec::new();
        for s in self.resources[..=i].iter().filter(|s| s.sensitive) {
            if !seen.contains(&&s.id) {
                seen.push(&s.id);
            }
        }
        let n = seen.iter().position(|id| **id == r.id).map_or(0, |p| p + 1);
        format!("{}[sensitive #{n}]", r.id.kind)
    }
}

impl ResourceReport {
    /// The entry for resource `i` of `policy`, named as [`Policy::shown_id`] says.
    pub fn new(policy: &Policy, i: usize) -> Self {
        let r = &policy.resources[i];
        ResourceReport {
            resource: policy.shown_id(i),
            origin: format!("{} ({}:{})", r.origin, r.file.display(), r.line),
            status: Status::UpToDate,
            actions: vec![],
            changes: vec![],
            diff: None,
            error: None,
            note: None,
            elapsed_ms: 0.0,
            replanned: false,
            hide_diff: policy.hides_content(r),
        }
    }

    /// The last step before anyone sees the entry: every secret value this
    /// run resolved is taken out of what it says (an error or a command's
    /// output may quote one), and the diff of a path that held a secret
    /// now or in the last run is withheld (it would show the old content).
    pub fn redact(&mut self) {
        if self.hide_diff && self.diff.is_some() {
            self.diff = Some(crate::resource::fsmeta::SUPPRESSED.to_string());
        }
        let scrub = crate::secrets::redact::in_place;
        self.changes.iter_mut().for_each(scrub);
        [&mut self.diff, &mut self.error, &mut self.note]
            .into_iter()
            .flatten()
            .for_each(scrub);
        scrub(&mut self.resource);
        scrub(&mut self.origin);
    }

    pub fn fail(&mut self, e: String) {
        self.status = Status::Failed;
        self.error = Some(e);
    }

    /// Records a planned difference's changes; true when any is a real change.
    pub fn record(&mut self, planned: &Planned) -> bool {
        let mut real = false;
        for c in &planned.changes {
            let Change {
                summary,
                diff,
                skipped,
                ..
            } = c;
            if !*skipped {
                real = true;
                self.actions.push(planned.action.to_string());
                if let Some(d) = diff {
                    self.diff.get_or_insert_with(String::new).push_str(d);
                }
            }
            self.changes.push(summary.clone());
        }
        self.actions.dedup();
        real
    }

    /// The line people see, or nothing for a resource already in place.
    pub fn line(&self) -> Option<String> {
        let tag = match self.status {
            Status::UpToDate if self.replanned => "up to date",
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
        if self.replanned {
            s.push_str("\n    replanned: the target moved since the plan");
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

/// Where a run's entries go, in order: redacted, shown, then kept.
pub struct Sink<'a> {
    pub report: &'a mut Report,
    pub progress: &'a mut dyn FnMut(&ResourceReport),
}

impl Sink<'_> {
    pub fn emit(&mut self, mut entry: ResourceReport) {
        entry.redact();
        (self.progress)(&entry);
        self.report.push(entry);
    }
}

/// A delayed notification an earlier part fired: resource index and action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub resource: usize,
    pub action: String,
}

/// A run report: printed by `converge --json`, kept as [`LAST_RUN`], and
/// read back by whoever needs the target's last run. Fields missing from an
/// older kiln's report take their defaults. The fields are in name order:
/// a report is written straight from this struct, and reads as the sorted
/// object it was when it went through a `serde_json::Value` (test).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The serial of the bundle this run converged, when it came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_serial: Option<u64>,
    pub elapsed_ms: f64,
    pub failed: usize,
    pub fqdn: String,
    pub kiln_version: String,
    /// Every resource the policy manages (`type[name]`), for `kiln fingerprint`;
    /// absent from reports of kilns before it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<Vec<String>>,
    /// A part that stopped at its end (see [`super::apply::Part`]): the
    /// delayed notifications it fired, for the next part to run.
    #[serde(skip)]
    pub pending: Vec<Pending>,
    /// Whether vanished pins were refused (production) or substituted.
    pub pin_mode: PinMode,
    /// A why-run's plan as `converge --why-run --json` adds it (already
    /// redacted); never kept, and absent from the fleet's host reports.
    #[serde(skip)]
    pub plan: Option<serde_json::Value>,
    pub resources: Vec<ResourceReport>,
    pub roles: Vec<String>,
    /// The whitelist's rollouts this host is in (`[rollouts.NAME]`): what
    /// sets it apart from other hosts of its roles on purpose.
    pub rollouts: Vec<String>,
    pub run_list: Vec<String>,
    /// Paths whose content held a secret (in this run, or in an earlier one
    /// and not rewritten since): a later why-run never diffs them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitive_paths: Vec<String>,
    /// So that a later run (the agent's) applies the same size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    pub started_at: u64,
    /// Pins no source offered, and what this run took instead: a declared
    /// difference from the whitelist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub substitutions: Vec<Substitution>,
    pub success: bool,
    pub target: String,
    pub total: usize,
    pub updated: usize,
    pub why_run: bool,
}

/// Why a run report could not be read back or kept.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{} is not a kiln run report: {source}; run kiln converge again to rewrite it", path.display())]
    Foreign {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the run history in {RUNS}: {0}")]
    History(#[source] std::io::Error),
    #[error(transparent)]
    Write(#[from] RunError),
    #[error("cannot encode the run report: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<ReportError> for crate::error::Error {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Write(r) => r.into(),
            e => RunError::platform(e).into(),
        }
    }
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
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            elapsed_ms: 0.0,
            target: target.root().display().to_string(),
            fqdn,
            roles: policy.expanded.role_names(),
            rollouts: policy.rollouts.clone(),
            size: policy.size.clone(),
            run_list: policy
                .expanded
                .recipes
                .iter()
                .map(|(c, r)| format!("recipe[{c}::{r}]"))
                .collect(),
            bundle_serial: None,
            managed: Some(managed_ids(policy)),
            why_run,
            total: policy.resources.len(),
            updated: 0,
            failed: 0,
            success: true,
            pin_mode: PinMode::Strict,
            substitutions: vec![],
            resources: vec![],
            sensitive_paths: policy.hidden_diffs.iter().cloned().collect(),
            plan: None,
            pending: Vec::new(),
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

    /// Drops from `sensitive_paths` each path that this (real) run left
    /// holding the policy's content without a secret: a file resource
    /// that is not sensitive, updated or already up to date there.
    pub fn settle_sensitive_paths(&mut self, policy: &Policy) {
        let still: BTreeSet<&str> = policy
            .resources
            .iter()
            .filter(|r| r.sensitive)
            .map(|r| r.id.name.as_str())
            .collect();
        let settled: BTreeSet<&str> = policy
            .resources
            .iter()
            .filter(|r| !r.sensitive && policy.hides_content(r))
            .filter(|r| {
                let id = r.id.to_string();
                self.resources.iter().any(|e| {
                    e.resource == id
                        && e.note.is_none()
                        && matches!(e.status, Status::Updated | Status::UpToDate)
                })
            })
            .map(|r| r.id.name.as_str())
            .filter(|p| !still.contains(p))
            .collect();
        self.sensitive_paths
            .retain(|p| !settled.contains(p.as_str()));
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
        let rollouts = if self.rollouts.is_empty() {
            String::new()
        } else {
            format!(" (in rollouts: {})", self.rollouts.join(", "))
        };
        format!(
            "kiln: {}/{} resources {verb}, {} failed in {:.1} ms{rollouts}",
            self.updated, self.total, self.failed, self.elapsed_ms
        )
    }

    /// The managed resources this report records: its `managed` list or, in
    /// a report written before that list existed, the ids of its `resources`
    /// entries that are not notifications. None when it records neither.
    pub fn managed_ids(&self) -> Option<Vec<String>> {
        if let Some(ids) = &self.managed {
            return Some(ids.clone());
        }
        if self.resources.is_empty() {
            return None;
        }
        let mut seen = BTreeSet::new();
        Some(
            self.resources
                .iter()
                .filter(|e| e.note.is_none())
                .map(|e| e.resource.clone())
                .filter(|id| seen.insert(id.clone()))
                .collect(),
        )
    }

    /// When kiln first ran on `target`: the recorded time, else the oldest
    /// run it keeps, else its last run; None when kiln never ran there.
    pub fn first_run(target: &Target) -> Option<u64> {
        let tfs = target.fs();
        if let Ok(t) = tfs.read_to_string(FIRST_RUN)
            && let Ok(t) = t.trim().parse()
        {
            return Some(t);
        }
        let oldest = tfs
            .read_dir_nofollow(RUNS)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| is_report_name(n))
            .filter_map(|n| n.split_once('-')?.0.parse::<u64>().ok())
            .min();
        oldest.or_else(|| {
            Report::load_last(target)
                .ok()
                .flatten()
                .map(|r| r.started_at)
        })
    }

    /// The path of the target's last run report, as shown to people.
    pub fn last_run_path(target: &Target) -> PathBuf {
        target.root().join(LAST_RUN.trim_start_matches('/'))
    }

    /// The target's last run, None when it has none; an unreadable or
    /// foreign file is an error that says how to get a new one.
    pub fn load_last(target: &Target) -> Result<Option<Report>, ReportError> {
        let path = Self::last_run_path(target);
        match target.fs().read_to_string(LAST_RUN) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|source| ReportError::Foreign { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ReportError::Unreadable { path, source }),
        }
    }

    /// The paths the target's last run kept as sensitive
    /// ([`Report::sensitive_paths`]), read without the rest of the report
    /// (a converge needs no more of it before it runs): none when there is
    /// no last run or it cannot be read.
    pub fn last_sensitive_paths(target: &Target) -> Vec<String> {
        #[derive(Deserialize)]
        struct Sensitive {
            #[serde(default)]
            sensitive_paths: Vec<String>,
        }
        let text = target.fs().read_to_string(LAST_RUN).unwrap_or_default();
        serde_json::from_str::<Sensitive>(&text).map_or_else(|_| Vec::new(), |s| s.sensitive_paths)
    }

    /// A report as `converge --json` prints it and [`Report::save`] keeps it.
    pub fn parse(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The report as `--json` prints it and [`Report::save`] keeps it, with
    /// every secret value this run resolved taken out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        crate::secrets::redact::json(&mut v);
        v
    }

    /// [`Report::to_json`] as the pretty text [`Report::save`] keeps. A run
    /// that resolved no secret (most) has nothing to take out, and its
    /// report is written straight from the struct: the same text without
    /// a `Value` of some 700 allocations in between.
    fn to_json_text(&self) -> serde_json::Result<Vec<u8>> {
        if crate::secrets::redact::any() {
            return serde_json::to_vec_pretty(&self.to_json());
        }
        // Sized for a report of this many resources (about 250 bytes
        // each): written once, not grown and copied through doubling.
        let mut out = Vec::with_capacity(4096 + 256 * self.resources.len());
        serde_json::to_writer_pretty(&mut out, self)?;
        Ok(out)
    }

    /// Keeps this run as [`LAST_RUN`] and in a bounded history.
    pub fn save(&self, target: &Target) -> Result<(), ReportError> {
        const KEEP: usize = 20;
        let tfs = target.fs();
        let shown = ReportError::History;
        // The history is kiln's own directory: a link planted there is
        // replaced, never followed, so pruning cannot reach elsewhere.
        match tfs.symlink_metadata(RUNS) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                tfs.remove_file(RUNS).map_err(shown)?;
                tfs.create_dir_all(RUNS, 0o755).map_err(shown)?;
            }
            Err(_) => tfs.create_dir_all(RUNS, 0o755).map_err(shown)?,
        }
        if !tfs.exists(FIRST_RUN) {
            // A target converged by a kiln before this file existed: its
            // oldest kept run is the best record of the first.
            let first = Report::first_run(target).unwrap_or(self.started_at);
            atomic_write(
                tfs,
                FIRST_RUN,
                format!("{first}\n").as_bytes(),
                0o644,
                Ids::default(),
            )?;
        }
        let json = self.to_json_text()?;
        let name = format!("{}-{}.json", self.started_at, std::process::id());
        // A run that changed nothing skips the fsyncs, most of a no-op's
        // time: after a power cut the previous report (or an unreadable
        // one, which `load_last` says how to replace) stands until the next
        // run writes this again. A run that changed the host syncs.
        let synced = !(self.updated == 0 && self.success);
        let write = |path: &str| {
            let written = if synced {
                tfs.write_atomic(path, &json, 0o600, Ids::default())
            } else {
                tfs.write_atomic_unsynced(path, &json, 0o600, Ids::default())
            };
            written.map_err(|e| RunError::io("write", path, e))
        };
        let run = format!("{RUNS}/{name}");
        write(&run)?;
        // The last run is the newest of the history under a second name:
        // written once, and the one it replaces is only a name let go. A
        // filesystem without hard links gets a copy.
        if tfs.link_replacing(&run, LAST_RUN, synced).is_err() {
            write(LAST_RUN)?;
        }
        let mut old: Vec<String> = tfs
            .read_dir_nofollow(RUNS)
            .map_err(shown)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| is_report_name(n))
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(KEEP);
        for n in &old[..excess] {
            let _ = tfs.remove_file(format!("{RUNS}/{n}"));
        }
        Ok(())
    }
}

/// Whether `name` is one of the reports [`Report::save`] keeps in
/// `runs/` (`<started_at>-<pid>.json`): pruning removes nothing else.
fn is_report_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(t, p)| {
            [t, p]
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The resources a policy manages, as `type[name]`: every resource with an
/// action other than `nothing`, once each, in policy order. The run report
/// keeps this list so that a later fingerprint needs no policy.
pub fn managed_ids(policy: &Policy) -> Vec<String> {
    let mut seen = BTreeSet::new();
    policy
        .resources
        .iter()
        .filter(|r| r.actions.iter().any(|a| a != "nothing"))
        // A sensitive execute's name would be printed and contributes no
        // part; other types need their real name to read their state.
        .filter(|r| !(r.sensitive && r.id.kind == crate::resource::execute::TYPE.name))
        .map(|r| r.id.to_string())
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// What the policy wants of each managed resource (keyed as in
/// [`managed_ids`]), as one digest of its compiled actions and properties.
/// `kiln fleet status` compares two hosts' fingerprint parts only where
/// these agree: a resource the policy renders per host (a motd with the
/// fqdn) or changes for a rollout is judged against each host's own policy,
/// never against its neighbours. A sensitive resource's digest is keyed
/// with the fingerprint key, so it never lets anyone test guesses of a secret.
pub fn desired_digests(policy: &Policy) -> std::collections::BTreeMap<String, String> {
    use hmac::{KeyInit as _, Mac as _};
    let managed: BTreeSet<String> = managed_ids(policy).into_iter().collect();
    let mut wanted: std::collections::BTreeMap<String, String> = Default::default();
    for r in &policy.resources {
        let id = r.id.to_string();
        if !managed.contains(&id) {
            continue;
        }
        // A resource declared twice (identically) contributes both actions.
        let _ = writeln!(wanted.entry(id).or_default(), "{:?} {:?}", r.actions, r.imp);
    }
    wanted
        .into_iter()
        .map(|(id, bytes)| {
            let sensitive = policy
                .resources
                .iter()
                .any(|r| r.sensitive && r.id.to_string() == id);
            let digest = match (&policy.fingerprint_key, sensitive) {
                (Some(k), true) => {
                    let mut mac =
                        hmac::Hmac::<sha2::Sha256>::new_from_slice(k).expect("any key length");
                    mac.update(bytes.as_bytes());
                    format!("hmac-sha256={}", hex::encode(mac.finalize().into_bytes()))
                }
                _ => format!("sha256={}", crate::digest::sha256_hex(bytes.as_bytes())),
            };
            (crate::resource::state::clean(&id), digest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report written straight from the struct is the text the sorted
    /// `Value` gives: a field added out of name order fails here.
    #[test]
    fn a_report_written_straight_is_the_sorted_object() {
        let every = ResourceReport {
            actions: vec!["create".into()],
            changes: vec!["content".into()],
            diff: Some("-a\n+b".into()),
            elapsed_ms: 0.25,
            error: Some("e".into()),
            note: Some("n".into()),
            origin: "recipe[a::b] (x.toml:1)".into(),
            replanned: true,
            resource: "file[/a]".into(),
            status: Status::Updated,
            hide_diff: false,
        };
        let r = Report {
            bundle_serial: Some(7),
            elapsed_ms: 1.5,
            failed: 1,
            fqdn: "a.example.com".into(),
            kiln_version: "0.1.0".into(),
            managed: Some(vec!["file[/a]".into()]),
            pin_mode: PinMode::Substitute,
            resources: vec![every, ResourceReport::default()],
            roles: vec!["web".into()],
            rollouts: vec!["canary".into()],
            run_list: vec!["recipe[a::b]".into()],
            sensitive_paths: vec!["/etc/s".into()],
            size: Some("small".into()),
            started_at: 1_700_000_000,
            substitutions: vec![Substitution {
                package: "p".into(),
                pin: "1".into(),
                substitute: "2".into(),
            }],
            success: false,
            target: "/".into(),
            total: 2,
            updated: 1,
            why_run: true,
            ..Report::default()
        };
        let through_value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&r).unwrap()).unwrap(),
            serde_json::to_string_pretty(&through_value).unwrap()
        );
        // Every field that is kept is written (none left at a skipped default).
        let kept = through_value.as_object().unwrap().len();
        assert_eq!(kept, 20, "{through_value:#}");
        let entry = &through_value["resources"][0];
        assert_eq!(entry.as_object().unwrap().len(), 10, "{entry:#}");
    }

    #[test]
    fn report_ids_skip_notifications_in_old_reports() {
        let new = Report::parse(
            r#"{"managed": ["file[/a]", "service[x]"], "resources": [{"resource": "file[/b]"}]}"#,
        )
        .unwrap();
        assert_eq!(new.managed_ids().unwrap(), ["file[/a]", "service[x]"]);
        let old = Report::parse(
            r#"{"resources": [
                {"resource": "file[/a]", "status": "updated"},
                {"resource": "service[x]", "status": "up_to_date"},
                {"resource": "service[x]", "status": "updated", "note": "restart (delayed notification)"},
                {"resource": "execute[only-notified]", "status": "updated", "note": "run (notified by file[/a])"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(old.managed_ids().unwrap(), ["file[/a]", "service[x]"]);
        assert!(Report::parse("{}").unwrap().managed_ids().is_none());
    }

    #[test]
    fn a_step_the_run_found_moved_says_so() {
        let mut e = ResourceReport {
            resource: "service[x]".into(),
            status: Status::Updated,
            changes: vec!["enable".into()],
            ..ResourceReport::default()
        };
        assert!(!serde_json::to_string(&e).unwrap().contains("replanned"));
        e.replanned = true;
        assert_eq!(
            e.line().unwrap(),
            "  updated      service[x]: enable\n    replanned: the target moved since the plan"
        );
        assert_eq!(serde_json::to_value(&e).unwrap()["replanned"], true);
        // A change the plan had that the run then found done is shown too.
        e.status = Status::UpToDate;
        e.changes.clear();
        assert!(e.line().unwrap().starts_with("  up to date   service[x]\n"));
    }

    #[test]
    fn a_saved_report_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let t = Target::at_root(d.path());
        assert!(Report::load_last(&t).unwrap().is_none());
        let r = Report {
            fqdn: "a.example".into(),
            roles: vec!["web".into()],
            managed: Some(vec!["file[/a]".into()]),
            updated: 1,
            success: true,
            ..Report::default()
        };
        r.save(&t).unwrap();
        let back = Report::load_last(&t).unwrap().unwrap();
        assert_eq!(back.fqdn, "a.example");
        assert_eq!(back.roles, ["web"]);
        assert_eq!(back.managed_ids().unwrap(), ["file[/a]"]);
        std::fs::write(Report::last_run_path(&t), "not json").unwrap();
        assert!((Report::load_last(&t).unwrap_err().to_string()).contains("kiln converge"));
    }

    #[test]
    fn the_last_run_is_the_newest_of_the_history_under_a_second_name() {
        use std::os::unix::fs::MetadataExt as _;
        let d = tempfile::tempdir().unwrap();
        let t = Target::at_root(d.path());
        let runs = d.path().join("var/lib/kiln/runs");
        let run = |at: u64, updated: usize| Report {
            started_at: at,
            updated,
            success: true,
            ..Report::default()
        };
        // A run that changed something (synced) and then a no-op (not).
        for (at, updated) in [(1000, 1), (1001, 0)] {
            run(at, updated).save(&t).unwrap();
            let newest = runs.join(format!("{at}-{}.json", std::process::id()));
            let (last, kept) = (
                std::fs::metadata(Report::last_run_path(&t)).unwrap(),
                std::fs::metadata(&newest).unwrap(),
            );
            assert_eq!((last.dev(), last.ino()), (kept.dev(), kept.ino()));
            assert_eq!(last.mode() & 0o777, 0o600);
            assert_eq!(Report::load_last(&t).unwrap().unwrap().started_at, at);
        }
        // The run it replaced stays in the history, whole, and no
        // temporary name is left beside either.
        let first = runs.join(format!("1000-{}.json", std::process::id()));
        let text = std::fs::read_to_string(&first).unwrap();
        assert_eq!(Report::parse(&text).unwrap().started_at, 1000);
        assert_eq!(std::fs::metadata(&first).unwrap().nlink(), 1);
        assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 2);
        let kiln: Vec<_> = std::fs::read_dir(d.path().join("var/lib/kiln"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(kiln.is_empty(), "{kiln:?}");
    }

    #[test]
    fn the_last_run_s_sensitive_paths_read_alone() {
        let d = tempfile::tempdir().unwrap();
        let t = Target::at_root(d.path());
        assert!(Report::last_sensitive_paths(&t).is_empty());
        let r = Report {
            sensitive_paths: vec!["/etc/db.conf".into()],
            resources: vec![],
            ..Report::default()
        };
        r.save(&t).unwrap();
        assert_eq!(Report::last_sensitive_paths(&t), ["/etc/db.conf"]);
        // A report whose other parts no longer read as this kiln's still
        // says which paths held a secret: they stay hidden.
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(Report::last_run_path(&t)).unwrap())
                .unwrap();
        v["resources"] = "not a list".into();
        std::fs::write(Report::last_run_path(&t), v.to_string()).unwrap();
        assert!(Report::load_last(&t).is_err());
        assert_eq!(Report::last_sensitive_paths(&t), ["/etc/db.conf"]);
        std::fs::write(Report::last_run_path(&t), "not json").unwrap();
        assert!(Report::last_sensitive_paths(&t).is_empty());
    }

    #[test]
    fn pruning_keeps_to_kiln_s_own_reports_in_its_own_directory() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(root.join("var/lib/kiln")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for i in 0..25 {
            std::fs::write(outside.join(format!("{}-1.json", 1000 + i)), "{}").unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("var/lib/kiln/runs")).unwrap();
        let t = Target::at_root(&root);
        let r = Report {
            started_at: 2000,
            ..Report::default()
        };
        r.save(&t).unwrap();
        // The link was replaced, not followed: nothing outside went.
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 25);
        let runs = root.join("var/lib/kiln/runs");
        assert!(std::fs::symlink_metadata(&runs).unwrap().is_dir());
        // Inside, only names kiln writes are pruned.
        for i in 0..25 {
            std::fs::write(runs.join(format!("{}-1.json", 1000 + i)), "{}").unwrap();
        }
        std::fs::write(runs.join("notes.txt"), "mine").unwrap();
        r.save(&t).unwrap();
        let left = std::fs::read_dir(&runs).unwrap().count();
        assert_eq!(left, 21, "20 reports and the foreign file");
        assert!(runs.join("notes.txt").exists());
        assert!(is_report_name("1700000000-42.json"));
        assert!(!is_report_name("-42.json") && !is_report_name("a-1.json"));
    }
}
