//! Whether the server keeps a report: the envelope read strictly, the
//! signature checked against the key known_hosts has for the host the
//! report is from, then the store's replay check. Every refusal says why
//! with an HTTP status of its own, and leaves the store's runs unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ssh_key::PublicKey;

use super::ServerError;
use crate::fleet::inventory::Inventory;
use crate::secrets::recipients::{HostRef, KnownHosts};
use crate::store::record::{self, Envelope, RunRecord};
use crate::store::{IngestError, Store};

/// The host keys the server trusts, by fqdn.
#[derive(Clone)]
pub struct Trust {
    keys: HashMap<String, PublicKey>,
    known_hosts: String,
    /// The files it was read from and when they were last changed then.
    sources: Vec<(PathBuf, Stamp)>,
}

/// When a file was last changed, and its size: a file rewritten within
/// one tick of the kernel's clock still differs by its size, most often.
type Stamp = Option<(SystemTime, u64)>;

fn changed_at(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Trust {
    /// The inventory and its known_hosts read again, when either changed
    /// since: a host added there may report without a restart. None when
    /// nothing changed, or when a file no longer reads (the trust stays as
    /// it was, with a warning, until the file changes again).
    pub fn refreshed(&self) -> Option<Trust> {
        if self.sources.iter().all(|(p, t)| changed_at(p) == *t) {
            return None;
        }
        match Trust::load(&self.sources[0].0) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("kiln server: keeping the hosts' keys as they were: {e}");
                let mut same = self.clone();
                for (p, t) in &mut same.sources {
                    *t = changed_at(p);
                }
                Some(same)
            }
        }
    }

    /// The key of each inventory host that its known_hosts file has.
    pub fn load(inventory: &Path) -> Result<Trust, ServerError> {
        let sources_before = changed_at(inventory);
        let inv = Inventory::load(inventory).map_err(ServerError::Inventory)?;
        let known = KnownHosts::load(&inv.known_hosts).map_err(ServerError::Inventory)?;
        let mut keys = HashMap::new();
        for h in &inv.hosts {
            let r = HostRef {
                fqdn: h.fqdn.clone(),
                address: h.address.clone(),
                port: h.port,
                roles: vec![],
            };
            if let Some(k) = known.key_of(&r)
                && let Ok(k) = PublicKey::from_openssh(k.as_str())
            {
                keys.insert(h.fqdn.clone(), k);
            }
        }
        let sources = vec![
            (inventory.to_path_buf(), sources_before),
            (inv.known_hosts.clone(), changed_at(&inv.known_hosts)),
        ];
        Ok(Trust {
            keys,
            known_hosts: inv.known_hosts.display().to_string(),
            sources,
        })
    }

    fn knows(&self, key: &PublicKey) -> bool {
        self.keys.values().any(|k| k.key_data() == key.key_data())
    }
}

/// Why a report was refused: the HTTP status, a reason word (also the
/// counter's name), and a message that says what to do.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
    /// Counted in the store's refusals (a store failure is not a refusal).
    pub counted: bool,
}

impl Refused {
    fn new(status: u16, reason: &'static str, message: String) -> Refused {
        Refused {
            status,
            reason,
            message,
            counted: true,
        }
    }

    pub fn too_large(size: usize, max: usize) -> Refused {
        Refused::new(
            413,
            "too_large",
            format!(
                "the body has more than {max} bytes ({size}); raise the server's --max-body if reports are that large"
            ),
        )
    }

    pub fn malformed(message: String) -> Refused {
        Refused::new(400, "malformed", message)
    }
}

/// Everything but the replay check, which needs the store: the envelope,
/// the signature, the payload, and the key being the host's own. Needs no
/// lock, so that reports are checked side by side.
pub fn check(body: &[u8], trust: &Trust) -> Result<RunRecord, Refused> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        Refused::malformed(format!(
            "not a report envelope {{\"payload\": TEXT, \"signature\": SSHSIG}}: {e}"
        ))
    })?;
    let Some(signature) = envelope
        .signature
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    else {
        return Err(Refused::new(
            401,
            "unsigned",
            format!(
                "the report is not signed; hosts sign with their ssh host key (namespace {})",
                record::NAMESPACE
            ),
        ));
    };
    let (sig, key) =
        record::signer(signature).map_err(|e| Refused::new(401, "bad_signature", e.to_string()))?;
    if !trust.knows(&key) {
        return Err(Refused::new(
            403,
            "unknown_key",
            format!(
                "signed by {}, which is no inventory host's key in {}; add the host to the inventory and its key to known_hosts",
                key.fingerprint(ssh_key::HashAlg::Sha256),
                trust.known_hosts
            ),
        ));
    }
    record::verify(&key, &sig, &envelope.payload)
        .map_err(|e| Refused::new(401, "bad_signature", e.to_string()))?;
    let run = RunRecord::parse_strict(&envelope.payload)
        .map_err(|e| Refused::malformed(format!("the payload: {e}")))?;
    match trust.keys.get(&run.fqdn) {
        Some(k) if k.key_data() == key.key_data() => {}
        _ => {
            return Err(Refused::new(
                403,
                "wrong_host",
                format!(
                    "a report of {} signed by another host's key ({}); a host reports only its own runs",
                    run.fqdn,
                    key.fingerprint(ssh_key::HashAlg::Sha256)
                ),
            ));
        }
    }
    Ok(run)
}

/// Stores a checked run, unless it is a replay.
pub fn keep(run: &RunRecord, store: &mut dyn Store, received_us: u64) -> Result<String, Refused> {
    match store.ingest(run, received_us) {
        Ok(()) => Ok(run.run_id.clone()),
        Err(IngestError::Replay(r)) => Err(Refused::new(409, "replay", r.to_string())),
        Err(IngestError::Store(e)) => Err(Refused {
            status: 500,
            reason: "store",
            message: e.to_string(),
            counted: false,
        }),
    }
}
