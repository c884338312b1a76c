//! `package`: a Debian package at the version the whitelist pins, held
//! there. The engine hands consecutive packages to [`apply_batch`] so that
//! they go in one apt transaction.

use std::cmp::Ordering;

use super::{BuildEnv, Change, Context, Resource, ResourceResult, Spec, TypeDef};
use crate::error::PolicyError;
use crate::platform::apt;
use crate::policy::whitelist::{Pin, valid_version};

pub const TYPE: TypeDef = TypeDef {
    name: "package",
    actions: &["install", "remove", "purge"],
    properties: &[],
    build,
};

#[derive(Debug)]
pub struct Package {
    pub name: String,
    /// `None` only for remove and purge, which need no pin.
    pub pin: Option<Pin>,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let name = &spec.name;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !valid {
        return Err(
            PolicyError::new(format!("{name:?} is not a Debian package name"))
                .fix("name the binary package as apt does, e.g. \"libapache2-mod-php8.2\""),
        );
    }
    let pin = env.pin(name);
    if pin.is_none() && spec.actions.iter().any(|a| a == "install") {
        return Err(PolicyError::new(format!(
            "package {name:?} is not on the whitelist, so kiln will not install it"
        ))
        .fix(format!(
            "pin it in whitelist.toml under [packages]: {name:?} = \"VERSION\" (apt-cache policy {name} shows the versions)"
        )));
    }
    Ok(Box::new(Package {
        name: name.clone(),
        pin,
    }))
}

impl Package {
    fn version(&self) -> ResourceResult<&str> {
        self.pin
            .as_ref()
            .map(|p| p.version.as_str())
            .ok_or_else(|| format!("package {} is not on the whitelist", self.name))
    }
}

impl Resource for Package {
    fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
        let installed = cx.dpkg().installed(&self.name).cloned();
        let present = cx
            .dpkg()
            .packages
            .get(&self.name)
            .is_some_and(|p| p.state != "not-installed");
        Ok(match action {
            "install" => {
                let want = self.version()?;
                match installed {
                    None => vec![Change::new(format!("install {want}"))],
                    Some(cur) if cur.version != want => {
                        let dir = match (valid_version(&cur.version), valid_version(want)) {
                            (Ok(a), Ok(b)) if a.cmp(&b) == Ordering::Greater => "downgrade",
                            _ => "upgrade",
                        };
                        vec![Change::new(format!("{dir} {} -> {want}", cur.version))]
                    }
                    Some(cur) if !cur.is_held() => vec![Change::new(format!("hold at {want}"))],
                    Some(_) => vec![],
                }
            }
            "remove" => match installed {
                Some(cur) => vec![Change::new(format!("remove {}", cur.version))],
                None => vec![],
            },
            "purge" if present => vec![Change::new("purge")],
            _ => vec![],
        })
    }

    fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
        apply_batch(&[(self, action)], cx).remove(0)
    }

    fn package(&self) -> Option<&Package> {
        Some(self)
    }
}

/// Carries out several package actions with as few apt runs as possible:
/// one transaction for every install, one for removals, one for purges.
/// Holds are lifted for the packages that move and set again afterwards,
/// failure or not. Returns one result per item.
pub fn apply_batch(items: &[(&Package, &str)], cx: &mut Context) -> Vec<ResourceResult<()>> {
    let target = cx.target;
    // Decide from the database as it is now, not as planned: what moves,
    // what is held.
    cx.invalidate();
    let before = cx.dpkg().clone();
    let installs: Vec<(String, String)> = items
        .iter()
        .filter(|(_, a)| *a == "install")
        .filter_map(|(p, _)| {
            p.pin
                .as_ref()
                .map(|pin| (p.name.clone(), pin.version.clone()))
        })
        .collect();
    let of = |action: &str| -> Vec<String> {
        items
            .iter()
            .filter(|(_, a)| *a == action)
            .map(|(p, _)| p.name.clone())
            .collect()
    };
    let (removes, purges) = (of("remove"), of("purge"));

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
                .filter(|n| before.packages.get(*n).is_some_and(|i| i.is_held()))
                .cloned(),
        )
        .collect();
    let was_held: Vec<String> = before
        .packages
        .iter()
        .filter(|(_, i)| i.is_held() && i.is_installed())
        .map(|(n, _)| n.clone())
        .collect();

    let mut failure: Option<String> = apt::set_hold(target, &moving, false).err();
    let to_install: Vec<(String, String)> = installs
        .iter()
        .filter(|(n, v)| before.installed(n).is_none_or(|i| &i.version != v))
        .cloned()
        .collect();
    if failure.is_none() && !to_install.is_empty() {
        if !apt::index_knows(target, &to_install)
            && let Err(e) = apt::update(target)
        {
            failure = Some(e);
        }
        if failure.is_none() {
            failure = apt::install(target, &to_install).err();
        }
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
                "install" => p.pin.as_ref().is_some_and(|pin| {
                    now.is_some_and(|i| i.version == pin.version && i.is_held())
                }),
                "remove" => now.is_none(),
                _ => after
                    .packages
                    .get(&p.name)
                    .is_none_or(|i| i.state == "not-installed"),
            };
            if done {
                Ok(())
            } else {
                let state = now.map_or("not installed".to_string(), |i| {
                    format!("installed at {}", i.version)
                });
                Err(format!(
                    "{action} {} did not complete (now {state}): {}",
                    p.name,
                    failure
                        .clone()
                        .unwrap_or_else(|| "apt reported no error".into())
                ))
            }
        })
        .collect()
}
