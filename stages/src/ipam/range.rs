//! host-local address ranges and range sets: parsing, the reference's canonicalization
//! and validation (default gateway .1, default start .1, default end broadcast-1 for
//! IPv4 and the last address for IPv6), containment and overlap.

use super::config::{as_array, as_object, field, invalid, invalid_at, ip_field, join};
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ipnet::{format_ip, IpNet};
use cnichain_engine::spec::json_kind::{json_kind, Spelling};
use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A range as written in the config, before canonicalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRange {
    pub subnet: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// JSON path of the object, for messages (`ipam.ranges[0][1]`, `ipam`).
    pub path: String,
}

/// A canonical range: every bound set, all in the subnet's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network address with its prefix.
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
    pub path: String,
}

/// The addresses one IP of the result is allocated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
    pub path: String,
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `v` in the family of `like`; `None` when it does not fit.
pub fn from_u128(v: u128, like: IpAddr) -> Option<IpAddr> {
    match like {
        IpAddr::V4(_) => u32::try_from(v).ok().map(|x| IpAddr::V4(Ipv4Addr::from(x))),
        IpAddr::V6(_) => Some(IpAddr::V6(Ipv6Addr::from(v))),
    }
}

/// The next address of the same family, `None` past the last one.
pub fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    to_u128(ip).checked_add(1).and_then(|v| from_u128(v, ip))
}

/// The plugins' `ip.Cmp`: `None` for addresses of different families.
pub fn cmp_ip(a: IpAddr, b: IpAddr) -> Option<Ordering> {
    if a.is_ipv4() != b.is_ipv4() {
        return None;
    }
    Some(to_u128(a).cmp(&to_u128(b)))
}

/// `Range.Contains` with the bounds that are set at that point of canonicalization.
fn within(subnet: &IpNet, start: Option<IpAddr>, end: Option<IpAddr>, addr: IpAddr) -> bool {
    if addr.is_ipv4() != subnet.is_ipv4() || !subnet.contains(addr) {
        return false;
    }
    if let Some(s) = start {
        // Go's Cmp gives -2 for mixed families, which counts as "before the start".
        if !matches!(cmp_ip(addr, s), Some(Ordering::Equal | Ordering::Greater)) {
            return false;
        }
    }
    if let Some(e) = end {
        if cmp_ip(addr, e) == Some(Ordering::Greater) {
            return false;
        }
    }
    true
}

/// The last address of a subnet, one before the broadcast address for IPv4.
fn last_ip(subnet: &IpNet) -> IpAddr {
    let host_bits = u32::from(subnet.bits() - subnet.mask_len());
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let last = to_u128(subnet.addr) | host_mask;
    let last = if subnet.is_ipv4() { last.saturating_sub(1) } else { last };
    from_u128(last, subnet.addr).unwrap_or(subnet.addr)
}

impl RawRange {
    /// One range object (`ipam`, an element of `ipam.ranges[i]`, of
    /// `runtimeConfig.ipRanges[i]` or the `rangeFromFile` document).
    pub fn parse(v: &Value, path: &str) -> Result<RawRange, CniError> {
        let m = as_object(v, path)?;
        let subnet_path = join(path, "subnet");
        let subnet = match field(m, "subnet") {
            None => None,
            // types.IPNet reads null as "", which does not parse
            Some(Value::Null) => return Err(invalid(&subnet_path, "invalid CIDR address: ")),
            Some(Value::String(s)) => Some(s.parse::<IpNet>().map_err(|e| invalid(&subnet_path, e))?),
            Some(other) => {
                return Err(invalid_at(
                    &subnet_path,
                    format!("expected a string, got {}", json_kind(other, Spelling::Go)),
                ))
            }
        };
        Ok(RawRange {
            subnet,
            range_start: ip_field(m, "rangeStart", path)?,
            range_end: ip_field(m, "rangeEnd", path)?,
            gateway: ip_field(m, "gateway", path)?,
            path: path.to_string(),
        })
    }

