//! The one nftables table cnichain owns, shared by portmap and ipMasq. It is flat: there
//! is no per-pod chain and no verdict map. A pod is a handful of elements in hash sets
//! and data maps, so adding or removing one costs the same with 0 or 10,000 other pods:
//!
//! * nft 1.0.6 fetches every chain (and set definition) of the ruleset before it adds or
//!   deletes anything; the number of chains and sets here is fixed.
//! * the kernel re-validates every chain reachable from a verdict map when an element is
//!   added; there are no verdict maps, and data-map elements need no validation.
//! * interval sets with concatenations (pipapo) cost O(elements) in the kernel on every
//!   delete; every per-pod element lives in a plain hash set or map. Subnets are matched
//!   by rules that mask the address (`ip saddr & mask . ip saddr | ~mask`), one rule per
//!   prefix length in use, against elements holding a subnet's first and last address.
//!
//! ```text
//! table inet cnichain
//!   # portmap: where a host port goes (separate address and port maps: nft 1.0.6
//!   # cannot declare an `ipv4_addr . inet_service` data type from JSON)
//!   map pm-port4-to   { type inet_proto . inet_service : ipv4_addr }     # any local address
//!   map pm-port4-port { type inet_proto . inet_service : inet_service }
//!   map pm-port6-to / pm-port6-port                                       # (ipv6_addr data)
//!   map pm-ip4-to     { type ipv4_addr . inet_proto . inet_service : ipv4_addr }   # hostIP
//!   map pm-ip4-port   { type ipv4_addr . inet_proto . inet_service : inet_service }
//!   map pm-ip6-to / pm-ip6-port
//!   # portmap snat: sources to masquerade, per mark bit (first . last address of the
//!   # pod's subnet, 127.0.0.1 . 127.0.0.1, or the whole family for masqAll)
//!   set pm-snat4-b13   { type ipv4_addr . ipv4_addr . inet_proto . inet_service }
//!   set pm-snatip4-b13 { type ipv4_addr . ipv4_addr . ipv4_addr . inet_proto . inet_service }
//!   set pm-snat6-b13 / pm-snatip6-b13
//!   # ipMasq: masqueraded pod addresses, and each one's own subnet (pod . first . last)
//!   set mq-src4 { type ipv4_addr }                  set mq-src6 { type ipv6_addr }
//!   set mq-own4 { type ipv4_addr . ipv4_addr . ipv4_addr }     set mq-own6 { ... }
//!   # what each attachment wrote: "<owner id>" . n, one record per element comment
//!   set records { type ifname . inet_service }
//!
//!   chain nat-prerouting { type nat hook prerouting priority dstnat + 10
//!       fib daddr type local meta nfproto ipv4 jump pm-dnat4
//!       fib daddr type local meta nfproto ipv6 jump pm-dnat6 }
//!   chain nat-output     { type nat hook output priority dstnat + 10 (-90): the same }
//!   chain pm-dnat4 {
//!       jump pm-snatip4
//!       dnat ip to ip daddr . meta l4proto . th dport map @pm-ip4-to :
//!                  ip daddr . meta l4proto . th dport map @pm-ip4-port
//!       jump pm-snat4
//!       dnat ip to meta l4proto . th dport map @pm-port4-to : meta l4proto . th dport map @pm-port4-port }
//!   chain pm-dnat6 { the same for IPv6 }
//!   chain pm-snat4 {     # one rule per (prefix length, mark bit) in use, e.g.
//!       ip saddr & 255.255.255.0 . ip saddr | 0.0.0.255 . meta l4proto . th dport @pm-snat4-b13
//!           meta mark set meta mark | 0x2000                       comment "snat /24 b13" }
//!   chain pm-snatip4 / pm-snat6 / pm-snatip6   (the same with `ip daddr .` before the port)
//!   chain nat-postrouting { type nat hook postrouting priority srcnat + 10
//!       jump pm-masq
//!       jump mq-masq }
//!   chain pm-masq { meta mark & 0x2000 == 0x2000 masquerade comment "masq b13"  # per bit }
//!   chain mq-masq {
//!       ip daddr 224.0.0.0/4 return
//!       ip6 daddr ff00::/8 return
//!       ip saddr @mq-src4 jump mq-own-v4
//!       ip saddr @mq-src4 masquerade
//!       ip6 saddr @mq-src6 jump mq-own-v6
//!       ip6 saddr @mq-src6 masquerade }
//!   chain mq-own-v4 {    # one rule per prefix length in use: the pod's own subnet
//!       ip saddr . ip daddr & 255.255.0.0 . ip daddr | 0.0.255.255 @mq-own4 accept comment "own /16" }
//!   chain mq-own-v6
//!   chain filter-input { type filter hook input priority filter
//!       iifname != "lo" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8
//!       ct state ! established,related ct status ! dnat drop }
//! ```
//!
//! Every DNAT sits behind `fib daddr type local` (CVE-2025-67499): pm-dnat4/6 are reached
//! only from the rules in nat-prerouting / nat-output. A hostIP mapping is tried before a
//! wildcard one, and its masquerade marking too (pm-snatip before pm-snat: the DNAT after
//! each is terminal). The NAT chains run at dstnat + 10 and srcnat + 10, after
//! kube-proxy's and the iptables nat table's chains (both at -100 / 100): the first NAT
//! chain that binds a connection wins, so a Kubernetes service or NodePort keeps its
//! traffic even when a pod maps the same port (the lesson of CVE-2019-9946, where portmap
//! rules were placed before KUBE-SERVICES). filter-input drops packets to 127.0.0.0/8 that
//! come from off-host: portmap sets route_localnet on the host interface for localhost
//! port forwards, which would otherwise let such packets reach services bound to loopback
//! (plugins#729, the kube-proxy rule for CVE-2020-8558).
//!
//! Ownership: every element's comment starts with its owner's id (`p…` for a portmap
//! attachment, `m…` for an ipMasq one, see [`super::records`]); an attachment deletes an
//! element only after reading it back over nfnetlink and finding its own id there.
//!
//! A pod's elements are written with one nfnetlink element batch (see [`super::apply_pod`];
//! keys are [`Elem::kernel_key`], concatenations padded to 32-bit registers; comments are
//! libnftnl's user data TLV, so `nft list` shows them). The fixed objects are declared
//! only when a pod transaction fails with ENOENT (first use on a host): re-declaring them in every transaction would cost one more RCU grace period
//! per ADD. The per-prefix and per-mark-bit rules are added by the pod transaction that
//! first needs them (it reads the chain's rule comments first) and then stay.

