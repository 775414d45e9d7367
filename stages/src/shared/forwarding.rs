//! Forwarding on the host for the families of a pod's gateways, as bridge (isGateway)
//! and ptp turn it on: written only when not on already.

use crate::kernel::sysctl;
use cnichain_engine::spec::ipnet::IpNet;

/// IPv4 forwarding when a gateway is IPv4, IPv6 forwarding when one is IPv6.
pub fn enable(gws: &[IpNet]) -> anyhow::Result<()> {
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