    /// The reference's `Range.Canonicalize`, in its order, plus one check of ours: the
    /// start may not lie after the end (the reference then allocates outside the subnet).
    pub fn canonicalize(&self) -> Result<Range, CniError> {
        let subnet_path = join(&self.path, "subnet");
        // the reference canonicalizes the unset subnet's nil IP
        let subnet = self.subnet.ok_or_else(|| {
            invalid(&subnet_path, "IP <nil> not v4 nor v6").with_details(format!("field {subnet_path}: missing"))
        })?;
        let ones = subnet.mask_len();
        if ones > subnet.bits() - 2 {
            return Err(invalid(
                &subnet_path,
                format!("Network {subnet} too small to allocate from"),
            ));
        }
        let network = subnet.network();
        if network.addr != subnet.addr {
            return Err(invalid(
                &subnet_path,
                format!(
                    "Network has host bits set. For a subnet mask of length {ones} the network address is {}",
                    format_ip(&network.addr)
                ),
            ));
        }
        let first = next_ip(subnet.addr).unwrap_or(subnet.addr);
        let gateway = self.gateway.unwrap_or(first);
        let start = match self.range_start {
            Some(s) => {
                if !within(&subnet, Some(s), self.range_end, s) {
                    return Err(invalid(
                        &join(&self.path, "rangeStart"),
                        format!("RangeStart {} not in network {subnet}", format_ip(&s)),
                    ));
                }
                s
            }
            None => first,
        };
        let end = match self.range_end {
            Some(e) => {
                if !within(&subnet, Some(start), Some(e), e) {
                    return Err(invalid(
                        &join(&self.path, "rangeEnd"),
                        format!("RangeEnd {} not in network {subnet}", format_ip(&e)),
                    ));
                }
                e
            }
            None => last_ip(&subnet),
        };
        if cmp_ip(start, end) == Some(Ordering::Greater) {
            return Err(invalid_at(
                &join(&self.path, "rangeStart"),
                format!("RangeStart {} is after RangeEnd {}", format_ip(&start), format_ip(&end)),
            ));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
            path: self.path.clone(),
        })
    }
}

impl Range {
    pub fn contains(&self, addr: IpAddr) -> bool {
        within(&self.subnet, Some(self.start), Some(self.end), addr)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        if self.start.is_ipv4() != other.start.is_ipv4() {
            return false;
        }
        self.contains(other.start) || self.contains(other.end) || other.contains(self.start) || other.contains(self.end)
    }

    /// How many addresses lie in [start, end].
    pub fn size(&self) -> u128 {
        to_u128(self.end).saturating_sub(to_u128(self.start)).saturating_add(1)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", format_ip(&self.start), format_ip(&self.end))
    }
}

