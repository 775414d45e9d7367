//! Routes, with the semantics of the Go netlink library the reference plugins use: proto
//! boot, scope universe unless given, type unicast, table main unless given.

use super::Netlink;
use anyhow::{bail, Result};
use cnichain_engine::spec::ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RT_TABLE_MAIN.
pub const TABLE_MAIN: u32 = 254;

/// A route. On input `dst` None (or a /0) is the default route and a destination's host
/// bits are cleared; `scope` None is universe; `table` None is main. As listed back, every
/// field the kernel reports is filled (`scope` always, `priority` always for IPv6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Option<IpNet>,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub scope: Option<u8>,
    pub table: Option<u32>,
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// Preferred source (RTA_PREFSRC), as Go's `Route.Src`.
    pub src: Option<IpAddr>,
    pub v6: bool,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.dst {
            Some(d) if d.mask_len() > 0 => write!(f, "{}", d.network())?,
            _ => write!(f, "default")?,
        }
        if let Some(gw) = &self.gw {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev {oif}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(p) = self.priority {
            write!(f, " metric {p}")?;
        }
        if self.v6 {
            write!(f, " (ipv6)")?;
        }
        Ok(())
    }
}

fn check_family(r: &RouteSpec) -> Result<()> {
    let fam_ok = |ip: &IpAddr| ip.is_ipv6() == r.v6;
    if let Some(d) = &r.dst {
        if !fam_ok(&d.addr) {
            bail!(
                "route {r}: destination {d} is not {}",
                if r.v6 { "IPv6" } else { "IPv4" }
            );
        }
    }
    if let Some(gw) = &r.gw {
        if !fam_ok(gw) {
            bail!("route {r}: gateway {gw} is not {}", if r.v6 { "IPv6" } else { "IPv4" });
        }
    }
    if let Some(src) = &r.src {
        if !fam_ok(src) {
            bail!("route {r}: source {src} is not {}", if r.v6 { "IPv6" } else { "IPv4" });
        }
    }
    Ok(())
}

