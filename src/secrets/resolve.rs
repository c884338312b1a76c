//! Where a compile gets the values of `{{secret "NAME"}}`: decrypted with
//! the target's host key, a random test value in `kiln test`, or a
//! placeholder in static checks. The template helper writes a marker;
//! the renderer swaps markers for values at the end, counting each use so
//! that the resource that used one becomes sensitive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{KeyInit, Mac};

use super::{Identity, SecretError, SecretFile};
use crate::platform::target::Target;

/// Where a compile gets the value of each secret it uses. The compile
/// itself touches no target: whatever a source needs from one (the host
/// key) its caller reads before compiling.
pub trait Secrets {
    /// The value of secret `name` (a valid name).
    fn value(&self, name: &str) -> Result<String, SecretError>;
    /// Whether the values are real ones, to be redacted wherever they
    /// appear and keyed into the fingerprint (placeholders are not).
    fn real(&self) -> bool {
        true
    }
}

/// Static compiles (`kiln check`, plans made off the target): the value
/// is [`PLACEHOLDER`], nothing is decrypted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placeholder;

impl Secrets for Placeholder {
    fn value(&self, _: &str) -> Result<String, SecretError> {
        Ok(PLACEHOLDER.to_string())
    }

    fn real(&self) -> bool {
        false
    }
}

/// `kiln test`: a random value per secret, from a key made once per
/// test run, so that both converges agree and no real value is needed.
#[derive(Debug, Clone)]
pub struct TestValues {
    key: Vec<u8>,
}

impl TestValues {
    pub fn new() -> TestValues {
        TestValues { key: random_key() }
    }

    /// The values of an earlier part of the same run: a `kiln test`
    /// checkpoint keeps its key, so what it holds still matches.
    pub fn with_key(key: Vec<u8>) -> TestValues {
        TestValues { key }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Default for TestValues {
    fn default() -> Self {
        TestValues::new()
    }
}

impl Secrets for TestValues {
    fn value(&self, name: &str) -> Result<String, SecretError> {
        Ok(test_value(&self.key, name))
    }
}

/// On the target, during converge: decrypted from the repository's
/// `secrets/` with the host's own key, which the caller read from the
/// target (through its confined file access) before compiling.
pub struct Decrypt {
    repo: PathBuf,
    /// The host key as read; a failure to read it matters only once a
    /// secret is used.
    identity: Result<Identity, SecretError>,
    identity_path: PathBuf,
    /// The node's name, for messages.
    host: String,
}

impl Decrypt {
    /// Secrets of `repo` for the host `host`, decrypted with `identity`.
    pub fn new(
        repo: &Path,
        identity: Result<Identity, SecretError>,
        identity_path: &Path,
        host: &str,
    ) -> Decrypt {
        Decrypt {
            repo: repo.to_path_buf(),
            identity,
            identity_path: identity_path.to_path_buf(),
            host: host.to_string(),
        }
    }

    /// Secrets decrypted with `target`'s ssh host key ([`super::HOST_IDENTITY`]).
    /// A policy without a `secrets/` folder has nothing to decrypt, so the
    /// key is not read (a value it names fails as not in the policy first).
    pub fn with_host_key(repo: &Path, target: &Target, host: &str) -> Decrypt {
        let path = Path::new("/").join(super::HOST_IDENTITY);
        let identity = if repo.join("secrets").is_dir() {
            target
                .fs()
                .read_to_string(&path)
                .map_err(|e| SecretError::IdentityUnreadable {
                    path: path.clone(),
                    reason: e.to_string(),
                })
                .and_then(|t| Identity::parse(&t, &path))
        } else {
            Err(SecretError::IdentityUnreadable {
                path: path.clone(),
                reason: "not read: the policy has no secrets".into(),
            })
        };
        Decrypt::new(repo, identity, &path, host)
    }
}

impl Secrets for Decrypt {
    fn value(&self, name: &str) -> Result<String, SecretError> {
        let file = SecretFile::load(&self.repo, name).map_err(|e| SecretError::NotInPolicy {
            name: name.to_string(),
            reason: e.message,
        })?;
        let not_for_host = |identity: Option<&Path>, cause: &SecretError| SecretError::NotForHost {
            name: name.to_string(),
            host: self.host.clone(),
            identity: identity.map(Path::to_path_buf),
            cause: Box::new(cause.clone()),
        };
        let id = self.identity.as_ref().map_err(|e| not_for_host(None, e))?;
        let bytes = file
            .decrypt(id)
            .map_err(|e| not_for_host(Some(&self.identity_path), &e))?;
        let text = String::from_utf8(bytes).map_err(|_| SecretError::NotText {
            name: name.to_string(),
        })?;
        if text.contains(CLOSE) || text.contains('\0') {
            return Err(SecretError::ControlBytes {
                name: name.to_string(),
            });
        }
        Ok(text)
    }
}

/// The value of every secret in static compiles.
pub const PLACEHOLDER: &str = "kiln-check-placeholder";
const OPEN: &str = "\u{1}kiln-secret:";
const CLOSE: char = '\u{1}';

/// What the template helper writes in place of a secret.
pub fn marker(name: &str) -> String {
    format!("{OPEN}{name}{CLOSE}")
}

/// Values of secrets for one compile: each asked of the source once,
/// every use counted.
pub struct Resolver<'s> {
    source: &'s dyn Secrets,
    values: Mutex<BTreeMap<String, String>>,
    used: Mutex<BTreeSet<String>>,
    uses: AtomicUsize,
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("used", &self.used())
            .field("uses", &self.uses())
            .finish_non_exhaustive()
    }
}

