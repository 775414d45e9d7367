//! Addresses the way libcni's Go types read and print them.
//!
//! `IpNet` is libcni's `types.IPNet`: a CIDR that keeps the host bits ("10.1.0.5/16" stays
//! "10.1.0.5/16"). Plain IPs follow Go's `net.ParseIP` / `net.IP.String`: IPv6 is printed
//! lower-case and compressed (RFC 5952), and an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
//! is an IPv4 address. Go keeps such an address in its 16-byte form but prints it, and
//! classifies it (`To4() != nil`), as IPv4; we store it as IPv4 directly, which gives the
//! same text and the same family everywhere libcni looks at it.

use super::error::CniError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with its prefix length; host bits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a CIDR or an IP did not parse. Displays like Go's `net.ParseError`:
/// `invalid CIDR address: x` / `invalid IP address: x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError {
    /// "CIDR address" or "IP address"
    pub kind: &'static str,
    pub text: String,
}

impl AddrParseError {
    fn cidr(s: &str) -> Self {
        AddrParseError {
            kind: "CIDR address",
            text: s.to_string(),
        }
    }
    fn ip(s: &str) -> Self {
        AddrParseError {
            kind: "IP address",
            text: s.to_string(),
        }
    }
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.kind, self.text)
    }
}

impl std::error::Error for AddrParseError {}

impl From<AddrParseError> for CniError {
    fn from(e: AddrParseError) -> Self {
        CniError::decode(e.to_string())
    }
}

impl Default for IpNet {
    /// 0.0.0.0/0
    fn default() -> Self {
        IpNet {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
        }
    }
}

/// An IPv4-mapped IPv6 address becomes IPv4 (Go's `To4`); anything else is unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Go's `net.ParseIP`: dotted IPv4 or IPv6 text, no zone, no surrounding space.
/// IPv4-mapped IPv6 comes back as IPv4. `None` for anything else, including "".
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if s.is_empty() || s.contains('%') {
        return None;
    }
    IpAddr::from_str(s).ok().map(unmap)
}

/// Go's `net.IP.String()`.
pub fn format_ip(ip: &IpAddr) -> String {
    match unmap(*ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format_ipv6(&v6),
    }
}

/// RFC 5952 text as Go writes it: lower-case hex without leading zeros, the longest run
/// of two or more zero groups (the first one on a tie) replaced by "::".
fn format_ipv6(ip: &Ipv6Addr) -> String {
    let g = ip.segments();
    let (mut best_start, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if g[i] == 0 {
            let start = i;
            while i < 8 && g[i] == 0 {
                i += 1;
            }
            let len = i - start;
            if len >= 2 && len > best_len {
                best_start = start;
                best_len = len;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if i == best_start {
            out.push_str("::");
            i += best_len;
            continue;
        }
        if i > 0 && !out.ends_with(':') {
            out.push(':');
        }
        out.push_str(&format!("{:x}", g[i]));
        i += 1;
    }
    out
}

impl IpNet {
    /// `None` when the prefix is longer than the address. IPv4-mapped IPv6 becomes IPv4
    /// with the prefix Go would print for it (the last 32 bits of the mask).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return None;
        }
        Some(match (addr, unmap(addr)) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpNet {
                addr: IpAddr::V4(v4),
                prefix: prefix.saturating_sub(96),
            },
            _ => IpNet { addr, prefix },
        })
    }

    /// A host route: /32 or /128.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = unmap(addr);
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Address length in bits: 32 or 128.
    pub fn bits(&self) -> u8 {
        if self.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The prefix length, clamped to the address length (a hand-built value may be larger).
    pub fn mask_len(&self) -> u8 {
        self.prefix.min(self.bits())
    }

    /// The netmask as an address (255.255.0.0 for a /16).
    pub fn netmask(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(mask32(self.mask_len()))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(mask128(self.mask_len()))),
        }
    }

    /// The network: host bits cleared, same prefix.
    pub fn network(&self) -> IpNet {
        let prefix = self.mask_len();
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        IpNet { addr, prefix }
    }

    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as IPv4,
    /// as in Go's `IPNet.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let prefix = self.mask_len();
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask32(prefix);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask128(prefix);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

