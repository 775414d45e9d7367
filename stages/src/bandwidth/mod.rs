//! The bandwidth stage: token-bucket shaping of a pod's traffic on the host side, laid
//! out as the reference `bandwidth` plugin (1.1.1, tbf) lays it out:
//! - into the pod (`ingressRate`/`ingressBurst`): a root tbf `1:` on the host veth;
//! - out of the pod (`egressRate`/`egressBurst`): an ingress qdisc `ffff:` on the host
//!   veth whose u32 match-all filter redirects every packet to an ifb device
//!   `bwp<hash>` that carries its own root tbf `1:`.
//!
//! The tbf's rate, buffer and limit are the reference's to the unit (its float64 and
//! uint32 steps, [`crate::kernel::netlink::tbf::ReferenceTbf`]), saturated only where its uint32
//! arithmetic wraps around (the runtimes' default bursts at low rates). The ifb is named
//! as the reference names it unless another attachment of the same network and pod
//! holds that name (see `ifb.rs`).
//!
//! With upstream's (1.4+) `shapedSubnets` or `unshapedSubnets`, the root tbf of either
//! device (host veth, ifb) is replaced by upstream's htb layout (see
//! [`crate::kernel::netlink::htb`]): classes `1:48` (shaped) and `1:1` (unshaped), and one u32
//! filter per listed subnet matching the destination address.
//! ADD undoes its own partial work on failure; DEL removes the ifb and, when it can find
//! the host veth, the qdiscs this stage put there.

pub mod config;
pub mod host;
mod ifb;
mod reconcile;

use crate::kernel::netlink::htb::{self, HtbState};
use crate::kernel::netlink::{
    errno_of, format_mac, Link, Netlink, Qdisc, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT,
};
use crate::kernel::netns::NetNs;
use crate::shared::undo::Undo;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::result::{CniResult, Interface, Result100};
use cnichain_engine::stage::{Invocation, Stage};
use config::{reference_error, BandwidthConf, Shape, Subnets};

pub struct Bandwidth;

fn open_pod(inv: &Invocation) -> Result<NetNs, CniError> {
    crate::kernel::netns::open_pod(&inv.rt.netns)
}

/// Something ADD made, to be removed again if a later step fails.
enum Made {
    /// The root qdisc `1:` (tbf or htb).
    RootTbf(u32),
    IngressQdisc(u32),
    Ifb(u32),
}

/// Record in `undo` the removal of what ADD just made, run if a later step fails (over a
/// host socket of its own; best effort, logged).
fn remove_on_failure(undo: &mut Undo, m: Made) {
    undo.push(move || {
        let r = Netlink::new().and_then(|mut host| match m {
            Made::RootTbf(i) => host.del_qdisc(i, TC_H_ROOT, TBF_HANDLE),
            Made::IngressQdisc(i) => host.del_qdisc(i, TC_H_INGRESS, INGRESS_HANDLE),
            Made::Ifb(i) => host.del_link(i),
        });
        if let Err(e) = r {
            tracing::warn!("bandwidth: undoing a failed ADD: {e:#}");
        }
    });
}

/// The root tbf of a link, if it has one.
fn root_tbf(qdiscs: &[Qdisc]) -> Option<&Qdisc> {
    qdiscs.iter().find(|q| q.parent == TC_H_ROOT && q.kind == "tbf")
}

/// Whether a tbf qdisc carries the settings of `s`: the rate exactly; the limit and the
/// buffer as cnichain sets them or as the reference sets them (its wrapped values
/// included), and the buffer also within the 1 us rounding of earlier cnichain versions
/// (which let the kernel derive it from the burst). Err: the reference's message for the
/// first mismatch, and what differs.
fn tbf_matches(q: &Qdisc, s: &Shape) -> Result<(), (&'static str, String)> {
    let Some(p) = q.tbf else {
        return Err(("Failed to find qdisc", "no tbf parameters".into()));
    };
    let r = s.reference();
    if p.rate != s.rate {
        return Err((
            "Rate doesn't match",
            format!("rate {} B/s, want {} B/s", p.rate, s.rate),
        ));
    }
    if p.limit != s.limit && p.limit != r.reference_limit {
        return Err((
            "Limit doesn't match",
            format!("limit {} B, want {} B", p.limit, s.limit),
        ));
    }
    let close = !s.saturated && p.buffer_ticks.abs_diff(s.buffer) <= 16;
    if p.buffer_ticks != s.buffer && p.buffer_ticks != r.reference_buffer && !close {
        return Err((
            "Buffer doesn't match",
            format!(
                "buffer {} ticks (burst {} B), want {} ticks (burst {} B)",
                p.buffer_ticks, p.burst, s.buffer, s.burst
            ),
        ));
    }
    Ok(())
}

