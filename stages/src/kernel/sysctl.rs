//! Network sysctls: read and write `/proc/sys/net/...` in the calling thread's netns.
//!
//! The kernel resolves `/proc/sys/net` against the netns of the thread that opens the
//! file, so these functions act on whatever netns the calling thread is in; use
//! [`read_in`] / [`write_in`] (or `netns::run_in`) to act on another one. Only keys under
//! `net` are accepted, in either form, told apart by the first separator as sysctl(8) and
//! the reference plugins' sysctl package do: dotted (`net.ipv4.ip_forward`, where a `/`
//! stands for a dot: `net.ipv4.conf.eth0/100.rp_filter`) or slashed
//! (`net/ipv4/conf/eth0.100/rp_filter`). A key naming an interface is built with
//! [`iface_key`], always slashed: in the dotted form a VLAN-style name (`br.77`) would
//! split into two segments and miss its interface.

use crate::kernel::netns::{self, NetNs};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

const PROC_SYS: &str = "/proc/sys";
const PROC_SYS_NET: &str = "/proc/sys/net";

/// The `/proc/sys` path of a key, checked by syntax only (no file system access): at least
/// two segments, the first `net`, no empty, `.` or `..` segment, no NUL. Use it to validate
/// user keys before the netns they apply to is at hand (an interface key may exist only
/// there); [`net_path`] adds the check against the live file system.
pub fn key_path(key: &str) -> Result<PathBuf> {
    let invalid = |why: &str| anyhow!("invalid net sysctl key {key:?}: {why}");
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let dotted = key.find(['.', '/']).is_some_and(|i| key.as_bytes()[i] == b'.');
    let segments: Vec<String> = if dotted {
        key.split('.').map(|s| s.replace('/', ".")).collect()
    } else {
        key.split('/').map(String::from).collect()
    };
    if segments.iter().any(|s| s.is_empty()) {
        return Err(invalid("empty segment"));
    }
    if segments.iter().any(|s| s == "." || s == "..") {
        return Err(invalid("relative segment"));
    }
    if segments.first().map(String::as_str) != Some("net") {
        return Err(invalid("only keys under net are allowed"));
    }
    if segments.len() < 2 {
        return Err(invalid("names no entry"));
    }
    let mut p = PathBuf::from(PROC_SYS);
    for s in segments {
        p.push(s);
    }
    Ok(p)
}

/// Resolve a key to its `/proc/sys/net/...` path in the calling thread's netns and refuse
/// anything outside `/proc/sys/net` (see [`key_path`]; the resolved path is canonicalized
/// and must still be under `/proc/sys/net/`). A key that does not exist in this netns is an
/// error carrying ENOENT.
pub fn net_path(key: &str) -> Result<PathBuf> {
    let p = key_path(key)?;
    let real = std::fs::canonicalize(&p).with_context(|| format!("net sysctl key {key:?} ({})", p.display()))?;
    if !real.starts_with(PROC_SYS_NET) || real == Path::new(PROC_SYS_NET) {
        bail!(
            "invalid net sysctl key {key:?}: resolves outside {PROC_SYS_NET}/ ({})",
            real.display()
        );
    }
    Ok(real)
}

/// Read a net sysctl in the calling thread's netns; the trailing newline is removed.
pub fn read(key: &str) -> Result<String> {
    let p = net_path(key)?;
    let s = std::fs::read_to_string(&p).with_context(|| format!("failed to read sysctl {key} ({})", p.display()))?;
    Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
}

/// Write a net sysctl in the calling thread's netns (the value as given, as the reference
/// tuning plugin writes it).
pub fn write(key: &str, value: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let out = write_untimed(key, value);
    cnichain_engine::trace::kernel_step(started, || format!("sysctl: {key}={value}"));
    out
}

fn write_untimed(key: &str, value: &str) -> Result<()> {
    let p = net_path(key)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .with_context(|| format!("failed to open sysctl {key} ({}) for writing", p.display()))?;
    f.write_all(value.as_bytes())
        .with_context(|| format!("failed to write sysctl {key}={value:?}"))?;
    Ok(())
}

/// The slashed key of a per-interface sysctl, `net/<proto>/conf/<ifname>/<leaf>`
/// (`proto` is `ipv4` or `ipv6`). Path-based so that any legal link name, dots included,
/// names its own directory.
pub fn iface_key(proto: &str, ifname: &str, leaf: &str) -> Result<String> {
    if ifname.is_empty() || ifname == "." || ifname == ".." || ifname.contains(['/', '\0']) {
        bail!("invalid interface name {ifname:?} for a sysctl");
    }
    Ok(format!("net/{proto}/conf/{ifname}/{leaf}"))
}

/// Turn off IPv6 router advertisements on a host-side link (a bridge, a veth's host end)
/// whose routes the stage owns: otherwise a pod could send RAs and route the host
/// (CVE-2020-10749). Read first, so a value already 0 needs no write (a read-only
/// `/proc/sys` is fine then); written, it is read back. Every failure is an error, except
/// a host without IPv6 at all (no `/proc/sys/net/ipv6`), where there is nothing to accept
/// RAs. The reference plugins ignore a failure here.
pub fn disable_accept_ra(ifname: &str) -> Result<()> {
    if !Path::new(PROC_SYS_NET).join("ipv6").exists() {
        return Ok(());
    }
    let key = iface_key("ipv6", ifname, "accept_ra")?;
    let set = || -> Result<()> {
        if read(&key)? == "0" {
            return Ok(());
        }
        write(&key, "0")?;
        let now = read(&key)?;
        if now != "0" {
            bail!("it reads {now:?} after writing 0");
        }
        Ok(())
    };
    set().with_context(|| format!("failed to set /proc/sys/{key} to 0 on {ifname:?}"))
}

/// [`read`] inside `ns`.
pub fn read_in(ns: &NetNs, key: &str) -> Result<String> {
    netns::run_in(ns, || read(key))
}

/// [`write`] inside `ns`.
pub fn write_in(ns: &NetNs, key: &str, value: &str) -> Result<()> {
    netns::run_in(ns, || write(key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_syntax() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        // The first separator decides; in the dotted form a slash stands for a dot.
        assert_eq!(
            key_path("net.ipv4.conf.eth0/100.rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            key_path(&iface_key("ipv6", "br.77", "accept_ra").unwrap()).unwrap(),
            PathBuf::from("/proc/sys/net/ipv6/conf/br.77/accept_ra")
        );
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(iface_key("ipv6", bad, "accept_ra").is_err(), "{bad:?} accepted");
        }
        for bad in [
            "",
            "net",
            "net.",
            ".net.ipv4",
            "net..x",
            "kernel.hostname",
            "net.ipv4/../../kernel",
            "net/../../etc",
            "net/./ipv4",
            "/proc/sys/net/ipv4/ip_forward",
            "net/ipv4/",
            "net.ipv4.ip_forward\0",
            "netx.ipv4",
            "..",
            "net.ipv4.conf.//.x",
            "net.ipv4.conf./.x",
        ] {
            assert!(key_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolves_existing_keys() {
        assert_eq!(
            net_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        let e = net_path("net.ipv4.no_such_key").unwrap_err();
        let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(io.and_then(|i| i.raw_os_error()), Some(libc::ENOENT));
        assert!(read("net.ipv4.ip_forward").is_ok());
    }
}
