//! The nftables side of portmap: one chain per attachment, `pm-<hash>`, and its elements
//! in the host-port maps (see [`crate::nft::layout`]).
//!
//! ```text
//! chain pm-<hash> {
//!     ip saddr 10.88.0.0/16 jump pm-markb13     comment "masq hairpin"    # snat
//!     ip saddr 127.0.0.1 jump pm-markb13        comment "masq localhost"  # snat, IPv4
//!     meta nfproto ipv4 tcp dport 8080 dnat ip to 10.88.0.2:80
//!                                   comment "hostports ipv4 tcp 8080 10.88.0.2 80"
//!     meta nfproto ipv4 udp dport 53 ip daddr 192.0.2.1 dnat ip to 10.88.0.2:53
//!                                   comment "hostip4 192.0.2.1 udp 53 10.88.0.2 53"
//! }
//! hostports: ipv4 . tcp . 8080 : jump pm-<hash>
//! hostip4:   192.0.2.1 . udp . 53 : jump pm-<hash>
//! ```
//!
//! The DNAT rules' comments are the attachment's own record of its elements: DEL reads
//! them over nfnetlink (no portMappings needed), checks that each element still jumps to
//! this chain, and removes elements and chain in one transaction. An element key that
//! another attachment holds makes ADD fail as a whole with "File exists": a host port is
//! never silently taken over.

use super::config::{Mapping, PortmapConf};
use crate::conf;
use crate::nft::expr::{self, Family};
use crate::nft::layout::{self, ElemKey, Verdict};
use crate::nft::netlink::{self, Nfnl};
use crate::nft::{self, Batch, NftErrorKind};
use cnichain_engine::spec::error::{CniError, TRY_AGAIN_LATER};
use cnichain_engine::spec::ipnet::{format_ip, parse_ip, IpNet};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

/// The attachment's chain: `pm-` and 20 hex digits of sha512(network, container, ifname).
pub fn chain_name(network: &str, container_id: &str, ifname: &str) -> String {
    let h = conf::hash_hex(&["portmap", "\0", network, "\0", container_id, "\0", ifname]);
    format!("pm-{}", &h[..20])
}

/// One DNAT rule: which element leads to it and where it sends the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub key: ElemKey,
    pub to: IpAddr,
    pub to_port: u16,
}

impl Dnat {
    fn record(&self) -> String {
        format!("{} {} {}", self.key.record(), format_ip(&self.to), self.to_port)
    }

    fn parse(comment: &str) -> Option<Dnat> {
        let toks: Vec<&str> = comment.split_whitespace().collect();
        let (key, used) = ElemKey::parse_record(&toks)?;
        let to = parse_ip(toks.get(used)?)?;
        let to_port: u16 = toks.get(used + 1)?.parse().ok()?;
        (toks.len() == used + 2).then_some(Dnat { key, to, to_port })
    }

    fn rule(&self) -> Vec<Value> {
        let (family, proto, port, daddr) = match self.key {
            ElemKey::HostPort { family, proto, port } => (family, proto, port, None),
            ElemKey::HostIp { addr, proto, port } => (Family::of(&addr), proto, port, Some(addr)),
            ElemKey::Masq(_) => return Vec::new(),
        };
        let mut r = vec![
            expr::eq(expr::meta("nfproto"), json!(family.nfproto())),
            expr::eq(expr::meta("l4proto"), json!(proto.name())),
            expr::eq(expr::th_dport(), json!(port)),
        ];
        if let Some(a) = daddr {
            r.push(expr::eq(expr::daddr(family), expr::ip(&a)));
        }
        r.push(expr::dnat(&self.to, self.to_port));
        r
    }
}

/// Everything one attachment's ADD writes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub chain: String,
    /// Mark rules (snat) first, then one DNAT rule per mapping and family.
    pub masq_rules: Vec<(Vec<Value>, &'static str)>,
    pub dnats: Vec<Dnat>,
    pub mark_bit: Option<u8>,
}

impl Plan {
    /// The distinct element keys, in order.
    pub fn keys(&self) -> Vec<ElemKey> {
        let mut k: Vec<ElemKey> = Vec::new();
        for d in &self.dnats {
            if !k.contains(&d.key) {
                k.push(d.key);
            }
        }
        k
    }
}

