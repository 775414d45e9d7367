//! The htb layout of upstream's bandwidth plugin (containernetworking/plugins 1.4+) when
//! `shapedSubnets` / `unshapedSubnets` are set, built over netlink:
//! - a root htb qdisc `1:` (version 3, rate2quantum 10) whose default class is `1:48`
//!   (the shaped class) with `unshapedSubnets`, or `1:1` (the unshaped class) with
//!   `shapedSubnets`;
//! - class `1:48`: rate = the configured rate, ceil = twice that, buffer = cbuffer = the
//!   burst's duration at the rate (psched ticks, as the tbf's: [`super::tbf::ReferenceTbf`]); class `1:1`: rate = ceil = 100 GB/s,
//!   no buffer;
//! - per listed subnet, a u32 filter under `1:` (pref 16 protocol ip, pref 15 protocol
//!   ipv6) matching the destination address (`ip dst` / `ip6 dst`), flowid `1:1` for
//!   `unshapedSubnets`, `1:48` for `shapedSubnets`.
//!
//! The netlink-packet-route crate models neither the htb qdisc nor its classes: the
//! option structs are written here by hand (native endian, as the kernel reads them):
//!
//! `tc_htb_glob` = { u32 version, u32 rate2quantum, u32 defcls, u32 debug, u32 direct_pkts }
//! `tc_htb_opt`  = { tc_ratespec rate, tc_ratespec ceil, u32 buffer, u32 cbuffer,
//!                   u32 quantum, u32 level, u32 prio }
//! `tc_ratespec` = { u8 cell_log, u8 linklayer, u16 overhead, i16 cell_align, u16 mpu, u32 rate }
//!
//! The rate specs say linklayer ethernet, so the kernel needs no rate tables. A rate of
//! 2^32 B/s or more is written as 0xffffffff and carried in TCA_HTB_RATE64 / CEIL64.

use super::tc::kind_and_options;
use super::Netlink;
use anyhow::{bail, Result};
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::IpAddr;

/// TCA_HTB_PARMS
pub const TCA_HTB_PARMS: u16 = 1;
/// TCA_HTB_INIT
pub const TCA_HTB_INIT: u16 = 2;
/// TCA_HTB_RATE64
pub const TCA_HTB_RATE64: u16 = 6;
/// TCA_HTB_CEIL64
pub const TCA_HTB_CEIL64: u16 = 7;
/// sizeof(struct tc_htb_glob)
pub const GLOB_LEN: usize = 20;
/// sizeof(struct tc_htb_opt)
pub const OPT_LEN: usize = 44;
/// The htb qdisc's handle, `1:`.
pub const HTB_HANDLE: u32 = 0x0001_0000;
/// The minor of the class for traffic that is not shaped.
pub const UNSHAPED_MINOR: u16 = 1;
/// The minor of the class for shaped traffic.
pub const SHAPED_MINOR: u16 = 48;
/// The unshaped class's rate and ceil, bytes per second (upstream's "uncapped" rate).
pub const UNCAPPED_RATE: u64 = 100_000_000_000;
/// Filter preference for IPv4 subnets.
pub const PRIO_V4: u16 = 16;
/// Filter preference for IPv6 subnets.
pub const PRIO_V6: u16 = 15;
/// ETH_P_IP
pub const ETH_P_IP: u16 = 0x0800;
/// ETH_P_IPV6
pub const ETH_P_IPV6: u16 = 0x86dd;
/// TC_LINKLAYER_ETHERNET
const LINKLAYER_ETHERNET: u8 = 1;
/// The offset of the destination address in an IPv4 / IPv6 header.
const DST_OFF_V4: i32 = 16;
const DST_OFF_V6: i32 = 24;

