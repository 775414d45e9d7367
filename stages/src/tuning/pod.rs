//! The tuning stage's work inside the pod: resolving sysctl keys in the pod's netns,
//! reading what is there, setting sysctls and link attributes, and putting them back.

use super::config::{Sysctl, TuningConf};
use super::record::{Record, SysctlRecord};
use crate::kernel::netlink::{errno_of, format_mac, Link, Netlink};
use crate::kernel::netns::{self, NetNs};
use crate::kernel::sysctl;
use anyhow::{anyhow, Context, Result};
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};

/// A sysctl whose key resolved inside the pod netns, with the value found there.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub sysctl: Sysctl,
    /// None when the entry cannot be read (write-only entries).
    pub original: Option<String>,
}

/// Resolve every key inside the pod's netns (the resolved file must still be under
/// /proc/sys/net and must exist there) and read the current values. Nothing is written.
/// A key that does not resolve is an invalid config (code 7) naming it.
pub fn resolve(pod: &NetNs, sysctls: &[Sysctl]) -> Result<Vec<Resolved>, CniError> {
    if sysctls.is_empty() {
        return Ok(Vec::new());
    }
    let out = netns::run_in(pod, || {
        let mut out = Vec::new();
        for s in sysctls {
            if let Err(e) = sysctl::net_path(&s.path) {
                // the reference's text: its failed write of the missing file
                let err = if errno_of(&e) == Some(libc::ENOENT) {
                    CniError::new(
                        INVALID_CONFIG,
                        format!("open /proc/sys/{}: no such file or directory", s.path),
                    )
                    .with_details(format!(
                        "sysctl key {:?} names no entry in the pod's network namespace; nothing was written",
                        s.key
                    ))
                } else {
                    CniError::new(INVALID_CONFIG, format!("tuning: invalid sysctl key {:?}: {e:#}", s.key))
                };
                return Err(anyhow::Error::new(err));
            }
            let original = match sysctl::read(&s.path) {
                Ok(v) => Some(v),
                Err(e) if errno_of(&e) == Some(libc::EACCES) || errno_of(&e) == Some(libc::EPERM) => None,
                Err(e) => return Err(e),
            };
            out.push(Resolved {
                sysctl: s.clone(),
                original,
            });
        }
        Ok(out)
    })?;
    Ok(out)
}

/// SO_NETNS_COOKIE (Linux 5.14+).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The calling thread's netns cookie: a 64-bit number the kernel gives each netns and
/// never reuses (unlike nsfs inode numbers).
fn cookie_here() -> Option<u64> {
    // SAFETY: a socket we close again, and getsockopt into a local u64 of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        );
        libc::close(fd);
        (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(v)
    }
}

/// A netns identity for the record: `cookie:<n>` where the kernel has netns cookies,
/// else `inode:<dev>:<ino>` of its nsfs file; empty if neither can be had.
pub fn identity(pod: &NetNs) -> String {
    if let Ok(Some(c)) = netns::run_in(pod, || Ok(cookie_here())) {
        return format!("cookie:{c}");
    }
    match pod.id() {
        Ok((dev, ino)) => format!("inode:{dev}:{ino}"),
        Err(_) => String::new(),
    }
}

/// The container link, or an error naming it.
pub fn container_link(nl: &mut Netlink, ifname: &str) -> Result<Link> {
    nl.link_by_name(ifname)?
        .ok_or_else(|| anyhow!("failed to get {ifname:?}: no such link in {}", nl.ns_label()))
}

/// What this ADD changes, as a record of the state before it (used to undo a failed ADD
/// and, merged with an earlier record, as the record DEL restores from).
pub fn undo_record(c: &TuningConf, resolved: &[Resolved], link: Option<&Link>) -> Record {
    let mut r = Record::default();
    if let Some(l) = link {
        if c.mac.is_some() {
            r.mac = l.mac.map(|m| format_mac(&m)).unwrap_or_default();
        }
        if c.promisc {
            r.promisc = Some(l.promisc);
        }
        if c.mtu.is_some() {
            r.mtu = l.mtu;
        }
        if c.allmulti.is_some() {
            r.allmulti = Some(l.allmulti);
        }
        if c.txqlen.is_some() {
            r.txqlen = Some(l.txqlen);
        }
    }
    r.sysctls = resolved
        .iter()
        .map(|s| SysctlRecord {
            key: s.sysctl.path.clone(),
            original: s.original.clone(),
            applied: s.sysctl.value.clone(),
        })
        .collect();
    r
}

