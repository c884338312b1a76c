//! Pins the archive dropped. Debian keeps one version of a package per
//! suite, and the security archive only its newest, so a pinned version
//! vanishes days after an update is published. Before anything changes,
//! a run makes sure the target's sources offer every pin it is about to
//! install: the index is refreshed, then kiln's own package cache and the
//! whitelist's `[fallback]` sources are tried. What is still missing is
//! refused on production paths, or, for dev VMs and `kiln test`, replaced
//! by the version the sources offer and declared as a substitution.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fallback::Fallback;
use super::target::Target;
use super::{apt, archive, fallback, pincache};
use crate::error::RunError;

/// What a run does with a pin that no source offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinMode {
    /// Production (`converge`, `fleet converge`, `agent`): refuse before
    /// anything changes.
    #[default]
    Strict,
    /// Dev VMs and `kiln test` (and `converge --substitute-vanished-pins`):
    /// take the version the target's sources offer, and say so.
    Substitute,
}

/// A pinned version no source offered, and what stood in for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitution {
    pub package: String,
    pub pin: String,
    pub substitute: String,
}

impl fmt::Display for Substitution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.package, self.pin, self.substitute)
    }
}

/// The warning people see for `subs`, with the policy fix.
pub fn warning(subs: &[Substitution], release: &str) -> String {
    let list: Vec<String> = subs.iter().map(ToString::to_string).collect();
    let names: Vec<&str> = subs.iter().map(|s| s.package.as_str()).collect();
    format!(
        "no source offers {} pinned version(s) any more; substituted what the sources offer \
         (pin -> substitute): {}. This target now differs from the whitelist: fix the policy \
         with `kiln whitelist stage NAME {} --release {release}` (canaries first), then \
         `kiln whitelist promote NAME`; --strict-pins refuses instead",
        subs.len(),
        list.join(", "),
        names.join(" ")
    )
}

/// Where the pins' versions may come from, besides the target's sources.
pub struct Sources<'a> {
    pub fallback: Option<&'a Fallback>,
    /// The policy repository that holds the fallback's key files.
    pub repo: &'a Path,
    /// The run may change the target's sources and index (not why-run).
    pub change: bool,
    /// Before the plan: a package no source knows at all is left to the
    /// package's own turn, since a source the policy adds on the way (an
    /// `apt_repository`) may carry it; nothing could stand in for it anyway.
    pub defer_unknown: bool,
}

/// Makes the target's sources offer every `(name, version)` of `pins`, and
/// returns the substitutions `mode` allows for those still missing. `pins`
/// are the pins the run is about to install (not already installed at
/// their version): with none, nothing runs at all.
pub fn ensure(
    target: &Target,
    pins: &[(String, String)],
    installed: &dyn Fn(&str) -> Option<String>,
    sources: &Sources,
    mode: PinMode,
) -> Result<Vec<Substitution>, RunError> {
    if pins.is_empty() || apt::index_knows(target, pins) {
        return Ok(Vec::new());
    }
    let mut fallback_failed: Option<fallback::FallbackError> = None;
    if !sources.change {
        // Why-run reads the index as it is; without one it cannot tell.
        if !apt::index_knows(target, &[]) {
            return Ok(Vec::new());
        }
    } else {
        // Offline (a sandbox, a VM without network), substitution goes on
        // with the index at hand, or none.
        match apt::update(target) {
            Err(e) if mode == PinMode::Strict => return Err(e),
            _ => {}
        }
        if apt::index_knows(target, pins) {
            return Ok(Vec::new());
        }
        if apt::index_knows(target, &[]) {
            let missing = missing(target, pins)?;
            if pincache::serve(target, &missing)? {
                let _ = apt::update_one(target, pincache::SOURCES);
                if apt::index_knows(target, pins) {
                    return Ok(Vec::new());
                }
            }
        }
        if let Some(fb) = sources.fallback {
            match fallback::install(target, fb, sources.repo) {
                Ok(false) => {}
                Ok(true) => {
                    if apt::index_knows(target, pins) {
                        return Ok(Vec::new());
                    }
                    // No help: taken out again, so that no later apt-get
                    // update depends on a source this run did not need.
                    fallback::remove(target, fb);
                }
                // Unreachable or refused (install took it back out): the
                // ordinary sources decide, and the refusal says why.
                Err(e) => fallback_failed = Some(e),
            }
        }
        if !apt::index_knows(target, &[]) {
            // No index could be had: what is installed stands in, and a
            // package not installed cannot be had at all.
            return pins
                .iter()
                .map(|(name, pin)| match installed(name) {
                    Some(substitute) => Ok(Substitution {
                        package: name.clone(),
                        pin: pin.clone(),
                        substitute,
                    }),
                    None => Err(RunError::precondition(format!(
                        "{name} {pin} is not installed and the target has no package index \
                         (apt-get update failed)"
                    ))
                    .fix("give the target a network path to its apt sources, then run again")),
                })
                .collect();
        }
    }
    let names: Vec<String> = pins.iter().map(|(n, _)| n.clone()).collect();
    let offers = archive::offers(target, &names)?;
    let vanished = not_offered(pins, &offers, sources.defer_unknown);
    if vanished.is_empty() {
        return Ok(Vec::new());
    }
    let refused = || {
        vanished_error(
            &vanished,
            &offers,
            sources.fallback.is_some(),
            fallback_failed.as_ref(),
        )
    };
    if mode == PinMode::Strict {
        return Err(refused());
    }
    let mut subs = Vec::new();
    for (name, pin) in &vanished {
        // The newest the sources offer is apt's candidate; offline, what
        // is installed stands in until the sources can be read.
        let substitute = offers
            .get(name)
            .and_then(|o| o.first())
            .map(|o| o.version.clone())
            .or_else(|| installed(name));
        match substitute {
            Some(substitute) => subs.push(Substitution {
                package: name.clone(),
                pin: pin.clone(),
                substitute,
            }),
            None => return Err(refused()),
        }
    }
    Ok(subs)
}

