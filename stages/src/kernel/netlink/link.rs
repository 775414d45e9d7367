//! Links: lookup, bridge / veth / ifb creation, deletion, and the per-link settings the
//! stages make (up/down, master, MTU, MAC, promisc, allmulti, txqueuelen, hairpin).

use super::{format_mac, mac6, Netlink};
use crate::kernel::netns::NetNs;
use anyhow::Result;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkIfb, LinkMessageBuilder, LinkUnspec, LinkVeth};

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Promiscuous mode as set by the user (not the count a bridge port adds).
    pub promisc: bool,
    /// IFLA_MASTER: the bridge (or other master) this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_INFO_KIND: "bridge", "veth", "ifb", ...; None for devices without one (lo).
    pub kind: Option<String>,
    /// IFLA_LINK_NETNSID: set when the peer (IFLA_LINK) lives in another netns.
    pub link_netnsid: Option<i32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's netns).
    pub peer_index: Option<u32>,
    pub txqlen: u32,
    /// IFF_ALLMULTI as set by the user.
    pub allmulti: bool,
    /// IFLA_IFALIAS ("" when unset): cnichain names the owner of an ifb there.
    pub alias: String,
}

impl Link {
    fn from_msg(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            master: None,
            kind: None,
            link_netnsid: None,
            peer_index: None,
            txqlen: 0,
            allmulti: m.header.flags.contains(LinkFlags::Allmulti),
            alias: String::new(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(mac) => l.mac = mac6(mac),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Controller(v) if *v != 0 => l.master = Some(*v),
                LinkAttribute::LinkNetNsId(v) => l.link_netnsid = Some(*v),
                LinkAttribute::Link(v) if *v != 0 => l.peer_index = Some(*v),
                LinkAttribute::TxQueueLen(v) => l.txqlen = *v,
                LinkAttribute::IfAlias(a) => l.alias = a.clone(),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// Settings for a new bridge (see [`Netlink::add_bridge_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeOptions {
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub vlan_filtering: Option<bool>,
}

/// The longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

impl Netlink {
    fn one_link(&mut self, msg: LinkMessage, what: String) -> Result<Option<Link>> {
        let op = self.op(&what);
        match self.get(RouteNetlinkMessage::GetLink(msg), &op) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })),
            Err(e) if super::errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name` in this netns, or None.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        if name.is_empty() || name.len() > MAX_IFNAME {
            return Ok(None);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.one_link(m, format!("get link {name:?}"))
    }

    /// The link with this ifindex in this netns, or None.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        self.one_link(link_msg(index), format!("get link {index}"))
    }

    /// Every link in this netns.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let op = self.op("list links");
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), &op)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })
            .collect())
    }

    fn new_link(&mut self, msg: LinkMessage, what: String) -> Result<()> {
        let op = self.op(what);
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    fn set_link(&mut self, msg: LinkMessage, what: String) -> Result<()> {
        let op = self.op(what);
        self.request(RouteNetlinkMessage::SetLink(msg), 0, &op)
    }

    /// Create a bridge, up (as the reference bridge plugin leaves it). EEXIST if the name
    /// is taken.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        self.add_bridge_with(
            name,
            &BridgeOptions {
                mtu,
                ..Default::default()
            },
        )
    }

    /// [`Netlink::add_bridge`] with more settings.
    pub fn add_bridge_with(&mut self, name: &str, opts: &BridgeOptions) -> Result<()> {
        let mut b = LinkBridge::new(name);
        if let Some(mtu) = opts.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = opts.mac {
            b = b.address(mac.to_vec());
        }
        if let Some(v) = opts.vlan_filtering {
            b = b.vlan_filtering(v);
        }
        self.new_link(b.build(), format!("add bridge {name:?}"))
    }

    /// Create a veth pair: `host` in this socket's netns, `peer` created directly inside
    /// `peer_ns` (by fd; never moved), with the same MTU on both ends and `peer_mac` on the
    /// peer. Both ends start down. EEXIST if either name is taken in its netns.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_ns: &NetNs,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let mut p = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns.fd());
        if let Some(mtu) = mtu {
            p = p.mtu(mtu);
        }
        if let Some(mac) = peer_mac {
            p = p.address(mac.to_vec());
        }
        let mut h = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(host);
        if let Some(mtu) = mtu {
            h = h.mtu(mtu);
        }
        let msg = h.set_info_data(InfoData::Veth(InfoVeth::Peer(p.build()))).build();
        let mac_txt = peer_mac.map(|m| format!(" mac {}", format_mac(&m))).unwrap_or_default();
        self.new_link(
            msg,
            format!(
                "add veth {host:?} (peer {peer:?}{mac_txt} in {})",
                peer_ns.path().display()
            ),
        )
    }

    /// Create an ifb device, up (as the reference bandwidth plugin does).
    pub fn add_ifb(&mut self, name: &str) -> Result<()> {
        self.add_ifb_with(name, None)
    }

    /// [`Netlink::add_ifb`] with an MTU (the reference gives the ifb the host veth's MTU).
    pub fn add_ifb_with(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        let mut b = LinkIfb::new(name).up();
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.new_link(b.build(), format!("add ifb {name:?}"))
    }

    /// [`Netlink::set_txqlen`] and the link's alias (at most 255 bytes; the kernel
    /// ignores one given at creation) in one request.
    pub fn set_txqlen_alias(&mut self, index: u32, qlen: u32, alias: &str) -> Result<()> {
        let mut m = LinkUnspec::new_with_index(index).txqueuelen(qlen).build();
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(m, format!("set txqueuelen {qlen} and alias on link {index}"))
    }

    /// Delete a link (a veth takes its peer along; an ifb must be deleted on its own).
    /// ENODEV if there is no such link.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let op = self.op(format!("delete link {index}"));
        self.request(RouteNetlinkMessage::DelLink(link_msg(index)), 0, &op)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).up().build(),
            format!("set link {index} up"),
        )
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).down().build(),
            format!("set link {index} down"),
        )
    }

    /// Enslave `index` to `master` (a bridge). `master == 0` releases it.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).controller(master).build(),
            format!("set master of link {index} to {master}"),
        )
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            format!("set mtu {mtu} on link {index}"),
        )
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).address(mac.to_vec()).build(),
            format!("set mac {} on link {index}", format_mac(&mac)),
        )
    }

    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).promiscuous(on).build(),
            format!("set promisc {} on link {index}", if on { "on" } else { "off" }),
        )
    }

    pub fn set_allmulti(&mut self, index: u32, on: bool) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).allmulticast(on).build(),
            format!("set allmulticast {} on link {index}", if on { "on" } else { "off" }),
        )
    }

    pub fn set_txqlen(&mut self, index: u32, qlen: u32) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).txqueuelen(qlen).build(),
            format!("set txqueuelen {qlen} on link {index}"),
        )
    }

    /// Rename a link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).name(name).build(),
            format!("rename link {index} to {name:?}"),
        )
    }

    /// Move a link into another netns (by fd).
    pub fn set_netns(&mut self, index: u32, ns: &NetNs) -> Result<()> {
        self.set_link(
            LinkUnspec::new_with_index(index).setns_by_fd(ns.fd()).build(),
            format!("move link {index} to {}", ns.path().display()),
        )
    }

    /// Hairpin mode of a bridge port (IFLA_BRPORT_MODE). The link must be enslaved first.
    pub fn set_hairpin(&mut self, port_index: u32, on: bool) -> Result<()> {
        let msg = LinkBridgePort::new(port_index).hairpin(on).build();
        let op = self.op(format!(
            "set hairpin {} on bridge port {port_index}",
            if on { "on" } else { "off" }
        ));
        // RTM_NEWLINK without CREATE: changes the existing link's port data.
        self.request(RouteNetlinkMessage::NewLink(msg), 0, &op)
    }

    /// The hairpin mode of a bridge port; None if the link is not a bridge port (or absent).
    pub fn bridge_port_hairpin(&mut self, port_index: u32) -> Result<Option<bool>> {
        if port_index == 0 || port_index > i32::MAX as u32 {
            return Ok(None);
        }
        let op = self.op(format!("get bridge port {port_index}"));
        let msgs = match self.get(RouteNetlinkMessage::GetLink(link_msg(port_index)), &op) {
            Ok(m) => m,
            Err(e) if super::errno_of(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        for m in &msgs {
            let RouteNetlinkMessage::NewLink(l) = m else { continue };
            for a in &l.attributes {
                let LinkAttribute::LinkInfo(infos) = a else { continue };
                let is_bridge_port = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::PortKind(InfoPortKind::Bridge)));
                if !is_bridge_port {
                    continue;
                }
                for i in infos {
                    if let LinkInfo::PortData(InfoPortData::BridgePort(opts)) = i {
                        for o in opts {
                            if let InfoBridgePort::HairpinMode(v) = o {
                                return Ok(Some(*v));
                            }
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Convenience: the ifindex of `name`, or an ENODEV error naming it.
    pub fn index_of(&mut self, name: &str) -> Result<u32> {
        match self.link_by_name(name)? {
            Some(l) => Ok(l.index),
            None => {
                let op = self.op(format!("find link {name:?}"));
                Err(anyhow::Error::new(super::NetlinkError {
                    op,
                    errno: libc::ENODEV,
                    kernel_msg: None,
                }))
            }
        }
    }
}
