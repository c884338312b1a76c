//! Signed distribution: a bundle is trusted for its signature, not for where
//! it came from. Signatures are OpenSSH's (SSHSIG, as `ssh-keygen -Y sign`
//! makes them) in the namespace `kiln-bundle`, by an ed25519 key, checked
//! against an OpenSSH `allowed_signers` file (as `ssh-keygen -Y verify`
//! reads it). The cryptography is the `ssh-key` crate's.

use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::error::Error;

/// The SSHSIG namespace of bundle signatures: a signature made for anything
/// else (a git commit, a file) never verifies as a bundle's.
pub const NAMESPACE: &str = "kiln-bundle";
/// Where the `kiln` cookbook installs the signers hosts trust.
pub const ALLOWED_SIGNERS: &str = "/etc/kiln/allowed_signers";
/// The passphrase of an encrypted signing key (there is no prompt: kiln
/// often runs without a terminal).
pub const PASSPHRASE_ENV: &str = "KILN_SIGNING_KEY_PASSPHRASE";
/// Where the `kiln` cookbook keeps the allowed signers, inside a bundle.
pub const BUNDLED_ALLOWED_SIGNERS: &str = "cookbooks/kiln/files/allowed_signers";
/// Verification reads the bundle whole (SSHSIG hashes the message inside
/// the signed data); policy is text, far below this.
pub const MAX_SIGNED: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("signing key {path}: {reason}")]
    SigningKey { path: PathBuf, reason: String },
    #[error("allowed signers {path}: {reason}")]
    AllowedSigners { path: PathBuf, reason: String },
    #[error("{what}: unsigned (no signature {sig}); refused")]
    Unsigned { what: String, sig: String },
    #[error("{what}: bad signature ({reason}); refused")]
    BadSignature { what: String, reason: String },
    #[error(
        "{what}: signed by {key}, which is not in {allowed} (an unknown or revoked signer); refused"
    )]
    UnknownSigner {
        what: String,
        key: String,
        allowed: PathBuf,
    },
}

impl From<TrustError> for Error {
    fn from(e: TrustError) -> Self {
        Error::Trust(Box::new(e))
    }
}

/// The signature file beside a bundle: `bundle.tar.sig`, as `ssh-keygen -Y
/// sign` names it.
pub fn sig_path(file: &str) -> String {
    format!("{file}.sig")
}

