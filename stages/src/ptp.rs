//! The ptp stage: a veth pair whose host end carries the gateway as a /32 (/128) and a
//! host route to the pod, and a container end with the pod address, a link route to the
//! gateway and the subnet routed via it. Behaves as the reference `ptp` plugin.

use crate::conf;
use crate::kernel::netlink::{Link, Netlink, RouteSpec};
use crate::kernel::nft::Nft;
use crate::shared::pods::Reservations;
use crate::shared::undo::Undo;
use crate::shared::{forwarding, ifaddr, ipmasq, veth};
use anyhow::Context;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::spec::result::{CniResult, Interface, Result100};
use cnichain_engine::stage::{Command, Invocation, Stage};
use cnichain_engine::validate::schema::{Role, Schema, Ty, F, IPAM_ARGS, IPAM_RC, MTU};
use serde::Deserialize;

pub struct Ptp {
    /// Whether pods hold addresses in host-local's store (STATUS).
    pub reservations: Reservations,
}

/// The container interface's index in the result: [host veth, container].
const CONT_INDEX: i64 = 1;
/// RT_SCOPE_LINK
const SCOPE_LINK: u8 = 253;
/// RT_SCOPE_HOST: the reference's AddHostRoute
const SCOPE_HOST: u8 = 254;

/// The config, read whole through typed structs; a JSON null is "not set", as in Go.
#[derive(Debug, Deserialize)]
struct PtpConf {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    dns: Option<crate::conf::DnsConf>,
    #[serde(default)]
    ipam: Option<crate::shared::mainconf::IpamRef>,
}

impl PtpConf {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn ip_masq(&self) -> bool {
        self.ip_masq.unwrap_or(false)
    }

    /// None leaves the kernel's MTU (0 or negative, as in Go's netlink).
    fn mtu(&self) -> Option<u32> {
        self.mtu.filter(|m| *m > 0).map(|m| m as u32)
    }
}

fn load(inv: &Invocation) -> Result<(PtpConf, String), CniError> {
    let c: PtpConf = conf::parse(inv.config, "ptp")?;
    if c.mtu.is_some_and(|m| m > u32::MAX as i64) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("ptp: invalid \"mtu\" {:?}", c.mtu),
        ));
    }
    // ptp needs addresses: IPAM is required (the reference's text is its IPAM call's).
    let ipam = crate::shared::mainconf::ipam_type(&c.ipam).ok_or_else(|| {
        CniError::new(INVALID_CONFIG, "no plugin name provided")
            .with_details("ptp needs an \"ipam\" object with a \"type\"")
    })?;
    Ok((c, ipam))
}

fn iface(l: &Link, sandbox: &str) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: l.mac.map(|m| conf::format_mac(&m)).unwrap_or_default(),
        sandbox: sandbox.to_string(),
        ..Default::default()
    }
}

/// A route as Go's netlink prints one in the reference's error texts.
fn go_route(r: &RouteSpec) -> String {
    let or_nil = |x: Option<String>| x.unwrap_or_else(|| "<nil>".into());
    format!(
        "{{Ifindex: {} Dst: {} Src: {} Gw: {} Flags: [] Table: {} Realm: 0}}",
        r.oif.unwrap_or(0),
        or_nil(r.dst.map(|d| d.to_string())),
        or_nil(r.src.map(|a| a.to_string())),
        or_nil(r.gw.map(|a| a.to_string())),
        r.table.unwrap_or(0)
    )
}

/// ptp needs a gateway for every address. The reference fails without one in Go's
/// words: an IPv6 address at its container route (before any host step), an IPv4 one at
/// the host veth's address; the same texts here, before anything is configured.
fn no_gateway(res: &Result100, cont_index: u32) -> Result<(), CniError> {
    let why = "ptp needs a gateway for every address (the IPAM gave none)";
    if let Some(ipc) = res.ips.iter().find(|i| i.gateway.is_none() && !i.address.is_ipv4()) {
        return Err(CniError::internal(format!(
            "failed to add route {{Ifindex: {cont_index} Dst: <nil> Src: {} Gw: <nil> Flags: [] Table: 0 Realm: 0}}: invalid argument",
            ipc.address.addr
        ))
        .with_details(why));
    }
    if res.ips.iter().any(|i| i.gateway.is_none()) {
        return Err(CniError::internal(
            "failed to add IP addr (&net.IPNet{IP:net.IP(nil), Mask:net.IPMask{0xff, 0xff, 0xff, 0xff}}) to veth: numerical result out of range",
        )
        .with_details(why));
    }
    Ok(())
}

fn host_prefix(a: &IpNet) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

