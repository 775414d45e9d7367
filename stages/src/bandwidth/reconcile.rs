//! `cnichain reconcile` for bandwidth: the attachment's shaping, from its cached config
//! (or `bandwidth` capability) and result, put back where it is gone: the root tbf (or
//! upstream's htb layout) on the host veth, the ifb with its owner alias, the ifb's root
//! qdisc, and the veth's ingress qdisc with the redirect to the ifb. What is there and
//! matches is left alone; a root qdisc `1:` that no longer matches (a half-deleted htb)
//! is replaced. Each step as ADD makes it (`shape_pod`).

use super::config::{BandwidthConf, Shape, Subnets};
use super::{add_htb_layout, host, htb_matches, ifb, kernel_error, open_pod, root_tbf, tbf_matches, HTB_MIN_QLEN};
use crate::kernel::netlink::{Link, Netlink, INGRESS_HANDLE, TBF_HANDLE, TC_H_ROOT};
use crate::shared::undo::Undo;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::stage::Invocation;

/// Whether link `index` carries the shaping of `s` (tbf, or htb with `subnets`).
fn shaped(host: &mut Netlink, index: u32, s: &Shape, subnets: Option<&Subnets>) -> Result<bool, CniError> {
    Ok(match subnets {
        Some(n) => htb_matches(&host.htb_state(index).map_err(CniError::from)?, s, n).is_ok(),
        None => {
            let qdiscs = host.qdiscs(index).map_err(CniError::from)?;
            root_tbf(&qdiscs).is_some_and(|q| q.handle == TBF_HANDLE && tbf_matches(q, s).is_ok())
        }
    })
}

fn describe(dev: &str, dir: &str, s: &Shape, subnets: Option<&Subnets>) -> String {
    let kind = if subnets.is_some() { "htb" } else { "tbf" };
    format!(
        "{kind} 1: on {dev} ({dir} {} bit/s, burst {} bit)",
        s.rate_bits, s.burst_bits
    )
}

/// Put the root qdisc of `link` back: what is left of ours (handle `1:`) goes first.
fn restore_root(host: &mut Netlink, link: &Link, s: &Shape, subnets: Option<&Subnets>) -> Result<(), CniError> {
    let qdiscs = host.qdiscs(link.index).map_err(CniError::from)?;
    if qdiscs.iter().any(|q| q.parent == TC_H_ROOT && q.handle == TBF_HANDLE) {
        host.del_qdisc(link.index, TC_H_ROOT, TBF_HANDLE)
            .map_err(|e| kernel_error("delete qdisc", e))?;
    }
    match subnets {
        Some(n) => {
            if link.txqlen == 0 {
                host.set_txqlen(link.index, HTB_MIN_QLEN)
                    .map_err(|e| kernel_error(&format!("set the tx queue length of {}", link.name), e))?;
            }
            // A failure part-way leaves a partial htb that the next reconcile replaces:
            // nothing is undone.
            let mut undo = Undo::new();
            let out = add_htb_layout(host, link.index, s, n, &mut undo);
            undo.commit();
            out.map_err(|e| kernel_error("create htb qos rules", e))
        }
        None => host
            .add_tbf_ticks(link.index, s.rate, s.buffer, s.limit)
            .map_err(|e| kernel_error("create qdisc", e)),
    }
}

pub(super) fn reconcile(inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
    let c = BandwidthConf::load(inv)?;
    let Some(prev) = inv.prev_result else {
        return Ok(Vec::new());
    };
    if c.is_zero() {
        return Ok(Vec::new());
    }
    let subnets = c.subnets()?;
    let result = prev.to_v1()?;
    let pod = open_pod(inv)?;
    let mut host = Netlink::new().map_err(CniError::from)?;
    let veth = host::host_veth(&pod, &mut host, &result, &inv.rt.ifname).map_err(CniError::from)?;
    let mut out = Vec::new();
    if let Some(s) = &c.ingress {
        if !shaped(&mut host, veth.index, s, subnets.as_ref())? {
            out.push(describe(&veth.name, "ingress", s, subnets.as_ref()));
            if !dry_run {
                restore_root(&mut host, &veth, s, subnets.as_ref())?;
            }
        }
    }
    let Some(s) = &c.egress else {
        return Ok(out);
    };
    let owner = ifb::Owner::new(&c.name, &inv.rt.container_id, &inv.rt.ifname);
    let listed: Vec<String> = result.interfaces.iter().map(|i| i.name.clone()).collect();
    let mut ifb = owner.find(&mut host, Some(&listed)).map_err(CniError::from)?;
    if ifb.is_none() {
        // The name `create` will pick: the reference's unless another attachment has it.
        let name = match host.link_by_name(&owner.reference).map_err(CniError::from)? {
            Some(_) => owner.derived.clone(),
            None => owner.reference.clone(),
        };
        out.push(format!("ifb {name} (alias {:?})", owner.alias));
        if !dry_run {
            let made = owner
                .create(&mut host, veth.mtu)
                .map_err(|e| kernel_error("adding link", e))?;
            let qlen = if subnets.is_some() {
                veth.txqlen.max(HTB_MIN_QLEN)
            } else {
                veth.txqlen
            };
            host.set_txqlen_alias(made.index, qlen, &owner.alias)
                .map_err(|e| kernel_error(&format!("set the tx queue length and alias of {}", made.name), e))?;
            ifb = Some(made);
        }
    }
    let ifb_name = ifb.as_ref().map_or_else(|| owner.reference.clone(), |l| l.name.clone());
    let ifb_shaped = match &ifb {
        Some(l) => shaped(&mut host, l.index, s, subnets.as_ref())?,
        None => false,
    };
    if !ifb_shaped {
        out.push(describe(&ifb_name, "egress", s, subnets.as_ref()));
        if let (false, Some(l)) = (dry_run, &ifb) {
            restore_root(&mut host, l, s, subnets.as_ref())?;
        }
    }
    let redirected = match &ifb {
        Some(l) => host
            .filters(veth.index, INGRESS_HANDLE)
            .map_err(CniError::from)?
            .iter()
            .any(|f| f.redirect_to() == Some(l.index)),
        None => false,
    };
    if !redirected {
        out.push(format!(
            "ingress qdisc ffff: on {} redirecting to {ifb_name}",
            veth.name
        ));
        if let (false, Some(l)) = (dry_run, &ifb) {
            let has_ingress = host
                .qdiscs(veth.index)
                .map_err(CniError::from)?
                .iter()
                .any(|q| q.handle == INGRESS_HANDLE);
            if !has_ingress {
                host.add_ingress_qdisc(veth.index)
                    .map_err(|e| kernel_error("create ingress qdisc", e))?;
            }
            host.add_redirect_filter(veth.index, l.index)
                .map_err(|e| kernel_error("add filter", e))?;
        }
    }
    Ok(out)
}
