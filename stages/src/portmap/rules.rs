//! The nftables side of portmap: elements in the flat layout of [`crate::kernel::nft::layout`],
//! no chain of its own. For a pod 10.88.0.2/16 with `8080->80/tcp` and snat:
//!
//! ```text
//! pm-port4-to:   tcp . 8080 : 10.88.0.2                                comment "<id> <hint>"
//! pm-port4-port: tcp . 8080 : 80                                       comment "<id> <hint>"
//! pm-snat4-b13:  10.88.0.0 . 10.88.255.255 . tcp . 8080   (hairpin: pods of the subnet)
//!                127.0.0.1 . 127.0.0.1 . tcp . 8080       (localhost, IPv4)
//! records:       "<id>" . 0   comment "port4 tcp 8080 10.88.0.2/16 80 hairpin 13"
//! ```
//!
//! A hostIP mapping uses pm-ip4-* / pm-snatip4-* with the host address in front of the
//! protocol; masqAll puts the whole family (0.0.0.0 . 255.255.255.255) in the snat set.
//! The records are the attachment's own list of what it wrote: DEL reads them by key (no
//! portMappings needed), deletes each element it still owns (read back first) and the
//! records, in one transaction. Elements are added with `create` (NLM_F_CREATE |
//! NLM_F_EXCL in the nfnetlink batch): a host port another attachment holds makes ADD
//! fail as a whole with EEXIST, nothing written; a host port is never silently taken
//! over. The transactions are nfnetlink element batches sent on our own socket; only an
//! ADD that needs a per-prefix / per-bit rule for the first time (or finds no table)
//! runs `nft` (see [`crate::kernel::nft::apply_pod`]).

use super::config::{Mapping, PortmapConf};
use crate::kernel::nft::expr::Family;
use crate::kernel::nft::hostport::{self, HostPort};
use crate::kernel::nft::layout::{self, DynRule, Elem, Field};
use crate::kernel::nft::netlink::Nfnl;
use crate::kernel::nft::{self, records, Batch, Nft, NftErrorKind};
use crate::shared::gc::{self, ValidSet};
use cnichain_engine::spec::error::{CniError, TRY_AGAIN_LATER};
use cnichain_engine::spec::ipnet::{format_ip, unmap, IpNet};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

/// The attachment's owner id (see [`records`]): `p` and 14 hex digits.
pub fn owner_id(network: &str, container_id: &str, ifname: &str) -> String {
    records::owner_id('p', "portmap", network, container_id, ifname)
}

/// Which sources of a mapping are masqueraded (and with which mark bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snat {
    None,
    /// The pod's own subnet (hairpin, other pods of the bridge) and, for IPv4, 127.0.0.1.
    Hairpin(u8),
    /// Every source (masqAll).
    All(u8),
}

/// One DNAT: the host port, the pod address (with its subnet) and port, and its snat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub host: HostPort,
    pub to: IpNet,
    pub to_port: u16,
    pub snat: Snat,
}

impl Dnat {
    /// `<host record> <pod/prefix> <container port> none|hairpin <bit>|all <bit>`
    pub fn record(&self) -> String {
        let snat = match self.snat {
            Snat::None => "none".to_string(),
            Snat::Hairpin(b) => format!("hairpin {b}"),
            Snat::All(b) => format!("all {b}"),
        };
        format!(
            "{} {}/{} {} {snat}",
            self.host.record(),
            format_ip(&self.to.addr),
            self.to.mask_len(),
            self.to_port
        )
    }

    pub fn parse(record: &str) -> Option<Dnat> {
        let toks: Vec<&str> = record.split_whitespace().collect();
        let (host, used) = HostPort::parse_record(&toks)?;
        let to: IpNet = toks.get(used)?.parse().ok()?;
        let to = IpNet::new(unmap(to.addr), to.mask_len())?;
        let to_port: u16 = toks.get(used + 1)?.parse().ok()?;
        let bit = || -> Option<u8> { toks.get(used + 3)?.parse().ok().filter(|b| *b < 32) };
        let (snat, len) = match *toks.get(used + 2)? {
            "none" => (Snat::None, used + 3),
            "hairpin" => (Snat::Hairpin(bit()?), used + 4),
            "all" => (Snat::All(bit()?), used + 4),
            _ => return None,
        };
        (toks.len() == len && Family::of(&to.addr) == host.family()).then_some(Dnat {
            host,
            to,
            to_port,
            snat,
        })
    }

