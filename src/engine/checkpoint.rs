//! Checkpoints of a first converge into a throwaway tree (`kiln test`, a
//! dev VM image build), treated like a build's steps.
//! The converge stops after each apt transaction (and at its end), and the
//! overlay's upper directory is kept as a layer under `~/.cache/kiln`,
//! keyed by a hash of everything that led to it. A later test of the role
//! mounts the deepest layer whose key still matches over the base root and
//! converges only the rest.
//!
//! A key chains: the seed (kiln's own binary, the base root, the release,
//! the node, the apt index) and then, resource by resource, each one as
//! compiled (rendered content, attributes, pins) with the package set its
//! pin resolved to. A change anywhere re-runs from the first checkpoint it
//! precedes. Secrets are hashed as their placeholders: the test values a
//! chain was converged with are kept with it and used again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fs2::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::Pending;
use crate::engine::Policy;
use crate::error::RunError;
use crate::platform::rootfs::Overlay;

/// The store's size, unless `KILN_CHECKPOINT_MAX_GB` says otherwise.
const DEFAULT_LIMIT_GB: u64 = 10;
/// Bumped when what a layer holds, or how a key is made, changes.
const FORMAT: &str = "kiln-checkpoint/1";

/// Where a first converge may stop and keep its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The last resource the part runs (its index in the policy).
    pub until: usize,
    /// How reports name that resource.
    pub resource: String,
    pub key: String,
}

/// After each apt transaction (the end of a run of package resources) and
/// after the last resource. Each cut is a process and a layer, so none
/// where little was done: at least one package transaction, or the end.
pub fn cuts(
    policy: &Policy,
    repo: &Path,
    seed: &[u8],
    part_of: &dyn Fn(usize) -> String,
) -> Vec<Cut> {
    let rs = &policy.resources;
    let mut out = Vec::new();
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(seed);
    for (i, r) in rs.iter().enumerate() {
        // Where the repository is checked out is not what it says.
        let text = describe(policy, i).replace(&*repo.to_string_lossy(), "<repo>");
        h.update(text.as_bytes());
        h.update(part_of(i).as_bytes());
        let batches = r.imp.batch_key().is_some();
        let ends_batch = batches && rs.get(i + 1).is_none_or(|n| n.imp.batch_key().is_none());
        if ends_batch || i + 1 == rs.len() {
            out.push(Cut {
                until: i,
                resource: policy.shown_id(i),
                key: hex::encode(&h.clone().finalize()[..16]),
            });
        }
    }
    out
}

/// Resource `i` as compiled, without where it was written: a comment added
/// to a recipe moves lines, not the target.
fn describe(policy: &Policy, i: usize) -> String {
    let r = &policy.resources[i];
    format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}\n{}\n{}\n{:?}\n",
        r.id, r.actions, r.notifies, r.only_if, r.not_if, r.ignore_failure, r.sensitive, r.imp
    )
}

/// The digest of kiln's own binary: a new kiln may converge differently.
pub fn kiln_digest() -> Result<String, RunError> {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(d) = DIGEST.get() {
        return Ok(d.clone());
    }
    let d = crate::digest::sha256_file(Path::new("/proc/self/exe"))
        .map_err(|e| RunError::io("read", "/proc/self/exe", e))?;
    Ok(DIGEST.get_or_init(|| d).clone())
}