/// An ed25519 private key in OpenSSH format (`ssh-keygen -t ed25519`).
pub struct SigningKey {
    key: PrivateKey,
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, TrustError> {
        let bad = |reason: String| TrustError::SigningKey {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut key = PrivateKey::from_openssh(&text).map_err(|e| {
            bad(format!(
                "not an OpenSSH private key ({e}); make one with ssh-keygen -t ed25519"
            ))
        })?;
        if key.is_encrypted() {
            let pass = std::env::var(PASSPHRASE_ENV).map_err(|_| {
                bad(format!(
                    "the key is encrypted: give its passphrase in {PASSPHRASE_ENV}"
                ))
            })?;
            key = key
                .decrypt(pass.as_bytes())
                .map_err(|e| bad(format!("cannot decrypt it with {PASSPHRASE_ENV}: {e}")))?;
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(bad(format!(
                "a {} key; bundles are signed with ed25519 keys (ssh-keygen -t ed25519)",
                key.algorithm()
            )));
        }
        Ok(SigningKey { key })
    }

    /// An armored SSHSIG signature of `data` (`-----BEGIN SSH SIGNATURE-----`).
    pub fn sign(&self, data: &[u8]) -> Result<String, TrustError> {
        let bad = |e: ssh_key::Error| TrustError::SigningKey {
            path: PathBuf::from("(loaded)"),
            reason: format!("cannot sign: {e}"),
        };
        self.key
            .sign(NAMESPACE, HashAlg::Sha512, data)
            .map_err(bad)?
            .to_pem(LineEnding::LF)
            .map_err(bad)
    }

    /// The public key's SHA256 fingerprint, for messages.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }
}

/// One line of an allowed_signers file.
#[derive(Debug)]
struct Signer {
    principals: String,
    /// `namespaces="..."`: the key signs only these.
    namespaces: Option<Vec<String>>,
    key: PublicKey,
}

/// An OpenSSH allowed_signers file (see ssh-keygen(1), ALLOWED SIGNERS):
/// `principals [options] keytype base64 [comment]` per line.
#[derive(Debug)]
pub struct AllowedSigners {
    path: PathBuf,
    signers: Vec<Signer>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::AllowedSigners {
            path: path.to_path_buf(),
            reason: format!(
                "cannot read it ({e}): the kiln cookbook installs it from {BUNDLED_ALLOWED_SIGNERS}"
            ),
        })?;
        AllowedSigners::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<AllowedSigners, TrustError> {
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TrustError::AllowedSigners {
                path: path.to_path_buf(),
                reason: format!("line {}: {reason}", n + 1),
            };
            let fields = split_fields(line);
            if fields.len() < 3 {
                return Err(bad(
                    "expected `principals [options] keytype base64-key [comment]`".into(),
                ));
            }
            let principals = fields[0].trim_matches('"').to_string();
            let is_keytype =
                |s: &str| s.starts_with("ssh-") || s.starts_with("ecdsa-") || s.starts_with("sk-");
            let (options, rest) = if is_keytype(&fields[1]) {
                (None, &fields[1..])
            } else {
                (Some(fields[1].as_str()), &fields[2..])
            };
            if rest.len() < 2 {
                return Err(bad("no public key after the options".into()));
            }
            let mut namespaces = None;
            for opt in options.map(split_options).unwrap_or_default() {
                let (k, v) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
                match k.to_ascii_lowercase().as_str() {
                    "namespaces" => {
                        namespaces = Some(
                            v.trim_matches('"')
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .collect(),
                        )
                    }
                    other => {
                        return Err(bad(format!(
                            "option {other:?} is not supported by kiln (only namespaces=\"...\"); \
                             give plain keys, and revoke a key by deleting its line"
                        )));
                    }
                }
            }
            let key = PublicKey::from_openssh(&format!("{} {}", rest[0], rest[1]))
                .map_err(|e| bad(format!("not an OpenSSH public key: {e}")))?;
            signers.push(Signer {
                principals,
                namespaces,
                key,
            });
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            signers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `sig` (armored SSHSIG) over `data`; returns the principals of
    /// the signer. `what` names the data in errors.
    pub fn verify(&self, what: &str, data: &[u8], sig: &str) -> Result<String, TrustError> {
        let bad = |reason: String| TrustError::BadSignature {
            what: what.to_string(),
            reason,
        };
        let sig = SshSig::from_pem(sig.trim().as_bytes())
            .map_err(|e| bad(format!("not an OpenSSH signature: {e}")))?;
        if sig.namespace() != NAMESPACE {
            return Err(bad(format!(
                "made for namespace {:?}, not {NAMESPACE:?}",
                sig.namespace()
            )));
        }
        let mut known = false;
        for s in &self.signers {
            if s.key.key_data() != sig.public_key() {
                continue;
            }
            known = true;
            if let Some(ns) = &s.namespaces
                && !ns.iter().any(|n| n == NAMESPACE)
            {
                continue;
            }
            return match s.key.verify(NAMESPACE, data, &sig) {
                Ok(()) => Ok(s.principals.clone()),
                Err(e) => Err(bad(format!(
                    "does not match the data, by {}'s key ({e})",
                    s.principals
                ))),
            };
        }
        let key = PublicKey::from(sig.public_key().clone())
            .fingerprint(HashAlg::Sha256)
            .to_string();
        if known {
            return Err(bad(format!(
                "{key} is allowed only for other namespaces in {}",
                self.path.display()
            )));
        }
        Err(TrustError::UnknownSigner {
            what: what.to_string(),
            key,
            allowed: self.path.clone(),
        })
    }

    /// Verifies `file` against the signature file `sig`.
    pub fn verify_file(&self, file: &Path, sig: &Path) -> Result<String, TrustError> {
        let what = file.display().to_string();
        let sig_text = match std::fs::read_to_string(sig) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrustError::Unsigned {
                    what,
                    sig: sig.display().to_string(),
                });
            }
            Err(e) => {
                return Err(TrustError::BadSignature {
                    what,
                    reason: format!("cannot read {}: {e}", sig.display()),
                });
            }
        };
        let bad = |reason: String| TrustError::BadSignature {
            what: what.clone(),
            reason,
        };
        let len = std::fs::metadata(file)
            .map_err(|e| bad(format!("cannot read it: {e}")))?
            .len();
        if len > MAX_SIGNED {
            return Err(bad(format!(
                "{len} bytes, more than a bundle may be ({MAX_SIGNED})"
            )));
        }
        let data = std::fs::read(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
        self.verify(&what, &data, &sig_text)
    }
}