/// The pins whose version the target's index does not list.
fn missing(target: &Target, pins: &[(String, String)]) -> Result<Vec<(String, String)>, RunError> {
    let names: Vec<String> = pins.iter().map(|(n, _)| n.clone()).collect();
    let offers = archive::offers(target, &names)?;
    Ok(not_offered(pins, &offers, false)
        .into_iter()
        .cloned()
        .collect())
}

/// The pins `offers` lacks; with `defer_unknown`, not those of a package
/// no source knows at all.
fn not_offered<'p>(
    pins: &'p [(String, String)],
    offers: &BTreeMap<String, Vec<archive::Offer>>,
    defer_unknown: bool,
) -> Vec<&'p (String, String)> {
    pins.iter()
        .filter(|(n, v)| {
            let o = offers.get(n).map_or(&[][..], Vec::as_slice);
            let offered = o.iter().any(|o| &o.version == v);
            let deferred = defer_unknown && o.is_empty();
            !offered && !deferred
        })
        .collect()
}

/// kiln's one message for a pin that no source offers.
fn vanished_error(
    vanished: &[&(String, String)],
    offers: &BTreeMap<String, Vec<archive::Offer>>,
    has_fallback: bool,
    fallback_failed: Option<&fallback::FallbackError>,
) -> RunError {
    let list: Vec<String> = vanished
        .iter()
        .map(|(n, v)| {
            let have: Vec<&str> = offers
                .get(n)
                .map(|o| o.iter().map(|o| o.version.as_str()).collect())
                .unwrap_or_default();
            format!(
                "{n} {v} (offered: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )
        })
        .collect();
    let tried = if has_fallback {
        "the ordinary sources, kiln's package cache and the whitelist's [fallback] sources"
    } else {
        "the target's apt sources and kiln's package cache"
    };
    let why = fallback_failed.map_or(String::new(), |e| {
        format!("; the [fallback] sources could not be used: {e}")
    });
    RunError::precondition(format!(
        "no source offers the pinned version of {}: {tried} do not carry it{why}",
        list.join("; ")
    ))
    .fix(
        "pin a version that is offered (kiln whitelist outdated lists them; kiln whitelist \
         stage and promote move the pin), or name a fallback in whitelist.toml: [fallback] \
         snapshot = \"YYYYMMDDTHHMMSSZ\", or [[fallback.mirrors]] with a repository written \
         by kiln whitelist mirror",
    )
}

/// `pins` with each substitution in place of its pin.
pub fn substituted(pins: &[(String, String)], subs: &[Substitution]) -> Vec<(String, String)> {
    pins.iter()
        .map(|(n, v)| match subs.iter().find(|s| &s.package == n) {
            Some(s) => (n.clone(), s.substitute.clone()),
            None => (n.clone(), v.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_names_each_pin_and_the_fix() {
        let subs = [Substitution {
            package: "sudo".into(),
            pin: "1.9.16p2-3+deb13u2".into(),
            substitute: "1.9.16p2-3+deb13u5".into(),
        }];
        let w = warning(&subs, "trixie");
        assert!(
            w.contains("sudo 1.9.16p2-3+deb13u2 -> 1.9.16p2-3+deb13u5"),
            "{w}"
        );
        assert!(
            w.contains("kiln whitelist stage NAME sudo --release trixie"),
            "{w}"
        );
        assert!(w.contains("kiln whitelist promote NAME"), "{w}");
        let pins = [("sudo".to_string(), "1.9.16p2-3+deb13u2".to_string())];
        assert_eq!(substituted(&pins, &subs)[0].1, "1.9.16p2-3+deb13u5");
    }

    #[test]
    fn a_package_no_source_knows_waits_for_its_turn_only_before_the_plan() {
        let offer = |v: &str| archive::Offer {
            version: v.into(),
            suites: vec!["trixie/main".into()],
        };
        let offers = BTreeMap::from([
            ("sudo".to_string(), vec![offer("2"), offer("1")]),
            ("own".to_string(), vec![]),
        ]);
        let pins = [
            ("sudo".to_string(), "1".to_string()),
            ("sudo-ldap".to_string(), "1".to_string()),
            ("own".to_string(), "1".to_string()),
            ("sudo".to_string(), "0".to_string()),
        ];
        let names = |v: Vec<&(String, String)>| -> Vec<String> {
            v.iter().map(|(n, v)| format!("{n}={v}")).collect()
        };
        assert_eq!(
            names(not_offered(&pins, &offers, false)),
            ["sudo-ldap=1", "own=1", "sudo=0"]
        );
        assert_eq!(names(not_offered(&pins, &offers, true)), ["sudo=0"]);
    }
}
