//! `cnichain reconcile` for the parts bridge and ptp share: the attachment's ipMasq
//! elements and records (and the fixed objects of `table inet cnichain` they rely on),
//! and finding the host veth that proves the attachment is cnichain's (its owner alias;
//! the reference plugins set none).

use crate::kernel::netlink::{Link, Netlink};
use crate::kernel::nft::netlink::Nfnl;
use crate::kernel::nft::restore;
use crate::shared::ipmasq;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::{format_ip, IpNet};
use cnichain_engine::spec::result::Result100;

/// The host veth of the attachment listed in `res` (no sandbox, not `skip`), if it carries
/// the owner alias stage `kind` gives it.
pub fn own_host_veth(
    res: &Result100,
    skip: &str,
    kind: &str,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Link>, CniError> {
    let alias = crate::kernel::names::owner_alias(kind, network, container_id, ifname);
    let mut host = Netlink::new().map_err(CniError::from)?;
    for i in res.interfaces.iter().filter(|i| i.sandbox.is_empty() && i.name != skip) {
        if let Some(l) = host.link_by_name(&i.name).map_err(CniError::from)? {
            if l.alias == alias {
                return Ok(Some(l));
            }
        }
    }
    Ok(None)
}

/// Restore the masquerading of `ips` for the attachment; one line per thing restored.
pub fn reconcile_masq(
    nft: &crate::kernel::nft::Nft,
    network: &str,
    container_id: &str,
    ifname: &str,
    ips: &[IpNet],
    dry_run: bool,
) -> Result<Vec<String>, CniError> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    let mut nl = Nfnl::open().map_err(|e| CniError::internal(format!("ipMasq: nfnetlink: {e}")))?;
    let chains = restore::missing_fixed(&mut nl).map_err(|e| CniError::internal(format!("ipMasq: nfnetlink: {e}")))?;
    let mut out = Vec::new();
    if !chains.is_empty() {
        out.push(format!(
            "nftables table inet {} (fixed rules of {})",
            crate::kernel::nft::layout::TABLE,
            chains.join(", ")
        ));
    }
    let elements_ok = ipmasq::check(network, container_id, ifname, ips).is_ok();
    if !elements_ok {
        let list: Vec<String> = ips
            .iter()
            .map(|n| format!("{}/{}", format_ip(&n.addr), n.mask_len()))
            .collect();
        out.push(format!("masquerade of {}", list.join(", ")));
    }
    if out.is_empty() || dry_run {
        return Ok(out);
    }
    if !chains.is_empty() {
        restore::restore_fixed(nft)
            .map_err(|e| CniError::internal(format!("ipMasq: restoring the nftables table: {e}")))?;
    }
    if !elements_ok {
        ipmasq::setup(nft, network, container_id, ifname, ips).map_err(CniError::from)?;
    }
    Ok(out)
}
