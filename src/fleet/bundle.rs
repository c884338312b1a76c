//! A policy bundle: the repository's roles, cookbooks and whitelist, and a
//! node file per inventory host, as one deterministic tar archive (sorted
//! entries, fixed mtime, owner and mode), named by its sha256. The node
//! files ride inside so that the signature covers what a host is converged
//! as (fqdn, roles, attributes): on a host, only signed input counts.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::inventory::Host;
use crate::engine::NodeFile;
use crate::error::{Error, PolicyError};
use crate::platform::hostfile::replace;
use crate::policy::{PolicyFile, Repository};
use crate::serial::{BundleMeta, META};

/// Where a bundle keeps its node files: `nodes/FQDN.toml`.
pub const NODES: &str = "nodes";

/// The node file of `fqdn` in an unpacked bundle (it may not exist: a
/// bundle made without an inventory has none).
pub fn node_path(bundle: &Path, fqdn: &str) -> PathBuf {
    bundle.join(NODES).join(format!("{fqdn}.toml"))
}

/// A host's node file as the bundle carries it: its fqdn, its roles as the
/// run list, and its inventory attributes (ranked as node attributes).
fn node_file(h: &Host) -> Result<(String, Vec<u8>), Error> {
    let safe = !h.fqdn.is_empty()
        && !h.fqdn.starts_with('.')
        && h.fqdn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !safe {
        return Err(PolicyError::new(format!(
            "host {:?}: not a host name, so it cannot name its node file in the bundle",
            h.fqdn
        ))
        .fix("name the host by its fqdn: letters, digits, '.', '-' and '_'")
        .into());
    }
    let node = NodeFile {
        fqdn: Some(h.fqdn.clone()),
        run_list: h.roles.iter().map(|r| format!("role[{r}]")).collect(),
        size: None,
        attributes: h.attributes.clone(),
    };
    let text = toml::to_string(&node).map_err(|e| {
        PolicyError::new(format!(
            "host {}: its attributes cannot be written as TOML: {e}",
            h.fqdn
        ))
        .fix("give the host's attributes = {...} plain TOML values")
    })?;
    Ok((
        format!("{NODES}/{}.toml", h.fqdn),
        format!("# made by kiln fleet from the inventory: do not edit\n{text}").into_bytes(),
    ))
}

pub struct Bundle {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Policy and node files, the metadata not counted.
    pub files: usize,
    pub meta: BundleMeta,
}

/// The sha256 of a bundle's members but its metadata: what two builds of
/// one policy share, and what one serial must always name. Each member is
/// framed (name, executable bit, content), in name order.
pub fn content_digest<'a>(members: impl IntoIterator<Item = (&'a str, &'a [u8], bool)>) -> String {
    let mut sorted: Vec<_> = members.into_iter().filter(|m| m.0 != META).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, data, exec) in sorted {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update([u8::from(exec)]);
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

impl Bundle {
    /// The policy of `repo`, and a node file for each of `hosts` (the whole
    /// inventory, so that the bundle is the same whichever hosts a push
    /// selects), stamped with a new serial (or `serial`).
    pub fn build(repo: &Path, hosts: &[Host], serial: Option<u64>) -> Result<Bundle, Error> {
        let files = Repository {
            dir: repo.to_path_buf(),
            ..Repository::default()
        }
        .files()?;
        // (name, content, executable), sorted by name: policy files and
        // node files interleave in one order, whatever built them.
        let mut entries: Vec<(String, Vec<u8>, bool)> = Vec::new();
        for PolicyFile { rel, path } in &files {
            let data = std::fs::read(path).map_err(|e| Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            })?;
            let exec = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            };
            entries.push((rel.clone(), data, exec));
        }
        for h in hosts {
            let (rel, data) = node_file(h)?;
            entries.push((rel, data, false));
        }
        let files = entries.len();
        let meta = BundleMeta::now(
            serial,
            content_digest(
                entries
                    .iter()
                    .map(|(n, d, x)| (n.as_str(), d.as_slice(), *x)),
            ),
        );
        entries.push((META.to_string(), meta.to_toml().into_bytes(), false));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tar = tar::Builder::new(Vec::new());
        for (rel, data, exec) in &entries {
            // Nothing of the machine that built it: no times, owners or umask.
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(if *exec { 0o755 } else { 0o644 });
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, rel, data.as_slice())
                .map_err(|source| Error::Io {
                    context: format!("{rel}: cannot go into a bundle"),
                    source,
                })?;
        }
        let out = tar.into_inner().map_err(|e| Error::Io {
            context: "finishing the bundle".into(),
            source: e,
        })?;
        let sha256 = crate::digest::sha256_hex(&out);
        Ok(Bundle {
            bytes: out,
            sha256,
            files,
            meta,
        })
    }

    /// Writes `<sha>.tar`, and `NAME` + `NAME.sha256` (sha256sum format) as
    /// the current bundle, into `dir`. Returns the path of `NAME`.
    pub fn publish(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let by_hash = dir.join(format!("{}.tar", self.sha256));
        replace(&by_hash, &self.bytes).map_err(io(format!("writing {}", by_hash.display())))?;
        let current = dir.join(name);
        replace(&current, &self.bytes).map_err(io(format!("writing {}", current.display())))?;
        let sum = dir.join(format!("{name}.sha256"));
        replace(&sum, format!("{}  {name}\n", self.sha256).as_bytes())
            .map_err(io(format!("writing {}", sum.display())))?;
        Ok(current)
    }
}

