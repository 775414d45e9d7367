//! ipMasq for bridge and ptp: masquerade traffic from a pod's address to anything
//! outside that address's own subnet, except multicast (224.0.0.0/4, ff00::/8), as the
//! reference's iptables and nftables backends do.
//!
//! Layout (see [`crate::nft::layout`]): the postrouting chain looks the packet's source
//! up in `masq4` / `masq6`; each of this attachment's addresses is an element there that
//! goes to the attachment's own chain `mq-<hash(network, container, ifname)>`:
//!
//! ```text
//! chain mq-<hash> {
//!     ip saddr 10.88.0.5 ip daddr 10.88.0.0/16 return   comment "ipmasq 10.88.0.5/16"
//!     ip daddr 224.0.0.0/4 return
//!     masquerade
//! }
//! ```
//!
//! Adding or removing one attachment adds or removes only its chain and its elements:
//! one nft transaction, nothing of another pod is listed or rewritten. The rule comments
//! record the addresses, so `teardown` works with no addresses passed (netns gone, no
//! cached result). An element belongs to the attachment whose chain it points at:
//! teardown deletes only elements that point at its own chain (read over nfnetlink
//! first), and setup takes over an element left pointing at another chain (the address
//! was handed out again), so a late teardown of the old holder cannot remove the new
//! holder's masquerade.
//!
//! Everything runs in the calling thread's network namespace (the host's).

use crate::conf;
use crate::nft::expr::{self, Family};
use crate::nft::layout::{self, ElemKey, Verdict};
use crate::nft::netlink::{self, Nfnl};
use crate::nft::{self, Batch, NftErrorKind};
use anyhow::{anyhow, bail, Context};
use cnichain_engine::spec::ipnet::IpNet;
use std::collections::BTreeSet;

const RECORD: &str = "ipmasq";

/// The attachment's chain: `mq-` and 20 hex digits of sha512(network, container, ifname).
pub fn chain_name(network: &str, container_id: &str, ifname: &str) -> String {
    let h = conf::hash_hex(&["ipmasq", "\0", network, "\0", container_id, "\0", ifname]);
    format!("mq-{}", &h[..20])
}

/// Install masquerading for `ips` of this attachment (re-running it replaces what an
/// earlier setup of the same attachment installed).
pub fn setup(network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let chain = chain_name(network, container_id, ifname);
    let ips = dedup(ips);
    let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
    let existed = netlink::chain_exists(&mut nl, layout::TABLE, &chain).context("ipMasq: nfnetlink")?;
    if ips.is_empty() && !existed {
        return Ok(());
    }
    let old = if existed {
        recorded(&mut nl, &chain)?
    } else {
        Vec::new()
    };
    let ours = Verdict::Goto(chain.clone());
    let mut b = Batch::new();
    b.add(layout::chain(&chain));
    if existed {
        b.flush(layout::chain(&chain));
    }
    for r in chain_rules(&ips) {
        b.add(layout::rule(&chain, r.0, r.1.as_deref()));
    }
    for o in &old {
        if !ips.iter().any(|n| n.addr == o.addr) && points_here(&mut nl, &ElemKey::Masq(o.addr), &ours)? {
            b.delete(layout::element_key(&ElemKey::Masq(o.addr)));
        }
    }
    let comment = element_comment(network, container_id, ifname);
    for n in &ips {
        let key = ElemKey::Masq(n.addr);
        if let Some((code, target)) = verdict(&mut nl, &key)? {
            if !ours.matches(code, &target) {
                tracing::warn!(
                    "ipMasq: {} was masqueraded through {target}; taking it over for {chain}",
                    n.addr
                );
                b.delete(layout::element_key(&key));
            }
        }
        b.add(layout::element(&key, &ours, Some(&comment)));
    }
    nft::apply_pod(&b, None).map_err(|e| anyhow!("ipMasq setup for {}: {e}", join(&ips)))
}

