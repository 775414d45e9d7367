//! Node-local locks: one per attachment (operations on the same attachment are
//! serialized) and one node-wide GC lock (ADD/DEL/CHECK share it, GC takes it alone, as
//! the spec asks). flock, so a crashed holder never blocks the next caller. Lock files
//! live under the state dir (/run by default). An attachment's lock file is made by its
//! ADD and stays until its DEL (or a rolled-back ADD, or GC of a stale attachment): it
//! also says "this attachment exists or is being added", which GC without an explicit
//! valid set respects (a runtime's chain of drop-ins has no cached result until its
//! last plugin returns). Locks leave no file behind once every attachment is DELeted.
//!
//! The node-wide `gc.lock` is removed again by the taker that made it, when nobody else
//! holds it; a request refused for its input removes the lock file and directories it
//! made, so it leaves nothing. Lock files and the directories below the state dir are
//! never opened through a symlink (see `nodefs`): a planted one is a clear error, and
//! the retries for a lock file removed under a taker are bounded.
//!
//! A plugin this process execs may exec cnichain again for the same attachment (a
//! foreign main plugin delegating to cnichain's host-local drop-in), or during GC. That
//! child must not wait for locks its parent holds for it: the holder passes their paths
//! in `CNICHAIN_HELD_LOCKS` (one per line) and a taker finding its path there goes on
//! without locking.

use crate::spec::error::CniError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use crate::settings::DEFAULT_STATE_DIR;

/// The variable passing held lock paths to exec'd plugins.
pub const HELD_ENV: &str = "CNICHAIN_HELD_LOCKS";

/// Locks this process holds now.
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Locks the process that exec'd this one holds for it.
fn inherited() -> &'static [PathBuf] {
    static INHERITED: OnceLock<Vec<PathBuf>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        std::env::var_os(HELD_ENV)
            .map(|v| {
                v.to_string_lossy()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The value of [`HELD_ENV`] for a plugin exec'd now: the locks held by this process
/// and those held for it. None when there are none.
pub fn held_env() -> Option<String> {
    let mut all: Vec<String> = inherited().iter().map(|p| p.display().to_string()).collect();
    if let Ok(h) = HELD.lock() {
        all.extend(h.iter().map(|p| p.display().to_string()));
    }
    (!all.is_empty()).then(|| all.join("\n"))
}

/// A held flock; released on drop. `file` is None for a lock the parent holds for us.
pub struct Held {
    file: Option<File>,
    path: PathBuf,
    /// This taker made the lock file (it did not exist before).
    pub created: bool,
    /// The directories this taker made for the lock file, outermost first.
    made_dirs: Vec<PathBuf>,
    /// Remove the lock file on drop when it is free (the GC lock's maker).
    tidy: bool,
}

impl Held {
    /// Remove the lock file while still holding it. Later takers that opened the old
    /// file notice it was unlinked and retry on a fresh one. A lock held by the parent is
    /// the parent's to remove. The directories this taker made go too when empty, so a
    /// refused request leaves nothing behind.
    pub fn remove(mut self) {
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(&self.path);
            drop(f);
            crate::nodefs::remove_made_dirs(&self.made_dirs);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut h) = HELD.lock() {
            if let Some(i) = h.iter().position(|p| *p == self.path) {
                h.remove(i);
            }
        }
        // The node-wide GC lock is made by the first taker on a clean node: that taker
        // removes it again (and the directories it made, when empty) if nobody else
        // holds it, so a request leaves no lock file of its own behind. Exclusive
        // (non-blocking) first, as removal needs: a taker waiting on this file sees it
        // unlinked and retries on a fresh one.
        if let (true, Some(f)) = (self.tidy && self.created, self.file.take()) {
            // SAFETY: a valid open fd.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                let _ = std::fs::remove_file(&self.path);
                drop(f);
                crate::nodefs::remove_made_dirs(&self.made_dirs);
            }
        }
    }
}

fn lock_err(path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("locking {}: {e}", path.display()))
}

/// Tries to open and lock a lock file that keeps being removed or replaced before
/// giving up with an error: a rival removing it again and again, not a holder.
const MAX_TRIES: usize = 100;

