//! The engineer's dev VM key: generated once, authorized for root in every image.

use std::path::PathBuf;
use std::process::Command;

use super::{paths, run, tools};
use crate::error::{Error, IoContext};

pub fn private_key() -> PathBuf {
    paths::devvm_dir().join("id_ed25519")
}

/// The public key's line, generating the pair first if there is none.
/// Several kiln processes may get here at once (two `devvm up`, parallel
/// tests): one generates under a lock while the others wait, and the pair
/// is generated beside its place and renamed in, private key last, so the
/// private key's presence means both halves are there and belong together.
pub fn ensure() -> Result<String, Error> {
    let key = private_key();
    let public = key.with_extension("pub");
    if !key.is_file() || !public.is_file() {
        tools::require(&[tools::SSH_KEYGEN])?;
        let dir = paths::devvm_dir();
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join(".keygen.lock");
        let lock =
            std::fs::File::create(&lock_path).ctx(|| format!("opening {}", lock_path.display()))?;
        fs2::FileExt::lock_exclusive(&lock).ctx(|| format!("locking {}", lock_path.display()))?;
        if !key.is_file() || !public.is_file() {
            let fresh = tempfile::Builder::new()
                .prefix(".keygen-")
                .tempdir_in(&dir)
                .ctx(|| format!("creating a directory in {}", dir.display()))?;
            let new_key = fresh.path().join("id_ed25519");
            run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                    .arg(format!("kiln-devvm-{}", super::user_name()))
                    .arg("-f")
                    .arg(&new_key),
                "ssh-keygen",
            )?;
            std::fs::rename(new_key.with_extension("pub"), &public)
                .ctx(|| format!("moving a new key to {}", public.display()))?;
            std::fs::rename(&new_key, &key)
                .ctx(|| format!("moving a new key to {}", key.display()))?;
        }
    }
    let line = std::fs::read_to_string(&public).ctx(|| format!("reading {}", public.display()))?;
    Ok(line.trim().to_string())
}
