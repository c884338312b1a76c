//! What a push sends to its hosts: the bundle, its signature and the kiln
//! binary, with the paths they take on a host.

use std::sync::{Arc, OnceLock};

use super::protocol::{BIN_DIR, BUNDLE_DIR, BundleRef};

/// What the hosts get.
pub struct Payload {
    pub bundle: Arc<Vec<u8>>,
    pub bundle_sha: String,
    /// The digest of the bundle's policy, its serial aside: a host whose
    /// current bundle holds the same policy converges that one again
    /// instead of receiving this build of it.
    pub bundle_content: String,
    /// The bundle's SSHSIG signature (armored); `None` only when the
    /// operator pushes unsigned on purpose (`--allow-unsigned`).
    pub bundle_sig: Option<String>,
    pub binary_path: std::path::PathBuf,
    pub binary_sha: String,
    /// Read on first need: most runs send it to no one.
    pub binary: OnceLock<Result<Arc<Vec<u8>>, Arc<std::io::Error>>>,
    /// Where each host sends its run's report (`--report-to`, else the
    /// inventory's `report_to`).
    pub report_to: Option<String>,
}

impl Payload {
    /// The binary's bytes, read once.
    pub fn binary(&self) -> Result<Arc<Vec<u8>>, Arc<std::io::Error>> {
        self.binary
            .get_or_init(|| {
                std::fs::read(&self.binary_path)
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .clone()
    }

    pub fn bundle_ref(&self) -> BundleRef {
        BundleRef {
            sha256: self.bundle_sha.clone(),
            content: self.bundle_content.clone(),
        }
    }

    pub fn remote_kiln(&self) -> String {
        format!("{BIN_DIR}/kiln.{}", self.binary_sha)
    }

    pub fn remote_repo(&self) -> String {
        format!("{BUNDLE_DIR}/{}", self.bundle_sha)
    }
}
