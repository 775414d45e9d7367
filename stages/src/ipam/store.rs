//! The host-local on-disk store, byte-compatible with the reference's disk backend so
//! that cnichain and the reference plugin can share one node:
//!
//! ```text
//! <dataDir>/<network>/            mode 0755
//!   lock                          empty, mode 0750, flock(LOCK_EX) for every operation
//!   <ip>                          "<containerID>\r\n<ifname>" (no final newline), 0644, O_EXCL
//!   last_reserved_ip.<rangeset>   the last address reserved from range set N, 0644
//! ```
//!
//! Files are matched on their content with surrounding white space trimmed, first
//! `<id>\r\n<ifname>`, then (files written by old versions) the bare container ID.
//! The reference walks the whole directory tree in lexical order (Go's `filepath.Walk`)
//! for every lookup; cnichain finds the same files through its index (`store_index`),
//! confirming each by reading it, and walks only where the index cannot answer: a
//! store with subdirectories, a container ID that reads as an address (a cursor file
//! could hold it), and GC.

use super::store_index::{owner_key, Index};
use cnichain_engine::spec::error::{CniError, IO_FAILURE};
use cnichain_engine::spec::ipnet::{format_ip, parse_ip};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub use super::store_files::{DEFAULT_DATA_DIR, LAST_IP_PREFIX, LINE_BREAK, LOCK_FILE};

fn io_err(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::new(IO_FAILURE, format!("{what} {}: {e}", path.display()))
}