/// The apt index a tree's transactions resolve against: its Release files
/// name every list's hash. Of several directories staged one over the
/// other (a base root's, then kiln's cached index), a later one's file
/// stands for an earlier one's of the same name.
pub fn index_digest(lists: &[&Path]) -> String {
    let mut files: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for dir in lists {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().ends_with("Release") {
                files.insert(name, e.path());
            }
        }
    }
    let mut h = Sha256::new();
    for (name, path) in files {
        h.update(name.as_encoded_bytes());
        h.update(fs::read(&path).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// The key of the test values of secrets for a chain's `seed` (hex).
pub fn test_key(seed: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kiln test values\n");
    h.update(seed.as_bytes());
    hex::encode(h.finalize())
}

/// What is kept beside a layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    /// The layer below this one; none over the base root.
    pub parent: Option<String>,
    pub until: usize,
    pub total: usize,
    pub resource: String,
    /// Delayed notifications the converge fired before the cut.
    pub pending: Vec<Pending>,
    /// The key of the test values the chain was converged with (hex).
    pub test_key: String,
    pub bytes: u64,
}

impl Meta {
    /// A start here as the reports say it: `from checkpoint 37/43 (package[x])`.
    pub fn shown(&self) -> String {
        format!(
            "from checkpoint {}/{} ({})",
            self.until + 1,
            self.total,
            self.resource
        )
    }
}

/// Where to start: the layers, top first, and the checkpoint's record.
pub struct Start {
    pub layers: Vec<PathBuf>,
    pub meta: Meta,
}

/// A tree converged in parts: an overlay of the kept layers, topmost
/// first, over a base root, remounted with each new layer on top.
pub struct Layers {
    base: PathBuf,
    work: PathBuf,
    name: String,
    layers: Vec<PathBuf>,
    /// The key of the topmost layer; none over the base root alone.
    top: Option<String>,
}

impl Layers {
    /// Over `base`, with overlays under `work` (a [`Store::work_dir`]).
    pub fn new(base: &Path, work: &Path, name: &str) -> Layers {
        Layers {
            base: base.to_path_buf(),
            work: work.to_path_buf(),
            name: name.to_string(),
            layers: Vec::new(),
            top: None,
        }
    }

    /// Starts from a checkpoint `find` returned instead of the base root.
    pub fn start_from(&mut self, start: Start) -> Meta {
        self.layers = start.layers;
        self.top = Some(start.meta.key.clone());
        start.meta
    }

    /// The key of the topmost layer; none over the base root alone.
    pub fn top(&self) -> Option<&str> {
        self.top.as_deref()
    }

    /// A writable overlay of every layer over the base root.
    pub fn mount(&self) -> Result<Overlay, RunError> {
        let mut all = self.layers.clone();
        all.push(self.base.clone());
        // Named with this process's id: see [`Store::open`].
        let name = format!("{}-{}", self.name, std::process::id());
        Overlay::stacked(&all, &self.work, &name)
    }

    /// Keeps what `overlay` changed as the layer of `meta` (its parent is
    /// the layer below), then mounts the tree again with it on top.
    pub fn keep(
        &mut self,
        store: &Store,
        overlay: Overlay,
        meta: Meta,
    ) -> Result<Overlay, RunError> {
        let key = meta.key.clone();
        let meta = Meta {
            parent: self.top.clone(),
            ..meta
        };
        let unmounted = overlay.unmount()?;
        let layer = store.keep(&unmounted.upper(), meta)?;
        drop(unmounted);
        self.layers.insert(0, layer);
        self.top = Some(key);
        self.mount()
    }
}

/// The checkpoints under `~/.cache/kiln/checkpoints`, one directory per key
/// (`layer/` and `meta.json`), used least recently first out.
pub struct Store {
    dir: PathBuf,
    limit: u64,
}

impl Store {
    pub fn open() -> Result<Store, RunError> {
        let dir = crate::platform::rootfs::cache_dir().join("checkpoints");
        fs::create_dir_all(dir.join("work"))
            .map_err(|e| RunError::io("create", dir.display(), e))?;
        // The layers hold test values of secrets: the owner's only.
        let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        clean_work(&dir.join("work"));
        let gb = std::env::var("KILN_CHECKPOINT_MAX_GB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_LIMIT_GB);
        Ok(Store {
            dir,
            limit: gb << 30,
        })
    }

    /// Overlays whose upper directory may become a layer live here, on
    /// the store's filesystem, so that keeping one is a rename.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn lock(&self) -> Result<fs::File, RunError> {
        let path = self.dir.join("lock");
        let f = fs::File::create(&path).map_err(|e| RunError::io("open", path.display(), e))?;
        f.lock_exclusive()
            .map_err(|e| RunError::io("lock", path.display(), e))?;
        Ok(f)
    }

    fn meta(&self, key: &str) -> Option<Meta> {
        let text = fs::read(self.dir.join(key).join("meta.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// An answer kept earlier under `key` (`answers/KEY.json`): what a
    /// slow question about the same inputs said, such as the packages a
    /// role's pins resolve to with one apt index.
    pub fn answer<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let path = self.dir.join("answers").join(format!("{key}.json"));
        let text = fs::read(&path).ok()?;
        touch(&path);
        serde_json::from_slice(&text).ok()
    }

    /// Keeps `value` as the answer under `key`; written whole or not at all.
    pub fn keep_answer<T: Serialize>(&self, key: &str, value: &T) {
        let dir = self.dir.join("answers");
        let _ = fs::create_dir_all(&dir);
        let json = serde_json::to_vec(value).unwrap_or_default();
        let _ = crate::platform::hostfile::replace_with(&dir.join(format!("{key}.json")), |f| {
            io::Write::write_all(f, &json)
        });
    }

    /// The deepest of `cuts` kept whole (its layer and every one below),
    /// marked as used now.
    pub fn find(&self, cuts: &[Cut]) -> Result<Option<Start>, RunError> {
        let _lock = self.lock()?;
        for cut in cuts.iter().rev() {
            let Some(meta) = self.meta(&cut.key) else {
                continue;
            };
            let mut layers = Vec::new();
            let mut next = Some(meta.key.clone());
            let mut whole = true;
            while let Some(k) = next {
                let layer = self.dir.join(&k).join("layer");
                match self.meta(&k) {
                    Some(m) if layer.is_dir() && layers.len() < cuts.len() => {
                        layers.push(layer);
                        next = m.parent;
                    }
                    _ => {
                        whole = false;
                        break;
                    }
                }
            }
            if !whole {
                continue;
            }
            for l in &layers {
                touch(&l.with_file_name("meta.json"));
            }
            return Ok(Some(Start { layers, meta }));
        }
        Ok(None)
    }

    /// Keeps `upper` (an unmounted overlay's upper directory) as the layer
    /// of `meta.key`, then evicts the least recently used layers over the
    /// limit. A layer another test kept first wins; this one is dropped.
    pub fn keep(&self, upper: &Path, mut meta: Meta) -> Result<PathBuf, RunError> {
        // The package files apt was given are kiln's cache's, not the tree's.
        for dir in ["var/cache/apt/archives", "var/cache/apt/archives/partial"] {
            if let Ok(entries) = fs::read_dir(upper.join(dir)) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().ends_with(".deb") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        meta.bytes = size_of(upper);
        let staging = self.staging(&meta.key);
        fs::create_dir_all(&staging).map_err(|e| RunError::io("create", staging.display(), e))?;
        if let Err(e) = fs::rename(upper, staging.join("layer")) {
            crate::platform::rootfs::remove_tree(&staging);
            return Err(RunError::io("keep", upper.display(), e));
        }
        self.publish(&staging, &meta)?;
        Ok(self.dir.join(&meta.key).join("layer"))
    }

    /// A fresh place to put a checkpoint together before [`Store::publish`].
    fn staging(&self, key: &str) -> PathBuf {
        self.dir.join(format!(
            "{key}.new-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ))
    }

    /// Writes `meta` beside the layer in `staging` and puts the checkpoint
    /// in place under the store's lock, then evicts the least recently
    /// used over the limit. A checkpoint another test kept first wins
    /// (the same changes): `staging` is dropped.
    fn publish(&self, staging: &Path, meta: &Meta) -> Result<(), RunError> {
        let json = serde_json::to_vec_pretty(meta).unwrap_or_default();
        let path = staging.join("meta.json");
        fs::write(&path, json).map_err(|e| RunError::io("write", path.display(), e))?;
        let _lock = self.lock()?;
        let dest = self.dir.join(&meta.key);
        if dest.join("meta.json").is_file() {
            crate::platform::rootfs::remove_tree(staging);
            return Ok(());
        }
        let _ = fs::remove_dir_all(&dest);
        fs::rename(staging, &dest).map_err(|e| RunError::io("keep", dest.display(), e))?;
        self.evict(&meta.key);
        Ok(())
    }

    /// Keeps a copy of `upper`, the upper directory of an overlay still in
    /// use (its processes frozen), as the layer of `meta.key`: over the
    /// layers the overlay was mounted with, or over the last copy of the
    /// same upper directory (`prev`), with what changed since. Returns this
    /// copy, for the next. The copy is made outside the store's lock, then
    /// put in place.
    pub fn keep_copy(
        &self,
        upper: &Path,
        mut meta: Meta,
        prev: Option<&Copied>,
    ) -> Result<Copied, RunError> {
        let staging = self.staging(&meta.key);
        fs::create_dir_all(&staging).map_err(|e| RunError::io("create", staging.display(), e))?;
        let layer = staging.join("layer");
        if let Some(p) = prev {
            meta.parent = Some(p.key.clone());
        }
        let manifest = match copy_layer(upper, &layer, prev.map(|p| &p.manifest)) {
            Ok(m) => m,
            Err(e) => {
                crate::platform::rootfs::remove_tree(&staging);
                return Err(RunError::io("copy", upper.display(), e));
            }
        };
        meta.bytes = size_of(&layer);
        self.publish(&staging, &meta)?;
        Ok(Copied {
            key: meta.key,
            manifest,
        })
    }

    /// Removes the least recently used checkpoints until the store fits
    /// its limit, never `keep` (just made), and anything half-kept.
    fn evict(&self, keep: &str) {
        let mut all: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".new") {
                // A test killed while keeping a layer (one keeping it now
                // touched it within the hour).
                let age =
                    (e.metadata().and_then(|m| m.modified()).ok()).and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a.as_secs() > 3600) {
                    crate::platform::rootfs::remove_tree(&e.path());
                }
                continue;
            }
            let Some(meta) = self.meta(&name) else {
                continue;
            };
            let used = fs::metadata(e.path().join("meta.json"))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if name != keep {
                all.push((used, meta.bytes, e.path()));
            } else {
                all.push((SystemTime::now(), meta.bytes, e.path()));
            }
        }
        // Answers are small, but one set per apt index piles up: those not
        // asked for in a month belong to indexes long gone.
        for e in fs::read_dir(self.dir.join("answers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let age = (e.metadata().and_then(|m| m.modified()).ok()).and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a.as_secs() > 30 * 24 * 3600) {
                let _ = fs::remove_file(e.path());
            }
        }
        all.sort();
        let mut total: u64 = all.iter().map(|(_, b, _)| b).sum();
        for (_, bytes, path) in all {
            if total <= self.limit || path.ends_with(keep) {
                break;
            }
            crate::platform::rootfs::remove_tree(&path);
            total = total.saturating_sub(bytes);
        }
    }
}

/// Per entry of a copied upper directory: its inode and change time
/// there, which any write, chmod, chown or xattr change moves.
pub type Manifest = std::collections::HashMap<PathBuf, (u64, i64, i64)>;

/// A layer as [`Store::keep_copy`] made it, and what the upper directory
/// held then.
pub struct Copied {
    pub key: String,
    pub manifest: Manifest,
}

const OPAQUE: &std::ffi::CStr = c"trusted.overlay.opaque";

/// Copies the upper directory `from` of an overlay into `to` (which must
/// not exist) as a layer that goes on top of the layer of the last copy,
/// `prev` (whose entries `prev` lists): only what changed since, plus a
/// whiteout for each entry gone since; every entry without `prev`. Each
/// entry keeps its type, owner, mode, extended attributes (overlayfs
/// keeps opaque directories there), content or link target, and devices
/// (overlayfs's whiteouts). Every directory is made, with its attributes;
/// an opaque one hides all below it in lower layers, so what it holds is
/// copied whole. Package files apt was given are kiln's cache's.
fn copy_layer(from: &Path, to: &Path, prev: Option<&Manifest>) -> io::Result<Manifest> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut manifest = Manifest::new();
    let mut whole: Option<PathBuf> = None;
    let debs = Path::new("var/cache/apt/archives");
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        if rel.starts_with(debs) && rel != debs && !entry.file_type().is_dir() {
            continue;
        }
        let meta = entry.path().symlink_metadata()?;
        let out = to.join(rel);
        let kind = meta.file_type();
        let stamp = (meta.ino(), meta.ctime(), meta.ctime_nsec());
        manifest.insert(rel.to_path_buf(), stamp);
        if whole.as_ref().is_some_and(|w| !rel.starts_with(w)) {
            whole = None;
        }
        if kind.is_dir() {
            fs::create_dir(&out)?;
            let mut v = [0u8; 4];
            if whole.is_none() && rustix::fs::lgetxattr(entry.path(), OPAQUE, &mut v).is_ok() {
                whole = Some(rel.to_path_buf());
            }
        } else if whole.is_none() && prev.is_some_and(|p| p.get(rel) == Some(&stamp)) {
            // Unchanged: the layer below holds it.
            continue;
        } else if kind.is_file() {
            fs::copy(entry.path(), &out)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &out)?;
        } else {
            mknod_like(&out, &meta)?;
        }
        std::os::unix::fs::lchown(&out, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() {
            // After the owner: chown clears setuid bits and capabilities.
            fs::set_permissions(&out, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        copy_xattrs(entry.path(), &out)?;
        if kind.is_file() {
            let f = fs::File::options().write(true).open(&out)?;
            f.set_modified(meta.modified()?)?;
        }
    }
    // What went away since the last copy is hidden from it, once, at the
    // topmost path gone.
    for gone in prev.into_iter().flat_map(|p| p.keys()) {
        let parent_here = gone.parent().is_some_and(|d| manifest.contains_key(d));
        if !manifest.contains_key(gone) && parent_here {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                to.join(gone),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )?;
        }
    }
    Ok(manifest)
}

/// A device, fifo or socket node at `out` like the one `meta` describes.
fn mknod_like(out: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kind = meta.file_type();
    let node = if kind.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if kind.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else if kind.is_fifo() {
        rustix::fs::FileType::Fifo
    } else {
        rustix::fs::FileType::Socket
    };
    let mode = rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777);
    rustix::fs::mknodat(rustix::fs::CWD, out, node, mode, meta.rdev())?;
    Ok(())
}

/// Every extended attribute of `from` (not following a link) onto `to`.
fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(from, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(from, name.as_c_str(), &mut value)?;
        rustix::fs::lsetxattr(
            to,
            name.as_c_str(),
            &value[..len],
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

/// Removes the overlays a killed process left in the work directory
/// (`NAME-PID-XXXXXX`, the process gone), unless kept on purpose.
fn clean_work(work: &Path) {
    for e in fs::read_dir(work).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
        if gone && !e.path().join(crate::platform::rootfs::KEPT).exists() {
            crate::platform::rootfs::remove_tree(&e.path());
        }
    }
}

fn touch(path: &Path) {
    if let Ok(f) = fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Bytes of the regular files below `dir`.
fn size_of(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, parent: Option<&str>, bytes_hint: usize) -> (tempfile::TempDir, Meta) {
        let upper = tempfile::tempdir().unwrap();
        fs::write(upper.path().join("f"), vec![0u8; bytes_hint]).unwrap();
        let m = Meta {
            key: key.into(),
            parent: parent.map(String::from),
            until: 0,
            total: 1,
            resource: "package[x]".into(),
            pending: vec![],
            test_key: String::new(),
            bytes: 0,
        };
        (upper, m)
    }

    fn cut(key: &str) -> Cut {
        Cut {
            until: 0,
            resource: String::new(),
            key: key.into(),
        }
    }

    #[test]
    fn the_deepest_whole_chain_is_found_and_the_oldest_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: dir.path().to_path_buf(),
            limit: 2500,
        };
        let (u1, m1) = meta("a", None, 1000);
        store.keep(u1.path(), m1).unwrap();
        let (u2, m2) = meta("b", Some("a"), 1000);
        store.keep(u2.path(), m2).unwrap();
        assert!(!u2.path().exists(), "the upper was moved, not copied");
        let s = store
            .find(&[cut("a"), cut("b"), cut("c")])
            .unwrap()
            .unwrap();
        assert_eq!(s.meta.key, "b");
        assert_eq!(
            s.layers,
            [dir.path().join("b/layer"), dir.path().join("a/layer")]
        );
        assert!(s.layers[0].join("f").is_file());

        // Over the limit: the least recently used goes, here "a"; "b"'s
        // chain is then broken and "b" is not offered any more.
        std::thread::sleep(std::time::Duration::from_millis(20));
        touch(&dir.path().join("b/meta.json"));
        let (u3, m3) = meta("z", None, 1000);
        store.keep(u3.path(), m3).unwrap();
        assert!(!dir.path().join("a").exists());
        assert!(store.find(&[cut("a"), cut("b")]).unwrap().is_none());
        assert_eq!(store.find(&[cut("z")]).unwrap().unwrap().meta.key, "z");
    }

    #[test]
    fn each_kept_layer_goes_on_top_of_the_tree_and_chains_to_the_one_below() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: dir.path().join("store"),
            limit: 1 << 30,
        };
        fs::create_dir_all(store.work_dir()).unwrap();
        let base = dir.path().join("base");
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("b"), "base").unwrap();
        let mut layers = Layers::new(&base, &store.work_dir(), "t");
        let Ok(overlay) = layers.mount() else {
            eprintln!("skipping: mounting an overlay needs root and overlayfs");
            return;
        };
        fs::write(overlay.root().join("one"), "1").unwrap();
        let (_u, m1) = meta("k1", None, 0);
        let overlay = layers.keep(&store, overlay, m1).unwrap();
        fs::write(overlay.root().join("two"), "2").unwrap();
        fs::remove_file(overlay.root().join("b")).unwrap();
        let (_u, m2) = meta("k2", None, 0);
        let overlay = layers.keep(&store, overlay, m2).unwrap();
        let root = overlay.root();
        assert!(root.join("one").is_file() && root.join("two").is_file());
        assert!(!root.join("b").exists(), "a removal is kept too");
        assert!(base.join("b").is_file(), "the base root is never written");
        let kept = store.find(&[cut("k1"), cut("k2")]).unwrap().unwrap();
        assert_eq!(kept.meta.parent.as_deref(), Some("k1"));
        assert!(kept.layers[0].join("two").is_file() && !kept.layers[0].join("one").exists());
        drop(overlay);
        // A new tree starts from the deepest one.
        let mut again = Layers::new(&base, &store.work_dir(), "t");
        assert_eq!(again.start_from(kept).key, "k2");
        let overlay = again.mount().unwrap();
        assert_eq!(fs::read_to_string(overlay.root().join("one")).unwrap(), "1");
    }

    #[test]
    fn a_copied_layer_keeps_whiteouts_and_opaque_dirs_and_holds_what_changed() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: device nodes and trusted xattrs need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("etc/gone.d")).unwrap();
        fs::create_dir_all(upper.join("var/cache/apt/archives")).unwrap();
        fs::write(upper.join("etc/same"), "same").unwrap();
        fs::write(upper.join("etc/moves"), "one").unwrap();
        fs::write(upper.join("var/cache/apt/archives/x_1_all.deb"), "deb").unwrap();
        std::os::unix::fs::symlink("same", upper.join("etc/link")).unwrap();
        std::os::unix::fs::lchown(upper.join("etc/same"), Some(101), Some(102)).unwrap();
        let opaque = c"trusted.overlay.opaque";
        rustix::fs::lsetxattr(
            upper.join("etc/gone.d"),
            opaque,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let whiteout = upper.join("etc/removed");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &whiteout,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();

        let one = dir.path().join("one");
        let m1 = copy_layer(&upper, &one, None).unwrap();
        assert_eq!(fs::read_to_string(one.join("etc/moves")).unwrap(), "one");
        let same = fs::symlink_metadata(one.join("etc/same")).unwrap();
        assert_eq!((same.uid(), same.gid()), (101, 102));
        assert_eq!(
            fs::read_link(one.join("etc/link")).unwrap(),
            Path::new("same")
        );
        assert!(
            fs::symlink_metadata(one.join("etc/removed"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
        let mut v = [0u8; 8];
        let n = rustix::fs::lgetxattr(one.join("etc/gone.d"), opaque, &mut v).unwrap();
        assert_eq!(&v[..n], b"y");
        assert!(one.join("var/cache/apt/archives").is_dir());
        assert!(!one.join("var/cache/apt/archives/x_1_all.deb").exists());

        // The next copy holds what changed and hides what went away.
        fs::write(upper.join("etc/moves"), "two").unwrap();
        fs::remove_file(upper.join("etc/link")).unwrap();
        let two = dir.path().join("two");
        copy_layer(&upper, &two, Some(&m1)).unwrap();
        assert!(
            !two.join("etc/same").exists(),
            "unchanged: in the layer below"
        );
        assert_eq!(fs::read_to_string(two.join("etc/moves")).unwrap(), "two");
        let gone = fs::symlink_metadata(two.join("etc/link")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        // The opaque directory's content is whole in every copy.
        fs::write(upper.join("etc/gone.d/kept"), "k").unwrap();
        let m2 = copy_layer(&upper, &dir.path().join("three"), None).unwrap();
        let four = dir.path().join("four");
        copy_layer(&upper, &four, Some(&m2)).unwrap();
        assert!(four.join("etc/gone.d/kept").is_file());
        assert!(!four.join("etc/same").exists());
    }

    #[test]
    fn a_layer_kept_twice_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: dir.path().to_path_buf(),
            limit: 1 << 30,
        };
        let (u1, m1) = meta("a", None, 10);
        store.keep(u1.path(), m1).unwrap();
        let (u2, m2) = meta("a", None, 20);
        store.keep(u2.path(), m2).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("a/layer/f")).unwrap().len(),
            10
        );
    }

    #[test]
    fn the_index_digest_follows_release_files_only() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("deb.debian.org_InRelease"), "a").unwrap();
        fs::write(d.path().join("deb.debian.org_Packages"), "p").unwrap();
        let one = index_digest(&[d.path()]);
        fs::write(d.path().join("deb.debian.org_Packages"), "q").unwrap();
        assert_eq!(index_digest(&[d.path()]), one);
        fs::write(d.path().join("deb.debian.org_InRelease"), "b").unwrap();
        assert_ne!(index_digest(&[d.path()]), one);
        // A later directory's file stands for an earlier one's.
        let cached = tempfile::tempdir().unwrap();
        fs::write(cached.path().join("deb.debian.org_InRelease"), "a").unwrap();
        assert_eq!(index_digest(&[d.path(), cached.path()]), one);
    }
}
