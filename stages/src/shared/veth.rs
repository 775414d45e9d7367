//! The veth pair every main stage makes: the container end created directly inside the
//! pod netns (by fd, no move), the host end named from the attachment, with accept_ra=0
//! on the host end before it carries traffic (CVE-2020-10749).

use crate::conf;
use crate::kernel::netlink::{errno_of, Link, Netlink};
use crate::kernel::netns::NetNs;
use crate::kernel::sysctl;
use anyhow::{anyhow, Context, Result};
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::IpNet;

pub struct Veth {
    pub host: Link,
    pub cont: Link,
}

/// Create the pair, both ends up, the host end with `alias` (its owner, for GC; see
/// [`crate::kernel::names::owner_alias`]). Fails if `ifname` already exists in the pod.
#[allow(clippy::too_many_arguments)]
pub fn create(
    host_nl: &mut Netlink,
    pod_nl: &mut Netlink,
    pod: &NetNs,
    ifname: &str,
    host_name: &str,
    alias: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> Result<Veth> {
    if pod_nl.link_by_name(ifname)?.is_some() {
        return Err(anyhow!("container veth name provided ({ifname}) already exists"));
    }
    let mut name = host_name.to_string();
    let mut tries = 0;
    loop {
        match host_nl.add_veth(&name, ifname, pod, mtu, mac) {
            Ok(()) => break,
            // The derived name is taken (a stale pair, or a hash collision): use a random one.
            Err(e) if errno_of(&e) == Some(libc::EEXIST) && tries < 4 => {
                if pod_nl.link_by_name(ifname)?.is_some() {
                    return Err(anyhow!("container veth name provided ({ifname}) already exists"));
                }
                tries += 1;
                name = conf::random_veth_name();
            }
            // The reference's text in msg, the operation in details.
            Err(e) => {
                let msg = format!("failed to make veth pair: {}", crate::shared::goerr::errno_text(&e));
                return Err(anyhow::Error::new(crate::shared::goerr::with_details(msg, &e)));
            }
        }
    }
    // From here on a failure removes the pair again (deleting one end deletes both).
    let made = (|| -> Result<Veth> {
        let host = host_nl
            .link_by_name(&name)?
            .ok_or_else(|| anyhow!("veth {name} vanished after creation"))?;
        // Before the link is up; a failure fails the ADD.
        sysctl::disable_accept_ra(&name)?;
        let cont = pod_nl
            .link_by_name(ifname)?
            .ok_or_else(|| anyhow!("veth {ifname} vanished after creation"))?;
        // The reference creates both ends with txqueuelen 0 (netlink's TxQLen 0 is sent).
        host_nl.set_txqlen_alias(host.index, 0, alias)?;
        pod_nl.set_txqlen(cont.index, 0)?;
        pod_nl
            .set_up(cont.index)
            .with_context(|| format!("failed to set {ifname} up"))?;
        host_nl
            .set_up(host.index)
            .with_context(|| format!("failed to set {name} up"))?;
        let host = host_nl.link_by_index(host.index)?.unwrap_or(host);
        let cont = pod_nl.link_by_index(cont.index)?.unwrap_or(cont);
        Ok(Veth { host, cont })
    })();
    if made.is_err() {
        if let Ok(Some(l)) = pod_nl.link_by_name(ifname) {
            let _ = pod_nl.del_link(l.index);
        } else if let Ok(Some(l)) = host_nl.link_by_name(&name) {
            let _ = host_nl.del_link(l.index);
        }
    }
    made
}

/// DEL of the container end: returns its global addresses (for ipMasq teardown) and
/// deletes it, which deletes the pair. The deletion waits ~20 ms in the kernel, so it is
/// deferred (it overlaps the chain's other DEL work; the engine joins it; outside a DEL
/// it runs inline). A missing link is not an error.
pub fn delete_container_end(mut pod_nl: Netlink, ifname: &str) -> Result<Vec<IpNet>> {
    let Some(link) = pod_nl.link_by_name(ifname)? else {
        return Ok(Vec::new());
    };
    let addrs = pod_nl
        .addrs(Some(link.index))?
        .into_iter()
        .filter(|a| a.scope == 0)
        .map(|a| a.addr)
        .collect();
    let name = ifname.to_string();
    cnichain_engine::stage::defer(format!("delete {ifname}"), move || match pod_nl.del_link(link.index) {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(CniError::from(e.context(format!("failed to delete {name}")))),
    })
    .map_err(|e| anyhow!("{e}"))?;
    Ok(addrs)
}

/// A failed ADD's undo of the veth it made: delete the container end (and with it the
/// pair), best effort, over a socket of its own in the pod netns.
pub fn undo_container_end(pod: &NetNs, ifname: &str) {
    if let Ok(pod_nl) = Netlink::new_in(pod) {
        let _ = delete_container_end(pod_nl, ifname);
    }
}

/// The main stages' DEL of the pod side: open the netns and delete the container end,
/// returning its addresses. DEL is best effort: no netns, or one that is already gone
/// (it took the pair with it; see `netns::open_pod_for_del`), is not an error.
/// When the netns path is gone but the namespace lives on (unmounted while a process
/// still holds it), the host end `host_name` outlived the path: it is deleted by name.
pub fn del_pod_end(netns: &str, ifname: &str, host_name: &str) -> std::result::Result<Vec<IpNet>, CniError> {
    match crate::kernel::netns::open_pod_for_del(netns)? {
        Some(pod) => {
            let pod_nl = Netlink::new_in(&pod)?;
            delete_container_end(pod_nl, ifname).map_err(CniError::from)
        }
        None => {
            del_orphaned_host_end(host_name)?;
            Ok(Vec::new())
        }
    }
}

/// For a main stage's DEL: a refusal of the netns (code 4: the caller's own, or one
/// that cannot be told) stops DEL before anything changes; any other failure of the pod
/// side is kept in `first` and DEL goes on with no addresses.
pub fn pod_end_failure(e: CniError, first: &mut Option<CniError>) -> std::result::Result<Vec<IpNet>, CniError> {
    if e.code == cnichain_engine::spec::error::INVALID_ENV {
        return Err(e);
    }
    first.get_or_insert(e);
    Ok(Vec::new())
}

/// Delete the host end of a pair whose pod side can no longer be reached. Only a veth
/// of that name (the name is derived from the attachment, so it is this one's).
fn del_orphaned_host_end(host_name: &str) -> Result<()> {
    let mut host = Netlink::new()?;
    let Some(link) = host.link_by_name(host_name)? else {
        return Ok(());
    };
    if link.kind.as_deref() != Some("veth") {
        return Ok(());
    }
    let name = host_name.to_string();
    cnichain_engine::stage::defer(format!("delete {host_name}"), move || match host.del_link(link.index) {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(CniError::from(e.context(format!("failed to delete {name}")))),
    })
    .map_err(|e| anyhow!("{e}"))
}
