//! Applying a result to the container interface (the reference's ipam.ConfigureIface):
//! bring it up, add the addresses meant for it, then the routes, defaulting a route's
//! gateway to the first gateway of its family. And the checks CHECK makes of them.

use crate::kernel::netlink::{Netlink, RouteSpec};
use crate::kernel::netns::{self, NetNs};
use crate::kernel::sysctl;
use anyhow::{anyhow, bail, Context, Result};
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::spec::result::Result100;
use std::net::IpAddr;

/// Configure `ifname` (index `ifindex`, result interface index `result_index`) from the
/// result, with a socket in the pod netns `pod`.
pub fn configure(
    nl: &mut Netlink,
    pod: &NetNs,
    ifname: &str,
    ifindex: u32,
    result_index: i64,
    res: &Result100,
) -> Result<()> {
    nl.set_up(ifindex)
        .with_context(|| format!("failed to set {ifname:?} up"))?;
    let mut v4gw: Option<IpAddr> = None;
    let mut v6gw: Option<IpAddr> = None;
    let mut enabled_v6 = false;
    for ipc in &res.ips {
        let Some(idx) = ipc.interface else { continue };
        if idx != result_index {
            if idx < 0 || idx as usize >= res.interfaces.len() || res.interfaces[idx as usize].name != ifname {
                bail!(
                    "failed to add IP addr {} to {ifname:?}: invalid interface index",
                    ipc.address
                );
            }
            continue;
        }
        if !ipc.address.is_ipv4() && !enabled_v6 {
            // An IPv6 address needs disable_ipv6=0 on lo and the interface.
            let name = ifname.to_string();
            // By path, so a dotted name (`net1.100`) finds its own entry. As the
            // reference: an unreadable entry is skipped, a failed write is an error.
            netns::run_in(pod, move || {
                for iface in ["lo", name.as_str()] {
                    let key = sysctl::iface_key("ipv6", iface, "disable_ipv6")?;
                    let Ok(value) = sysctl::read(&key) else { continue };
                    if value == "0" {
                        continue;
                    }
                    sysctl::write(&key, "0")
                        .with_context(|| format!("failed to enable IPv6 for interface {iface:?} ({key}={value})"))?;
                }
                Ok(())
            })?;
            enabled_v6 = true;
        }
        nl.add_addr(ifindex, &ipc.address)
            .with_context(|| format!("failed to add IP addr {} to {ifname:?}", ipc.address))?;
        if let Some(gw) = ipc.gateway {
            match gw {
                IpAddr::V4(_) if v4gw.is_none() => v4gw = Some(gw),
                IpAddr::V6(_) if v6gw.is_none() => v6gw = Some(gw),
                _ => {}
            }
        }
    }
    if v6gw.is_some() {
        settle(nl, ifname, ifindex)?;
    }
    for r in &res.routes {
        let is_v4 = r.dst.is_ipv4();
        let gw = r.gw.or(if is_v4 { v4gw } else { v6gw });
        let spec = route_spec(r, ifindex, gw);
        // As the reference: a second interface's route to the same destination goes in
        // beside the first; an identical one already there is skipped.
        match nl.add_route_beside(&spec) {
            Err(e) if crate::kernel::netlink::errno_of(&e) == Some(libc::EEXIST) => continue,
            other => other,
        }
        .map_err(|e| {
            // The reference's text: Go prints the destination as a net.IPNet struct.
            let msg = format!(
                "failed to add route '{} via {} dev {ifname}': {}",
                go_ipnet(&r.dst.network()),
                gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into()),
                crate::shared::goerr::errno_text(&e)
            );
            anyhow::Error::new(crate::shared::goerr::with_details(msg, &e))
        })?;
    }
    Ok(())
}

/// A net.IPNet as Go's `%v` prints the struct: `{192.0.2.0 ffffff00}`.
fn go_ipnet(n: &IpNet) -> String {
    let bits: u32 = if n.is_ipv4() { 32 } else { 128 };
    let mask: u128 = if n.prefix == 0 {
        0
    } else {
        (!0u128) << (128 - u32::from(n.prefix).min(bits))
    };
    let hex = format!("{mask:032x}");
    format!("{{{} {}}}", n.addr, &hex[..(bits / 4) as usize])
}

