//! Where a compile gets the values of `{{secret "NAME"}}`: decrypted on
//! the target with its host key, a random test value in `kiln test`, or a
//! placeholder in static checks. The template helper writes a marker;
//! the renderer swaps markers for values at the end, counting each use so
//! that the resource that used one becomes sensitive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{KeyInit, Mac};

use super::{Identity, SecretFile};

/// Where secret values come from.
#[derive(Debug, Clone, Default)]
pub enum Source {
    /// Static compiles (`kiln check`, plans made off the target): the
    /// value is [`PLACEHOLDER`], nothing is decrypted.
    #[default]
    Placeholder,
    /// On the target, during converge: decrypted from the repository's
    /// `secrets/` with `identity` (the host's ssh host key), read through
    /// the target's confined file access.
    Decrypt {
        repo: PathBuf,
        target: crate::platform::target::Target,
        identity: PathBuf,
        /// The node's name, for messages.
        host: String,
    },
    /// `kiln test`: a random value per secret, from a key made once per
    /// test run, so that both converges agree and no real value is needed.
    Test,
}

/// The value of every secret in static compiles.
pub const PLACEHOLDER: &str = "kiln-check-placeholder";
const OPEN: &str = "\u{1}kiln-secret:";
const CLOSE: char = '\u{1}';

/// What the template helper writes in place of a secret.
pub fn marker(name: &str) -> String {
    format!("{OPEN}{name}{CLOSE}")
}

/// Values of secrets for one compile.
#[derive(Debug)]
pub struct Resolver {
    source: Source,
    test_key: Vec<u8>,
    values: Mutex<BTreeMap<String, String>>,
    used: Mutex<BTreeSet<String>>,
    uses: AtomicUsize,
}

impl Resolver {
    pub fn new(source: Source) -> Resolver {
        let test_key = match source {
            Source::Test => random_key(),
            _ => Vec::new(),
        };
        Resolver {
            source,
            test_key,
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
        if matches!(self.source, Source::Placeholder) {
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
    pub fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(OPEN) {
            out.push_str(&rest[..i]);
            let after = &rest[i + OPEN.len()..];
            let end = after.find(CLOSE).ok_or("a secret marker is cut short")?;
            out.push_str(&self.value(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of one secret (decrypted once per compile).
    pub fn value(&self, name: &str) -> Result<String, String> {
        super::validate_name(name).map_err(|e| e.message)?;
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.uses.fetch_add(1, Ordering::SeqCst);
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(name) {
            return Ok(v.clone());
        }
        let v = match &self.source {
            Source::Placeholder => PLACEHOLDER.to_string(),
            Source::Test => test_value(&self.test_key, name),
            Source::Decrypt {
                repo,
                target,
                identity,
                host,
            } => decrypt(repo, target, identity, host, name)?,
        };
        if !matches!(self.source, Source::Placeholder) {
            super::redact::register(&v);
        }
        values.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

fn decrypt(
    repo: &std::path::Path,
    target: &crate::platform::target::Target,
    identity: &std::path::Path,
    host: &str,
    name: &str,
) -> Result<String, String> {
    let fix = format!(
        "make the host a recipient of {name:?} in {} (by role or host), then run kiln secret rekey and converge again",
        super::RECIPIENTS
    );
    let file = SecretFile::load(repo, name).map_err(|e| {
        format!(
            "secret {name:?} is not in the policy ({}); fix: kiln secret set {name}",
            e.message
        )
    })?;
    let text = target
        .fs()
        .read_to_string(identity)
        .map_err(|e| format!("cannot read the identity {}: {e}", identity.display()));
    let id = text
        .and_then(|t| Identity::parse(&t, identity))
        .map_err(|e| {
            format!("secret {name:?} cannot be decrypted on host {host}: {e}; fix: {fix}")
        })?;
    let bytes = file.decrypt(&id).map_err(|e| {
        format!(
            "secret {name:?} cannot be decrypted on host {host} with {} ({e}); fix: {fix}",
            identity.display()
        )
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("secret {name:?} is not UTF-8 text: templates can only hold text"))?;
    if text.contains(CLOSE) || text.contains('\0') {
        return Err(format!(
            "secret {name:?} holds control bytes \\u0001 or \\u0000"
        ));
    }
    Ok(text)
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
        let r = Resolver::new(Source::Placeholder);
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
    fn test_values_are_random_per_run_stable_per_name() {
        let a = Resolver::new(Source::Test);
        let b = Resolver::new(Source::Test);
        let v = a.value("db/pw").unwrap();
        assert_eq!(v, a.value("db/pw").unwrap());
        assert_ne!(v, a.value("other").unwrap());
        assert_ne!(v, b.value("db/pw").unwrap());
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(a.fingerprint_key().is_some());
        assert_ne!(a.fingerprint_key(), b.fingerprint_key());
        let p = Resolver::new(Source::Placeholder);
        p.value("db/pw").unwrap();
        assert_eq!(p.fingerprint_key(), None);
    }
}