use super::elements;
use super::expr::{self, Family, Proto};
use super::netlink::Nfnl;
use super::Batch;
use cnichain_engine::spec::ipnet::{format_ip, unmap, IpNet};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "cnichain";

pub const MAP_PORT4_TO: &str = "pm-port4-to";
pub const MAP_PORT4_PORT: &str = "pm-port4-port";
pub const MAP_PORT6_TO: &str = "pm-port6-to";
pub const MAP_PORT6_PORT: &str = "pm-port6-port";
pub const MAP_IP4_TO: &str = "pm-ip4-to";
pub const MAP_IP4_PORT: &str = "pm-ip4-port";
pub const MAP_IP6_TO: &str = "pm-ip6-to";
pub const MAP_IP6_PORT: &str = "pm-ip6-port";
pub const SET_MQ_SRC4: &str = "mq-src4";
pub const SET_MQ_SRC6: &str = "mq-src6";
pub const SET_MQ_OWN4: &str = "mq-own4";
pub const SET_MQ_OWN6: &str = "mq-own6";
pub const SET_RECORDS: &str = "records";

pub const CHAIN_PREROUTING: &str = "nat-prerouting";
pub const CHAIN_OUTPUT: &str = "nat-output";
pub const CHAIN_POSTROUTING: &str = "nat-postrouting";
pub const CHAIN_INPUT: &str = "filter-input";
pub const CHAIN_DNAT4: &str = "pm-dnat4";
pub const CHAIN_DNAT6: &str = "pm-dnat6";
pub const CHAIN_SNAT4: &str = "pm-snat4";
pub const CHAIN_SNAT6: &str = "pm-snat6";
pub const CHAIN_SNATIP4: &str = "pm-snatip4";
pub const CHAIN_SNATIP6: &str = "pm-snatip6";
pub const CHAIN_PM_MASQ: &str = "pm-masq";
pub const CHAIN_MQ_MASQ: &str = "mq-masq";
pub const CHAIN_MQ_OWN4: &str = "mq-own-v4";
pub const CHAIN_MQ_OWN6: &str = "mq-own-v6";

