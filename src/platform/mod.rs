//! What kiln knows about the system it converges.

pub mod accounts;
pub mod apt;
pub mod archive;
pub mod deb822;
pub mod dpkg;
pub mod facts;
pub mod fallback;
pub mod hostfile;
pub mod mariadb;
pub mod mirror;
pub mod pincache;
pub mod pins;
pub mod private;
pub mod rootfs;
pub mod sandbox;
pub mod siblings;
pub mod target;
pub mod tfs;

use std::path::PathBuf;

/// The full path of an executable `program` on PATH, then in the sbin
/// directories, which a non-root PATH often lacks. A file without an
/// execute bit does not count: running it would fail anyway.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
    let dirs = std::env::join_paths(dirs).ok()?;
    ::which::which_in(program, Some(dirs), "/").ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn which_finds_an_executable_and_not_a_missing_name() {
        let sh = super::which("sh").expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert_eq!(super::which("kiln-no-such-program"), None);
    }
}
