//! The bandwidth stage: token-bucket shaping of a pod's traffic on the host side, laid
//! out as the reference `bandwidth` plugin (1.1.1, tbf) lays it out:
//! - into the pod (`ingressRate`/`ingressBurst`): a root tbf `1:` on the host veth;
//! - out of the pod (`egressRate`/`egressBurst`): an ingress qdisc `ffff:` on the host
//!   veth whose u32 match-all filter redirects every packet to an ifb device
//!   `bwp<hash>` that carries its own root tbf `1:`.
//!
//! Latency 25 ms, limit = rate x 25 ms + burst, rates and bursts in bits as configured.
//! ADD undoes its own partial work on failure; DEL removes the ifb and, when it can find
//! the host veth, the qdiscs this stage put there.

pub mod config;
pub mod host;

use crate::netlink::{errno_of, format_mac, Link, Netlink, Qdisc, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use crate::netns::NetNs;
use anyhow::Context;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::result::{CniResult, Interface, Result100};
use cnichain_engine::stage::{Invocation, Stage};
use config::{BandwidthConf, Shape};

pub struct Bandwidth;

fn err(e: anyhow::Error) -> CniError {
    CniError::from(e)
}

fn open_pod(inv: &Invocation) -> Result<NetNs, CniError> {
    NetNs::open(&inv.rt.netns).map_err(|e| CniError::env(format!("failed to open netns {:?}: {e:#}", inv.rt.netns)))
}

/// Something ADD made, to be removed again if a later step fails.
enum Made {
    RootTbf(u32),
    IngressQdisc(u32),
    Ifb(u32),
}

fn undo(host: &mut Netlink, made: &[Made]) {
    for m in made.iter().rev() {
        let r = match m {
            Made::RootTbf(i) => host.del_qdisc(*i, TC_H_ROOT, TBF_HANDLE),
            Made::IngressQdisc(i) => host.del_qdisc(*i, TC_H_INGRESS, INGRESS_HANDLE),
            Made::Ifb(i) => host.del_link(*i),
        };
        if let Err(e) = r {
            tracing::warn!("bandwidth: undoing a failed ADD: {e:#}");
        }
    }
}

/// The root tbf of a link, if it has one.
fn root_tbf(qdiscs: &[Qdisc]) -> Option<&Qdisc> {
    qdiscs.iter().find(|q| q.parent == TC_H_ROOT && q.kind == "tbf")
}

/// Whether a tbf qdisc carries the settings of `s`: rate and limit exactly, the burst
/// within what the kernel keeps of it (a buffer in 64 ns ticks) and what the reference
/// plugin makes of it (a buffer in whole microseconds), so that a tbf the reference made
/// passes too.
fn tbf_matches(q: &Qdisc, s: &Shape) -> Result<(), String> {
    let Some(p) = q.tbf else {
        return Err("no tbf parameters".into());
    };
    if p.rate != s.rate {
        return Err(format!("rate {} B/s, want {} B/s", p.rate, s.rate));
    }
    if p.limit != s.limit {
        return Err(format!("limit {} B, want {} B", p.limit, s.limit));
    }
    let slack = (u128::from(p.rate) * 1064).div_ceil(1_000_000_000) + 1;
    if u128::from(p.burst.abs_diff(s.burst)) > slack {
        return Err(format!("burst {} B, want {} B", p.burst, s.burst));
    }
    Ok(())
}

impl Stage for Bandwidth {
    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let c = BandwidthConf::load(inv)?;
        if c.is_zero() {
            return match inv.prev_result {
                Some(p) => Ok(p.clone()),
                None => CniResult::from_v1(Result100::default(), inv.version),
            };
        }
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::new(INVALID_CONFIG, "bandwidth: must be called as chained plugin"))?;
        let mut result = prev.to_v1()?;
        let pod = open_pod(inv)?;
        let mut host = Netlink::new().map_err(err)?;
        let veth = host::host_veth(&pod, &mut host, &result, &inv.rt.ifname).map_err(err)?;

        let mut made = Vec::new();
        let out = shape_pod(&mut host, &veth, &c, &inv.rt.container_id, &mut made, &mut result);
        if let Err(e) = out {
            undo(&mut host, &made);
            return Err(err(e));
        }
        CniResult::from_v1(result, inv.version)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        // DEL needs no valid config and no prevResult: the ifb is found by its name.
        let name = inv.config.get("name").and_then(|v| v.as_str()).unwrap_or_default();
        let ifb_name = config::ifb_name(name, &inv.rt.container_id);
        let mut host = Netlink::new().map_err(err)?;
        let ifb = host.link_by_name(&ifb_name).map_err(err)?;

        // With prevResult and the pod still there, also take this stage's qdiscs off the
        // host veth (the reference leaves them until the veth goes).
        if let Some(veth) = find_veth_for_del(inv, &mut host) {
            let qdiscs = host.qdiscs(veth.index).unwrap_or_default();
            if let Some(ifb) = &ifb {
                let ours = host
                    .filters(veth.index, INGRESS_HANDLE)
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f.redirect_to() == Some(ifb.index));
                if ours {
                    if let Err(e) = host.del_qdisc(veth.index, TC_H_INGRESS, INGRESS_HANDLE) {
                        tracing::warn!("bandwidth: {e:#}");
                    }
                }
            }
            let ingress = BandwidthConf::load(inv).ok().and_then(|c| c.ingress);
            if let (Some(s), Some(q)) = (ingress, root_tbf(&qdiscs)) {
                if q.handle == TBF_HANDLE && tbf_matches(q, &s).is_ok() {
                    if let Err(e) = host.del_qdisc(veth.index, TC_H_ROOT, TBF_HANDLE) {
                        tracing::warn!("bandwidth: {e:#}");
                    }
                }
            }
        }

        if let Some(ifb) = ifb {
            // Deleting a link waits ~20-30 ms in the kernel: let it overlap the rest of
            // the chain's DEL (the engine joins it before DEL returns).
            let index = ifb.index;
            cnichain_engine::stage::defer(format!("delete ifb {ifb_name}"), move || match host.del_link(index) {
                Ok(()) => Ok(()),
                Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
                Err(e) => Err(err(e.context(format!("failed to delete ifb {ifb_name}")))),
            })?;
        }
        Ok(())
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let c = BandwidthConf::load(inv)?;
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::new(INVALID_CONFIG, "bandwidth: must be called as a chained plugin"))?;
        let result = prev.to_v1()?;
        let pod = open_pod(inv)?;
        let mut host = Netlink::new().map_err(err)?;
        let veth = host::host_veth(&pod, &mut host, &result, &inv.rt.ifname).map_err(err)?;

        if let Some(s) = &c.ingress {
            let qdiscs = host.qdiscs(veth.index).map_err(err)?;
            let q = root_tbf(&qdiscs)
                .ok_or_else(|| CniError::internal(format!("Failed to find qdisc: no tbf on {}", veth.name)))?;
            tbf_matches(q, s)
                .map_err(|why| CniError::internal(format!("tbf on {} does not match: {why}", veth.name)))?;
        }
        if let Some(s) = &c.egress {
            let ifb_name = config::ifb_name(&c.name, &inv.rt.container_id);
            let ifb = host
                .link_by_name(&ifb_name)
                .map_err(err)?
                .ok_or_else(|| CniError::internal(format!("get ifb device: link {ifb_name} not found")))?;
            let qdiscs = host.qdiscs(ifb.index).map_err(err)?;
            let q = root_tbf(&qdiscs)
                .ok_or_else(|| CniError::internal(format!("Failed to find qdisc: no tbf on {ifb_name}")))?;
            tbf_matches(q, s).map_err(|why| CniError::internal(format!("tbf on {ifb_name} does not match: {why}")))?;
            let redirected = host
                .filters(veth.index, INGRESS_HANDLE)
                .map_err(err)?
                .iter()
                .any(|f| f.redirect_to() == Some(ifb.index));
            if !redirected {
                return Err(CniError::internal(format!(
                    "no filter on {} redirects its traffic to {ifb_name}",
                    veth.name
                )));
            }
        }
        Ok(())
    }

    fn supported_versions(&self) -> Vec<String> {
        ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

/// ADD's kernel work, recording what it makes in `made`.
fn shape_pod(
    host: &mut Netlink,
    veth: &Link,
    c: &BandwidthConf,
    container_id: &str,
    made: &mut Vec<Made>,
    result: &mut Result100,
) -> anyhow::Result<()> {
    if let Some(s) = &c.ingress {
        host.add_tbf(veth.index, s.rate, s.burst, s.limit)
            .with_context(|| format!("create ingress qdisc on {}", veth.name))?;
        made.push(Made::RootTbf(veth.index));
        cnichain_engine::fault::point("bandwidth.after-ingress").map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(s) = &c.egress {
        let ifb_name = config::ifb_name(&c.name, container_id);
        host.add_ifb_with(&ifb_name, Some(veth.mtu))
            .with_context(|| format!("create ifb {ifb_name}"))?;
        let ifb = host
            .link_by_name(&ifb_name)?
            .ok_or_else(|| anyhow::anyhow!("ifb {ifb_name} vanished after creation"))?;
        made.push(Made::Ifb(ifb.index));
        cnichain_engine::fault::point("bandwidth.after-ifb").map_err(|e| anyhow::anyhow!("{e}"))?;
        // As the reference: the ifb gets the veth's queue length (upstream copies it;
        // 1.1.1 sets 0, which is what veths made by the reference bridge have).
        if ifb.txqlen != veth.txqlen {
            host.set_txqlen(ifb.index, veth.txqlen)
                .with_context(|| format!("set the tx queue length of {ifb_name}"))?;
        }
        result.interfaces.push(Interface {
            name: ifb_name.clone(),
            mac: ifb.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            ..Default::default()
        });
        // Shape the ifb before any traffic is sent there.
        host.add_tbf(ifb.index, s.rate, s.burst, s.limit)
            .with_context(|| format!("create ifb qdisc on {ifb_name}"))?;
        host.add_ingress_qdisc(veth.index)
            .with_context(|| format!("create ingress qdisc on {}", veth.name))?;
        made.push(Made::IngressQdisc(veth.index));
        host.add_redirect_filter(veth.index, ifb.index)
            .with_context(|| format!("add egress filter on {}", veth.name))?;
        cnichain_engine::fault::point("bandwidth.after-redirect").map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// For DEL: the host veth of the attachment, if prevResult and the pod are at hand.
fn find_veth_for_del(inv: &Invocation, host: &mut Netlink) -> Option<Link> {
    let prev = inv.prev_result?.to_v1().ok()?;
    if inv.rt.netns.is_empty() {
        return None;
    }
    let pod = NetNs::open(&inv.rt.netns).ok()?;
    host::host_veth(&pod, host, &prev, &inv.rt.ifname).ok()
}
