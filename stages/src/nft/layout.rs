//! The one nftables table cnichain owns, shared by portmap and ipMasq, laid out so that
//! adding or removing one pod adds or removes only that pod's own chain and its map
//! elements: nothing of another pod is listed or rewritten.
//!
//! ```text
//! table inet cnichain
//!   map hostports { type nf_proto . inet_proto . inet_service : verdict }   # wildcard host ports
//!   map hostip4   { type ipv4_addr . inet_proto . inet_service : verdict }  # hostIP mappings
//!   map hostip6   { type ipv6_addr . inet_proto . inet_service : verdict }
//!   map masq4     { type ipv4_addr : verdict }                              # ipMasq, by pod source
//!   map masq6     { type ipv6_addr : verdict }
//!
//!   chain nat-prerouting  { type nat hook prerouting priority dstnat + 10
//!                           fib daddr type local jump pm-dispatch }
//!   chain nat-output      { type nat hook output priority dstnat + 10 (-90)
//!                           fib daddr type local jump pm-dispatch }
//!   chain pm-dispatch     { ip daddr . meta l4proto . th dport vmap @hostip4
//!                           ip6 daddr . meta l4proto . th dport vmap @hostip6
//!                           meta nfproto . meta l4proto . th dport vmap @hostports }
//!   chain nat-postrouting { type nat hook postrouting priority srcnat + 10
//!                           jump pm-masqmark
//!                           ip saddr vmap @masq4
//!                           ip6 saddr vmap @masq6 }
//!   chain pm-masqmark     { meta mark & 0x2000 == 0x2000 masquerade   # one per mark bit in use }
//!   chain pm-markb13      { meta mark set meta mark | 0x2000 }
//!   chain filter-input    { type filter hook input priority filter
//!                           iifname != "lo" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8
//!                           ct state ! established,related ct status ! dnat drop }
//!
//!   chain pm-<hash(net,cid,if)>   # one per portmap attachment: mark rules, then one
//!                                 # `meta nfproto . l4proto . dport [daddr] dnat` per mapping
//!   chain mq-<hash(net,cid,if)>   # one per ipMasq attachment: own subnet and multicast
//!                                 # return, everything else masquerade
//! ```
//!
//! Every DNAT path sits behind `fib daddr type local` (CVE-2025-67499): the only way into
//! pm-dispatch is the rule in nat-prerouting / nat-output. The NAT chains run at
//! dstnat + 10 and srcnat + 10, after kube-proxy's and the iptables nat table's chains
//! (both at -100 / 100): the first NAT chain that binds a connection wins, so a
//! Kubernetes service or NodePort keeps its traffic even when a pod maps the same port
//! (the lesson of CVE-2019-9946, where portmap rules were placed before KUBE-SERVICES).
//! filter-input drops packets to 127.0.0.0/8 that come from off-host: portmap sets
//! route_localnet on the host interface for localhost port forwards, which would
//! otherwise let such packets reach services bound to loopback (plugins#729, the
//! kube-proxy rule for CVE-2020-8558).
//!
//! The base objects are declared only when a pod transaction fails with ENOENT (first use
//! on a host, or a new mark bit): re-declaring them in every transaction would cost one
//! more RCU grace period per ADD.

use super::expr::{self, Family, Proto};
use super::Batch;
use cnichain_engine::spec::ipnet::{format_ip, parse_ip};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "cnichain";

pub const MAP_HOSTPORTS: &str = "hostports";
pub const MAP_HOSTIP4: &str = "hostip4";
pub const MAP_HOSTIP6: &str = "hostip6";
pub const MAP_MASQ4: &str = "masq4";
pub const MAP_MASQ6: &str = "masq6";

pub const CHAIN_PREROUTING: &str = "nat-prerouting";
pub const CHAIN_OUTPUT: &str = "nat-output";
pub const CHAIN_POSTROUTING: &str = "nat-postrouting";
pub const CHAIN_INPUT: &str = "filter-input";
pub const CHAIN_DISPATCH: &str = "pm-dispatch";
pub const CHAIN_MASQMARK: &str = "pm-masqmark";