/// Remove this attachment's masquerading. `ips` may be empty: the addresses are read
/// back from the attachment's chain. Succeeds when nothing is left (also twice).
pub fn teardown(network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let chain = chain_name(network, container_id, ifname);
    let mut last = None;
    // A concurrent change between our reads and the transaction shows up as ENOENT or
    // EBUSY; read again and retry once.
    for _ in 0..2 {
        let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
        let existed = netlink::chain_exists(&mut nl, layout::TABLE, &chain).context("ipMasq: nfnetlink")?;
        let mut all = dedup(ips);
        if existed {
            for r in recorded(&mut nl, &chain)? {
                if !all.iter().any(|n| n.addr == r.addr) {
                    all.push(r);
                }
            }
        }
        let ours = Verdict::Goto(chain.clone());
        let mut b = Batch::new();
        for n in &all {
            let key = ElemKey::Masq(n.addr);
            if points_here(&mut nl, &key, &ours)? {
                b.delete(layout::element_key(&key));
            }
        }
        if existed {
            b.flush(layout::chain(&chain));
            b.delete(layout::chain(&chain));
        }
        match nft::apply(&b) {
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

/// Verify that every address of `ips` is masqueraded through this attachment's chain.
pub fn check(network: &str, container_id: &str, ifname: &str, ips: &[IpNet]) -> anyhow::Result<()> {
    let chain = chain_name(network, container_id, ifname);
    let mut nl = Nfnl::open().context("ipMasq: nfnetlink")?;
    if !netlink::chain_exists(&mut nl, layout::TABLE, &chain).context("ipMasq: nfnetlink")? {
        bail!("ipMasq: chain {chain} for {network}/{container_id}/{ifname} is missing");
    }
    let rec = recorded(&mut nl, &chain)?;
    let ours = Verdict::Goto(chain.clone());
    for n in dedup(ips) {
        if !rec.iter().any(|r| r.addr == n.addr && r.network() == n.network()) {
            bail!("ipMasq: chain {chain} has no rule for {n}");
        }
        if !points_here(&mut nl, &ElemKey::Masq(n.addr), &ours)? {
            bail!("ipMasq: {} is not masqueraded through {chain}", n.addr);
        }
    }
    Ok(())
}

/// The attachment chain's rules: per address "own subnet: return", per family
/// "multicast: return", then masquerade.
fn chain_rules(ips: &[IpNet]) -> Vec<(Vec<serde_json::Value>, Option<String>)> {
    let mut rules = Vec::new();
    let mut families = BTreeSet::new();
    for n in ips {
        let f = Family::of(&n.addr);
        families.insert(f);
        rules.push((
            vec![
                expr::eq(expr::saddr(f), expr::ip(&n.addr)),
                expr::eq(expr::daddr(f), expr::network(n)),
                expr::ret(),
            ],
            Some(format!("{RECORD} {n}")),
        ));
    }
    for f in families {
        rules.push((
            vec![expr::eq(expr::daddr(f), expr::network(&f.multicast())), expr::ret()],
            None,
        ));
    }
    rules.push((vec![expr::masquerade()], None));
    rules
}

/// The addresses recorded in the chain's rule comments.
fn recorded(nl: &mut Nfnl, chain: &str) -> anyhow::Result<Vec<IpNet>> {
    let comments = netlink::rule_comments(nl, layout::TABLE, chain).context("ipMasq: nfnetlink")?;
    Ok(comments
        .iter()
        .filter_map(|c| c.strip_prefix(RECORD).and_then(|r| r.trim().parse::<IpNet>().ok()))
        .collect())
}

fn verdict(nl: &mut Nfnl, key: &ElemKey) -> anyhow::Result<Option<(i32, String)>> {
    netlink::elem_verdict(nl, layout::TABLE, key.map(), &key.kernel_bytes()).context("ipMasq: nfnetlink")
}

fn points_here(nl: &mut Nfnl, key: &ElemKey, ours: &Verdict) -> anyhow::Result<bool> {
    Ok(verdict(nl, key)?.is_some_and(|(code, target)| ours.matches(code, &target)))
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

/// A human hint on each element (the owner is the chain the element points at).
pub(crate) fn element_comment(network: &str, container_id: &str, ifname: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut c = format!("{}/{}/{}", clean(network), clean(ifname), clean(container_id));
    c.truncate(120);
    c
}

fn join(ips: &[IpNet]) -> String {
    ips.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_comments() {
        let c = chain_name("net", "cid", "eth0");
        assert_eq!(c.len(), 23);
        assert!(layout::is_plain_name(&c));
        assert_ne!(c, chain_name("net", "cid", "eth1"));
        assert_eq!(element_comment("n", "c\"; drop", "eth0"), "n/eth0/c___drop");
        assert!(element_comment("n", &"x".repeat(500), "eth0").len() <= 120);
    }

    #[test]
    fn rules_per_family() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/16".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        let r = chain_rules(&ips);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].1.as_deref(), Some("ipmasq 10.1.0.5/16"));
        assert_eq!(r[1].1.as_deref(), Some("ipmasq fd00::5/64"));
        let d = dedup(&["10.1.0.5/16".parse().unwrap(), "10.1.0.5/24".parse().unwrap()]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].mask_len(), 16);
    }
}
