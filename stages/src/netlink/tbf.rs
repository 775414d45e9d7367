//! The tbf qdisc's options, which netlink-packet-route does not model: `struct
//! tc_tbf_qopt` (36 bytes, native endian) plus TCA_TBF_BURST, and TCA_TBF_RATE64 when the
//! rate does not fit in 32 bits. And the reverse, for reading a dump back.
//!
//! `tc_tbf_qopt` = { tc_ratespec rate, tc_ratespec peakrate, u32 limit, u32 buffer, u32 mtu }
//! `tc_ratespec` = { u8 cell_log, u8 linklayer, u16 overhead, i16 cell_align, u16 mpu, u32 rate }
//!
//! The rate spec says linklayer ethernet (so no rate table is needed) with cell_log 0; the
//! buffer is in psched ticks (64 ns); with TCA_TBF_BURST present the kernel derives the
//! buffer from the burst itself. The reference bandwidth plugin sizes the queue as
//! `limit = rate * 25 ms + burst` ([`reference_limit`]).

/// TCA_TBF_PARMS
pub const TCA_TBF_PARMS: u16 = 1;
/// TCA_TBF_RATE64
pub const TCA_TBF_RATE64: u16 = 4;
/// TCA_TBF_BURST
pub const TCA_TBF_BURST: u16 = 6;
/// sizeof(struct tc_tbf_qopt)
pub const QOPT_LEN: usize = 36;
/// TC_LINKLAYER_ETHERNET
const LINKLAYER_ETHERNET: u8 = 1;
/// One psched tick is 64 ns (PSCHED_SHIFT 6).
const NS_PER_TICK: u128 = 64;
const NS_PER_SEC: u128 = 1_000_000_000;
/// The reference bandwidth plugin's latency.
pub const LATENCY_US: u64 = 25_000;

/// tbf settings as the kernel reports them. `burst` is derived from the buffer the kernel
/// keeps in 64 ns ticks, so it can read back a few bytes below what was set (see
/// [`TbfParams::burst_matches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfParams {
    /// bytes per second
    pub rate: u64,
    /// bytes
    pub burst: u32,
    /// bytes
    pub limit: u32,
    /// the kernel's buffer, in psched ticks
    pub buffer_ticks: u32,
}

impl TbfParams {
    /// Whether a burst set as `want` reads back as this one (within the 64 ns rounding of
    /// the kernel's buffer, plus a byte).
    pub fn burst_matches(&self, want: u32) -> bool {
        let slack = (u128::from(self.rate) * NS_PER_TICK).div_ceil(NS_PER_SEC) as u64 + 1;
        u64::from(self.burst).abs_diff(u64::from(want)) <= slack
    }
}

/// The reference plugin's queue limit: `rate * 25 ms + burst` bytes, saturated to u32.
pub fn reference_limit(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    let l = u128::from(rate_bytes_per_sec) * u128::from(LATENCY_US) / 1_000_000 + u128::from(burst_bytes);
    u32::try_from(l).unwrap_or(u32::MAX)
}

/// The time to send `burst` bytes at `rate`, in psched ticks (saturated; 0 if rate is 0).
pub fn buffer_ticks(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    if rate_bytes_per_sec == 0 {
        return 0;
    }
    let ns = u128::from(burst_bytes) * NS_PER_SEC / u128::from(rate_bytes_per_sec);
    u32::try_from(ns / NS_PER_TICK).unwrap_or(u32::MAX)
}

/// `struct tc_tbf_qopt` for a rate (bytes/s), burst and limit (bytes). A rate of 2^32 B/s
/// or more is written as 0xffffffff here and carried in TCA_TBF_RATE64 (as tc does).
pub fn qopt(rate_bytes_per_sec: u64, burst_bytes: u32, limit_bytes: u32) -> [u8; QOPT_LEN] {
    let mut b = [0u8; QOPT_LEN];
    // rate: cell_log 0, linklayer ethernet, overhead 0, cell_align 0, mpu 0, rate
    b[0] = 0;
    b[1] = LINKLAYER_ETHERNET;
    let rate32 = u32::try_from(rate_bytes_per_sec).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&rate32.to_ne_bytes());
    // peakrate: all zero (bytes 12..24)
    b[24..28].copy_from_slice(&limit_bytes.to_ne_bytes());
    b[28..32].copy_from_slice(&buffer_ticks(rate_bytes_per_sec, burst_bytes).to_ne_bytes());
    // mtu 0 (bytes 32..36)
    b
}

/// The nested attributes of TCA_OPTIONS for a tbf qdisc, as (type, value) pairs.
pub fn options(rate_bytes_per_sec: u64, burst_bytes: u32, limit_bytes: u32) -> Vec<(u16, Vec<u8>)> {
    let mut v = vec![
        (
            TCA_TBF_PARMS,
            qopt(rate_bytes_per_sec, burst_bytes, limit_bytes).to_vec(),
        ),
        (TCA_TBF_BURST, burst_bytes.to_ne_bytes().to_vec()),
    ];
    if rate_bytes_per_sec > u64::from(u32::MAX) {
        v.push((TCA_TBF_RATE64, rate_bytes_per_sec.to_ne_bytes().to_vec()));
    }
    v
}

