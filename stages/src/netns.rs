//! Network namespaces: the one place that enters one.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, so code that must run inside a
//! netns (sysctl writes, socket creation, spawning a process) runs on a new short-lived
//! thread made by [`run_in`]; that thread ends with the call, so no shared thread is ever
//! left in the wrong namespace. A netlink socket keeps the netns it was created in, so
//! `Netlink::new_in` creates its socket this way once and then works from any thread.

use anyhow::{anyhow, bail, Context, Result};
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
    // SAFETY: fstatfs on a valid descriptor into a zeroed statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("failed to statfs netns {path:?}"));
    }
    // f_type is a signed word of varying width; the magic numbers fit in 32 bits.
    let fs_type = (st.f_type as u64) & 0xffff_ffff;
    if fs_type != NSFS_MAGIC && fs_type != PROC_SUPER_MAGIC {
        bail!("{path:?} is not a network namespace (filesystem type {fs_type:#x}, want nsfs or procfs)");
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the descriptor.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels before 4.11 lack the ioctl; an nsfs file is then taken on trust.
        if fs_type == NSFS_MAGIC && e.raw_os_error() == Some(libc::ENOTTY) {
            return Ok(());
        }
        return Err(anyhow!("{path:?} is not a network namespace ({e})"));
    }
    if nstype != libc::CLONE_NEWNET {
        bail!("{path:?} is a namespace of another kind ({nstype:#x}), not a network namespace");
    }
    Ok(())
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
}
