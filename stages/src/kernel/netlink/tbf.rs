//! The tbf qdisc's options, which netlink-packet-route does not model: `struct
//! tc_tbf_qopt` (36 bytes, native endian), and TCA_TBF_RATE64 when the rate does not fit
//! in 32 bits. And the reverse, for reading a dump back.
//!
//! `tc_tbf_qopt` = { tc_ratespec rate, tc_ratespec peakrate, u32 limit, u32 buffer, u32 mtu }
//! `tc_ratespec` = { u8 cell_log, u8 linklayer, u16 overhead, i16 cell_align, u16 mpu, u32 rate }
//!
//! The options are what the reference bandwidth plugin (through its netlink library)
//! sends, byte for byte: linklayer unspecified, cell_log 0, no rate table, no
//! TCA_TBF_BURST; the buffer in psched ticks as [`ReferenceTbf`] computes it, so that the
//! kernel keeps the same buffer, limit and rate as for the reference.

/// TCA_TBF_PARMS
pub const TCA_TBF_PARMS: u16 = 1;
/// TCA_TBF_RATE64
pub const TCA_TBF_RATE64: u16 = 4;
/// sizeof(struct tc_tbf_qopt)
pub const QOPT_LEN: usize = 36;
/// One psched tick is 64 ns (PSCHED_SHIFT 6).
const NS_PER_TICK: u128 = 64;
const NS_PER_SEC: u128 = 1_000_000_000;
/// The reference's time unit per second (netlink.TIME_UNITS_PER_SEC, microseconds).
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;
/// The reference bandwidth plugin's latency, milliseconds.
const LATENCY_MS: f64 = 25.0;
/// The reference bandwidth plugin's latency, microseconds.
pub const LATENCY_US: u64 = 25_000;

/// tbf settings as the kernel reports them. `burst` is derived from the buffer the kernel
/// keeps in 64 ns ticks (see [`TbfParams::burst_matches`]).
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
    /// the kernel's buffer and the reference's whole microseconds, plus a byte).
    pub fn burst_matches(&self, want: u32) -> bool {
        let slack = (u128::from(self.rate) * 1064).div_ceil(NS_PER_SEC) as u64 + 1;
        u64::from(self.burst).abs_diff(u64::from(want)) <= slack
    }
}

/// Go's `uint32(f)` on amd64 (the reference's build): a truncating conversion through a
/// signed 64-bit integer, so values from 2^32 on wrap around and values from 2^63 on,
/// negative infinity and NaN give 0. Returns the value and whether `f` was in range
/// (0 <= f < 2^32), i.e. whether the reference got a meaningful number.
pub fn go_uint32(f: f64) -> (u32, bool) {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    let in_range = (0.0..4_294_967_296.0).contains(&f);
    let v = if f.is_nan() || !(-TWO63..TWO63).contains(&f) {
        0
    } else {
        // in (-2^63, 2^63): `as` truncates exactly like CVTTSD2SQ
        (f as i64) as u32
    };
    (v, in_range)
}

/// The psched tick length in microseconds as the reference's netlink library reads it
/// from /proc/net/psched (t2us / us2t * clock / 10^6; with a 1 GHz clock t2us is taken as
/// us2t). 15.625 (64 ns) on every current kernel, and when the file cannot be read.
pub fn tick_in_usec() -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        std::fs::read_to_string("/proc/net/psched")
            .ok()
            .and_then(|s| parse_psched(&s))
            .unwrap_or(15.625)
    })
}

fn parse_psched(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.trim().split(' ').collect();
    let mut vals = [0u64; 3];
    for (v, p) in vals.iter_mut().zip(parts.iter()) {
        *v = u64::from(u32::from_str_radix(p, 16).ok()?);
    }
    if parts.len() < 4 || vals[1] == 0 {
        return None;
    }
    if vals[2] == 1_000_000_000 {
        vals[0] = vals[1];
    }
    let clock_factor = vals[2] as f64 / TIME_UNITS_PER_SEC;
    let t = vals[0] as f64 / vals[1] as f64 * clock_factor;
    (t.is_finite() && t > 0.0).then_some(t)
}