    /// The sources whose packets to this host port are masqueraded, and the mark bit.
    pub fn snat_sources(&self) -> (Vec<IpNet>, u8) {
        let f = Family::of(&self.to.addr);
        match self.snat {
            Snat::None => (Vec::new(), 0),
            Snat::All(bit) => {
                let any = match f {
                    Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                };
                (IpNet::new(any, 0).into_iter().collect(), bit)
            }
            Snat::Hairpin(bit) => {
                let own = self.to.network();
                let mut v = vec![own];
                let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
                if f == Family::V4 && !own.contains(lo) {
                    v.push(IpNet::host(lo));
                }
                (v, bit)
            }
        }
    }

    /// Every element this DNAT owns, with its data in a map.
    pub fn elements(&self) -> Vec<(Elem, Option<Field>)> {
        let mut v = vec![
            (self.host.to_elem(), Some(Field::Addr(unmap(self.to.addr)))),
            (self.host.port_elem(), Some(Field::Port(self.to_port))),
        ];
        let (sources, bit) = self.snat_sources();
        for s in sources {
            v.push((self.host.snat_elem(&s, bit), None));
        }
        v
    }

    /// The per-prefix / per-bit rules the snat elements need.
    pub fn rules(&self) -> Vec<DynRule> {
        let (sources, bit) = self.snat_sources();
        let mut v: Vec<DynRule> = sources.iter().map(|s| self.host.snat_rule(s.mask_len(), bit)).collect();
        if !sources.is_empty() {
            v.push(hostport::masq_bit_rule(bit));
        }
        v
    }
}

/// Everything one attachment's ADD writes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    /// The network's name, for the records (GC finds a network's attachments by it).
    pub network: String,
    /// One per distinct host port (the first mapping of a host port wins, as the first
    /// matching rule does in the reference).
    pub dnats: Vec<Dnat>,
}

impl Plan {
    /// Every element of the plan (distinct), with data.
    pub fn elements(&self) -> Vec<(Elem, Option<Field>)> {
        // A set, not a scan of `out`: a pod may map thousands of ports.
        let mut seen: HashSet<Elem> = HashSet::new();
        let mut out: Vec<(Elem, Option<Field>)> = Vec::new();
        for d in &self.dnats {
            for e in d.elements() {
                if seen.insert(e.0.clone()) {
                    out.push(e);
                }
            }
        }
        out
    }

    pub fn rules(&self) -> Vec<DynRule> {
        self.dnats.iter().flat_map(|d| d.rules()).collect()
    }

    /// Append the creation of the plan's elements (comment `<id> <hint>`) and records.
    pub fn write(&self, b: &mut Batch, hint: &str) -> Result<(), CniError> {
        let comment = records::comment(&self.id, hint);
        for (e, data) in self.elements() {
            b.create_elem(&e, data.as_ref(), &comment);
        }
        let recs: Vec<String> = self.dnats.iter().map(Dnat::record).collect();
        records::write(b, &self.id, &self.network, &recs).map_err(|e| CniError::internal(format!("portmap: {e}")))
    }
}

