//! A throwaway OpenPGP key for signing test apt repositories, made with gpg
//! in batch mode in a GNUPGHOME of its own, so that tests check signatures
//! the way apt checks Debian's without touching anyone's keyring.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

pub struct SigningKey {
    home: TempDir,
}

impl SigningKey {
    /// A new Ed25519 signing key with no passphrase, named `name`.
    pub fn new(name: &str) -> SigningKey {
        let home = tempfile::Builder::new()
            .prefix("kiln-gpg-")
            .tempdir()
            .unwrap();
        let key = SigningKey { home };
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("kiln test {name} <{name}@kiln.test>"),
            "ed25519",
            "sign",
            "never",
        ]);
        key
    }

    /// The public key, armored: what a policy repository keeps as `*.asc`.
    pub fn public_armored(&self) -> Vec<u8> {
        self.gpg(&["--armor", "--export"])
    }

    /// Signs an apt `Release` file as an archive does: `InRelease` (inline)
    /// and `Release.gpg` (detached) beside it.
    pub fn sign_release(&self, release: &Path) {
        let dir = release.parent().unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let release = release.to_str().unwrap();
        self.gpg(&[
            "--passphrase",
            "",
            "--clearsign",
            "-o",
            &path("InRelease"),
            release,
        ]);
        self.gpg(&[
            "--passphrase",
            "",
            "--armor",
            "--detach-sign",
            "-o",
            &path("Release.gpg"),
            release,
        ]);
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("gpg runs (scripts/test installs it)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for SigningKey {
    /// gpg leaves an agent running for its home; the tests leave nothing
    /// running behind them.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}
