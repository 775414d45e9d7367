//! The bridge stage: a Linux bridge on the host, a veth pair into the pod with its host
//! end enslaved, addresses from IPAM, the gateway address on the bridge, forwarding and
//! masquerade when asked. Behaves as the reference `bridge` plugin.

mod config;
mod reconcile;

use crate::conf;
use crate::kernel::netlink::{errno_of, Link, Netlink};
use crate::kernel::netns;
use crate::kernel::nft::Nft;
use crate::kernel::probe::{self, Feature};
use crate::kernel::sysctl;
use crate::shared::pods::Reservations;
use crate::shared::undo::Undo;
use crate::shared::{forwarding, goerr, ifaddr, ipmasq, macspoof, veth};
use cnichain_engine::fault;
use cnichain_engine::spec::error::{CniError, LIMITED_CONNECTIVITY, PLUGIN_NOT_AVAILABLE};
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::spec::result::{CniResult, Interface, Result100, Route};
use cnichain_engine::stage::{Command, Invocation, Stage};
use config::BridgeConf;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub struct Bridge {
    /// Whether pods hold addresses in host-local's store (STATUS).
    pub reservations: Reservations,
}

/// The container interface's index in the result: [bridge, host veth, container].
const CONT_INDEX: i64 = 2;

fn check_modes(c: &BridgeConf) -> Result<(), CniError> {
    if c.hairpin_mode && c.promisc_mode {
        return Err(CniError::internal(
            "cannot set hairpin mode and promiscuous mode at the same time.",
        ));
    }
    Ok(())
}

