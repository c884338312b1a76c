//! The fleet's host protocol: the controller sends one [`HostRequest`]
//! (JSON on the stdin of `kiln __host`), the host answers with one
//! [`HostReport`] (JSON on stdout), whose [`HostFailure`] says what went
//! wrong. Both ends share these types: no exit code and no marker in the
//! output carries meaning. `kiln verify --json` prints the same report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Report;
use crate::verify::CheckOutcome;

/// Where a host keeps the kiln binaries it was sent, by hash.
pub const BIN_DIR: &str = "/var/lib/kiln/bin";
/// Where a host keeps the bundles it was sent, by hash, and `current`.
pub const BUNDLE_DIR: &str = "/var/lib/kiln/bundles";

/// What the controller asks of a host's kiln.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum HostRequest {
    /// Converge the host with the bundle (or with its current bundle when
    /// that holds the same policy), keep the links to what it converged
    /// with, and run the health checks after a successful real converge.
    Converge {
        bundle: BundleRef,
        /// The host's node file in the bundle is `nodes/FQDN.toml`.
        fqdn: String,
        why_run: bool,
        /// The sha256 of the kiln binary running this request, which
        /// `/var/lib/kiln/bin/kiln` then links to.
        binary_sha: String,
        /// `kiln server` to send a real run's report to, signed with the
        /// host's own key (the controller holds none of its hosts' keys).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_to: Option<String>,
    },
    /// Take the bundle uploaded to `upload` (its hash already checked
    /// there): its signature verified (when it has one), every member
    /// checked and its serial admitted, then unpacked.
    Receive {
        bundle: BundleRef,
        upload: String,
        /// The armored SSHSIG signature; `None` for a push made with
        /// `--allow-unsigned`.
        signature: Option<String>,
    },
    /// What `fleet status` shows of the host: its release, last run and
    /// fingerprint, and a why-run of its own policy (its node file in the
    /// bundle it last converged), which changes nothing and keeps no report.
    Status { fqdn: String },
}

/// What a host says of itself for `fleet status`, whatever its policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostState {
    /// os-release's VERSION_CODENAME; empty when it could not be read.
    pub release: String,
    /// The host's last run report as stored, unparsed (empty: none), so
    /// that the controller names what is wrong with it.
    pub last_run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
}

/// A bundle as the host knows it: by its hash, and by its policy's digest
/// (the same policy under another serial is the same content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub sha256: String,
    pub content: String,
}

/// Why a host did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum HostFailure {
    /// What the host lacks, to be sent: the kiln binary, and the bundle
    /// (neither it nor a current bundle with its policy is there).
    #[error("the host lacks{}{}", if *binary { " the kiln binary" } else { "" }, if *bundle { " the bundle" } else { "" })]
    Need { binary: bool, bundle: bool },
    /// The kiln binary no longer has the hash it was uploaded with: it is
    /// not run.
    #[error("{path} has sha256 {found}, not {expected} as uploaded: altered on the host, not run")]
    BinaryAltered {
        path: String,
        found: String,
        expected: String,
    },
    /// What arrived is not what was sent.
    #[error("{path}: sha256 on the host is {found}, expected {expected}")]
    HashMismatch {
        path: String,
        found: String,
        expected: String,
    },
    /// The host's allowed_signers does not admit the bundle's signature.
    #[error("{path}: {reason}")]
    SignatureRefused { path: String, reason: String },
    /// The host refuses to unpack the bundle: a member it may not hold, or
    /// a serial older than the newest it converged.
    #[error("{path}: {reason}")]
    BundleRefused { path: String, reason: String },
    /// kiln on the host stopped before it could report a converge (a
    /// policy error, another run holding the lock, an older bundle).
    #[error("{0}")]
    Converge(String),
    /// The host could not read the request, or could not write what it
    /// was sent.
    #[error("{0}")]
    Host(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostReport {
    /// Why the host did not do what it was asked (none for `kiln verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<HostFailure>,
    /// With a status request: the host's own state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,
    /// The converge run first, with `--converge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge: Option<Report>,
    /// Every check passed (false when they did not run).
    pub success: bool,
    /// The verify checks, run only after a successful real converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckOutcome>>,
    /// With `--converge --why-run`: what the host's policy wants of each
    /// managed resource, as [`crate::engine::desired_digests`], so that
    /// `fleet status` compares hosts only where their policies agree.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub desired: BTreeMap<String, String>,
}

impl HostReport {
    /// The checks' outcome on their own (`kiln verify` without `--converge`).
    pub fn checks(checks: Vec<CheckOutcome>) -> Self {
        HostReport {
            failure: None,
            state: None,
            converge: None,
            success: checks.iter().all(|c| c.ok),
            checks: Some(checks),
            desired: BTreeMap::new(),
        }
    }

    /// The answer of a host that did not do what it was asked.
    pub fn failed(failure: HostFailure) -> Self {
        HostReport {
            failure: Some(failure),
            ..HostReport::default()
        }
    }

    pub fn parse(text: &str) -> Result<HostReport, serde_json::Error> {
        serde_json::from_str(text.trim())
    }

    /// The report as it leaves the host: no secret value in it.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        crate::secrets::redact::json(&mut v);
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let r = HostReport {
            converge: Some(Report {
                updated: 2,
                success: true,
                ..Report::default()
            }),
            ..HostReport::checks(vec![CheckOutcome {
                check: "port 80".into(),
                origin: "web".into(),
                ok: true,
                detail: "open".into(),
            }])
        };
        let back = HostReport::parse(&r.to_json()).unwrap();
        assert_eq!(back.converge.unwrap().updated, 2);
        assert!(back.success);
        assert_eq!(back.checks.unwrap()[0].detail, "open");
        // Without --converge: the same fields `kiln verify --json` always had.
        let plain: serde_json::Value =
            serde_json::from_str(&HostReport::checks(vec![]).to_json()).unwrap();
        assert_eq!(plain, serde_json::json!({"success": true, "checks": []}));
    }

    #[test]
    fn a_failure_and_a_request_travel_as_json() {
        let f = HostFailure::BinaryAltered {
            path: "/var/lib/kiln/bin/kiln.ab".into(),
            found: "cd".into(),
            expected: "ab".into(),
        };
        let back = HostReport::parse(&HostReport::failed(f.clone()).to_json()).unwrap();
        assert_eq!(back.failure, Some(f));
        assert!(!back.success);
        let req = HostRequest::Converge {
            bundle: BundleRef {
                sha256: "s".into(),
                content: "c".into(),
            },
            fqdn: "web01.example.com".into(),
            why_run: true,
            binary_sha: "b".into(),
            report_to: Some("https://kiln.example.com".into()),
        };
        let line = serde_json::to_string(&req).unwrap();
        assert!(line.starts_with(r#"{"do":"converge""#), "{line}");
        assert_eq!(serde_json::from_str::<HostRequest>(&line).unwrap(), req);
    }
}
