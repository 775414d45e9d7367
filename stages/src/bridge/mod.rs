//! The bridge stage: a Linux bridge on the host, a veth pair into the pod with its host
//! end enslaved, addresses from IPAM, the gateway address on the bridge, forwarding and
//! masquerade when asked. Behaves as the reference `bridge` plugin.

mod config;

use crate::netlink::{errno_of, Link, Netlink};
use crate::netns;
use crate::probe::{self, Feature};
use crate::{conf, ifaddr, ipmasq, macspoof, sysctl, veth};
use anyhow::{anyhow, Context};
use cnichain_engine::fault;
use cnichain_engine::spec::error::{CniError, LIMITED_CONNECTIVITY, PLUGIN_NOT_AVAILABLE};
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::spec::result::{CniResult, Interface, Result100, Route};
use cnichain_engine::stage::{Command, Invocation, Stage};
use config::BridgeConf;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub struct Bridge;

/// The container interface's index in the result: [bridge, host veth, container].
const CONT_INDEX: i64 = 2;

fn err(e: anyhow::Error) -> CniError {
    CniError::from(e)
}

impl Stage for Bridge {
    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let (c, mac) = BridgeConf::load(inv)?;
        let ipam = conf::ipam_type(inv.config);
        let pod = crate::netns::open_pod_wrapped(&inv.rt.netns)?;
        let mut host = Netlink::new().map_err(err)?;
        let mut pod_nl = Netlink::new_in(&pod).map_err(err)?;