impl Stage for Bridge {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&config::SCHEMA)
    }

    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        check_modes(&c)?;
        match &c.ipam {
            Some(ipam) => inv.preflight_ipam(ipam),
            None => Ok(()),
        }
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let (c, mac) = BridgeConf::load(inv)?;
        let ipam = c.ipam.clone();
        let pod = crate::kernel::netns::open_pod_wrapped(&inv.rt.netns)?;
        let mut host = Netlink::new()?;
        let mut pod_nl = Netlink::new_in(&pod)?;

        check_modes(&c)?;
        // The IPAM's config is checked before the bridge exists (the reference makes
        // the bridge and the veth first, and leaves the bridge when its IPAM refuses).
        if let Some(ipam) = &ipam {
            inv.preflight_ipam(ipam)?;
        }
        let br = ensure_bridge(&mut host, &c)?;
        fault::point("bridge.after-bridge")?;
        let host_name = crate::kernel::names::host_veth_name(&c.name, &inv.rt.container_id, &inv.rt.ifname);
        let alias = crate::kernel::names::owner_alias("bridge", &c.name, &inv.rt.container_id, &inv.rt.ifname);
        let v = veth::create(
            &mut host,
            &mut pod_nl,
            &pod,
            &inv.rt.ifname,
            &host_name,
            &alias,
            c.mtu(),
            mac,
        )?;
        // From here on a failure removes what this ADD made (the reference leaves it):
        // the masquerade and MAC spoof check by their records (whatever step failed),
        // the veth, and last (`release` is dropped after `undo`) the IPAM's address.
        let nft = Nft::new(inv.settings());
        let nft = &nft;
        let mut release = Undo::new();
        let mut undo = Undo::new();
        let (net, cid, ifname) = (c.name.as_str(), inv.rt.container_id.as_str(), inv.rt.ifname.as_str());
        let pod_ref = &pod;
        undo.push(move || veth::undo_container_end(pod_ref, ifname));
        if c.macspoofchk {
            undo.push(move || {
                let _ = macspoof::teardown(nft, &macspoof::owner(net, cid, ifname));
            });
        }
        if c.ip_masq {
            undo.push(move || {
                let _ = ipmasq::teardown(nft, net, cid, ifname, &[]);
            });
        }
        fault::point("bridge.after-veth")?;
        host.set_master(v.host.index, br.index).map_err(|e| {
            goerr::with_details(
                format!(
                    "failed to connect {:?} to bridge {}: {}",
                    v.host.name,
                    c.br_name,
                    goerr::errno_text(&e)
                ),
                &e,
            )
        })?;
        host.set_hairpin(v.host.index, c.hairpin_mode).map_err(|e| {
            goerr::with_details(
                format!(
                    "failed to setup hairpin mode for {}: {}",
                    v.host.name,
                    goerr::errno_text(&e)
                ),
                &e,
            )
        })?;

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
            release.push(move || {
                let _ = inv.delegate(ipam, Command::Del);
            });
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
            // Best effort, as the reference (these only tune the pod's own link);
            // by path so that a dotted ifname (`net1.100`) is found.
            netns::run_in(&pod, move || {
                let set = |proto: &str, leaf: &str, value: &str| {
                    if let Ok(key) = sysctl::iface_key(proto, &ifname, leaf) {
                        let _ = sysctl::write(&key, value);
                    }
                };
                if enable_dad {
                    set("ipv6", "enhanced_dad", "1");
                    set("ipv6", "accept_dad", "1");
                } else {
                    set("ipv6", "accept_dad", "0");
                }
                set("ipv4", "arp_notify", "1");
                Ok(())
            })?;
            ifaddr::configure(&mut pod_nl, &pod, &inv.rt.ifname, v.cont.index, CONT_INDEX, &res)?;
            fault::point("bridge.after-addrs")?;
            if c.is_gw {
                for gw in &gws {
                    ensure_addr(&mut host, &br, gw, c.force_address)?;
                }
                forwarding::enable(&gws).map_err(|e| {
                    goerr::with_details(format!("failed to enable forwarding: {}", goerr::errno_text(&e)), &e)
                })?;
            }
            fault::point("bridge.after-gateway")?;
            if c.ip_masq {
                let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
                ipmasq::setup(nft, &c.name, &inv.rt.container_id, &inv.rt.ifname, &ips)?;
                fault::point("bridge.after-masq")?;
            }
        }
        if c.macspoofchk {
            let mac = res.interfaces[2].mac.clone();
            let owner = macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname);
            macspoof::setup(nft, &v.host.name, &mac, &owner)?;
        }
        // The bridge's MAC may change when the first port joins or an address is set.
        if let Some(b) = host.link_by_index(br.index)? {
            res.interfaces[0].mac = b.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
        }
        if let Some(d) = c.dns.as_ref().and_then(|d| d.to_dns()) {
            res.dns = d;
        }
        let out = CniResult::from_v1(res, inv.version)?;
        undo.commit();
        release.commit();
        Ok(out)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let ipam = c.ipam.clone();
        // DEL goes on past a failure (the IPAM release above all), and returns the first.
        let mut first: Option<CniError> = None;
        let mut ips: Vec<IpNet> = veth::del_pod_end(
            &inv.rt.netns,
            &inv.rt.ifname,
            &crate::kernel::names::host_veth_name(&c.name, &inv.rt.container_id, &inv.rt.ifname),
        )
        .or_else(|e| veth::pod_end_failure(e, &mut first))?;
        if let Some(ipam) = &ipam {
            if let Err(e) = inv.delegate(ipam, Command::Del) {
                first.get_or_insert(e);
            }
        }
        if c.macspoofchk {
            let owner = macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname);
            let nft = Nft::new(inv.settings());
            cnichain_engine::stage::defer("macspoofchk", move || {
                macspoof::teardown(&nft, &owner).map_err(CniError::from)
            })?;
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
            if let Err(e) = ipmasq::teardown_deferred(
                &Nft::new(inv.settings()),
                &c.name,
                &inv.rt.container_id,
                &inv.rt.ifname,
                ips,
            ) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The reference's checks, in its order and words: the bridge, the container
    /// interface and the host veth named in prevResult, then addresses and routes.
    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let netns = &inv.rt.netns;
        let pod = crate::kernel::netns::open_pod_wrapped(netns)?;
        if let Some(ipam) = &c.ipam {
            inv.delegate(ipam, Command::Check)?;
        }
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::invalid_config("Required prevResult missing"))?;
        let res = prev.to_v1()?;
        let none = Interface::default();
        let br_if = res.interfaces.iter().find(|i| i.name == c.br_name).unwrap_or(&none);
        let cont_if = res
            .interfaces
            .iter()
            .find(|i| i.name != c.br_name && i.name == inv.rt.ifname && &i.sandbox == netns)
            .unwrap_or(&none);
        let fail = |m: String| CniError::internal(m);
        let mac_of = |l: &Link| l.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
        let mut host = Netlink::new()?;
        // The bridge.
        let br = named_link(&mut host, br_if, false)?;
        if br.kind.as_deref() != Some("bridge") {
            return Err(fail(format!(
                "Interface {} does not have link type of bridge",
                br_if.name
            )));
        }
        if !br_if.mac.is_empty() && br_if.mac != mac_of(&br) {
            return Err(fail(format!(
                "Bridge interface {} Mac doesn't match: {}",
                br_if.name, br_if.mac
            )));
        }
        if br.promisc != c.promisc_mode {
            return Err(fail(format!(
                "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
                br_if.name, c.promisc_mode, br.promisc
            )));
        }
        if *netns != cont_if.sandbox {
            return Err(fail(format!(
                "Sandbox in prevResult {} doesn't match configured netns: {netns}",
                cont_if.sandbox
            )));
        }
        // The container interface.
        let mut pod_nl = Netlink::new_in(&pod)?;
        let cont = named_link(&mut pod_nl, cont_if, true)?;
        if cont.kind.as_deref() != Some("veth") {
            return Err(fail(format!(
                "Error: Container interface {} not of type veth",
                cont.name
            )));
        }
        if !cont_if.mac.is_empty() && cont_if.mac != mac_of(&cont) {
            return Err(fail(format!(
                "Interface {} Mac {} doesn't match container Mac: {}",
                cont_if.name,
                cont_if.mac,
                mac_of(&cont)
            )));
        }
        // The host veth: the result's other interface whose peer is the container's and
        // whose master is the bridge (interfaces that are not veths are skipped).
        let mut veth_found = false;
        for i in res
            .interfaces
            .iter()
            .filter(|i| i.name != br_if.name && i.name != cont_if.name)
        {
            let l = named_link(&mut host, i, false)?;
            if l.kind.as_deref() != Some("veth") {
                continue;
            }
            if Some(l.index) != cont.peer_index || l.peer_index != Some(cont.index) || l.master != Some(br.index) {
                continue;
            }
            if !i.mac.is_empty() && i.mac != mac_of(&l) {
                return Err(fail(format!(
                    "Interface {} Mac doesn't match: {} not found",
                    i.name, i.mac
                )));
            }
            veth_found = true;
            break;
        }
        if !veth_found {
            return Err(fail(format!("CNI veth created for bridge {} was not found", c.br_name)));
        }
        ifaddr::check_addrs(&mut pod_nl, &inv.rt.ifname, cont.index, CONT_INDEX, &res)?;
        ifaddr::check_routes(&mut pod_nl, &inv.rt.ifname, cont.index, &res)?;
        if c.macspoofchk {
            macspoof::check(
                &Nft::new(inv.settings()),
                &macspoof::owner(&c.name, &inv.rt.container_id, &inv.rt.ifname),
                &mac_of(&cont),
            )?;
        }
        if c.ip_masq {
            let ips: Vec<IpNet> = res
                .ips
                .iter()
                .filter(|i| i.interface == Some(CONT_INDEX))
                .map(|i| i.address)
                .collect();
            ipmasq::check(&c.name, &inv.rt.container_id, &inv.rt.ifname, &ips)?;
        }
        Ok(())
    }

    /// The masquerading, MAC spoof checks and host veths of attachments the runtime no
    /// longer lists (found by their network, cached or not; a veth is still there when
    /// its pod netns is), then the IPAM's GC.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        let mut errors = Vec::new();
        if let Some(valid) = crate::shared::gc::ValidSet::from_config(inv.config)? {
            errors.extend(ipmasq::gc(&Nft::new(inv.settings()), &valid).err());
            let keep = valid.keys(macspoof::owner);
            errors.extend(
                macspoof::gc(&Nft::new(inv.settings()), &valid.network, &keep)
                    .map_err(CniError::from)
                    .err(),
            );
            errors.extend(crate::shared::gc::links(&valid, "veth", "bridge").err());
        }
        if let Some(ipam) = BridgeConf::load(inv)?.0.ipam {
            errors.extend(inv.delegate(&ipam, Command::Gc).err());
        }
        crate::shared::gc::join(errors)
    }

    /// 50 when ADD cannot work (the IPAM cannot allocate, `nft` is missing for ipMasq or
    /// macspoofchk, the kernel lacks a feature ADD uses, the bridge name is taken by
    /// another kind of link); 51 when pods hold addresses (host-local) but their bridge
    /// is gone or down.
    fn reconcile(&self, inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
        reconcile::reconcile(inv, dry_run)
    }

    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, _) = BridgeConf::load(inv)?;
        let ipam = c.ipam.clone();
        let has_nft = || Nft::new(inv.settings()).binary().is_some_and(|p| p.is_file());
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
        let mut host = Netlink::new()?;
        let br = host.link_by_name(&c.br_name)?;
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
        probe::require(inv.settings(), "bridge", &needs)?;
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
            && (self.reservations)(inv.config, inv.version)?;
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