/// The shortest tx queue a device shaped by htb gets (upstream's ifb minimum).
const HTB_MIN_QLEN: u32 = 1000;

/// The htb buffer of the shaped class: the burst's duration at the rate, psched ticks,
/// computed as upstream computes it (the tbf's buffer).
fn htb_buffer(s: &Shape) -> u32 {
    s.buffer
}

/// Build upstream's htb layout on link `index`: qdisc, shaped class, unshaped class, one
/// filter per subnet. Once the qdisc is made its removal is recorded in `undo` (removing it removes
/// the rest).
fn add_htb_layout(host: &mut Netlink, index: u32, s: &Shape, subnets: &Subnets, undo: &mut Undo) -> anyhow::Result<()> {
    let (defcls, target) = htb::class_targets(subnets.shaped);
    host.add_htb_qdisc(index, defcls)?;
    remove_on_failure(undo, Made::RootTbf(index));
    let buffer = htb_buffer(s);
    host.add_htb_class(
        index,
        htb::SHAPED_MINOR,
        s.rate,
        s.rate.saturating_mul(2),
        buffer,
        buffer,
    )?;
    host.add_htb_class(index, htb::UNSHAPED_MINOR, htb::UNCAPPED_RATE, htb::UNCAPPED_RATE, 0, 0)?;
    for n in &subnets.nets {
        host.add_subnet_filter(index, n, target)?;
    }
    Ok(())
}

/// Whether `st` is upstream's htb layout for `s` and `subnets`. The buffer may differ by
/// the rounding of upstream's computation (whole microseconds, 15.625 ticks each).
fn htb_matches(st: &HtbState, s: &Shape, subnets: &Subnets) -> Result<(), String> {
    let Some((handle, defcls)) = st.qdisc else {
        return Err("no htb qdisc".into());
    };
    if handle != htb::HTB_HANDLE {
        return Err(format!("htb handle {handle:#x}, want 0x10000"));
    }
    let (want_def, target) = htb::class_targets(subnets.shaped);
    if defcls != u32::from(want_def) {
        return Err(format!("default class 1:{defcls}, want 1:{want_def}"));
    }
    let class = |minor: u16| {
        st.classes
            .iter()
            // a class right under the qdisc reads back with parent root
            .find(|c| {
                c.classid == htb::HTB_HANDLE | u32::from(minor)
                    && (c.parent == htb::HTB_HANDLE || c.parent == TC_H_ROOT)
            })
            .ok_or_else(|| format!("no htb class 1:{minor}"))
    };
    let shaped = class(htb::SHAPED_MINOR)?;
    if shaped.rate != s.rate || shaped.ceil != s.rate.saturating_mul(2) {
        return Err(format!(
            "class 1:{} rate {} B/s ceil {} B/s, want {} B/s and {} B/s",
            htb::SHAPED_MINOR,
            shaped.rate,
            shaped.ceil,
            s.rate,
            s.rate.saturating_mul(2)
        ));
    }
    let want_buf = htb_buffer(s);
    let r = s.reference().reference_buffer;
    let ok = |b: u32| b == want_buf || b == r || (!s.saturated && b.abs_diff(want_buf) <= 16);
    if !ok(shaped.buffer) || !ok(shaped.cbuffer) {
        return Err(format!(
            "class 1:{} buffer {}/{} ticks, want {want_buf}",
            htb::SHAPED_MINOR,
            shaped.buffer,
            shaped.cbuffer
        ));
    }
    let unshaped = class(htb::UNSHAPED_MINOR)?;
    if unshaped.rate != htb::UNCAPPED_RATE || unshaped.ceil != htb::UNCAPPED_RATE {
        return Err(format!(
            "class 1:{} rate {} B/s ceil {} B/s, want {} B/s",
            htb::UNSHAPED_MINOR,
            unshaped.rate,
            unshaped.ceil,
            htb::UNCAPPED_RATE
        ));
    }
    for n in &subnets.nets {
        let (proto, prio, keys) = n.filter_keys();
        let mut want: Vec<(u32, u32, i32)> = keys.iter().map(|k| (k.mask, k.val, k.off)).collect();
        if want.is_empty() {
            want.push((0, 0, 0));
        }
        let found = st.filters.iter().any(|f| {
            f.protocol == proto
                && f.priority == prio
                && f.classid == htb::HTB_HANDLE | u32::from(target)
                && f.keys == want
        });
        if !found {
            return Err(format!("no filter sends traffic to {n} to class 1:{target}"));
        }
    }
    Ok(())
}