impl RangeSet {
    /// The reference's `RangeSet.Canonicalize`: not empty, every range valid, one family,
    /// no overlaps inside the set.
    pub fn canonicalize(raw: &[RawRange], path: &str) -> Result<RangeSet, CniError> {
        if raw.is_empty() {
            return Err(invalid(path, "empty range set"));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(raw.len());
        for r in raw {
            let c = r.canonicalize()?;
            if let Some(first) = ranges.first() {
                if first.start.is_ipv4() != c.start.is_ipv4() {
                    return Err(invalid(path, "mixed address families"));
                }
            }
            ranges.push(c);
        }
        for (i, r1) in ranges.iter().enumerate() {
            for r2 in &ranges[i + 1..] {
                if r1.overlaps(r2) {
                    return Err(invalid(path, format!("subnets {r1} and {r2} overlap")));
                }
            }
        }
        Ok(RangeSet {
            ranges,
            path: path.to_string(),
        })
    }

    pub fn range_for(&self, addr: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(addr))
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.range_for(addr).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges.iter().any(|r| other.ranges.iter().any(|r1| r.overlaps(r1)))
    }

    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(|r| r.start.is_ipv4())
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A list of range sets (`ipam.ranges`, `runtimeConfig.ipRanges`): an array of arrays of
/// range objects. `None` (absent or null) is no sets.
pub fn parse_range_sets(v: Option<&Value>, path: &str) -> Result<Vec<(Vec<RawRange>, String)>, CniError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, set) in as_array(v, path)?.iter().enumerate() {
        let set_path = format!("{path}[{i}]");
        let mut raws = Vec::new();
        if !set.is_null() {
            for (j, r) in as_array(set, &set_path)?.iter().enumerate() {
                raws.push(RawRange::parse(r, &format!("{set_path}[{j}]"))?);
            }
        }
        out.push((raws, set_path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(v: Value) -> Result<Range, CniError> {
        RawRange::parse(&v, "ipam.ranges[0][0]")?.canonicalize()
    }

    #[test]
    fn ipam_range_defaults() {
        let r = range(json!({"subnet": "10.1.0.0/24"})).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.0.1"), ip("10.1.0.254"), ip("10.1.0.1"))
        );
        assert_eq!(r.to_string(), "10.1.0.1-10.1.0.254");
        let r = range(json!({"subnet": "10.1.0.0/30"})).unwrap();
        assert_eq!(r.to_string(), "10.1.0.1-10.1.0.2");
        assert_eq!(r.size(), 2);
        let r = range(json!({"subnet": "fd00::/64"})).unwrap();
        assert_eq!(r.to_string(), "fd00::1-fd00::ffff:ffff:ffff:ffff");
        assert_eq!(r.gateway, ip("fd00::1"));
        let r = range(json!({"subnet": "fd00::/126"})).unwrap();
        assert_eq!(r.to_string(), "fd00::1-fd00::3");
        let r = range(json!({"subnet": "::/0"})).unwrap();
        assert_eq!(r.size(), u128::MAX);
        let r = range(json!({"subnet": "0.0.0.0/0"})).unwrap();
        assert_eq!(r.to_string(), "0.0.0.1-255.255.255.254");
        let r = range(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10",
                             "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254"}))
        .unwrap();
        assert_eq!(
            (r.to_string(), r.gateway),
            ("10.1.0.10-10.1.0.20".to_string(), ip("10.1.0.254"))
        );
        // the reference accepts a gateway outside the subnet
        let r = range(json!({"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"})).unwrap();
        assert_eq!(r.gateway, ip("10.2.0.1"));
        // mapped addresses are IPv4
        let r = range(json!({"subnet": "10.1.0.0/24", "rangeStart": "::ffff:10.1.0.5"})).unwrap();
        assert_eq!(r.start, ip("10.1.0.5"));
    }

    #[test]
    fn ipam_range_errors_name_the_field() {
        let cases = [
            (json!({"subnet": "10.1.0.0/31"}), "ipam.ranges[0][0].subnet: Network 10.1.0.0/31 too small to allocate from"),
            (json!({"subnet": "fd00::/127"}), "ipam.ranges[0][0].subnet: Network fd00::/127 too small to allocate from"),
            (
                json!({"subnet": "10.1.0.5/24"}),
                "ipam.ranges[0][0].subnet: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0",
            ),
            (json!({"subnet": "x"}), "ipam.ranges[0][0].subnet: invalid CIDR address: x"),
            (json!({"subnet": null}), "ipam.ranges[0][0].subnet: invalid CIDR address: "),
            (json!({"subnet": 5}), "ipam.ranges[0][0].subnet: expected a string, got number"),
            (json!({"gateway": "10.0.0.1"}), "ipam.ranges[0][0].subnet: IP <nil> not v4 nor v6"),
            (json!("10.0.0.0/8"), "ipam.ranges[0][0]: expected an object, got string"),
            (
                json!({"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}),
                "ipam.ranges[0][0].rangeStart: RangeStart 10.2.0.1 not in network 10.1.0.0/24",
            ),
            (
                json!({"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.0"}),
                "ipam.ranges[0][0].rangeEnd: RangeEnd 10.1.0.0 not in network 10.1.0.0/24",
            ),
            (
                json!({"subnet": "10.1.0.0/24", "rangeEnd": "fd00::1"}),
                "ipam.ranges[0][0].rangeEnd: RangeEnd fd00::1 not in network 10.1.0.0/24",
            ),
            // start after end is caught at the start, as in the reference
            (
                json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.3"}),
                "ipam.ranges[0][0].rangeStart: RangeStart 10.1.0.9 not in network 10.1.0.0/24",
            ),
            // our own check: the broadcast address as start with the default end
            (
                json!({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.255"}),
                "ipam.ranges[0][0].rangeStart: RangeStart 10.1.0.255 is after RangeEnd 10.1.0.254",
            ),
            (
                json!({"subnet": "10.1.0.0/24", "gateway": "10.1.0.300"}),
                "ipam.ranges[0][0].gateway: invalid IP address: 10.1.0.300",
            ),
        ];
        for (v, want) in cases {
            let e = range(v.clone()).unwrap_err();
            assert_eq!(
                (e.code, super::super::config::with_field(&e).as_str()),
                (7, want),
                "{v}"
            );
        }
    }

    #[test]
    fn ipam_range_sets() {
        let parse = |v: Value| -> Result<RangeSet, CniError> {
            let sets = parse_range_sets(Some(&v), "ipam.ranges")?;
            let (raws, path) = &sets[0];
            RangeSet::canonicalize(raws, path)
        };
        let s = parse(json!([[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24", "gateway": "10.2.0.9"}]])).unwrap();
        assert_eq!(s.to_string(), "10.1.0.1-10.1.0.254,10.2.0.1-10.2.0.254");
        assert!(s.contains(ip("10.2.0.200")));
        assert!(!s.contains(ip("10.2.0.255")));
        assert!(!s.contains(ip("10.3.0.1")));
        assert!(!s.contains(ip("fd00::1")));
        assert_eq!(s.range_for(ip("10.2.0.5")).map(|r| r.gateway), Some(ip("10.2.0.9")));
        assert!(s.is_ipv4());
        let e = parse(json!([[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]])).unwrap_err();
        assert_eq!(
            super::super::config::with_field(&e),
            "ipam.ranges[0]: subnets 10.1.0.1-10.1.0.254 and 10.1.0.1-10.1.0.126 overlap"
        );
        let e = parse(json!([[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]])).unwrap_err();
        assert_eq!(
            super::super::config::with_field(&e),
            "ipam.ranges[0]: mixed address families"
        );
        let e = parse(json!([[]])).unwrap_err();
        assert_eq!(super::super::config::with_field(&e), "ipam.ranges[0]: empty range set");
        let e = parse(json!([{}])).unwrap_err();
        assert_eq!(e.msg, "ipam.ranges[0]: expected an array, got object");
        let e = parse_range_sets(Some(&json!({})), "ipam.ranges").unwrap_err();
        assert_eq!(e.msg, "ipam.ranges: expected an array, got object");
        assert!(parse_range_sets(Some(&Value::Null), "x").unwrap().is_empty());
        // ranges in a set may sit side by side without overlapping
        let a = parse(json!([[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.100"}]])).unwrap();
        let b = parse(json!([[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.101"}]])).unwrap();
        assert!(!a.overlaps(&b));
        let c = parse(json!([[{"subnet": "10.1.0.0/16"}]])).unwrap();
        assert!(a.overlaps(&c) && c.overlaps(&b));
    }

    #[test]
    fn ipam_ip_arithmetic() {
        assert_eq!(next_ip(ip("10.0.0.255")), Some(ip("10.0.1.0")));
        assert_eq!(next_ip(ip("255.255.255.255")), None);
        assert_eq!(next_ip(ip("::ffff:ffff:ffff")), Some(ip("::1:0:0:0")));
        assert_eq!(next_ip(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), None);
        assert_eq!(cmp_ip(ip("10.0.0.1"), ip("::1")), None);
        assert_eq!(cmp_ip(ip("10.0.0.1"), ip("10.0.0.2")), Some(Ordering::Less));
    }
}
