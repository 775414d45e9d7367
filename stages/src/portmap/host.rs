//! What portmap changes on the host besides nftables: `route_localnet` on the interface
//! that routes to the container (so that a connection to 127.0.0.1:hostPort, DNATed to
//! the pod, may leave with a 127/8 source before it is masqueraded), and the flush of
//! stale UDP conntrack entries for newly mapped host ports. Both act on the calling
//! thread's network namespace.

use super::config::Mapping;
use crate::kernel::netlink::Netlink;
use crate::kernel::nft::conntrack;
use crate::kernel::nft::expr::{Family, Proto};
use crate::kernel::sysctl;
use anyhow::Context;
use cnichain_engine::spec::ipnet::IpNet;

/// The interface the main routing table uses for `pod` (longest prefix, then lowest
/// metric), as the reference's `RouteGet` finds it: the bridge for bridge pods, the host
/// veth for ptp pods.
fn routing_interface(pod: &IpNet) -> anyhow::Result<Option<String>> {
    let mut nl = Netlink::new()?;
    let routes = nl.routes(pod.is_ipv6())?;
    let best = routes
        .iter()
        .filter(|r| r.oif.is_some() && r.dst.is_none_or(|d| d.contains(pod.addr)))
        .max_by_key(|r| {
            (
                r.dst.map(|d| d.mask_len()).unwrap_or(0),
                std::cmp::Reverse(r.priority.unwrap_or(0)),
            )
        });
    let Some(oif) = best.and_then(|r| r.oif) else {
        return Ok(None);
    };
    Ok(nl.link_by_index(oif)?.map(|l| l.name))
}

/// Set `net.ipv4.conf.<if>.route_localnet=1` on the interface that routes to `pod` (an
/// IPv4 address); nothing when no route leads there, as in the reference.
pub fn enable_route_localnet(pod: &IpNet) -> anyhow::Result<()> {
    let Some(ifname) = routing_interface(pod).context("portmap: failed to find the host interface of the pod")? else {
        return Ok(());
    };
    // The slashed form: an interface name may contain dots.
    sysctl::write(&format!("net/ipv4/conf/{ifname}/route_localnet"), "1")
        .with_context(|| format!("portmap: unable to enable route_localnet on {ifname}"))
}

/// Delete UDP conntrack entries whose original destination port is one of the mapped
/// UDP host ports, for each family the container has an address in. Failures are only
/// logged, as in the reference.
pub fn flush_udp_conntrack(mappings: &[Mapping], v4: bool, v6: bool) {
    let mut ports: Vec<u16> = mappings
        .iter()
        .filter(|m| m.proto == Proto::Udp)
        .map(|m| m.host_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return;
    }
    // The dump walks the kernel's whole conntrack hash (~13 ms with the default size, for
    // any number of entries); a netns without entries has nothing to flush.
    if sysctl::read("net.netfilter.nf_conntrack_count").is_ok_and(|n| n.trim() == "0") {
        return;
    }
    for (f, has) in [(Family::V4, v4), (Family::V6, v6)] {
        if !has {
            continue;
        }
        match conntrack::delete_udp_by_dport(f, &ports) {
            Ok(n) if n > 0 => tracing::debug!("portmap: deleted {n} stale UDP conntrack entries ({})", f.nfproto()),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "portmap: failed to delete stale UDP conntrack entries ({}): {e}",
                f.nfproto()
            ),
        }
    }
}