/// A subnet (address with its host bits cleared, and a prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    /// Parse `a.b.c.d/n` or `x::y/n` (host bits are cleared, as Go's ParseCIDR does).
    pub fn parse(s: &str) -> std::result::Result<Subnet, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (no prefix length)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not a CIDR (bad address)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match p.parse::<u8>() {
            Ok(n) if n <= max && !p.starts_with('+') && (p == "0" || !p.starts_with('0')) => n,
            _ => return Err(format!("{s:?} is not a CIDR (bad prefix length)")),
        };
        let addr = match addr {
            IpAddr::V4(v) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v) & mask).into())
            }
            IpAddr::V6(v) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v) & mask).into())
            }
        };
        Ok(Subnet { addr, prefix })
    }

    /// The u32 filter's (protocol, preference, keys) matching this subnet as destination:
    /// one key per 32-bit word of the address whose mask is not zero (none for a /0,
    /// which the filter then matches with a single zero key).
    pub fn filter_keys(&self) -> (u16, u16, Vec<TcU32Key>) {
        let (proto, prio, off, words, prefix): (u16, u16, i32, Vec<u32>, u32) = match self.addr {
            IpAddr::V4(v) => (
                ETH_P_IP,
                PRIO_V4,
                DST_OFF_V4,
                vec![u32::from(v)],
                u32::from(self.prefix),
            ),
            IpAddr::V6(v) => {
                let o = v.octets();
                let words = o
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (ETH_P_IPV6, PRIO_V6, DST_OFF_V6, words, u32::from(self.prefix))
            }
        };
        let mut keys = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let bits_before = 32 * i as u32;
            let n = prefix.saturating_sub(bits_before).min(32);
            let mask = u32::MAX.checked_shl(32 - n).unwrap_or(0);
            if mask != 0 {
                let mut k = TcU32Key::default();
                k.mask = mask;
                k.val = w & mask;
                k.off = off + 4 * i as i32;
                keys.push(k);
            }
        }
        (proto, prio, keys)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The classes of the layout: (default class minor, minor the subnet filters point at).
/// `shaped_listed`: the subnets are `shapedSubnets` (else `unshapedSubnets`).
pub fn class_targets(shaped_listed: bool) -> (u16, u16) {
    if shaped_listed {
        (UNSHAPED_MINOR, SHAPED_MINOR)
    } else {
        (SHAPED_MINOR, UNSHAPED_MINOR)
    }
}

/// `struct tc_htb_glob` for default class minor `defcls`.
pub fn glob(defcls: u32) -> [u8; GLOB_LEN] {
    let mut b = [0u8; GLOB_LEN];
    b[0..4].copy_from_slice(&3u32.to_ne_bytes());
    b[4..8].copy_from_slice(&10u32.to_ne_bytes());
    b[8..12].copy_from_slice(&defcls.to_ne_bytes());
    b
}

/// The htb qdisc's TCA_OPTIONS content, as (type, value) pairs.
pub fn qdisc_options(defcls: u32) -> Vec<(u16, Vec<u8>)> {
    vec![(TCA_HTB_INIT, glob(defcls).to_vec())]
}

fn ratespec(b: &mut [u8], rate: u64) {
    b[1] = LINKLAYER_ETHERNET;
    let r32 = u32::try_from(rate).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&r32.to_ne_bytes());
}

/// `struct tc_htb_opt`: rate and ceil in bytes/s, buffers in psched ticks; quantum, level
/// and prio 0 (the kernel derives the quantum from the rate and rate2quantum).
pub fn opt(rate: u64, ceil: u64, buffer: u32, cbuffer: u32) -> [u8; OPT_LEN] {
    let mut b = [0u8; OPT_LEN];
    ratespec(&mut b[0..12], rate);
    ratespec(&mut b[12..24], ceil);
    b[24..28].copy_from_slice(&buffer.to_ne_bytes());
    b[28..32].copy_from_slice(&cbuffer.to_ne_bytes());
    // quantum, level, prio: 0 (bytes 32..44)
    b
}

/// An htb class's TCA_OPTIONS content, as (type, value) pairs.
pub fn class_options(rate: u64, ceil: u64, buffer: u32, cbuffer: u32) -> Vec<(u16, Vec<u8>)> {
    let mut v = vec![(TCA_HTB_PARMS, opt(rate, ceil, buffer, cbuffer).to_vec())];
    if rate > u64::from(u32::MAX) {
        v.push((TCA_HTB_RATE64, rate.to_ne_bytes().to_vec()));
    }
    if ceil > u64::from(u32::MAX) {
        v.push((TCA_HTB_CEIL64, ceil.to_ne_bytes().to_vec()));
    }
    v
}

/// An htb class as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub classid: u32,
    pub parent: u32,
    /// bytes per second
    pub rate: u64,
    pub ceil: u64,
    /// psched ticks
    pub buffer: u32,
    pub cbuffer: u32,
}

/// A u32 filter under the htb qdisc, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFilter {
    pub priority: u16,
    /// ethertype, host order
    pub protocol: u16,
    pub classid: u32,
    /// (mask, value, offset), mask and value in host order
    pub keys: Vec<(u32, u32, i32)>,
}

