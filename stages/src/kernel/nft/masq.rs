//! ipMasq's part of `table inet cnichain`: the elements that masquerade a pod's source
//! address and exempt its own subnet, and the per-prefix rule matching the latter. The
//! table itself is declared in [`super::layout`].

use super::expr::{self, Family};
use super::layout::*;
use cnichain_engine::spec::ipnet::{unmap, IpNet};
use serde_json::json;
use std::net::IpAddr;

/// ipMasq: the element that says "masquerade what `addr` sends".
pub fn mq_src_elem(addr: IpAddr) -> Elem {
    let set = match Family::of(&addr) {
        Family::V4 => SET_MQ_SRC4,
        Family::V6 => SET_MQ_SRC6,
    };
    Elem::new(set, vec![Field::Addr(unmap(addr))])
}

/// ipMasq: the element that exempts `net.addr`'s traffic to its own subnet.
pub fn mq_own_elem(net: &IpNet) -> Elem {
    let set = match Family::of(&net.addr) {
        Family::V4 => SET_MQ_OWN4,
        Family::V6 => SET_MQ_OWN6,
    };
    let (first, last) = bounds(net);
    Elem::new(
        set,
        vec![Field::Addr(unmap(net.addr)), Field::Addr(first), Field::Addr(last)],
    )
}

/// ipMasq: the rule that matches [`mq_own_elem`]s of prefix length `prefix`.
pub fn mq_own_rule(f: Family, prefix: u8) -> DynRule {
    let (chain, set) = match f {
        Family::V4 => (CHAIN_MQ_OWN4, SET_MQ_OWN4),
        Family::V6 => (CHAIN_MQ_OWN6, SET_MQ_OWN6),
    };
    let mut key = vec![expr::saddr(f)];
    key.extend(masked_range(expr::daddr(f), f, prefix));
    let comment = format!("own /{prefix}");
    DynRule {
        chain,
        rule: rule(
            chain,
            vec![
                expr::eq(expr::concat(key), json!(format!("@{set}"))),
                json!({ "accept": null }),
            ],
            Some(&comment),
        ),
        comment,
        sets: Vec::new(),
    }
}
