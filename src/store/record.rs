//! What a host sends `kiln server` after a run: a [`RunRecord`] (the run's
//! report with what the store needs beside it), as JSON text, signed with
//! the host's ssh host key in an [`Envelope`]. The signature covers the
//! exact bytes of the payload, so the server verifies before it parses.

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::engine::Report;
use crate::fingerprint::Fingerprint;
use crate::verify::CheckOutcome;

/// The SSHSIG namespace of run reports: a host's signature made for
/// anything else (a bundle, a git commit) never passes as a report's.
pub const NAMESPACE: &str = "kiln-report";

/// One run of one host, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// Random, chosen by the host: the same id twice is a replay.
    pub run_id: String,
    pub fqdn: String,
    /// The host's Debian release (codename).
    pub release: String,
    /// How often the host converges (the agent's interval), so that the
    /// store can tell a stale host; None for a run started by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
    pub report: Report,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Every package the policy manages, as the host has it after the run.
    #[serde(default)]
    pub packages: Vec<ManagedPackage>,
    /// Verify checks, when the run ran them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckOutcome>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedPackage {
    pub name: String,
    /// Empty when the package is not installed (a `remove` action).
    pub version: String,
    pub held: bool,
}

/// A payload and the armored SSHSIG signature over its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a payload is not a run record the store can keep.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a run record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown field {0}: this server's kiln does not know it; upgrade the server first")]
    UnknownField(String),
    #[error("{0}")]
    Invalid(String),
}

impl RunRecord {
    /// A new record of `report`, with a fresh random run id.
    pub fn new(report: Report, release: String) -> RunRecord {
        let mut id = [0u8; 16];
        // Without randomness the id could repeat and the run be refused
        // as a replay: zeros then say where the problem is.
        let _ = getrandom::fill(&mut id);
        RunRecord {
            run_id: hex::encode(id),
            fqdn: report.fqdn.clone(),
            release,
            interval_secs: None,
            report,
            fingerprint: None,
            packages: Vec::new(),
            checks: None,
        }
    }

    /// Parses a payload strictly: a field this kiln does not know, at any
    /// depth, is refused rather than dropped, since it would be lost.
    pub fn parse_strict(text: &str) -> Result<RunRecord, RecordError> {
        let mut unknown = Vec::new();
        let de = &mut serde_json::Deserializer::from_str(text);
        let record: RunRecord =
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))?;
        if let Some(field) = unknown.into_iter().next() {
            return Err(RecordError::UnknownField(field));
        }
        record.validate()?;
        Ok(record)
    }

    fn validate(&self) -> Result<(), RecordError> {
        let bad = |m: String| Err(RecordError::Invalid(m));
        if self.run_id.len() != 32 || !self.run_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(format!("run_id {:?} is not 32 hex digits", self.run_id));
        }
        if self.fqdn.is_empty() || self.fqdn != self.report.fqdn {
            return bad(format!(
                "fqdn {:?} is empty or not the report's ({:?})",
                self.fqdn, self.report.fqdn
            ));
        }
        if i64::try_from(self.report.started_at).is_err() {
            return bad("started_at is out of range".into());
        }
        Ok(())
    }
}

/// Why a host could not sign its report.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read the host key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the host key {path} is no usable OpenSSH private key: {reason}")]
    Key { path: String, reason: String },
}

/// Signs `payload` with the OpenSSH private key in `key_text` (a host key,
/// unencrypted), read from `path` (for messages).
pub fn sign(payload: &str, key_text: &str, path: &str) -> Result<Envelope, SignError> {
    let bad = |reason: String| SignError::Key {
        path: path.to_string(),
        reason,
    };
    let key = PrivateKey::from_openssh(key_text).map_err(|e| bad(e.to_string()))?;
    if key.is_encrypted() {
        return Err(bad("it is encrypted".into()));
    }
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, payload.as_bytes())
        .and_then(|s| s.to_pem(LineEnding::LF))
        .map_err(|e| bad(e.to_string()))?;
    Ok(Envelope {
        payload: payload.to_string(),
        signature: Some(sig),
    })
}

/// Why a signature does not admit a payload.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not an armored SSHSIG signature: {0}")]
    Malformed(String),
    #[error("the signature does not match the payload (or is not for {NAMESPACE}): {0}")]
    Mismatch(String),
}

/// The key that made `signature` (as it claims), before it is checked.
pub fn signer(signature: &str) -> Result<(SshSig, PublicKey), SignatureError> {
    let sig = SshSig::from_pem(signature).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let key = PublicKey::from(sig.public_key().clone());
    Ok((sig, key))
}

/// Checks that `key` made `sig` over `payload` in [`NAMESPACE`].
pub fn verify(key: &PublicKey, sig: &SshSig, payload: &str) -> Result<(), SignatureError> {
    key.verify(NAMESPACE, payload.as_bytes(), sig)
        .map_err(|e| SignatureError::Mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RunRecord {
        let report = Report {
            fqdn: "web01.example.com".into(),
            started_at: 1000,
            ..Report::default()
        };
        RunRecord::new(report, "bookworm".into())
    }

    #[test]
    fn a_record_reads_back_and_refuses_what_it_does_not_know() {
        let r = record();
        let text = serde_json::to_string(&r).unwrap();
        let back = RunRecord::parse_strict(&text).unwrap();
        assert_eq!(back.run_id, r.run_id);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["report"]["surprise"] = 1.into();
        let e = RunRecord::parse_strict(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("report.surprise"), "{e}");
        v["report"].as_object_mut().unwrap().remove("surprise");
        v["report"]["updated"] = "two".into();
        assert!(matches!(
            RunRecord::parse_strict(&v.to_string()),
            Err(RecordError::Json(_))
        ));
        v["report"]["updated"] = 2.into();
        v["fqdn"] = "other".into();
        assert!(matches!(
            RunRecord::parse_strict(&v.to_string()),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn a_signature_admits_its_payload_only() {
        let seed = ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]);
        let key = PrivateKey::from(seed);
        let text = key.to_openssh(LineEnding::LF).unwrap();
        let env = sign("{\"a\":1}", &text, "k").unwrap();
        let (sig, signer_key) = signer(env.signature.as_deref().unwrap()).unwrap();
        assert_eq!(signer_key.key_data(), key.public_key().key_data());
        verify(&signer_key, &sig, "{\"a\":1}").unwrap();
        assert!(verify(&signer_key, &sig, "{\"a\":2}").is_err());
        // A signature of the same bytes in another namespace is refused.
        let other = key
            .sign(crate::trust::NAMESPACE, HashAlg::Sha512, b"{\"a\":1}")
            .unwrap();
        assert!(verify(&signer_key, &other, "{\"a\":1}").is_err());
        assert!(signer("not a signature").is_err());
    }
}
