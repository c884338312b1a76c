//! What fingerprint parts read from a target: each resource type's part
//! (next to its check) reads through [`State`], and these helpers keep the
//! parts' wording alike. Here, below `resource`, so that the fingerprint
//! driver depends on the resource types and not the other way round.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

use crate::platform::accounts::Accounts;
use crate::platform::dpkg::Dpkg;
use crate::platform::target::Target;
use crate::platform::tfs::Tfs;

/// The target's state for fingerprint parts, each source read at most once.
/// Each resource type reads its own part through it ([`crate::resource::Converge::fingerprint`]).
pub struct State<'a> {
    pub target: &'a Target,
    accounts: Accounts,
    dpkg: Option<Dpkg>,
}

impl<'a> State<'a> {
    pub fn new(target: &'a Target) -> Self {
        State {
            target,
            accounts: Accounts::read(target),
            dpkg: None,
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn dpkg(&mut self) -> &Dpkg {
        let target = self.target;
        self.dpkg.get_or_insert_with(|| Dpkg::read(target))
    }

    /// Owner and group by their names on the target (numbers when unnamed), and mode.
    pub fn ownership(&self, m: &fs::Metadata) -> String {
        format!(
            "owner={} group={} mode={:04o}",
            self.user_name(m.uid()),
            self.group_name(m.gid()),
            m.mode() & 0o7777
        )
    }

    pub fn user_name(&self, uid: u32) -> String {
        // By name order, so that two names for one uid always give the same one.
        self.accounts
            .users
            .values()
            .find(|u| u.uid == uid)
            .map_or_else(|| uid.to_string(), |u| clean(&u.name))
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.accounts
            .group_name(gid)
            .map_or_else(|| gid.to_string(), clean)
    }
}

/// `absent`, or why a path could not be looked at (never the host path).
pub fn missing(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        "absent".to_string()
    } else {
        format!("unreadable ({})", e.kind())
    }
}

/// Where the link at `path` on the target points, as stored.
pub fn link_to(tfs: &Tfs, path: &str) -> String {
    tfs.read_link(path).map_or_else(
        |e| format!("unreadable ({})", e.kind()),
        |t| clean(&t.to_string_lossy()),
    )
}

/// The SHA-256 of the file `path` on the target.
pub fn sha256_file(tfs: &Tfs, path: &str) -> io::Result<String> {
    let mut f = tfs.open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Keeps a part on one line: control characters are written as escapes.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