/// Work out the rules for the container's addresses. A mapping whose hostIP is of the
/// other family is skipped for that address (as the reference does); an unspecified
/// hostIP means every local address of its family.
pub fn plan(c: &PortmapConf, chain: String, v4: Option<IpNet>, v6: Option<IpNet>) -> Plan {
    let mark = layout::mark_chain(c.mark_bit);
    let mut masq_rules = Vec::new();
    let mut dnats = Vec::new();
    if c.snat && c.masq_all && (v4.is_some() || v6.is_some()) {
        masq_rules.push((vec![expr::jump(&mark)], "masq all"));
    }
    for pod in [v4, v6].into_iter().flatten() {
        let f = Family::of(&pod.addr);
        if c.snat && !c.masq_all {
            // hairpin, and other pods of the subnet reaching a host port (the reference's
            // iptables rule matches the container address with its mask)
            masq_rules.push((
                vec![expr::eq(expr::saddr(f), expr::network(&pod)), expr::jump(&mark)],
                "masq hairpin",
            ));
            if f == Family::V4 {
                masq_rules.push((
                    vec![
                        expr::eq(expr::saddr(f), expr::ip(&IpAddr::V4(Ipv4Addr::LOCALHOST))),
                        expr::jump(&mark),
                    ],
                    "masq localhost",
                ));
            }
        }
        for m in &c.mappings {
            if let Some(key) = key_for(m, f) {
                dnats.push(Dnat {
                    key,
                    to: pod.addr,
                    to_port: m.container_port,
                });
            }
        }
    }
    Plan {
        chain,
        masq_rules,
        dnats,
        mark_bit: c.snat.then_some(c.mark_bit),
    }
}

fn key_for(m: &Mapping, f: Family) -> Option<ElemKey> {
    match m.host_ip {
        Some(h) if Family::of(&h) != f => None,
        Some(h) if !h.is_unspecified() => Some(ElemKey::HostIp {
            addr: cnichain_engine::spec::ipnet::unmap(h),
            proto: m.proto,
            port: m.host_port,
        }),
        _ => Some(ElemKey::HostPort {
            family: f,
            proto: m.proto,
            port: m.host_port,
        }),
    }
}

fn nl_err(e: std::io::Error) -> CniError {
    CniError::internal(format!("portmap: nfnetlink: {e}"))
}

/// This chain's DNAT records (empty when the chain does not exist).
fn recorded(nl: &mut Nfnl, chain: &str) -> Result<Vec<Dnat>, CniError> {
    let comments = netlink::rule_comments(nl, layout::TABLE, chain).map_err(nl_err)?;
    Ok(comments.iter().filter_map(|c| Dnat::parse(c)).collect())
}

fn verdict(nl: &mut Nfnl, key: &ElemKey) -> Result<Option<(i32, String)>, CniError> {
    netlink::elem_verdict(nl, layout::TABLE, key.map(), &key.kernel_bytes()).map_err(nl_err)
}

fn describe(key: &ElemKey) -> String {
    match key {
        ElemKey::HostPort { family, proto, port } => format!("{} port {port} ({})", proto.name(), family.nfproto()),
        ElemKey::HostIp { addr, proto, port } => format!("{} port {}:{port}", proto.name(), format_ip(addr)),
        ElemKey::Masq(a) => format_ip(a),
    }
}

