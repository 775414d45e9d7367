//! Conntrack entries over ctnetlink (no `conntrack` binary needed).
//!
//! portmap deletes the UDP entries whose original destination port is a newly mapped
//! host port, as the reference does (`DeleteConntrackEntriesForDstPort`): an entry made
//! before the mapping existed (say, a client retrying against a port nobody served yet)
//! would otherwise keep matching the client's packets and never be DNATed.
//!
//! The reference dumps the family's whole conntrack table into memory and filters it in
//! userspace. Here the kernel filters the dump (CTA_FILTER, Linux 5.10 and later): by
//! protocol and destination port when one port is flushed, by protocol (UDP only) when
//! several are (one walk of the table instead of one per port), and the rest is checked
//! as each answer arrives, keeping only the entries to delete. An older kernel ignores
//! CTA_FILTER and sends every entry; the same check then does all the filtering, still
//! streamed. Matching entries are deleted one by one (by original tuple and zone).

use super::expr::Family;
use super::netlink::{
    attr, attrs, put_attr, put_nested, Nfnl, NFNL_SUBSYS_CTNETLINK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use std::collections::HashSet;
use std::io;

const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const IPPROTO_UDP: u8 = 17;

/// CTA_FILTER and its CTA_FILTER_ORIG_FLAGS (a u32 of the kernel's CTA_FILTER_F_* bits).
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;

/// Delete every `family` conntrack entry for UDP whose original destination port is one
/// of `ports`, in the calling thread's network namespace. Returns how many were deleted.
pub fn delete_udp_by_dport(family: Family, ports: &[u16]) -> io::Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let af = af(family);
    let mut nl = Nfnl::open()?;
    let mut deleted = 0;
    for req in udp_entries(&mut nl, af, ports)? {
        match nl.request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            af,
            &req,
        ) {
            Ok(_) => deleted += 1,
            // gone meanwhile (timed out, or deleted by someone else)
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// How many `family` UDP conntrack entries have `port` as original destination port.
pub fn count_udp_by_dport(family: Family, port: u16) -> io::Result<usize> {
    let mut nl = Nfnl::open()?;
    Ok(udp_entries(&mut nl, af(family), &[port])?.len())
}

/// How many entries the kernel sends for the filtered dump [`delete_udp_by_dport`] makes
/// for `ports` (before the check in userspace): shows whether the kernel filters.
pub fn dumped_for(family: Family, ports: &[u16]) -> io::Result<usize> {
    let mut nl = Nfnl::open()?;
    let single = (ports.len() == 1).then(|| ports[0]);
    let mut n = 0;
    nl.request_each(
        NFNL_SUBSYS_CTNETLINK,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        af(family),
        &dump_filter(single),
        |_| n += 1,
    )?;
    Ok(n)
}

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// The dump request's attributes: a filter on the original tuple's protocol (UDP) and,
/// for a single port, its destination port.
fn dump_filter(port: Option<u16>) -> Vec<u8> {
    let mut proto = Vec::new();
    put_attr(&mut proto, CTA_PROTO_NUM, &[IPPROTO_UDP]);
    let mut flags = CTA_FILTER_F_CTA_PROTO_NUM;
    if let Some(p) = port {
        put_attr(&mut proto, CTA_PROTO_DST_PORT, &p.to_be_bytes());
        flags |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
    }
    let mut tuple = Vec::new();
    put_nested(&mut tuple, CTA_TUPLE_PROTO, &proto);
    let mut filter = Vec::new();
    put_attr(&mut filter, CTA_FILTER_ORIG_FLAGS, &flags.to_ne_bytes());
    let mut a = Vec::new();
    put_nested(&mut a, CTA_TUPLE_ORIG, &tuple);
    put_nested(&mut a, CTA_FILTER, &filter);
    a
}

/// The matching entries, each as the attributes of its delete request: the original
/// tuple as the kernel gave it, plus the zone. Only these are kept: the dump is read
/// message by message.
fn udp_entries(nl: &mut Nfnl, af: u8, ports: &[u16]) -> io::Result<Vec<Vec<u8>>> {
    let wanted: HashSet<u16> = ports.iter().copied().collect();
    let single = (wanted.len() == 1).then(|| ports[0]);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let each = |e: &[u8]| {
        if let Some(req) = delete_request(e, &wanted) {
            out.push(req);
        }
    };
    let filtered = nl.request_each(
        NFNL_SUBSYS_CTNETLINK,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        af,
        &dump_filter(single),
        each,
    );
    match filtered {
        Ok(()) => Ok(out),
        // A kernel that knows CTA_FILTER but not this use of it: the unfiltered dump.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)) => {
            out.clear();
            nl.request_each(
                NFNL_SUBSYS_CTNETLINK,
                IPCTNL_MSG_CT_GET,
                NLM_F_REQUEST | NLM_F_DUMP,
                af,
                &[],
                |e| {
                    if let Some(req) = delete_request(e, &wanted) {
                        out.push(req);
                    }
                },
            )?;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// The delete request for one dumped entry when it is UDP to one of `ports`.
fn delete_request(e: &[u8], ports: &HashSet<u16>) -> Option<Vec<u8>> {
    let all = attrs(e);
    let (_, orig, orig_raw) = all.iter().find(|a| a.0 == CTA_TUPLE_ORIG)?;
    let proto = attr(orig, CTA_TUPLE_PROTO)?;
    let num = attr(proto, CTA_PROTO_NUM).and_then(|b| b.first().copied());
    let dport = attr(proto, CTA_PROTO_DST_PORT)
        .filter(|b| b.len() == 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    if num != Some(IPPROTO_UDP) || !dport.is_some_and(|p| ports.contains(&p)) {
        return None;
    }
    let mut req = orig_raw.to_vec();
    while req.len() % 4 != 0 {
        req.push(0);
    }
    if let Some((_, _, zone_raw)) = all.iter().find(|a| a.0 == CTA_ZONE) {
        req.extend_from_slice(zone_raw);
        while req.len() % 4 != 0 {
            req.push(0);
        }
    }
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_request_bytes() {
        let a = dump_filter(Some(5353));
        let orig = attr(&a, CTA_TUPLE_ORIG)
            .and_then(|t| attr(t, CTA_TUPLE_PROTO))
            .unwrap_or_default();
        assert_eq!(attr(orig, CTA_PROTO_NUM), Some(&[17u8][..]));
        assert_eq!(attr(orig, CTA_PROTO_DST_PORT), Some(&[0x14u8, 0xe9][..]));
        let flags = attr(&a, CTA_FILTER)
            .and_then(|f| attr(f, CTA_FILTER_ORIG_FLAGS))
            .unwrap_or_default();
        assert_eq!(flags, &(8u32 | 32).to_ne_bytes()[..]);
        let a = dump_filter(None);
        let orig = attr(&a, CTA_TUPLE_ORIG)
            .and_then(|t| attr(t, CTA_TUPLE_PROTO))
            .unwrap_or_default();
        assert_eq!(attr(orig, CTA_PROTO_DST_PORT), None);
        // an entry as dumped: UDP to 5353 matches, to 5354 and TCP do not; garbage never panics
        let entry = |num: u8, port: u16| {
            let mut p = Vec::new();
            put_attr(&mut p, CTA_PROTO_NUM, &[num]);
            put_attr(&mut p, CTA_PROTO_DST_PORT, &port.to_be_bytes());
            let mut t = Vec::new();
            put_nested(&mut t, CTA_TUPLE_PROTO, &p);
            let mut e = Vec::new();
            put_nested(&mut e, CTA_TUPLE_ORIG, &t);
            put_attr(&mut e, CTA_ZONE, &[0, 0]);
            e
        };
        let ports: HashSet<u16> = [5353].into_iter().collect();
        assert!(delete_request(&entry(17, 5353), &ports).is_some_and(|r| r.len() % 4 == 0));
        assert!(delete_request(&entry(17, 5354), &ports).is_none());
        assert!(delete_request(&entry(6, 5353), &ports).is_none());
        assert!(delete_request(&[1, 2, 3], &ports).is_none());
    }
}