/// dstnat (-100) + 10: after kube-proxy's and iptables' nat PREROUTING/OUTPUT.
pub const PRIO_DSTNAT: i32 = -90;
/// srcnat (100) + 10: an explicit SNAT of another table binds first.
pub const PRIO_SRCNAT: i32 = 110;
pub const PRIO_FILTER: i32 = 0;

/// The longest comment nft accepts is 128 bytes; ours stay below.
pub const MAX_COMMENT: usize = 127;

/// Names nft accepts without quoting and that we are willing to pass on a command line.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn table() -> Value {
    json!({ "table": { "family": FAMILY, "name": TABLE } })
}

pub fn chain(name: &str) -> Value {
    json!({ "chain": { "family": FAMILY, "table": TABLE, "name": name } })
}

fn base_chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({ "chain": { "family": FAMILY, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept" } })
}

fn map(name: &str, key: Value, data: &str) -> Value {
    json!({ "map": { "family": FAMILY, "table": TABLE, "name": name, "type": key, "map": data } })
}

pub(super) fn set(name: &str, key: Value) -> Value {
    json!({ "set": { "family": FAMILY, "table": TABLE, "name": name, "type": key } })
}

/// A rule; `comment` (at most 128 bytes, ours only) names the per-prefix / per-bit rules.
pub fn rule(chain: &str, exprs: Vec<Value>, comment: Option<&str>) -> Value {
    let mut r = Map::new();
    r.insert("family".into(), json!(FAMILY));
    r.insert("table".into(), json!(TABLE));
    r.insert("chain".into(), json!(chain));
    r.insert("expr".into(), Value::Array(exprs));
    if let Some(c) = comment {
        r.insert("comment".into(), json!(c));
    }
    json!({ "rule": r })
}

/// One field of an element key or a map element's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Addr(IpAddr),
    Proto(Proto),
    Port(u16),
    /// An `ifname`-typed string (at most 15 bytes of `[A-Za-z0-9-]`, ours only).
    Name(String),
}

impl Field {
    fn to_json(&self) -> Value {
        match self {
            Field::Addr(a) => expr::ip(a),
            Field::Proto(p) => json!(p.name()),
            Field::Port(p) => json!(p),
            Field::Name(n) => json!(n),
        }
    }

    /// The bytes the kernel stores (network order; a name NUL padded to IFNAMSIZ).
    pub fn kernel_bytes(&self) -> Vec<u8> {
        match self {
            Field::Addr(a) => match unmap(*a) {
                IpAddr::V4(x) => x.octets().to_vec(),
                IpAddr::V6(x) => x.octets().to_vec(),
            },
            Field::Proto(p) => vec![p.number()],
            Field::Port(p) => p.to_be_bytes().to_vec(),
            Field::Name(n) => {
                let mut v: Vec<u8> = n.bytes().take(15).collect();
                v.resize(16, 0);
                v
            }
        }
    }
}

/// One element of one of the layout's sets or maps, by key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Elem {
    pub set: String,
    pub key: Vec<Field>,
}

impl Elem {
    pub fn new(set: &str, key: Vec<Field>) -> Elem {
        Elem {
            set: set.to_string(),
            key,
        }
    }

    fn key_json(&self) -> Value {
        match self.key.as_slice() {
            [one] => one.to_json(),
            many => expr::concat(many.iter().map(Field::to_json).collect()),
        }
    }