const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

/// Wait (up to 10 s, as the reference's SettleAddresses) until no IPv6 address of the
/// interface is tentative: routes with a source address need DAD to be done.
fn settle(nl: &mut Netlink, ifname: &str, ifindex: u32) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let addrs = nl.addrs(Some(ifindex))?;
        let v6: Vec<_> = addrs.iter().filter(|a| !a.addr.is_ipv4() && a.scope == 0).collect();
        if let Some(a) = v6.iter().find(|a| a.flags & IFA_F_DADFAILED != 0) {
            bail!("{ifname}: duplicate address detection failed for {}", a.addr);
        }
        if !v6.iter().any(|a| a.flags & IFA_F_TENTATIVE != 0) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{ifname}: IPv6 addresses still tentative after 10s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
#[test]
fn go_ipnet_texts() {
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    assert_eq!(go_ipnet(&n("192.0.2.0/24")), "{192.0.2.0 ffffff00}");
    assert_eq!(go_ipnet(&n("0.0.0.0/0")), "{0.0.0.0 00000000}");
    assert_eq!(
        go_ipnet(&n("2001:db8::/64")),
        "{2001:db8:: ffffffffffffffff0000000000000000}"
    );
}

pub fn route_spec(r: &cnichain_engine::spec::result::Route, oif: u32, gw: Option<IpAddr>) -> RouteSpec {
    let pos = |v: i64| (v > 0 && v <= u32::MAX as i64).then_some(v as u32);
    RouteSpec {
        dst: Some(r.dst.network()),
        gw,
        oif: Some(oif),
        scope: r.scope.and_then(|s| u8::try_from(s).ok()),
        table: r.table.and_then(|t| u32::try_from(t).ok()),
        priority: pos(r.priority),
        mtu: pos(r.mtu),
        advmss: pos(r.advmss),
        src: None,
        v6: !r.dst.is_ipv4(),
    }
}

/// CHECK: every address of the result meant for this interface is on it.
pub fn check_addrs(nl: &mut Netlink, ifname: &str, ifindex: u32, result_index: i64, res: &Result100) -> Result<()> {
    let have: Vec<IpNet> = nl.addrs(Some(ifindex))?.into_iter().map(|a| a.addr).collect();
    for ipc in &res.ips {
        if ipc.interface != Some(result_index) {
            continue;
        }
        if !have
            .iter()
            .any(|a| a.addr == ipc.address.addr && a.prefix == ipc.address.prefix)
        {
            return Err(anyhow!("Failed to match addr {} on interface {ifname}", ipc.address));
        }
    }
    Ok(())
}

/// CHECK: every route of the result is present on this interface (a later plugin may
/// have added more; that is fine).
pub fn check_routes(nl: &mut Netlink, _ifname: &str, ifindex: u32, res: &Result100) -> Result<()> {
    for want_v6 in [false, true] {
        let routes = nl.routes(want_v6)?;
        for r in res.routes.iter().filter(|r| r.dst.is_ipv4() != want_v6) {
            let dst = r.dst.network();
            let found = routes.iter().any(|have| {
                let have_dst = have.dst.map(|d| d.network());
                let same_dst = match have_dst {
                    Some(d) => d.addr == dst.addr && d.prefix == dst.prefix,
                    None => dst.prefix == 0,
                };
                same_dst && (have.oif == Some(ifindex) || have.oif.is_none()) && (r.gw.is_none() || have.gw == r.gw)
            });
            if !found {
                // The reference's text, with Go's rendering of its Route struct.
                let net = go_ipnet(&dst);
                let (ip, mask) = net.trim_matches(['{', '}']).split_once(' ').unwrap_or_default();
                let gw = r.gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into());
                return Err(anyhow!(
                    "Expected Route {{Dst:{{IP:{ip} Mask:{mask}}} GW:{gw}}} not found in routing table"
                ));
            }
        }
    }
    Ok(())
}
