//! Conntrack entries over ctnetlink (no `conntrack` binary needed).
//!
//! portmap deletes the UDP entries whose original destination port is a newly mapped
//! host port, as the reference does (`DeleteConntrackEntriesForDstPort`): an entry made
//! before the mapping existed (say, a client retrying against a port nobody served yet)
//! would otherwise keep matching the client's packets and never be DNATed.
//!
//! Like the reference it dumps the family's conntrack table and deletes matching entries
//! one by one (by their original tuple and zone).

use super::expr::Family;
use super::netlink::{attr, attrs, Nfnl, NFNL_SUBSYS_CTNETLINK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use std::io;

const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const IPPROTO_UDP: u8 = 17;

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

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// The matching entries, each as the attributes of its delete request: the original
/// tuple as the kernel gave it, plus the zone.
fn udp_entries(nl: &mut Nfnl, af: u8, ports: &[u16]) -> io::Result<Vec<Vec<u8>>> {
    let entries = nl.request(
        NFNL_SUBSYS_CTNETLINK,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        af,
        &[],
    )?;
    let mut out: Vec<Vec<u8>> = Vec::new();
    for e in &entries {
        let all = attrs(e);
        let Some((_, orig, orig_raw)) = all.iter().find(|a| a.0 == CTA_TUPLE_ORIG) else {
            continue;
        };
        let Some(proto) = attr(orig, CTA_TUPLE_PROTO) else {
            continue;
        };
        let num = attr(proto, CTA_PROTO_NUM).and_then(|b| b.first().copied());
        let dport = attr(proto, CTA_PROTO_DST_PORT)
            .filter(|b| b.len() == 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        if num != Some(IPPROTO_UDP) || !dport.is_some_and(|p| ports.contains(&p)) {
            continue;
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
        out.push(req);
    }
    Ok(out)
}
