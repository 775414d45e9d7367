//! cnichain's own index of a host-local store, so that ADD, DEL and CHECK touch a few
//! files instead of reading every reservation (the reference's store is a directory of
//! one file per address; finding an owner means reading them all).
//!
//! ```text
//! <dataDir>/.cnichain-index/<network>/   mode 0700 (a name no network can have)
//!   stamp        "cnichain-hostlocal-index 1 <dev> <ino> <mtime s> <mtime ns>" of the store dir
//!   o<bucket>    owners: "<hex(trimmed content)> <hex(file name)>" lines, bucket = hash % 1024
//!   c4-<chunk>   512-byte bitmap of the addresses <chunk>*4096 .. +4095 that have a file
//!   c6-<chunk>   (same for IPv6)
//! ```
//!
//! The reference never looks outside `<dataDir>/<network>`, so it neither reads nor
//! removes any of this. The index is trusted only while the store directory is exactly as
//! cnichain left it: after each change cnichain sets the directory's mtime 1 ns back and
//! records it in `stamp`. Any later change of the directory's entries (the reference's ADD
//! or DEL, an admin's `rm`) sets the mtime to the current time, which is never that value
//! (not even within one clock tick, when a recorded "current" mtime would not move), so the
//! stamp no longer matches and the index is rebuilt from the files. Owner hits are
//! confirmed by reading the file; a free bit is confirmed by creating the file (O_EXCL).
//! A store with subdirectories (whose changes leave the directory's mtime alone) is not
//! indexed: every operation reads the files, as before.

use super::range::to_u128;
use super::store_files::{LAST_IP_PREFIX, LOCK_FILE};
use cnichain_engine::spec::ipnet::{format_ip, parse_ip};
use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const INDEX_DIR: &str = ".cnichain-index";
const STAMP: &str = "stamp";
const STAMP_MAGIC: &str = "cnichain-hostlocal-index 1";
const OWNERS_MAGIC: &str = "cnichain-hostlocal-owners 1";
const BUCKETS: u64 = 1024;
const CHUNK_BITS: u32 = 12;
const CHUNK_BYTES: usize = 1 << (CHUNK_BITS - 3);

type ChunkKey = (bool, u128);

/// The index is damaged: rebuild it from the files.
struct Corrupt;

pub struct Index {
    store_dir: PathBuf,
    dir: PathBuf,
    /// The cache holds the whole index (just rebuilt): what is not in it does not exist.
    full: bool,
    owners: HashMap<u64, Vec<(String, String)>>,
    chunks: HashMap<ChunkKey, Vec<u8>>,
    dirty_owners: HashSet<u64>,
    dirty_chunks: HashSet<ChunkKey>,
    /// Something went wrong mid-way: leave no stamp, so the next operation rebuilds.
    poisoned: bool,
    stamp: Option<String>,
}

/// The trimmed content of a store file: its owner key ("<id>\r\n<ifname>", a bare id
/// for files of old versions, "" for a file whose writer died before writing it).
pub fn owner_key(content: &[u8]) -> String {
    String::from_utf8_lossy(content).trim().to_string()
}

/// Whether a top-level store file is an owner record (not the lock or a cursor, whose
/// contents are not owners and change without the directory changing).
fn is_record(name: &str) -> bool {
    name != LOCK_FILE && !name.starts_with(LAST_IP_PREFIX)
}

/// The address a file name reserves: the name of the file the allocator creates for it.
pub fn reserved_ip(name: &str) -> Option<IpAddr> {
    parse_ip(name).filter(|ip| format_ip(ip) == name)
}

fn bucket(key: &str) -> u64 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % BUCKETS
}