impl Stage for Ptp {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&SCHEMA)
    }

    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        let (_, ipam) = load(inv)?;
        inv.preflight_ipam(&ipam)
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let (c, ipam) = load(inv)?;
        let pod = crate::kernel::netns::open_pod_wrapped(&inv.rt.netns)?;
        // The reference runs IPAM first, then builds the link.
        let r = inv
            .delegate(&ipam, Command::Add)?
            .ok_or_else(|| CniError::internal("IPAM returned no result"))?;
        let mut res: Result100 = r.to_v1()?;
        // From here on a failure removes what this ADD made (the reference leaves it):
        // the veth, then (`release` is dropped after `undo`) the IPAM's address.
        let mut release = Undo::new();
        let ipam_ref = &ipam;
        release.push(move || {
            let _ = inv.delegate(ipam_ref, Command::Del);
        });
        let mut undo = Undo::new();
        if res.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config"));
        }
        let gws: Vec<IpNet> = res
            .ips
            .iter()
            .map(|i| IpNet {
                addr: i.gateway.unwrap_or(i.address.addr),
                prefix: i.address.prefix,
            })
            .collect();
        forwarding::enable(&gws).map_err(|e| {
            crate::shared::goerr::with_details(
                format!(
                    "Could not enable IP forwarding: {}",
                    crate::shared::goerr::errno_text(&e)
                ),
                &e,
            )
        })?;
        let mut host = Netlink::new()?;
        let mut pod_nl = Netlink::new_in(&pod)?;
        let pnl = &mut pod_nl;
        let host_name = crate::kernel::names::host_veth_name(c.name(), &inv.rt.container_id, &inv.rt.ifname);
        let alias = crate::kernel::names::owner_alias("ptp", c.name(), &inv.rt.container_id, &inv.rt.ifname);
        let mtu = c.mtu();
        let v = veth::create(&mut host, pnl, &pod, &inv.rt.ifname, &host_name, &alias, mtu, None)?;
        let (pod_ref, ifname) = (&pod, inv.rt.ifname.as_str());
        undo.push(move || veth::undo_container_end(pod_ref, ifname));
        no_gateway(&res, v.cont.index)?;
        for ipc in res.ips.iter_mut() {
            ipc.interface = Some(CONT_INDEX);
        }
        res.interfaces = vec![iface(&v.host, ""), iface(&v.cont, &inv.rt.netns)];
        ifaddr::configure(pnl, &pod, &inv.rt.ifname, v.cont.index, CONT_INDEX, &res)?;
        for ipc in &res.ips {
            let Some(gw) = ipc.gateway else { continue };
            let hp = host_prefix(&ipc.address);
            let v6 = !ipc.address.is_ipv4();
            // Replace the kernel's subnet route with a link route to the gateway and
            // the subnet routed via it.
            let subnet = ipc.address.network();
            let kernel_route = RouteSpec {
                dst: Some(subnet),
                oif: Some(v.cont.index),
                v6,
                ..Default::default()
            };
            pnl.del_route(&kernel_route)
                .with_context(|| format!("failed to delete route {subnet}"))?;
            let to_gw = RouteSpec {
                dst: Some(IpNet { addr: gw, prefix: hp }),
                oif: Some(v.cont.index),
                scope: Some(SCOPE_LINK),
                src: Some(ipc.address.addr),
                v6,
                ..Default::default()
            };
            let via_gw = RouteSpec {
                dst: Some(subnet),
                gw: Some(gw),
                oif: Some(v.cont.index),
                src: Some(ipc.address.addr),
                v6,
                ..Default::default()
            };
            for r in [to_gw, via_gw] {
                pnl.add_route(&r).map_err(|e| {
                    let msg = format!(
                        "failed to add route {}: {}",
                        go_route(&r),
                        crate::shared::goerr::errno_text(&e)
                    );
                    anyhow::Error::new(crate::shared::goerr::with_details(msg, &e))
                })?;
            }
        }
        // Host side: the gateway as /32 on the host veth, and a route to the pod.
        for ipc in &res.ips {
            let Some(gw) = ipc.gateway else { continue };
            let hp = host_prefix(&ipc.address);
            let g = IpNet { addr: gw, prefix: hp };
            match host.add_addr(v.host.index, &g) {
                Ok(()) => {}
                Err(e) if crate::kernel::netlink::errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(CniError::from(e.context(format!("failed to add IP addr {g} to veth")))),
            }
            let to_pod = RouteSpec {
                dst: Some(IpNet {
                    addr: ipc.address.addr,
                    prefix: hp,
                }),
                oif: Some(v.host.index),
                scope: Some(SCOPE_HOST),
                v6: !ipc.address.is_ipv4(),
                ..Default::default()
            };
            match host.add_route(&to_pod) {
                Ok(()) => {}
                Err(e) if crate::kernel::netlink::errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(crate::shared::goerr::with_details(
                        format!("failed to add route on host: {}", crate::shared::goerr::errno_text(&e)),
                        &e,
                    ))
                }
            }
        }
        if c.ip_masq() {
            let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
            ipmasq::setup(
                &Nft::new(inv.settings()),
                c.name(),
                &inv.rt.container_id,
                &inv.rt.ifname,
                &ips,
            )?;
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
        let (c, ipam) = load(inv)?;
        // DEL goes on past a failure (the IPAM release above all), and returns the first.
        let mut first: Option<CniError> = None;
        let mut ips: Vec<IpNet> = veth::del_pod_end(
            &inv.rt.netns,
            &inv.rt.ifname,
            &crate::kernel::names::host_veth_name(c.name(), &inv.rt.container_id, &inv.rt.ifname),
        )
        .or_else(|e| veth::pod_end_failure(e, &mut first))?;
        if let Err(e) = inv.delegate(&ipam, Command::Del) {
            first.get_or_insert(e);
        }
        if c.ip_masq() {
            if ips.is_empty() {
                if let Some(Ok(p)) = inv.prev_result.map(|p| p.to_v1()) {
                    ips = p.ips.iter().map(|i| i.address).collect();
                }
            }
            if let Err(e) = ipmasq::teardown_deferred(
                &Nft::new(inv.settings()),
                c.name(),
                &inv.rt.container_id,
                &inv.rt.ifname,
                ips,
            ) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The reference's checks, in its order and words: the container interface named in
    /// prevResult, then addresses and routes.
    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let (c, ipam) = load(inv)?;
        let netns = &inv.rt.netns;
        let pod = crate::kernel::netns::open_pod_wrapped(netns)?;
        inv.delegate(&ipam, Command::Check)?;
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::invalid_config("ptp: Required prevResult missing"))?;
        let res = prev.to_v1()?;
        let none = Interface::default();
        let cont_if = res
            .interfaces
            .iter()
            .find(|i| i.name == inv.rt.ifname && &i.sandbox == netns)
            .unwrap_or(&none);
        let fail = |m: String| CniError::internal(m);
        if *netns != cont_if.sandbox {
            return Err(fail(format!(
                "Sandbox in prevResult {} doesn't match configured netns: {netns}",
                cont_if.sandbox
            )));
        }
        if cont_if.name.is_empty() {
            return Err(fail("Container interface name missing in prevResult: ".into()));
        }
        let mut pod_nl = Netlink::new_in(&pod)?;
        let cont = pod_nl.link_by_name(&cont_if.name)?.ok_or_else(|| {
            fail(format!(
                "ptp: Container Interface name in prevResult: {} not found",
                cont_if.name
            ))
        })?;
        if cont.kind.as_deref() != Some("veth") {
            return Err(fail(format!(
                "Error: Container interface {} not of type veth/p2p",
                cont.name
            )));
        }
        let mac = cont.mac.map(|m| conf::format_mac(&m)).unwrap_or_default();
        if !cont_if.mac.is_empty() && cont_if.mac != mac {
            return Err(fail(format!(
                "ptp: Interface {} Mac {} doesn't match container Mac: {mac}",
                cont_if.name, cont_if.mac
            )));
        }
        ifaddr::check_addrs(&mut pod_nl, &inv.rt.ifname, cont.index, CONT_INDEX, &res)?;
        ifaddr::check_routes(&mut pod_nl, &inv.rt.ifname, cont.index, &res)?;
        if c.ip_masq() {
            let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
            ipmasq::check(c.name(), &inv.rt.container_id, &inv.rt.ifname, &ips)?;
        }
        Ok(())
    }

    /// The masquerading and host veths of attachments the runtime no longer lists
    /// (cached or not; a veth is still there when its pod netns is), then the IPAM's GC.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        let (_, ipam) = load(inv)?;
        let mut errors = Vec::new();
        if let Some(valid) = crate::shared::gc::ValidSet::from_config(inv.config)? {
            errors.extend(ipmasq::gc(&Nft::new(inv.settings()), &valid).err());
            errors.extend(crate::shared::gc::links(&valid, "veth", "ptp").err());
        }
        errors.extend(inv.delegate(&ipam, Command::Gc).err());
        crate::shared::gc::join(errors)
    }

    /// 50 when ADD cannot work (the IPAM cannot allocate, `nft` is missing for ipMasq,
    /// the kernel lacks a feature ADD uses); 51 when pods hold addresses (host-local) but
    /// the forwarding ADD turned on is off again.
    /// The attachment's masquerading, when its host veth is still cnichain's.
    fn reconcile(&self, inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
        let (c, _) = load(inv)?;
        let Some(prev) = inv.prev_result.filter(|_| c.ip_masq()) else {
            return Ok(Vec::new());
        };
        let res = prev.to_v1()?;
        let (cid, ifname) = (&inv.rt.container_id, &inv.rt.ifname);
        if crate::shared::masq_restore::own_host_veth(&res, "", "ptp", c.name(), cid, ifname)?.is_none() {
            return Ok(Vec::new());
        }
        let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
        crate::shared::masq_restore::reconcile_masq(
            &crate::kernel::nft::Nft::new(inv.settings()),
            c.name(),
            cid,
            ifname,
            &ips,
            dry_run,
        )
    }

    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        use crate::kernel::probe::{self, Feature};
        let (c, ipam) = load(inv)?;
        if c.ip_masq() && !Nft::new(inv.settings()).binary().is_some_and(|p| p.is_file()) {
            return Err(CniError::new(
                cnichain_engine::spec::error::PLUGIN_NOT_AVAILABLE,
                "ptp: ipMasq needs nft, which was not found (install nftables)",
            ));
        }
        inv.delegate(&ipam, Command::Status)?;
        let mut needs = vec![(Feature::Veth, "the pods' veth pairs")];
        if c.ip_masq() {
            needs.push((Feature::NftInet, "ipMasq"));
        }
        probe::require(inv.settings(), "ptp", &needs)?;
        forwarding_status(inv, c.name(), &ipam, self.reservations)
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