impl<'s> Resolver<'s> {
    pub fn new(source: &'s dyn Secrets) -> Resolver<'s> {
        Resolver {
            source,
            values: Mutex::new(BTreeMap::new()),
            used: Mutex::new(BTreeSet::new()),
            uses: AtomicUsize::new(0),
        }
    }

    /// How many secret values were substituted so far.
    pub fn uses(&self) -> usize {
        self.uses.load(Ordering::SeqCst)
    }

    /// The names of the secrets used so far.
    pub fn used(&self) -> BTreeSet<String> {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key that fingerprints file contents on a host that holds
    /// secrets: an HMAC over the values used, so that hosts with the same
    /// secrets compare equal, while a content hash never lets anyone test
    /// guesses of a secret. None when no real value was used.
    pub fn fingerprint_key(&self) -> Option<Vec<u8>> {
        if !self.source.real() {
            return None;
        }
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if values.is_empty() {
            return None;
        }
        let mut material = Vec::new();
        for (name, value) in values.iter() {
            material.extend_from_slice(name.as_bytes());
            material.push(0);
            material.extend_from_slice(value.as_bytes());
            material.push(0);
        }
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&material).expect("any key length");
        mac.update(b"kiln fingerprint key v1");
        Some(mac.finalize().into_bytes().to_vec())
    }

    /// Whether `text` holds a marker.
    pub fn has_marker(text: &str) -> bool {
        text.contains(OPEN)
    }

    /// Replaces every marker in `text` with its secret's value.
    pub fn substitute(&self, text: &str) -> Result<String, SecretError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(OPEN) {
            out.push_str(&rest[..i]);
            let after = &rest[i + OPEN.len()..];
            let end = after.find(CLOSE).ok_or(SecretError::MarkerCut)?;
            out.push_str(&self.value(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of one secret (asked of the source once per compile).
    pub fn value(&self, name: &str) -> Result<String, SecretError> {
        super::validate_name(name).map_err(|e| SecretError::Name(e.message))?;
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.uses.fetch_add(1, Ordering::SeqCst);
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(name) {
            return Ok(v.clone());
        }
        let v = self.source.value(name)?;
        if self.source.real() {
            super::redact::register(&v);
        }
        values.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

/// A random key for one test run (never written anywhere).
fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut key);
    }
    key
}

/// The test value of a secret: letters and digits (safe in SQL and shell
/// strings), different for each name.
fn test_value(key: &[u8], name: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(name.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("kilntest{}", hex::encode(&tag[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_substituted_and_counted() {
        let r = Resolver::new(&Placeholder);
        let text = format!("a={} b={}", marker("x/y"), marker("z"));
        assert_eq!(
            r.substitute(&text).unwrap(),
            format!("a={PLACEHOLDER} b={PLACEHOLDER}")
        );
        assert_eq!(r.uses(), 2);
        assert_eq!(r.used().into_iter().collect::<Vec<_>>(), ["x/y", "z"]);
        assert!(r.substitute(&marker("../etc")).is_err());
    }

    #[test]
    fn decrypts_with_the_identity_its_caller_read() {
        let d = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let key = super::super::Key::parse(&id.to_public().to_string()).unwrap();
        let file = SecretFile::encrypt(b"hunter2", &[key]).unwrap();
        let path = super::super::path(d.path(), "db/pw");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file.render()).unwrap();
        let key_file = Path::new("/etc/ssh/ssh_host_ed25519_key");
        let text = id.to_string();
        let identity = Identity::parse(
            &format!(
                "# test\n{}\n",
                age::secrecy::ExposeSecret::expose_secret(&text)
            ),
            key_file,
        );
        let good = Decrypt::new(d.path(), identity, key_file, "db01");
        assert_eq!(good.value("db/pw").unwrap(), "hunter2");
        let e = good.value("db/none").unwrap_err();
        assert!(
            e.to_string().contains("fix: kiln secret set db/none"),
            "{e}"
        );

        // An unreadable key matters only to a secret that is used.
        let unreadable = SecretError::IdentityUnreadable {
            path: key_file.to_path_buf(),
            reason: "No such file or directory (os error 2)".into(),
        };
        let none = Decrypt::new(d.path(), Err(unreadable), key_file, "db01");
        let e = none.value("db/pw").unwrap_err().to_string();
        assert_eq!(
            e,
            "secret \"db/pw\" cannot be decrypted on host db01: cannot read the identity /etc/ssh/ssh_host_ed25519_key: No such file or directory (os error 2); fix: make the host a recipient of \"db/pw\" in secrets/recipients.toml (by role or host), then run kiln secret rekey and converge again"
        );
    }

    #[test]
    fn test_values_are_random_per_run_stable_per_name() {
        let (ta, tb) = (TestValues::new(), TestValues::new());
        let a = Resolver::new(&ta);
        let b = Resolver::new(&tb);
        let v = a.value("db/pw").unwrap();
        assert_eq!(v, a.value("db/pw").unwrap());
        assert_ne!(v, a.value("other").unwrap());
        assert_ne!(v, b.value("db/pw").unwrap());
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric()));
        let again = TestValues::with_key(ta.key().to_vec());
        assert_eq!(Resolver::new(&again).value("db/pw").unwrap(), v);
        assert!(a.fingerprint_key().is_some());
        assert_ne!(a.fingerprint_key(), b.fingerprint_key());
        let p = Resolver::new(&Placeholder);
        p.value("db/pw").unwrap();
        assert_eq!(p.fingerprint_key(), None);
    }
}
