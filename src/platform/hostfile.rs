//! Reading and replacing a file on the host (the repository, a publish
//! directory, the agent's state, caches), never inside a target: targets
//! are read and written through their confined view
//! ([`super::tfs::Tfs::write_atomic`]).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// The whole file, as `std::fs::read` gives it, read to the size its open
/// saw (one read where the standard library takes a second to find the
/// end); larger than [`super::tfs::READ_CAP`] is an error.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    super::tfs::read_opened(path, (f, len))
}

/// [`read`], read straight into memory that can be shared: made from a
/// `Vec`, an `Arc<[u8]>` is a second copy (a cookbook's 88 KB file was 22
/// more page faults of a no-op converge).
pub fn read_shared(path: &Path) -> io::Result<Arc<[u8]>> {
    use super::tfs::{READ_CAP, read_opened};
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    // A file that says it is empty (one of /proc's), or too large, is read
    // the general way.
    let n = match usize::try_from(len) {
        Ok(n) if n > 0 && len <= READ_CAP => n,
        _ => return read_opened(path, (f, len)).map(Into::into),
    };
    let mut buf = Arc::<[u8]>::new_uninit_slice(n);
    let room = Arc::get_mut(&mut buf).expect("a new Arc has one owner");
    let mut filled = 0;
    while filled < n {
        match rustix::io::read(&f, &mut room[filled..]) {
            Ok(([], _)) => break,
            Ok((got, _)) => filled += got.len(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if filled < n {
        // Shorter than when it was opened: what there was.
        // SAFETY: `read` wrote the first `filled` bytes.
        let got = unsafe { std::slice::from_raw_parts(room.as_ptr().cast::<u8>(), filled) };
        return Ok(Arc::from(got));
    }
    // SAFETY: `read` wrote every byte.
    Ok(unsafe { buf.assume_init() })
}

/// [`read`], as text: the error of `std::fs::read_to_string` when it is
/// not UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    super::tfs::utf8(read(path)?)
}

/// Whether the kernel resolves `path`, a path under the directory `dir`
/// (given without links), without ever leaving `dir`: one call, where a
/// canonical walk reads each component's link. False when it cannot tell
/// (no `openat2`, a missing file) and for a link to an absolute path,
/// which the caller's canonical walk then judges.
pub fn resolves_beneath(dir: &Path, path: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags | OFlags::DIRECTORY, Mode::empty())
        .and_then(|d| rustix::fs::openat2(&d, rel, flags, Mode::empty(), ResolveFlags::BENEATH))
        .is_ok()
}

/// Replaces `path` with `bytes` so that a reader, or a crash, sees the old
/// file or the new one and never a part: see [`replace_with`].
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |f| f.write_all(bytes))
}

/// [`replace`], creating `path`'s directory first when it is missing.
pub fn replace_creating_dir(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    replace(path, bytes)
}

/// Replaces `path` with what `write` puts into a temporary file beside it:
/// fsync, the old file's mode (0644 for a new one), rename over `path`, then
/// fsync of the directory so that the rename itself survives a crash. The
/// directory must exist. On an error `path` is untouched and the temporary
/// file removed.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_resolves_beneath_only_when_no_step_leaves_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().canonicalize().unwrap();
        let (cb, out) = (top.join("cb"), top.join("out"));
        std::fs::create_dir_all(cb.join("files")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(cb.join("files/a"), "a").unwrap();
        std::fs::write(out.join("secret"), "s").unwrap();
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, cb.join(name)).unwrap();
        link(Path::new("a"), "files/rel-in");
        link(Path::new("../../out/secret"), "files/rel-out");
        link(&cb.join("files/a"), "files/abs-in");
        assert!(resolves_beneath(&cb, &cb.join("files/a")));
        assert!(resolves_beneath(&cb, &cb.join("files/rel-in")));
        assert!(!resolves_beneath(&cb, &cb.join("files/rel-out")));
        // Not judged here: the caller's canonical walk says it is inside.
        assert!(!resolves_beneath(&cb, &cb.join("files/abs-in")));
        assert!(!resolves_beneath(&cb, &cb.join("files/missing")));
        assert!(!resolves_beneath(&cb, &out.join("secret")));
        assert!(!resolves_beneath(&cb, &cb.join("../out/secret")));
    }

    #[test]
    fn a_file_is_read_whole_and_text_must_be_utf8() {
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join("big"), &big).unwrap();
        std::fs::write(d.path().join("empty"), "").unwrap();
        std::fs::write(d.path().join("bad"), [b'a', 0xff]).unwrap();
        assert_eq!(read(&d.path().join("big")).unwrap(), big);
        assert_eq!(read_to_string(&d.path().join("empty")).unwrap(), "");
        let e = read_to_string(&d.path().join("bad")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(read(&d.path().join("missing")).is_err());
        // Shared, the same bytes: whole, empty, and a /proc file that says
        // it is empty.
        assert_eq!(*read_shared(&d.path().join("big")).unwrap(), *big);
        assert!(read_shared(&d.path().join("empty")).unwrap().is_empty());
        assert!(read_shared(&d.path().join("missing")).is_err());
        let status = read_shared(Path::new("/proc/self/status")).unwrap();
        assert!(String::from_utf8_lossy(&status).contains("Pid:"));
    }

    #[test]
    fn replaces_whole_keeps_the_mode_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        replace(&p, b"one\n").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        std::fs::set_permissions(&p, Permissions::from_mode(0o600)).unwrap();
        replace(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let failed = replace_with(&p, |f| {
            f.write_all(b"thr")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