/// The record to keep: `undo` merged into an earlier record of the same attachment (a
/// repeated ADD), whose "before" values win because they predate both ADDs.
pub fn merge(earlier: Option<&Record>, undo: &Record) -> Record {
    let Some(e) = earlier else { return undo.clone() };
    let mut r = e.clone();
    if r.mac.is_empty() {
        r.mac = undo.mac.clone();
    }
    if r.promisc.is_none() {
        r.promisc = undo.promisc;
    }
    if r.mtu == 0 {
        r.mtu = undo.mtu;
    }
    if r.allmulti.is_none() {
        r.allmulti = undo.allmulti;
    }
    if r.txqlen.is_none() {
        r.txqlen = undo.txqlen;
    }
    for s in &undo.sysctls {
        match r.sysctls.iter_mut().find(|x| x.key == s.key) {
            Some(x) => x.applied = s.applied.clone(),
            None => r.sysctls.push(s.clone()),
        }
    }
    r
}

/// Apply the config: sysctls in config order, then MAC, promiscuous mode, MTU,
/// all-multicast and txqueuelen (the reference's order).
pub fn apply(
    pod: &NetNs,
    nl: Option<&mut Netlink>,
    c: &TuningConf,
    resolved: &[Resolved],
    link: Option<&Link>,
) -> Result<()> {
    if !resolved.is_empty() {
        netns::run_in(pod, || {
            for s in resolved {
                sysctl::write(&s.sysctl.path, &s.sysctl.value)
                    .with_context(|| format!("failed to set sysctl {:?}", s.sysctl.key))?;
            }
            Ok(())
        })?;
    }
    let (Some(l), Some(nl)) = (link, nl) else { return Ok(()) };
    if let Some(m) = c.mac {
        nl.set_mac(l.index, m.addr)
            .with_context(|| format!("failed to set the MAC address of {:?}", l.name))?;
    }
    if c.promisc {
        nl.set_promisc(l.index, true)
            .with_context(|| format!("failed to set promiscuous mode on {:?}", l.name))?;
    }
    if let Some(mtu) = c.mtu {
        nl.set_mtu(l.index, mtu)
            .with_context(|| format!("failed to set the MTU of {:?}", l.name))?;
    }
    if let Some(on) = c.allmulti {
        nl.set_allmulti(l.index, on)
            .with_context(|| format!("failed to set all-multicast mode on {:?}", l.name))?;
    }
    if let Some(q) = c.txqlen {
        nl.set_txqlen(l.index, q)
            .with_context(|| format!("failed to set the tx queue length of {:?}", l.name))?;
    }
    Ok(())
}

/// Two sysctl values are the same: the same whitespace-separated tokens, numbers
/// compared as numbers (the kernel prints "1" for a written "+01", and tabs where the
/// config had spaces).
pub fn same_value(a: &str, b: &str) -> bool {
    let ta: Vec<&str> = a.split_whitespace().collect();
    let tb: Vec<&str> = b.split_whitespace().collect();
    ta.len() == tb.len()
        && ta
            .iter()
            .zip(&tb)
            .all(|(x, y)| x == y || matches!((x.parse::<i128>(), y.parse::<i128>()), (Ok(p), Ok(q)) if p == q))
}