/// Open (creating) and flock `path`, whose directory is below the state dir `base`.
/// Retries (a bounded number of times) when the file was unlinked between open and
/// lock, so a removed lock file never splits the lock in two. Never follows a symlink:
/// one planted at the lock's path is a clear error.
fn take(base: &Path, path: &Path, exclusive: bool) -> Result<Held, CniError> {
    if inherited().iter().any(|p| p == path) {
        return Ok(Held {
            file: None,
            path: path.to_path_buf(),
            created: false,
            made_dirs: Vec::new(),
            tidy: false,
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut made_dirs = Vec::new();
    for _ in 0..MAX_TRIES {
        // Again on each try: a rival may have removed the (empty) directory.
        let mut made = crate::nodefs::make_dirs(base, dir, 0o700).map_err(|e| lock_err(path, e))?;
        made_dirs.append(&mut made);
        let open = |new: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(new)
                .mode(0o600)
                // No device or FIFO open may block; nothing is ever read or written.
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(path)
        };
        // Made here, or opened as it was: so a caller knows whether it made the file.
        let (file, created) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match open(false) {
                Ok(f) => (f, false),
                // Removed since: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(lock_err(path, crate::nodefs::explain(e))),
            },
            // The directory was removed since: make it again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(lock_err(path, crate::nodefs::explain(e))),
        };
        let held = file.metadata().map_err(|e| lock_err(path, e))?;
        if !held.is_file() {
            return Err(lock_err(
                path,
                std::io::Error::other("not a regular file; cnichain makes its lock files as regular files"),
            ));
        }
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
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                if let Ok(mut h) = HELD.lock() {
                    h.push(path.to_path_buf());
                }
                return Ok(Held {
                    file: Some(file),
                    path: path.to_path_buf(),
                    created,
                    made_dirs,
                    tidy: false,
                });
            }
            _ => continue,
        }
    }
    Err(lock_err(
        path,
        std::io::Error::other(format!(
            "gave up after {MAX_TRIES} tries: the lock file keeps being removed or replaced"
        )),
    ))
}

/// Where one node's locks live.
pub struct Locks {
    pub dir: PathBuf,
    /// The state dir (the operator's); `dir` and below are cnichain's.
    base: PathBuf,
}

impl Locks {
    pub fn new(state_dir: &Path) -> Locks {
        Locks {
            dir: state_dir.join("locks"),
            base: state_dir.to_path_buf(),
        }
    }

    /// Shared for ADD/DEL/CHECK, exclusive for GC.
    pub fn gc(&self, exclusive: bool) -> Result<Held, CniError> {
        let mut h = take(&self.base, &self.dir.join("gc.lock"), exclusive)?;
        h.tidy = true;
        Ok(h)
    }

    /// For STATUS: the lock directory can be made and written (a file created, written
    /// and removed, under a random name). The message names the path and the error.
    /// What it made is removed again.
    pub fn probe_writable(&self) -> Result<(), String> {
        let res = crate::nodefs::make_dirs(&self.base, &self.dir, 0o700).and_then(|made| {
            let probe = crate::nodefs::random_hex().map(|h| self.dir.join(format!(".status-probe-{h}")));
            let res = probe.and_then(|p| {
                let w =
                    crate::nodefs::create_new(&p, 0o600).and_then(|mut f| std::io::Write::write_all(&mut f, b"probe"));
                let _ = std::fs::remove_file(&p);
                w
            });
            crate::nodefs::remove_made_dirs(&made);
            res
        });
        res.map_err(|e| format!("state directory {} is not writable: {e}", self.dir.display()))
    }

    /// The attachment (network, container, ifname); the ids are validated before this.
    pub fn attachment(&self, net: &str, container_id: &str, ifname: &str) -> Result<Held, CniError> {
        take(&self.base, &self.attachment_path(net, container_id, ifname), true)
    }

    /// One directory per network, so that GC can tell its own lock files; `:` is in
    /// neither a container ID nor an interface name, so the name can be read back.
    fn attachment_path(&self, net: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(net).join(format!("{container_id}:{ifname}.lock"))
    }

    /// Whether `(net, container, ifname)` has a lock file.
    pub fn has_attachment(&self, net: &str, container_id: &str, ifname: &str) -> bool {
        self.attachment_path(net, container_id, ifname).exists()
    }