fn chunk_of(ip: IpAddr) -> (ChunkKey, usize) {
    let v = to_u128(ip);
    ((ip.is_ipv6(), v >> CHUNK_BITS), (v & ((1 << CHUNK_BITS) - 1)) as usize)
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The stamp: the store directory's identity and mtime, and the index directory's mtime
/// (an index file removed or added behind cnichain's back changes it).
fn stamp_of(store: &fs::Metadata, index: &fs::Metadata) -> String {
    format!(
        "{STAMP_MAGIC} {} {} {} {} {} {}\n",
        store.dev(),
        store.ino(),
        store.mtime(),
        store.mtime_nsec(),
        index.mtime(),
        index.mtime_nsec()
    )
}

fn current_stamp(store_dir: &Path, dir: &Path) -> Option<String> {
    Some(stamp_of(
        &fs::symlink_metadata(store_dir).ok()?,
        &fs::symlink_metadata(dir).ok()?,
    ))
}

/// Set the mtime of `dir` 1 ns before its last change: no later change can set this
/// value, not even one within the same clock tick (when a recorded mtime would not move).
fn mark(dir: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(dir)?;
    let (sec, nsec) = if md.mtime_nsec() > 0 {
        (md.mtime(), md.mtime_nsec() - 1)
    } else {
        (md.mtime() - 1, 999_999_999)
    };
    set_mtime(dir, sec, nsec)
}

/// Write `path` whole through a temporary file and a rename, never through a symlink.
fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{name}"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(data)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Set the mtime of `dir` to `sec.nsec` (atime unchanged).
fn set_mtime(dir: &Path, sec: i64, nsec: i64) -> io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    // SAFETY: a valid NUL-terminated path and two timespecs, as utimensat expects.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index directory of `<base>/<network>`, made (mode 0700) if missing; None when it
/// cannot be used (not writable, a symlink planted on the way).
fn index_dir(base: &Path, network: &str) -> Option<PathBuf> {
    let root = base.join(INDEX_DIR);
    let dir = root.join(network);
    let _ = DirBuilder::new().recursive(true).mode(0o700).create(&dir);
    for p in [&root, &dir] {
        match fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => {}
            _ => return None,
        }
    }
    Some(dir)
}

impl Index {
    /// The index of the locked store `store_dir` (= `<base>/<network>`), rebuilt if it is
    /// stale, absent or damaged. None when the store cannot be indexed.
    pub fn open(base: &Path, network: &str, store_dir: &Path) -> Option<Index> {
        let dir = index_dir(base, network)?;
        let mut index = Index {
            store_dir: store_dir.to_path_buf(),
            dir,
            full: false,
            owners: HashMap::new(),
            chunks: HashMap::new(),
            dirty_owners: HashSet::new(),
            dirty_chunks: HashSet::new(),
            poisoned: false,
            stamp: None,
        };
        index.stamp = fs::read_to_string(index.dir.join(STAMP)).ok();
        let current = current_stamp(store_dir, &index.dir);
        if current.is_none() || index.stamp != current {
            index.rebuild()?;
        }
        Some(index)
    }