/// STATUS's 51: ADD turned forwarding on for the families of the pods' gateways (in the
/// host netns, where STATUS runs); off again, those pods cannot reach beyond the host.
/// Pods are known only through an in-process host-local store.
fn forwarding_status(inv: &Invocation, net: &str, ipam: &str, reservations: Reservations) -> Result<(), CniError> {
    let pods =
        ipam == "host-local" && inv.registry.is_in_process("host-local") && reservations(inv.config, inv.version)?;
    if !pods {
        return Ok(());
    }
    let (v4, v6) = ipam_families(inv.config);
    for (used, key) in [(v4, "net.ipv4.ip_forward"), (v6, "net.ipv6.conf.all.forwarding")] {
        if used && crate::kernel::sysctl::read(key).is_ok_and(|v| v.trim() == "0") {
            return Err(CniError::new(
                cnichain_engine::spec::error::LIMITED_CONNECTIVITY,
                format!(
                    "ptp: {key} is 0 while network {net:?} has pods: they lost connectivity beyond the host (ADD turns it back on)"
                ),
            ));
        }
    }
    Ok(())
}

/// The address families (v4, v6) of the IPAM's subnets (`ipam.ranges`, or the legacy
/// `ipam.subnet`), read from the config without allocating anything; IPv4 when it names
/// none (another IPAM's layout, or one this reading does not understand).
fn ipam_families(config: &serde_json::Map<String, serde_json::Value>) -> (bool, bool) {
    #[derive(Deserialize, Default)]
    struct Subnet {
        #[serde(default)]
        subnet: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Ipam {
        #[serde(default)]
        subnet: Option<String>,
        #[serde(default)]
        ranges: Option<Vec<Vec<Subnet>>>,
    }
    #[derive(Deserialize, Default)]
    struct Conf {
        #[serde(default)]
        ipam: Option<Ipam>,
    }
    let c: Conf = conf::parse(config, "ptp").unwrap_or_default();
    let ipam = c.ipam.unwrap_or_default();
    let mut subnets: Vec<String> = ipam.subnet.into_iter().collect();
    for set in ipam.ranges.unwrap_or_default() {
        subnets.extend(set.into_iter().filter_map(|r| r.subnet));
    }
    if subnets.is_empty() {
        return (true, false);
    }
    (
        subnets.iter().any(|s| !s.contains(':')),
        subnets.iter().any(|s| s.contains(':')),
    )
}

/// The keys the ptp plugin reads (1.1.1, plus upstream's `ipMasqBackend`).
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[
        F("ipMasq", Ty::Bool),
        F("ipMasqBackend", Ty::Enum(crate::shared::mainconf::MASQ_BACKENDS)),
        F("mtu", MTU),
        F("args", Ty::Open(IPAM_ARGS)),
        F("runtimeConfig", Ty::Open(IPAM_RC)),
    ],
};

/// The schema `cnichain validate` uses declares the keys this loader reads.
#[cfg(test)]
mod schema_matches_loader {
    use super::*;
    use crate::tests::schema_conformance::assert_schema;

    #[test]
    fn ptp() {
        // ipMasqBackend: upstream's (1.9) choice of masquerade tool, which the 1.1.1
        // reference ignores and so does cnichain (always nftables); args and runtimeConfig
        // carry what the IPAM reads (ips, ipRanges), not ptp.
        assert_schema::<PtpConf>(&SCHEMA, &[], &["ipMasqBackend", "args", "runtimeConfig"]);
    }
}
