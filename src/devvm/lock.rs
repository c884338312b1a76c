//! One `up`, `down` or `destroy` of a VM at a time: an flock on `lock` in
//! the VM's directory. Its holder writes there what it is doing (building,
//! booting, stopping) and its pid, so that a second command waits with a
//! message that says for what, and `list` and `status` say what an `up` in
//! progress is at. The kernel drops an flock with its holder: a killed
//! `up` leaves no claim behind.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::PathBuf;

use fs2::FileExt;

use super::state::VmDir;
use crate::error::{Error, IoContext};

/// What the holder of a VM's lock is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// `up`, while it builds or finds the image and makes the disk.
    Building,
    /// `up`, from QEMU's start until the VM serves.
    Booting,
    /// `down` or `destroy`.
    Stopping,
}

impl Activity {
    pub fn word(self) -> &'static str {
        match self {
            Activity::Building => "building",
            Activity::Booting => "booting",
            Activity::Stopping => "stopping",
        }
    }

    fn parse(s: &str) -> Option<Activity> {
        [Activity::Building, Activity::Booting, Activity::Stopping]
            .into_iter()
            .find(|a| a.word() == s)
    }
}

/// Another kiln that holds a VM's lock: what it said it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub activity: Activity,
    pub pid: u32,
}

/// A held lock of one VM; released (and its words cleared) when dropped.
#[derive(Debug)]
pub struct VmLock {
    file: File,
}

fn lock_path(vm: &VmDir) -> PathBuf {
    vm.dir.join("lock")
}

impl VmLock {
    /// Takes the lock of `vm`. `create` makes the VM's directory (for
    /// `up`); without it a VM that is not there, or that was destroyed
    /// while this waited, is `None`. When another kiln holds the lock,
    /// `waiting` hears who, and this waits for it.
    pub fn acquire(
        vm: &VmDir,
        create: bool,
        waiting: &dyn Fn(&Holder),
    ) -> Result<Option<VmLock>, Error> {
        let path = lock_path(vm);
        let mut told = false;
        loop {
            if create {
                fs::create_dir_all(&vm.dir).ctx(|| format!("creating {}", vm.dir.display()))?;
            } else if !vm.dir.is_dir() {
                return Ok(None);
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .ctx(|| format!("opening {}", path.display()))?;
            if file.try_lock_exclusive().is_err() {
                // A reader holds it for an instant and says nothing: wait silently.
                if let Some(h) = read_holder(&file).filter(|_| !told) {
                    waiting(&h);
                    told = true;
                }
                file.lock_exclusive()
                    .ctx(|| format!("locking {}", path.display()))?;
            }
            // `destroy` removes the directory, lock and all, while it
            // holds the lock: a lock on a removed file guards nothing.
            let same = fs::metadata(&path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(p, f)| p.dev() == f.dev() && p.ino() == f.ino());
            if same {
                return Ok(Some(VmLock { file }));
            }
        }
    }

    /// Says what this holder is doing now.
    pub fn set(&self, activity: Activity) {
        let words = format!("{} {}\n", activity.word(), std::process::id());
        let _ = self.file.set_len(0);
        let _ = self.file.write_at(words.as_bytes(), 0);
    }
}

impl Drop for VmLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = FileExt::unlock(&self.file);
    }
}

/// Who holds `vm`'s lock now, if another kiln does and said what for.
pub fn holder(vm: &VmDir) -> Option<Holder> {
    let file = File::open(lock_path(vm)).ok()?;
    // Free for a shared lock: nobody holds it exclusively.
    if file.try_lock_shared().is_ok() {
        let _ = FileExt::unlock(&file);
        return None;
    }
    read_holder(&file)
}

/// The words of a lock file, when their pid is alive (a killed holder's
/// words stay behind it, its lock does not).
fn read_holder(file: &File) -> Option<Holder> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let (word, pid) = text.trim().split_once(' ')?;
    let pid: u32 = pid.parse().ok()?;
    let alive = PathBuf::from(format!("/proc/{pid}")).exists();
    Some(Holder {
        activity: Activity::parse(word)?,
        pid,
    })
    .filter(|_| alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn vm(dir: &std::path::Path) -> VmDir {
        VmDir {
            name: "t".into(),
            dir: dir.join("t"),
        }
    }

    #[test]
    fn a_second_holder_waits_and_hears_what_the_first_does() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = vm(tmp.path());
        assert!(
            VmLock::acquire(&vm, false, &|_| panic!("no holder"))
                .unwrap()
                .is_none(),
            "no VM, no lock without create"
        );
        let first = VmLock::acquire(&vm, true, &|_| panic!("no holder"))
            .unwrap()
            .expect("the lock");
        assert_eq!(holder(&vm), None, "a holder that said nothing");
        first.set(Activity::Booting);
        let me = Holder {
            activity: Activity::Booting,
            pid: std::process::id(),
        };
        assert_eq!(holder(&vm), Some(me.clone()));
        let (tx, rx) = mpsc::channel();
        let second = {
            let vm = vm.clone();
            std::thread::spawn(move || {
                let heard = std::sync::Mutex::new(None);
                let lock = VmLock::acquire(&vm, true, &|h| {
                    *heard.lock().unwrap() = Some(h.clone());
                    tx.send(()).unwrap();
                })
                .unwrap()
                .expect("the lock");
                (lock, heard.into_inner().unwrap())
            })
        };
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the second acquire says it waits");
        assert!(!second.is_finished(), "it waits while the first holds");
        drop(first);
        let (lock, heard) = second.join().unwrap();
        assert_eq!(heard, Some(me));
        assert_eq!(holder(&vm), None, "the words go with the first holder");
        drop(lock);
    }

    /// As `destroy` does: the directory goes while the lock is held. A
    /// waiting `down` then finds no VM, a waiting `up` makes a new one.
    #[test]
    fn a_lock_whose_directory_was_removed_is_taken_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = vm(tmp.path());
        for create in [false, true] {
            let first = VmLock::acquire(&vm, true, &|_| {}).unwrap().expect("lock");
            first.set(Activity::Stopping);
            let (tx, rx) = mpsc::channel();
            let waiter = {
                let vm = vm.clone();
                std::thread::spawn(move || {
                    VmLock::acquire(&vm, create, &|_| tx.send(()).unwrap()).unwrap()
                })
            };
            // It has the old file open when the directory goes.
            rx.recv_timeout(Duration::from_secs(60)).expect("waiting");
            fs::remove_dir_all(&vm.dir).unwrap();
            drop(first);
            let got = waiter.join().unwrap();
            assert_eq!(got.is_some(), create, "create: {create}");
            assert_eq!(lock_path(&vm).is_file(), create);
        }
    }
}