/// dstnat (-100) + 10: after kube-proxy's and iptables' nat PREROUTING/OUTPUT.
pub const PRIO_DSTNAT: i32 = -90;
/// srcnat (100) + 10: an explicit SNAT of another table binds first.
pub const PRIO_SRCNAT: i32 = 110;
pub const PRIO_FILTER: i32 = 0;

/// Names nft accepts without quoting and that we are willing to pass on a command line.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The chain that sets the masquerade mark bit `bit`.
pub fn mark_chain(bit: u8) -> String {
    format!("pm-markb{bit}")
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

fn map(name: &str, key: Value) -> Value {
    json!({ "map": { "family": FAMILY, "table": TABLE, "name": name, "type": key, "map": "verdict" } })
}

/// A rule; `comment` (at most 128 bytes, ours only) is how a pod's chain records what it
/// owns.
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

/// Where a map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn to_json(&self) -> Value {
        match self {
            Verdict::Jump(c) => expr::jump(c),
            Verdict::Goto(c) => expr::goto(c),
        }
    }
    /// The kernel's verdict code (NFT_JUMP -3, NFT_GOTO -4) and chain.
    pub fn matches(&self, code: i32, chain: &str) -> bool {
        match self {
            Verdict::Jump(c) => code == -3 && c == chain,
            Verdict::Goto(c) => code == -4 && c == chain,
        }
    }
}

/// The key of one element in one of the layout's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemKey {
    /// `hostports`: family . protocol . host port
    HostPort { family: Family, proto: Proto, port: u16 },
    /// `hostip4` / `hostip6`: host address . protocol . host port
    HostIp { addr: IpAddr, proto: Proto, port: u16 },
    /// `masq4` / `masq6`: the pod's source address
    Masq(IpAddr),
}

impl ElemKey {
    pub fn map(&self) -> &'static str {
        match self {
            ElemKey::HostPort { .. } => MAP_HOSTPORTS,
            ElemKey::HostIp { addr, .. } => match Family::of(addr) {
                Family::V4 => MAP_HOSTIP4,
                Family::V6 => MAP_HOSTIP6,
            },
            ElemKey::Masq(a) => match Family::of(a) {
                Family::V4 => MAP_MASQ4,
                Family::V6 => MAP_MASQ6,
            },
        }
    }

    fn to_json(self) -> Value {
        match self {
            ElemKey::HostPort { family, proto, port } => {
                expr::concat(vec![json!(family.nfproto()), json!(proto.name()), json!(port)])
            }
            ElemKey::HostIp { addr, proto, port } => {
                expr::concat(vec![expr::ip(&addr), json!(proto.name()), json!(port)])
            }
            ElemKey::Masq(a) => expr::ip(&a),
        }
    }

    /// The key as the kernel stores it: each field of a concatenation in its own 32-bit
    /// register (zero padded), addresses and ports in network order.
    pub fn kernel_bytes(&self) -> Vec<u8> {
        fn reg(v: &mut Vec<u8>, b: &[u8]) {
            v.extend_from_slice(b);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        fn addr(v: &mut Vec<u8>, a: &IpAddr) {
            match (a, Family::of(a)) {
                (IpAddr::V4(x), _) => reg(v, &x.octets()),
                (IpAddr::V6(x), Family::V4) => reg(v, &x.to_ipv4_mapped().map(|m| m.octets()).unwrap_or_default()),
                (IpAddr::V6(x), Family::V6) => reg(v, &x.octets()),
            }
        }
        let mut v = Vec::new();
        match self {
            ElemKey::HostPort { family, proto, port } => {
                reg(&mut v, &[family.nfproto_num()]);
                reg(&mut v, &[proto.number()]);
                reg(&mut v, &port.to_be_bytes());
            }
            ElemKey::HostIp { addr: a, proto, port } => {
                addr(&mut v, a);
                reg(&mut v, &[proto.number()]);
                reg(&mut v, &port.to_be_bytes());
            }
            ElemKey::Masq(a) => addr(&mut v, a),
        }
        v
    }

    /// The record form kept in a pod chain's rule comments: `<map> <key fields>`.
    pub fn record(&self) -> String {
        match self {
            ElemKey::HostPort { family, proto, port } => {
                format!("{} {} {} {}", MAP_HOSTPORTS, family.nfproto(), proto.name(), port)
            }
            ElemKey::HostIp { addr, proto, port } => {
                format!("{} {} {} {}", self.map(), format_ip(addr), proto.name(), port)
            }
            ElemKey::Masq(a) => format!("{} {}", self.map(), format_ip(a)),
        }
    }

    /// Read a record back (the first tokens of a comment); anything unexpected is `None`.
    pub fn parse_record(tokens: &[&str]) -> Option<(ElemKey, usize)> {
        let map = *tokens.first()?;
        match map {
            MAP_HOSTPORTS => {
                let family = match *tokens.get(1)? {
                    "ipv4" => Family::V4,
                    "ipv6" => Family::V6,
                    _ => return None,
                };
                let proto = Proto::parse(tokens.get(2)?)?;
                let port: u16 = tokens.get(3)?.parse().ok()?;
                Some((ElemKey::HostPort { family, proto, port }, 4))
            }
            MAP_HOSTIP4 | MAP_HOSTIP6 => {
                let addr = parse_ip(tokens.get(1)?)?;
                let proto = Proto::parse(tokens.get(2)?)?;
                let port: u16 = tokens.get(3)?.parse().ok()?;
                let k = ElemKey::HostIp { addr, proto, port };
                (k.map() == map).then_some((k, 4))
            }
            MAP_MASQ4 | MAP_MASQ6 => {
                let k = ElemKey::Masq(parse_ip(tokens.get(1)?)?);
                (k.map() == map).then_some((k, 2))
            }
            _ => None,
        }
    }
}