/// Put back what `rec` records, in the reverse of the order ADD applied it: the link
/// attributes (if the link is still there), then the sysctls, last written first. A
/// sysctl is restored only while it still holds what ADD wrote, unless `force` (undoing
/// a failed ADD). `nl` is a socket in the pod, made here when needed and not given.
/// Returns what could not be restored; everything else is done.
pub fn restore(pod: &NetNs, nl: Option<&mut Netlink>, ifname: &str, rec: &Record, force: bool) -> Vec<String> {
    let mut failed = Vec::new();
    let has_link_fields =
        !rec.mac.is_empty() || rec.promisc.is_some() || rec.mtu != 0 || rec.allmulti.is_some() || rec.txqlen.is_some();
    let mut own = None;
    let nl = match nl {
        Some(n) => Some(n),
        None if has_link_fields => match Netlink::new_in(pod) {
            Ok(n) => Some(own.insert(n)),
            Err(e) => {
                failed.push(format!("failed to open a netlink socket in the pod: {e:#}"));
                None
            }
        },
        None => None,
    };
    if let (true, Some(nl)) = (has_link_fields, nl) {
        match nl.link_by_name(ifname) {
            Ok(Some(l)) => {
                let mut step = |what: &str, r: Result<()>| {
                    if let Err(e) = r {
                        failed.push(format!("failed to restore {what} of {ifname:?}: {e:#}"));
                    }
                };
                if let Some(q) = rec.txqlen {
                    step("the tx queue length", nl.set_txqlen(l.index, q));
                }
                if let Some(on) = rec.allmulti {
                    step("all-multicast mode", nl.set_allmulti(l.index, on));
                }
                if rec.mtu != 0 {
                    step("the MTU", nl.set_mtu(l.index, rec.mtu));
                }
                if let Some(on) = rec.promisc {
                    step("promiscuous mode", nl.set_promisc(l.index, on));
                }
                if !rec.mac.is_empty() {
                    match crate::conf::parse_mac(&rec.mac) {
                        Some(m) => step("the MAC address", nl.set_mac(l.index, m)),
                        None => failed.push(format!("recorded MAC address {:?} is not valid", rec.mac)),
                    }
                }
            }
            // The interface is gone, and its attributes with it.
            Ok(None) => {}
            Err(e) => failed.push(format!("failed to look up {ifname:?}: {e:#}")),
        }
    }
    if !rec.sysctls.is_empty() {
        let r = netns::run_in(pod, || {
            let mut failed = Vec::new();
            for s in rec.sysctls.iter().rev() {
                let Some(original) = &s.original else { continue };
                match sysctl::read(&s.key) {
                    Ok(cur) => {
                        if !force && !same_value(&cur, &s.applied) {
                            tracing::warn!(
                                "tuning: not restoring sysctl {}: it now holds {cur:?}, not the {:?} ADD wrote",
                                s.key,
                                s.applied
                            );
                            continue;
                        }
                        if same_value(&cur, original) {
                            continue;
                        }
                        if let Err(e) = sysctl::write(&s.key, original) {
                            failed.push(format!("failed to restore sysctl {}: {e:#}", s.key));
                        }
                    }
                    // The entry went away (an interface's, with the interface).
                    Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
                    Err(e) => failed.push(format!("failed to read sysctl {}: {e:#}", s.key)),
                }
            }
            Ok(failed)
        });
        match r {
            Ok(f) => failed.extend(f),
            Err(e) => failed.push(format!("failed to restore sysctls: {e:#}")),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_like_the_kernel_prints_them() {
        assert!(same_value("1", "1"));
        assert!(same_value("+01", "1"));
        assert!(same_value("4096 87380 6291456", "4096\t87380\t6291456"));
        assert!(same_value("cubic", "cubic"));
        assert!(!same_value("1", "2"));
        assert!(!same_value("1 2", "1"));
        assert!(same_value("", ""));
    }

    #[test]
    fn merging_keeps_the_oldest_values() {
        let older = Record {
            mtu: 1500,
            sysctls: vec![SysctlRecord {
                key: "net/a".into(),
                original: Some("0".into()),
                applied: "1".into(),
            }],
            ..Default::default()
        };
        let undo = Record {
            mtu: 1400,
            mac: "02:00:00:00:00:01".into(),
            sysctls: vec![
                SysctlRecord {
                    key: "net/a".into(),
                    original: Some("1".into()),
                    applied: "2".into(),
                },
                SysctlRecord {
                    key: "net/b".into(),
                    original: Some("7".into()),
                    applied: "8".into(),
                },
            ],
            ..Default::default()
        };
        let m = merge(Some(&older), &undo);
        assert_eq!(m.mtu, 1500);
        assert_eq!(m.mac, "02:00:00:00:00:01");
        assert_eq!(m.sysctls[0].original.as_deref(), Some("0"));
        assert_eq!(m.sysctls[0].applied, "2");
        assert_eq!(m.sysctls[1].key, "net/b");
        assert_eq!(merge(None, &undo), undo);
    }
}
