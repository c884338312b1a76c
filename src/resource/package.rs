//! `package`: a Debian package at the version the whitelist pins, held
//! there. Packages batch (see [`Converge::BATCHES`]): the engine hands
//! consecutive ones over together so that they go in one apt transaction.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use super::{
    Action, BatchItem, BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State,
    TypeDef, actions,
};
use std::sync::Arc;

use super::state::clean;
use crate::error::{PolicyError, RunError};
use crate::platform::{apt, pins, siblings};
use crate::policy::whitelist::{FallbackSource, Pin, is_package_name, valid_version};

pub const TYPE: TypeDef = TypeDef::of::<Package>("package", &[], build);

#[derive(Debug)]
pub struct Package {
    pub name: String,
    /// `None` only for remove and purge, which need no pin.
    pub pin: Option<Pin>,
    /// Where pinned versions come from once the ordinary sources dropped them.
    pub fallback: Option<Arc<FallbackSource>>,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let name = &spec.name;
    if !is_package_name(name) {
        return Err(
            PolicyError::new(format!("{name:?} is not a Debian package name"))
                .fix("name the binary package as apt does, e.g. \"libapache2-mod-php8.2\""),
        );
    }
    let pin = env.pin(name);
    let installs = spec
        .actions
        .iter()
        .any(|a| PackageAction::parse(a) == Some(PackageAction::Install));
    if pin.is_none() && installs {
        return Err(PolicyError::new(format!(
            "package {name:?} is not on the whitelist, so kiln will not install it"
        ))
        .fix(format!(
            "pin it in whitelist.toml under [packages] (or [releases.CODENAME.packages] when it differs per release): {name:?} = \"VERSION\" (apt-cache policy {name} shows the versions)"
        )));
    }
    Ok(Box::new(Package {
        name: name.clone(),
        pin,
        fallback: env.fallback(),
    }))
}

actions! {
    pub enum PackageAction {
        Install = "install",
        Remove = "remove",
        Purge = "purge",
    }
}

/// How a package differs from its pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PackageChange {
    Install {
        version: String,
    },
    /// `downgrade` when the pin is older than what is installed.
    Move {
        downgrade: bool,
        from: String,
        to: String,
    },
    Hold {
        version: String,
    },
    Remove {
        version: String,
    },
    Purge,
    /// A binary package built from the same source, moving with the pin.
    Sibling {
        name: String,
        follows: String,
        from: Option<String>,
        to: String,
    },
}

impl fmt::Display for PackageChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageChange::Install { version } => write!(f, "install {version}"),
            PackageChange::Move {
                downgrade,
                from,
                to,
            } => {
                let dir = if *downgrade { "downgrade" } else { "upgrade" };
                write!(f, "{dir} {from} -> {to}")
            }
            PackageChange::Hold { version } => write!(f, "hold at {version}"),
            PackageChange::Remove { version } => write!(f, "remove {version}"),
            PackageChange::Purge => write!(f, "purge"),
            PackageChange::Sibling {
                name,
                follows,
                from: Some(from),
                to,
            } => write!(f, "{name} follows {follows}: {from} -> {to}"),
            PackageChange::Sibling {
                name,
                follows,
                from: None,
                to,
            } => write!(f, "{name} follows {follows}: install {to}"),
        }
    }
}

impl Item for PackageChange {
    /// A hold only marks the installed version in dpkg: the files on disk,
    /// and so the daemons a package carries, stay as they were. Every
    /// change of version (install, upgrade, downgrade, a sibling, removal)
    /// does replace them, and notifies.
    fn notifies(&self) -> bool {
        !matches!(self, PackageChange::Hold { .. })
    }
}

impl Package {
    /// The version this run installs: the pin, or what stands in for it.
    fn version(&self, cx: &Context) -> ResourceResult<String> {
        let pin = self.pin.as_ref().ok_or_else(|| {
            RunError::precondition(format!("package {} is not on the whitelist", self.name))
        })?;
        Ok(cx
            .substitutes
            .get(&self.name)
            .unwrap_or(&pin.version)
            .clone())
    }
}

impl Converge for Package {
    type Action = PackageAction;
    type Item = PackageChange;