/// The store of one network, locked for as long as the value lives.
pub struct Store {
    dir: PathBuf,
    /// cnichain's index of the files; None where it cannot be used (see `store_index`).
    index: RefCell<Option<Index>>,
    /// The open lock file; closing it releases the flock (after `Drop` wrote the index).
    _lock: Option<File>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(ix) = self.index.get_mut() {
            ix.commit();
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create the directory and lock file as the reference does (ADD, DEL, CHECK); take
    /// the exclusive lock.
    Write,
    /// Create nothing (GC, STATUS); `None` when the directory does not exist. Exclusive
    /// lock when `exclusive`, else shared.
    Existing { exclusive: bool },
}

impl Store {
    /// `<data_dir>/<network>`, locked. `data_dir` "" is the default.
    pub fn open(data_dir: &str, network: &str, mode: Mode) -> Result<Option<Store>, CniError> {
        let base = if data_dir.is_empty() {
            DEFAULT_DATA_DIR
        } else {
            data_dir
        };
        let dir = Path::new(base).join(network);
        let lock_path = dir.join(LOCK_FILE);
        let (file, op) = match mode {
            Mode::Write => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&dir)
                    .map_err(|e| io_err("cannot create IPAM data directory", &dir, e))?;
                cnichain_engine::nodefs::warn_if_shared(&dir);
                let f = open_lock_creating(&lock_path)?;
                (Some(f), libc::LOCK_EX)
            }
            Mode::Existing { exclusive } => {
                if !dir.is_dir() {
                    return Ok(None);
                }
                let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
                match OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&lock_path)
                {
                    Ok(f) => (Some(f), op),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => (None, op),
                    Err(e) => return Err(io_err("cannot open IPAM lock", &lock_path, e)),
                }
            }
        };
        if let Some(f) = &file {
            flock(f, op).map_err(|e| io_err("cannot lock", &lock_path, e))?;
        }
        // Only an exclusive holder of the lock may trust or write the index.
        let index = match (&file, op) {
            (Some(_), libc::LOCK_EX) => Index::open(Path::new(base), network, &dir),
            _ => None,
        };
        Ok(Some(Store {
            dir,
            index: RefCell::new(index),
            _lock: file,
        }))
    }

    /// Run `f` on the index; None (and the index dropped, so the caller walks the files)
    /// when there is none or it turns out the store cannot be indexed.
    fn indexed<T>(&self, f: impl FnOnce(&mut Index) -> Option<T>) -> Option<T> {
        let mut guard = self.index.borrow_mut();
        let out = f(guard.as_mut()?);
        if out.is_none() {
            *guard = None;
        }
        out
    }

    /// Whether the index knows `ip` as reserved (false when there is no index: the
    /// allocator then tries the address, as the reference does).
    pub fn known_taken(&self, ip: IpAddr) -> bool {
        self.indexed(|ix| ix.taken(ip)).unwrap_or(false)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(format_ip(&ip))
    }

    /// Reserve `ip` for (id, ifname): `Ok(false)` when the file already exists. On
    /// success `last_reserved_ip.<range_id>` is updated.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> Result<bool, CniError> {
        let path = self.ip_path(ip);
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if let Some(ix) = self.index.borrow_mut().as_mut() {
                    if ix.taken(ip) == Some(false) {
                        ix.surprised(ip);
                    }
                }
                return Ok(false);
            }
            Err(e) => return Err(io_err("cannot reserve", &path, e)),
        };
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if let Err(e) = f.write_all(content.as_bytes()) {
            drop(f);
            let _ = fs::remove_file(&path);
            return Err(io_err("cannot write", &path, e));
        }
        drop(f);
        if let Err(e) = cnichain_engine::fault::point("host-local.after-reserve") {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let last = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            // Unlike the reference, never through a symlink planted in the store.
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&last)
            .and_then(|mut f| f.write_all(format_ip(&ip).as_bytes()))
            .map_err(|e| {
                // Unlike the reference, do not leak the reservation just made.
                let _ = fs::remove_file(&path);
                io_err("cannot write", &last, cnichain_engine::nodefs::explain(e))
            })?;
        if let Some(ix) = self.index.borrow_mut().as_mut() {
            ix.added(&owner_key(content.as_bytes()), &format_ip(&ip));
        }
        Ok(true)
    }

    /// The address in `last_reserved_ip.<range_id>`, if it holds one.
    pub fn last_reserved_ip(&self, range_id: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        match fs::read(&path) {
            Ok(b) => std::str::from_utf8(&b).ok().and_then(parse_ip),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("error retrieving last reserved ip: {}: {e}", path.display());
                }
                None
            }
        }
    }

    /// Every regular file below the store, with its trimmed content.
    fn entries(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for path in walk(&self.dir) {
            if let Ok(b) = fs::read(&path) {
                out.push((path, owner_key(&b)));
            }
        }
        out
    }

    /// The walk changed files behind the index: the next operation rebuilds it.
    fn index_unknown(&self) {
        if let Some(ix) = self.index.borrow_mut().as_mut() {
            ix.surprised_by_walk();
        }
    }

    /// The files the index lists under `key` that still hold it, by name; listings
    /// the files contradict are corrected on the way.
    fn confirmed(&self, ix: &mut Index, key: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for name in ix.names(key)? {
            match fs::read(self.dir.join(&name)) {
                Ok(b) if owner_key(&b) == key => out.push(name),
                Ok(b) => {
                    ix.removed(key, &name);
                    ix.added(&owner_key(&b), &name);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => ix.removed(key, &name),
                Err(_) => {}
            }
        }
        out.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Some(out)
    }

    /// Remove every file holding `key`; whether any was removed.
    fn release_key_indexed(&self, ix: &mut Index, key: &str) -> Option<bool> {
        let mut found = false;
        for name in self.confirmed(ix, key)? {
            if fs::remove_file(self.dir.join(&name)).is_ok() {
                ix.removed(key, &name);
                found = true;
            }
        }
        Some(found)
    }

    fn release_by_key(entries: &[(PathBuf, String)], key: &str) -> bool {
        let mut found = false;
        for (path, content) in entries {
            if content == key && fs::remove_file(path).is_ok() {
                found = true;
            }
        }
        found
    }

    /// Release every reservation of (id, ifname); if there is none, every reservation
    /// holding only `id` (old format). Errors are ignored, as by the reference, so as
    /// much as possible is released.
    pub fn release_by_id(&self, id: &str, ifname: &str) {
        let id = id.trim();
        let full = format!("{id}{LINE_BREAK}{ifname}");
        // An ID that reads as an address may be what a cursor file holds, which the
        // reference's bare-ID pass removes too; the index does not list cursors.
        if parse_ip(id).is_none() {
            let done = self.indexed(|ix| {
                if !self.release_key_indexed(ix, &full)? {
                    self.release_key_indexed(ix, id)?;
                }
                for name in self.confirmed(ix, "")? {
                    if file_ip(Path::new(&name)).is_some() && fs::remove_file(self.dir.join(&name)).is_ok() {
                        ix.removed("", &name);
                    }
                }
                Some(())
            });
            if done.is_some() {
                return;
            }
        }
        self.index_unknown();
        let entries = self.entries();
        if !Self::release_by_key(&entries, &full) {
            Self::release_by_key(&entries, id);
        }
        // An empty reservation is one whose ADD was killed between creating the file
        // and writing its owner (both happen under the exclusive lock we hold now, so
        // its writer is gone): it names nobody, so no DEL would ever match it. Release
        // it here, so that a DEL after a crash leaves no address behind.
        for (path, content) in &entries {
            if content.is_empty() && file_ip(path).is_some() {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// The names of the files held by (id, ifname) and by the bare id, in walk order.
    fn owned(&self, id: &str, ifname: &str) -> Vec<PathBuf> {
        let id = id.trim();
        let full = format!("{id}{LINE_BREAK}{ifname}");
        let hit = self.indexed(|ix| {
            let mut names = self.confirmed(ix, &full)?;
            names.extend(self.confirmed(ix, id)?);
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            Some(names)
        });
        match hit {
            Some(names) => names.into_iter().map(|n| self.dir.join(n)).collect(),
            None => self
                .entries()
                .into_iter()
                .filter(|(_, c)| *c == full || c == id)
                .map(|(p, _)| p)
                .collect(),
        }
    }

    /// Whether (id, ifname), or else the bare id, holds any reservation.
    pub fn find_by_id(&self, id: &str, ifname: &str) -> bool {
        !self.owned(id, ifname).is_empty()
    }

    /// The addresses reserved by (id, ifname) or by the bare id, in walk order.
    pub fn get_by_id(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        self.owned(id, ifname).iter().filter_map(|p| file_ip(p)).collect()
    }

    /// Every reserved address (files named by an address), in walk order.
    pub fn reserved(&self) -> Vec<IpAddr> {
        walk(&self.dir).iter().filter_map(|p| file_ip(p)).collect()
    }

    /// Release every reservation whose owner is not in `valid` (container ID, ifname).
    /// A file of the old format (bare container ID) is kept when any valid attachment has
    /// that container ID. Only files named by an address are considered, so `lock` and
    /// `last_reserved_ip.N` stay. Returns the released addresses. One walk of the store,
    /// with the valid set hashed: thousands of each take a fraction of a second.
    pub fn gc(&self, valid: &[(String, String)]) -> Vec<IpAddr> {
        let keys: HashSet<String> = valid
            .iter()
            .map(|(id, ifname)| format!("{}{LINE_BREAK}{ifname}", id.trim()))
            .collect();
        let ids: HashSet<&str> = valid.iter().map(|(id, _)| id.trim()).collect();
        let mut released = Vec::new();
        for (path, content) in self.entries() {
            let Some(ip) = file_ip(&path) else { continue };
            let keep = match content.split_once(LINE_BREAK) {
                Some(_) => keys.contains(&content),
                None => ids.contains(content.as_str()),
            };
            if !keep && fs::remove_file(&path).is_ok() {
                released.push(ip);
            }
        }
        if !released.is_empty() {
            // Rebuilt now, by GC, rather than by the next ADD.
            let _ = self.indexed(|ix| ix.refresh());
        }
        released
    }
}

/// The address a store file is named by, as Go's `net.ParseIP` of the base name.
fn file_ip(path: &Path) -> Option<IpAddr> {
    path.file_name().and_then(|n| n.to_str()).and_then(parse_ip)
}

/// Regular (non-directory) files below `dir`, depth first in lexical order of names, not
/// following symlinked directories (Go's `filepath.Walk`). Unreadable parts are skipped.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn rec(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for n in names {
            let p = d.join(n);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => rec(&p, out),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    rec(dir, &mut out);
    out
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own for the duration of the call.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `open(path, O_CREAT|O_RDONLY|O_CLOEXEC, 0750)`, as go-filemutex opens its lock, plus
/// O_NOFOLLOW: a symlink planted as `lock` would make the reference create its target.
fn open_lock_creating(path: &Path) -> Result<File, CniError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::FromRawFd;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| CniError::new(IO_FAILURE, format!("invalid lock path {}", path.display())))?;
    loop {
        // SAFETY: a valid NUL-terminated path; the returned descriptor is owned by File.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o750 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a fresh descriptor nobody else owns.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io_err(
                "cannot open IPAM lock",
                path,
                cnichain_engine::nodefs::explain(e),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("cnichain-ipam-store-{}-{tag}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
        fn s(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn ipam_store_format_is_the_reference_one() {
        let t = TempDir::new("fmt");
        let s = Store::open(t.s(), "net1", Mode::Write).unwrap().unwrap();
        assert!(s.reserve("c1", "eth0", ip("10.1.0.2"), 0).unwrap());
        assert!(!s.reserve("c9", "eth9", ip("10.1.0.2"), 0).unwrap());
        assert!(s.reserve(" c2 ", "eth1", ip("fd00::2"), 1).unwrap());
        let d = t.0.join("net1");
        assert_eq!(fs::read(d.join("10.1.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(d.join("fd00::2")).unwrap(), b"c2\r\neth1");
        assert_eq!(fs::read(d.join("last_reserved_ip.0")).unwrap(), b"10.1.0.2");
        assert_eq!(fs::read(d.join("last_reserved_ip.1")).unwrap(), b"fd00::2");
        assert_eq!(fs::read(d.join("lock")).unwrap(), b"");
        // modes as the reference leaves them, under the usual umask 022
        let umask = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string()))
            })
            .and_then(|v| u32::from_str_radix(&v, 8).ok());
        if umask == Some(0o022) {
            assert_eq!(mode(&d), 0o755);
            assert_eq!(mode(&d.join("lock")), 0o750);
            assert_eq!(mode(&d.join("10.1.0.2")), 0o644);
            assert_eq!(mode(&d.join("last_reserved_ip.0")), 0o644);
        }
        assert_eq!(s.last_reserved_ip(0), Some(ip("10.1.0.2")));
        assert_eq!(s.last_reserved_ip(1), Some(ip("fd00::2")));
        assert_eq!(s.last_reserved_ip(2), None);
        fs::write(d.join("last_reserved_ip.2"), "garbage").unwrap();
        assert_eq!(s.last_reserved_ip(2), None);
        assert_eq!(s.reserved(), vec![ip("10.1.0.2"), ip("fd00::2")]);
    }

    #[test]
    fn ipam_store_release_and_find() {
        let t = TempDir::new("rel");
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        s.reserve("a", "eth0", ip("10.0.0.2"), 0).unwrap();
        s.reserve("a", "eth1", ip("10.0.0.3"), 0).unwrap();
        s.reserve("b", "eth0", ip("10.0.0.4"), 0).unwrap();
        // a legacy file holding only the container id, with a trailing newline, written
        // by another plugin between two operations (each holds the lock)
        drop(s);
        fs::write(t.0.join("n").join("10.0.0.5"), "a\n").unwrap();
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        assert!(s.find_by_id("a", "eth0"));
        assert!(s.find_by_id("a", "eth7")); // matches the legacy file
        assert!(!s.find_by_id("c", "eth0"));
        assert_eq!(s.get_by_id("a", "eth0"), vec![ip("10.0.0.2"), ip("10.0.0.5")]);
        s.release_by_id("a", "eth0");
        // the exact match was released; the legacy file stays while one was found
        assert!(!s.dir().join("10.0.0.2").exists());
        assert!(s.dir().join("10.0.0.5").exists());
        s.release_by_id("a", "eth0");
        // nothing exact left: the legacy fallback applies
        assert!(!s.dir().join("10.0.0.5").exists());
        assert!(s.dir().join("10.0.0.3").exists());
        // idempotent
        s.release_by_id("a", "eth0");
        s.release_by_id("zzz", "eth0");
        assert_eq!(s.reserved(), vec![ip("10.0.0.3"), ip("10.0.0.4")]);
        // files in subdirectories are walked too, as by filepath.Walk
        drop(s);
        fs::create_dir(t.0.join("n").join("sub")).unwrap();
        fs::write(t.0.join("n").join("sub").join("10.0.0.9"), "q\r\neth0").unwrap();
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        assert_eq!(s.get_by_id("q", "eth0"), vec![ip("10.0.0.9")]);
        s.release_by_id("q", "eth0");
        assert!(!s.dir().join("sub").join("10.0.0.9").exists());
    }

    #[test]
    fn ipam_store_gc() {
        let t = TempDir::new("gc");
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        s.reserve("keep", "eth0", ip("10.0.0.2"), 0).unwrap();
        s.reserve("keep", "eth1", ip("10.0.0.3"), 0).unwrap();
        s.reserve("gone", "eth0", ip("10.0.0.4"), 0).unwrap();
        drop(s);
        fs::write(t.0.join("n").join("10.0.0.8"), "legacy").unwrap();
        fs::write(t.0.join("n").join("10.0.0.9"), "keep").unwrap();
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        let valid = vec![("keep".to_string(), "eth0".to_string())];
        let mut rel = s.gc(&valid);
        rel.sort();
        assert_eq!(rel, vec![ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.8")]);
        assert!(s.dir().join("10.0.0.2").exists());
        assert!(s.dir().join("10.0.0.9").exists());
        assert_eq!(s.gc(&[]).len(), 2);
        assert!(s.dir().join("lock").exists());
        assert!(s.dir().join("last_reserved_ip.0").exists());
        assert!(s.reserved().is_empty());
    }

    #[test]
    fn ipam_store_existing_mode_creates_nothing() {
        let t = TempDir::new("ex");
        assert!(Store::open(t.s(), "n", Mode::Existing { exclusive: true })
            .unwrap()
            .is_none());
        assert!(!t.0.exists());
        fs::create_dir_all(t.0.join("n")).unwrap();
        let s = Store::open(t.s(), "n", Mode::Existing { exclusive: false })
            .unwrap()
            .unwrap();
        assert!(s.reserved().is_empty());
        assert!(!t.0.join("n").join("lock").exists());
    }

    #[test]
    fn ipam_store_lock_excludes_other_openers() {
        let t = TempDir::new("lock");
        let s = Store::open(t.s(), "n", Mode::Write).unwrap().unwrap();
        let lock = t.0.join("n").join("lock");
        let other = File::open(&lock).unwrap();
        // SAFETY: plain flock on an open descriptor.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "lock not held");
        drop(s);
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "lock not released");
    }

    #[test]
    fn ipam_store_io_errors_are_cni_errors() {
        let t = TempDir::new("io");
        fs::create_dir_all(&t.0).unwrap();
        fs::write(t.0.join("file"), "x").unwrap();
        let e = Store::open(t.0.join("file").to_str().unwrap(), "n", Mode::Write)
            .err()
            .unwrap();
        assert_eq!(e.code, IO_FAILURE);
        assert!(e.msg.contains("cannot create IPAM data directory"), "{}", e.msg);
    }
}