/// Read tbf settings back from the content of a TCA_OPTIONS attribute of a qdisc dump.
/// None if there is no well-formed TCA_TBF_PARMS.
pub fn parse_options(nested: &[u8]) -> Option<TbfParams> {
    let mut parms: Option<[u8; QOPT_LEN]> = None;
    let mut rate64: Option<u64> = None;
    for nla in netlink_packet_core::NlasIterator::new(nested) {
        let nla = nla.ok()?;
        let v = nla.value();
        match nla.kind() {
            TCA_TBF_PARMS => parms = v.get(..QOPT_LEN).and_then(|s| s.try_into().ok()),
            TCA_TBF_RATE64 => rate64 = v.get(..8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes),
            _ => {}
        }
    }
    let p = parms?;
    let u32_at = |i: usize| p.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let rate = match rate64 {
        Some(r) if r > 0 => r,
        _ => u64::from(u32_at(8)?),
    };
    let limit = u32_at(24)?;
    let buffer_ticks = u32_at(28)?;
    // bytes sendable in the buffer time, rounded to nearest
    let burst = (u128::from(buffer_ticks) * NS_PER_TICK * u128::from(rate) + NS_PER_SEC / 2) / NS_PER_SEC;
    Some(TbfParams {
        rate,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
        limit,
        buffer_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nest(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, v) in attrs {
            out.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            out.extend_from_slice(&t.to_ne_bytes());
            out.extend_from_slice(v);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn qopt_bytes_1mbit() {
        // 1 Mbit/s = 125000 B/s, burst 32 KiB: buffer 262.144 ms = 4096000 ticks.
        let limit = reference_limit(125_000, 32768);
        assert_eq!(limit, 3125 + 32768);
        let q = qopt(125_000, 32768, limit);
        let mut want = [0u8; 36];
        want[1] = 1;
        want[8..12].copy_from_slice(&125_000u32.to_ne_bytes());
        want[24..28].copy_from_slice(&35893u32.to_ne_bytes());
        want[28..32].copy_from_slice(&4_096_000u32.to_ne_bytes());
        assert_eq!(q, want);
        let o = options(125_000, 32768, limit);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].0, TCA_TBF_PARMS);
        assert_eq!(o[1], (TCA_TBF_BURST, 32768u32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn rate64() {
        let rate = 5_000_000_000u64; // 40 Gbit/s
        let q = qopt(rate, 1_000_000, reference_limit(rate, 1_000_000));
        assert_eq!(&q[8..12], &u32::MAX.to_ne_bytes());
        assert_eq!(&q[28..32], &3125u32.to_ne_bytes()); // 200 us
        let o = options(rate, 1_000_000, 0);
        assert_eq!(o.len(), 3);
        assert_eq!(o[2], (TCA_TBF_RATE64, rate.to_ne_bytes().to_vec()));
        // exactly 2^32-1 still fits
        assert_eq!(options(u64::from(u32::MAX), 1, 1).len(), 2);
        assert_eq!(reference_limit(rate, 1_000_000), 126_000_000);
        assert_eq!(reference_limit(u64::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn buffer_edges() {
        assert_eq!(buffer_ticks(0, 100), 0);
        assert_eq!(buffer_ticks(1, u32::MAX), u32::MAX);
        assert_eq!(buffer_ticks(u64::MAX, 1), 0);
    }

    #[test]
    fn parse_back() {
        let rate = 250_000u64;
        let limit = reference_limit(rate, 65536);
        let n = nest(&options(rate, 65536, limit));
        let p = parse_options(&n).unwrap();
        assert_eq!(p.rate, rate);
        assert_eq!(p.limit, limit);
        assert_eq!(p.burst, 65536);
        assert!(p.burst_matches(65536));
        assert!(!p.burst_matches(60000));

        let rate = 5_000_000_000u64;
        let n = nest(&options(rate, 1_000_000, 7));
        let p = parse_options(&n).unwrap();
        assert_eq!(p.rate, rate);
        assert_eq!(p.burst, 1_000_000);
        assert_eq!(p.limit, 7);

        // an awkward rate: the tick rounding loses a little
        let rate = 123_457u64;
        let n = nest(&options(rate, 4000, 9));
        let p = parse_options(&n).unwrap();
        assert!(p.burst_matches(4000), "{p:?}");

        assert_eq!(parse_options(&[]), None);
        assert_eq!(parse_options(&nest(&[(TCA_TBF_PARMS, vec![0; 10])])), None);
        for cut in 0..n.len() {
            let _ = parse_options(&n[..cut]);
        }
    }
}
