//! One file per command: each turns its options into library calls.

pub mod agent;
pub mod check;
pub mod converge;
pub mod devvm;
pub mod fingerprint;
pub mod fleet;
pub mod report;
pub mod root_exec;
pub mod secret;
pub mod server;
pub mod test;
pub mod verify;
pub mod whitelist;

use std::path::PathBuf;

/// Where the policy comes from when `--repo` is not given and the current
/// directory is no repository: the copy installed on the host (dev VM
/// images and fleet hosts keep it in /etc/kiln/policy).
pub fn repo_dir(repo: PathBuf) -> PathBuf {
    const INSTALLED: &str = "/etc/kiln/policy";
    let is_repo = |d: &std::path::Path| d.join("roles").is_dir() || d.join("cookbooks").is_dir();
    if repo == std::path::Path::new(".")
        && !is_repo(&repo)
        && is_repo(std::path::Path::new(INSTALLED))
    {
        PathBuf::from(INSTALLED)
    } else {
        repo
    }
}
