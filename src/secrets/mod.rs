//! Secrets kept in the policy repository: one age file per secret under
//! `secrets/`, ASCII-armored, encrypted to the ssh host keys of the hosts
//! that need it and to the people who edit it. Decrypted only on a target,
//! while its policy is compiled, with the target's own host key.
//!
//! The file starts with comment lines that say who can read it (key
//! fingerprints, never names) and a hash of that recipient set, so that
//! `kiln secret rekey` rewrites only the files whose set changed.

pub mod error;
pub mod recipients;
pub mod redact;
pub mod resolve;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::PolicyError;
use error::IdentityProblem;

pub use error::SecretError;
pub use recipients::{Key, RecipientsFile};
pub use resolve::{Decrypt, Placeholder, Resolver, Secrets, TestValues};

/// The folder of the repository that holds the secrets.
pub const DIR: &str = "secrets";
/// The file that says who may read which secret.
pub const RECIPIENTS: &str = "secrets/recipients.toml";
/// The identity a host decrypts its secrets with, inside its root.
pub const HOST_IDENTITY: &str = "etc/ssh/ssh_host_ed25519_key";
/// The comment line that carries the recipient set's hash.
const HASH_LINE: &str = "# recipients: sha256:";
/// The comment lines that list each recipient's fingerprint.
const TO_LINE: &str = "# to: ";
const HEADER: &str = "# kiln secret (age, ASCII armor). Edit with: kiln secret set NAME; re-encrypt with: kiln secret rekey";

/// Checks that a secret's name is plain path segments (letters, digits,
/// `.`, `_`, `-`), such as `mariadb/app_password`: a name never leads
/// outside `secrets/`.
pub fn validate_name(name: &str) -> Result<(), PolicyError> {
    let bad = |why: &str| {
        PolicyError::new(format!("secret name {name:?}: {why}"))
            .fix("use plain path segments of letters, digits, '.', '_' and '-', e.g. mariadb/app_password")
    };
    if name.is_empty() || name.len() > 200 {
        return Err(bad("must have 1 to 200 characters"));
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(bad("has an empty path segment"));
        }
        if seg.starts_with('.') {
            return Err(bad(
                "a segment starts with '.' ('..' and hidden files are refused)",
            ));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(
                "has a character other than letters, digits, '.', '_', '-'",
            ));
        }
    }
    Ok(())
}

/// Where a secret's file is in the repository.
pub fn path(repo: &Path, name: &str) -> PathBuf {
    repo.join(DIR).join(format!("{name}.age"))
}

/// The names of every secret file under `secrets/`, sorted.
pub fn names(repo: &Path) -> Vec<String> {
    let dir = repo.join(DIR);
    let mut out: Vec<String> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e
                .path()
                .strip_prefix(&dir)
                .ok()?
                .to_string_lossy()
                .to_string();
            rel.strip_suffix(".age")
                .filter(|n| validate_name(n).is_ok())
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out
}

/// One secret file as stored: who it is for, and the armored ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Hex sha256 of the sorted recipient keys ([`set_hash`]).
    pub recipients_hash: String,
    /// The fingerprint of each recipient ([`Key::fingerprint`]).
    pub to: BTreeSet<String>,
    pub armor: String,
}

