//! Typed builders for the libnftables JSON expressions and statements we use. Every
//! input is a typed value (an address, a port, an enum); strings that reach nft are
//! either constants of this crate or names we derive from hashes.

use cnichain_engine::spec::ipnet::{format_ip, IpNet};
use serde_json::{json, Value};
use std::net::IpAddr;

/// An IP family as nft names it in its different places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// `meta nfproto` value.
    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    /// Payload protocol (`ip saddr`, `ip6 saddr`) and the dnat family.
    pub fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// Multicast destinations (never masqueraded by ipMasq).
    pub fn multicast(self) -> IpNet {
        match self {
            Family::V4 => IpNet::new(IpAddr::from([224, 0, 0, 0]), 4),
            Family::V6 => IpNet::new(IpAddr::from([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8),
        }
        .unwrap_or_default()
    }
}

/// A transport protocol a host port can be mapped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Case-insensitive, as the reference passes the string to iptables, which accepts
    /// any case. Anything else is `None`.
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
}

pub fn ip(addr: &IpAddr) -> Value {
    Value::String(format_ip(addr))
}

/// The network of `net` as a match value: a prefix, or the bare address for a host.
pub fn network(net: &IpNet) -> Value {
    let n = net.network();
    if n.mask_len() == n.bits() {
        ip(&n.addr)
    } else {
        json!({ "prefix": { "addr": format_ip(&n.addr), "len": n.mask_len() } })
    }
}

pub fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

pub fn payload(protocol: &str, field: &str) -> Value {
    json!({ "payload": { "protocol": protocol, "field": field } })
}

pub fn saddr(f: Family) -> Value {
    payload(f.payload(), "saddr")
}

pub fn daddr(f: Family) -> Value {
    payload(f.payload(), "daddr")
}

/// `th dport`: the transport header's destination port, whatever the protocol.
pub fn th_dport() -> Value {
    payload("th", "dport")
}

pub fn concat(parts: Vec<Value>) -> Value {
    json!({ "concat": parts })
}

pub fn eq(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "==", "left": left, "right": right } })
}

pub fn ne(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "!=", "left": left, "right": right } })
}

/// `left & mask == want` (a bitmask test; `!=` against flags would compare exactly).
pub fn masked_eq(left: Value, mask: Value, want: Value) -> Value {
    json!({ "match": { "op": "==", "left": { "&": [left, mask] }, "right": want } })
}

pub fn jump(target: &str) -> Value {
    json!({ "jump": { "target": target } })
}

pub fn ret() -> Value {
    json!({ "return": null })
}

pub fn drop() -> Value {
    json!({ "drop": null })
}

pub fn masquerade() -> Value {
    json!({ "masquerade": null })
}

/// `dnat ip|ip6 to addr:port`
pub fn dnat(addr: &IpAddr, port: u16) -> Value {
    json!({ "dnat": { "family": Family::of(addr).payload(), "addr": format_ip(addr), "port": port } })
}

/// `dnat ip|ip6 to <addr_key> map @addr_map : <port_key> map @port_map`: the address and
/// the port come from two data maps with the same key (a packet whose key is in neither
/// does not match the rule).
pub fn dnat_maps(f: Family, addr_key: Value, addr_map: &str, port_key: Value, port_map: &str) -> Value {
    json!({ "dnat": {
        "family": f.payload(),
        "addr": { "map": { "key": addr_key, "data": format!("@{addr_map}") } },
        "port": { "map": { "key": port_key, "data": format!("@{port_map}") } },
    } })
}

/// `meta mark set meta mark | bits`
pub fn mark_or(bits: u32) -> Value {
    json!({ "mangle": { "key": meta("mark"), "value": { "|": [meta("mark"), bits] } } })
}

/// `fib daddr type local`
pub fn fib_daddr_local() -> Value {
    eq(
        json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
        json!("local"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(Proto::parse("TCP"), Some(Proto::Tcp));
        assert_eq!(Proto::parse("Udp"), Some(Proto::Udp));
        assert_eq!(Proto::parse("sctp"), Some(Proto::Sctp));
        for bad in ["", "icmp", "tcp; flush ruleset", " tcp", "tcp\n"] {
            assert_eq!(Proto::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn networks() {
        let n: IpNet = "10.88.0.7/16".parse().unwrap();
        assert_eq!(network(&n), json!({"prefix": {"addr": "10.88.0.0", "len": 16}}));
        let h: IpNet = "10.88.0.7/32".parse().unwrap();
        assert_eq!(network(&h), json!("10.88.0.7"));
        let v6: IpNet = "fd00::5/64".parse().unwrap();
        assert_eq!(network(&v6), json!({"prefix": {"addr": "fd00::", "len": 64}}));
        assert_eq!(Family::V6.multicast().to_string(), "ff00::/8");
        assert_eq!(Family::V4.multicast().to_string(), "224.0.0.0/4");
    }

    #[test]
    fn families() {
        assert_eq!(Family::of(&"::ffff:1.2.3.4".parse().unwrap()), Family::V4);
        assert_eq!(Family::of(&"::1".parse().unwrap()), Family::V6);
        assert_eq!(dnat(&"fd00::2".parse().unwrap(), 80)["dnat"]["family"], "ip6");
    }
}