/// The htb layout of one device as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtbState {
    /// The root htb qdisc: (handle, default class minor).
    pub qdisc: Option<(u32, u32)>,
    pub classes: Vec<HtbClass>,
    pub filters: Vec<SubnetFilter>,
}

/// Parse the content of an htb qdisc's TCA_OPTIONS: the default class.
pub fn parse_qdisc_options(nested: &[u8]) -> Option<u32> {
    for nla in netlink_packet_core::NlasIterator::new(nested) {
        let nla = nla.ok()?;
        if nla.kind() == TCA_HTB_INIT {
            let v = nla.value();
            return v.get(8..12).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
        }
    }
    None
}

/// Parse the content of an htb class's TCA_OPTIONS: (rate, ceil, buffer, cbuffer).
pub fn parse_class_options(nested: &[u8]) -> Option<(u64, u64, u32, u32)> {
    let mut parms: Option<[u8; OPT_LEN]> = None;
    let mut rate64 = None;
    let mut ceil64 = None;
    for nla in netlink_packet_core::NlasIterator::new(nested) {
        let nla = nla.ok()?;
        let v = nla.value();
        let u64_of = |v: &[u8]| v.get(..8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes);
        match nla.kind() {
            TCA_HTB_PARMS => parms = v.get(..OPT_LEN).and_then(|s| s.try_into().ok()),
            TCA_HTB_RATE64 => rate64 = u64_of(v),
            TCA_HTB_CEIL64 => ceil64 = u64_of(v),
            _ => {}
        }
    }
    let p = parms?;
    let u32_at = |i: usize| p.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let rate = rate64.filter(|r| *r > 0).unwrap_or(u64::from(u32_at(8)?));
    let ceil = ceil64.filter(|r| *r > 0).unwrap_or(u64::from(u32_at(20)?));
    Some((rate, ceil, u32_at(24)?, u32_at(28)?))
}

fn tc_index(index: u32) -> Result<i32> {
    match i32::try_from(index) {
        Ok(i) if i > 0 => Ok(i),
        _ => bail!("invalid ifindex {index}"),
    }
}

fn options_attr(opts: Vec<(u16, Vec<u8>)>) -> TcAttribute {
    TcAttribute::Options(
        opts.into_iter()
            .map(|(t, v)| TcOption::Other(DefaultNla::new(t, v)))
            .collect(),
    )
}

impl Netlink {
    /// Root htb `1:` on link `index` with default class `1:<defcls>`.
    pub fn add_htb_qdisc(&mut self, index: u32, defcls: u16) -> Result<()> {
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::ROOT;
        m.header.handle = TcHandle::from(HTB_HANDLE);
        m.attributes.push(TcAttribute::Kind("htb".to_string()));
        m.attributes.push(options_attr(qdisc_options(u32::from(defcls))));
        let op = self.op(format!("add htb qdisc (default 1:{defcls}) on link {index}"));
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// htb class `1:<minor>` under `1:` on link `index`.
    pub fn add_htb_class(
        &mut self,
        index: u32,
        minor: u16,
        rate: u64,
        ceil: u64,
        buffer: u32,
        cbuffer: u32,
    ) -> Result<()> {
        if rate == 0 || ceil == 0 {
            bail!("htb class 1:{minor} on link {index}: rate ({rate} B/s) and ceil ({ceil} B/s) must be positive");
        }
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(HTB_HANDLE);
        m.header.handle = TcHandle { major: 1, minor };
        m.attributes.push(TcAttribute::Kind("htb".to_string()));
        m.attributes
            .push(options_attr(class_options(rate, ceil, buffer, cbuffer)));
        let op = self.op(format!(
            "add htb class 1:{minor} (rate {rate} B/s, ceil {ceil} B/s) on link {index}"
        ));
        self.request(RouteNetlinkMessage::NewTrafficClass(m), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// Under the htb `1:` of link `index`: a u32 filter sending traffic to `subnet` to
    /// class `1:<minor>`.
    pub fn add_subnet_filter(&mut self, index: u32, subnet: &Subnet, minor: u16) -> Result<()> {
        let (proto, prio, mut keys) = subnet.filter_keys();
        if keys.is_empty() {
            keys.push(TcU32Key::default());
        }
        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(HTB_HANDLE);
        m.header.info = (u32::from(prio) << 16) | u32::from(proto.to_be());
        m.attributes.push(TcAttribute::Kind("u32".to_string()));
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = u8::try_from(keys.len()).unwrap_or(u8::MAX);
        sel.keys = keys;
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::ClassId(TcHandle { major: 1, minor })),
            TcOption::U32(TcFilterU32Option::Selector(sel)),
        ]));
        let op = self.op(format!("add u32 filter dst {subnet} -> 1:{minor} on link {index}"));
        self.request(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// The root htb qdisc of link `index`, its classes and the u32 filters under it.
    pub fn htb_state(&mut self, index: u32) -> Result<HtbState> {
        let mut st = HtbState::default();
        let op = self.op(format!("list qdiscs of link {index}"));
        let msgs = self.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), &op)?;
        for msg in &msgs {
            let RouteNetlinkMessage::NewQueueDiscipline(q) = msg else {
                continue;
            };
            if u32::try_from(q.header.index).ok() != Some(index) || q.header.parent != TcHandle::ROOT {
                continue;
            }
            let (kind, opts) = kind_and_options(q);
            if kind == "htb" {
                let defcls = opts.as_deref().and_then(parse_qdisc_options).unwrap_or(0);
                st.qdisc = Some((u32::from(q.header.handle), defcls));
            }
        }
        let Some((handle, _)) = st.qdisc else { return Ok(st) };

