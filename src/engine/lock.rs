//! One run at a time per target: an exclusive lock on a file in the target's
//! /run, holding the holder's pid and command line for whoever waits.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::error::RunError;
use crate::platform::target::Target;

/// The lock file, on the target.
const LOCK: &str = "/run/kiln.lock";

pub struct RunLock {
    file: File,
}

impl RunLock {
    /// Waits up to `timeout` for the target's lock.
    pub fn acquire(target: &Target, timeout: Duration) -> Result<RunLock, RunError> {
        let tfs = target.fs();
        tfs.create_dir_all("/run", 0o755)
            .map_err(|e| RunError::io("create", "/run", e))?;
        let path = target.root().join(LOCK.trim_start_matches('/'));
        // Opened inside the target, never through a link and never
        // truncated before it is held: a link planted there is refused.
        let mut file = match tfs.open_lock(LOCK) {
            Ok(f) => f,
            Err(_) if tfs.symlink_metadata(LOCK).is_ok_and(|m| m.is_symlink()) => {
                return Err(RunError::precondition(format!(
                    "{} is a symlink; kiln takes its run lock only on a regular file",
                    path.display()
                ))
                .fix("remove the link (kiln creates the lock file itself)"));
            }
            Err(e) => return Err(RunError::io("open lock", path.display(), e)),
        };
        let start = Instant::now();
        loop {
            if file.try_lock_exclusive().is_ok() {
                break;
            }
            if start.elapsed() >= timeout {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(RunError::precondition(format!(
                    "another kiln run holds the lock {} ({}); waited {} s",
                    path.display(),
                    holder.trim(),
                    timeout.as_secs()
                ))
                .fix("wait for it to finish, or stop that process"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let me = format!(
            "pid {}: {}",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(me.as_bytes());
        Ok(RunLock { file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = FileExt::unlock(&self.file);
    }
}