/// The plan for this attachment: per container address (first IPv4, first IPv6), one
/// DNAT per mapping whose hostIP is unset or of that family (a hostIP of the other
/// family is skipped for that address, as the reference does); an unspecified hostIP
/// means every local address of its family.
pub fn plan(c: &PortmapConf, id: String, v4: Option<IpNet>, v6: Option<IpNet>) -> Plan {
    let snat = match (c.snat, c.masq_all) {
        (false, _) => Snat::None,
        (true, false) => Snat::Hairpin(c.mark_bit),
        (true, true) => Snat::All(c.mark_bit),
    };
    let mut dnats: Vec<Dnat> = Vec::new();
    let mut taken: HashSet<HostPort> = HashSet::new();
    for pod in [v4, v6].into_iter().flatten() {
        let f = Family::of(&pod.addr);
        let Some(to) = IpNet::new(unmap(pod.addr), pod.mask_len()) else {
            continue;
        };
        for m in &c.mappings {
            if let Some(host) = host_port(m, f) {
                if taken.insert(host) {
                    dnats.push(Dnat {
                        host,
                        to,
                        to_port: m.container_port,
                        snat,
                    });
                }
            }
        }
    }
    Plan {
        id,
        network: c.network.clone(),
        dnats,
    }
}

fn host_port(m: &Mapping, f: Family) -> Option<HostPort> {
    match m.host_ip {
        Some(h) if Family::of(&h) != f => None,
        Some(h) if !h.is_unspecified() => Some(HostPort::Addr {
            addr: unmap(h),
            proto: m.proto,
            port: m.host_port,
        }),
        _ => Some(HostPort::Any {
            family: f,
            proto: m.proto,
            port: m.host_port,
        }),
    }
}

fn nl_err(e: std::io::Error) -> CniError {
    CniError::internal(format!("portmap: nfnetlink: {e}"))
}

/// This attachment's records, parsed, and how many there are (unreadable ones included).
fn recorded(nl: &mut Nfnl, id: &str) -> Result<(Vec<Dnat>, usize), CniError> {
    let recs = records::read(nl, id).map_err(nl_err)?;
    Ok((recs.iter().filter_map(|r| Dnat::parse(r)).collect(), recs.len()))
}

/// Append deletes of the elements of `dnats` that still carry `id`, each once.
fn delete_owned(nl: &mut Nfnl, b: &mut Batch, id: &str, dnats: &[Dnat]) -> Result<(), CniError> {
    let mut seen: HashSet<Elem> = HashSet::new();
    for d in dnats {
        for (e, _) in d.elements() {
            if !seen.insert(e.clone()) {
                continue;
            }
            if records::owned_by(nl, &e, id).map_err(nl_err)? {
                b.delete_elem(&e);
            }
        }
    }
    Ok(())
}

/// Who holds an element (its comment without the id).
fn holder(info: &crate::kernel::nft::elements::ElemInfo) -> String {
    let rest = info.comment.split_once(' ').map(|x| x.1).unwrap_or("");
    if rest.is_empty() {
        info.owner().to_string()
    } else {
        rest.to_string()
    }
}

/// ADD: one transaction that removes what an earlier ADD of this attachment wrote (still
/// owned by it), adds any per-prefix / per-bit rule not there yet, and creates the
/// elements and records.
pub fn add(nft: &Nft, p: &Plan, hint: &str) -> Result<(), CniError> {
    let mut nl = Nfnl::open().map_err(nl_err)?;
    let (old, old_count) = recorded(&mut nl, &p.id)?;
    let mut b = Batch::new();
    layout::ensure_rules(&mut nl, &mut b, &p.rules()).map_err(nl_err)?;
    delete_owned(&mut nl, &mut b, &p.id, &old)?;
    records::remove(&mut b, &p.id, old_count);
    p.write(&mut b, hint)?;
    cnichain_engine::fault::point("portmap.before-commit")?;
    match nft::apply_pod(nft, &mut nl, &b) {
        Ok(()) => cnichain_engine::fault::point("portmap.after-commit"),
        Err(e) if e.kind == NftErrorKind::Exists => {
            // Name the host ports another attachment holds.
            let mut taken = Vec::new();
            for d in &p.dnats {
                if let Some(info) = d.host.to_elem().get(&mut nl).map_err(nl_err)? {
                    if info.owner() != p.id {
                        taken.push(format!("{} (held by {})", d.host.describe(), holder(&info)));
                    }
                }
            }
            let what = if taken.is_empty() {
                e.to_string()
            } else {
                taken.join(", ")
            };
            Err(CniError::new(
                TRY_AGAIN_LATER,
                format!(
                    "portmap: host port already mapped to another container: {what}; it is free again once \
                     that container's DEL has run"
                ),
            ))
        }
        Err(e) => Err(CniError::internal(format!(
            "portmap: failed to set up port mappings: {e}"
        ))),
    }
}