impl FromStr for IpNet {
    type Err = AddrParseError;

    /// Go's `net.ParseCIDR` with the address (not the network) kept, as libcni's
    /// `types.ParseCIDR` does. The prefix is decimal digits only (leading zeros allowed,
    /// as Go's dtoi does) and at most the address length.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_s, mask_s) = s.split_once('/').ok_or_else(|| AddrParseError::cidr(s))?;
        if addr_s.is_empty() || addr_s.contains('%') {
            return Err(AddrParseError::cidr(s));
        }
        let addr = IpAddr::from_str(addr_s).map_err(|_| AddrParseError::cidr(s))?;
        if mask_s.is_empty() || !mask_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddrParseError::cidr(s));
        }
        let digits = mask_s.trim_start_matches('0');
        let prefix: u32 = if digits.is_empty() {
            0
        } else if digits.len() > 3 {
            return Err(AddrParseError::cidr(s));
        } else {
            digits.parse().map_err(|_| AddrParseError::cidr(s))?
        };
        let prefix = u8::try_from(prefix).map_err(|_| AddrParseError::cidr(s))?;
        IpNet::new(addr, prefix).ok_or_else(|| AddrParseError::cidr(s))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Go prints the mask length of the address family it prints.
        let n = match IpNet::new(self.addr, self.mask_len()) {
            Some(n) => n,
            None => *self,
        };
        write!(f, "{}/{}", format_ip(&n.addr), n.mask_len())
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpNet::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// serde helpers for an `Option<IpAddr>` field written the Go way (`net.IP` with
/// `omitempty`): use with `#[serde(default, with = "opt_ip", skip_serializing_if = "Option::is_none")]`.
/// Reading: null, a missing key and "" are `None`; any other string must be an IP.
pub mod opt_ip {
    use super::{format_ip, parse_ip, AddrParseError};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(v: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ip) => s.serialize_str(&format_ip(ip)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => parse_ip(s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(AddrParseError::ip(s))),
        }
    }
}