/// Why a bundle was not unpacked; nothing of it was.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {what}: cannot read it: {source}")]
    Unreadable {
        what: String,
        source: std::io::Error,
    },
    #[error("bundle {what}: not a readable tar archive: {source}")]
    NotTar {
        what: String,
        source: std::io::Error,
    },
    /// A member a bundle may not hold: named, with the bundle.
    #[error(
        "bundle {what}: member {member:?} {why}; the bundle is refused whole, nothing unpacked. \
         Fix: publish bundles with kiln fleet bundle or kiln fleet converge, which write each policy file once, as a regular file"
    )]
    Member {
        what: String,
        member: String,
        why: String,
    },
    #[error(transparent)]
    Meta(#[from] crate::serial::RollbackError),
    #[error("unpacking into {dir}: {source}")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("renaming to {dest}: {source}")]
    Rename {
        dest: PathBuf,
        source: std::io::Error,
    },
}

/// The error text, where a caller keeps errors as text.
impl From<BundleError> for String {
    fn from(e: BundleError) -> String {
        e.to_string()
    }
}

fn refuse(what: &str, member: &[u8], why: &str) -> BundleError {
    BundleError::Member {
        what: what.to_string(),
        member: String::from_utf8_lossy(member).into_owned(),
        why: why.to_string(),
    }
}

/// Why a member's path is not a plain relative path inside the bundle.
fn bad_path(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("has no name");
    }
    if path.starts_with(b"/") {
        return Some("has an absolute path");
    }
    if path.contains(&0) {
        return Some("has a NUL byte in its name");
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.contains(&&b".."[..]) {
        return Some("leaves the bundle (a .. in its path)");
    }
    if parts.iter().any(|p| p.is_empty() || *p == b".") {
        return Some("is not a plain relative path (an empty or . part)");
    }
    None
}

/// Why a member of this type may not be in a bundle.
fn bad_type(t: tar::EntryType) -> Option<String> {
    use tar::EntryType as T;
    Some(match t {
        T::Regular => return None,
        T::Symlink => "is a symbolic link (bundles hold regular files only)".into(),
        T::Link => "is a hard link (bundles hold regular files only)".into(),
        T::Char | T::Block => "is a device node (bundles hold regular files only)".into(),
        T::Fifo => "is a FIFO (bundles hold regular files only)".into(),
        T::Directory => "is a directory entry (bundles hold regular files only)".into(),
        other => format!("is a tar entry of type {other:?} (bundles hold regular files only)"),
    })
}

/// A bundle read whole and checked: its files and its metadata.
pub struct Members {
    files: Vec<(String, Vec<u8>, bool)>,
    pub meta: Option<BundleMeta>,
}

