//! The engineer's dev VM key: generated once, authorized for root in every image.

use std::path::PathBuf;
use std::process::Command;

use super::{paths, run, tools};
use crate::error::{Error, IoContext};

pub fn private_key() -> PathBuf {
    paths::devvm_dir().join("id_ed25519")
}

/// The public key's line, generating the pair first if there is none.
pub fn ensure() -> Result<String, Error> {
    let key = private_key();
    let public = key.with_extension("pub");
    if !key.is_file() || !public.is_file() {
        tools::require(&[tools::SSH_KEYGEN])?;
        let dir = paths::devvm_dir();
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&public);
        run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("kiln-devvm-{}", super::user_name()))
                .arg("-f")
                .arg(&key),
            "ssh-keygen",
        )?;
    }
    let line = std::fs::read_to_string(&public).ctx(|| format!("reading {}", public.display()))?;
    Ok(line.trim().to_string())
}
