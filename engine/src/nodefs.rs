//! Files on the node's shared state, cache and data directories. Another user (or a
//! container with a host mount) who can write into one of them could plant a symlink
//! where cnichain writes, or guess a temporary name: so files are opened without
//! following symlinks, temporary files are made exclusively under random names, the
//! directories cnichain makes below the operator's must be real directories, and a
//! directory others can write to is named in a warning.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// 16 hex digits from the kernel's random source (getrandom, /dev/urandom as fallback):
/// a temporary name nobody can guess ahead.
pub fn random_hex() -> io::Result<String> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most buf.len() - got bytes into buf from offset got.
        let rc = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if rc > 0 {
            got += rc as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // Kernels before 3.17 have no getrandom.
        File::open("/dev/urandom")?.read_exact(&mut buf)?;
        break;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn refused(p: &Path, what: &str) -> io::Error {
    io::Error::other(format!(
        "{} is {what}, not a directory cnichain made; refusing to follow it",
        p.display()
    ))
}

/// Make `dir` and return the directories made, outermost first. `base` and its
/// ancestors are the operator's (they may be symlinks) and are made when missing; every
/// directory below `base` is cnichain's and must be a real directory, never a symlink.
/// Made with `mode` (the umask applies). Warns about directories others can write to.
pub fn make_dirs(base: &Path, dir: &Path, mode: u32) -> io::Result<Vec<PathBuf>> {
    let (base, below) = match dir.strip_prefix(base) {
        Ok(rest) => (base, rest),
        Err(_) => (dir, Path::new("")),
    };
    let mut made = Vec::new();
    // The operator's part: made recursively, symlinks followed.
    let mut missing = Vec::new();
    let mut p = Some(base);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(&d) {
            Ok(()) => made.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    d.display()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    // cnichain's part: one component at a time, never through a symlink.
    let mut cur = base.to_path_buf();
    for c in below.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::other(format!(
                "{}: not a plain path below {}",
                dir.display(),
                base.display()
            )));
        };
        cur.push(name);
        match std::fs::DirBuilder::new().mode(mode).create(&cur) {
            Ok(()) => made.push(cur.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let md = std::fs::symlink_metadata(&cur)?;
                if md.file_type().is_symlink() {
                    return Err(refused(&cur, "a symbolic link"));
                }
                if !md.is_dir() {
                    return Err(refused(&cur, "not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    warn_if_shared(dir);
    Ok(made)
}

/// Remove the directories `make_dirs` made, innermost first, as long as they are empty
/// (a directory someone else has put something in stays).
pub fn remove_made_dirs(made: &[PathBuf]) {
    for d in made.iter().rev() {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
    }
}

/// Why `dir` can be written by users other than root, or None: it (or an ancestor) is
/// group- or other-writable and not a sticky directory owned by root, or is owned by
/// another user. `cnichain validate` can show the same for the configured paths.
pub fn shared_writable(dir: &Path) -> Option<String> {
    let mut p = Some(dir);
    while let Some(d) = p {
        if let Ok(md) = std::fs::metadata(d) {
            let m = md.permissions().mode();
            let sticky_root = m & 0o1000 != 0 && md.uid() == 0;
            if m & 0o022 != 0 && !sticky_root {
                return Some(format!(
                    "{} is writable by users other than root (mode {:04o}, owner {}, group {})",
                    d.display(),
                    m & 0o7777,
                    md.uid(),
                    md.gid()
                ));
            }
            if md.uid() != 0 && m & 0o200 != 0 {
                return Some(format!("{} is owned by uid {}, not root", d.display(), md.uid()));
            }
        }
        p = d.parent().filter(|q| !q.as_os_str().is_empty());
    }
    None
}

/// Log (once per directory and process) that `dir` is writable by others.
pub fn warn_if_shared(dir: &Path) {
    static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    // Running as another user than root, that user's own directories are expected.
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let Some(why) = shared_writable(dir) else { return };
    if let Ok(mut w) = WARNED.lock() {
        if !w.get_or_insert_with(HashSet::new).insert(dir.to_path_buf()) {
            return;
        }
    }
    tracing::warn!(
        "{why}: another user can plant files where cnichain writes {}; make it writable by root only",
        dir.display()
    );
}

/// Create `path` exclusively (O_CREAT|O_EXCL, which never follows a symlink) for writing.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The error of an open refused by O_NOFOLLOW (ELOOP) made clear (the caller names the
/// path).
pub fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other("a symbolic link is there; cnichain never makes one and refuses to follow it")
    } else {
        e
    }
}
