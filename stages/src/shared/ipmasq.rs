//! ipMasq for bridge and ptp: masquerade traffic from a pod's address to anything
//! outside that address's own subnet, except multicast (224.0.0.0/4, ff00::/8), as the
//! reference's iptables and nftables backends do.
//!
//! Layout (see [`crate::kernel::nft::layout`]): each of the attachment's addresses is two hash-set
//! elements and no rule of its own:
//!
//! ```text
//! mq-src4: 10.88.0.5                                  comment "<id> 10.88.0.5/16 <hint>"
//! mq-own4: 10.88.0.5 . 10.88.0.0 . 10.88.255.255      comment "<id> <hint>"
//! records: "<id>" . 0                                 comment "net <network hash>"
//! records: "<id>" . 1                                 comment "ipmasq 10.88.0.5/16"
//! ```
//!
//! and postrouting does `ip daddr 224.0.0.0/4 return; ip saddr @mq-src4 jump mq-own-v4`
//! (one rule per prefix length in use: `ip saddr . ip daddr & mask . ip daddr | ~mask
//! @mq-own4 accept`), then `ip saddr @mq-src4 masquerade`.
//!
//! Adding or removing one attachment adds or removes only its elements and records: one
//! transaction, nothing of another pod is listed or rewritten. It is an nfnetlink element
//! batch (no process) unless the rule for the address's prefix length is not there yet;
//! then it runs through `nft` once (see [`crate::kernel::nft::apply_pod`]). The records hold the
//! addresses, so `teardown` works with no addresses passed (netns gone, no cached
//! result). An element belongs to the attachment whose id its comment starts with:
//! teardown deletes only its own elements (read back over nfnetlink first), and setup
//! takes over an address another attachment still holds (the address was handed out
//! again), so a late teardown of the old holder cannot remove the new holder's
//! masquerade. GC finds the attachments of a network by their first record.
//!
//! Everything runs in the calling thread's network namespace (the host's).

use crate::kernel::nft::expr::Family;
use crate::kernel::nft::layout::{self, Elem};
use crate::kernel::nft::netlink::Nfnl;
use crate::kernel::nft::{self, masq, records, Batch, Nft, NftErrorKind};
use crate::shared::gc::{self, ValidSet};
use anyhow::{anyhow, bail, Context};
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::IpNet;

const RECORD: &str = "ipmasq";

/// The attachment's owner id (see [`records`]): `m` and 14 hex digits.
pub fn owner_id(network: &str, container_id: &str, ifname: &str) -> String {
    records::owner_id('m', "ipmasq", network, container_id, ifname)
}

/// Install masquerading for `ips` of this attachment (re-running it replaces what an
/// earlier setup of the same attachment installed).
pub fn setup(nft: &Nft, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let id = owner_id(network, container_id, ifname);
    let ips = dedup(ips);
    let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
    let (old, old_count) = recorded(&mut nl, &id)?;
    if ips.is_empty() && old_count == 0 {
        return Ok(());
    }
    let mut b = Batch::new();
    let rules: Vec<_> = ips
        .iter()
        .map(|n| masq::mq_own_rule(Family::of(&n.addr), n.mask_len()))
        .collect();
    layout::ensure_rules(&mut nl, &mut b, &rules).context("ipMasq: nfnetlink")?;

    let mut gone: Vec<Elem> = Vec::new();
    // Addresses of an earlier setup that this one drops: only what is still ours.
    for o in old.iter().filter(|o| !ips.iter().any(|n| n.addr == o.addr)) {
        for e in [masq::mq_src_elem(o.addr), masq::mq_own_elem(o)] {
            if !gone.contains(&e) && records::owned_by(&mut nl, &e, &id).context("ipMasq: nfnetlink")? {
                b.delete_elem(&e);
                gone.push(e);
            }
        }
    }
    let hint = layout::hint(network, container_id, ifname);
    for n in &ips {
        // Whoever holds the address now (us from an earlier setup, or an attachment it
        // was handed out to before) gives it up, with the exemption recorded with it.
        let src = masq::mq_src_elem(n.addr);
        let mut own = vec![masq::mq_own_elem(n)];
        if let Some(info) = src.get(&mut nl).context("ipMasq: nfnetlink")? {
            if info.owner() != id {
                tracing::warn!(
                    "ipMasq: {} was masqueraded for {}; taking it over for {id}",
                    n.addr,
                    info.comment
                );
            }
            if let Some(prev) = info
                .comment
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse::<IpNet>().ok())
            {
                own.insert(0, masq::mq_own_elem(&prev));
            }
            if !gone.contains(&src) {
                b.delete_elem(&src);
                gone.push(src.clone());
            }
        }
        for e in own {
            if !gone.contains(&e) && e.get(&mut nl).context("ipMasq: nfnetlink")?.is_some() {
                b.delete_elem(&e);
                gone.push(e);
            }
        }
    }
    records::remove(&mut b, &id, old_count);
    for n in &ips {
        let net = format!("{}/{}", cnichain_engine::spec::ipnet::format_ip(&n.addr), n.mask_len());
        b.create_elem(
            &masq::mq_src_elem(n.addr),
            None,
            &records::comment(&id, &format!("{net} {hint}")),
        );
        b.create_elem(&masq::mq_own_elem(n), None, &records::comment(&id, &hint));
    }
    let recs: Vec<String> = ips.iter().map(record).collect();
    records::write(&mut b, &id, network, &recs).map_err(|e| anyhow!("ipMasq: {e}"))?;
    nft::apply_pod(nft, &mut nl, &b).map_err(|e| anyhow!("ipMasq setup for {}: {e}", join(&ips)))
}

