//! The target's filesystem: every file operation kiln makes on a target.
//!
//! On a `--root` tree the kernel resolves each path inside the tree
//! (`openat2` with `RESOLVE_IN_ROOT` from a descriptor of the root), so that
//! a symlink planted in the tree, absolute or `../`, lands inside it and
//! never on the build host; a loop or a chain longer than the kernel's 40
//! hops is `ELOOP`, never a path resolved some other way. Operations that
//! replace, remove or change a path act on its final component relative to
//! the descriptor of its parent and do not follow it. The running system
//! (root `/`) gets the same code without the confinement flags, so links
//! there are followed as on any host.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Uid};

use crate::error::RunError;

/// A target's filesystem, by a descriptor of its root.
#[derive(Debug, Clone)]
pub struct Tfs {
    root: Arc<io::Result<OwnedFd>>,
    confined: bool,
}

/// The most kiln reads of one file on a target into memory (contents it
/// compares and diffs, reports, os-release); hashes stream instead.
pub const READ_CAP: u64 = 256 << 20;

pub(super) fn too_large(p: &Path, len: usize) -> io::Result<()> {
    if len as u64 > READ_CAP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than the {} MiB kiln reads of one file",
                p.display(),
                READ_CAP >> 20
            ),
        ));
    }
    Ok(())
}

/// The whole of a file opened with the size it had (at most [`READ_CAP`] bytes).
pub(super) fn read_opened(p: &Path, (f, len): (File, u64)) -> io::Result<Vec<u8>> {
    let v = read_whole(&f, len)?;
    too_large(p, v.len())?;
    Ok(v)
}

/// Only a regular file or a directory is opened for reading.
fn refuse_special(p: &Path, meta: &Metadata) -> io::Result<()> {
    let kind = meta.file_type();
    if kind.is_file() || kind.is_dir() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {}, not a regular file: kiln never reads one",
            p.display(),
            special_kind(&kind)
        ),
    ))
}

/// What `m` is when it is a special file (a FIFO, socket or device), for
/// messages; None for a file, directory or link.
pub fn special(m: &Metadata) -> Option<&'static str> {
    let t = m.file_type();
    (!t.is_file() && !t.is_dir() && !t.is_symlink()).then(|| special_kind(&t))
}

/// What a special file is, for messages.
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

