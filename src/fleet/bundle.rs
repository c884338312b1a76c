//! A policy bundle: the repository's roles, cookbooks and whitelist, and a
//! node file per inventory host, as one deterministic tar archive (sorted
//! entries, fixed mtime, owner and mode), named by its sha256. The node
//! files ride inside so that the signature covers what a host is converged
//! as (fqdn, roles, attributes): on a host, only signed input counts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::inventory::Host;
use crate::engine::NodeFile;
use crate::error::{Error, PolicyError};
use crate::policy::{PolicyFile, Repository};

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
    pub files: usize,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex(&h.finalize()))
}

impl Bundle {
    /// The policy of `repo`, and a node file for each of `hosts` (the whole
    /// inventory, so that the bundle is the same whichever hosts a push
    /// selects).
    pub fn build(repo: &Path, hosts: &[Host]) -> Result<Bundle, Error> {
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
                .map_err(|e| Error::Usage(format!("{rel}: cannot go into a bundle: {e}")))?;
        }
        let out = tar.into_inner().map_err(|e| Error::Io {
            context: "finishing the bundle".into(),
            source: e,
        })?;
        let sha256 = sha256_hex(&out);
        Ok(Bundle {
            bytes: out,
            sha256,
            files: entries.len(),
        })
    }

    /// Writes `<sha>.tar`, and `NAME` + `NAME.sha256` (sha256sum format) as
    /// the current bundle, into `dir`. Returns the path of `NAME`.
    pub fn publish(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let by_hash = dir.join(format!("{}.tar", self.sha256));
        write_atomic(&by_hash, &self.bytes)
            .map_err(io(format!("writing {}", by_hash.display())))?;
        let current = dir.join(name);
        write_atomic(&current, &self.bytes)
            .map_err(io(format!("writing {}", current.display())))?;
        let sum = dir.join(format!("{name}.sha256"));
        write_atomic(&sum, format!("{}  {name}\n", self.sha256).as_bytes())
            .map_err(io(format!("writing {}", sum.display())))?;
        Ok(current)
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Unpacks a bundle into `dest`, replacing it whole; entries that would
/// land outside it are refused.
pub fn unpack(tar: &Path, dest: &Path) -> Result<(), String> {
    let tmp = dest.with_extension(format!("unpack.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let unpacked = std::fs::File::open(tar).and_then(|f| {
        let mut a = tar::Archive::new(f);
        a.set_preserve_ownerships(false);
        a.unpack(&tmp)
    });
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("unpacking {}: {e}", tar.display()));
    }
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&tmp, dest).map_err(|e| format!("renaming to {}: {e}", dest.display()))
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
        let a = Bundle::build(&repo, &[]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(repo.join("roles/web.toml"), "run_list = []\n").unwrap();
        let b = Bundle::build(&repo, &[]).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.files, 4);
        let tar = d.path().join("b.tar");
        std::fs::write(&tar, &a.bytes).unwrap();
        let out = d.path().join("out");
        unpack(&tar, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(&long)).unwrap(),
            "# long\n"
        );
        assert!(out.join("roles/web.toml").is_file());
        std::fs::write(repo.join("whitelist.toml"), "[packages]\nx = \"1\"\n").unwrap();
        assert_ne!(Bundle::build(&repo, &[]).unwrap().sha256, a.sha256);
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
        let a = Bundle::build(&repo, &[host("c1.example.com", 11212)]).unwrap();
        assert_eq!(a.files, 2);
        // Deterministic, and an attribute is part of what is hashed (and so
        // of what is signed).
        let again = Bundle::build(&repo, &[host("c1.example.com", 11212)]).unwrap();
        assert_eq!(again.sha256, a.sha256);
        let other = Bundle::build(&repo, &[host("c1.example.com", 11213)]).unwrap();
        assert_ne!(other.sha256, a.sha256);
        assert_ne!(Bundle::build(&repo, &[]).unwrap().sha256, a.sha256);
        // The host reads it back as a node file of its own fqdn.
        let tar = d.path().join("b.tar");
        std::fs::write(&tar, &a.bytes).unwrap();
        let out = d.path().join("out");
        unpack(&tar, &out).unwrap();
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
        let e = Bundle::build(&repo, &[host("../x", 1)]).err().unwrap();
        assert!(e.to_string().contains("not a host name"), "{e}");
    }
}