/// The hash of a recipient set, by key only (a renamed person or host
/// keeps the hash): what `rekey` compares.
pub fn set_hash(keys: &[Key]) -> String {
    let sorted: BTreeSet<&str> = keys.iter().map(Key::as_str).collect();
    let mut h = Sha256::new();
    for k in sorted {
        h.update(k.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

impl SecretFile {
    pub fn parse(text: &str, file: &Path) -> Result<SecretFile, PolicyError> {
        let mut recipients_hash = None;
        let mut to = BTreeSet::new();
        let mut armor = String::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix(HASH_LINE) {
                recipients_hash = Some(h.trim().to_string());
            } else if let Some(t) = line.strip_prefix(TO_LINE) {
                to.insert(t.trim().to_string());
            } else if line.starts_with('#') || line.trim().is_empty() && armor.is_empty() {
                continue;
            } else {
                armor.push_str(line);
                armor.push('\n');
            }
        }
        let recipients_hash = recipients_hash.ok_or_else(|| {
            PolicyError::new("not a kiln secret file: no '# recipients:' line")
                .in_file(file)
                .fix("write it with kiln secret set NAME")
        })?;
        if !armor.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") {
            return Err(PolicyError::new("not an ASCII-armored age file")
                .in_file(file)
                .fix("write it with kiln secret set NAME"));
        }
        // The header parses without a key: a file mangled in transit or by
        // hand is found by `kiln check`, not by the host that needs it.
        if let Err(e) =
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(armor.as_bytes()))
        {
            return Err(PolicyError::new(format!("not a readable age file: {e}"))
                .in_file(file)
                .fix("write it again with kiln secret set NAME"));
        }
        Ok(SecretFile {
            recipients_hash,
            to,
            armor,
        })
    }

    pub fn load(repo: &Path, name: &str) -> Result<SecretFile, PolicyError> {
        let file = path(repo, name);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            PolicyError::new(format!("secret {name:?} cannot be read: {e}"))
                .in_file(&file)
                .fix(format!("set it: kiln secret set {name} < FILE"))
        })?;
        SecretFile::parse(&text, &file)
    }

    pub fn render(&self) -> String {
        let mut s = format!("{HEADER}\n{HASH_LINE}{}\n", self.recipients_hash);
        for t in &self.to {
            s.push_str(&format!("{TO_LINE}{t}\n"));
        }
        s.push_str(&self.armor);
        s
    }

    /// Encrypts `plaintext` to `keys`.
    pub fn encrypt(plaintext: &[u8], keys: &[Key]) -> Result<SecretFile, PolicyError> {
        if keys.is_empty() {
            return Err(PolicyError::new("a secret needs at least one recipient"));
        }
        let boxed: Vec<Box<dyn age::Recipient + Send>> =
            keys.iter().map(Key::recipient).collect::<Result<_, _>>()?;
        let enc = age::Encryptor::with_recipients(boxed.iter().map(|r| r.as_ref() as _))
            .map_err(|e| PolicyError::new(format!("cannot encrypt: {e}")))?;
        let mut out = Vec::new();
        let fail = |e: std::io::Error| PolicyError::new(format!("cannot encrypt: {e}"));
        let armored =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .map_err(fail)?;
        let mut w = enc.wrap_output(armored).map_err(fail)?;
        w.write_all(plaintext).map_err(fail)?;
        w.finish().and_then(|a| a.finish()).map_err(fail)?;
        Ok(SecretFile {
            recipients_hash: set_hash(keys),
            to: keys.iter().map(Key::fingerprint).collect(),
            armor: String::from_utf8(out).expect("armor is ASCII"),
        })
    }

    /// Decrypts with one identity; the error says why in words.
    pub fn decrypt(&self, identity: &Identity) -> Result<Vec<u8>, SecretError> {
        let fail = |e: &dyn std::fmt::Display| SecretError::Decrypt(e.to_string());
        let dec =
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(self.armor.as_bytes()))
                .map_err(|e| fail(&e))?;
        let ids: Vec<&dyn age::Identity> = identity.0.iter().map(|i| i.as_ref() as _).collect();
        let mut r = dec.decrypt(ids.into_iter()).map_err(|e| fail(&e))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| fail(&e))?;
        Ok(out)
    }
}

/// A private key that decrypts: an unencrypted OpenSSH ed25519 key (a
/// person's `~/.ssh/id_ed25519`, a host's `ssh_host_ed25519_key`) or an
/// age identity file (`AGE-SECRET-KEY-1...`).
pub struct Identity(Vec<Box<dyn age::Identity>>);