    fn check(&self, action: PackageAction, cx: &mut Context) -> ResourceResult<Vec<PackageChange>> {
        // Its version and hold alone: the record stays where dpkg's status is.
        let installed = (cx.dpkg().installed(&self.name)).map(|i| (i.version.clone(), i.is_held()));
        Ok(match action {
            PackageAction::Install => {
                let want = self.version(cx)?;
                let mut changes = match installed {
                    None => vec![PackageChange::Install {
                        version: want.clone(),
                    }],
                    Some((cur, _)) if cur != want => {
                        let downgrade = matches!(
                            (valid_version(&cur), valid_version(&want)),
                            (Ok(a), Ok(b)) if a.cmp(&b) == Ordering::Greater
                        );
                        vec![PackageChange::Move {
                            downgrade,
                            from: cur,
                            to: want.clone(),
                        }]
                    }
                    Some((_, false)) => vec![PackageChange::Hold {
                        version: want.clone(),
                    }],
                    Some(_) => vec![],
                };
                // Only when the pin moves: the no-op path asks apt nothing.
                if matches!(
                    changes.first(),
                    Some(PackageChange::Install { .. } | PackageChange::Move { .. })
                ) && apt::index_knows(cx.target, &[])
                {
                    let dpkg = cx.dpkg().clone();
                    let pin = [(self.name.clone(), want)];
                    for s in siblings::resolve(cx.target, &pin, &dpkg)? {
                        if s.installed.as_deref() != Some(s.version.as_str()) {
                            changes.push(PackageChange::Sibling {
                                name: s.name,
                                follows: s.follows,
                                from: s.installed,
                                to: s.version,
                            });
                        }
                    }
                }
                changes
            }
            PackageAction::Remove => match installed {
                Some((version, _)) => vec![PackageChange::Remove { version }],
                None => vec![],
            },
            PackageAction::Purge => {
                let present = cx
                    .dpkg()
                    .get(&self.name)
                    .is_some_and(|p| p.state != "not-installed");
                if present {
                    vec![PackageChange::Purge]
                } else {
                    vec![]
                }
            }
        })
    }

    fn apply(
        &self,
        action: PackageAction,
        diff: &[PackageChange],
        cx: &mut Context,
    ) -> ResourceResult<()> {
        <Self as Converge>::apply_batch(&[(self, action, diff)], cx).remove(0)
    }

    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        Some(match state.dpkg().get(name) {
            None => "absent".to_string(),
            Some(p) if p.is_installed() => format!("version={}", clean(&p.version)),
            Some(p) => format!("state={} version={}", clean(&p.state), clean(&p.version)),
        })
    }

    const BATCHES: bool = true;

    /// One apt transaction for all. The planned differences say which
    /// packages take part and how; what moves and what is held is decided
    /// from the dpkg database as it is now, since an earlier package of
    /// the same run may have moved a dependency.
    fn apply_batch(items: &[BatchItem<'_, Self>], cx: &mut Context) -> Vec<ResourceResult<()>> {
        let items: Vec<(&Package, PackageAction)> =
            items.iter().map(|(p, a, _)| (*p, *a)).collect();
        apply_batch(&items, cx)
    }
}