impl Stage for Bandwidth {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&config::SCHEMA)
    }

    /// ADD's config checks: rates, subnets, and the bursts the kernel would refuse.
    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        let c = BandwidthConf::load(inv)?;
        if c.is_zero() {
            return Ok(());
        }
        if c.subnets()?.is_none() {
            if let Some(e) = c.kernel_refusal() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        // in the reference's order: rates, nothing to do, subnets, prevResult, netns,
        // host veth, then the kernel
        let c = BandwidthConf::load(inv)?;
        if c.is_zero() {
            return match inv.prev_result {
                Some(p) => Ok(p.clone()),
                None => CniResult::from_v1(Result100::default(), inv.version),
            };
        }
        let subnets = c.subnets()?;
        let prev = inv.prev_result.ok_or_else(|| {
            reference_error(
                "must be called as chained plugin",
                "bandwidth: ADD needs the previous plugin's result (prevResult)",
            )
        })?;
        let mut result = prev.to_v1()?;
        let pod = open_pod(inv)?;
        let mut host = Netlink::new()?;
        let veth = host::host_veth(&pod, &mut host, &result, &inv.rt.ifname)?;
        if subnets.is_none() {
            if let Some(e) = c.kernel_refusal() {
                return Err(e);
            }
        }
        for (dir, s) in [("ingress", &c.ingress), ("egress", &c.egress)] {
            if let Some(s) = s.filter(|s| s.saturated) {
                let r = s.reference();
                tracing::info!(
                    "bandwidth: {dir} {} bits/s, burst {} bits: buffer {} ticks and limit {} B where the reference's uint32 arithmetic wraps to {} ticks and {} B",
                    s.rate_bits, s.burst_bits, s.buffer, s.limit, r.reference_buffer, r.reference_limit
                );
            }
        }

        let owner = ifb::Owner::new(&c.name, &inv.rt.container_id, &inv.rt.ifname);
        // A failure part way removes what this ADD made (`undo` is dropped uncommitted).
        let mut undo = Undo::new();
        shape_pod(&mut host, &veth, &c, subnets.as_ref(), &owner, &mut undo, &mut result)?;
        undo.commit();
        CniResult::from_v1(result, inv.version)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        // DEL needs no valid config and no prevResult: the ifb is found by its names and
        // owner alias.
        let conf = BandwidthConf::load(inv).ok();
        let name = match &conf {
            Some(c) => c.name.clone(),
            None => config::network_name(inv),
        };
        let owner = ifb::Owner::new(&name, &inv.rt.container_id, &inv.rt.ifname);
        let prev = inv.prev_result.and_then(|p| p.to_v1().ok());
        let listed: Option<Vec<String>> = prev
            .as_ref()
            .map(|r| r.interfaces.iter().map(|i| i.name.clone()).collect());
        let mut host = Netlink::new()?;
        let ifb = owner.find(&mut host, listed.as_deref())?;

        // With prevResult and the pod still there, also take this stage's qdiscs off the
        // host veth (the reference leaves them until the veth goes).
        if let Some(veth) = prev.as_ref().and_then(|p| find_veth_for_del(inv, p, &mut host)) {
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
            let ingress = conf.as_ref().and_then(|c| c.ingress);
            let subnets = conf.as_ref().and_then(|c| c.subnets().ok().flatten());
            let ours = match (ingress, &subnets) {
                (Some(s), None) => {
                    root_tbf(&qdiscs).is_some_and(|q| q.handle == TBF_HANDLE && tbf_matches(q, &s).is_ok())
                }
                (Some(s), Some(n)) => host
                    .htb_state(veth.index)
                    .is_ok_and(|st| htb_matches(&st, &s, n).is_ok()),
                (None, _) => false,
            };
            if ours {
                if let Err(e) = host.del_qdisc(veth.index, TC_H_ROOT, TBF_HANDLE) {
                    tracing::warn!("bandwidth: {e:#}");
                }
            }
        }

        if let Some(ifb) = ifb {
            // Deleting a link waits ~20-30 ms in the kernel: let it overlap the rest of
            // the chain's DEL (the engine joins it before DEL returns).
            let (index, ifb_name) = (ifb.index, ifb.name);
            cnichain_engine::stage::defer(format!("delete ifb {ifb_name}"), move || match host.del_link(index) {
                Ok(()) => Ok(()),
                Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
                Err(e) => Err(CniError::from(e.context(format!("failed to delete ifb {ifb_name}")))),
            })?;
        }
        Ok(())
    }

    /// The ifb devices of attachments the runtime no longer lists (cached or not). The
    /// qdiscs on host veths went with the veths.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        match crate::shared::gc::ValidSet::from_config(inv.config)? {
            Some(valid) => crate::shared::gc::links(&valid, "ifb", "bandwidth"),
            None => Ok(()),
        }
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let c = BandwidthConf::load(inv)?;
        let prev = inv.prev_result.ok_or_else(|| {
            reference_error(
                "must be called as a chained plugin",
                "bandwidth: CHECK needs the attachment's result (prevResult)",
            )
        })?;
        let result = prev.to_v1()?;
        let pod = open_pod(inv)?;
        let mut host = Netlink::new()?;
        let veth = host::host_veth(&pod, &mut host, &result, &inv.rt.ifname)?;
        let subnets = c
            .subnets()
            .map_err(|e| reference_error(format!("failed to check subnets, details {}", e.msg), e.details))?;
        let mismatch = |dev: &str, (msg, why): (&str, String)| reference_error(msg, format!("bandwidth: {dev}: {why}"));

        if let (Some(s), Some(n)) = (&c.ingress, &subnets) {
            let st = host.htb_state(veth.index)?;
            htb_matches(&st, s, n).map_err(|why| mismatch(&veth.name, ("htb does not match", why)))?;
        } else if let Some(s) = &c.ingress {
            let qdiscs = host.qdiscs(veth.index)?;
            let q = root_tbf(&qdiscs)
                .ok_or_else(|| mismatch(&veth.name, ("Failed to find qdisc", "no root tbf".into())))?;
            tbf_matches(q, s).map_err(|m| mismatch(&veth.name, m))?;
        }
        if let Some(s) = &c.egress {
            let owner = ifb::Owner::new(&c.name, &inv.rt.container_id, &inv.rt.ifname);
            let listed: Vec<String> = result.interfaces.iter().map(|i| i.name.clone()).collect();
            let ifb = owner.find(&mut host, Some(&listed))?.ok_or_else(|| {
                reference_error(
                    "get ifb device: Link not found",
                    format!(
                        "bandwidth: no ifb device of this attachment ({} or {} with alias {:?})",
                        owner.reference, owner.derived, owner.alias
                    ),
                )
            })?;
            if let Some(n) = &subnets {
                let st = host.htb_state(ifb.index)?;
                htb_matches(&st, s, n).map_err(|why| mismatch(&ifb.name, ("htb does not match", why)))?;
            } else {
                let qdiscs = host.qdiscs(ifb.index)?;
                let q = root_tbf(&qdiscs)
                    .ok_or_else(|| mismatch(&ifb.name, ("Failed to find qdisc", "no root tbf".into())))?;
                tbf_matches(q, s).map_err(|m| mismatch(&ifb.name, m))?;
            }
            let redirected = host
                .filters(veth.index, INGRESS_HANDLE)?
                .iter()
                .any(|f| f.redirect_to() == Some(ifb.index));
            if !redirected {
                return Err(CniError::internal(format!(
                    "no filter on {} redirects its traffic to {}",
                    veth.name, ifb.name
                )));
            }
        }
        Ok(())
    }

    fn reconcile(&self, inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
        reconcile::reconcile(inv, dry_run)
    }

    /// 50 when the kernel lacks what this config's shaping uses: tbf (ingress), an ifb
    /// device and the ingress redirect (egress), htb in place of tbf with a subnet list.
    /// Rates the runtime may pass (the `bandwidth` capability and no rates in the config)
    /// need tbf, ifb and the redirect.
    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        use crate::kernel::probe::{self, Feature};
        let c = BandwidthConf::load(inv)?;
        let htb = c
            .subnets()?
            .map(|s| if s.shaped { "shapedSubnets" } else { "unshapedSubnets" });
        let mut needs = Vec::new();
        if c.ingress.is_some() {
            needs.push(htb.map_or((Feature::Tbf, "ingressRate"), |k| (Feature::Htb, k)));
        }
        if c.egress.is_some() {
            needs.push((Feature::Ifb, "egressRate"));
            needs.push((Feature::Redirect, "egressRate"));
            needs.push(htb.map_or((Feature::Tbf, "egressRate"), |k| (Feature::Htb, k)));
        }
        if c.capability && !c.has_plain && c.is_zero() {
            for f in [Feature::Tbf, Feature::Ifb, Feature::Redirect] {
                needs.push((f, "the bandwidth capability"));
            }
        }
        probe::require(inv.settings(), "bandwidth", &needs)
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