/// Owner and group to set; `None` leaves one alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Tfs {
    /// `confined` for a `--root` tree; the descriptor is opened once here,
    /// and an error opening it is returned by every operation.
    pub fn new(root: &Path, confined: bool) -> Self {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from);
        Tfs {
            root: Arc::new(fd),
            confined,
        }
    }

    fn resolve(&self) -> ResolveFlags {
        if self.confined {
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
        } else {
            ResolveFlags::empty()
        }
    }

    /// Opens `p` (a path on the target) resolved by the kernel.
    fn open_at(&self, p: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let root = match &*self.root {
            Ok(fd) => fd,
            Err(e) => return Err(io::Error::new(e.kind(), e.to_string())),
        };
        let rel = relative(p);
        // EAGAIN: a rename elsewhere raced a `..` lookup; the kernel asks to retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, mode, self.resolve()) {
                Err(rustix::io::Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// The directory holding `p`'s final component, and that component.
    fn parent(&self, p: &Path) -> io::Result<(OwnedFd, OsString)> {
        let name = match p.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} names no file in a directory", p.display()),
                ));
            }
        };
        let dir = p.parent().unwrap_or(Path::new("/"));
        let fd = self.open_at(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }

    /// Opens `p` for reading, following links (inside the root). Only a
    /// regular file (or a directory) is opened: a FIFO would hang kiln, a
    /// device would hand it the host's disk or an endless stream, so they
    /// are errors, found without blocking (the open does not wait).
    pub fn open(&self, p: impl AsRef<Path>) -> io::Result<File> {
        self.open_sized(p).map(|(f, _)| f)
    }

    /// [`Tfs::open`], with the size the file had when opened.
    ///
    /// In a `--root` tree a special file is refused on an `O_PATH` look,
    /// before any open reaches its driver (a tape rewinds on open, a
    /// serial line hangs up), and the open must then find the file the
    /// look found. The host's own files are opened at once: the type is
    /// checked on the open file either way.
    fn open_sized(&self, p: impl AsRef<Path>) -> io::Result<(File, u64)> {
        let p = p.as_ref();
        let looked = match self.confined {
            true => {
                let meta = self.metadata(p)?;
                refuse_special(p, &meta)?;
                Some(meta)
            }
            false => None,
        };
        self.open_found(p, OFlags::empty(), looked.as_ref())
    }

    /// Opens `p` for reading (with `flags` added) and checks the file
    /// opened: a regular file or a directory, and when a look came first,
    /// the file it found.
    fn open_found(
        &self,
        p: &Path,
        flags: OFlags,
        looked: Option<&Metadata>,
    ) -> io::Result<(File, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let flags = flags | OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK;
        let f = File::from(self.open_at(p, flags, Mode::empty())?);
        let meta = f.metadata()?;
        refuse_special(p, &meta)?;
        if looked.is_some_and(|l| (l.dev(), l.ino()) != (meta.dev(), meta.ino())) {
            return Err(io::Error::other(format!(
                "{} was replaced while kiln opened it; run again",
                p.display()
            )));
        }
        Ok((f, meta.len()))
    }

    /// The whole file `p` leads to (at most [`READ_CAP`] bytes).
    pub fn read(&self, p: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let p = p.as_ref();
        read_opened(p, self.open_sized(p)?)
    }

    /// [`Tfs::read`] of a path that `looked`, its [`Tfs::symlink_metadata`],
    /// found to be a regular file: that look stands for the one before the
    /// open, which must find the same file (a link put there since is
    /// refused, not followed). A path of any other kind is read as
    /// [`Tfs::read`] reads it.
    pub fn read_looked(&self, p: impl AsRef<Path>, looked: &Metadata) -> io::Result<Vec<u8>> {
        if !looked.is_file() {
            return self.read(p);
        }
        let p = p.as_ref();
        read_opened(p, self.open_found(p, OFlags::NOFOLLOW, Some(looked))?)
    }

    /// Whether the file `p`, as [`Tfs::read_looked`] reads it, holds exactly
    /// `want`. Compared piece by piece as it is read: a file that is as it
    /// should be (every file of a no-op) is never copied whole into memory.
    pub fn holds_looked(
        &self,
        p: impl AsRef<Path>,
        looked: &Metadata,
        want: &[u8],
    ) -> io::Result<bool> {
        if !looked.is_file() {
            return Ok(self.read(p)? == want);
        }
        let (f, _) = self.open_found(p.as_ref(), OFlags::NOFOLLOW, Some(looked))?;
        same_content(&f, want)
    }

    pub fn read_to_string(&self, p: impl AsRef<Path>) -> io::Result<String> {
        utf8(self.read(p)?)
    }

    /// The metadata of what `p` leads to, following links (inside the root).
    pub fn metadata(&self, p: impl AsRef<Path>) -> io::Result<Metadata> {
        File::from(self.open_at(p.as_ref(), OFlags::PATH, Mode::empty())?).metadata()
    }

    /// The metadata of `p` itself: a final symlink is not followed.
    pub fn symlink_metadata(&self, p: impl AsRef<Path>) -> io::Result<Metadata> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        File::from(self.open_at(p.as_ref(), flags, Mode::empty())?).metadata()
    }

    /// [`Tfs::symlink_metadata`], and where `p` points when it is a link:
    /// both of the one file the look found, in one open.
    pub fn look_link(&self, p: impl AsRef<Path>) -> io::Result<(Metadata, Option<PathBuf>)> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        let f = File::from(self.open_at(p.as_ref(), flags, Mode::empty())?);
        let meta = f.metadata()?;
        if !meta.file_type().is_symlink() {
            return Ok((meta, None));
        }
        // An empty path reads the link the descriptor itself is.
        let to = rustix::fs::readlinkat(&f, "", Vec::new())?;
        Ok((meta, Some(PathBuf::from(OsStr::from_bytes(to.as_bytes())))))
    }

    /// Whether `p` leads somewhere (a dangling link does not).
    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        self.metadata(p).is_ok()
    }

    pub fn is_dir(&self, p: impl AsRef<Path>) -> bool {
        self.metadata(p).is_ok_and(|m| m.is_dir())
    }

    pub fn read_link(&self, p: impl AsRef<Path>) -> io::Result<PathBuf> {
        let (dir, name) = self.parent(p.as_ref())?;
        let to = rustix::fs::readlinkat(&dir, name.as_os_str(), Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(to.as_bytes())))
    }

    /// The names in directory `p` (following links to it, inside the root).
    pub fn read_dir(&self, p: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let fd = self.open_at(p.as_ref(), flags, Mode::empty())?;
        names(fd)
    }

    /// The names in directory `p`, which itself must not be a symlink.
    pub fn read_dir_nofollow(&self, p: impl AsRef<Path>) -> io::Result<Vec<OsString>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        let fd = self.open_at(p.as_ref(), flags, Mode::empty())?;
        names(fd)
    }

    /// Removes `p` itself (a link, never what it points at).
    pub fn remove_file(&self, p: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = self.parent(p.as_ref())?;
        Ok(rustix::fs::unlinkat(
            &dir,
            name.as_os_str(),
            AtFlags::empty(),
        )?)
    }

    pub fn remove_dir(&self, p: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = self.parent(p.as_ref())?;
        Ok(rustix::fs::unlinkat(
            &dir,
            name.as_os_str(),
            AtFlags::REMOVEDIR,
        )?)
    }

    /// Removes directory `p` and everything in it, following no link.
    pub fn remove_dir_all(&self, p: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = self.parent(p.as_ref())?;
        remove_tree(&dir, &name)
    }

    pub fn create_dir(&self, p: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(p.as_ref())?;
        Ok(rustix::fs::mkdirat(
            &dir,
            name.as_os_str(),
            Mode::from_raw_mode(mode),
        )?)
    }

    /// Creates `p` and its missing parents (each resolved inside the root).
    pub fn create_dir_all(&self, p: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        // Most often there already: one look, not a try at each level.
        if self.is_dir(p.as_ref()) {
            return Ok(());
        }
        let mut sofar = PathBuf::from("/");
        for c in p.as_ref().components() {
            if let Component::Normal(n) = c {
                sofar.push(n);
                match self.create_dir(&sofar, mode) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    r => r?,
                }
            }
        }
        if self.is_dir(p.as_ref()) {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::NotADirectory))
        }
    }

    /// Creates a symlink at `p` pointing at `to` (stored as given).
    pub fn symlink(&self, to: impl AsRef<Path>, p: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = self.parent(p.as_ref())?;
        Ok(rustix::fs::symlinkat(to.as_ref(), &dir, name.as_os_str())?)
    }

    /// Renames `from` over `to`, replacing `to` itself if it is a link.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (fdir, fname) = self.parent(from.as_ref())?;
        let (tdir, tname) = self.parent(to.as_ref())?;
        Ok(rustix::fs::renameat(
            &fdir,
            fname.as_os_str(),
            &tdir,
            tname.as_os_str(),
        )?)
    }

    /// Writes `content` to `p` so that readers see the old file or the new
    /// one: a temporary file beside it (see [`temp_name`]) created in the
    /// parent's descriptor, owner and mode set on it, fsync, rename over the
    /// name (a link there is replaced, not followed), fsync of the directory.
    pub fn write_atomic(
        &self,
        p: impl AsRef<Path>,
        content: &[u8],
        mode: u32,
        owner: Owner,
    ) -> io::Result<()> {
        self.write_replacing(p.as_ref(), content, mode, owner, Durability::Synced)
    }

    /// [`Tfs::write_atomic`] without the two fsyncs: readers and a run that
    /// stops part-way still see the old file or the new one, but a power
    /// cut may leave either. Only for records whose loss costs nothing the
    /// next run does not rewrite (the report of a run that changed nothing).
    pub fn write_atomic_unsynced(
        &self,
        p: impl AsRef<Path>,
        content: &[u8],
        mode: u32,
        owner: Owner,
    ) -> io::Result<()> {
        self.write_replacing(p.as_ref(), content, mode, owner, Durability::Unsynced)
    }

    fn write_replacing(
        &self,
        p: &Path,
        content: &[u8],
        mode: u32,
        owner: Owner,
        durability: Durability,
    ) -> io::Result<()> {
        let (dir, name) = self.parent(p)?;
        let tmp = temp_name(&name);
        let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_os_str(),
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let result = (|| -> io::Result<()> {
            let mut f = File::from(fd);
            f.write_all(content)?;
            set_owner_mode(&f, owner, Some(mode))?;
            if durability == Durability::Synced {
                f.sync_all()?;
                rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str())?;
            } else {
                swap_in(&dir, &tmp, &name)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        }
        result?;
        if durability == Durability::Synced {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(())
    }

    /// Gives the file at `from` the name `to` as well, in place of what
    /// is there, as [`Tfs::write_atomic`] (`synced`) or
    /// [`Tfs::write_atomic_unsynced`] would: the same content kept under
    /// two names, written once. No final link of either is followed.
    pub fn link_replacing(
        &self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        synced: bool,
    ) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from.as_ref())?;
        let (dir, name) = self.parent(to.as_ref())?;
        let tmp = temp_name(&name);
        let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        rustix::fs::linkat(
            &from_dir,
            from_name.as_os_str(),
            &dir,
            tmp.as_os_str(),
            AtFlags::empty(),
        )?;
        let placed = if synced {
            rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str()).map_err(Into::into)
        } else {
            swap_in(&dir, &tmp, &name)
        };
        if placed.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        }
        placed?;
        if synced {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(())
    }

    /// Sets owner, group and mode of `p` through a descriptor of it. With
    /// `follow` a link is followed (inside the root), as for a directory;
    /// without, a final link is an error (`ELOOP`) and nothing changes.
    pub fn set_meta(
        &self,
        p: impl AsRef<Path>,
        owner: Owner,
        mode: Option<u32>,
        follow: bool,
    ) -> io::Result<()> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let f = File::from(self.open_at(p.as_ref(), flags, Mode::empty())?);
        set_owner_mode(&f, owner, mode)
    }

    /// Opens (creating it 0600) the file `p` for reading and writing without
    /// truncating it and without following a final link: for a lock file.
    pub fn open_lock(&self, p: impl AsRef<Path>) -> io::Result<File> {
        use std::os::unix::fs::MetadataExt;
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = self.open_at(p.as_ref(), flags, Mode::from_raw_mode(0o600))?;
        let f = File::from(fd);
        let meta = f.metadata()?;
        if meta.is_file() && meta.nlink() == 1 {
            return Ok(f);
        }
        // A hard link to some other file, or a special file: never used
        // in place. A lock of kiln's own is made anew beside nothing.
        drop(f);
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", p.as_ref().display()),
            ));
        }
        self.remove_file(p.as_ref())?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        Ok(File::from(self.open_at(
            p.as_ref(),
            flags,
            Mode::from_raw_mode(0o600),
        )?))
    }
}

