//! host-local allocation over one range set, exactly as the reference allocator walks it:
//! round-robin from the address after `last_reserved_ip.<set index>` (when that address
//! still lies in the set), else from the first range's start; through each range from
//! start to end inclusive, then on to the next range, wrapping around; skipping each
//! range's gateway; giving up when back at the address it started from.

use super::range::{next_ip, Range, RangeSet};
use super::store::Store;
use cnichain_engine::spec::error::{CniError, INTERNAL};
use cnichain_engine::spec::ipnet::{format_ip, IpNet};
use cnichain_engine::spec::result::IpConfig;
use std::collections::HashSet;
use std::net::IpAddr;

/// The reference's `RangeIter`.
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    start_ip: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    /// Start after `last` if it is in the set, else at the first range's start.
    pub fn new(set: &'a RangeSet, last: Option<IpAddr>) -> RangeIter<'a> {
        if let Some(last) = last {
            if let Some(idx) = set.ranges.iter().position(|r| r.contains(last)) {
                return RangeIter {
                    set,
                    idx,
                    cur: Some(last),
                    start_ip: None,
                };
            }
        }
        RangeIter {
            set,
            idx: 0,
            cur: None,
            start_ip: set.ranges.first().map(|r| r.start),
        }
    }

    /// The next candidate and its range; `None` once every address has been offered.
    pub fn next_candidate(&mut self) -> Option<(IpAddr, &'a Range)> {
        let n = self.set.ranges.len();
        if n == 0 {
            return None;
        }
        loop {
            let mut r = self.set.ranges.get(self.idx)?;
            let cur = match self.cur {
                None => {
                    // The first call when not resuming: the start is inclusive.
                    self.cur = Some(r.start);
                    self.start_ip = Some(r.start);
                    if r.start == r.gateway {
                        continue;
                    }
                    return Some((r.start, r));
                }
                Some(c) => c,
            };
            let next = if cur == r.end {
                self.idx = (self.idx + 1) % n;
                r = self.set.ranges.get(self.idx)?;
                r.start
            } else {
                // cur < end always holds, so this never runs past the family's end;
                // wrapping to the range start keeps the walk finite regardless.
                next_ip(cur).unwrap_or(r.start)
            };
            self.cur = Some(next);
            match self.start_ip {
                None => self.start_ip = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway {
                continue;
            }
            return Some((next, r));
        }
    }
}

fn failure(msg: String) -> CniError {
    CniError::new(INTERNAL, msg)
}

fn ip_config(ip: IpAddr, r: &Range) -> IpConfig {
    IpConfig {
        interface: None,
        address: IpNet {
            addr: ip,
            prefix: r.subnet.mask_len(),
        },
        gateway: Some(r.gateway),
    }
}

/// Allocate one address of `set` (index `range_id`) to (id, ifname): `requested` if
/// given, else the next free one. The store must be locked.
pub fn get(
    store: &Store,
    set: &RangeSet,
    range_id: usize,
    id: &str,
    ifname: &str,
    requested: Option<IpAddr>,
) -> Result<IpConfig, CniError> {
    if let Some(ip) = requested {
        let r = set
            .range_for(ip)
            .ok_or_else(|| failure(format!("{} not in range set {set}", format_ip(&ip))))?;
        if ip == r.gateway {
            return Err(failure(format!("requested ip {} is subnet's gateway", format_ip(&ip))));
        }
        if !store.reserve(id, ifname, ip, range_id)? {
            return Err(failure(format!(
                "requested IP address {} is not available in range set {set}",
                format_ip(&ip)
            )));
        }
        return Ok(ip_config(ip, r));
    }
    // The spec does not allow a second allocation for the same attachment.
    for ip in store.get_by_id(id, ifname) {
        if set.contains(ip) {
            return Err(failure(format!(
                "{} has been allocated to {id}, duplicate allocation is not allowed",
                format_ip(&ip)
            )));
        }
    }
    let mut iter = RangeIter::new(set, store.last_reserved_ip(range_id));
    while let Some((ip, r)) = iter.next_candidate() {
        // Addresses the index knows are taken are skipped without touching the disk
        // (the reference tries each: the same outcome, since that try would fail).
        if store.known_taken(ip) {
            continue;
        }
        if store.reserve(id, ifname, ip, range_id)? {
            return Ok(ip_config(ip, r));
        }
    }
    Err(failure(format!("no IP addresses available in range set: {set}")))
}

/// Whether a new allocation from `set` could succeed, given the reserved addresses.
pub fn has_free(set: &RangeSet, reserved: &HashSet<IpAddr>) -> bool {
    set.ranges.iter().any(|r| {
        let gateway_inside = u128::from(r.contains(r.gateway));
        let used = reserved
            .iter()
            .filter(|ip| r.contains(**ip) && **ip != r.gateway)
            .count() as u128;
        r.size().saturating_sub(gateway_inside).saturating_sub(used) > 0
    })
}

#[cfg(test)]
mod tests {
    use super::super::range::{parse_range_sets, RangeSet};
    use super::*;
    use serde_json::json;

    fn set(v: serde_json::Value) -> RangeSet {
        let sets = parse_range_sets(Some(&v), "ipam.ranges").unwrap();
        RangeSet::canonicalize(&sets[0].0, &sets[0].1).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn walk(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        let mut it = RangeIter::new(s, last.map(ip));
        let mut out = Vec::new();
        while let Some((a, _)) = it.next_candidate() {
            out.push(format_ip(&a));
            assert!(out.len() < 10_000, "runaway iterator");
        }
        out
    }

    #[test]
    fn ipam_iter_from_the_start_skips_the_gateway() {
        let s = set(json!([[{"subnet": "10.1.0.0/29"}]]));
        assert_eq!(
            walk(&s, None),
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        // a gateway in the middle
        let s = set(json!([[{"subnet": "10.1.0.0/29", "gateway": "10.1.0.4"}]]));
        assert_eq!(
            walk(&s, None),
            ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6"]
        );
        // a gateway outside the range
        let s = set(json!([[{"subnet": "10.1.0.0/29", "gateway": "10.2.0.1"}]]));
        assert_eq!(walk(&s, None).len(), 6);
    }

    #[test]
    fn ipam_iter_resumes_after_the_last_reserved() {
        let s = set(json!([[{"subnet": "10.1.0.0/29"}]]));
        assert_eq!(
            walk(&s, Some("10.1.0.4")),
            ["10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
        );
        // the last address of the range: wrap around, skipping the gateway
        assert_eq!(
            walk(&s, Some("10.1.0.6")),
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        // a last address outside the set is ignored
        assert_eq!(walk(&s, Some("10.9.0.1")), walk(&s, None));
        assert_eq!(walk(&s, Some("fd00::1")), walk(&s, None));
    }

    #[test]
    fn ipam_iter_goes_through_several_ranges() {
        let s = set(json!([[
            {"subnet": "10.1.0.0/30"},
            {"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.12", "gateway": "10.2.0.11"}
        ]]));
        assert_eq!(walk(&s, None), ["10.1.0.2", "10.2.0.10", "10.2.0.12"]);
        assert_eq!(walk(&s, Some("10.2.0.10")), ["10.2.0.12", "10.1.0.2", "10.2.0.10"]);
        assert_eq!(walk(&s, Some("10.2.0.12")), ["10.1.0.2", "10.2.0.10", "10.2.0.12"]);
        // the gateway itself as the last reserved (an old store): resume after it
        assert_eq!(walk(&s, Some("10.1.0.1")), ["10.1.0.2", "10.2.0.10", "10.2.0.12"]);
    }

    #[test]
    fn ipam_iter_ipv6_and_tiny_ranges() {
        let s = set(json!([[{"subnet": "fd00::/126"}]]));
        assert_eq!(walk(&s, None), ["fd00::2", "fd00::3"]);
        assert_eq!(walk(&s, Some("fd00::3")), ["fd00::2", "fd00::3"]);
        // a range holding only its gateway offers nothing and ends
        let s = set(json!([[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.1", "rangeEnd": "10.1.0.1"}]]));
        assert!(walk(&s, None).is_empty());
        assert!(walk(&s, Some("10.1.0.1")).is_empty());
        // a large IPv6 range starts where expected
        let s = set(json!([[{"subnet": "fd00::/64"}]]));
        let mut it = RangeIter::new(&s, Some(ip("fd00::ffff:ffff:ffff:ffff")));
        assert_eq!(it.next_candidate().map(|x| x.0), Some(ip("fd00::2")));
    }

    #[test]
    fn ipam_has_free_counts_per_range() {
        let s = set(json!([[{"subnet": "10.1.0.0/30"}]]));
        let mut used = HashSet::new();
        assert!(has_free(&s, &used));
        used.insert(ip("10.1.0.2"));
        assert!(!has_free(&s, &used));
        // a stray file for the gateway or outside the range changes nothing
        used.insert(ip("10.1.0.1"));
        used.insert(ip("10.9.0.1"));
        assert!(!has_free(&s, &used));
        let big = set(json!([[{"subnet": "::/0"}]]));
        assert!(has_free(&big, &used));
    }
}