    /// The (containerID, ifname) of every lock file of `net`: an ADD left it (it stays
    /// until the attachment's DEL), so each names an attachment that exists or whose
    /// ADD is under way, cached or not yet.
    pub fn attachments(&self, net: &str) -> Vec<(String, String)> {
        let Ok(rd) = std::fs::read_dir(self.dir.join(net)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (cid, ifname) = name.strip_suffix(".lock")?.split_once(':')?;
                Some((cid.to_string(), ifname.to_string()))
            })
            .collect()
    }

    /// GC, with the GC lock held alone (no attachment lock is held by anyone): remove the
    /// lock files of `net`'s attachments that are not in `valid` (those an ADD killed
    /// before its DEL left).
    pub fn sweep(&self, net: &str, valid: &[(&str, &str)]) {
        let keep: std::collections::HashSet<PathBuf> =
            valid.iter().map(|(c, i)| self.attachment_path(net, c, i)).collect();
        // Never remove through a planted symlink (it could lead anywhere).
        let real = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        if !real(&self.dir) || !real(&self.dir.join(net)) {
            return;
        }
        let Ok(rd) = std::fs::read_dir(self.dir.join(net)) else {
            return;
        };
        for p in rd.flatten().map(|e| e.path()) {
            if p.extension().is_some_and(|e| e == "lock") && !keep.contains(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
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
        assert!(!dir.join("locks/n/c:eth0.lock").exists(), "removed by the last holder");
        // held locks are passed to exec'd plugins; released ones are not
        let h = locks.attachment("n", "c", "eth1").unwrap();
        assert!(held_env().is_some_and(|v| v.lines().any(|l| l.ends_with("locks/n/c:eth1.lock"))));
        drop(h);
        assert!(held_env().is_none_or(|v| !v.contains("c:eth1")));
        // sweep removes the stale attachment's lock file only
        drop(locks.attachment("n", "old", "eth0").unwrap());
        drop(locks.attachment("n", "live", "eth0").unwrap());
        drop(locks.attachment("n2", "old", "eth0").unwrap());
        let mut listed = locks.attachments("n");
        listed.sort();
        assert_eq!(
            listed,
            [
                ("c".into(), "eth1".into()),
                ("live".into(), "eth0".into()),
                ("old".into(), "eth0".into())
            ]
        );
        locks.sweep("n", &[("live", "eth0")]);
        assert!(!dir.join("locks/n/old:eth0.lock").exists());
        assert!(dir.join("locks/n/live:eth0.lock").exists() && locks.has_attachment("n", "live", "eth0"));
        assert!(dir.join("locks/n2/old:eth0.lock").exists(), "another network's");
        // shared GC locks coexist
        let s1 = locks.gc(false).unwrap();
        let s2 = locks.gc(false).unwrap();
        drop((s1, s2));
        let _x = locks.gc(true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn planted_symlinks_are_errors_and_takers_tidy_up() {
        let dir = std::env::temp_dir().join(format!("cnichain-lock-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let locks = Locks::new(&dir);
        // A refused request: the attachment lock removed, then the GC lock dropped.
        let gc = locks.gc(false).unwrap();
        let att = locks.attachment("n", "c", "eth0").unwrap();
        assert!(gc.created && att.created);
        att.remove();
        drop(gc);
        assert!(!dir.exists(), "the takers made the state dir and remove it again");
        // A dangling symlink at gc.lock: an error at once, never a spin.
        std::fs::create_dir_all(dir.join("locks")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("locks/gc.lock")).unwrap();
        let e = locks.gc(false).err().expect("refused");
        assert!(e.msg.contains("symbolic link"), "{e}");
        assert!(!dir.join("nowhere").exists());
        // A symlinked network lock dir: refused, and sweep does not remove through it.
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("x:eth0.lock"), "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("locks/m")).unwrap();
        std::fs::remove_file(dir.join("locks/gc.lock")).unwrap();
        let e = locks.attachment("m", "c", "eth0").err().expect("refused");
        assert!(e.msg.contains("symbolic link"), "{e}");
        locks.sweep("m", &[]);
        assert!(elsewhere.join("x:eth0.lock").exists(), "removed through the symlink");
        // A lock file held by another taker stays when the GC lock's maker is done.
        let a = locks.gc(false).unwrap();
        let b = locks.gc(false).unwrap();
        assert!(a.created && !b.created);
        drop(a);
        assert!(dir.join("locks/gc.lock").exists());
        drop(b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