/// Remove this attachment's masquerading. `ips` may be empty: the addresses are read
/// back from the attachment's records. Succeeds when nothing is left (also twice).
pub fn teardown(nft: &Nft, network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    teardown_id(nft, &owner_id(network, container_id, ifname), ips)
}

/// ipMasq teardown waits in the kernel (the nftables commit, or an nft process's exit when
/// it needs one): let it overlap the chain's other DEL work (joined by the engine; inline
/// outside a DEL).
pub fn teardown_deferred(
    nft: &Nft,
    net: &str,
    container_id: &str,
    ifname: &str,
    ips: Vec<IpNet>,
) -> Result<(), CniError> {
    let (net, cid, ifname) = (net.to_string(), container_id.to_string(), ifname.to_string());
    let nft = nft.clone();
    cnichain_engine::stage::defer("ipMasq", move || {
        teardown(&nft, &net, &cid, &ifname, &ips).map_err(CniError::from)
    })
}

/// GC: remove the masquerading of every attachment of the network that the valid set
/// does not list (found by their network record).
pub fn gc(nft: &Nft, valid: &ValidSet) -> Result<(), CniError> {
    let keep: std::collections::HashSet<String> = valid.keys(owner_id).into_iter().collect();
    let mut nl = Nfnl::open().map_err(|e| CniError::internal(format!("ipMasq: nfnetlink: {e}")))?;
    let owners = records::owners_of(&mut nl, 'm', &valid.network)
        .map_err(|e| CniError::internal(format!("ipMasq: nfnetlink: {e}")))?;
    gc::each_stale(owners.iter().filter(|id| !keep.contains(*id)), |id| {
        tracing::debug!(network = %valid.network, id = %id, "ipMasq gc: removing stale masquerading");
        teardown_id(nft, id, &[]).map_err(|e| CniError::internal(format!("{e:#}")))
    })
}

