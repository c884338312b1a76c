//! Why a key, an identity or a secret's value could not be had. Each
//! message says what to do about it where kiln knows.

use std::fmt;
use std::path::PathBuf;

/// A problem with secrets: a key, an identity, or one secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// A recipient key that is not `ssh-ed25519 AAAA...`, `ssh-rsa ...` or `age1...`.
    Key(KeyError),
    /// An identity file that cannot be read.
    IdentityUnreadable { path: PathBuf, reason: String },
    /// An identity file that holds no usable private key.
    IdentityInvalid {
        path: PathBuf,
        problem: IdentityProblem,
    },
    /// The identity is no recipient of the file, or the file is damaged.
    Decrypt(String),
    /// A secret's name that is not plain path segments.
    Name(String),
    /// A secret marker without its end: the text was cut.
    MarkerCut,
    /// The policy names a secret that `secrets/` does not hold.
    NotInPolicy { name: String, reason: String },
    /// The host's identity cannot decrypt the secret (`identity` is the
    /// key file when it was read, else the reason is about reading it).
    NotForHost {
        name: String,
        host: String,
        identity: Option<PathBuf>,
        cause: Box<SecretError>,
    },
    /// A value that is not UTF-8 text.
    NotText { name: String },
    /// A value with the bytes kiln uses to mark secrets in rendered text.
    ControlBytes { name: String },
}

/// Why a recipient key does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    NotAge(String),
    Shape,
    Kind(String),
    Invalid { kind: String, reason: String },
}

/// Why an identity file holds no usable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityProblem {
    NotAgeIdentity(String),
    AgeIdentity(String),
    Passphrase,
    NotAKey,
}

impl From<KeyError> for SecretError {
    fn from(e: KeyError) -> Self {
        SecretError::Key(e)
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotAge(e) => write!(f, "not an age public key: {e}"),
            KeyError::Shape => f.write_str("expected \"ssh-ed25519 AAAA...\" or \"age1...\""),
            KeyError::Kind(kind) => write!(
                f,
                "{kind} keys cannot be recipients: use ssh-ed25519, ssh-rsa or an age key"
            ),
            KeyError::Invalid { kind, reason } => {
                write!(f, "not a valid {kind} public key: {reason}")
            }
        }
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Key(e) => e.fmt(f),
            SecretError::IdentityUnreadable { path, reason } => {
                write!(f, "cannot read the identity {}: {reason}", path.display())
            }
            SecretError::IdentityInvalid { path, problem } => {
                let path = path.display();
                match problem {
                    IdentityProblem::NotAgeIdentity(e) => {
                        write!(f, "{path}: not an age identity file: {e}")
                    }
                    IdentityProblem::AgeIdentity(e) => write!(f, "{path}: {e}"),
                    IdentityProblem::Passphrase => write!(
                        f,
                        "{path}: the key is protected by a passphrase, which kiln cannot ask for; use an age identity file (age-keygen) or an unencrypted key"
                    ),
                    IdentityProblem::NotAKey => write!(
                        f,
                        "{path}: not an ssh-ed25519 private key or an age identity file"
                    ),
                }
            }
            SecretError::Decrypt(e) | SecretError::Name(e) => f.write_str(e),
            SecretError::MarkerCut => f.write_str("a secret marker is cut short"),
            SecretError::NotInPolicy { name, reason } => write!(
                f,
                "secret {name:?} is not in the policy ({reason}); fix: kiln secret set {name}"
            ),
            SecretError::NotForHost {
                name,
                host,
                identity,
                cause,
            } => {
                let fix = format!(
                    "make the host a recipient of {name:?} in {} (by role or host), then run kiln secret rekey and converge again",
                    super::RECIPIENTS
                );
                match identity {
                    Some(id) => write!(
                        f,
                        "secret {name:?} cannot be decrypted on host {host} with {} ({cause}); fix: {fix}",
                        id.display()
                    ),
                    None => write!(
                        f,
                        "secret {name:?} cannot be decrypted on host {host}: {cause}; fix: {fix}"
                    ),
                }
            }
            SecretError::NotText { name } => write!(
                f,
                "secret {name:?} is not UTF-8 text: templates can only hold text"
            ),
            SecretError::ControlBytes { name } => {
                write!(f, "secret {name:?} holds control bytes \\u0001 or \\u0000")
            }
        }
    }
}

impl std::error::Error for SecretError {}