/// Reads the bundle `tar` (named `what` in errors) whole, and refuses it
/// unless every member is a regular file at a plain relative path, once,
/// and its metadata matches its content.
pub fn read(tar: &Path, what: &str) -> Result<Members, BundleError> {
    let f = std::fs::File::open(tar).map_err(|source| BundleError::Unreadable {
        what: what.to_string(),
        source,
    })?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let not_tar = |source| BundleError::NotTar {
        what: what.to_string(),
        source,
    };
    let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in archive.entries().map_err(not_tar)? {
        use std::io::Read;
        let mut entry = entry.map_err(not_tar)?;
        let path = entry.path_bytes().into_owned();
        if let Some(why) = bad_type(entry.header().entry_type()) {
            return Err(refuse(what, &path, &why));
        }
        if let Some(why) = bad_path(&path) {
            return Err(refuse(what, &path, why));
        }
        let Ok(name) = String::from_utf8(path.clone()) else {
            return Err(refuse(what, &path, "has a name that is not UTF-8"));
        };
        if !seen.insert(name.clone()) {
            return Err(refuse(
                what,
                &path,
                "appears twice (a second copy would replace the first)",
            ));
        }
        let exec = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(not_tar)?;
        files.push((name, data, exec));
    }
    // A file where another member needs a directory.
    for (name, _, _) in &files {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let dir = &name[..at + i];
            if seen.contains(dir) {
                return Err(refuse(
                    what,
                    dir.as_bytes(),
                    &format!("is a file, and {name:?} needs it to be a directory"),
                ));
            }
            at += i + 1;
        }
    }
    let meta = match files.iter().find(|f| f.0 == META) {
        None => None,
        Some((_, data, _)) => {
            let meta =
                BundleMeta::parse(&String::from_utf8_lossy(data), &format!("bundle {what}"))?;
            let content =
                content_digest(files.iter().map(|(n, d, x)| (n.as_str(), d.as_slice(), *x)));
            if meta.content != content {
                return Err(refuse(
                    what,
                    META.as_bytes(),
                    "names other content than the bundle holds",
                ));
            }
            Some(meta)
        }
    };
    Ok(Members { files, meta })
}

impl Members {
    /// Writes the files into `dest`, replacing it whole: into a new
    /// directory beside it first, so a failure leaves `dest` as it was.
    pub fn write(&self, dest: &Path) -> Result<(), BundleError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = dest.with_extension(format!("unpack.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&tmp)?;
            for (name, data, exec) in &self.files {
                let path = tmp.join(name);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if *exec { 0o755 } else { 0o644 })
                    .open(&path)?
                    .write_all(data)?;
            }
            Ok(())
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(BundleError::Write { dir: tmp, source });
        }
        let _ = std::fs::remove_dir_all(dest);
        std::fs::rename(&tmp, dest).map_err(|source| BundleError::Rename {
            dest: dest.to_path_buf(),
            source,
        })
    }
}