/// Whitespace-separated fields, a double-quoted span kept whole.
fn split_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Comma-separated options, a double-quoted value kept whole.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Where a host remembers that it trusted a signer list: beside the list.
pub fn trusted_marker(allowed: &Path) -> std::path::PathBuf {
    let mut name = allowed.file_name().unwrap_or_default().to_os_string();
    name.push(".trusted");
    allowed.with_file_name(name)
}

/// The bundle's own copy of the signer list ([`BUNDLED_ALLOWED_SIGNERS`]):
/// `None` when the bundle is no readable tar archive, or holds no such
/// regular file, or holds it twice (which copy would count is unclear).
fn bundled_signers(bundle: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(bundle).ok()?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut found = None;
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if *entry.path_bytes() != *BUNDLED_ALLOWED_SIGNERS.as_bytes() {
            continue;
        }
        if found.is_some() || !entry.header().entry_type().is_file() {
            return None;
        }
        // A signer list is a few lines; a larger member is no signer list.
        let mut data = Vec::new();
        (&mut entry).take(1 << 20).read_to_end(&mut data).ok()?;
        found = Some(data);
    }
    found
}

/// A bundle whose signature holds.
#[derive(Debug)]
pub struct Verified {
    /// The principals of the signer's allowed_signers line.
    pub signer: String,
    /// The signer list that vouched for it: the host's, or on first
    /// contact the bundle's own copy.
    pub allowed_signers: PathBuf,
}