/// The tbf parameters the reference bandwidth plugin (1.1.1 `createTBF`) derives from a
/// rate (bytes/s) and a burst (bytes), step by step in its float64 and uint32 arithmetic:
///
/// - time = uint32(burst * 10^6 / rate) microseconds, truncated;
/// - buffer = uint32(time * tick_in_usec) psched ticks, truncated;
/// - limit = uint32(rate * 25000 / 10^6) + burst bytes, in uint32.
///
/// Where a uint32 step of the reference wraps around (the burst takes longer than about
/// 274 s to drain at the rate, or the sum overflows), its value is garbage: a wrapped
/// buffer can be a few bytes, a wrapped limit a few packets. Those steps saturate here
/// instead (buffer: u32::MAX ticks, the longest the kernel takes; limit: u32::MAX), and
/// `buffer_wrapped` / `limit_wrapped` say so. Everywhere else the values are the
/// reference's exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceTbf {
    /// bytes per second
    pub rate: u64,
    /// bytes
    pub burst: u32,
    /// psched ticks (saturated where the reference's wraps)
    pub buffer: u32,
    /// bytes (saturated where the reference's wraps)
    pub limit: u32,
    /// the reference's own buffer and limit, wrapped values included
    pub reference_buffer: u32,
    pub reference_limit: u32,
    pub buffer_wrapped: bool,
    pub limit_wrapped: bool,
}

impl ReferenceTbf {
    pub fn new(rate_bytes_per_sec: u64, burst_bytes: u32) -> ReferenceTbf {
        let rate = rate_bytes_per_sec;
        let burst = burst_bytes;
        // buffer(): time2Tick(uint32(float64(burst) * 1e6 / float64(rate)))
        let (time, time_ok) = go_uint32(f64::from(burst) * TIME_UNITS_PER_SEC / rate as f64);
        let (ticks, ticks_ok) = go_uint32(f64::from(time) * tick_in_usec());
        let buffer_wrapped = !(time_ok && ticks_ok);
        // limit(): uint32(float64(rate) * latency / 1e6) + burst
        let latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
        let (queue, queue_ok) = go_uint32(rate as f64 * latency / TIME_UNITS_PER_SEC);
        let reference_limit = queue.wrapping_add(burst);
        let sum = queue.checked_add(burst);
        let limit_wrapped = !queue_ok || sum.is_none();
        ReferenceTbf {
            rate,
            burst,
            buffer: if buffer_wrapped { u32::MAX } else { ticks },
            limit: if limit_wrapped { u32::MAX } else { reference_limit },
            reference_buffer: ticks,
            reference_limit,
            buffer_wrapped,
            limit_wrapped,
        }
    }

    /// The kernel's largest packet for this tbf (`max_size`: the bytes the buffer lets
    /// through at the rate, at most u32::MAX). The kernel refuses a tbf whose max_size is
    /// 0 with EINVAL, as it refuses the reference's.
    pub fn max_size(&self) -> u64 {
        kernel_max_size(self.rate, self.buffer)
    }
}

/// sch_tbf's `max_size` for a rate (bytes/s) and a buffer (ticks): psched_ns_t2l of the
/// buffer, at most u32::MAX.
pub fn kernel_max_size(rate_bytes_per_sec: u64, buffer_ticks: u32) -> u64 {
    let ns = u128::from(buffer_ticks) * NS_PER_TICK;
    let len = ns * u128::from(rate_bytes_per_sec) / NS_PER_SEC;
    u64::try_from(len.min(u128::from(u32::MAX))).unwrap_or(u64::from(u32::MAX))
}

/// The reference plugin's queue limit (see [`ReferenceTbf`]), saturated where it wraps.
pub fn reference_limit(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    ReferenceTbf::new(rate_bytes_per_sec, burst_bytes).limit
}

