//! portmap's part of `table inet cnichain`: the host side of a mapping (its map
//! elements, SNAT rule and record) and the masquerade rule per mark bit. The table itself
//! is declared in [`super::layout`].

use super::expr::{self, Family, Proto};
use super::layout::*;
use cnichain_engine::spec::ipnet::{format_ip, parse_ip, unmap, IpNet};
use serde_json::json;
use std::net::IpAddr;

/// The host side of one port mapping: a host port of one family on every local address,
/// or a port on one host address (hostIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPort {
    Any { family: Family, proto: Proto, port: u16 },
    Addr { addr: IpAddr, proto: Proto, port: u16 },
}

impl HostPort {
    pub fn family(&self) -> Family {
        match self {
            HostPort::Any { family, .. } => *family,
            HostPort::Addr { addr, .. } => Family::of(addr),
        }
    }

    pub fn proto(&self) -> Proto {
        match self {
            HostPort::Any { proto, .. } | HostPort::Addr { proto, .. } => *proto,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            HostPort::Any { port, .. } | HostPort::Addr { port, .. } => *port,
        }
    }

    fn by_addr(&self) -> bool {
        matches!(self, HostPort::Addr { .. })
    }

    /// The map holding the pod address for this host port.
    pub fn to_map(&self) -> &'static str {
        match (self.by_addr(), self.family()) {
            (false, Family::V4) => MAP_PORT4_TO,
            (false, Family::V6) => MAP_PORT6_TO,
            (true, Family::V4) => MAP_IP4_TO,
            (true, Family::V6) => MAP_IP6_TO,
        }
    }

    /// The map holding the container port for this host port.
    pub fn port_map(&self) -> &'static str {
        match (self.by_addr(), self.family()) {
            (false, Family::V4) => MAP_PORT4_PORT,
            (false, Family::V6) => MAP_PORT6_PORT,
            (true, Family::V4) => MAP_IP4_PORT,
            (true, Family::V6) => MAP_IP6_PORT,
        }
    }

    /// `[host address .] protocol . port`
    pub fn fields(&self) -> Vec<Field> {
        match self {
            HostPort::Any { proto, port, .. } => vec![Field::Proto(*proto), Field::Port(*port)],
            HostPort::Addr { addr, proto, port } => {
                vec![Field::Addr(unmap(*addr)), Field::Proto(*proto), Field::Port(*port)]
            }
        }
    }

    pub fn to_elem(&self) -> Elem {
        Elem::new(self.to_map(), self.fields())
    }

    pub fn port_elem(&self) -> Elem {
        Elem::new(self.port_map(), self.fields())
    }

    /// The chain holding the masquerade-marking rules for this kind of mapping.
    pub fn snat_chain(&self) -> &'static str {
        match (self.by_addr(), self.family()) {
            (false, Family::V4) => CHAIN_SNAT4,
            (false, Family::V6) => CHAIN_SNAT6,
            (true, Family::V4) => CHAIN_SNATIP4,
            (true, Family::V6) => CHAIN_SNATIP6,
        }
    }

    /// The set of sources to mark with `bit` for this kind of mapping.
    pub fn snat_set(&self, bit: u8) -> String {
        let kind = if self.by_addr() { "snatip" } else { "snat" };
        let v = match self.family() {
            Family::V4 => 4,
            Family::V6 => 6,
        };
        format!("pm-{kind}{v}-b{}", bit & 31)
    }

    /// Packets from `src` to this host port get mark `bit` (and so are masqueraded).
    pub fn snat_elem(&self, src: &IpNet, bit: u8) -> Elem {
        let (first, last) = bounds(src);
        let mut key = vec![Field::Addr(first), Field::Addr(last)];
        key.extend(self.fields());
        Elem::new(&self.snat_set(bit), key)
    }

    /// The rule (and its set) that marks packets from sources of prefix length `prefix`
    /// found in [`Self::snat_set`].
    pub fn snat_rule(&self, prefix: u8, bit: u8) -> DynRule {
        let f = self.family();
        let bit = bit & 31;
        let mut key = masked_range(expr::saddr(f), f, prefix);
        let mut types = vec![addr_type(f), addr_type(f)];
        if self.by_addr() {
            key.push(expr::daddr(f));
            types.push(addr_type(f));
        }
        key.push(expr::meta("l4proto"));
        key.push(expr::th_dport());
        types.push("inet_proto");
        types.push("inet_service");
        let name = self.snat_set(bit);
        let comment = format!("snat /{prefix} b{bit}");
        DynRule {
            chain: self.snat_chain(),
            rule: rule(
                self.snat_chain(),
                vec![
                    expr::eq(expr::concat(key), json!(format!("@{name}"))),
                    expr::mark_or(1u32 << bit),
                ],
                Some(&comment),
            ),
            comment,
            sets: vec![set(&name, json!(types))],
        }
    }

    /// `port4 tcp 8080` / `ip4 192.0.2.1 udp 53`: the record form.
    pub fn record(&self) -> String {
        let v = match self.family() {
            Family::V4 => 4,
            Family::V6 => 6,
        };
        match self {
            HostPort::Any { proto, port, .. } => format!("port{v} {} {port}", proto.name()),
            HostPort::Addr { addr, proto, port } => format!("ip{v} {} {} {port}", format_ip(addr), proto.name()),
        }
    }

    /// Read a record back (its first tokens); anything unexpected is `None`.
    pub fn parse_record(tokens: &[&str]) -> Option<(HostPort, usize)> {
        let fam = |t: &str| match t {
            "4" => Some(Family::V4),
            "6" => Some(Family::V6),
            _ => None,
        };
        let kind = *tokens.first()?;
        if let Some(v) = kind.strip_prefix("port") {
            let family = fam(v)?;
            let proto = Proto::parse(tokens.get(1)?)?;
            let port: u16 = tokens.get(2)?.parse().ok()?;
            return Some((HostPort::Any { family, proto, port }, 3));
        }
        let family = fam(kind.strip_prefix("ip")?)?;
        let addr = parse_ip(tokens.get(1)?)?;
        let proto = Proto::parse(tokens.get(2)?)?;
        let port: u16 = tokens.get(3)?.parse().ok()?;
        (Family::of(&addr) == family).then_some((HostPort::Addr { addr, proto, port }, 4))
    }

    /// For messages: `tcp port 8080 (ipv4)` / `tcp port 192.0.2.1:8080`.
    pub fn describe(&self) -> String {
        match self {
            HostPort::Any { family, proto, port } => format!("{} port {port} ({})", proto.name(), family.nfproto()),
            HostPort::Addr { addr, proto, port } => match Family::of(addr) {
                Family::V4 => format!("{} port {}:{port}", proto.name(), format_ip(addr)),
                Family::V6 => format!("{} port [{}]:{port}", proto.name(), format_ip(addr)),
            },
        }
    }
}

/// portmap: the rule masquerading packets that carry mark `bit`.
pub fn masq_bit_rule(bit: u8) -> DynRule {
    let bit = bit & 31;
    let bits = 1u32 << bit;
    let comment = format!("masq b{bit}");
    DynRule {
        chain: CHAIN_PM_MASQ,
        rule: rule(
            CHAIN_PM_MASQ,
            vec![
                expr::masked_eq(expr::meta("mark"), json!(bits), json!(bits)),
                expr::masquerade(),
            ],
            Some(&comment),
        ),
        comment,
        sets: Vec::new(),
    }
}