/// The message for RTM_NEWROUTE (`delete == false`) or RTM_DELROUTE. A delete leaves the
/// protocol, type and metrics open, and the scope too unless given (RT_SCOPE_NOWHERE), so
/// that it matches the route however it was made, as `ip route del` does.
pub(crate) fn route_msg(r: &RouteSpec, delete: bool) -> Result<RouteMessage> {
    check_family(r)?;
    let dst = r.dst.filter(|d| d.mask_len() > 0).map(|d| d.network());
    let mut m = if r.v6 {
        let mut b = RouteMessageBuilder::<Ipv6Addr>::new();
        if let Some(IpNet {
            addr: IpAddr::V6(a),
            prefix,
        }) = dst
        {
            b = b.destination_prefix(a, prefix);
        }
        if let Some(IpAddr::V6(gw)) = r.gw {
            b = b.gateway(gw);
        }
        if let Some(IpAddr::V6(src)) = r.src {
            b = b.pref_source(src);
        }
        b.build()
    } else {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new();
        if let Some(IpNet {
            addr: IpAddr::V4(a),
            prefix,
        }) = dst
        {
            b = b.destination_prefix(a, prefix);
        }
        if let Some(IpAddr::V4(gw)) = r.gw {
            b = b.gateway(gw);
        }
        if let Some(IpAddr::V4(src)) = r.src {
            b = b.pref_source(src);
        }
        b.build()
    };
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    let table = r.table.unwrap_or(TABLE_MAIN);
    if table > 255 {
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.attributes.push(RouteAttribute::Table(table));
    } else {
        m.header.table = table as u8;
    }
    if delete {
        m.header.protocol = RouteProtocol::Unspec;
        m.header.kind = RouteType::Unspec;
        m.header.scope = r.scope.map(RouteScope::from).unwrap_or(RouteScope::NoWhere);
    } else {
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        m.header.scope = r.scope.map(RouteScope::from).unwrap_or(RouteScope::Universe);
        let mut metrics = Vec::new();
        if let Some(mtu) = r.mtu {
            metrics.push(RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = r.advmss {
            metrics.push(RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            m.attributes.push(RouteAttribute::Metrics(metrics));
        }
    }
    Ok(m)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A unicast IPv4/IPv6 route as a `RouteSpec`; None for anything else.
pub(crate) fn route_from_msg(m: &RouteMessage) -> Option<RouteSpec> {
    let v6 = match m.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut r = RouteSpec {
        v6,
        scope: Some(m.header.scope.into()),
        table: Some(u32::from(m.header.table)),
        ..Default::default()
    };
    let plen = m.header.destination_prefix_length;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) if plen > 0 => r.dst = route_addr(d).and_then(|ip| IpNet::new(ip, plen)),
            RouteAttribute::Gateway(g) => r.gw = route_addr(g),
            RouteAttribute::PrefSource(s) => r.src = route_addr(s),
            RouteAttribute::Oif(o) => r.oif = Some(*o),
            RouteAttribute::Priority(p) => r.priority = Some(*p),
            RouteAttribute::Table(t) => r.table = Some(*t),
            RouteAttribute::Metrics(ms) => {
                for mm in ms {
                    match mm {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

impl Netlink {
    /// Add a route. EEXIST if an identical one exists.
    pub fn add_route(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, false)?;
        let op = self.op(format!("add route {r}"));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// Add a route beside any to the same destination (NLM_F_CREATE without EXCL, as the
    /// reference's netlink library sends it for ConfigureIface): the kernel puts it
    /// first. EEXIST only if an identical one exists.
    pub fn add_route_beside(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, false)?;
        let op = self.op(format!("add route {r}"));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE, &op)
    }

    /// Delete a route (matched on destination, table, and gateway / oif / priority / scope /
    /// source when given). ESRCH if there is none.
    pub fn del_route(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, true)?;
        let op = self.op(format!("delete route {r}"));
        self.request(RouteNetlinkMessage::DelRoute(m), 0, &op)
    }

    /// The unicast routes of the main table, IPv4 or IPv6.
    pub fn routes(&mut self, v6: bool) -> Result<Vec<RouteSpec>> {
        self.routes_in(v6, Some(TABLE_MAIN))
    }

    /// The unicast routes of one table, or of every table with None.
    pub fn routes_in(&mut self, v6: bool, table: Option<u32>) -> Result<Vec<RouteSpec>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let op = self.op(format!("list {} routes", if v6 { "IPv6" } else { "IPv4" }));
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(req), &op)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_from_msg(r),
                _ => None,
            })
            .filter(|r| r.v6 == v6)
            .filter(|r| table.is_none() || r.table == table)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn builds_like_go_netlink() {
        let r = RouteSpec {
            dst: Some(net("10.1.2.3/16")),
            gw: Some("10.1.0.1".parse().unwrap()),
            oif: Some(4),
            priority: Some(100),
            mtu: Some(1400),
            ..Default::default()
        };
        let m = route_msg(&r, false).unwrap();
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.destination_prefix_length, 16);
        assert!(m.attributes.contains(&RouteAttribute::Destination(RouteAddress::Inet(
            "10.1.0.0".parse().unwrap()
        ))));
        let back = route_from_msg(&m).unwrap();
        assert_eq!(back.dst, Some(net("10.1.0.0/16")));
        assert_eq!(back.gw, r.gw);
        assert_eq!(back.oif, Some(4));
        assert_eq!(back.priority, Some(100));
        assert_eq!(back.mtu, Some(1400));
        assert_eq!(back.table, Some(254));

        let d = route_msg(&r, true).unwrap();
        assert_eq!(d.header.scope, RouteScope::NoWhere);
        assert_eq!(d.header.protocol, RouteProtocol::Unspec);
        assert!(!d.attributes.iter().any(|a| matches!(a, RouteAttribute::Metrics(_))));

        // default route, big table
        let def = RouteSpec {
            dst: Some(net("0.0.0.0/0")),
            gw: Some("10.1.0.1".parse().unwrap()),
            table: Some(1000),
            ..Default::default()
        };
        let m = route_msg(&def, false).unwrap();
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(route_from_msg(&m).unwrap().table, Some(1000));
        assert_eq!(route_from_msg(&m).unwrap().dst, None);
    }

    #[test]
    fn refuses_mixed_families() {
        let r = RouteSpec {
            dst: Some(net("10.0.0.0/8")),
            v6: true,
            ..Default::default()
        };
        assert!(route_msg(&r, false).is_err());
        let r = RouteSpec {
            gw: Some("fe80::1".parse().unwrap()),
            ..Default::default()
        };
        assert!(route_msg(&r, false).is_err());
    }
}