/// The reference's validateInterface: the link a result interface names, which must be in
/// a sandbox or not as expected, in its words.
fn named_link(nl: &mut Netlink, intf: &Interface, in_sandbox: bool) -> Result<Link, CniError> {
    if intf.name.is_empty() {
        return Err(CniError::internal("Interface name missing "));
    }
    let link = nl
        .link_by_name(&intf.name)?
        .ok_or_else(|| CniError::internal(format!("Interface name {} not found", intf.name)))?;
    if in_sandbox && intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "Interface {} is expected to be in a sandbox",
            intf.name
        )));
    }
    if !in_sandbox && !intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "Interface {} should not be in sandbox",
            intf.name
        )));
    }
    Ok(link)
}

fn iface(l: &Link, sandbox: &str) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: l.mac.map(|m| conf::format_mac(&m)).unwrap_or_default(),
        sandbox: sandbox.to_string(),
        ..Default::default()
    }
}

/// The bridge, created if missing (up, accept_ra=0), refused if the name is something
/// else. Errors carry the reference's text ("failed to create bridge ...").
fn ensure_bridge(nl: &mut Netlink, c: &BridgeConf) -> Result<Link, CniError> {
    let name = &c.br_name;
    let fail =
        |inner: String, e: &anyhow::Error| goerr::with_details(format!("failed to create bridge {name:?}: {inner}"), e);
    let existing = nl.link_by_name(name)?;
    let br = match existing {
        Some(l) => l,
        None => {
            match nl.add_bridge(name, c.mtu()) {
                Ok(()) => {}
                // Another ADD made it in the meantime.
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(fail(format!("could not add {name:?}: {}", goerr::errno_text(&e)), &e)),
            }
            nl.link_by_name(name)?.ok_or_else(|| {
                CniError::internal(format!(
                    "failed to create bridge {name:?}: could not lookup {name:?}: Link not found"
                ))
            })?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::internal(format!(
            "failed to create bridge {name:?}: {name:?} already exists but is not a bridge"
        )));
    }
    if c.promisc_mode && !br.promisc {
        nl.set_promisc(br.index, true).map_err(|e| {
            fail(
                format!("could not set promiscuous mode on {name:?}: {}", goerr::errno_text(&e)),
                &e,
            )
        })?;
    }
    // We own the routes of this interface: no router advertisements from pods.
    sysctl::disable_accept_ra(name).map_err(|e| fail(format!("{e:#}"), &e))?;
    if !br.up {
        nl.set_up(br.index).map_err(|e| fail(goerr::errno_text(&e), &e))?;
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
            // An IPAM default route of this family with a gateway stands (whatever the
            // gateway); one without a gateway does not count, as in the reference.
            let present = res.routes.iter().any(|r| {
                r.gw.is_some()
                    && r.dst.network()
                        == IpNet {
                            addr: dst.addr,
                            prefix: 0,
                        }
            });
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
/// forceAddress replaces it. Errors carry the reference's text.
fn ensure_addr(nl: &mut Netlink, br: &Link, gw: &IpNet, force: bool) -> Result<(), CniError> {
    let fail = |inner: String, e: &anyhow::Error| goerr::with_details(format!("failed to set bridge addr: {inner}"), e);
    let v4 = gw.is_ipv4();
    let addrs = nl.addrs(Some(br.index)).map_err(|e| {
        fail(
            format!("could not get list of IP addresses: {}", goerr::errno_text(&e)),
            &e,
        )
    })?;
    for a in addrs.into_iter().filter(|a| a.addr.is_ipv4() == v4) {
        if a.addr.addr == gw.addr && a.addr.prefix == gw.prefix {
            return Ok(());
        }
        if v4 || a.addr.contains(gw.addr) || gw.contains(a.addr.addr) {
            if force {
                nl.del_addr(br.index, &a.addr).map_err(|e| {
                    fail(
                        format!(
                            "could not remove IP address from {:?}: {}",
                            br.name,
                            goerr::errno_text(&e)
                        ),
                        &e,
                    )
                })?;
            } else {
                return Err(CniError::internal(format!(
                    "failed to set bridge addr: {:?} already has an IP address different from {gw}",
                    br.name
                )));
            }
        }
    }
    match nl.add_addr(br.index, gw) {
        Ok(()) => {}
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(fail(
                format!("could not add IP address to {:?}: {}", br.name, goerr::errno_text(&e)),
                &e,
            ))
        }
    }
    // Pin the bridge's MAC, otherwise it follows the lowest port MAC as ports churn. The
    // MAC is the one read before this ADD's veth joined (`br` is that reading), as the
    // reference does: a new bridge keeps the address it was made with and an existing one
    // keeps its own, instead of adopting this pod's host veth MAC.
    // A bridge whose ports all left before it was ever pinned (a rolled-back or failed ADD)
    // reads 00:00:00:00:00:00, which the kernel refuses: then it keeps the address it took
    // from its ports now, as it would have on its first ADD.
    let valid = |m: &[u8; 6]| m.iter().any(|b| *b != 0) && m[0] & 1 == 0;
    let mac = match br.mac.filter(valid) {
        Some(m) => Some(m),
        None => nl
            .link_by_name(&br.name)
            .ok()
            .flatten()
            .and_then(|l| l.mac)
            .filter(valid),
    };
    if let Some(mac) = mac {
        nl.set_mac(br.index, mac)
            .map_err(|e| fail(format!("could not set bridge's mac: {}", goerr::errno_text(&e)), &e))?;
    }
    Ok(())
}