/// A failed kernel step as the reference reports it: its message for the step and the
/// errno in Go's words ("create qdisc: invalid argument"); cnichain's account of the
/// request in `details`.
fn kernel_error(step: &str, e: anyhow::Error) -> CniError {
    match errno_of(&e) {
        Some(n) => reference_error(format!("{step}: {}", go_errno_text(n)), format!("bandwidth: {e:#}")),
        None => CniError::from(e.context(step.to_string())),
    }
}

/// Go's syscall.Errno text: the C library's, first letter in lower case.
fn go_errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    let s = s.split(" (os error").next().unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => format!("errno {errno}"),
    }
}

/// ADD's kernel work, recording the removal of what it makes in `undo`. Errors carry the reference's
/// message for the same step.
fn shape_pod(
    host: &mut Netlink,
    veth: &Link,
    c: &BandwidthConf,
    subnets: Option<&Subnets>,
    owner: &ifb::Owner,
    undo: &mut Undo,
    result: &mut Result100,
) -> Result<(), CniError> {
    let fault = |name: &str| cnichain_engine::fault::point(name);
    if let (Some(s), Some(n)) = (&c.ingress, subnets) {
        // htb's leaf queues (default pfifo) are as long as the device's tx queue: on a
        // veth made with queue length 0 (as the reference 1.1.1 bridge makes them) they
        // would drop every packet.
        if veth.txqlen == 0 {
            tracing::warn!(
                "bandwidth: {} has tx queue length 0: setting {HTB_MIN_QLEN} for htb",
                veth.name
            );
            host.set_txqlen(veth.index, HTB_MIN_QLEN)
                .map_err(|e| kernel_error(&format!("set the tx queue length of {}", veth.name), e))?;
        }
        add_htb_layout(host, veth.index, s, n, undo)
            .map_err(|e| kernel_error("create htb container ingress qos rules", e))?;
        fault("bandwidth.after-ingress")?;
    } else if let Some(s) = &c.ingress {
        host.add_tbf_ticks(veth.index, s.rate, s.buffer, s.limit)
            .map_err(|e| kernel_error("create qdisc", e))?;
        remove_on_failure(undo, Made::RootTbf(veth.index));
        fault("bandwidth.after-ingress")?;
    }
    if let Some(s) = &c.egress {
        let ifb = owner
            .create(host, veth.mtu)
            .map_err(|e| kernel_error("adding link", e))?;
        remove_on_failure(undo, Made::Ifb(ifb.index));
        // As the reference: the ifb gets the veth's queue length (upstream copies it;
        // 1.1.1 sets 0, which is what veths made by the reference bridge have).
        // With htb (upstream 1.4+) at least 1000: the leaf queues are that long.
        let want_qlen = if subnets.is_some() {
            veth.txqlen.max(HTB_MIN_QLEN)
        } else {
            veth.txqlen
        };
        // With its owner alias for DEL, CHECK and GC (the kernel takes no alias at
        // creation): one request.
        host.set_txqlen_alias(ifb.index, want_qlen, &owner.alias)
            .map_err(|e| kernel_error(&format!("set the tx queue length and alias of {}", ifb.name), e))?;
        fault("bandwidth.after-ifb")?;
        result.interfaces.push(Interface {
            name: ifb.name.clone(),
            mac: ifb.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            ..Default::default()
        });
        // Shape the ifb before any traffic is sent there.
        match subnets {
            Some(n) => add_htb_layout(host, ifb.index, s, n, undo)
                .map_err(|e| kernel_error("create htb container egress qos rules", e))?,
            None => host
                .add_tbf_ticks(ifb.index, s.rate, s.buffer, s.limit)
                .map_err(|e| kernel_error("create ifb qdisc: create qdisc", e))?,
        }
        host.add_ingress_qdisc(veth.index)
            .map_err(|e| kernel_error("create ingress qdisc", e))?;
        remove_on_failure(undo, Made::IngressQdisc(veth.index));
        host.add_redirect_filter(veth.index, ifb.index)
            .map_err(|e| kernel_error("add filter", e))?;
        fault("bandwidth.after-redirect")?;
    }
    Ok(())
}

/// For DEL: the host veth of the attachment, if the pod is still there.
fn find_veth_for_del(inv: &Invocation, prev: &Result100, host: &mut Netlink) -> Option<Link> {
    if inv.rt.netns.is_empty() {
        return None;
    }
    let pod = crate::kernel::netns::open_pod_for_del(&inv.rt.netns).ok()??;
    host::host_veth(&pod, host, prev, &inv.rt.ifname).ok()
}
