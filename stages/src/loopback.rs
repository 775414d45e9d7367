//! The loopback stage: `lo` up in the pod (ADD), down (DEL), verified up (CHECK). Behaves
//! as the reference `loopback` plugin: its own result names `lo` with its loopback
//! addresses, or passes a prevResult through untouched.

use crate::kernel::netlink::Netlink;
use crate::kernel::netns::NetNs;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::spec::result::{CniResult, Interface, IpConfig, Result100};
use cnichain_engine::stage::{Invocation, Stage};
use cnichain_engine::validate::schema::{Role, Schema};

pub struct Loopback;

fn open(inv: &Invocation) -> Result<NetNs, CniError> {
    crate::kernel::netns::open_pod(&inv.rt.netns)
}

impl Stage for Loopback {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&SCHEMA)
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let pod = open(inv)?;
        let mut nl = Netlink::new_in(&pod)?;
        let lo = nl
            .link_by_name("lo")?
            .ok_or_else(|| CniError::internal("no lo in the netns"))?;
        nl.set_up(lo.index)?;
        let addrs: Vec<IpNet> = nl.addrs(Some(lo.index))?.into_iter().map(|a| a.addr).collect();
        for a in &addrs {
            if !a.addr.is_loopback() {
                return Err(CniError::internal(format!(
                    "loopback interface found with non-loopback address {:?}",
                    a.addr.to_string()
                )));
            }
        }
        if let Some(prev) = inv.prev_result {
            return Ok(prev.clone());
        }
        let mut res = Result100 {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: inv.rt.netns.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for v4 in [true, false] {
            if let Some(a) = addrs.iter().find(|a| a.is_ipv4() == v4) {
                res.ips.push(IpConfig {
                    interface: Some(0),
                    address: *a,
                    gateway: None,
                });
            }
        }
        CniResult::from_v1(res, inv.version)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        let Some(pod) = crate::kernel::netns::open_pod_for_del(&inv.rt.netns)? else {
            return Ok(());
        };
        let mut nl = Netlink::new_in(&pod)?;
        if let Some(lo) = nl.link_by_name("lo")? {
            nl.set_down(lo.index)?;
        }
        Ok(())
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let pod = open(inv)?;
        let mut nl = Netlink::new_in(&pod)?;
        match nl.link_by_name("lo")? {
            Some(lo) if lo.up => Ok(()),
            _ => Err(CniError::internal("loopback interface is down")),
        }
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

/// loopback reads no keys of its own.
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[],
};