/// ADD: one transaction that (re)creates the chain with its rules, drops elements an
/// earlier ADD of this attachment made and this one does not, and adds the elements.
pub fn add(p: &Plan, element_comment: &str) -> Result<(), CniError> {
    let mut nl = Nfnl::open().map_err(nl_err)?;
    let existed = netlink::chain_exists(&mut nl, layout::TABLE, &p.chain).map_err(nl_err)?;
    let old = if existed {
        recorded(&mut nl, &p.chain)?
    } else {
        Vec::new()
    };
    let ours = Verdict::Jump(p.chain.clone());
    let keys = p.keys();

    let mut b = Batch::new();
    b.add(layout::chain(&p.chain));
    if existed {
        b.flush(layout::chain(&p.chain));
    }
    for (r, comment) in &p.masq_rules {
        b.add(layout::rule(&p.chain, r.clone(), Some(comment)));
    }
    for d in &p.dnats {
        b.add(layout::rule(&p.chain, d.rule(), Some(&d.record())));
    }
    for o in &old {
        if !keys.contains(&o.key) && verdict(&mut nl, &o.key)?.is_some_and(|(c, t)| ours.matches(c, &t)) {
            b.delete(layout::element_key(&o.key));
        }
    }
    for k in &keys {
        b.add(layout::element(k, &ours, Some(element_comment)));
    }
    match nft::apply_pod(&b, p.mark_bit) {
        Ok(()) => Ok(()),
        Err(e) if e.kind == NftErrorKind::Exists => {
            // Name the host ports another attachment holds.
            let mut taken = Vec::new();
            for k in &keys {
                if let Some((code, target)) = verdict(&mut nl, k)? {
                    if !ours.matches(code, &target) {
                        taken.push(format!("{} (held by nftables chain {target})", describe(k)));
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

/// DEL: remove this attachment's elements (those that still jump to its chain) and its
/// chain, in one transaction. Nothing to do (no process run) when the chain is gone.
pub fn del(chain: &str) -> Result<(), CniError> {
    let mut last = String::new();
    // A concurrent change between the reads and the transaction (ENOENT, EBUSY): read
    // again and retry once.
    for _ in 0..2 {
        let mut nl = Nfnl::open().map_err(nl_err)?;
        if !netlink::chain_exists(&mut nl, layout::TABLE, chain).map_err(nl_err)? {
            // The kernel refuses to delete a chain an element jumps to, so no element of
            // ours can outlive the chain.
            return Ok(());
        }
        let ours = Verdict::Jump(chain.to_string());
        let mut b = Batch::new();
        let mut seen: Vec<ElemKey> = Vec::new();
        for d in recorded(&mut nl, chain)? {
            if seen.contains(&d.key) {
                continue;
            }
            seen.push(d.key);
            if verdict(&mut nl, &d.key)?.is_some_and(|(c, t)| ours.matches(c, &t)) {
                b.delete(layout::element_key(&d.key));
            }
        }
        b.flush(layout::chain(chain));
        b.delete(layout::chain(chain));
        match nft::apply(&b) {
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

/// CHECK: the chain exists, holds a DNAT rule for every expected mapping to the expected
/// address, and every element jumps to it.
pub fn check(p: &Plan) -> Result<(), CniError> {
    let mut nl = Nfnl::open().map_err(nl_err)?;
    if !netlink::chain_exists(&mut nl, layout::TABLE, &p.chain).map_err(nl_err)? {
        return Err(CniError::internal(format!(
            "portmap: nftables chain {} for this container is missing",
            p.chain
        )));
    }
    let have = recorded(&mut nl, &p.chain)?;
    for d in &p.dnats {
        if !have.contains(d) {
            return Err(CniError::internal(format!(
                "portmap: no rule forwarding {} to {}:{} in chain {}",
                describe(&d.key),
                format_ip(&d.to),
                d.to_port,
                p.chain
            )));
        }
    }
    let ours = Verdict::Jump(p.chain.clone());
    for k in p.keys() {
        match verdict(&mut nl, &k)? {
            Some((c, t)) if ours.matches(c, &t) => {}
            Some((_, t)) => {
                return Err(CniError::internal(format!(
                    "portmap: {} leads to chain {t}, not {}",
                    describe(&k),
                    p.chain
                )))
            }
            None => {
                return Err(CniError::internal(format!(
                    "portmap: {} is not in map {}",
                    describe(&k),
                    k.map()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::expr::Proto;

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
            "pm-x".into(),
            Some("10.88.0.2/16".parse().unwrap()),
            Some("fd00::2/64".parse().unwrap()),
        );
        // v4: hairpin + localhost; v6: hairpin
        assert_eq!(p.masq_rules.len(), 3);
        // v4: 8080, 53@192.0.2.1, 8080; v6: 8080, 8443 (::), 8080
        assert_eq!(p.dnats.len(), 6);
        let recs: Vec<String> = p.dnats.iter().map(|d| d.record()).collect();
        assert_eq!(recs[0], "hostports ipv4 tcp 8080 10.88.0.2 80");
        assert_eq!(recs[1], "hostip4 192.0.2.1 udp 53 10.88.0.2 53");
        assert_eq!(recs[4], "hostports ipv6 tcp 8443 fd00::2 443");
        assert_eq!(p.keys().len(), 4, "duplicate keys are one element");
        assert_eq!(p.mark_bit, Some(13));
        for d in &p.dnats {
            assert_eq!(Dnat::parse(&d.record()).as_ref(), Some(d));
        }
    }

    #[test]
    fn snat_off_and_masq_all() {
        let p = plan(
            &conf(false, false, vec![m(1, 1, Proto::Sctp, None)]),
            "pm-x".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            None,
        );
        assert!(p.masq_rules.is_empty());
        assert_eq!(p.mark_bit, None);
        let p = plan(
            &conf(true, true, vec![m(1, 1, Proto::Sctp, None)]),
            "pm-x".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            Some("fd00::2/64".parse().unwrap()),
        );
        assert_eq!(p.masq_rules.len(), 1);
        // a v6-only hostIP is skipped for the v4 address
        let p = plan(
            &conf(true, false, vec![m(1, 1, Proto::Tcp, Some("2001:db8::1"))]),
            "pm-x".into(),
            Some("10.0.0.2/24".parse().unwrap()),
            None,
        );
        assert!(p.dnats.is_empty());
    }

    #[test]
    fn records_reject_garbage() {
        for bad in [
            "",
            "masq hairpin",
            "hostports ipv4 tcp 8080 10.0.0.2",
            "hostports ipv4 tcp 8080 10.0.0.2 80 x",
            "hostports ipv4 tcp 8080 nope 80",
        ] {
            assert_eq!(Dnat::parse(bad), None, "{bad}");
        }
        let c = chain_name("n", "c", "eth0");
        assert!(layout::is_plain_name(&c));
        assert_ne!(c, chain_name("n", "c", "eth1"));
    }
}