        let op = self.op(format!("list classes of link {index}"));
        let msgs = self.dump(
            RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(tc_index(index)?)),
            &op,
        )?;
        for msg in &msgs {
            let RouteNetlinkMessage::NewTrafficClass(c) = msg else {
                continue;
            };
            if u32::try_from(c.header.index).ok() != Some(index) {
                continue;
            }
            let (kind, opts) = kind_and_options(c);
            if kind != "htb" {
                continue;
            }
            if let Some((rate, ceil, buffer, cbuffer)) = opts.as_deref().and_then(parse_class_options) {
                st.classes.push(HtbClass {
                    classid: u32::from(c.header.handle),
                    parent: u32::from(c.header.parent),
                    rate,
                    ceil,
                    buffer,
                    cbuffer,
                });
            }
        }

        let mut m = TcMessage::with_index(tc_index(index)?);
        m.header.parent = TcHandle::from(handle);
        let op = self.op(format!("list filters of link {index} (parent {handle:#x})"));
        let msgs = self.dump(RouteNetlinkMessage::GetTrafficFilter(m), &op)?;
        for msg in &msgs {
            let RouteNetlinkMessage::NewTrafficFilter(f) = msg else {
                continue;
            };
            if u32::try_from(f.header.index).ok() != Some(index) {
                continue;
            }
            let mut classid = None;
            let mut keys = None;
            let mut is_u32 = false;
            for a in &f.attributes {
                match a {
                    TcAttribute::Kind(k) => is_u32 = k == "u32",
                    TcAttribute::Options(os) => {
                        for o in os {
                            match o {
                                TcOption::U32(TcFilterU32Option::ClassId(h)) => classid = Some(u32::from(*h)),
                                TcOption::U32(TcFilterU32Option::Selector(s)) => {
                                    keys = Some(s.keys.iter().map(|k| (k.mask, k.val, k.off)).collect::<Vec<_>>())
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            // hash-table entries carry no selector
            if let (true, Some(classid), Some(keys)) = (is_u32, classid, keys) {
                st.filters.push(SubnetFilter {
                    priority: (f.header.info >> 16) as u16,
                    protocol: u16::from_be((f.header.info & 0xffff) as u16),
                    classid,
                    keys,
                });
            }
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_nla_bytes as nest;

    #[test]
    fn glob_bytes() {
        let g = glob(48);
        let mut want = [0u8; 20];
        want[0..4].copy_from_slice(&3u32.to_ne_bytes());
        want[4..8].copy_from_slice(&10u32.to_ne_bytes());
        want[8..12].copy_from_slice(&48u32.to_ne_bytes());
        assert_eq!(g, want);
        let o = qdisc_options(1);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].0, TCA_HTB_INIT);
        assert_eq!(parse_qdisc_options(&nest(&o)), Some(1));
        assert_eq!(parse_qdisc_options(&[]), None);
    }

    #[test]
    fn opt_bytes_shaped() {
        // 1 Mbit/s, burst 12500 B: 100 ms = 1562500 ticks; ceil twice the rate.
        let buf = crate::kernel::netlink::tbf::buffer_ticks(125_000, 12_500);
        assert_eq!(buf, 1_562_500);
        let o = opt(125_000, 250_000, buf, buf);
        let mut want = [0u8; 44];
        want[1] = 1;
        want[8..12].copy_from_slice(&125_000u32.to_ne_bytes());
        want[13] = 1;
        want[20..24].copy_from_slice(&250_000u32.to_ne_bytes());
        want[24..28].copy_from_slice(&1_562_500u32.to_ne_bytes());
        want[28..32].copy_from_slice(&1_562_500u32.to_ne_bytes());
        assert_eq!(o, want);
        let opts = class_options(125_000, 250_000, buf, buf);
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0], (TCA_HTB_PARMS, want.to_vec()));
        assert_eq!(
            parse_class_options(&nest(&opts)),
            Some((125_000, 250_000, 1_562_500, 1_562_500))
        );
    }

    #[test]
    fn opt_bytes_uncapped() {
        let opts = class_options(UNCAPPED_RATE, UNCAPPED_RATE, 0, 0);
        assert_eq!(opts.len(), 3);
        assert_eq!(&opts[0].1[8..12], &u32::MAX.to_ne_bytes());
        assert_eq!(&opts[0].1[20..24], &u32::MAX.to_ne_bytes());
        assert_eq!(&opts[0].1[24..44], &[0u8; 20]);
        assert_eq!(opts[1], (TCA_HTB_RATE64, UNCAPPED_RATE.to_ne_bytes().to_vec()));
        assert_eq!(opts[2], (TCA_HTB_CEIL64, UNCAPPED_RATE.to_ne_bytes().to_vec()));
        assert_eq!(
            parse_class_options(&nest(&opts)),
            Some((UNCAPPED_RATE, UNCAPPED_RATE, 0, 0))
        );
        // exactly 2^32-1 still fits; a ceil alone above it gets CEIL64 only
        assert_eq!(class_options(u64::from(u32::MAX), u64::from(u32::MAX), 1, 1).len(), 1);
        let o = class_options(1, 1 << 33, 1, 1);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].0, TCA_HTB_CEIL64);
        let n = nest(&opts);
        for cut in 0..n.len() {
            let _ = parse_class_options(&n[..cut]);
            let _ = parse_qdisc_options(&n[..cut]);
        }
        assert_eq!(parse_class_options(&nest(&[(TCA_HTB_PARMS, vec![0; 10])])), None);
    }

    #[test]
    fn subnets_and_keys() {
        let s = Subnet::parse("192.0.2.77/24").unwrap();
        assert_eq!(s.to_string(), "192.0.2.0/24");
        let (proto, prio, keys) = s.filter_keys();
        assert_eq!((proto, prio), (ETH_P_IP, PRIO_V4));
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].mask, keys[0].val, keys[0].off, keys[0].offmask),
            (0xffff_ff00, 0xc000_0200, 16, 0)
        );
        let (_, _, keys) = Subnet::parse("0.0.0.0/0").unwrap().filter_keys();
        assert!(keys.is_empty());
        let (_, _, keys) = Subnet::parse("10.1.2.3/32").unwrap().filter_keys();
        assert_eq!(keys[0].mask, u32::MAX);
        assert_eq!(keys[0].val, 0x0a01_0203);

        let s = Subnet::parse("2001:db8:1:2::5/72").unwrap();
        assert_eq!(s.to_string(), "2001:db8:1:2::/72");
        let (proto, prio, keys) = s.filter_keys();
        assert_eq!((proto, prio), (ETH_P_IPV6, PRIO_V6));
        assert_eq!(keys.len(), 3);
        assert_eq!((keys[0].mask, keys[0].val, keys[0].off), (u32::MAX, 0x2001_0db8, 24));
        assert_eq!((keys[1].mask, keys[1].val, keys[1].off), (u32::MAX, 0x0001_0002, 28));
        assert_eq!((keys[2].mask, keys[2].val, keys[2].off), (0xff00_0000, 0, 32));
        let (_, _, keys) = Subnet::parse("::/0").unwrap().filter_keys();
        assert!(keys.is_empty());
        assert_eq!(Subnet::parse("fd00::1/128").unwrap().filter_keys().2.len(), 4);

        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "",
            "/8",
            "10.0.0.0/8/8",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(class_targets(true), (UNSHAPED_MINOR, SHAPED_MINOR));
        assert_eq!(class_targets(false), (SHAPED_MINOR, UNSHAPED_MINOR));
    }
}
