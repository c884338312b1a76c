//! Hostile input, one module per class of attack: each test plants the
//! attack, runs the real binary, and asserts that nothing outside the
//! target changed (a sentinel directory hashed before and after) and that
//! no secret reached output, reports or `/proc/*/cmdline`.
//!
//! - a `--root` tree's own programs (planted sh, apt-cache, systemctl,
//!   useradd; a chroot escape; the caller's environment): `root_sandbox`
//! - values that would change a file's structure (units, deb822, ini;
//!   typed attributes, escaping helpers): `typed_attrs`
//! - a secret anywhere but content, redaction by value: `secret_leaks`
//! - a bundle server serving an older signed bundle, bad bundle members:
//!   `rollback`
//! - special files, hard links and links in a target: `confine`
//! - templates that recurse, nest or grow without bound: `templates`
//! - what was accepted without a word: `silent`
//! - names under a shared `$TMPDIR` made first by someone else: `shared_tmp`
//!
//! Elsewhere, beside the feature they attack: `kiln test`'s sandbox
//! (`sandbox::nothing_of_the_host_is_inherited_by_a_role`,
//! `sandbox::a_role_cannot_leave_the_test_sandbox`), escape sequences from
//! a host (`fleet::a_hosts_escape_sequences_never_reach_the_terminal`) and
//! first contact (`signed::a_host_never_returns_to_first_contact`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::tree_hash;

mod confine;
mod rollback;
mod root_sandbox;
mod secret_leaks;
mod shared_tmp;
mod silent;
mod templates;
mod typed_attrs;

pub const SECRET: &str = "SENTINEL-SECRET-7d1f0c";

/// A directory on the host, beside the root, that kiln must never touch: a
/// 0600 secret, a file a lock could truncate, a directory a chmod could
/// open, and a history of run-report-like files that pruning could delete.
pub struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn new() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("kiln-sentinel-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        fs::write(p.join("secret"), format!("{SECRET}\n")).unwrap();
        fs::set_permissions(p.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(p.join("victim"), "a host file a lock must not truncate\n").unwrap();
        fs::create_dir(p.join("hostdir")).unwrap();
        fs::set_permissions(p.join("hostdir"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(p.join("history")).unwrap();
        for i in 0..30 {
            fs::write(p.join(format!("history/{}-1.json", 1_000 + i)), "{}").unwrap();
        }
        fs::create_dir(p.join("chain-end")).unwrap();
        Sentinel { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory itself, for a hostile program to aim at.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn hash(&self) -> String {
        tree_hash(self.dir.path())
    }
}