    /// The key as the kernel compares it: a single field as is, each field of a
    /// concatenation in its own 32-bit registers (zero padded).
    pub fn kernel_key(&self) -> Vec<u8> {
        if let [one] = self.key.as_slice() {
            return one.kernel_bytes();
        }
        let mut v = Vec::new();
        for f in &self.key {
            v.extend(f.kernel_bytes());
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        v
    }

    /// `{"element": …}` holding this element with its comment and, in a map, its data.
    pub fn with(&self, data: Option<&Field>, comment: &str) -> Value {
        let k = json!({ "elem": { "val": self.key_json(), "comment": clip(comment) } });
        let e = match data {
            Some(d) => json!([k, d.to_json()]),
            None => k,
        };
        json!({ "element": { "family": FAMILY, "table": TABLE, "name": self.set, "elem": [e] } })
    }

    /// The key as nft prints it (`tcp . 8080`, `"p0123…" . 0`), for messages.
    pub fn describe_key(&self) -> String {
        self.key
            .iter()
            .map(|f| match f {
                Field::Addr(a) => format_ip(&unmap(*a)),
                Field::Proto(p) => p.name().to_string(),
                Field::Port(p) => p.to_string(),
                Field::Name(n) => format!("{n:?}"),
            })
            .collect::<Vec<_>>()
            .join(" . ")
    }

    /// `{"element": …}` naming this element by key (for delete).
    pub fn key_only(&self) -> Value {
        json!({ "element": { "family": FAMILY, "table": TABLE, "name": self.set, "elem": [self.key_json()] } })
    }

    /// Read the element back (data and comment) over nfnetlink; `None` when it, its set or
    /// the table does not exist.
    pub fn get(&self, nl: &mut Nfnl) -> io::Result<Option<elements::ElemInfo>> {
        elements::get_elem(nl, TABLE, &self.set, &self.kernel_key())
    }
}

/// At most [`MAX_COMMENT`] bytes (on a character boundary).
pub fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_COMMENT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A readable hint of the attachment for element comments: `network/ifname/container`
/// with anything outside `[A-Za-z0-9._-]` replaced by `_`.
pub fn hint(network: &str, container_id: &str, ifname: &str) -> String {
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
    clip(&format!("{}/{}/{}", clean(network), clean(ifname), clean(container_id)))
}

/// The first and the last address of `net`.
pub fn bounds(net: &IpNet) -> (IpAddr, IpAddr) {
    let n = net.network();
    match (n.addr, n.netmask()) {
        (IpAddr::V4(a), IpAddr::V4(m)) => (IpAddr::V4(a), IpAddr::V4(Ipv4Addr::from(u32::from(a) | !u32::from(m)))),
        (IpAddr::V6(a), IpAddr::V6(m)) => (
            IpAddr::V6(a),
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | !u128::from(m))),
        ),
        (a, _) => (a, a),
    }
}

