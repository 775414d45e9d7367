//! The bandwidth stage's config: rates (bits/s) and bursts (bits) for each direction,
//! from the plugin config or the `bandwidth` capability (`runtimeConfig.bandwidth`), and
//! the tbf parameters derived from them as the reference derives them.
//!
//! Which entry counts (reference 1.1.1 `getBandwidth`): the plugin config's own entry
//! whenever it has any of the entry's keys, even all zero; the runtimeConfig's only
//! when the plugin config has none. The two are never merged field by field.

use crate::conf;
use crate::netlink::tbf;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG, UNSUPPORTED_FIELD};
use cnichain_engine::stage::Invocation;
use serde::Deserialize;
use serde_json::Value;

/// The keys of a bandwidth entry (upstream's subnet lists included: their presence also
/// makes the plugin config's entry the one that counts).
const ENTRY_KEYS: &[&str] = &[
    "ingressRate",
    "ingressBurst",
    "egressRate",
    "egressBurst",
    "shapedSubnets",
    "unshapedSubnets",
];

/// The longest interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// The ifb device's name prefix.
const IFB_PREFIX: &str = "bwp";

/// One bandwidth entry as written (bits/s and bits).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Entry {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: Option<u64>,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: Option<u64>,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: Option<u64>,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: Option<u64>,
    #[serde(rename = "shapedSubnets", default)]
    pub shaped_subnets: Option<Value>,
    #[serde(rename = "unshapedSubnets", default)]
    pub unshaped_subnets: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRuntime {
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntimeConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRuntimeConfig {
    #[serde(default)]
    bandwidth: Option<Entry>,
}

/// tbf settings for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// As configured.
    pub rate_bits: u64,
    pub burst_bits: u64,
    /// bytes per second (rate / 8)
    pub rate: u64,
    /// bytes (burst / 8)
    pub burst: u32,
    /// bytes: rate * 25 ms + burst, as the reference sizes the queue
    pub limit: u32,
}

/// What to shape. Ingress is traffic into the pod (tbf on the host veth); egress is
/// traffic out of the pod (redirected to an ifb device carrying a tbf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BandwidthConf {
    /// The network name (the ifb device's name is derived from it).
    pub name: String,
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::new(INVALID_CONFIG, format!("bandwidth: invalid \"{field}\": {msg}"))
}

/// Check one direction's rate and burst (as the reference's validateRateAndBurst, plus
/// the limits the kernel's tbf needs) and derive the tbf settings. None when both are 0.
fn shape(rate: u64, burst: u64, rate_field: &str, burst_field: &str) -> Result<Option<Shape>, CniError> {
    match (rate, burst) {
        (0, 0) => return Ok(None),
        (_, 0) => return Err(invalid(burst_field, "if rate is set, burst must also be set")),
        (0, _) => return Err(invalid(rate_field, "if burst is set, rate must also be set")),
        _ => {}
    }
    if burst / 8 >= u64::from(u32::MAX) {
        return Err(invalid(
            burst_field,
            format!("{burst} bits: burst cannot be more than 4GB"),
        ));
    }
    if rate < 8 {
        return Err(invalid(
            rate_field,
            format!("{rate} bits/s: the rate must be at least 8 bits/s (1 byte/s)"),
        ));
    }
    if burst < 8 {
        return Err(invalid(
            burst_field,
            format!("{burst} bits: the burst must be at least 8 bits (1 byte)"),
        ));
    }
    let rate_b = rate / 8;
    // burst / 8 < u32::MAX was checked above
    let burst_b = u32::try_from(burst / 8).map_err(|_| invalid(burst_field, "burst cannot be more than 4GB"))?;
    let ticks = tbf::buffer_ticks(rate_b, burst_b);
    if ticks == 0 {
        return Err(invalid(
            burst_field,
            format!("{burst} bits: too small for a rate of {rate} bits/s (the burst must last at least 64 ns)"),
        ));
    }
    if ticks == u32::MAX {
        return Err(invalid(
            burst_field,
            format!("{burst} bits: too large for a rate of {rate} bits/s (the burst must drain within 274 s)"),
        ));
    }
    let limit = u128::from(rate_b) * u128::from(tbf::LATENCY_US) / 1_000_000 + u128::from(burst_b);
    let limit = u32::try_from(limit).map_err(|_| {
        invalid(
            rate_field,
            format!("{rate} bits/s: too high (the queue for 25 ms at this rate exceeds 4 GB)"),
        )
    })?;
    Ok(Some(Shape {
        rate_bits: rate,
        burst_bits: burst,
        rate: rate_b,
        burst: burst_b,
        limit,
    }))
}

