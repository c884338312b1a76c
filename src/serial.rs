//! Rollback protection. A bundle's signature makes it trusted, but an old
//! bundle stays validly signed forever: a bundle server (or anyone between
//! it and a host) could serve last month's policy again. So a bundle says
//! of itself, in a member the signature covers ([`META`]), which serial it
//! is and when it was made, and a host records the newest serial it
//! converged ([`RECORD`], kiln's own state, apart from any bundle cache)
//! and refuses an older one. A policy rollback is a new bundle of the old
//! policy, with a higher serial.
//!
//! The serial is the bundle's UTC build time, `YYYYMMDDhhmmssmmm`: it grows
//! whichever machine builds (clocks in sync, as ssh and TLS need anyway),
//! reads as a date, and needs no counter shared between builders.
//! `kiln fleet bundle --serial N` sets it by hand, for a builder with a
//! numbering of its own.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::platform::target::Target;
use crate::platform::tfs::Owner;

/// The member of a bundle that carries its serial, at the bundle's top.
pub const META: &str = "kiln-bundle.toml";
/// Where a target records the newest bundle serial it converged.
pub const RECORD: &str = "/var/lib/kiln/bundle_serial.json";

/// What a bundle says of itself, signed with it; also what a host records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    pub serial: u64,
    /// UTC, RFC 3339, to the millisecond.
    pub created: String,
    /// The sha256 of the bundle's other members ([`crate::fleet::bundle::content_digest`]):
    /// two bundles with one serial must hold the same policy.
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(
        "{what}: bundle serial {got} (made {got_created}) is older than serial {newest} (made {newest_created}), the newest this host converged ({RECORD}); refused as a rollback. Fix: a policy rollback is a new bundle with a higher serial: build the older policy again (kiln fleet bundle, kiln fleet converge) and publish that"
    )]
    Older {
        what: String,
        got: u64,
        got_created: String,
        newest: u64,
        newest_created: String,
    },
    #[error(
        "{what}: bundle serial {serial} has other content than the serial {serial} this host converged ({RECORD}); refused: one serial names one bundle. Fix: publish it as a new bundle with a higher serial (kiln fleet bundle without --serial, or a higher --serial)"
    )]
    Reused { what: String, serial: u64 },
    #[error(
        "{what}: carries no serial ({META}: a bundle made by an older kiln), and this host converged serial {newest} ({RECORD}); refused as a possible rollback. Fix: build and publish the bundle again with this kiln"
    )]
    Unstamped { what: String, newest: u64 },
    #[error("{what}: {reason}")]
    Unreadable { what: String, reason: String },
}

impl From<RollbackError> for Error {
    fn from(e: RollbackError) -> Self {
        Error::Trust(Box::new(e))
    }
}

impl BundleMeta {
    /// The metadata of a bundle built now, with `content` as its digest;
    /// `serial` overrides the time-derived one.
    pub fn now(serial: Option<u64>, content: String) -> BundleMeta {
        let created = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let from_time = created
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        BundleMeta {
            serial: serial.unwrap_or(from_time),
            created,
            content,
        }
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# made by kiln: the serial hosts order bundles by (signed with the bundle)\n{}",
            toml::to_string(self).unwrap_or_default()
        )
    }

    /// Parses the [`META`] member of the bundle `what`.
    pub fn parse(text: &str, what: &str) -> Result<BundleMeta, RollbackError> {
        toml::from_str(text).map_err(|e| RollbackError::Unreadable {
            what: what.to_string(),
            reason: format!("{META} is not kiln bundle metadata: {}", e.message().trim()),
        })
    }

    /// The metadata of an unpacked bundle in `dir`, or none for a policy
    /// repository (or a bundle made before serials).
    pub fn load(dir: &Path) -> Result<Option<BundleMeta>, RollbackError> {
        let what = dir.display().to_string();
        match std::fs::read_to_string(dir.join(META)) {
            Ok(text) => BundleMeta::parse(&text, &what).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RollbackError::Unreadable {
                what,
                reason: format!("cannot read {META}: {e}"),
            }),
        }
    }

    /// The line of [`META`] that names the content, as [`Self::to_toml`]
    /// writes it: a fleet host finds whether it already has this policy by
    /// looking for it.
    pub fn content_line(content: &str) -> String {
        format!("content = \"{content}\"")
    }

    /// The line of [`RECORD`] that names the content, as [`admit_on`]
    /// writes it: a fleet host converges its current bundle again only
    /// while that is the policy it last recorded.
    pub fn record_content_line(content: &str) -> String {
        format!("\"content\": \"{content}\"")
    }

    /// `serial N`, for people.
    pub fn short(&self) -> String {
        format!("serial {}", self.serial)
    }
}

