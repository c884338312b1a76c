//! Replacing a file on the host (the repository, a publish directory, the
//! agent's state, caches), never inside a target: targets are written
//! through their confined view ([`super::tfs::Tfs::write_atomic`]).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
