//! `kiln secret set | show | list | rekey`: edit the encrypted secrets of
//! the repository. Values come in on standard input or from a file and go
//! out only through `show`, never through arguments.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, PolicyError, RunError};
use crate::fleet::inventory::Inventory;
use crate::fleet::secrets::{host_refs, inventory_path, roles_using};
use crate::policy::Repository;
use crate::secrets::recipients::{HostRef, KnownHosts, Recipient};
use crate::secrets::{
    Identity, Key, RecipientsFile, SecretFile, set_hash, validate_name, write_file,
};

/// What every secret command starts from.
pub struct Ctx {
    pub repo: PathBuf,
    /// Overrides the inventory the recipients file resolves roles with.
    pub inventory: Option<PathBuf>,
}

/// The recipients file with the fleet's hosts and their keys.
struct Resolved {
    file: RecipientsFile,
    hosts: Vec<HostRef>,
    known: KnownHosts,
}

impl Resolved {
    fn load(c: &Ctx) -> Result<Resolved, Error> {
        let repo = Repository::open(&c.repo)?;
        let file = RecipientsFile::load(&c.repo)?;
        let (hosts, known) = match inventory_path(&c.repo, &file, c.inventory.as_deref()) {
            Some(p) => {
                let inv = Inventory::load(&p)?;
                let known = KnownHosts::load(&inv.known_hosts)?;
                (host_refs(&repo, &inv), known)
            }
            None => (Vec::new(), KnownHosts::default()),
        };
        Ok(Resolved { file, hosts, known })
    }

    fn recipients(&self, name: &str) -> Result<Vec<Recipient>, Error> {
        let r = self.file.recipients(name, &self.hosts, &self.known)?;
        if r.is_empty() {
            return Err(PolicyError::new(format!(
                "secret {name:?} has no recipients: no person, and no host of the inventory has its roles"
            ))
            .in_file(&self.file.file)
            .fix("add people = [...] or hosts, or pass --inventory FILE")
            .into());
        }
        Ok(r)
    }
}

fn keys(r: &[Recipient]) -> Vec<Key> {
    r.iter().map(|r| r.key.clone()).collect()
}

fn labels(r: &[Recipient]) -> String {
    r.iter()
        .map(|r| r.label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `kiln secret set NAME [--file F]`: encrypts the value (standard input
/// by default; one trailing newline is dropped) to the secret's recipients.
pub fn set(c: &Ctx, name: &str, file: Option<&Path>) -> Result<i32, Error> {
    validate_name(name)?;
    let r = Resolved::load(c)?;
    let recipients = r.recipients(name)?;
    let mut value = Vec::new();
    match file {
        Some(f) => {
            value = std::fs::read(f).map_err(|e| Error::Io {
                context: format!("reading {}", f.display()),
                source: e,
            })?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(|e| Error::Io {
                    context: "reading the secret from standard input".into(),
                    source: e,
                })?;
        }
    }
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Error::Usage(format!(
            "secret {name}: the value is empty; pipe it in (kiln secret set {name} < FILE) or pass --file FILE"
        )));
    }
    if std::str::from_utf8(&value).is_err() || value.contains(&0) || value.contains(&1) {
        return Err(Error::Usage(format!(
            "secret {name}: the value must be UTF-8 text without NUL or \\u0001 bytes: templates hold it"
        )));
    }
    let f = SecretFile::encrypt(&value, &keys(&recipients))?;
    write_file(&crate::secrets::path(&c.repo, name), &f.render())?;
    println!(
        "secret {name}: encrypted to {} recipient(s): {}",
        recipients.len(),
        labels(&recipients)
    );
    Ok(0)
}

/// The identity to decrypt with: `--identity`, else `~/.ssh/id_ed25519`.
fn identity(given: Option<&Path>) -> Result<Identity, Error> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".ssh/id_ed25519")
        }
    };
    Identity::load(&path).map_err(|e| {
        RunError::precondition(e.to_string())
            .fix("pass --identity FILE (an ssh-ed25519 private key or an age identity file that is a recipient)")
            .into()
    })
}