        let br = ensure_bridge(&mut host, &c).map_err(err)?;
        fault::point("bridge.after-bridge")?;
        let host_name = conf::host_veth_name(&c.name, &inv.rt.container_id, &inv.rt.ifname);
        let alias = conf::owner_alias("bridge", &c.name, &inv.rt.container_id, &inv.rt.ifname);
        let v = veth::create(
            &mut host,
            &mut pod_nl,
            &pod,
            &inv.rt.ifname,
            &host_name,
            &alias,
            c.mtu(),
            mac,
        )
        .map_err(err)?;
        // From here on a failure removes what this ADD made (the reference leaves it).
        let mut ipam_done = false;
        let out = (|| -> Result<CniResult, CniError> {
            fault::point("bridge.after-veth")?;
            host.set_master(v.host.index, br.index)
                .with_context(|| format!("failed to connect {:?} to bridge {}", v.host.name, c.br_name))
                .map_err(err)?;
            host.set_hairpin(v.host.index, c.hairpin_mode)
                .with_context(|| format!("failed to setup hairpin mode for {}", v.host.name))
                .map_err(err)?;

            let mut res = Result100 {
                cni_version: "1.1.0".into(),
                interfaces: vec![
                    Interface {
                        name: c.br_name.clone(),
                        ..Default::default()
                    },
                    iface(&v.host, ""),
                    iface(&v.cont, &inv.rt.netns),
                ],
                ..Default::default()
            };
            if let Some(ipam) = &ipam {
                let r = inv
                    .delegate(ipam, Command::Add)?
                    .ok_or_else(|| CniError::internal("IPAM returned no result"))?;
                ipam_done = true;
                fault::point("bridge.after-ipam")?;
                let r = r.to_v1()?;
                res.ips = r.ips;
                res.routes = r.routes;
                res.dns = r.dns;
                if res.ips.is_empty() {
                    return Err(CniError::internal("IPAM plugin returned missing IP config"));
                }
                let gws = calc_gateways(&mut res, &c)?;
                let (enable_dad, ifname) = (c.enable_dad, inv.rt.ifname.clone());
                netns::run_in(&pod, move || {
                    if enable_dad {
                        let _ = sysctl::write(&format!("net.ipv6.conf.{ifname}.enhanced_dad"), "1");
                        let _ = sysctl::write(&format!("net.ipv6.conf.{ifname}.accept_dad"), "1");
                    } else {
                        let _ = sysctl::write(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0");
                    }
                    let _ = sysctl::write(&format!("net.ipv4.conf.{ifname}.arp_notify"), "1");
                    Ok(())
                })
                .map_err(err)?;
                ifaddr::configure(&mut pod_nl, &pod, &inv.rt.ifname, v.cont.index, CONT_INDEX, &res).map_err(err)?;
                fault::point("bridge.after-addrs")?;
                if c.is_gw {
                    for gw in &gws {
                        ensure_addr(&mut host, &br, gw, c.force_address).map_err(err)?;
                    }
                    enable_forwarding(&gws).map_err(err)?;
                }
                fault::point("bridge.after-gateway")?;
                if c.ip_masq {
                    let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
                    ipmasq::setup(&c.name, &inv.rt.container_id, &inv.rt.ifname, &ips).map_err(err)?;
                    fault::point("bridge.after-masq")?;
                }
            }
            if c.macspoofchk {
                let mac = res.interfaces[2].mac.clone();
                let owner = macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname);
                macspoof::setup(&v.host.name, &mac, &owner).map_err(err)?;
            }
            // The bridge's MAC may change when the first port joins or an address is set.
            if let Some(b) = host.link_by_index(br.index).map_err(err)? {
                res.interfaces[0].mac = b.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
            }
            if let Some(d) = c.dns.as_ref().and_then(|d| d.to_dns()) {
                res.dns = d;
            }
            CniResult::from_v1(res, inv.version)
        })();
        if out.is_err() {
            if c.ip_masq {
                // Its records name what was made, whatever step failed.
                let _ = ipmasq::teardown(&c.name, &inv.rt.container_id, &inv.rt.ifname, &[]);
            }
            if c.macspoofchk {
                let _ = macspoof::teardown(&macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname));
            }
            let _ = veth::delete_container_end(pod_nl, &inv.rt.ifname);
            if ipam_done {
                if let Some(ipam) = &ipam {
                    let _ = inv.delegate(ipam, Command::Del);
                }
            }
        }
        out
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let ipam = conf::ipam_type(inv.config);
        // DEL goes on past a failure (the IPAM release above all), and returns the first.
        let mut first: Option<CniError> = None;
        let mut ips: Vec<IpNet> = veth::del_pod_end(
            &inv.rt.netns,
            &inv.rt.ifname,
            &conf::host_veth_name(&c.name, &inv.rt.container_id, &inv.rt.ifname),
        )
        .or_else(|e| veth::pod_end_failure(e, &mut first))?;
        if let Some(ipam) = &ipam {
            if let Err(e) = inv.delegate(ipam, Command::Del) {
                first.get_or_insert(e);
            }
        }
        if c.macspoofchk {
            let owner = macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname);
            cnichain_engine::stage::defer("macspoofchk", move || macspoof::teardown(&owner).map_err(err))?;
        }
        if c.ip_masq && ipam.is_some() {
            // Addresses from the link, or from the cached result when the netns is gone
            // (the reference leaks the masquerade rules then: plugins#1078).
            if ips.is_empty() {
                if let Some(prev) = inv.prev_result {
                    if let Ok(p) = prev.to_v1() {
                        ips = p
                            .ips
                            .iter()
                            .filter(|i| i.interface == Some(CONT_INDEX))
                            .map(|i| i.address)
                            .collect();
                    }
                }
            }
            if let Err(e) = teardown_masq_deferred(&c.name, &inv.rt.container_id, &inv.rt.ifname, ips) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::invalid_config("bridge: Required prevResult missing"))?;
        let res = prev.to_v1()?;
        if let Some(ipam) = conf::ipam_type(inv.config) {
            inv.delegate(&ipam, Command::Check)?;
        }
        let mut host = Netlink::new().map_err(err)?;
        let br = host
            .link_by_name(&c.br_name)
            .map_err(err)?
            .ok_or_else(|| CniError::internal(format!("bridge: {:?} not found", c.br_name)))?;
        if br.kind.as_deref() != Some("bridge") {
            return Err(CniError::internal(format!("bridge: {:?} is not a bridge", c.br_name)));
        }
        let (mut pod_nl, cont) = veth::pod_end(&inv.rt.netns, &inv.rt.ifname, "bridge")?;
        if let Some(want) = res
            .interfaces
            .iter()
            .find(|i| i.name == inv.rt.ifname && i.sandbox == inv.rt.netns)
        {
            let have = cont.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
            if !want.mac.is_empty() && !want.mac.eq_ignore_ascii_case(&have) {
                return Err(CniError::internal(format!(
                    "bridge: interface {} MAC {have} does not match the result's {}",
                    inv.rt.ifname, want.mac
                )));
            }
        }
        // The host end must be a port of the bridge and the container end's peer.
        let peer = cont.peer_index;
        let host_end = host
            .links()
            .map_err(err)?
            .into_iter()
            .find(|l| l.master == Some(br.index) && Some(l.index) == peer);
        if host_end.is_none() {
            return Err(CniError::internal(format!(
                "bridge: the peer of {} is not a port of bridge {}",
                inv.rt.ifname, c.br_name
            )));
        }
        ifaddr::check_addrs(&mut pod_nl, &inv.rt.ifname, cont.index, CONT_INDEX, &res).map_err(err)?;
        ifaddr::check_routes(&mut pod_nl, &inv.rt.ifname, cont.index, &res).map_err(err)?;
        if c.macspoofchk {
            let mac = cont.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
            macspoof::check(&macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname), &mac).map_err(err)?;
        }
        if c.ip_masq {
            let ips: Vec<IpNet> = res
                .ips
                .iter()
                .filter(|i| i.interface == Some(CONT_INDEX))
                .map(|i| i.address)
                .collect();
            ipmasq::check(&c.name, &inv.rt.container_id, &inv.rt.ifname, &ips).map_err(err)?;
        }
        Ok(())
    }

    /// The masquerading, MAC spoof checks and host veths of attachments the runtime no
    /// longer lists (found by their network, cached or not; a veth is still there when
    /// its pod netns is), then the IPAM's GC.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        let mut errors = Vec::new();
        if let Some(valid) = crate::gc::ValidSet::from_config(inv.config)? {
            errors.extend(ipmasq::gc(&valid).err());
            let keep = valid.keys(macspoof::owner);
            errors.extend(macspoof::gc(&valid.network, &keep).map_err(err).err());
            errors.extend(crate::gc::links(&valid, "veth", "bridge").err());
        }
        if let Some(ipam) = conf::ipam_type(inv.config) {
            errors.extend(inv.delegate(&ipam, Command::Gc).err());
        }
        crate::gc::join(errors)
    }

    /// 50 when ADD cannot work (the IPAM cannot allocate, `nft` is missing for ipMasq or
    /// macspoofchk, the kernel lacks a feature ADD uses, the bridge name is taken by
    /// another kind of link); 51 when pods hold addresses (host-local) but their bridge
    /// is gone or down.
    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let ipam = conf::ipam_type(inv.config);
        let has_nft = || crate::nft::nft_binary().is_some_and(|p| p.is_file());
        if c.ip_masq && ipam.is_some() && !has_nft() {
            return Err(CniError::new(
                PLUGIN_NOT_AVAILABLE,
                "bridge: ipMasq needs nft, which was not found (install nftables)",
            ));
        }
        if c.macspoofchk && !has_nft() {
            return Err(CniError::new(
                PLUGIN_NOT_AVAILABLE,
                "bridge: macspoofchk needs nft, which was not found (install nftables)",
            ));
        }
        if let Some(ipam) = &ipam {
            inv.delegate(ipam, Command::Status)?;
        }
        let mut host = Netlink::new().map_err(err)?;
        let br = host.link_by_name(&c.br_name).map_err(err)?;
        // What ADD asks of the kernel; an existing bridge needs no bridge probe.
        let br_use = format!("bridge {:?}", c.br_name);
        let mut needs = vec![(Feature::Veth, "the pods' veth pairs")];
        if br.is_none() {
            needs.push((Feature::Bridge, br_use.as_str()));
        }
        if c.ip_masq && ipam.is_some() {
            needs.push((Feature::NftInet, "ipMasq"));
        }
        if c.macspoofchk {
            needs.push((Feature::NftBridge, "macspoofchk"));
        }
        probe::require("bridge", &needs)?;
        let lost = match &br {
            Some(l) if l.kind.as_deref() != Some("bridge") => {
                return Err(CniError::new(
                    PLUGIN_NOT_AVAILABLE,
                    format!("bridge: {:?} exists but is not a bridge", c.br_name),
                ))
            }
            Some(l) if l.up => return Ok(()),
            Some(_) => "down",
            None => "gone",
        };
        // Pods are known only through an in-process host-local store; with another
        // IPAM (or none) a missing bridge is simply made by the next ADD.
        let pods = ipam.as_deref() == Some("host-local")
            && inv.registry.is_in_process("host-local")
            && crate::ipam::host_local::has_reservations(inv.config, inv.version)?;
        if pods {
            return Err(CniError::new(
                LIMITED_CONNECTIVITY,
                format!(
                    "bridge: {:?} is {lost} while network {:?} has pods: they lost connectivity",
                    c.br_name, c.name
                ),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

/// ipMasq teardown waits in the kernel (the nftables commit, or an nft process's exit when
/// it needs one): let it overlap the chain's other DEL work (joined by the engine; inline
/// outside a DEL).
pub fn teardown_masq_deferred(net: &str, container_id: &str, ifname: &str, ips: Vec<IpNet>) -> Result<(), CniError> {
    let (net, cid, ifname) = (net.to_string(), container_id.to_string(), ifname.to_string());
    cnichain_engine::stage::defer("ipMasq", move || {
        ipmasq::teardown(&net, &cid, &ifname, &ips).map_err(err)
    })
}

fn iface(l: &Link, sandbox: &str) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: l.mac.map(|m| conf::format_mac(&m)).unwrap_or_default(),
        sandbox: sandbox.to_string(),
        ..Default::default()
    }
}

/// The bridge, created if missing (up, accept_ra=0), refused if the name is something else.
fn ensure_bridge(nl: &mut Netlink, c: &BridgeConf) -> anyhow::Result<Link> {
    let existing = nl.link_by_name(&c.br_name)?;
    let br = match existing {
        Some(l) => l,
        None => {
            match nl.add_bridge(&c.br_name, c.mtu()) {
                Ok(()) => {}
                // Another ADD made it in the meantime.
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.context(format!("could not add {:?}", c.br_name))),
            }
            nl.link_by_name(&c.br_name)?
                .ok_or_else(|| anyhow!("bridge {:?} vanished after creation", c.br_name))?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(anyhow!("{:?} already exists but is not a bridge", c.br_name));
    }
    if c.promisc_mode && !br.promisc {
        nl.set_promisc(br.index, true)?;
    }
    // We own the routes of this interface.
    let _ = sysctl::write(&format!("net.ipv6.conf.{}.accept_ra", c.br_name), "0");
    if !br.up {
        nl.set_up(br.index)?;
    }
    Ok(br)
}

/// The reference's calcGateways: every address belongs to the container interface; a
/// missing gateway becomes the subnet's first address when the bridge is the gateway;
/// isDefaultGateway adds a default route per family. Returns the bridge addresses.
fn calc_gateways(res: &mut Result100, c: &BridgeConf) -> Result<Vec<IpNet>, CniError> {
    let mut gws: Vec<IpNet> = Vec::new();
    let mut default_added = [false, false];
    for i in 0..res.ips.len() {
        res.ips[i].interface = Some(CONT_INDEX);
        let addr = res.ips[i].address;
        if res.ips[i].gateway.is_none() && c.is_gw {
            res.ips[i].gateway = Some(first_host(&addr));
        }
        let Some(gw) = res.ips[i].gateway else { continue };
        let v6 = !addr.is_ipv4();
        if c.is_default_gw && !default_added[v6 as usize] {
            let dst = if v6 {
                IpNet {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    prefix: 0,
                }
            } else {
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                }
            };
            let mut present = false;
            for r in &res.routes {
                if r.dst.prefix == 0 && r.dst.is_ipv4() == !v6 {
                    if r.gw.is_some_and(|g| g != gw) {
                        return Err(CniError::invalid_config(format!(
                            "isDefaultGateway ineffective because IPAM sets default route via {:?}",
                            r.gw.map(|g| g.to_string()).unwrap_or_default()
                        )));
                    }
                    present = true;
                }
            }
            if !present {
                res.routes.push(Route {
                    dst,
                    gw: Some(gw),
                    ..Default::default()
                });
            }
            default_added[v6 as usize] = true;
        }
        let gw_net = IpNet {
            addr: gw,
            prefix: addr.prefix,
        };
        if !gws.contains(&gw_net) {
            gws.push(gw_net);
        }
    }
    Ok(gws)
}