/// serde helpers for a plain `IpAddr` field written the Go way.
pub mod go_ip {
    use super::{format_ip, parse_ip, AddrParseError};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(v: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ip(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
        let s = String::deserialize(d)?;
        parse_ip(&s).ok_or_else(|| serde::de::Error::custom(AddrParseError::ip(&s)))
    }
}

/// Parse a plain IP for a JSON field, with Go's error text.
pub fn parse_ip_checked(s: &str) -> Result<IpAddr, AddrParseError> {
    parse_ip(s).ok_or_else(|| AddrParseError::ip(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_host_bits() {
        let x = n("10.1.0.5/16");
        assert_eq!(x.addr, "10.1.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(x.prefix, 16);
        assert_eq!(x.to_string(), "10.1.0.5/16");
        assert_eq!(x.network().to_string(), "10.1.0.0/16");
        assert_eq!(x.netmask().to_string(), "255.255.0.0");
        assert!(x.is_ipv4());
        assert_eq!(x.mask_len(), 16);
        assert_eq!(n("2001:db8::5/64").network().to_string(), "2001:db8::/64");
    }

    #[test]
    fn prints_like_go() {
        assert_eq!(n("2001:DB8:0:0:0:0:0:5/64").to_string(), "2001:db8::5/64");
        assert_eq!(n("::/0").to_string(), "::/0");
        assert_eq!(n("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(n("1:0:0:1:0:0:0:1/128").to_string(), "1:0:0:1::1/128");
        assert_eq!(n("1:0:0:1:0:0:1:1/128").to_string(), "1::1:0:0:1:1/128");
        assert_eq!(n("1:0:1:1:1:1:1:1/128").to_string(), "1:0:1:1:1:1:1:1/128");
        assert_eq!(n("fe80::0001/10").to_string(), "fe80::1/10");
        assert_eq!(n("::1.2.3.4/128").to_string(), "::102:304/128");
        // Go: a mapped address prints as IPv4 with the last 32 bits of the mask
        assert_eq!(n("::ffff:1.2.3.4/120").to_string(), "1.2.3.4/24");
        assert_eq!(n("::ffff:1.2.3.4/64").to_string(), "1.2.3.4/0");
        assert!(n("::ffff:1.2.3.4/120").is_ipv4());
        // leading zeros in the prefix are accepted by Go's dtoi
        assert_eq!(n("10.0.0.1/024").to_string(), "10.0.0.1/24");
    }

    #[test]
    fn rejects_bad_cidrs() {
        for s in [
            "",
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/33",
            "::/129",
            "10.0.0.1/-1",
            "10.0.0.1/+1",
            "10.0.0.1/1a",
            "10.0.0/8",
            "01.0.0.1/8",
            "x/8",
            "/8",
            "fe80::1%eth0/64",
            "10.0.0.1/99999999999999999999",
            " 10.0.0.1/8",
            "10.0.0.1/8 ",
            "1.2.3.4/1/2",
        ] {
            let e = s.parse::<IpNet>().unwrap_err();
            assert_eq!(e.to_string(), format!("invalid CIDR address: {s}"), "{s:?}");
        }
        let ce: CniError = "x".parse::<IpNet>().unwrap_err().into();
        assert_eq!(ce.code, 6);
    }

    #[test]
    fn plain_ips() {
        assert_eq!(parse_ip("1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_ip("::ffff:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(format_ip(&"::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4");
        assert_eq!(format_ip(&"2001:DB8::1".parse().unwrap()), "2001:db8::1");
        assert_eq!(parse_ip(""), None);
        assert_eq!(parse_ip("fe80::1%eth0"), None);
        assert_eq!(parse_ip("1.2.3"), None);
        assert_eq!(
            parse_ip_checked("nope").unwrap_err().to_string(),
            "invalid IP address: nope"
        );
    }

    #[test]
    fn contains_and_new() {
        let x = n("10.1.0.5/16");
        assert!(x.contains("10.1.255.1".parse().unwrap()));
        assert!(x.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!x.contains("10.2.0.1".parse().unwrap()));
        assert!(!x.contains("::1".parse().unwrap()));
        assert!(n("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(n("::/0").contains("::1".parse().unwrap()));
        assert!(!n("::/0").contains("1.2.3.4".parse().unwrap()));
        assert!(n("2001:db8::/32").contains("2001:db8:1::1".parse().unwrap()));
        assert_eq!(IpNet::new("1.2.3.4".parse().unwrap(), 33), None);
        assert_eq!(IpNet::host("::1".parse().unwrap()).to_string(), "::1/128");
        // a hand-built out-of-range prefix never panics
        let odd = IpNet {
            addr: "1.2.3.4".parse().unwrap(),
            prefix: 200,
        };
        assert_eq!(odd.mask_len(), 32);
        assert_eq!(odd.network().to_string(), "1.2.3.4/32");
        assert_eq!(odd.to_string(), "1.2.3.4/32");
        let odd6 = IpNet {
            addr: "::ffff:1.2.3.4".parse().unwrap(),
            prefix: 255,
        };
        assert_eq!(odd6.to_string(), "1.2.3.4/32");
        assert_eq!(IpNet::default().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn serde_roundtrip() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct T {
            net: IpNet,
            #[serde(default, with = "opt_ip", skip_serializing_if = "Option::is_none")]
            gw: Option<IpAddr>,
            #[serde(with = "go_ip")]
            ip: IpAddr,
        }
        let t: T = serde_json::from_str(r#"{"net":"10.1.0.5/16","gw":"::FFFF:10.1.0.1","ip":"2001:DB8::1"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"net":"10.1.0.5/16","gw":"10.1.0.1","ip":"2001:db8::1"}"#
        );
        let t: T = serde_json::from_str(r#"{"net":"::/0","gw":"","ip":"1.2.3.4"}"#).unwrap();
        assert_eq!(t.gw, None);
        let t: T = serde_json::from_str(r#"{"net":"::/0","gw":null,"ip":"1.2.3.4"}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"net":"::/0","ip":"1.2.3.4"}"#);
        assert!(serde_json::from_str::<T>(r#"{"net":"10.1.0.5","ip":"1.2.3.4"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"net":"::/0","gw":"x","ip":"1.2.3.4"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"net":5,"ip":"1.2.3.4"}"#).is_err());
    }
}