impl Identity {
    pub fn load(path: &Path) -> Result<Identity, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::IdentityUnreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Identity::parse(&text, path)
    }

    /// An identity from its file's text; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Identity, SecretError> {
        let invalid = |problem| SecretError::IdentityInvalid {
            path: path.to_path_buf(),
            problem,
        };
        if text.contains("AGE-SECRET-KEY-") {
            let file = age::IdentityFile::from_buffer(text.as_bytes())
                .map_err(|e| invalid(IdentityProblem::NotAgeIdentity(e.to_string())))?;
            let ids = file
                .into_identities()
                .map_err(|e| invalid(IdentityProblem::AgeIdentity(e.to_string())))?;
            return Ok(Identity(
                ids.into_iter()
                    .map(|i| i as Box<dyn age::Identity>)
                    .collect(),
            ));
        }
        match age::ssh::Identity::from_buffer(text.as_bytes(), Some(path.display().to_string())) {
            Ok(age::ssh::Identity::Unencrypted(k)) => {
                Ok(Identity(vec![Box::new(age::ssh::Identity::Unencrypted(k))]))
            }
            Ok(age::ssh::Identity::Encrypted(_)) => Err(invalid(IdentityProblem::Passphrase)),
            Ok(age::ssh::Identity::Unsupported(_)) | Err(_) => {
                Err(invalid(IdentityProblem::NotAKey))
            }
        }
    }
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename), so
/// that a secret file is never half-written.
pub fn write_file(path: &Path, text: &str) -> Result<(), PolicyError> {
    crate::platform::hostfile::replace_creating_dir(path, text.as_bytes())
        .map_err(|e| PolicyError::new(format!("cannot write: {e}")).in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_segments() {
        for ok in ["mariadb/app_password", "redis", "a/b/c-1.x"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", ".hidden", "a b", "a/", "x\0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip_and_header() {
        let id = age::x25519::Identity::generate();
        let key = Key::parse(&id.to_public().to_string()).unwrap();
        let f = SecretFile::encrypt(b"hunter2", std::slice::from_ref(&key)).unwrap();
        let text = f.render();
        assert!(!text.contains("hunter2"));
        let back = SecretFile::parse(&text, Path::new("x.age")).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.recipients_hash, set_hash(&[key]));
        let ident = Identity(vec![Box::new(id)]);
        assert_eq!(back.decrypt(&ident).unwrap(), b"hunter2");
        let other = Identity(vec![Box::new(age::x25519::Identity::generate())]);
        assert!(back.decrypt(&other).is_err());
    }

    #[test]
    fn malformed_files_are_refused_with_the_fix() {
        let p = Path::new("secrets/x.age");
        let e = SecretFile::parse("-----BEGIN AGE ENCRYPTED FILE-----\n", p).unwrap_err();
        assert!(e.message.contains("recipients"), "{e}");
        assert!(e.fix.unwrap().contains("kiln secret set"));
        let e = SecretFile::parse("# recipients: sha256:00\nhunter2\n", p).unwrap_err();
        assert!(e.message.contains("ASCII-armored"), "{e}");
        // A rekey compares hashes only: the same keys give the same header.
        let id = age::x25519::Identity::generate();
        let key = Key::parse(&id.to_public().to_string()).unwrap();
        let a = SecretFile::encrypt(b"v", std::slice::from_ref(&key)).unwrap();
        let b = SecretFile::encrypt(b"v", std::slice::from_ref(&key)).unwrap();
        assert_eq!(a.recipients_hash, b.recipients_hash);
        assert_eq!(a.to, b.to);
        assert_ne!(a.armor, b.armor, "age encrypts with a fresh file key");
    }

    #[test]
    fn set_hash_ignores_order() {
        let a = Key::parse(&age::x25519::Identity::generate().to_public().to_string()).unwrap();
        let b = Key::parse(&age::x25519::Identity::generate().to_public().to_string()).unwrap();
        assert_eq!(
            set_hash(&[a.clone(), b.clone()]),
            set_hash(&[b.clone(), a.clone()])
        );
        assert_ne!(set_hash(std::slice::from_ref(&a)), set_hash(&[a, b]));
    }
}