/// What a fleet host checks (`kiln verify-bundle`), with the kiln binary it
/// just checked, before it unpacks a pushed bundle. When the host has no
/// allowed_signers yet and `first_contact` is given, the bundle's own
/// `kiln` cookbook copy is used, once, as with a new host key.
pub fn verify_bundle(
    file: &Path,
    sig: &Path,
    allowed: &Path,
    first_contact: bool,
) -> Result<Verified, TrustError> {
    let marker = trusted_marker(allowed);
    if !allowed.exists() && first_contact && marker.exists() {
        return Err(TrustError::AllowedSigners {
            path: allowed.to_path_buf(),
            reason: format!(
                "missing on this host, which has trusted a signer list before ({} says so): \
                 a host never returns to first contact. Fix: put the signer list back by hand \
                 (the kiln cookbook's files/allowed_signers), then push again",
                marker.display()
            ),
        });
    }
    let signers = if !allowed.exists() && first_contact {
        let Some(bundled) = bundled_signers(file) else {
            return Err(TrustError::AllowedSigners {
                path: allowed.to_path_buf(),
                reason: format!(
                    "missing on this host, and the bundle has no {BUNDLED_ALLOWED_SIGNERS} to start from"
                ),
            });
        };
        let text = String::from_utf8_lossy(&bundled);
        AllowedSigners::parse(
            &text,
            &Path::new(&format!("{}:", file.display())).join(BUNDLED_ALLOWED_SIGNERS),
        )?
    } else {
        AllowedSigners::load(allowed)?
    };
    let who = signers.verify_file(file, sig)?;
    // From now on this host has trusted signers: remembered apart from the
    // list, so that losing the list never re-arms first contact. A fresh
    // host may have no directory for either yet; a first contact that
    // cannot be remembered does not happen.
    if !marker.exists() {
        let text = format!(
            "kiln: this host trusts the signers of {}; without that file it refuses every bundle\n",
            allowed.display()
        );
        let dir = marker.parent().unwrap_or(Path::new("/"));
        let kept = std::fs::create_dir_all(dir)
            .and_then(|_| crate::platform::hostfile::replace(&marker, text.as_bytes()));
        if let Err(e) = kept
            && !allowed.exists()
        {
            return Err(TrustError::AllowedSigners {
                path: allowed.to_path_buf(),
                reason: format!(
                    "first contact refused: cannot remember it in {} ({e}), and without that a later bundle could start over. Fix: make {} writable",
                    marker.display(),
                    dir.display()
                ),
            });
        }
    }
    Ok(Verified {
        signer: who,
        allowed_signers: signers.path().to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh key from ssh-keygen, and its public line.
    fn key() -> (SigningKey, String, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "t", "-f"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let public = std::fs::read_to_string(p.with_extension("pub")).unwrap();
        (SigningKey::load(&p).unwrap(), public.trim().to_string(), d)
    }

    #[test]
    fn signs_and_verifies_and_refuses() {
        let (k, public, _d) = key();
        let sig = k.sign(b"bundle").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        let allowed = AllowedSigners::parse(
            &format!("# ops\nops@example.com namespaces=\"kiln-bundle\" {public} laptop\n"),
            Path::new("allowed_signers"),
        )
        .unwrap();
        assert_eq!(
            allowed.verify("b", b"bundle", &sig).unwrap(),
            "ops@example.com"
        );
        let e = allowed.verify("b", b"forged", &sig).unwrap_err();
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
        let empty = AllowedSigners::parse("", Path::new("a")).unwrap();
        let e = empty.verify("b", b"bundle", &sig).unwrap_err();
        assert!(e.to_string().contains("unknown or revoked"), "{e}");
        let other_ns = AllowedSigners::parse(
            &format!("ops namespaces=\"git\" {public}\n"),
            Path::new("a"),
        )
        .unwrap();
        assert!(other_ns.verify("b", b"bundle", &sig).is_err());
        let e = AllowedSigners::parse(&format!("ops cert-authority {public}\n"), Path::new("a"))
            .unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn the_bundled_signer_list_is_read_once_and_only_as_a_file() {
        let d = tempfile::tempdir().unwrap();
        let bundle = |name: &str, members: &[(&str, tar::EntryType)]| {
            let p = d.path().join(name);
            let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
            for (path, kind) in members {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_size(if kind.is_file() { 4 } else { 0 });
                h.set_mode(0o644);
                let data: &[u8] = if kind.is_file() { b"ops\n" } else { b"" };
                b.append_data(&mut h, path, data).unwrap();
            }
            b.finish().unwrap();
            p
        };
        let file = tar::EntryType::Regular;
        let one = bundle(
            "one",
            &[("roles/web.toml", file), (BUNDLED_ALLOWED_SIGNERS, file)],
        );
        assert_eq!(bundled_signers(&one).as_deref(), Some(&b"ops\n"[..]));
        let none = bundle("none", &[("roles/web.toml", file)]);
        assert_eq!(bundled_signers(&none), None);
        let twice = bundle(
            "twice",
            &[
                (BUNDLED_ALLOWED_SIGNERS, file),
                (BUNDLED_ALLOWED_SIGNERS, file),
            ],
        );
        assert_eq!(bundled_signers(&twice), None);
        let dir = bundle(
            "dir",
            &[(BUNDLED_ALLOWED_SIGNERS, tar::EntryType::Directory)],
        );
        assert_eq!(bundled_signers(&dir), None);
        let not_tar = d.path().join("not-tar");
        std::fs::write(&not_tar, b"hello").unwrap();
        assert_eq!(bundled_signers(&not_tar), None);
    }
}