/// `{ key [comment] : verdict }` in `key.map()`.
pub fn element(key: &ElemKey, verdict: &Verdict, comment: Option<&str>) -> Value {
    let k = match comment {
        Some(c) => json!({ "elem": { "val": key.to_json(), "comment": c } }),
        None => key.to_json(),
    };
    json!({ "element": { "family": FAMILY, "table": TABLE, "name": key.map(),
        "elem": [[k, verdict.to_json()]] } })
}

/// The element to delete (by key).
pub fn element_key(key: &ElemKey) -> Value {
    json!({ "element": { "family": FAMILY, "table": TABLE, "name": key.map(), "elem": [key.to_json()] } })
}

/// Declare the table, the maps and the base chains, and (re)write the base chains' fixed
/// rules. Idempotent: existing maps keep their elements, pod chains are untouched.
pub fn declare_base(b: &mut Batch) {
    b.add(table());
    let svc = || json!(["inet_proto", "inet_service"]);
    let key3 = |first: &str| {
        let mut v = vec![json!(first)];
        if let Value::Array(rest) = svc() {
            v.extend(rest);
        }
        Value::Array(v)
    };
    b.add(map(MAP_HOSTPORTS, key3("nf_proto")));
    b.add(map(MAP_HOSTIP4, key3("ipv4_addr")));
    b.add(map(MAP_HOSTIP6, key3("ipv6_addr")));
    b.add(map(MAP_MASQ4, json!("ipv4_addr")));
    b.add(map(MAP_MASQ6, json!("ipv6_addr")));

    let dispatch_key = |first: Value| expr::concat(vec![first, expr::meta("l4proto"), expr::th_dport()]);
    b.add(chain(CHAIN_DISPATCH));
    b.flush(chain(CHAIN_DISPATCH));
    b.add(rule(
        CHAIN_DISPATCH,
        vec![expr::vmap(dispatch_key(expr::daddr(Family::V4)), MAP_HOSTIP4)],
        None,
    ));
    b.add(rule(
        CHAIN_DISPATCH,
        vec![expr::vmap(dispatch_key(expr::daddr(Family::V6)), MAP_HOSTIP6)],
        None,
    ));
    b.add(rule(
        CHAIN_DISPATCH,
        vec![expr::vmap(dispatch_key(expr::meta("nfproto")), MAP_HOSTPORTS)],
        None,
    ));
    // Not flushed: it holds one rule per mark bit in use, added with that bit's chain.
    b.add(chain(CHAIN_MASQMARK));

    for (name, hook) in [(CHAIN_PREROUTING, "prerouting"), (CHAIN_OUTPUT, "output")] {
        b.add(base_chain(name, "nat", hook, PRIO_DSTNAT));
        b.flush(chain(name));
        b.add(rule(
            name,
            vec![expr::fib_daddr_local(), expr::jump(CHAIN_DISPATCH)],
            None,
        ));
    }

    b.add(base_chain(CHAIN_POSTROUTING, "nat", "postrouting", PRIO_SRCNAT));
    b.flush(chain(CHAIN_POSTROUTING));
    b.add(rule(CHAIN_POSTROUTING, vec![expr::jump(CHAIN_MASQMARK)], None));
    b.add(rule(
        CHAIN_POSTROUTING,
        vec![expr::vmap(expr::saddr(Family::V4), MAP_MASQ4)],
        None,
    ));
    b.add(rule(
        CHAIN_POSTROUTING,
        vec![expr::vmap(expr::saddr(Family::V6), MAP_MASQ6)],
        None,
    ));

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

/// Declare the chain that sets mark bit `bit` and, when `with_masquerade` (the chain did
/// not exist yet), the rule in pm-masqmark that masquerades packets carrying it.
pub fn declare_mark_bit(b: &mut Batch, bit: u8, with_masquerade: bool) {
    let bits = 1u32 << (bit & 31);
    let name = mark_chain(bit);
    b.add(chain(&name));
    b.flush(chain(&name));
    b.add(rule(&name, vec![expr::mark_or(bits)], None));
    if with_masquerade {
        b.add(rule(
            CHAIN_MASQMARK,
            vec![
                expr::masked_eq(expr::meta("mark"), json!(bits), json!(bits)),
                expr::masquerade(),
            ],
            Some(&format!("markbit {bit}")),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_key_layout() {
        let k = ElemKey::HostPort {
            family: Family::V4,
            proto: Proto::Tcp,
            port: 8080,
        };
        assert_eq!(k.kernel_bytes(), vec![2, 0, 0, 0, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        let k = ElemKey::HostIp {
            addr: "192.0.2.1".parse().unwrap(),
            proto: Proto::Udp,
            port: 53,
        };
        assert_eq!(k.kernel_bytes(), vec![192, 0, 2, 1, 17, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(k.map(), MAP_HOSTIP4);
        let k = ElemKey::Masq("fd00::2".parse().unwrap());
        assert_eq!(k.kernel_bytes().len(), 16);
        assert_eq!(k.map(), MAP_MASQ6);
    }

    #[test]
    fn records_round_trip() {
        let keys = [
            ElemKey::HostPort {
                family: Family::V6,
                proto: Proto::Sctp,
                port: 65535,
            },
            ElemKey::HostIp {
                addr: "2001:db8::1".parse().unwrap(),
                proto: Proto::Tcp,
                port: 1,
            },
            ElemKey::HostIp {
                addr: "192.0.2.1".parse().unwrap(),
                proto: Proto::Udp,
                port: 53,
            },
            ElemKey::Masq("10.88.0.2".parse().unwrap()),
        ];
        for k in keys {
            let r = k.record();
            let toks: Vec<&str> = r.split_whitespace().collect();
            assert_eq!(ElemKey::parse_record(&toks).map(|x| x.0), Some(k), "{r}");
        }
        for bad in [
            "",
            "hostports",
            "hostports ipv5 tcp 1",
            "hostports ipv4 tcp 70000",
            "hostip4 2001:db8::1 tcp 1",
            "masq6 10.0.0.1",
            "x y",
        ] {
            let toks: Vec<&str> = bad.split_whitespace().collect();
            assert_eq!(ElemKey::parse_record(&toks), None, "{bad}");
        }
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("pm-0123abcd"));
        assert!(!is_plain_name("a b"));
        assert!(!is_plain_name(""));
        assert!(!is_plain_name("x;y"));
    }
}