fn non_empty(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

impl BandwidthConf {
    /// Read and check the request. Bad numbers are code 7 naming the field; upstream's
    /// `shapedSubnets` / `unshapedSubnets` (htb classes) are code 2.
    pub fn load(inv: &Invocation) -> Result<BandwidthConf, CniError> {
        let plain: Entry = conf::parse(inv.config, "bandwidth")?;
        let rt: RawRuntime = conf::parse(inv.config, "bandwidth")?;
        let has_plain = ENTRY_KEYS.iter().any(|k| inv.config.contains_key(*k));
        let (entry, prefix) = if has_plain {
            (Some(plain), "")
        } else {
            (rt.runtime_config.and_then(|r| r.bandwidth), "runtimeConfig.bandwidth.")
        };
        let name = inv
            .config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut c = BandwidthConf {
            name,
            ..Default::default()
        };
        let Some(e) = entry else { return Ok(c) };
        for (v, key) in [
            (&e.shaped_subnets, "shapedSubnets"),
            (&e.unshaped_subnets, "unshapedSubnets"),
        ] {
            if non_empty(v) {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!(
                        "bandwidth: unsupported field \"{prefix}{key}\": cnichain shapes all traffic (tbf) and does \
                         not offer per-subnet shaping"
                    ),
                ));
            }
        }
        let f = |k: &str| format!("{prefix}{k}");
        c.ingress = shape(
            e.ingress_rate.unwrap_or(0),
            e.ingress_burst.unwrap_or(0),
            &f("ingressRate"),
            &f("ingressBurst"),
        )?;
        c.egress = shape(
            e.egress_rate.unwrap_or(0),
            e.egress_burst.unwrap_or(0),
            &f("egressRate"),
            &f("egressBurst"),
        )?;
        Ok(c)
    }

    /// Nothing to shape.
    pub fn is_zero(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

/// The ifb device of an attachment, as the reference names it:
/// `bwp` + hex(sha512(network name + container ID)), cut to 15 characters.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let mut s = format!("{IFB_PREFIX}{}", conf::hash_hex(&[network, container_id]));
    s.truncate(MAX_IFNAME);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = shape(1_000_000, 100_000, "r", "b").unwrap().unwrap();
        assert_eq!(s.rate, 125_000);
        assert_eq!(s.burst, 12_500);
        assert_eq!(s.limit, 3125 + 12_500);
        assert_eq!(shape(0, 0, "r", "b").unwrap(), None);
        for (r, b, field) in [
            (1, 0, "b"),
            (0, 1, "r"),
            (7, 800, "r"),
            (800, 7, "b"),
            (8, 8 * u64::from(u32::MAX), "b"),
            (u64::MAX, 8, "b"),
            (8, 8_000_000, "b"),
            (1_600_000_000_000, 8_000_000, "r"),
        ] {
            let e = shape(r, b, "r", "b").unwrap_err();
            assert_eq!(e.code, 7, "{r} {b}");
            assert!(e.msg.contains(&format!("\"{field}\"")), "{r} {b}: {}", e.msg);
        }
        // 40 Gbit/s still fits (tbf's 64-bit rate)
        assert!(shape(40_000_000_000, 80_000_000, "r", "b").unwrap().is_some());
    }

    #[test]
    fn ifb_names() {
        let n = ifb_name("net", "cid");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        assert_eq!(&n[3..], &conf::hash_hex(&["netcid"])[..12]);
    }
}
