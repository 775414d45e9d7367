//! Node-local locks: one per attachment (operations on the same attachment are
//! serialized) and one node-wide GC lock (ADD/DEL/CHECK share it, GC takes it alone, as
//! the spec asks). flock, so a crashed holder never blocks the next caller. Lock files
//! live under the state dir (tmpfs /run by default) and the attachment's is removed when
//! its DEL finishes, so locks leave nothing behind.

use crate::spec::error::CniError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/run/cnichain";

/// A held flock; released on drop.
pub struct Held {
    file: File,
    path: PathBuf,
}

impl Held {
    /// Remove the lock file while still holding it. Later takers that opened the old
    /// file notice it was unlinked and retry on a fresh one.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

fn lock_err(path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("locking {}: {e}", path.display()))
}

/// Open (creating) and flock `path`. Retries when the file was unlinked between open
/// and lock, so a removed lock file never splits the lock in two.
pub fn take(path: &Path, exclusive: bool) -> Result<Held, CniError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| lock_err(path, e))?;
    }
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| lock_err(path, e))?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: a valid open fd.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(lock_err(path, e));
            }
        }
        let held = file.metadata().map_err(|e| lock_err(path, e))?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Held {
                    file,
                    path: path.to_path_buf(),
                })
            }
            _ => continue,
        }
    }
}

/// Where one node's locks live.
pub struct Locks {
    pub dir: PathBuf,
}

impl Locks {
    pub fn new(state_dir: &Path) -> Locks {
        Locks {
            dir: state_dir.join("locks"),
        }
    }

    /// Shared for ADD/DEL/CHECK, exclusive for GC.
    pub fn gc(&self, exclusive: bool) -> Result<Held, CniError> {
        take(&self.dir.join("gc.lock"), exclusive)
    }

    /// For STATUS: the lock directory can be made and written (a file created, written
    /// and removed). The message names the path and the error.
    pub fn probe_writable(&self) -> Result<(), String> {
        let probe = self.dir.join(format!(".status-probe-{}", std::process::id()));
        let res = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&probe)?;
                std::io::Write::write_all(&mut f, b"probe")
            });
        let _ = std::fs::remove_file(&probe);
        res.map_err(|e| format!("state directory {} is not writable: {e}", self.dir.display()))
    }

    /// The attachment (network, container, ifname); the ids are validated before this.
    pub fn attachment(&self, net: &str, container_id: &str, ifname: &str) -> Result<Held, CniError> {
        take(&self.dir.join(format!("{net}-{container_id}-{ifname}.lock")), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_lock_serializes_and_removal_is_safe() {
        let dir = std::env::temp_dir().join(format!("cnichain-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let locks = Locks::new(&dir);
        let a = locks.attachment("n", "c", "eth0").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = dir.clone();
        let t = std::thread::spawn(move || {
            let l = Locks::new(&d2);
            let b = l.attachment("n", "c", "eth0").unwrap();
            tx.send(()).unwrap();
            b.remove();
        });
        // the other thread cannot get it while we hold it
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        a.remove();
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("taken after release");
        t.join().unwrap();
        assert!(!dir.join("locks/n-c-eth0.lock").exists(), "removed by the last holder");
        // shared GC locks coexist
        let s1 = locks.gc(false).unwrap();
        let s2 = locks.gc(false).unwrap();
        drop((s1, s2));
        let _x = locks.gc(true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