fn teardown_id(nft: &Nft, id: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let id = id.to_string();
    let mut last = None;
    // A concurrent change between our reads and the transaction shows up as ENOENT;
    // read again and retry once.
    for _ in 0..2 {
        let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
        let (rec, count) = recorded(&mut nl, &id)?;
        // The recorded prefix is the one the elements were made with.
        let mut all = rec;
        for n in dedup(ips) {
            if !all.iter().any(|r| r.addr == n.addr) {
                all.push(n);
            }
        }
        let mut b = Batch::new();
        let mut gone: Vec<Elem> = Vec::new();
        for n in &all {
            for e in [masq::mq_src_elem(n.addr), masq::mq_own_elem(n)] {
                if !gone.contains(&e) && records::owned_by(&mut nl, &e, &id).context("ipMasq: nfnetlink")? {
                    b.delete_elem(&e);
                    gone.push(e);
                }
            }
        }
        records::remove(&mut b, &id, count);
        match nft::apply_on(nft, &mut nl, &b) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.kind, NftErrorKind::NotFound | NftErrorKind::Busy) => last = Some(e),
            Err(e) => return Err(anyhow!("ipMasq teardown: {e}")),
        }
    }
    Err(anyhow!(
        "ipMasq teardown: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Verify that every address of `ips` is masqueraded for this attachment.
pub fn check(network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let id = owner_id(network, container_id, ifname);
    let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
    let (rec, _) = recorded(&mut nl, &id)?;
    for n in dedup(ips) {
        if !rec.iter().any(|r| r.addr == n.addr && r.network() == n.network()) {
            bail!("ipMasq: no record of {n} for {network}/{container_id}/{ifname}");
        }
        for e in [masq::mq_src_elem(n.addr), masq::mq_own_elem(&n)] {
            if !records::owned_by(&mut nl, &e, &id).context("ipMasq: nfnetlink")? {
                bail!(
                    "ipMasq: {} is not masqueraded for this attachment (no element of its own in {})",
                    n,
                    e.set
                );
            }
        }
        let r = masq::mq_own_rule(Family::of(&n.addr), n.mask_len());
        if !layout::has_rule(&mut nl, &r).context("ipMasq: nfnetlink")? {
            bail!("ipMasq: rule \"{}\" is missing from chain {}", r.comment, r.chain);
        }
    }
    Ok(())
}

fn record(n: &IpNet) -> String {
    format!(
        "{RECORD} {}/{}",
        cnichain_engine::spec::ipnet::format_ip(&n.addr),
        n.mask_len()
    )
}

/// The addresses in the records, and how many records there are.
fn recorded(nl: &mut Nfnl, id: &str) -> anyhow::Result<(Vec<IpNet>, usize)> {
    let recs = records::read(nl, id).context("ipMasq: nfnetlink")?;
    let nets: Vec<IpNet> = recs
        .iter()
        .filter_map(|c| c.strip_prefix(RECORD).and_then(|r| r.trim().parse::<IpNet>().ok()))
        .collect();
    Ok((dedup(&nets), recs.len()))
}

/// Unique by address, the first prefix wins; addresses as the kernel compares them.
fn dedup(ips: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in ips {
        let n = match IpNet::new(cnichain_engine::spec::ipnet::unmap(n.addr), n.mask_len()) {
            Some(x) => x,
            None => *n,
        };
        if !out.iter().any(|o| o.addr == n.addr) {
            out.push(n);
        }
    }
    out
}

fn join(ips: &[IpNet]) -> String {
    ips.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_records() {
        let c = owner_id("net", "cid", "eth0");
        assert_eq!(c.len(), 15);
        assert!(c.starts_with('m') && layout::is_plain_name(&c));
        assert_ne!(c, owner_id("net", "cid", "eth1"));
        let n: IpNet = "10.1.0.5/16".parse().unwrap();
        assert_eq!(record(&n), "ipmasq 10.1.0.5/16");
        let v6: IpNet = "fd00::5/64".parse().unwrap();
        assert_eq!(record(&v6), "ipmasq fd00::5/64");
        let d = dedup(&[
            "10.1.0.5/16".parse().unwrap(),
            "10.1.0.5/24".parse().unwrap(),
            "::ffff:10.1.0.6/120".parse().unwrap(),
        ]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].mask_len(), 16);
        assert_eq!(d[1].to_string(), "10.1.0.6/24");
    }

    #[test]
    fn elements_per_address() {
        let n: IpNet = "10.1.0.5/16".parse().unwrap();
        assert_eq!(masq::mq_src_elem(n.addr).set, layout::SET_MQ_SRC4);
        let own = masq::mq_own_elem(&n);
        assert_eq!(own.set, layout::SET_MQ_OWN4);
        assert_eq!(own.kernel_key(), vec![10, 1, 0, 5, 10, 1, 0, 0, 10, 1, 255, 255]);
        let r = masq::mq_own_rule(Family::V4, 16);
        assert_eq!((r.chain, r.comment.as_str()), (layout::CHAIN_MQ_OWN4, "own /16"));
    }
}
