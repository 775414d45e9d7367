//! Finding the host side of the container interface, as the reference's
//! `getHostInterface` does: the container interface's veth peer, looked up by ifindex in
//! the host netns, must be an interface of prevResult without a sandbox.

use crate::kernel::netlink::{Link, Netlink};
use crate::kernel::netns::NetNs;
use anyhow::{anyhow, bail, Result};
use cnichain_engine::spec::result::Result100;

/// The host veth of `ifname` (a link in `pod`), seen through `host` (a socket in the
/// netns this stage runs in).
pub fn host_veth(pod: &NetNs, host: &mut Netlink, prev: &Result100, ifname: &str) -> Result<Link> {
    if prev.interfaces.is_empty() {
        bail!("no interfaces provided");
    }
    let mut pod_nl = Netlink::new_in(pod)?;
    let cont = pod_nl.link_by_name(ifname)?;
    // the reference's messages (ip.GetVethPeerIfindex's inside getHostInterface's)
    let (cont_index, peer) = match &cont {
        Some(l) if l.kind.as_deref() == Some("veth") => (l.index, l.peer_index),
        Some(_) => {
            bail!("container interface {ifname} has no veth peer: interface {ifname:?} was not a veth interface")
        }
        None => bail!("container interface {ifname} has no veth peer: could not look up {ifname:?}: Link not found"),
    };
    let Some(peer) = peer else {
        bail!("container interface {ifname} has no veth peer: unable to get veth peer index");
    };
    let link = host
        .link_by_index(peer)?
        .filter(|l| l.kind.as_deref() == Some("veth") && l.peer_index.is_none_or(|p| p == cont_index))
        .ok_or_else(|| anyhow!("veth peer with index {peer} is not in host ns"))?;
    if prev
        .interfaces
        .iter()
        .any(|i| i.sandbox.is_empty() && i.name == link.name)
    {
        Ok(link)
    } else {
        bail!("no veth peer of container interface found in host ns")
    }
}