/// `x & mask . x | ~mask` for a prefix length: with an element's `first . last` it
/// matches exactly the addresses of that subnet (and only for that prefix length).
pub(super) fn masked_range(x: Value, f: Family, prefix: u8) -> Vec<Value> {
    let bits = match f {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    if prefix >= bits {
        return vec![x.clone(), x];
    }
    let any: IpAddr = match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let net = IpNet::new(any, prefix).unwrap_or_default();
    let (_, hostmask) = bounds(&net);
    vec![
        json!({ "&": [x.clone(), expr::ip(&net.netmask())] }),
        json!({ "|": [x, expr::ip(&hostmask)] }),
    ]
}

pub(super) fn addr_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// A rule added on first need and then kept (per prefix length, per mark bit), named by
/// its comment, with the sets it refers to.
#[derive(Debug, Clone)]
pub struct DynRule {
    pub chain: &'static str,
    pub comment: String,
    pub rule: Value,
    pub sets: Vec<Value>,
}

/// Add to `b` those of `wanted` that their chains do not hold yet (read over nfnetlink:
/// one small dump per chain, independent of the number of pods), with their sets.
pub fn ensure_rules(nl: &mut Nfnl, b: &mut Batch, wanted: &[DynRule]) -> io::Result<()> {
    let mut have: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut added: Vec<(&str, &str)> = Vec::new();
    for r in wanted {
        if !have.contains_key(r.chain) {
            have.insert(r.chain, elements::rule_comments(nl, TABLE, r.chain)?);
        }
        let present = have.get(r.chain).is_some_and(|c| c.iter().any(|c| c == &r.comment));
        if present || added.contains(&(r.chain, r.comment.as_str())) {
            continue;
        }
        added.push((r.chain, r.comment.as_str()));
        for s in &r.sets {
            b.add(s.clone());
        }
        b.add(r.rule.clone());
    }
    Ok(())
}

/// Whether `chain` holds the rule named `comment`.
pub fn has_rule(nl: &mut Nfnl, r: &DynRule) -> io::Result<bool> {
    Ok(elements::rule_comments(nl, TABLE, r.chain)?
        .iter()
        .any(|c| c == &r.comment))
}

/// Declare the table, the maps and sets and the chains, and (re)write the fixed chains'
/// rules. Idempotent: existing sets keep their elements; the chains holding per-prefix
/// and per-bit rules are declared but not flushed.
pub fn declare_base(b: &mut Batch) {
    b.add(table());
    let svc = |first: Option<&str>| {
        let mut v: Vec<&str> = first.into_iter().collect();
        v.extend(["inet_proto", "inet_service"]);
        json!(v)
    };
    b.add(map(MAP_PORT4_TO, svc(None), "ipv4_addr"));
    b.add(map(MAP_PORT4_PORT, svc(None), "inet_service"));
    b.add(map(MAP_PORT6_TO, svc(None), "ipv6_addr"));
    b.add(map(MAP_PORT6_PORT, svc(None), "inet_service"));
    b.add(map(MAP_IP4_TO, svc(Some("ipv4_addr")), "ipv4_addr"));
    b.add(map(MAP_IP4_PORT, svc(Some("ipv4_addr")), "inet_service"));
    b.add(map(MAP_IP6_TO, svc(Some("ipv6_addr")), "ipv6_addr"));
    b.add(map(MAP_IP6_PORT, svc(Some("ipv6_addr")), "inet_service"));
    b.add(set(SET_MQ_SRC4, json!("ipv4_addr")));
    b.add(set(SET_MQ_SRC6, json!("ipv6_addr")));
    b.add(set(SET_MQ_OWN4, json!(["ipv4_addr", "ipv4_addr", "ipv4_addr"])));
    b.add(set(SET_MQ_OWN6, json!(["ipv6_addr", "ipv6_addr", "ipv6_addr"])));
    b.add(set(SET_RECORDS, json!(["ifname", "inet_service"])));

    // Chains of rules added on first need: declared, never flushed here.
    for c in [
        CHAIN_SNAT4,
        CHAIN_SNATIP4,
        CHAIN_SNAT6,
        CHAIN_SNATIP6,
        CHAIN_PM_MASQ,
        CHAIN_MQ_OWN4,
        CHAIN_MQ_OWN6,
    ] {
        b.add(chain(c));
    }

    // pm-dnat4 / pm-dnat6: hostIP first (marking, then DNAT), then any local address.
    for (name, f, snatip, snat, ip_maps, port_maps) in [
        (
            CHAIN_DNAT4,
            Family::V4,
            CHAIN_SNATIP4,
            CHAIN_SNAT4,
            (MAP_IP4_TO, MAP_IP4_PORT),
            (MAP_PORT4_TO, MAP_PORT4_PORT),
        ),
        (
            CHAIN_DNAT6,
            Family::V6,
            CHAIN_SNATIP6,
            CHAIN_SNAT6,
            (MAP_IP6_TO, MAP_IP6_PORT),
            (MAP_PORT6_TO, MAP_PORT6_PORT),
        ),
    ] {
        let by_port = || expr::concat(vec![expr::meta("l4proto"), expr::th_dport()]);
        let by_addr = || expr::concat(vec![expr::daddr(f), expr::meta("l4proto"), expr::th_dport()]);
        b.add(chain(name));
        b.flush(chain(name));
        b.add(rule(name, vec![expr::jump(snatip)], None));
        b.add(rule(
            name,
            vec![expr::dnat_maps(f, by_addr(), ip_maps.0, by_addr(), ip_maps.1)],
            None,
        ));
        b.add(rule(name, vec![expr::jump(snat)], None));
        b.add(rule(
            name,
            vec![expr::dnat_maps(f, by_port(), port_maps.0, by_port(), port_maps.1)],
            None,
        ));
    }

    // ipMasq
    b.add(chain(CHAIN_MQ_MASQ));
    b.flush(chain(CHAIN_MQ_MASQ));
    for f in [Family::V4, Family::V6] {
        b.add(rule(
            CHAIN_MQ_MASQ,
            vec![expr::eq(expr::daddr(f), expr::network(&f.multicast())), expr::ret()],
            None,
        ));
    }
    for (f, src, own) in [
        (Family::V4, SET_MQ_SRC4, CHAIN_MQ_OWN4),
        (Family::V6, SET_MQ_SRC6, CHAIN_MQ_OWN6),
    ] {
        let is_pod = || expr::eq(expr::saddr(f), json!(format!("@{src}")));
        b.add(rule(CHAIN_MQ_MASQ, vec![is_pod(), expr::jump(own)], None));
        b.add(rule(CHAIN_MQ_MASQ, vec![is_pod(), expr::masquerade()], None));
    }

    for (name, hook) in [(CHAIN_PREROUTING, "prerouting"), (CHAIN_OUTPUT, "output")] {
        b.add(base_chain(name, "nat", hook, PRIO_DSTNAT));
        b.flush(chain(name));
        for (f, target) in [(Family::V4, CHAIN_DNAT4), (Family::V6, CHAIN_DNAT6)] {
            b.add(rule(
                name,
                vec![
                    expr::fib_daddr_local(),
                    expr::eq(expr::meta("nfproto"), json!(f.nfproto())),
                    expr::jump(target),
                ],
                None,
            ));
        }
    }

    b.add(base_chain(CHAIN_POSTROUTING, "nat", "postrouting", PRIO_SRCNAT));
    b.flush(chain(CHAIN_POSTROUTING));
    b.add(rule(CHAIN_POSTROUTING, vec![expr::jump(CHAIN_PM_MASQ)], None));
    b.add(rule(CHAIN_POSTROUTING, vec![expr::jump(CHAIN_MQ_MASQ)], None));

    b.add(base_chain(CHAIN_INPUT, "filter", "input", PRIO_FILTER));
    b.flush(chain(CHAIN_INPUT));
    let loopback = json!({ "prefix": { "addr": "127.0.0.0", "len": 8 } });
    b.add(rule(
        CHAIN_INPUT,
        vec![
            expr::ne(expr::meta("iifname"), json!("lo")),
            expr::eq(expr::daddr(Family::V4), loopback.clone()),
            expr::ne(expr::saddr(Family::V4), loopback),
            expr::masked_eq(
                json!({ "ct": { "key": "state" } }),
                json!({ "|": ["established", "related"] }),
                json!(0),
            ),
            expr::masked_eq(json!({ "ct": { "key": "status" } }), json!("dnat"), json!(0)),
            expr::drop(),
        ],
        Some("cnichain: drop off-host packets to 127.0.0.0/8 (route_localnet)"),
    ));
}

#[cfg(test)]
mod tests {
    use super::super::hostport::HostPort;
    use super::super::masq::{mq_own_elem, mq_src_elem};
    use super::*;

    #[test]
    fn kernel_key_layout() {
        let k = HostPort::Any {
            family: Family::V4,
            proto: Proto::Tcp,
            port: 8080,
        };
        assert_eq!(k.to_elem().kernel_key(), vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(k.to_map(), MAP_PORT4_TO);
        let k = HostPort::Addr {
            addr: "192.0.2.1".parse().unwrap(),
            proto: Proto::Udp,
            port: 53,
        };
        assert_eq!(k.port_elem().kernel_key(), vec![192, 0, 2, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(k.port_map(), MAP_IP4_PORT);
        let e = mq_src_elem("fd00::2".parse().unwrap());
        assert_eq!(e.kernel_key().len(), 16);
        assert_eq!(e.set, SET_MQ_SRC6);
        let e = mq_src_elem("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!((e.set.as_str(), e.kernel_key()), (SET_MQ_SRC4, vec![10, 0, 0, 1]));
        let r = Elem::new(SET_RECORDS, vec![Field::Name("p0123".into()), Field::Port(2)]);
        let kk = r.kernel_key();
        assert_eq!(kk.len(), 20);
        assert_eq!(&kk[..6], b"p0123\0");
        assert_eq!(&kk[16..], &[0, 2, 0, 0]);
    }

    #[test]
    fn subnet_bounds_and_snat_elements() {
        let n: IpNet = "10.88.3.7/16".parse().unwrap();
        assert_eq!(
            bounds(&n),
            ("10.88.0.0".parse().unwrap(), "10.88.255.255".parse().unwrap())
        );
        let all: IpNet = "::/0".parse().unwrap();
        assert_eq!(bounds(&all).1, IpAddr::V6(Ipv6Addr::from(u128::MAX)));
        let k = HostPort::Addr {
            addr: "192.0.2.1".parse().unwrap(),
            proto: Proto::Tcp,
            port: 80,
        };
        let e = k.snat_elem(&n, 13);
        assert_eq!(e.set, "pm-snatip4-b13");
        assert_eq!(e.key.len(), 5);
        let r = k.snat_rule(16, 13);
        assert_eq!(r.chain, CHAIN_SNATIP4);
        assert_eq!(r.comment, "snat /16 b13");
        let text = r.rule.to_string();
        assert!(text.contains("255.255.0.0") && text.contains("0.0.255.255"), "{text}");
        // a host range compares the address twice, unmasked
        let r = k.snat_rule(32, 13).rule.to_string();
        assert!(!r.contains("\"&\""), "{r}");
        let o = mq_own_elem(&"fd00::5/64".parse().unwrap());
        assert_eq!(o.key[1], Field::Addr("fd00::".parse().unwrap()));
        assert_eq!(o.key[2], Field::Addr("fd00::ffff:ffff:ffff:ffff".parse().unwrap()));
    }

    #[test]
    fn records_round_trip() {
        let keys = [
            HostPort::Any {
                family: Family::V6,
                proto: Proto::Sctp,
                port: 65535,
            },
            HostPort::Addr {
                addr: "2001:db8::1".parse().unwrap(),
                proto: Proto::Tcp,
                port: 1,
            },
            HostPort::Addr {
                addr: "192.0.2.1".parse().unwrap(),
                proto: Proto::Udp,
                port: 53,
            },
        ];
        for k in keys {
            let r = k.record();
            let toks: Vec<&str> = r.split_whitespace().collect();
            assert_eq!(HostPort::parse_record(&toks).map(|x| x.0), Some(k), "{r}");
        }
        for bad in [
            "",
            "port4",
            "port5 tcp 1",
            "port4 tcp 70000",
            "ip4 2001:db8::1 tcp 1",
            "ip6 10.0.0.1 tcp 1",
            "x y",
        ] {
            let toks: Vec<&str> = bad.split_whitespace().collect();
            assert_eq!(HostPort::parse_record(&toks), None, "{bad}");
        }
    }

    #[test]
    fn names_and_comments() {
        assert!(is_plain_name("pm-dnat4"));
        assert!(!is_plain_name("a b"));
        assert!(!is_plain_name(""));
        assert!(!is_plain_name("x;y"));
        assert_eq!(hint("n", "c\"; drop", "eth0"), "n/eth0/c___drop");
        assert!(hint("n", &"x".repeat(500), "eth0").len() <= MAX_COMMENT);
        assert_eq!(clip(&"é".repeat(100)).len(), 126);
    }

    #[test]
    fn base_is_one_batch_of_plain_json() {
        let mut b = Batch::new();
        declare_base(&mut b);
        let text = b.to_json().to_string();
        assert!(!text.contains("vmap") && !text.contains("verdict"), "no verdict maps");
        assert!(text.contains("\"prio\":-90") && text.contains("\"prio\":110"));
    }
}
