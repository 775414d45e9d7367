//! Network namespaces: the one place that enters one.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, so code that must run inside a
//! netns (sysctl writes, socket creation, spawning a process) runs on a new short-lived
//! thread made by [`run_in`]; that thread ends with the call, so no shared thread is ever
//! left in the wrong namespace. A netlink socket keeps the netns it was created in, so
//! `Netlink::new_in` creates its socket this way once and then works from any thread.

use anyhow::{anyhow, bail, Context, Result};
use cnichain_engine::spec::error::CniError;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// `statfs.f_type` of nsfs (the bind mounts under /run/netns, and what /proc/<pid>/ns/net
/// resolves to).
const NSFS_MAGIC: u64 = 0x6e73_6673;
/// `statfs.f_type` of procfs.
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
/// `ioctl(fd, NS_GET_NSTYPE)`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace: a file descriptor on nsfs plus the path it was opened from
/// (used in messages only).
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetNs {
    /// Open a network namespace file: a bind mount on nsfs (`/run/netns/x`, a runtime's
    /// `/var/run/netns/cni-...`) or `/proc/<pid>/ns/net`. Anything else (a plain file, a
    /// directory, another kind of namespace) is refused with a message naming the path.
    /// A missing path keeps its ENOENT for `netlink::errno_of`.
    pub fn open(path: &str) -> Result<NetNs> {
        if path.is_empty() {
            bail!("failed to open netns: empty path");
        }
        let file = File::open(path).with_context(|| format!("failed to open netns {path:?}"))?;
        let fd: OwnedFd = file.into();
        check_net_ns(fd.as_fd(), path)?;
        Ok(NetNs {
            fd,
            path: PathBuf::from(path),
        })
    }

    /// The netns of the calling thread (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second descriptor on the same namespace.
    pub fn try_clone(&self) -> Result<NetNs> {
        let fd = self
            .fd
            .try_clone()
            .with_context(|| format!("failed to duplicate the fd of netns {}", self.path.display()))?;
        Ok(NetNs {
            fd,
            path: self.path.clone(),
        })
    }

    /// The namespace's identity: (device, inode) of its nsfs file. Two `NetNs` with the
    /// same id are the same namespace whatever paths they came from.
    pub fn id(&self) -> Result<(u64, u64)> {
        // SAFETY: fstat on a descriptor we own, into a zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("failed to stat netns {}", self.path.display()));
        }
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Whether `other` is the same namespace.
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        Ok(self.id()? == other.id()?)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn check_net_ns(fd: BorrowedFd<'_>, path: &str) -> Result<()> {
    match net_ns_kind(fd, path)? {
        Kind::Net => Ok(()),
        Kind::NotNet(why) => Err(anyhow!("{why}")),
    }
}

enum Kind {
    Net,
    /// Not a network namespace, and why.
    NotNet(String),
}

/// Whether `fd` is a network namespace; an error only when that cannot be told.
fn net_ns_kind(fd: BorrowedFd<'_>, path: &str) -> Result<Kind> {
    // SAFETY: fstatfs on a valid descriptor into a zeroed statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("failed to statfs netns {path:?}"));
    }
    // f_type is a signed word of varying width; the magic numbers fit in 32 bits.
    let fs_type = (st.f_type as u64) & 0xffff_ffff;
    if fs_type != NSFS_MAGIC && fs_type != PROC_SUPER_MAGIC {
        return Ok(Kind::NotNet(format!(
            "{path:?} is not a network namespace (filesystem type {fs_type:#x}, want nsfs or procfs)"
        )));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the descriptor.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels before 4.11 lack the ioctl; an nsfs file is then taken on trust.
        if fs_type == NSFS_MAGIC && e.raw_os_error() == Some(libc::ENOTTY) {
            return Ok(Kind::Net);
        }
        return Ok(Kind::NotNet(format!("{path:?} is not a network namespace ({e})")));
    }
    if nstype != libc::CLONE_NEWNET {
        return Ok(Kind::NotNet(format!(
            "{path:?} is a namespace of another kind ({nstype:#x}), not a network namespace"
        )));
    }
    Ok(Kind::Net)
}