fn decrypt(c: &Ctx, name: &str, id: &Identity) -> Result<(SecretFile, Vec<u8>), Error> {
    let f = SecretFile::load(&c.repo, name)?;
    let v = f.decrypt(id).map_err(|e| {
        RunError::precondition(format!(
            "secret {name}: cannot decrypt it with this identity ({e})"
        ))
        .fix(format!(
            "ask someone who is a recipient to add you to {} and run kiln secret rekey",
            crate::secrets::RECIPIENTS
        ))
    })?;
    Ok((f, v))
}

/// `kiln secret show NAME`: the value, on standard output.
pub fn show(c: &Ctx, name: &str, id: Option<&Path>) -> Result<i32, Error> {
    validate_name(name)?;
    let (_, v) = decrypt(c, name, &identity(id)?)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&v);
    if std::io::IsTerminal::is_terminal(&out) {
        let _ = writeln!(out);
    }
    Ok(0)
}

/// `kiln secret list`: each secret, who can read it, and which roles use it.
pub fn list(c: &Ctx) -> Result<i32, Error> {
    let r = Resolved::load(c)?;
    let repo = Repository::open(&c.repo)?;
    let uses = roles_using(&repo);
    let mut names: std::collections::BTreeSet<String> =
        crate::secrets::names(&c.repo).into_iter().collect();
    names.extend(r.file.secrets.keys().cloned());
    names.extend(uses.keys().cloned());
    if names.is_empty() {
        println!(
            "no secrets (declare them in {})",
            crate::secrets::RECIPIENTS
        );
    }
    for name in names {
        let state = match SecretFile::load(&c.repo, &name) {
            Err(_) if !crate::secrets::path(&c.repo, &name).exists() => "not set".to_string(),
            Err(e) => format!("unreadable: {}", e.message),
            Ok(f) => match r.recipients(&name) {
                Ok(want) if set_hash(&keys(&want)) == f.recipients_hash => "ok".into(),
                Ok(_) => "recipients changed: run kiln secret rekey".into(),
                Err(_) => "not declared in recipients.toml".into(),
            },
        };
        println!("{name}  [{state}]");
        match r.recipients(&name) {
            Ok(want) => println!("  recipients: {}", labels(&want)),
            Err(e) => println!(
                "  recipients: ({})",
                e.to_string().lines().next().unwrap_or("")
            ),
        }
        let roles = uses.get(&name).map(|v| v.join(", "));
        println!("  used by roles: {}", roles.as_deref().unwrap_or("(none)"));
    }
    Ok(0)
}

/// `kiln secret rekey`: re-encrypts the secrets whose recipient set
/// changed; the others are left byte for byte as they are.
pub fn rekey(c: &Ctx, id: Option<&Path>) -> Result<i32, Error> {
    let r = Resolved::load(c)?;
    let mut identity_cache: Option<Identity> = None;
    let (mut changed, mut same) = (0, 0);
    for name in crate::secrets::names(&c.repo) {
        let want = r.recipients(&name)?;
        let f = SecretFile::load(&c.repo, &name)?;
        if set_hash(&keys(&want)) == f.recipients_hash {
            same += 1;
            continue;
        }
        if identity_cache.is_none() {
            identity_cache = Some(identity(id)?);
        }
        let (_, value) = decrypt(c, &name, identity_cache.as_ref().expect("loaded"))?;
        let nf = SecretFile::encrypt(&value, &keys(&want))?;
        write_file(&crate::secrets::path(&c.repo, &name), &nf.render())?;
        println!(
            "rekeyed {name}: {} recipient(s): {}",
            want.len(),
            labels(&want)
        );
        changed += 1;
    }
    println!("kiln secret rekey: {changed} re-encrypted, {same} unchanged");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity that cannot be read is a failure with a fix, worded as before.
    #[test]
    fn an_unreadable_identity_says_to_pass_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_ed25519");
        let e = identity(Some(&path)).err().expect("no such identity");
        assert!(
            matches!(e, Error::Run(RunError::Precondition { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.render(),
            format!(
                "error: cannot read the identity {}: No such file or directory (os error 2); \
                 pass --identity FILE (an ssh-ed25519 private key or an age identity file that is a recipient)",
                path.display()
            )
        );
    }
}
