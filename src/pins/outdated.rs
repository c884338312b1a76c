//! `outdated` and `stage`: the pins in force on a target against what its
//! sources offer, and newer versions written as a rollout for canaries.

use std::path::Path;

use super::{TargetNode, installed_pins, target_policy};
use crate::engine;
use crate::error::{Error, PolicyError};
use crate::platform::archive::{self, Offer};
use crate::platform::dpkg::Dpkg;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::whitelist_edit::{PinMove, Stage, WhitelistFile, write_stage};

/// One pin in force on a target, against what its sources offer.
#[derive(Debug, serde::Serialize)]
pub struct Outdated {
    pub package: String,
    pub pin: String,
    pub rule: String,
    pub installed: Option<String>,
    /// Newer than the pin, newest first.
    pub newer: Vec<Offer>,
    /// The newest version a security archive offers above the pin.
    pub security_update: Option<String>,
    /// No configured source offers the pinned version any more.
    pub vanished: bool,
    /// Every version the sources offer, newest first.
    pub offered: Vec<Offer>,
}

/// Every pin in force on a target, and its release.
#[derive(Debug)]
pub struct Outdates {
    pub release: String,
    pub rows: Vec<Outdated>,
}

impl Outdates {
    /// Pins no source offers any more.
    pub fn vanished(&self) -> usize {
        self.rows.iter().filter(|r| r.vanished).count()
    }

    /// Pins with a security update.
    pub fn security(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.security_update.is_some())
            .count()
    }
}

fn outdated_rows(target: &Target, policy: &engine::Policy) -> Result<Vec<Outdated>, Error> {
    let pins = installed_pins(policy);
    let names: Vec<String> = pins.keys().cloned().collect();
    let offers = archive::offers(target, &names)?;
    let dpkg = Dpkg::read(target);
    Ok(pins
        .into_iter()
        .map(|(package, pin)| {
            let offered = offers.get(&package).cloned().unwrap_or_default();
            let newer: Vec<Offer> = offered
                .iter()
                .filter(|o| archive::compare(&o.version, &pin.version).is_gt())
                .cloned()
                .collect();
            Outdated {
                installed: dpkg
                    .installed(&package)
                    .filter(|i| i.is_installed())
                    .map(|i| i.version.clone()),
                security_update: newer
                    .iter()
                    .find(|o| o.is_security())
                    .map(|o| o.version.clone()),
                vanished: !offered.iter().any(|o| o.version == pin.version),
                newer,
                offered,
                package,
                pin: pin.version,
                rule: pin.rule,
            }
        })
        .collect())
}

/// For each pin in force on a target: the newer versions its sources
/// offer (security updates marked), and pins no source offers any more.
/// `progress` hears how a throwaway root of another release is made.
pub fn outdated(
    repo: &Path,
    node: &TargetNode,
    progress: &dyn Fn(&str),
) -> Result<Outdates, Error> {
    let mut scratch = None;
    let (target, release, policy) = target_policy(repo, node, true, &mut scratch, progress)?;
    let rows = outdated_rows(&target, &policy)?;
    Ok(Outdates { release, rows })
}

/// What `stage` did.
#[derive(Debug)]
pub struct Staged {
    pub release: String,
    /// Named packages already at the newest version offered: `(package, pin)`.
    pub newest: Vec<(String, String)>,
    /// The pins written into the rollout; none: the whitelist is unchanged.
    pub chosen: Vec<PinMove>,
}

/// Writes `[rollouts.NAME]` with newer versions from the target's sources:
/// by default every security update of a pin in force, else the newest
/// version of each named package. Keeps the file's comments and layout.
pub fn stage(
    repo_dir: &Path,
    node: &TargetNode,
    stage: &Stage,
    progress: &dyn Fn(&str),
) -> Result<Staged, Error> {
    let repo = Repository::open(repo_dir)?;
    let file = WhitelistFile::read(&repo)?;
    stage.check(&file)?;
    let mut scratch = None;
    let (target, release, policy) = target_policy(repo_dir, node, true, &mut scratch, progress)?;
    let rows = outdated_rows(&target, &policy)?;
    let mut chosen: Vec<PinMove> = Vec::new();
    let mut newest = Vec::new();
    for wanted in stage.packages {
        let Some(row) = rows.iter().find(|r| &r.package == wanted) else {
            let known: Vec<&str> = rows.iter().map(|r| r.package.as_str()).collect();
            return Err(
                PolicyError::new(format!("{wanted} is not a package this node installs"))
                    .fix(format!("stage one of: {}", known.join(", ")))
                    .into(),
            );
        };
        match row.newer.first() {
            Some(o) => chosen.push(PinMove {
                package: row.package.clone(),
                from: Some(row.pin.clone()),
                to: o.version.clone(),
            }),
            None => newest.push((wanted.clone(), row.pin.clone())),
        }
    }
    if stage.packages.is_empty() {
        for r in &rows {
            if let Some(v) = &r.security_update {
                chosen.push(PinMove {
                    package: r.package.clone(),
                    from: Some(r.pin.clone()),
                    to: v.clone(),
                });
            }
        }
    }
    if !chosen.is_empty() {
        // Versions read from one release's archive hold for that release only.
        let only = (!file.whitelist.releases.is_empty()).then_some(release.as_str());
        write_stage(&file, stage, only, &chosen)?;
    }
    Ok(Staged {
        release,
        newest,
        chosen,
    })
}
