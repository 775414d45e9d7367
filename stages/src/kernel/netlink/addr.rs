//! Addresses. An `IpNet` keeps its host bits: "10.1.0.5/16" adds address 10.1.0.5 with a
//! /16 mask (and, for IPv4 shorter than /31, the broadcast 10.1.255.255, as `ip addr add`
//! and the Go netlink library do).

use super::Netlink;
use anyhow::Result;
use cnichain_engine::spec::ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::AddressMessageBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IFA_F_NODAD: skip duplicate address detection (IPv6).
pub const IFA_F_NODAD: u32 = 0x02;
/// IFA_F_NOPREFIXROUTE: do not add the prefix route for the address.
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    /// The local address with its prefix length (host bits kept).
    pub addr: IpNet,
    /// RT_SCOPE_*: 0 universe (global), 253 link, 254 host.
    pub scope: u8,
    /// IFA_F_* flags (IFA_FLAGS when present, else the header's 8 bits).
    pub flags: u32,
}

impl Addr {
    fn from_msg(m: &AddressMessage) -> Option<Addr> {
        let mut local = None;
        let mut address = None;
        let mut flags = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = Some(f.bits()),
                _ => {}
            }
        }
        let ip = local.or(address)?;
        let addr = IpNet::new(ip, m.header.prefix_len)?;
        Some(Addr {
            index: m.header.index,
            addr,
            scope: m.header.scope.into(),
            flags: flags.unwrap_or(u32::from(m.header.flags.bits())),
        })
    }
}

fn addr_msg(index: u32, addr: &IpNet) -> AddressMessage {
    let prefix = addr.mask_len();
    match addr.addr {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, prefix)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a, prefix)
            .build(),
    }
}

impl Netlink {
    /// Add `addr` to link `index`. EEXIST if it is already there.
    pub fn add_addr(&mut self, index: u32, addr: &IpNet) -> Result<()> {
        self.add_addr_flags(index, addr, 0)
    }

    /// [`Netlink::add_addr`] with IFA_F_* flags, e.g. [`IFA_F_NODAD`].
    pub fn add_addr_flags(&mut self, index: u32, addr: &IpNet, flags: u32) -> Result<()> {
        let mut m = addr_msg(index, addr);
        if flags != 0 {
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(flags)));
        }
        let op = self.op(format!("add address {addr} to link {index}"));
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// Remove `addr` (address and prefix length) from link `index`. EADDRNOTAVAIL if absent.
    pub fn del_addr(&mut self, index: u32, addr: &IpNet) -> Result<()> {
        let m = addr_msg(index, addr);
        let op = self.op(format!("delete address {addr} from link {index}"));
        self.request(RouteNetlinkMessage::DelAddress(m), 0, &op)
    }

    /// The addresses of link `index` (every link's with None), IPv4 and IPv6.
    pub fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>> {
        let what = match index {
            Some(i) => format!("list addresses of link {i}"),
            None => "list addresses".to_string(),
        };
        let op = self.op(what);
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Unspec;
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(req), &op)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Addr::from_msg(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_bits() {
        let n: IpNet = "10.1.0.5/16".parse().unwrap();
        let m = addr_msg(7, &n);
        assert_eq!(m.header.prefix_len, 16);
        assert_eq!(m.header.index, 7);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local("10.1.0.5".parse().unwrap())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast("10.1.255.255".parse().unwrap())));
        let back = Addr::from_msg(&m).unwrap();
        assert_eq!(back.addr, n);
        let n6: IpNet = "2001:db8::5/64".parse().unwrap();
        let m6 = addr_msg(3, &n6);
        assert_eq!(Addr::from_msg(&m6).unwrap().addr, n6);
    }
}