/// The subnet's first address (network + 1), the reference's calcGatewayIP.
fn first_host(n: &IpNet) -> IpAddr {
    match n.network().addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

/// The gateway address on the bridge (the reference's ensureAddr): present already is
/// fine; another IPv4 address, or an overlapping IPv6 one, is an error unless
/// forceAddress replaces it.
fn ensure_addr(nl: &mut Netlink, br: &Link, gw: &IpNet, force: bool) -> anyhow::Result<()> {
    let v4 = gw.is_ipv4();
    for a in nl.addrs(Some(br.index))?.into_iter().filter(|a| a.addr.is_ipv4() == v4) {
        if a.addr.addr == gw.addr && a.addr.prefix == gw.prefix {
            return Ok(());
        }
        if v4 || a.addr.contains(gw.addr) || gw.contains(a.addr.addr) {
            if force {
                nl.del_addr(br.index, &a.addr)?;
            } else {
                return Err(anyhow!("{:?} already has an IP address different from {}", br.name, gw));
            }
        }
    }
    match nl.add_addr(br.index, gw) {
        Ok(()) => {}
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(e.context(format!("could not add IP address to {:?}", br.name))),
    }
    // Pin the bridge's MAC, otherwise it follows the lowest port MAC as ports churn.
    if let Some(mac) = nl.link_by_index(br.index)?.and_then(|l| l.mac) {
        nl.set_mac(br.index, mac).context("could not set bridge's mac")?;
    }
    Ok(())
}

pub fn enable_forwarding(gws: &[IpNet]) -> anyhow::Result<()> {
    if gws.iter().any(|g| g.is_ipv4()) {
        write_if_needed("net.ipv4.ip_forward")?;
    }
    if gws.iter().any(|g| !g.is_ipv4()) {
        write_if_needed("net.ipv6.conf.all.forwarding")?;
    }
    Ok(())
}

fn write_if_needed(key: &str) -> anyhow::Result<()> {
    if sysctl::read(key).map(|v| v.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    sysctl::write(key, "1")
}