/// The pod's netns for a stage that enters it (ADD, CHECK): a network namespace that is
/// not the caller's own. Pod addresses, routes and a default route put into the
/// runtime's own netns would break the node (issue 12.7). The msg is the reference's
/// `ns.GetNS` text ("failed to Statfs ...", "unknown FS magic on ..."); bridge and ptp
/// prefix it with "failed to open netns ...", as theirs do.
pub fn open_pod(path: &str) -> std::result::Result<NetNs, CniError> {
    open_pod_inner(path).map_err(|e| {
        if e.details.is_empty() {
            e.with_details(format!("CNI_NETNS {path:?} must name the pod's network namespace"))
        } else {
            e
        }
    })
}

fn open_pod_inner(path: &str) -> std::result::Result<NetNs, CniError> {
    let cpath = std::ffi::CString::new(path)
        .map_err(|_| CniError::env(format!("failed to Statfs {path:?}: {}", go_errno_text(libc::EINVAL))))?;
    // SAFETY: statfs on a valid C string into a zeroed statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        return Err(CniError::env(format!(
            "failed to Statfs {path:?}: {}",
            go_errno_text(errno)
        )));
    }
    let fs_type = (st.f_type as u64) & 0xffff_ffff;
    if fs_type != NSFS_MAGIC && fs_type != PROC_SUPER_MAGIC {
        return Err(CniError::env(format!("unknown FS magic on {path:?}: {fs_type:x}")));
    }
    let ns = NetNs::open(path).map_err(|e| CniError::env(format!("{e:#}")))?;
    refuse_own(&ns)?;
    Ok(ns)
}

/// [`open_pod`] with bridge's and ptp's prefix.
pub fn open_pod_wrapped(path: &str) -> std::result::Result<NetNs, CniError> {
    open_pod(path).map_err(|e| {
        if e.msg.contains("caller's own network namespace") {
            e
        } else {
            e.context(format!("failed to open netns {path:?}"))
        }
    })
}

/// Go's text for an errno (syscall.Errno.Error): strerror with a lower-case first letter.
fn go_errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    // Rust appends " (os error N)".
    let s = s.split(" (os error").next().unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => s.to_string(),
    }
}

/// The pod's netns for DEL: None when the pod side is gone, so DEL releases only what
/// is host-side and succeeds. Gone is an empty path, a path that no longer exists, or
/// one that is no longer a network namespace (a runtime that unmounted `/run/netns/x`
/// and crashed before unlinking it leaves a plain empty file). The caller's own netns
/// is refused as on ADD.
pub fn open_pod_for_del(path: &str) -> std::result::Result<Option<NetNs>, CniError> {
    if path.is_empty() {
        return Ok(None);
    }
    let open_err = |e: &dyn std::fmt::Display| CniError::env(format!("failed to open netns {path:?}: {e}"));
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
        Err(e) => return Err(open_err(&e)),
    };
    let fd: OwnedFd = file.into();
    match net_ns_kind(fd.as_fd(), path).map_err(|e| open_err(&format!("{e:#}")))? {
        Kind::NotNet(why) => {
            tracing::info!("DEL: {why}; the pod side is gone, releasing host-side state only");
            Ok(None)
        }
        Kind::Net => {
            let ns = NetNs {
                fd,
                path: PathBuf::from(path),
            };
            refuse_own(&ns)?;
            Ok(Some(ns))
        }
    }
}