    /// Forget the index and make it again from the store's files. None when the store
    /// holds a subdirectory (not indexed).
    fn rebuild(&mut self) -> Option<()> {
        // The stamp goes first: a rebuild cut short leaves an index nobody trusts.
        let _ = fs::remove_file(self.dir.join(STAMP));
        self.stamp = None;
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        self.owners.clear();
        self.chunks.clear();
        self.full = true;
        self.poisoned = false;
        let rd = fs::read_dir(&self.store_dir).ok()?;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                // Not UTF-8: not an address, and no owner key can hold it either.
                continue;
            };
            match fs::symlink_metadata(e.path()) {
                Ok(md) if md.is_dir() => {
                    self.poisoned = true;
                    return None;
                }
                Ok(_) => {}
                Err(_) => continue,
            }
            if let Some(ip) = reserved_ip(name) {
                self.set_bit(ip, true);
            }
            if is_record(name) {
                if let Ok(b) = fs::read(e.path()) {
                    self.add_owner(&owner_key(&b), name);
                }
            }
        }
        self.dirty_owners.extend(self.owners.keys().copied());
        self.dirty_chunks.extend(self.chunks.keys().copied());
        Some(())
    }

    fn load_bucket(&mut self, b: u64) -> Result<(), Corrupt> {
        if self.full || self.owners.contains_key(&b) {
            return Ok(());
        }
        let mut entries = Vec::new();
        match fs::read_to_string(self.dir.join(format!("o{b:03x}"))) {
            Ok(text) => {
                let mut lines = text.lines();
                if lines.next() != Some(OWNERS_MAGIC) {
                    return Err(Corrupt);
                }
                // The last line is "end": a file cut short is seen as damaged.
                let mut ended = false;
                for l in lines {
                    if ended {
                        return Err(Corrupt);
                    }
                    if l == "end" {
                        ended = true;
                        continue;
                    }
                    let (k, n) = l.split_once(' ').ok_or(Corrupt)?;
                    entries.push((unhex(k).ok_or(Corrupt)?, unhex(n).ok_or(Corrupt)?));
                }
                if !ended {
                    return Err(Corrupt);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return Err(Corrupt),
        }
        self.owners.insert(b, entries);
        Ok(())
    }

    fn load_chunk(&mut self, c: ChunkKey) -> Result<(), Corrupt> {
        if self.full || self.chunks.contains_key(&c) {
            return Ok(());
        }
        let bits = match fs::read(self.dir.join(chunk_name(c))) {
            Ok(b) if b.len() == CHUNK_BYTES => b,
            Ok(_) => return Err(Corrupt),
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![0; CHUNK_BYTES],
            Err(_) => return Err(Corrupt),
        };
        self.chunks.insert(c, bits);
        Ok(())
    }

    /// Run `f` on a loaded index; a damaged file on the way rebuilds it once.
    fn with<T>(&mut self, f: impl Fn(&mut Index) -> Result<T, Corrupt>) -> Option<T> {
        match f(self) {
            Ok(v) => Some(v),
            Err(Corrupt) => {
                tracing::warn!("host-local index {} is damaged: rebuilding it", self.dir.display());
                self.rebuild()?;
                f(self).ok()
            }
        }
    }

    /// The names of the files whose owner key is `key`, as the index has them (the
    /// caller confirms each by reading it). None: the store is not indexed after all.
    pub fn names(&mut self, key: &str) -> Option<Vec<String>> {
        let b = bucket(key);
        self.with(|ix| {
            ix.load_bucket(b)?;
            Ok(ix.owners.get(&b).map_or_else(Vec::new, |v| {
                v.iter().filter(|(k, _)| k == key).map(|(_, n)| n.clone()).collect()
            }))
        })
    }

    /// Whether the index says a file for `ip` exists. None: not indexed after all.
    pub fn taken(&mut self, ip: IpAddr) -> Option<bool> {
        let (c, bit) = chunk_of(ip);
        self.with(|ix| {
            ix.load_chunk(c)?;
            Ok(ix.chunks.get(&c).is_some_and(|b| b[bit / 8] & (1 << (bit % 8)) != 0))
        })
    }

    fn set_bit(&mut self, ip: IpAddr, on: bool) {
        let (c, bit) = chunk_of(ip);
        let bits = self.chunks.entry(c).or_insert_with(|| vec![0; CHUNK_BYTES]);
        if on {
            bits[bit / 8] |= 1 << (bit % 8);
        } else {
            bits[bit / 8] &= !(1 << (bit % 8));
        }
        self.dirty_chunks.insert(c);
    }

    fn add_owner(&mut self, key: &str, name: &str) {
        let b = bucket(key);
        let v = self.owners.entry(b).or_default();
        if !v.iter().any(|(k, n)| k == key && n == name) {
            v.push((key.to_string(), name.to_string()));
        }
        self.dirty_owners.insert(b);
    }

    /// A file `name` with owner `key` was created.
    pub fn added(&mut self, key: &str, name: &str) {
        let b = bucket(key);
        let (c, _) = reserved_ip(name).map(chunk_of).unwrap_or(((false, 0), 0));
        let loaded = self.with(|ix| {
            ix.load_bucket(b)?;
            if reserved_ip(name).is_some() {
                ix.load_chunk(c)?;
            }
            Ok(())
        });
        if loaded.is_none() {
            self.poisoned = true;
            return;
        }
        if let Some(ip) = reserved_ip(name) {
            self.set_bit(ip, true);
        }
        if is_record(name) {
            self.add_owner(key, name);
        }
    }

    /// The file `name`, listed under `key`, is gone (removed, or found to be missing).
    pub fn removed(&mut self, key: &str, name: &str) {
        let b = bucket(key);
        let ip = reserved_ip(name);
        let loaded = self.with(|ix| {
            ix.load_bucket(b)?;
            if let Some(ip) = ip {
                ix.load_chunk(chunk_of(ip).0)?;
            }
            Ok(())
        });
        if loaded.is_none() {
            self.poisoned = true;
            return;
        }
        if let Some(v) = self.owners.get_mut(&b) {
            v.retain(|(k, n)| !(k == key && n == name));
        }
        self.dirty_owners.insert(b);
        if let Some(ip) = ip {
            self.set_bit(ip, false);
        }
    }

    /// The file `name` exists although the index did not know it: set right here, and
    /// rebuilt by the next operation (something changed the store behind our back).
    pub fn surprised(&mut self, ip: IpAddr) {
        self.set_bit(ip, true);
        self.poisoned = true;
    }

    /// Files changed by a walk of the store, not through this index.
    pub fn surprised_by_walk(&mut self) {
        self.poisoned = true;
    }

    /// Make the index again from the files now (after GC changed many). None: the store
    /// cannot be indexed.
    pub fn refresh(&mut self) -> Option<()> {
        self.rebuild()
    }

    /// Write what changed, then stamp the store directory as this index's. Called with
    /// the store's lock still held.
    pub fn commit(&mut self) {
        if self.poisoned {
            let _ = fs::remove_file(self.dir.join(STAMP));
            return;
        }
        let unchanged = self.stamp.is_some() && self.stamp == current_stamp(&self.store_dir, &self.dir);
        let wrote = !(self.dirty_owners.is_empty() && self.dirty_chunks.is_empty());
        if wrote {
            if let Err(e) = self.write_dirty() {
                tracing::warn!("cannot write host-local index {}: {e}", self.dir.display());
                let _ = fs::remove_file(self.dir.join(STAMP));
                return;
            }
        }
        if self.holds_nothing() {
            // An empty store needs no index (rebuilding it costs nothing): leave no file.
            let _ = fs::remove_file(self.dir.join(STAMP));
            let _ = fs::remove_dir(&self.dir);
            if let Some(root) = self.dir.parent() {
                let _ = fs::remove_dir(root);
            }
            return;
        }
        if unchanged && !wrote {
            return;
        }
        if let Err(e) = self.stamp_now() {
            tracing::warn!("cannot stamp host-local index {}: {e}", self.dir.display());
            let _ = fs::remove_file(self.dir.join(STAMP));
        }
    }

    /// Mark both directories and record them in the stamp, which is written in place (a
    /// new file would change the index directory after it was marked).
    fn stamp_now(&self) -> io::Result<()> {
        let path = self.dir.join(STAMP);
        let open = |create: bool| {
            OpenOptions::new()
                .write(true)
                .create(create)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
        };
        drop(open(true)?);
        mark(&self.store_dir)?;
        mark(&self.dir)?;
        let stamp = current_stamp(&self.store_dir, &self.dir).ok_or(io::ErrorKind::NotFound)?;
        open(false)?.write_all(stamp.as_bytes())
    }

    /// Whether the index directory holds nothing but the stamp (looks at two entries at
    /// most while it holds anything).
    fn holds_nothing(&self) -> bool {
        let Ok(rd) = fs::read_dir(&self.dir) else { return false };
        !rd.flatten().any(|e| e.file_name() != STAMP)
    }

    fn write_dirty(&mut self) -> io::Result<()> {
        for b in std::mem::take(&mut self.dirty_owners) {
            let path = self.dir.join(format!("o{b:03x}"));
            match self.owners.get(&b).filter(|v| !v.is_empty()) {
                None => remove_if_present(&path)?,
                Some(v) => {
                    let mut text = format!("{OWNERS_MAGIC}\n");
                    for (k, n) in v {
                        text.push_str(&format!("{} {}\n", hex(k), hex(n)));
                    }
                    text.push_str("end\n");
                    write_file(&path, text.as_bytes())?;
                }
            }
        }
        for c in std::mem::take(&mut self.dirty_chunks) {
            let path = self.dir.join(chunk_name(c));
            match self.chunks.get(&c).filter(|b| b.iter().any(|x| *x != 0)) {
                None => remove_if_present(&path)?,
                Some(bits) => write_file(&path, bits)?,
            }
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn chunk_name((v6, n): ChunkKey) -> String {
    format!("c{}-{n:x}", if v6 { 6 } else { 4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_index_encodings() {
        assert_eq!(unhex(&hex("c1\r\neth0")).as_deref(), Some("c1\r\neth0"));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
        assert!(bucket("a") < BUCKETS);
        // stable: the same key in every build lands in the same bucket file
        assert_eq!(bucket(""), 0xcbf2_9ce4_8422_2325 % BUCKETS);
        assert_eq!(reserved_ip("10.1.0.2"), Some("10.1.0.2".parse().unwrap()));
        assert_eq!(reserved_ip("::ffff:10.1.0.2"), None, "not the file the allocator makes");
        assert_eq!(reserved_ip("lock"), None);
        let (c, bit) = chunk_of("10.1.16.5".parse().unwrap());
        assert_eq!((c, bit), ((false, 0x0a011), 0x005));
        assert_eq!(chunk_name(c), "c4-a011");
        assert!(!is_record("lock") && !is_record("last_reserved_ip.0") && is_record("10.1.0.2"));
    }
}