/// DEL: remove this attachment's elements (those that still carry its id) and its
/// records, in one nfnetlink transaction. Nothing to do when it has no records.
pub fn del(nft: &Nft, id: &str) -> Result<(), CniError> {
    let mut last = String::new();
    // A concurrent change between the reads and the transaction (ENOENT): read again and
    // retry once.
    for _ in 0..2 {
        let mut nl = Nfnl::open().map_err(nl_err)?;
        let (old, count) = recorded(&mut nl, id)?;
        if count == 0 {
            return Ok(());
        }
        let mut b = Batch::new();
        delete_owned(&mut nl, &mut b, id, &old)?;
        records::remove(&mut b, id, count);
        match nft::apply_on(nft, &mut nl, &b) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.kind, NftErrorKind::NotFound | NftErrorKind::Busy) => last = e.to_string(),
            Err(e) => {
                return Err(CniError::internal(format!(
                    "portmap: failed to remove port mappings: {e}"
                )))
            }
        }
    }
    Err(CniError::internal(format!(
        "portmap: failed to remove port mappings: {last}"
    )))
}

/// GC: remove the port mappings of every attachment of the network that the valid set
/// does not list (found by their network record; their records say what to remove).
pub fn gc(nft: &Nft, valid: &ValidSet) -> Result<(), CniError> {
    let keep: std::collections::HashSet<String> = valid.keys(owner_id).into_iter().collect();
    let owners = records::owners_of(&mut Nfnl::open().map_err(nl_err)?, 'p', &valid.network).map_err(nl_err)?;
    gc::each_stale(owners.iter().filter(|id| !keep.contains(*id)), |id| {
        tracing::debug!(network = %valid.network, id = %id, "portmap gc: removing stale port mappings");
        del(nft, id)
    })
}

