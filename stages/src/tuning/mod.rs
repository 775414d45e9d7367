//! The tuning stage: sysctls and link attributes (MAC, MTU, promiscuous and
//! all-multicast mode, tx queue length) of the container interface, set inside the pod.
//! Behaves as the reference `tuning` plugin (upstream's `IFNAME` placeholder and
//! `txQLen` included), with these additions: every key and value is checked before
//! anything is written, a failed ADD undoes itself, and DEL restores the sysctls too
//! (see `record` for what is kept where).

pub mod config;
pub mod pod;
pub mod record;

use crate::kernel::netlink::{format_mac, Netlink};
use crate::kernel::netns::NetNs;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::stage::{Invocation, Stage};
use config::TuningConf;

pub struct Tuning;

fn open_pod(inv: &Invocation) -> Result<NetNs, CniError> {
    crate::kernel::netns::open_pod(&inv.rt.netns)
}

fn require_prev<'a>(inv: &Invocation<'a>) -> Result<&'a CniResult, CniError> {
    inv.prev_result.ok_or_else(|| {
        CniError::new(INVALID_CONFIG, "Required prevResult missing")
            .with_details("tuning changes the interface of an earlier plugin's result: it needs prevResult")
    })
}

impl Stage for Tuning {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&config::SCHEMA)
    }

    /// The config as ADD reads it; the keys' existence inside the pod is ADD's (an
    /// IFNAME key names a link an earlier stage has yet to make).
    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        TuningConf::load(inv).map(|_| ())
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        // 1. Check everything: config, keys, prevResult, and every key inside the pod.
        let c = TuningConf::load(inv)?;
        let prev = require_prev(inv)?;
        let ifname = inv.rt.ifname.as_str();
        let pod = open_pod(inv)?;
        let resolved = pod::resolve(&pod, &c.sysctls)?;
        let mut nl = if c.changes_link() {
            Some(Netlink::new_in(&pod)?)
        } else {
            None
        };
        let link = match nl.as_mut() {
            Some(nl) => Some(pod::container_link(nl, ifname)?),
            None => None,
        };

        // 2. Record the state before ADD, then change it; undo on failure.
        if c.changes_anything() {
            let dir = record::dir(c.data_dir.as_deref(), &inv.settings().state_dir);
            let path = record::path(&dir, &inv.rt.container_id, ifname).ok_or_else(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!("tuning: cannot name a record for {:?}/{ifname:?}", inv.rt.container_id),
                )
            })?;
            let pod_id = pod::identity(&pod);
            // A record of this attachment from an earlier ADD (a retried ADD) keeps its
            // "before" values; one of another netns is stale and replaced. A damaged
            // one is replaced too.
            let earlier = record::read(&path).ok().flatten().filter(|r| r.is_for(&pod_id));
            let undo = pod::undo_record(&c, &resolved, link.as_ref());
            let mut keep = pod::merge(earlier.as_ref(), &undo);
            keep.network = crate::conf::config_str(inv.config, "name")
                .unwrap_or_default()
                .to_string();
            keep.container_id = inv.rt.container_id.clone();
            keep.ifname = ifname.to_string();
            keep.netns = inv.rt.netns.clone();
            keep.netns_id = pod_id;
            record::write(&path, &keep, &inv.settings().state_dir)?;
            let applied = cnichain_engine::fault::point("tuning.after-record")
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|_| pod::apply(&pod, nl.as_mut(), &c, &resolved, link.as_ref()))
                .and_then(|_| {
                    cnichain_engine::fault::point("tuning.after-sysctls").map_err(|e| anyhow::anyhow!("{e}"))
                });
            if let Err(e) = applied {
                let left = pod::restore(&pod, nl.as_mut(), ifname, &undo, true);
                let _ = match &earlier {
                    Some(r) => record::write(&path, r, &inv.settings().state_dir),
                    None => record::remove(&path),
                };
                let mut e = CniError::from(e);
                if !left.is_empty() {
                    e = e.with_details(format!("undoing the partial change failed: {}", left.join("; ")));
                }
                return Err(e);
            }
        }

        // 3. The result: prevResult, with the new MAC on the container interface.
        match c.mac {
            None => Ok(prev.clone()),
            Some(m) => {
                let mut r = prev.to_v1()?;
                for i in r.interfaces.iter_mut().filter(|i| i.name == ifname) {
                    i.mac = format_mac(&m.addr);
                }
                CniResult::from_v1(r, inv.version)
            }
        }
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        // DEL needs only the record; a config it cannot read still names no other one.
        let dir = record::dir(data_dir_of(inv).as_deref(), &inv.settings().state_dir);
        let Some(path) = record::path(&dir, &inv.rt.container_id, &inv.rt.ifname) else {
            return Ok(());
        };
        let rec = match record::read(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("tuning: {e:#}; removing it");
                None
            }
        };
        restore_and_forget(&path, rec, &inv.rt.netns, &inv.rt.ifname)
    }

    /// The records of attachments of this network the runtime no longer lists (cached
    /// or not): restored like DEL when their netns is still there, then removed.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        let Some(valid) = crate::shared::gc::ValidSet::from_config(inv.config)? else {
            return Ok(());
        };
        let stale: Vec<_> = record::list(&record::dir(data_dir_of(inv).as_deref(), &inv.settings().state_dir))
            .into_iter()
            .filter_map(|p| record::read(&p).ok().flatten().map(|r| (p, r)))
            .filter(|(_, r)| r.network == valid.network && !valid.contains(&r.container_id, &r.ifname))
            .collect();
        crate::shared::gc::each_stale(stale, |(path, rec)| {
            tracing::debug!(network = %valid.network, record = %path.display(), "tuning gc: stale record");
            let (netns, ifname) = (rec.netns.clone(), rec.ifname.clone());
            restore_and_forget(&path, Some(rec), &netns, &ifname)
        })
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let c = TuningConf::load(inv)?;
        require_prev(inv)?.to_v1()?;
        let ifname = inv.rt.ifname.as_str();
        let pod = open_pod(inv)?;
        // Every sysctl the config sets holds its value (entries that cannot be read,
        // such as write-only ones, cannot be checked).
        for s in pod::resolve(&pod, &c.sysctls)? {
            let Some(cur) = s.original else { continue };
            if !pod::same_value(&cur, &s.sysctl.value) {
                return Err(CniError::internal(format!(
                    "Error: Tuning configured value of /proc/sys/{} is {}, current value is {}",
                    s.sysctl.path, s.sysctl.value, cur
                )));
            }
        }
        let mut nl = Netlink::new_in(&pod)?;
        let link = nl
            .link_by_name(ifname)?
            .ok_or_else(|| CniError::internal(format!("Cannot find container link {ifname}")))?;
        if let Some(m) = c.mac {
            if link.mac != Some(m.addr) {
                let cur = link.mac.map(|a| format_mac(&a)).unwrap_or_default();
                return Err(CniError::internal(format!(
                    "Error: Tuning configured Ethernet of {ifname} is {}, current value is {cur}",
                    format_mac(&m.addr)
                )));
            }
        }
        if link.promisc != c.promisc {
            return Err(CniError::internal(format!(
                "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
                c.promisc,
                u8::from(link.promisc)
            )));
        }
        if let Some(mtu) = c.mtu {
            if link.mtu != mtu {
                return Err(CniError::internal(format!(
                    "Error: Tuning configured MTU of {ifname} is {mtu}, current value is {}",
                    link.mtu
                )));
            }
        }
        if let Some(on) = c.allmulti {
            if link.allmulti != on {
                return Err(CniError::internal(format!(
                    "Error: Tuning configured all-multicast mode of {ifname} is {on}, current value is {}",
                    link.allmulti
                )));
            }
        }
        if let Some(q) = c.txqlen {
            if link.txqlen != q {
                return Err(CniError::internal(format!(
                    "Error: Tuning configured tx queue length of {ifname} is {q}, current value is {}",
                    link.txqlen
                )));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

/// `dataDir` when it is an absolute path (DEL and GC need no otherwise valid config).
fn data_dir_of(inv: &Invocation) -> Option<std::path::PathBuf> {
    crate::conf::config_str(inv.config, "dataDir")
        .filter(|d| d.starts_with('/'))
        .map(std::path::PathBuf::from)
}

/// Put back what the record says ADD changed, while the netns it was made for is still
/// there, then remove the record (and a temporary file an ADD killed while writing it
/// left). Nothing to restore without a record, a netns, or in another netns.
fn restore_and_forget(
    path: &std::path::Path,
    rec: Option<record::Record>,
    netns: &str,
    ifname: &str,
) -> Result<(), CniError> {
    record::remove_temp(path);
    let Some(rec) = rec else {
        return record::remove(path).map_err(CniError::from);
    };
    // No netns (gone, or never given): nothing left to restore. The caller's own netns
    // is refused: restoring "pod" settings there would change the host's.
    let pod = match crate::kernel::netns::open_pod_for_del(netns)? {
        Some(p) => p,
        None => return record::remove(path).map_err(CniError::from),
    };
    if !rec.netns_id.is_empty() && !rec.is_for(&pod::identity(&pod)) {
        tracing::warn!(
            "tuning: {} was made for another network namespace; removing it",
            path.display()
        );
        return record::remove(path).map_err(CniError::from);
    }
    let left = pod::restore(&pod, None, ifname, &rec, false);
    if left.is_empty() {
        record::remove(path).map_err(CniError::from)
    } else {
        // As the reference: DEL does not fail over what it could not put back. The
        // record stays for a later DEL.
        tracing::warn!("tuning: DEL left some changes in place: {}", left.join("; "));
        Ok(())
    }
}