/// The file `f` to the size its open saw (`len`), in one read where the
/// standard library's would take four for dpkg's status (8, 16, 32 KiB,
/// then the rest) and one more to find the end. A file that says it is
/// empty (one of /proc's) is read to its end, the buffer growing as it
/// goes; reading stops one byte past [`READ_CAP`], for the caller to
/// refuse.
pub(super) fn read_whole(f: &File, len: u64) -> io::Result<Vec<u8>> {
    use rustix::buffer::spare_capacity;
    let want = match len {
        0 => READ_CAP + 1,
        n => n.min(READ_CAP + 1),
    };
    let mut v = Vec::with_capacity(usize::try_from(want.min(len.max(1))).unwrap_or(0));
    while (v.len() as u64) < want {
        if v.len() == v.capacity() {
            v.reserve(4096);
        }
        match rustix::io::read(f, spare_capacity(&mut v)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(v)
}

/// Whether what is left to read of `f` is exactly `want`. The piece is
/// small enough to stay in the cache and costs a few stack pages, not a
/// heap buffer the size of the file. Each read asks for one byte more than
/// `want` has left: a file with more says so in that read, and a short
/// read of a regular file is its end, so no read is spent finding it.
fn same_content(f: &File, want: &[u8]) -> io::Result<bool> {
    let mut piece = [0u8; 16 << 10];
    let mut at = 0;
    loop {
        let ask = piece.len().min(want.len() - at + 1);
        match rustix::io::read(f, &mut piece[..ask]) {
            Ok(0) => return Ok(at == want.len()),
            Ok(n) => {
                if want.get(at..at + n) != Some(&piece[..n]) {
                    return Ok(false);
                }
                at += n;
                if n < ask && at == want.len() {
                    return Ok(true);
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `bytes` as text, with the error `std::fs::read_to_string` gives.
pub(super) fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Puts the written file `tmp` in `name`'s place without a rename over
/// it: ext4 (`auto_da_alloc`) flushes a file renamed over another before
/// the rename returns, most of a no-op's wait for its report. An exchange
/// of the two names is as atomic for readers and flushes nothing; the old
/// file, now at `tmp`, is then removed. A directory at `name` is swapped
/// back and refused, as a rename over it would be; with no `name` yet, or
/// on a filesystem without exchange, it is a plain rename.
fn swap_in(dir: &OwnedFd, tmp: &OsStr, name: &OsStr) -> io::Result<()> {
    use rustix::fs::{RenameFlags, renameat, renameat_with, unlinkat};
    use rustix::io::Errno;
    match renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE) {
        Ok(()) => match unlinkat(dir, tmp, AtFlags::empty()) {
            Err(Errno::ISDIR) => {
                renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE)?;
                Err(Errno::ISDIR.into())
            }
            done => Ok(done?),
        },
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            Ok(renameat(dir, tmp, dir, name)?)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".");
    t.push(name);
    t.push(".kiln-new");
    t
}

/// Writes `content` to `path` on the target atomically, with owner and
/// mode (see [`Tfs::write_atomic`]), as a [`RunError`] that names the path.
pub fn atomic_write(
    fs: &Tfs,
    path: impl AsRef<Path>,
    content: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<(), RunError> {
    let path = path.as_ref();
    fs.write_atomic(path, content, mode, owner)
        .map_err(|e| RunError::io("write", path.display(), e))
}

/// Whether an atomic write also survives a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Synced,
    Unsynced,
}

/// The SHA-256 of the file `path` on the target, in hex.
pub fn sha256_file(tfs: &Tfs, path: &str) -> io::Result<String> {
    crate::digest::sha256_reader(tfs.open(path)?)
}

/// The target path of the temporary file for an atomic write of `p`.
pub fn temp_path(p: &Path) -> PathBuf {
    p.with_file_name(temp_name(p.file_name().unwrap_or_default()))
}

fn set_owner_mode(f: &File, owner: Owner, mode: Option<u32>) -> io::Result<()> {
    if owner.uid.is_some() || owner.gid.is_some() {
        let uid = owner.uid.map(Uid::from_raw);
        let gid = owner.gid.map(Gid::from_raw);
        rustix::fs::fchown(f.as_fd(), uid, gid)?;
    }
    if let Some(m) = mode {
        rustix::fs::fchmod(f.as_fd(), Mode::from_raw_mode(m))?;
    }
    Ok(())
}

/// `p` relative to the root: `/etc/x` -> `etc/x`, `/` -> `.`.
fn relative(p: &Path) -> &Path {
    let rel = p.strip_prefix("/").unwrap_or(p);
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

fn names(fd: OwnedFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`: a directory with its content, descending by
/// descriptors that never follow a link.
fn remove_tree(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(sub) => {
            let list = rustix::fs::openat(&sub, ".", flags, Mode::empty())?;
            for n in names(list)? {
                remove_tree(&sub, &n)?;
            }
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
        }
        // Not a directory (or a link to one): the name itself goes.
        Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lock_that_is_a_hard_link_is_made_anew_and_the_other_file_kept() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let (root, victim) = (d.path().join("root"), d.path().join("victim"));
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::write(&victim, "host\n").unwrap();
        std::fs::hard_link(&victim, root.join("run/kiln.lock")).unwrap();
        let tfs = Tfs::new(&root, true);
        let lock = tfs.open_lock("/run/kiln.lock").unwrap();
        assert_eq!(lock.metadata().unwrap().nlink(), 1);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host\n");
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        // A writer waiting for the FIFO's reader: any open for reading,
        // even one that does not wait, would let it through.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        let writer = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let w = std::fs::OpenOptions::new().write(true).open(&path);
            tx.send(0).unwrap();
            w
        });
        // Until the writer waits in the FIFO's open (its wait channel says so).
        let tid = rx.recv().unwrap();
        let wchan = format!("/proc/self/task/{tid}/wchan");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !fs::read_to_string(&wchan)
            .is_ok_and(|w| w.contains("wait_for_partner") || w.contains("fifo"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let tfs = Tfs::new(d.path(), true);
        let e = tfs.read("/fifo").unwrap_err();
        assert!(
            e.to_string()
                .contains("/fifo is a FIFO, not a regular file"),
            "{e}"
        );
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        assert!(waited.is_err(), "kiln opened the FIFO of a --root tree");
        // Let the writer go: open the reading end here.
        let _reader = std::fs::File::open(&fifo).unwrap();
        writer.join().unwrap().unwrap();
    }

    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// A root with a sentinel directory beside it, outside.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, Tfs) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let out = d.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("secret"), "host secret").unwrap();
        let t = Tfs::new(&root, true);
        (d, root, out, t)
    }

    #[test]
    fn reads_return_whole_files_of_any_size() {
        let (_d, root, _out, t) = setup();
        let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(root.join("etc/big"), &big).unwrap();
        fs::write(root.join("etc/empty"), "").unwrap();
        fs::write(root.join("etc/bad"), [b'a', 0xff]).unwrap();
        assert_eq!(t.read("/etc/big").unwrap(), big);
        assert_eq!(t.read_to_string("/etc/big").unwrap().as_bytes(), big);
        assert_eq!(t.read("/etc/empty").unwrap(), b"");
        assert_eq!(t.read_to_string("/etc/empty").unwrap(), "");
        assert_eq!(t.read("/etc/bad").unwrap(), [b'a', 0xff]);
        let e = t.read_to_string("/etc/bad").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // A procfs-like file says size 0 and has more: read to its end.
        let host = Tfs::new(std::path::Path::new("/"), false);
        assert!(
            host.read_to_string("/proc/self/status")
                .unwrap()
                .contains("Pid:")
        );
    }

    #[test]
    fn a_read_after_a_look_reads_the_file_looked_at_or_fails() {
        let (_d, root, _out, t) = setup();
        let (a, b) = (root.join("etc/a"), root.join("etc/b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let looked = t.symlink_metadata("/etc/a").unwrap();
        assert_eq!(t.read_looked("/etc/a", &looked).unwrap(), b"a");
        // Replaced since the look: by another file, a link, a FIFO.
        fs::write(root.join("etc/new"), "new").unwrap();
        fs::rename(root.join("etc/new"), &a).unwrap();
        let e = t.read_looked("/etc/a", &looked).unwrap_err();
        assert!(e.to_string().contains("was replaced"), "{e}");
        fs::remove_file(&a).unwrap();
        symlink("/etc/b", &a).unwrap();
        assert!(t.read_looked("/etc/a", &looked).is_err());
        fs::remove_file(&a).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &a,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(t.read_looked("/etc/a", &looked).is_err());
        // A link looked at is followed, inside the root, as a read does.
        fs::remove_file(&a).unwrap();
        symlink("/etc/b", &a).unwrap();
        let link = t.symlink_metadata("/etc/a").unwrap();
        assert_eq!(t.read_looked("/etc/a", &link).unwrap(), b"b");
    }

    #[test]
    fn a_comparison_after_a_look_is_exact_and_reads_only_the_file_looked_at() {
        let (_d, root, out, t) = setup();
        let a = root.join("etc/a");
        // Longer than one piece, so that a difference late in it counts.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&a, &big).unwrap();
        let looked = t.symlink_metadata("/etc/a").unwrap();
        assert!(t.holds_looked("/etc/a", &looked, &big).unwrap());
        let mut late = big.clone();
        *late.last_mut().unwrap() ^= 1;
        assert!(!t.holds_looked("/etc/a", &looked, &late).unwrap());
        assert!(
            !t.holds_looked("/etc/a", &looked, &big[..big.len() - 1])
                .unwrap()
        );
        assert!(
            !t.holds_looked("/etc/a", &looked, &[&big[..], b"x"].concat())
                .unwrap()
        );
        assert!(!t.holds_looked("/etc/a", &looked, b"").unwrap());
        // Replaced since the look: by another file, a link out of the root.
        fs::write(root.join("etc/new"), &big).unwrap();
        fs::rename(root.join("etc/new"), &a).unwrap();
        let e = t.holds_looked("/etc/a", &looked, &big).unwrap_err();
        assert!(e.to_string().contains("was replaced"), "{e}");
        fs::remove_file(&a).unwrap();
        symlink(out.join("secret"), &a).unwrap();
        assert!(t.holds_looked("/etc/a", &looked, b"host secret").is_err());
        // A link looked at is followed inside the root, never out of it.
        let link = t.symlink_metadata("/etc/a").unwrap();
        assert!(t.holds_looked("/etc/a", &link, b"host secret").is_err());
        fs::remove_file(&a).unwrap();
        fs::write(root.join("etc/b"), "b").unwrap();
        symlink("/etc/b", &a).unwrap();
        let link = t.symlink_metadata("/etc/a").unwrap();
        assert!(t.holds_looked("/etc/a", &link, b"b").unwrap());
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let (_d, root, out, t) = setup();
        fs::write(root.join("etc/shadow"), "tree shadow").unwrap();
        symlink(out.join("secret"), root.join("etc/abs")).unwrap();
        symlink("/etc/shadow", root.join("etc/s")).unwrap();
        symlink("../../../../outside/secret", root.join("etc/rel")).unwrap();
        assert_eq!(t.read_to_string("/etc/s").unwrap(), "tree shadow");
        // The host path of the secret means nothing inside the root.
        assert!(t.read("/etc/abs").is_err());
        assert!(t.read("/etc/rel").is_err());
        assert!(t.symlink_metadata("/etc/abs").unwrap().is_symlink());
        assert_eq!(t.read_link("/etc/s").unwrap(), Path::new("/etc/shadow"));
        let (m, to) = t.look_link("/etc/s").unwrap();
        assert!(m.file_type().is_symlink());
        assert_eq!(to.as_deref(), Some(Path::new("/etc/shadow")));
        let (m, to) = t.look_link("/etc").unwrap();
        assert!(m.is_dir() && to.is_none());
    }

    #[test]
    fn an_unsynced_write_is_as_atomic_and_confined_as_a_synced_one() {
        let (_d, root, out, t) = setup();
        symlink(out.join("secret"), root.join("etc/r")).unwrap();
        t.write_atomic_unsynced("/etc/r", b"one", 0o600, Owner::default())
            .unwrap();
        t.write_atomic_unsynced("/etc/r", b"two", 0o600, Owner::default())
            .unwrap();
        assert_eq!(fs::read(out.join("secret")).unwrap(), b"host secret");
        assert_eq!(fs::read(root.join("etc/r")).unwrap(), b"two");
        assert!(
            !fs::symlink_metadata(root.join("etc/r"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read_dir(root.join("etc")).unwrap().count(), 1);
    }

    #[test]
    fn an_unsynced_write_swaps_the_file_in_and_never_replaces_a_directory() {
        use std::os::unix::fs::MetadataExt;
        let (_d, root, _out, t) = setup();
        t.write_atomic_unsynced("/etc/r", b"one", 0o640, Owner::default())
            .unwrap();
        let first = fs::metadata(root.join("etc/r")).unwrap().ino();
        // A reader holding the old file keeps reading the old content.
        let held = fs::File::open(root.join("etc/r")).unwrap();
        t.write_atomic_unsynced("/etc/r", b"two", 0o600, Owner::default())
            .unwrap();
        let now = fs::metadata(root.join("etc/r")).unwrap();
        assert_ne!(now.ino(), first, "a new file, not the old one rewritten");
        assert_eq!(now.mode() & 0o777, 0o600);
        assert_eq!(fs::read(root.join("etc/r")).unwrap(), b"two");
        assert_eq!(std::io::read_to_string(held).unwrap(), "one");
        // The old file, swapped out to the temporary name, is gone.
        assert_eq!(fs::read_dir(root.join("etc")).unwrap().count(), 1);

        fs::create_dir(root.join("etc/d")).unwrap();
        fs::write(root.join("etc/d/kept"), "kept").unwrap();
        let e = t
            .write_atomic_unsynced("/etc/d", b"x", 0o600, Owner::default())
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
        assert_eq!(fs::read(root.join("etc/d/kept")).unwrap(), b"kept");
        let mut names: Vec<_> = fs::read_dir(root.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "r"]);
    }

    #[test]
    fn replacing_a_link_replaces_the_link() {
        let (_d, root, out, t) = setup();
        symlink(out.join("secret"), root.join("etc/f")).unwrap();
        t.write_atomic("/etc/f", b"new", 0o640, Owner::default())
            .unwrap();
        assert_eq!(fs::read(out.join("secret")).unwrap(), b"host secret");
        let m = fs::symlink_metadata(root.join("etc/f")).unwrap();
        assert!(m.is_file() && m.mode() & 0o7777 == 0o640);
        assert_eq!(fs::read_dir(root.join("etc")).unwrap().count(), 1);
        // chmod without following refuses a link rather than touching its target.
        symlink(&out, root.join("etc/d")).unwrap();
        assert!(
            t.set_meta("/etc/d", Owner::default(), Some(0o777), false)
                .is_err()
        );
        assert!(t.open_lock("/etc/d").is_err());
        t.remove_dir_all("/etc/d").unwrap();
        assert!(out.join("secret").exists());
    }

    #[test]
    fn a_long_chain_is_a_loop_error() {
        let (_d, root, out, t) = setup();
        symlink(&out, root.join("l41")).unwrap();
        for i in (0..41).rev() {
            symlink(format!("/l{}", i + 1), root.join(format!("l{i}"))).unwrap();
        }
        let e = t.write_atomic("/l0/x", b"x", 0o644, Owner::default());
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    }

    #[test]
    fn the_host_follows_links() {
        let (_d, root, _out, _t) = setup();
        symlink(root.join("etc"), root.join("e")).unwrap();
        let host = Tfs::new(Path::new("/"), false);
        let p = root.join("e/x");
        host.write_atomic(&p, b"x", 0o600, Owner::default())
            .unwrap();
        assert_eq!(fs::read(root.join("etc/x")).unwrap(), b"x");
        assert_eq!(
            host.read_dir(root.join("e")).unwrap(),
            vec![OsString::from("x")]
        );
    }
}