/// CHECK: every expected host port leads to the expected address and port, its masquerade
/// elements are there, all owned by this attachment.
pub fn check(p: &Plan) -> Result<(), CniError> {
    let mut nl = Nfnl::open().map_err(nl_err)?;
    let fail = |msg: String| Err(CniError::internal(format!("portmap: {msg}")));
    for d in &p.dnats {
        let what = d.host.describe();
        for (e, data) in d.elements() {
            let Some(info) = e.get(&mut nl).map_err(nl_err)? else {
                return fail(format!("{what}: no element in {}", e.set));
            };
            if info.owner() != p.id {
                return fail(format!("{what}: the element in {} belongs to {}", e.set, holder(&info)));
            }
            if let Some(want) = data {
                if info.data.as_deref() != Some(&want.kernel_bytes()[..]) {
                    return fail(format!(
                        "{what} does not forward to {}:{} ({} differs)",
                        format_ip(&d.to.addr),
                        d.to_port,
                        e.set
                    ));
                }
            }
        }
        for r in d.rules() {
            if !layout::has_rule(&mut nl, &r).map_err(nl_err)? {
                return fail(format!("rule \"{}\" is missing from chain {}", r.comment, r.chain));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::expr::Proto;

    fn conf(snat: bool, masq_all: bool, mappings: Vec<Mapping>) -> PortmapConf {
        PortmapConf {
            network: "n".into(),
            snat,
            masq_all,
            mark_bit: 13,
            mappings,
        }
    }

    fn m(hp: u16, cp: u16, proto: Proto, host_ip: Option<&str>) -> Mapping {
        Mapping {
            host_port: hp,
            container_port: cp,
            proto,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
        }
    }

    #[test]
    fn dual_stack_plan() {
        let c = conf(
            true,
            false,
            vec![
                m(8080, 80, Proto::Tcp, None),
                m(53, 53, Proto::Udp, Some("192.0.2.1")),
                m(8443, 443, Proto::Tcp, Some("::")),
                m(8080, 81, Proto::Tcp, None),
            ],
        );
        let p = plan(
            &c,
            "px".into(),
            Some("10.88.0.2/16".parse().unwrap()),
            Some("fd00::2/64".parse().unwrap()),
        );
        // v4: 8080, 53@192.0.2.1 (8080 again: the first wins); v6: 8080, 8443 (::)
        assert_eq!(p.dnats.len(), 4);
        let recs: Vec<String> = p.dnats.iter().map(|d| d.record()).collect();
        assert_eq!(recs[0], "port4 tcp 8080 10.88.0.2/16 80 hairpin 13");
        assert_eq!(recs[1], "ip4 192.0.2.1 udp 53 10.88.0.2/16 53 hairpin 13");
        assert_eq!(recs[3], "port6 tcp 8443 fd00::2/64 443 hairpin 13");
        for d in &p.dnats {
            assert_eq!(Dnat::parse(&d.record()).as_ref(), Some(d));
        }
        // v4: to, port, subnet, localhost; v6: to, port, subnet
        assert_eq!(p.dnats[0].elements().len(), 4);
        assert_eq!(p.dnats[2].elements().len(), 3);
        assert_eq!(p.elements().len(), 4 + 4 + 3 + 3);
        let rules: Vec<String> = p.dnats[0].rules().iter().map(|r| r.comment.clone()).collect();
        assert_eq!(rules, ["snat /16 b13", "snat /32 b13", "masq b13"]);
        assert_eq!(p.dnats[1].rules()[0].chain, layout::CHAIN_SNATIP4);
    }

    #[test]
    fn snat_off_and_masq_all() {
        let p = plan(
            &conf(false, false, vec![m(1, 1, Proto::Sctp, None)]),
            "px".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            None,
        );
        assert_eq!(p.dnats[0].snat, Snat::None);
        assert_eq!(p.elements().len(), 2);
        assert!(p.rules().is_empty());
        let p = plan(
            &conf(true, true, vec![m(1, 1, Proto::Sctp, None)]),
            "px".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            Some("fd00::2/64".parse().unwrap()),
        );
        assert_eq!(p.dnats[0].snat, Snat::All(13));
        assert_eq!(p.dnats[0].snat_sources().0[0].to_string(), "0.0.0.0/0");
        assert_eq!(p.dnats[1].snat_sources().0[0].to_string(), "::/0");
        assert_eq!(p.dnats[0].record(), "port4 sctp 1 10.0.0.2/24 1 all 13");
        // a v6-only hostIP is skipped for the v4 address
        let p = plan(
            &conf(true, false, vec![m(1, 1, Proto::Tcp, Some("2001:db8::1"))]),
            "px".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            None,
        );
        assert!(p.dnats.is_empty());
        // a subnet holding 127.0.0.1 needs no separate localhost element
        let d = Dnat {
            host: HostPort::Any {
                family: Family::V4,
                proto: Proto::Tcp,
                port: 1,
            },
            to: "127.0.0.5/8".parse().unwrap(),
            to_port: 1,
            snat: Snat::Hairpin(3),
        };
        assert_eq!(d.snat_sources().0.len(), 1);
    }

    #[test]
    fn records_reject_garbage() {
        for bad in [
            "",
            "port4 tcp 8080 10.0.0.2/24 80",
            "port4 tcp 8080 10.0.0.2/24 80 hairpin",
            "port4 tcp 8080 10.0.0.2/24 80 hairpin 32",
            "port4 tcp 8080 10.0.0.2/24 80 none x",
            "port4 tcp 8080 nope 80 none",
            "port4 tcp 8080 fd00::2/64 80 none",
            "port4 tcp 8080 10.0.0.2/24 80 sometimes",
        ] {
            assert_eq!(Dnat::parse(bad), None, "{bad}");
        }
        let a = owner_id("n", "c", "eth0");
        assert!(a.starts_with('p') && a.len() == 15);
        assert_ne!(a, owner_id("n", "c", "eth1"));
    }
}
