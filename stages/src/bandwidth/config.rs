//! The bandwidth stage's config: rates (bits/s) and bursts (bits) for each direction,
//! from the plugin config or the `bandwidth` capability (`runtimeConfig.bandwidth`), and
//! the tbf parameters derived from them as the reference derives them.
//!
//! Which entry counts (reference 1.1.1 `getBandwidth`): the plugin config's own entry
//! whenever it has any of the entry's keys, even all zero; the runtimeConfig's only
//! when the plugin config has none. The two are never merged field by field.

use crate::conf;
use crate::netlink::htb::Subnet;
use crate::netlink::tbf;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::result::key_is;
use cnichain_engine::stage::Invocation;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The keys of a bandwidth entry (upstream's subnet lists included: their presence also
/// makes the plugin config's entry the one that counts).
pub(crate) const ENTRY_KEYS: &[&str] = &[
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
    /// Upstream's subnet lists: with one of them, both directions use the htb layout.
    pub subnets: Option<Subnets>,
}

/// `shapedSubnets` (only traffic to these is shaped) or `unshapedSubnets` (traffic to
/// these is not shaped, all else is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    /// true for `shapedSubnets`
    pub shaped: bool,
    pub nets: Vec<Subnet>,
}

/// A subnet list: absent, null or empty is None; else an array of CIDR strings.
fn subnet_list(v: &Option<Value>, field: &str) -> Result<Option<Vec<Subnet>>, CniError> {
    let a = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(invalid(field, format!("{other} is not a list of CIDR strings"))),
    };
    if a.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(a.len());
    for (i, e) in a.iter().enumerate() {
        let Some(s) = e.as_str() else {
            return Err(invalid(&format!("{field}[{i}]"), format!("{e} is not a CIDR string")));
        };
        out.push(Subnet::parse(s).map_err(|why| invalid(&format!("{field}[{i}]"), why))?);
    }
    Ok(Some(out))
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

impl BandwidthConf {
    /// Read and check the request. Bad numbers, bad subnet lists and both subnet lists
    /// at once are code 7 naming the field.
    pub fn load(inv: &Invocation) -> Result<BandwidthConf, CniError> {
        let config = go_keys(inv.config);
        let plain: Entry = conf::parse(&config, "bandwidth")?;
        let rt: RawRuntime = conf::parse(&config, "bandwidth")?;
        let has_plain = ENTRY_KEYS.iter().any(|k| config.contains_key(*k));
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
        let f = |k: &str| format!("{prefix}{k}");
        let unshaped = subnet_list(&e.unshaped_subnets, &f("unshapedSubnets"))?;
        let shaped = subnet_list(&e.shaped_subnets, &f("shapedSubnets"))?;
        c.subnets = match (unshaped, shaped) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &f("shapedSubnets"),
                    format!("cannot be set together with \"{}\"", f("unshapedSubnets")),
                ))
            }
            (Some(nets), None) => Some(Subnets { shaped: false, nets }),
            (None, Some(nets)) => Some(Subnets { shaped: true, nets }),
            (None, None) => None,
        };
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

/// The request with the entry's keys as Go's decoder matches them: case-insensitively,
/// the last match winning. containerd's go-cni sends `runtimeConfig.bandwidth` with its
/// Go field names (`IngressRate`, `IngressBurst`, ...: that struct has no json tags),
/// and the reference reads them; so are the top-level keys and `runtimeConfig` itself
/// matched. Other keys stay as they are.
fn go_keys(config: &Map<String, Value>) -> Map<String, Value> {
    fn canon(m: &Map<String, Value>, names: &[&str]) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in m {
            let name = names
                .iter()
                .find(|n| key_is(k, n))
                .map_or_else(|| k.clone(), |n| n.to_string());
            out.insert(name, v.clone());
        }
        out
    }
    let mut top_names = ENTRY_KEYS.to_vec();
    top_names.push("runtimeConfig");
    let mut top = canon(config, &top_names);
    if let Some(Value::Object(rc)) = top.get("runtimeConfig") {
        let mut rc = canon(rc, &["bandwidth"]);
        if let Some(Value::Object(bw)) = rc.get("bandwidth") {
            let bw = canon(bw, ENTRY_KEYS);
            rc.insert("bandwidth".into(), Value::Object(bw));
        }
        top.insert("runtimeConfig".into(), Value::Object(rc));
    }
    top
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

#[cfg(test)]
mod subnet_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_as_in_go() {
        // what containerd 1.6's go-cni sends for the kubernetes.io/*-bandwidth annotations
        let c = json!({ "name": "n", "runtimeConfig": { "bandwidth": {
            "IngressRate": 50_000_000u64, "IngressBurst": 4_294_967_295u64,
            "EgressRate": 1_000_000u64, "EgressBurst": 100_000u64 } } });
        let got = go_keys(c.as_object().unwrap());
        assert_eq!(
            got["runtimeConfig"]["bandwidth"],
            json!({ "ingressRate": 50_000_000u64, "ingressBurst": 4_294_967_295u64,
                    "egressRate": 1_000_000u64, "egressBurst": 100_000u64 })
        );
        // top level and runtimeConfig itself too; the last match wins; others untouched
        let c = json!({ "INGRESSRATE": 1, "ingressRate": 2, "RuntimeConfig": { "Bandwidth": {} }, "Other": 3 });
        let got = go_keys(c.as_object().unwrap());
        assert_eq!(
            Value::Object(got),
            json!({ "ingressRate": 2, "runtimeConfig": { "bandwidth": {} }, "Other": 3 })
        );
    }

    #[test]
    fn subnet_lists() {
        assert_eq!(subnet_list(&None, "f").unwrap(), None);
        assert_eq!(subnet_list(&Some(Value::Null), "f").unwrap(), None);
        assert_eq!(subnet_list(&Some(json!([])), "f").unwrap(), None);
        let l = subnet_list(&Some(json!(["10.0.0.0/8", "fd00::/64"])), "f")
            .unwrap()
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].to_string(), "fd00::/64");
        for (v, field) in [
            (json!("10.0.0.0/8"), "\"f\""),
            (json!({"a": 1}), "\"f\""),
            (json!([1]), "\"f[0]\""),
            (json!(["10.0.0.0/8", "10.0.0.0/40"]), "\"f[1]\""),
            (json!(["nonsense"]), "\"f[0]\""),
            (json!([["10.0.0.0/8"]]), "\"f[0]\""),
        ] {
            let e = subnet_list(&Some(v.clone()), "f").unwrap_err();
            assert_eq!(e.code, 7, "{v}");
            assert!(e.msg.contains(field), "{v}: {}", e.msg);
        }
    }
}