/// The newest bundle `target` converged, if it recorded one.
pub fn recorded(target: &Target) -> Result<Option<BundleMeta>, RollbackError> {
    let bad = |reason: String| RollbackError::Unreadable {
        what: RECORD.to_string(),
        reason: format!(
            "{reason}. Fix: this record is what keeps older bundles out; restore it, or remove it to trust the next bundle whatever its serial"
        ),
    };
    match target.fs().read_to_string(RECORD) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad(format!("not a bundle serial record: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(format!("cannot read it: {e}"))),
    }
}

/// Refuses the bundle `what` (whose metadata is `meta`, none for a bundle
/// without) when it is older than the `newest` one this host converged, or
/// has its serial with other content. The same policy under another
/// serial (another build of it) is no rollback: it is accepted.
pub fn admit(
    newest: Option<&BundleMeta>,
    meta: Option<&BundleMeta>,
    what: &str,
) -> Result<(), RollbackError> {
    let Some(newest) = newest else {
        return Ok(());
    };
    let what = what.to_string();
    let Some(meta) = meta else {
        return Err(RollbackError::Unstamped {
            what,
            newest: newest.serial,
        });
    };
    if meta.content == newest.content {
        return Ok(());
    }
    if meta.serial < newest.serial {
        return Err(RollbackError::Older {
            what,
            got: meta.serial,
            got_created: meta.created.clone(),
            newest: newest.serial,
            newest_created: newest.created.clone(),
        });
    }
    if meta.serial == newest.serial && meta.content != newest.content {
        return Err(RollbackError::Reused {
            what,
            serial: meta.serial,
        });
    }
    Ok(())
}

/// Checks the bundle `what` against the target's record and, unless
/// `check_only`, records it as the newest: written atomically, before the
/// bundle changes anything, so a converge that fails part way still keeps
/// older bundles out.
pub fn admit_on(
    target: &Target,
    meta: &BundleMeta,
    what: &str,
    check_only: bool,
) -> Result<(), RollbackError> {
    let newest = recorded(target)?;
    admit(newest.as_ref(), Some(meta), what)?;
    if check_only || newest.as_ref().is_some_and(|n| n.serial >= meta.serial) {
        return Ok(());
    }
    let fs = target.fs();
    let bad = |e: std::io::Error| RollbackError::Unreadable {
        what: RECORD.to_string(),
        reason: format!("cannot record {} there: {e}", meta.short()),
    };
    let dir = Path::new(RECORD).parent().unwrap_or(Path::new("/"));
    fs.create_dir_all(dir, 0o755).map_err(bad)?;
    let json = serde_json::to_vec_pretty(meta).unwrap_or_default();
    fs.write_atomic(RECORD, &json, 0o644, Owner::default())
        .map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(serial: u64, content: &str) -> BundleMeta {
        BundleMeta {
            serial,
            created: "2026-01-01T00:00:00.000Z".into(),
            content: content.into(),
        }
    }

    #[test]
    fn older_and_reused_serials_are_refused() {
        let newest = meta(5, "a");
        assert!(admit(None, Some(&meta(1, "x")), "b").is_ok());
        assert!(admit(None, None, "b").is_ok());
        assert!(admit(Some(&newest), Some(&meta(6, "x")), "b").is_ok());
        assert!(admit(Some(&newest), Some(&meta(5, "a")), "b").is_ok());
        // Another build of the same policy is no rollback.
        assert!(admit(Some(&newest), Some(&meta(4, "a")), "b").is_ok());
        let e = admit(Some(&newest), Some(&meta(4, "x")), "b").unwrap_err();
        assert!(e.to_string().contains("serial 4"), "{e}");
        assert!(e.to_string().contains("serial 5"), "{e}");
        let e = admit(Some(&newest), Some(&meta(5, "b")), "b").unwrap_err();
        assert!(matches!(e, RollbackError::Reused { .. }), "{e}");
        let e = admit(Some(&newest), None, "b").unwrap_err();
        assert!(matches!(e, RollbackError::Unstamped { .. }), "{e}");
    }

    #[test]
    fn the_serial_is_the_utc_build_time() {
        let m = BundleMeta::now(None, "c".into());
        assert_eq!(m.serial.to_string().len(), 17, "{m:?}");
        assert!(m.created.ends_with('Z'), "{m:?}");
        assert!(BundleMeta::now(None, "c".into()).serial >= m.serial);
        assert_eq!(BundleMeta::now(Some(9), "c".into()).serial, 9);
        let back = BundleMeta::parse(&m.to_toml(), "b").unwrap();
        assert_eq!(back, m);
        let line = BundleMeta::content_line("c");
        assert!(m.to_toml().lines().any(|l| l == line), "{}", m.to_toml());
        let json = String::from_utf8(serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let line = BundleMeta::record_content_line("c");
        assert!(
            json.lines().any(|l| l.trim().trim_end_matches(',') == line),
            "{json}"
        );
    }
}