/// Code 4 when `ns` is the calling thread's own network namespace.
pub fn refuse_own(ns: &NetNs) -> std::result::Result<(), CniError> {
    let own = NetNs::current().and_then(|cur| ns.same_as(&cur));
    match own {
        Ok(false) => Ok(()),
        Ok(true) => Err(CniError::env(own_netns_msg(&ns.path.display().to_string()))),
        Err(e) => Err(CniError::env(format!(
            "cannot tell whether netns {} is the caller's own: {e:#}",
            ns.path.display()
        ))),
    }
}

/// The refusal of the caller's own netns (the engine's pre-check says the same).
pub fn own_netns_msg(path: &str) -> String {
    cnichain_engine::chain::own_netns_msg(path)
}

/// Run `f` on a new short-lived thread that has entered `ns`, and return its result. The
/// calling thread never changes namespace. `f` may borrow from the caller (the thread is
/// scoped). A panic in `f` comes back as an error.
pub fn run_in<T: Send>(ns: &NetNs, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let fd = ns.fd.as_fd();
    let path = ns.path.display().to_string();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("cnichain-netns".to_string())
            .spawn_scoped(scope, move || -> Result<T> {
                // SAFETY: setns on a descriptor that outlives this scoped thread.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("failed to enter netns {path}"));
                }
                f()
            })
            .with_context(|| format!("failed to start a thread for netns {}", ns.path.display()))?;
        match handle.join() {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(anyhow!("work in netns {} panicked: {msg}", ns.path.display()))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_namespaces() {
        let e = NetNs::open("/").unwrap_err().to_string();
        assert!(e.contains("not a network namespace"), "{e}");
        let e = NetNs::open("/proc/self/status").unwrap_err().to_string();
        assert!(e.contains("not a network namespace"), "{e}");
        let e = NetNs::open("/proc/self/ns/uts").unwrap_err().to_string();
        assert!(e.contains("another kind"), "{e}");
        let e = NetNs::open("/nonexistent/netns").unwrap_err();
        let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(io.and_then(|i| i.raw_os_error()), Some(libc::ENOENT));
        assert!(NetNs::open("").is_err());
    }

    #[test]
    fn current_and_run_in_same_ns() {
        let cur = NetNs::current().unwrap();
        let other = NetNs::open("/proc/self/ns/net").unwrap();
        assert!(cur.same_as(&other).unwrap());
        let dup = cur.try_clone().unwrap();
        assert_eq!(dup.id().unwrap(), cur.id().unwrap());
        // entering the namespace we are already in changes nothing and needs no privilege
        // beyond CAP_SYS_ADMIN; only check the plumbing (borrowing, result, panic).
        let local = 41;
        let r = run_in(&cur, || Ok(local + 1));
        if let Ok(v) = r {
            assert_eq!(v, 42);
            let e = run_in(&cur, || -> Result<()> { panic!("boom") }).unwrap_err();
            assert!(e.to_string().contains("boom"), "{e}");
        }
    }

    #[test]
    fn del_sees_a_gone_pod_side() {
        let dir = std::env::temp_dir().join(format!("cnichain-netns-del-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        for p in [
            plain.to_str().unwrap(),
            dir.to_str().unwrap(),
            "/nonexistent/x",
            "",
            "/proc/self/ns/uts",
        ] {
            assert!(open_pod_for_del(p).unwrap().is_none(), "{p:?}");
        }
        for p in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
            let e = open_pod_for_del(p).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("caller's own"), "{}", e.msg);
            assert_eq!(open_pod(p).unwrap_err().code, 4);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_pod_speaks_like_ns_get_ns() {
        let e = open_pod("/some/where").unwrap_err();
        assert_eq!(e.msg, "failed to Statfs \"/some/where\": no such file or directory");
        assert!(e.details.contains("CNI_NETNS"));
        let e = open_pod_wrapped("/some/where").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to open netns \"/some/where\": failed to Statfs \"/some/where\": no such file or directory"
        );
        let e = open_pod("/").unwrap_err();
        assert!(e.msg.starts_with("unknown FS magic on \"/\": "), "{}", e.msg);
    }
}
