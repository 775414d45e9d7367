//! `cnichain reconcile` for bridge: the attachment's ipMasq and macspoofchk elements,
//! when its host veth still carries cnichain's owner alias (so it is cnichain's and its
//! pod is there). Links, addresses and routes are not firewall state and are left to
//! CHECK.

use super::config::BridgeConf;
use crate::kernel::nft::Nft;
use crate::shared::macspoof;
use crate::shared::masq_restore;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_engine::stage::Invocation;

pub(super) fn reconcile(inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
    let (c, _) = BridgeConf::load(inv)?;
    let Some(prev) = inv.prev_result else {
        return Ok(Vec::new());
    };
    if !c.ip_masq && !c.macspoofchk {
        return Ok(Vec::new());
    }
    let res = prev.to_v1()?;
    let (cid, ifname) = (&inv.rt.container_id, &inv.rt.ifname);
    let nft = Nft::new(inv.settings());
    let Some(veth) = masq_restore::own_host_veth(&res, &c.br_name, "bridge", &c.name, cid, ifname)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if c.ip_masq && c.ipam.is_some() {
        let ips: Vec<IpNet> = res.ips.iter().map(|i| i.address).collect();
        out.extend(masq_restore::reconcile_masq(&nft, &c.name, cid, ifname, &ips, dry_run)?);
    }
    if c.macspoofchk {
        let mac = res
            .interfaces
            .iter()
            .find(|i| !i.sandbox.is_empty() && &i.name == ifname)
            .map(|i| i.mac.clone())
            .unwrap_or_default();
        let owner = macspoof::owner(&c.name, cid, ifname);
        if !mac.is_empty() && macspoof::check(&nft, &owner, &mac).is_err() {
            out.push(format!("macspoofchk of {} (only {mac})", veth.name));
            if !dry_run {
                macspoof::setup(&nft, &veth.name, &mac, &owner).map_err(CniError::from)?;
            }
        }
    }
    Ok(out)
}