/// Carries out several package actions with as few apt runs as possible:
/// one transaction for every install, one for removals, one for purges.
/// Holds are lifted for the packages that move and set again afterwards,
/// failure or not. Returns one result per item.
fn apply_batch(items: &[(&Package, PackageAction)], cx: &mut Context) -> Vec<ResourceResult<()>> {
    let target = cx.target;
    // Decide from the database as it is now, not as planned: what moves,
    // what is held.
    cx.invalidate();
    let before = cx.dpkg().clone();
    let installs: Vec<(String, String)> = items
        .iter()
        .filter(|(_, a)| *a == PackageAction::Install)
        .filter_map(|(p, _)| p.version(cx).ok().map(|v| (p.name.clone(), v)))
        .collect();
    let of = |action: PackageAction| -> Vec<String> {
        items
            .iter()
            .filter(|(_, a)| *a == action)
            .map(|(p, _)| p.name.clone())
            .collect()
    };
    let (removes, purges) = (of(PackageAction::Remove), of(PackageAction::Purge));

    // Moving a held package needs its hold lifted first.
    let moving: Vec<String> = installs
        .iter()
        .filter(|(n, v)| {
            before
                .installed(n)
                .is_some_and(|i| i.is_held() && &i.version != v)
        })
        .map(|(n, _)| n.clone())
        .chain(
            removes
                .iter()
                .chain(&purges)
                .filter(|n| before.get(n).is_some_and(|i| i.is_held()))
                .cloned(),
        )
        .collect();
    let was_held: Vec<String> = before
        .iter()
        .filter(|(_, i)| i.is_held() && i.is_installed())
        .map(|(n, _)| n.to_string())
        .collect();

    let mut to_install: Vec<(String, String)> = installs
        .iter()
        .filter(|(n, v)| before.installed(n).is_none_or(|i| &i.version != v))
        .cloned()
        .collect();
    // Every pin must be offered, and its siblings follow it, before apt
    // changes anything.
    let fallback = items.iter().find_map(|(p, _)| p.fallback.clone());
    let mut failure: Option<RunError> = None;
    let mut sibling_pins: Vec<(String, String)> = Vec::new();
    if !to_install.is_empty() {
        let sources = fallback.as_deref().map(|fb| pins::Sources {
            fallback: Some(&fb.fallback),
            repo: &fb.repo,
            change: true,
            defer_unknown: false,
        });
        let none = pins::Sources {
            fallback: None,
            repo: std::path::Path::new("."),
            change: true,
            defer_unknown: false,
        };
        // Substitutions were decided before the plan: here every version
        // must be offered as it stands.
        let installed = |_: &str| None;
        match pins::ensure(
            target,
            &to_install,
            &installed,
            sources.as_ref().unwrap_or(&none),
            pins::PinMode::Strict,
        )
        .and_then(|_| siblings::resolve(target, &to_install, &before).map_err(RunError::from))
        {
            Ok(sibs) => {
                sibling_pins = sibs.into_iter().map(|s| (s.name, s.version)).collect();
            }
            Err(e) => failure = Some(e),
        }
    }
    let moving_siblings = sibling_pins
        .iter()
        .filter(|(n, v)| before.installed(n).is_none_or(|i| &i.version != v));
    let moving: Vec<String> = moving
        .into_iter()
        .chain(
            moving_siblings
                .clone()
                .filter(|(n, _)| before.installed(n).is_some_and(|i| i.is_held()))
                .map(|(n, _)| n.clone()),
        )
        .collect();
    to_install.extend(moving_siblings.cloned());
    if failure.is_none() {
        failure = apt::set_hold(target, &moving, false).err();
    }
    if failure.is_none() && !to_install.is_empty() {
        failure = apt::install(target, &to_install).err();
    }
    if failure.is_none() && !removes.is_empty() {
        failure = apt::remove(target, &removes, false).err();
    }
    if failure.is_none() && !purges.is_empty() {
        failure = apt::remove(target, &purges, true).err();
    }

    // Hold what is now at its pin, and what was held before and is still there.
    cx.invalidate();
    let after = cx.dpkg().clone();
    let mut hold: Vec<String> = installs
        .iter()
        .chain(&sibling_pins)
        .filter(|(n, v)| {
            after
                .installed(n)
                .is_some_and(|i| &i.version == v && !i.is_held())
        })
        .map(|(n, _)| n.clone())
        .collect();
    hold.extend(was_held.into_iter().filter(|n| {
        after.installed(n).is_some_and(|i| !i.is_held())
            && !removes.contains(n)
            && !purges.contains(n)
    }));
    hold.sort();
    hold.dedup();
    if let Err(e) = apt::set_hold(target, &hold, true) {
        failure.get_or_insert(e);
    }
    cx.invalidate();
    let after = cx.dpkg().clone();

    // Each item's own outcome, as dpkg left it.
    items
        .iter()
        .map(|(p, action)| {
            let now = after.installed(&p.name);
            let done = match *action {
                PackageAction::Install => installs
                    .iter()
                    .find(|(n, _)| n == &p.name)
                    .is_some_and(|(_, v)| now.is_some_and(|i| &i.version == v && i.is_held())),
                PackageAction::Remove => now.is_none(),
                PackageAction::Purge => after
                    .get(&p.name)
                    .is_none_or(|i| i.state == "not-installed"),
            };
            if done {
                Ok(())
            } else {
                let state = now.map_or("not installed".to_string(), |i| {
                    format!("installed at {}", i.version)
                });
                let what = format!(
                    "{} {} did not complete (now {state})",
                    action.name(),
                    p.name
                );
                Err(match &failure {
                    Some(e) => e.clone().context(what),
                    None => RunError::precondition(format!(
                        "{what}: apt reported no error ({})",
                        asked(&p.name, &to_install, &before)
                    )),
                })
            }
        })
        .collect()
}

/// What this run asked of apt for `name`, and what dpkg showed before:
/// the evidence for a transaction that ended elsewhere than asked.
fn asked(
    name: &str,
    to_install: &[(String, String)],
    before: &crate::platform::dpkg::Dpkg,
) -> String {
    let was = before.get(name).map_or("absent".to_string(), |i| {
        format!("{} {} {}", i.version, i.want, i.state)
    });
    match to_install.iter().find(|(n, _)| n == name) {
        Some((_, v)) => format!("asked for {name}={v}; dpkg had {was}"),
        None => format!("nothing asked of apt, since dpkg had {was}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_version_notifies() {
        let v = |s: &str| s.to_string();
        let loud = [
            PackageChange::Install { version: v("1") },
            PackageChange::Move {
                downgrade: true,
                from: v("2"),
                to: v("1"),
            },
            PackageChange::Remove { version: v("1") },
            PackageChange::Purge,
            PackageChange::Sibling {
                name: v("b"),
                follows: v("a"),
                from: None,
                to: v("1"),
            },
        ];
        assert!(loud.iter().all(Item::notifies));
        assert!(!PackageChange::Hold { version: v("1") }.notifies());
    }
}