/// Unpacks the bundle `tar` (named `what` in errors) into `dest`, replacing
/// it whole, once [`read`] accepted every member and `admit` its metadata;
/// otherwise nothing is unpacked. Returns the metadata. `admit`'s error
/// is the caller's, and so is the one returned.
pub fn unpack<E: From<BundleError>>(
    tar: &Path,
    what: &str,
    dest: &Path,
    admit: impl FnOnce(Option<&BundleMeta>) -> Result<(), E>,
) -> Result<Option<BundleMeta>, E> {
    let members = read(tar, what)?;
    admit(members.meta.as_ref())?;
    members.write(dest)?;
    Ok(members.meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unpackable() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        let long = format!("cookbooks/{}/recipes/default.toml", "x".repeat(120));
        for (p, c) in [
            ("roles/web.toml", "run_list = []\n"),
            ("whitelist.toml", "[packages]\n"),
            ("cookbooks/a/metadata.toml", "name = \"a\"\n"),
            (long.as_str(), "# long\n"),
        ] {
            let f = repo.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, c).unwrap();
        }
        let a = Bundle::build(&repo, &[], None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(repo.join("roles/web.toml"), "run_list = []\n").unwrap();
        let b = Bundle::build(&repo, &[], None).unwrap();
        // The same policy: the same content; only the stamp moved on.
        assert_eq!(a.meta.content, b.meta.content);
        assert!(b.meta.serial > a.meta.serial, "{:?} {:?}", a.meta, b.meta);
        let c = Bundle::build(&repo, &[], Some(a.meta.serial)).unwrap();
        assert_eq!(c.meta.serial, a.meta.serial);
        assert_eq!(a.files, 4);
        let tar = d.path().join("b.tar");
        std::fs::write(&tar, &a.bytes).unwrap();
        let out = d.path().join("out");
        assert_eq!(
            unpack::<BundleError>(&tar, "b.tar", &out, |_| Ok(()))
                .unwrap()
                .as_ref(),
            Some(&a.meta)
        );
        assert_eq!(
            std::fs::read_to_string(out.join(&long)).unwrap(),
            "# long\n"
        );
        assert!(out.join("roles/web.toml").is_file());
        std::fs::write(repo.join("whitelist.toml"), "[packages]\nx = \"1\"\n").unwrap();
        assert_ne!(
            Bundle::build(&repo, &[], None).unwrap().meta.content,
            a.meta.content
        );
    }

    fn host(fqdn: &str, port: i64) -> Host {
        let attributes: toml::Table =
            toml::from_str(&format!("[memcached]\nport = {port}\n")).unwrap();
        Host {
            fqdn: fqdn.into(),
            address: "10.0.0.1".into(),
            port: 22,
            user: "root".into(),
            roles: vec!["cache".into()],
            canary: false,
            attributes,
            line: 1,
        }
    }

    #[test]
    fn node_files_are_inside_the_hashed_bundle() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir_all(repo.join("roles")).unwrap();
        std::fs::write(repo.join("roles/cache.toml"), "run_list = []\n").unwrap();
        let a = Bundle::build(&repo, &[host("c1.example.com", 11212)], None).unwrap();
        assert_eq!(a.files, 2);
        // Deterministic, and an attribute is part of what is hashed (and so
        // of what is signed).
        let again = Bundle::build(&repo, &[host("c1.example.com", 11212)], None).unwrap();
        assert_eq!(again.meta.content, a.meta.content);
        let other = Bundle::build(&repo, &[host("c1.example.com", 11213)], None).unwrap();
        assert_ne!(other.meta.content, a.meta.content);
        assert_ne!(
            Bundle::build(&repo, &[], None).unwrap().meta.content,
            a.meta.content
        );
        // The host reads it back as a node file of its own fqdn.
        let tar = d.path().join("b.tar");
        std::fs::write(&tar, &a.bytes).unwrap();
        let out = d.path().join("out");
        unpack::<BundleError>(&tar, "b.tar", &out, |_| Ok(())).unwrap();
        let node: NodeFile =
            toml::from_str(&std::fs::read_to_string(node_path(&out, "c1.example.com")).unwrap())
                .unwrap();
        assert_eq!(node.fqdn.as_deref(), Some("c1.example.com"));
        assert_eq!(node.run_list, ["role[cache]"]);
        assert_eq!(
            node.attributes["memcached"]["port"].as_integer(),
            Some(11212)
        );
        // A name that is not a host name cannot name a file in the bundle.
        let e = Bundle::build(&repo, &[host("../x", 1)], None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a host name"), "{e}");
    }

    /// A tar of `(name, content)` regular files, names written as given.
    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn metadata_must_match_what_the_bundle_holds() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("b.tar");
        let read_back = |members: &[(&str, &[u8])]| {
            std::fs::write(&file, tar_of(members)).unwrap();
            read(&file, "b.tar")
        };
        let policy: &[u8] = b"run_list = []\n";
        let content = content_digest([("roles/web.toml", policy, false)]);
        let meta = BundleMeta {
            serial: 3,
            created: "2026-01-01T00:00:00.000Z".into(),
            content,
        };
        let text = meta.to_toml();
        let ok = read_back(&[("roles/web.toml", policy), (META, text.as_bytes())]).unwrap();
        assert_eq!(ok.meta, Some(meta.clone()));
        // No metadata: a bundle of an older kiln (the caller decides).
        assert_eq!(read_back(&[("roles/web.toml", policy)]).unwrap().meta, None);
        // Metadata that names other content, or is not metadata at all.
        let e = read_back(&[
            ("roles/web.toml", b"run_list = [\"x\"]\n"),
            (META, text.as_bytes()),
        ])
        .err()
        .unwrap();
        assert!(e.to_string().contains("names other content"), "{e}");
        let e = read_back(&[("roles/web.toml", policy), (META, b"serial = \"new\"\n")])
            .err()
            .unwrap();
        assert!(e.to_string().contains("not kiln bundle metadata"), "{e}");
        let e = read_back(&[("roles/./web.toml", policy)]).err().unwrap();
        assert!(e.to_string().contains("not a plain relative path"), "{e}");
        let e = read_back(&[("roles", policy), ("roles/web.toml", policy)])
            .err()
            .unwrap();
        assert!(e.to_string().contains("needs it to be a directory"), "{e}");
    }
}