/// The reference plugin's buffer in psched ticks (see [`ReferenceTbf`]), saturated where
/// it wraps.
pub fn buffer_ticks(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    ReferenceTbf::new(rate_bytes_per_sec, burst_bytes).buffer
}

/// `struct tc_tbf_qopt` for a rate (bytes/s), a buffer (ticks) and a limit (bytes), as the
/// reference's netlink library fills it: the rate's low 32 bits (TCA_TBF_RATE64 carries
/// the rest), linklayer unspecified, no peak rate, mtu 0.
pub fn qopt(rate_bytes_per_sec: u64, buffer_ticks: u32, limit_bytes: u32) -> [u8; QOPT_LEN] {
    let mut b = [0u8; QOPT_LEN];
    // rate: cell_log 0, linklayer 0, overhead 0, cell_align 0, mpu 0, rate
    let rate32 = rate_bytes_per_sec as u32;
    b[8..12].copy_from_slice(&rate32.to_ne_bytes());
    // peakrate: all zero (bytes 12..24)
    b[24..28].copy_from_slice(&limit_bytes.to_ne_bytes());
    b[28..32].copy_from_slice(&buffer_ticks.to_ne_bytes());
    // mtu 0 (bytes 32..36)
    b
}

/// The nested attributes of TCA_OPTIONS for a tbf qdisc, as (type, value) pairs.
pub fn options(rate_bytes_per_sec: u64, buffer_ticks: u32, limit_bytes: u32) -> Vec<(u16, Vec<u8>)> {
    let mut v = vec![(
        TCA_TBF_PARMS,
        qopt(rate_bytes_per_sec, buffer_ticks, limit_bytes).to_vec(),
    )];
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

    use super::super::test_nla_bytes as nest;

    #[test]
    fn qopt_bytes_1mbit() {
        // 1 Mbit/s = 125000 B/s, burst 32 KiB: 262144 us = 4096000 ticks.
        let t = ReferenceTbf::new(125_000, 32768);
        assert_eq!((t.buffer, t.limit), (4_096_000, 3125 + 32768));
        let q = qopt(125_000, t.buffer, t.limit);
        let mut want = [0u8; 36];
        want[8..12].copy_from_slice(&125_000u32.to_ne_bytes());
        want[24..28].copy_from_slice(&35893u32.to_ne_bytes());
        want[28..32].copy_from_slice(&4_096_000u32.to_ne_bytes());
        assert_eq!(q, want);
        let o = options(125_000, t.buffer, t.limit);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].0, TCA_TBF_PARMS);
    }

    #[test]
    fn rate64() {
        let rate = 5_000_000_000u64; // 40 Gbit/s
        let t = ReferenceTbf::new(rate, 1_000_000);
        assert_eq!(t.buffer, 3125); // 200 us
        let q = qopt(rate, t.buffer, t.limit);
        assert_eq!(&q[8..12], &(rate as u32).to_ne_bytes());
        let o = options(rate, t.buffer, 0);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1], (TCA_TBF_RATE64, rate.to_ne_bytes().to_vec()));
        // exactly 2^32-1 still fits
        assert_eq!(options(u64::from(u32::MAX), 1, 1).len(), 1);
        assert_eq!(reference_limit(rate, 1_000_000), 126_000_000);
        assert_eq!(reference_limit(u64::MAX, u32::MAX), u32::MAX);
    }

    /// Figures the reference binary (1.1.1 on amd64) put in the kernel, read back with
    /// `tc -raw`: the buffer truncated to whole microseconds, then to whole ticks.
    #[test]
    fn reference_figures() {
        // 300 kbit/s, burst 299992 bits: 37499 B, 999973 us, 15624578 ticks
        let t = ReferenceTbf::new(37_500, 37_499);
        assert_eq!((t.buffer, t.limit), (15_624_578, 937 + 37_499));
        assert!(!t.buffer_wrapped && !t.limit_wrapped);
        // containerd's burst (2^32-1 bits) at 1 Mbit/s: the reference's buffer wraps to
        // 0x9fffff83; here it saturates
        let t = ReferenceTbf::new(125_000, 536_870_911);
        assert_eq!(t.reference_buffer, 0x9fff_ff83);
        assert!(t.buffer_wrapped);
        assert_eq!(t.buffer, u32::MAX);
        assert_eq!(t.limit, 536_874_036);
        // CRI-O's (2^35-9 bits) at 1 Mbit/s: the limit wraps to 3123 in the reference
        let t = ReferenceTbf::new(125_000, 4_294_967_294);
        assert_eq!(t.reference_limit, 3123);
        assert!(t.limit_wrapped);
        assert_eq!(t.limit, u32::MAX);
        // a burst under a byte / a rate under a byte per second: the kernel refuses
        assert_eq!(ReferenceTbf::new(125_000, 0).max_size(), 0);
        assert_eq!(ReferenceTbf::new(0, 1000).max_size(), 0);
        assert_eq!(ReferenceTbf::new(3, 1).max_size(), 0);
        assert_eq!(ReferenceTbf::new(1, 1).max_size(), 1);
    }

    #[test]
    fn go_conversions() {
        // as go1.19 on amd64 converts them
        for (f, want) in [
            (67_108_863_875.0, 2_684_354_435u32),
            (4_294_967_296.0, 0),
            (4_294_967_295.9, 4_294_967_295),
            (1e19, 0),
            (9.3e18, 0),
            (9.2e18, 2_643_984_384),
            (-1.0, 4_294_967_295),
            (-5e9, 3_589_934_592),
            (f64::INFINITY, 0),
            (f64::NEG_INFINITY, 0),
            (f64::NAN, 0),
            (2_684_354_435.7, 2_684_354_435),
        ] {
            assert_eq!(go_uint32(f).0, want, "{f}");
        }
        assert!(go_uint32(4_294_967_295.9).1);
        assert!(!go_uint32(4_294_967_296.0).1);
        assert!(!go_uint32(-0.5).1 || go_uint32(-0.5).0 == 0);
        assert_eq!(parse_psched("000003e8 00000040 000f4240 3b9aca00\n"), Some(15.625));
        assert_eq!(parse_psched("00000040 00000040 3b9aca00 3b9aca00"), Some(1000.0));
        assert_eq!(parse_psched("1 2"), None);
        assert_eq!(parse_psched("x y z w"), None);
    }

    #[test]
    fn buffer_edges() {
        assert_eq!(buffer_ticks(1, u32::MAX), u32::MAX);
        assert_eq!(buffer_ticks(u64::MAX, 1), 0);
    }

    #[test]
    fn parse_back() {
        let rate = 250_000u64;
        let limit = reference_limit(rate, 65536);
        let n = nest(&options(rate, buffer_ticks(rate, 65536), limit));
        let p = parse_options(&n).unwrap();
        assert_eq!(p.rate, rate);
        assert_eq!(p.limit, limit);
        assert_eq!(p.burst, 65536);
        assert!(p.burst_matches(65536));
        assert!(!p.burst_matches(60000));

        let rate = 5_000_000_000u64;
        let n = nest(&options(rate, buffer_ticks(rate, 1_000_000), 7));
        let p = parse_options(&n).unwrap();
        assert_eq!(p.rate, rate);
        assert_eq!(p.burst, 1_000_000);
        assert_eq!(p.limit, 7);

        // an awkward rate: the tick rounding loses a little
        let rate = 123_457u64;
        let n = nest(&options(rate, buffer_ticks(rate, 4000), 9));
        let p = parse_options(&n).unwrap();
        assert!(p.burst_matches(4000), "{p:?}");

        assert_eq!(parse_options(&[]), None);
        assert_eq!(parse_options(&nest(&[(TCA_TBF_PARMS, vec![0; 10])])), None);
        for cut in 0..n.len() {
            let _ = parse_options(&n[..cut]);
        }
    }
}
