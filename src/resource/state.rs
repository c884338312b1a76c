//! What fingerprint parts read from a target: each resource type's part
//! (next to its check) reads through [`State`], and these helpers keep the
//! parts' wording alike. Here, below `resource`, so that the fingerprint
//! driver depends on the resource types and not the other way round.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use sha2::Sha256;

use crate::error::RunError;
use crate::platform::accounts::Accounts;
use crate::platform::dpkg::Dpkg;
use crate::platform::mariadb::{Client, DEFAULT_SOCKET, MariadbError};
use crate::platform::target::Target;
use crate::platform::tfs::Tfs;
pub use crate::platform::tfs::sha256_file;

/// The target's state for fingerprint parts, each source read at most once.
/// Each resource type reads its own part through it ([`crate::resource::Converge::fingerprint`]).
pub struct State<'a> {
    pub target: &'a Target,
    accounts: Accounts,
    dpkg: Option<Dpkg>,
    /// [`FINGERPRINT_KEY`] of the target, read once.
    content_key: Option<Option<ContentKey>>,
}

/// The key of keyed content hashes, and the paths it applies to.
#[derive(Clone)]
struct ContentKey {
    key: Vec<u8>,
    paths: std::collections::BTreeSet<String>,
}

impl ContentKey {
    fn read(target: &Target) -> Option<ContentKey> {
        let text = target.fs().read_to_string(FINGERPRINT_KEY).ok()?;
        let mut lines = text.lines();
        let key = lines.next()?.trim().as_bytes().to_vec();
        Some(ContentKey {
            key,
            paths: lines.map(str::to_string).collect(),
        })
    }
}

/// Where a converge that used secrets keeps the key of content hashes
/// (root only; first line, hex) and the paths of the sensitive files it
/// applies to (one a line): their contents are then fingerprinted by
/// HMAC-SHA256, so that a fingerprint never lets anyone test guesses of a
/// secret, while every other file keeps its plain sha256.
pub const FINGERPRINT_KEY: &str = "/var/lib/kiln/fingerprint.key";

/// Writes (or, with no secrets used, removes) the target's fingerprint key.
pub fn keep_fingerprint_key(
    target: &Target,
    key: Option<&[u8]>,
    paths: &[String],
) -> Result<(), RunError> {
    let tfs = target.fs();
    match key {
        Some(k) => {
            let mut text = hex::encode(k);
            for p in paths {
                text.push('\n');
                text.push_str(&clean(p));
            }
            text.push('\n');
            let k = text.as_bytes();
            if tfs.read(FINGERPRINT_KEY).is_ok_and(|old| old == k) {
                return Ok(());
            }
            tfs.create_dir_all("/var/lib/kiln", 0o755)
                .map_err(|e| RunError::io("create", "/var/lib/kiln", e))?;
            crate::resource::fsmeta::atomic_write(
                tfs,
                FINGERPRINT_KEY,
                k,
                0o600,
                crate::resource::fsmeta::Ids::default(),
            )
        }
        None => match tfs.remove_file(FINGERPRINT_KEY) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(RunError::io("remove", FINGERPRINT_KEY, e))
            }
            _ => Ok(()),
        },
    }
}

impl<'a> State<'a> {
    pub fn new(target: &'a Target) -> Self {
        State {
            target,
            accounts: Accounts::read(target),
            dpkg: None,
            content_key: None,
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn dpkg(&mut self) -> &Dpkg {
        let target = self.target;
        self.dpkg.get_or_insert_with(|| Dpkg::read(target))
    }

    /// The content of the file `name` as a fingerprint part:
    /// `sha256=HEX`, or `hmac-sha256=HEX` for a file the target's
    /// [`FINGERPRINT_KEY`] lists.
    pub fn content_hash(&mut self, name: &str) -> io::Result<String> {
        let target = self.target;
        let key = self
            .content_key
            .get_or_insert_with(|| ContentKey::read(target))
            .as_ref()
            .filter(|k| k.paths.contains(name))
            .map(|k| k.key.clone());
        match key {
            None => sha256_file(target.fs(), name).map(|h| format!("sha256={h}")),
            Some(k) => {
                use hmac::{KeyInit, Mac};
                let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&k).expect("any key length");
                mac.update(&target.fs().read(name)?);
                Ok(format!(
                    "hmac-sha256={}",
                    hex::encode(mac.finalize().into_bytes())
                ))
            }
        }
    }

    /// Owner and group by their names on the target (numbers when unnamed), and mode.
    /// A MariaDB resource's part, read by `read` from the server at the
    /// default socket; what stood in the way, when something did.
    pub fn mariadb(
        &self,
        read: impl FnOnce(&mut Client) -> Result<String, MariadbError>,
    ) -> Option<String> {
        if self.target.is_chroot() {
            return Some("not read: no server runs in a --root tree".to_string());
        }
        let part = Client::connect(std::path::Path::new(DEFAULT_SOCKET))
            .and_then(|mut c| read(&mut c))
            .unwrap_or_else(|e| match e {
                MariadbError::Unreachable { .. } => "not read: the server does not answer".into(),
                e => format!("not read: {e}"),
            });
        Some(clean(&part))
    }

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
