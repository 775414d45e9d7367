//! The bandwidth stage's config: rates (bits/s) and bursts (bits) for each direction,
//! from the plugin config or the `bandwidth` capability (`runtimeConfig.bandwidth`), and
//! the tbf parameters derived from them as the reference derives them.
//!
//! Which entry counts (reference 1.1.1 `getBandwidth`): the plugin config's own entry
//! whenever it has any of the entry's keys, even all zero or null (Go allocates the
//! embedded entry as soon as one of its keys appears); the runtimeConfig's only when the
//! plugin config has none. The two are never merged field by field.
//!
//! Errors are the reference's: its message as `msg`, code 999 (its plain errors), and
//! what cnichain adds (the field, the figures) in `details`.

use crate::conf;
use crate::kernel::netlink::htb::Subnet;
use crate::kernel::netlink::tbf::ReferenceTbf;
use cnichain_engine::spec::error::{CniError, INTERNAL};
use cnichain_engine::stage::Invocation;
use cnichain_engine::validate::schema::{Role, Schema, Ty, F};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// The longest interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// The ifb device's name prefix.
const IFB_PREFIX: &str = "bwp";

/// A key that may be absent, null or set: Go decodes null into a number as "leave it
/// zero", but the key's presence still counts (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Present<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Present<T> {
    fn is_present(&self) -> bool {
        !matches!(self, Present::Absent)
    }
    fn get(&self) -> Option<&T> {
        match self {
            Present::Set(v) => Some(v),
            _ => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Present::Null,
            Some(v) => Present::Set(v),
        })
    }
}

/// One bandwidth entry as written (bits/s and bits; upstream's subnet lists).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Entry {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: Present<u64>,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: Present<u64>,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: Present<u64>,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: Present<u64>,
    #[serde(rename = "shapedSubnets", default)]
    pub shaped_subnets: Present<Vec<String>>,
    #[serde(rename = "unshapedSubnets", default)]
    pub unshaped_subnets: Present<Vec<String>>,
}

impl Entry {
    fn any_present(&self) -> bool {
        self.ingress_rate.is_present()
            || self.ingress_burst.is_present()
            || self.egress_rate.is_present()
            || self.egress_burst.is_present()
            || self.shaped_subnets.is_present()
            || self.unshaped_subnets.is_present()
    }
}

/// The whole request as the stage reads it (one pass of [`conf::parse`]).
#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(default)]
    capabilities: Option<HashMap<String, bool>>,
    #[serde(rename = "ingressRate", default)]
    ingress_rate: Present<u64>,
    #[serde(rename = "ingressBurst", default)]
    ingress_burst: Present<u64>,
    #[serde(rename = "egressRate", default)]
    egress_rate: Present<u64>,
    #[serde(rename = "egressBurst", default)]
    egress_burst: Present<u64>,
    #[serde(rename = "shapedSubnets", default)]
    shaped_subnets: Present<Vec<String>>,
    #[serde(rename = "unshapedSubnets", default)]
    unshaped_subnets: Present<Vec<String>>,
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
    /// psched ticks, as the reference computes them (saturated where its value wraps)
    pub buffer: u32,
    /// bytes: rate x 25 ms + burst, as the reference sizes the queue (saturated likewise)
    pub limit: u32,
    /// The reference's buffer or limit wrapped around and was saturated here instead.
    pub saturated: bool,
    /// The kernel refuses this tbf (as it refuses the reference's: EINVAL): the buffer
    /// lets no byte through at the rate.
    pub refused: bool,
}

impl Shape {
    /// The reference's tbf for this rate and burst, as the kernel reports it when the
    /// reference made it (its wrapped values included): for CHECK.
    pub fn reference(&self) -> ReferenceTbf {
        ReferenceTbf::new(self.rate, self.burst)
    }
}

/// What to shape. Ingress is traffic into the pod (tbf on the host veth); egress is
/// traffic out of the pod (redirected to an ifb device carrying a tbf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BandwidthConf {
    /// The network name (the ifb device's name is derived from it).
    pub name: String,
    pub ingress: Option<Shape>,
    pub egress: Option<Shape>,
    /// Upstream's subnet lists as written (checked by [`BandwidthConf::subnets`]).
    pub shaped_subnets: Vec<String>,
    pub unshaped_subnets: Vec<String>,
    /// The plugin config has a bandwidth entry of its own.
    pub has_plain: bool,
    /// `capabilities.bandwidth` is true.
    pub capability: bool,
}

/// `shapedSubnets` (only traffic to these is shaped) or `unshapedSubnets` (traffic to
/// these is not shaped, all else is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    /// true for `shapedSubnets`
    pub shaped: bool,
    pub nets: Vec<Subnet>,
}

/// The reference's plain error: its message, code 999, cnichain's help in `details`.
pub(crate) fn reference_error(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(INTERNAL, msg).with_details(details)
}

/// Check one direction's rate and burst as the reference's validateRateAndBurst does and
/// derive the tbf settings. None when either is 0 (the reference shapes a direction only
/// when both are set).
fn shape(rate: u64, burst: u64, rate_field: &str, burst_field: &str) -> Result<Option<Shape>, CniError> {
    match (rate, burst) {
        (0, 0) => return Ok(None),
        (_, 0) => {
            return Err(reference_error(
                "if rate is set, burst must also be set",
                format!("bandwidth: \"{rate_field}\" is {rate} but \"{burst_field}\" is not set"),
            ))
        }
        (0, _) => {
            return Err(reference_error(
                "if burst is set, rate must also be set",
                format!("bandwidth: \"{burst_field}\" is {burst} but \"{rate_field}\" is not set"),
            ))
        }
        _ => {}
    }
    if burst / 8 >= u64::from(u32::MAX) {
        return Err(reference_error(
            "burst cannot be more than 4GB",
            format!(
                "bandwidth: \"{burst_field}\" is {burst} bits; at most {} bits",
                8 * u64::from(u32::MAX) - 1
            ),
        ));
    }
    let burst_b = (burst / 8) as u32;
    let rate_b = rate / 8;
    let t = ReferenceTbf::new(rate_b, burst_b);
    Ok(Some(Shape {
        rate_bits: rate,
        burst_bits: burst,
        rate: rate_b,
        burst: burst_b,
        buffer: t.buffer,
        limit: t.limit,
        saturated: t.buffer_wrapped || t.limit_wrapped,
        refused: t.max_size() == 0,
    }))
}

/// Go's net.ParseCIDR error text.
fn parse_cidr(s: &str) -> Result<Subnet, String> {
    Subnet::parse(s).map_err(|_| format!("invalid CIDR address: {s}"))
}

impl BandwidthConf {
    /// Read the request and check the rates as the reference's parseConfig does
    /// (ingress, then egress). The subnet lists are checked later, by [`Self::subnets`],
    /// where upstream checks them.
    pub fn load(inv: &Invocation) -> Result<BandwidthConf, CniError> {
        let raw: Raw = conf::parse(inv.config, "bandwidth")?;
        let plain = Entry {
            ingress_rate: raw.ingress_rate,
            ingress_burst: raw.ingress_burst,
            egress_rate: raw.egress_rate,
            egress_burst: raw.egress_burst,
            shaped_subnets: raw.shaped_subnets,
            unshaped_subnets: raw.unshaped_subnets,
        };
        let has_plain = plain.any_present();
        let (entry, prefix) = if has_plain {
            (Some(plain), "")
        } else {
            (raw.runtime_config.and_then(|r| r.bandwidth), "runtimeConfig.bandwidth.")
        };
        let mut c = BandwidthConf {
            name: raw.name.unwrap_or_default(),
            has_plain,
            capability: raw
                .capabilities
                .as_ref()
                .and_then(|m| m.get("bandwidth"))
                .copied()
                .unwrap_or(false),
            ..Default::default()
        };
        let Some(e) = entry else { return Ok(c) };
        let f = |k: &str| format!("{prefix}{k}");
        let num = |p: &Present<u64>| p.get().copied().unwrap_or(0);
        c.ingress = shape(
            num(&e.ingress_rate),
            num(&e.ingress_burst),
            &f("ingressRate"),
            &f("ingressBurst"),
        )?;
        c.egress = shape(
            num(&e.egress_rate),
            num(&e.egress_burst),
            &f("egressRate"),
            &f("egressBurst"),
        )?;
        c.shaped_subnets = e.shaped_subnets.get().cloned().unwrap_or_default();
        c.unshaped_subnets = e.unshaped_subnets.get().cloned().unwrap_or_default();
        Ok(c)
    }

    /// Nothing to shape.
    pub fn is_zero(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// Upstream's validateSubnets: not both lists, every entry a CIDR. An empty list is
    /// the same as none (upstream makes absent lists empty). None without a list.
    pub fn subnets(&self) -> Result<Option<Subnets>, CniError> {
        if !self.unshaped_subnets.is_empty() && !self.shaped_subnets.is_empty() {
            return Err(reference_error(
                "unshapedSubnets and shapedSubnets cannot be both specified, one of them should be discarded",
                "bandwidth: set \"shapedSubnets\" or \"unshapedSubnets\", not both",
            ));
        }
        let (shaped, list) = if self.shaped_subnets.is_empty() {
            (false, &self.unshaped_subnets)
        } else {
            (true, &self.shaped_subnets)
        };
        if list.is_empty() {
            return Ok(None);
        }
        let field = if shaped { "shapedSubnets" } else { "unshapedSubnets" };
        let mut nets = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let n = parse_cidr(s).map_err(|why| {
                reference_error(
                    format!("bad subnet {s:?} provided, details {why}"),
                    format!("bandwidth: \"{field}[{i}]\" is not a CIDR"),
                )
            })?;
            nets.push(n);
        }
        Ok(Some(Subnets { shaped, nets }))
    }

    /// The first direction whose tbf the kernel would refuse, with the reference's error
    /// for it (ingress is made first, then the ifb's).
    pub fn kernel_refusal(&self) -> Option<CniError> {
        let explain = |dir: &str, s: &Shape| {
            format!(
                "bandwidth: {dir} rate {} bits/s with burst {} bits: the burst lets not one byte through at this rate (tbf buffer {} ticks of 64 ns); the kernel refuses it",
                s.rate_bits, s.burst_bits, s.buffer
            )
        };
        if let Some(s) = self.ingress.filter(|s| s.refused) {
            return Some(reference_error(
                "create qdisc: invalid argument",
                explain("ingress", &s),
            ));
        }
        if let Some(s) = self.egress.filter(|s| s.refused) {
            return Some(reference_error(
                "create ifb qdisc: create qdisc: invalid argument",
                explain("egress", &s),
            ));
        }
        None
    }
}

/// The network name alone, for a DEL whose config does not load otherwise.
pub fn network_name(inv: &Invocation) -> String {
    #[derive(Deserialize)]
    struct Name {
        #[serde(default)]
        name: Option<String>,
    }
    conf::parse::<Name>(inv.config, "bandwidth")
        .ok()
        .and_then(|n| n.name)
        .unwrap_or_default()
}

/// The ifb device of an attachment, as the reference names it:
/// `bwp` + hex(sha512(network name + container ID)), cut to 15 characters.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let mut s = format!(
        "{IFB_PREFIX}{}",
        crate::kernel::names::hash_hex(&[network, container_id])
    );
    s.truncate(MAX_IFNAME);
    s
}

/// The ifb device of an attachment whose reference name ([`ifb_name`]) another
/// attachment of the same network and container holds (Multus attaching one network
/// twice): `bwp` + hex(sha512(network, containerID, ifname)), cut to 15 characters.
pub fn attachment_ifb_name(network: &str, container_id: &str, ifname: &str) -> String {
    let mut s = format!(
        "{IFB_PREFIX}{}",
        crate::kernel::names::hash_hex(&["cnichain-ifb", "\0", network, "\0", container_id, "\0", ifname])
    );
    s.truncate(MAX_IFNAME);
    s
}

/// The shaping keys, at the top level and in `runtimeConfig.bandwidth`.
const SHAPING: &[F] = &[
    F("ingressRate", Ty::U64),
    F("ingressBurst", Ty::U64),
    F("egressRate", Ty::U64),
    F("egressBurst", Ty::U64),
    F("unshapedSubnets", Ty::List(&Ty::Cidr)),
    F("shapedSubnets", Ty::List(&Ty::Cidr)),
];

/// The keys the bandwidth plugin reads.
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[
        F("ingressRate", Ty::U64),
        F("ingressBurst", Ty::U64),
        F("egressRate", Ty::U64),
        F("egressBurst", Ty::U64),
        F("unshapedSubnets", Ty::List(&Ty::Cidr)),
        F("shapedSubnets", Ty::List(&Ty::Cidr)),
        F("runtimeConfig", Ty::Open(&[F("bandwidth", Ty::Obj(SHAPING))])),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = shape(1_000_000, 100_000, "r", "b").unwrap().unwrap();
        assert_eq!(s.rate, 125_000);
        assert_eq!(s.burst, 12_500);
        assert_eq!(s.limit, 3125 + 12_500);
        assert_eq!(s.buffer, 1_562_500);
        assert!(!s.saturated && !s.refused);
        assert_eq!(shape(0, 0, "r", "b").unwrap(), None);
        for (r, b, msg) in [
            (1, 0, "if rate is set, burst must also be set"),
            (0, 1, "if burst is set, rate must also be set"),
            (0, 8 * u64::from(u32::MAX), "if burst is set, rate must also be set"),
            (8, 8 * u64::from(u32::MAX), "burst cannot be more than 4GB"),
            (u64::MAX, u64::MAX, "burst cannot be more than 4GB"),
        ] {
            let e = shape(r, b, "r", "b").unwrap_err();
            assert_eq!((e.code, e.msg.as_str()), (999, msg), "{r} {b}");
            assert!(e.details.contains('"'), "{r} {b}: {}", e.details);
        }
        // the runtimes' bursts are accepted at every rate; where the reference's buffer
        // or limit wraps, they saturate
        for rate in [1_000u64, 1_000_000, 15_000_000, 100_000_000, 10_000_000_000] {
            for burst in [4_294_967_295u64, 34_359_738_359] {
                let s = shape(rate, burst, "r", "b").unwrap().unwrap();
                assert!(!s.refused, "{rate} {burst}");
                if s.saturated {
                    let t = s.reference();
                    assert!(t.buffer_wrapped || t.limit_wrapped);
                }
            }
        }
        // what the kernel refuses is marked, not refused here (the reference gets that
        // far too)
        assert!(shape(7, 800, "r", "b").unwrap().unwrap().refused);
        assert!(shape(1_000_000, 4, "r", "b").unwrap().unwrap().refused);
        assert!(shape(40_000_000_000, 80_000_000, "r", "b").unwrap().is_some());
    }

    #[test]
    fn ifb_names() {
        let n = ifb_name("net", "cid");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        assert_eq!(&n[3..], &crate::kernel::names::hash_hex(&["netcid"])[..12]);
        let a = attachment_ifb_name("net", "cid", "net1");
        let b = attachment_ifb_name("net", "cid", "net2");
        assert!(a.starts_with("bwp") && a.len() == 15 && a != b && a != n);
    }

    #[test]
    fn keys_match_as_in_go() {
        // What containerd 1.6's go-cni sends for the kubernetes.io/*-bandwidth annotations:
        // its Go field names, as that struct has no json tags.
        let c = serde_json::json!({ "name": "n", "RuntimeConfig": { "Bandwidth": {
            "IngressRate": 50_000_000u64, "IngressBurst": 4_294_967_295u64,
            "EgressRate": 1_000_000u64, "EgressBurst": 100_000u64 } } });
        let raw: Raw = conf::parse(c.as_object().unwrap(), "bandwidth").unwrap();
        let e = raw
            .runtime_config
            .and_then(|r| r.bandwidth)
            .expect("runtimeConfig.bandwidth read");
        assert!(e.ingress_rate.is_present() && e.egress_burst.is_present());
        // Plain config keys in another case count as plain config, as in Go.
        let c = serde_json::json!({ "INGRESSRATE": 1, "ingressBurst": 2 });
        let raw: Raw = conf::parse(c.as_object().unwrap(), "bandwidth").unwrap();
        assert!(raw.ingress_rate.is_present());
    }

    #[test]
    fn subnet_lists() {
        let mut c = BandwidthConf::default();
        assert_eq!(c.subnets().unwrap(), None);
        c.unshaped_subnets = vec!["10.0.0.0/8".into(), "fd00::/64".into()];
        let l = c.subnets().unwrap().unwrap();
        assert!(!l.shaped);
        assert_eq!(l.nets[1].to_string(), "fd00::/64");
        c.shaped_subnets = vec!["10.1.0.0/16".into()];
        let e = c.subnets().unwrap_err();
        assert!(e
            .msg
            .starts_with("unshapedSubnets and shapedSubnets cannot be both specified"));
        c.unshaped_subnets.clear();
        assert!(c.subnets().unwrap().unwrap().shaped);
        c.shaped_subnets = vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()];
        let e = c.subnets().unwrap_err();
        assert_eq!(
            e.msg,
            "bad subnet \"10.0.0.0/40\" provided, details invalid CIDR address: 10.0.0.0/40"
        );
        assert!(e.details.contains("shapedSubnets[1]"));
    }
}

/// The schema `cnichain validate` uses declares the keys this loader reads.
#[cfg(test)]
mod schema_matches_loader {
    use super::*;
    use crate::tests::schema_conformance::{assert_runtime_config, assert_same_keys, assert_schema, struct_keys};

    #[test]
    fn bandwidth() {
        assert_schema::<Raw>(&SCHEMA, &[], &[]);
        assert_runtime_config::<RawRuntimeConfig>(&SCHEMA, &[]);
        assert_same_keys(
            "runtimeConfig.bandwidth",
            &struct_keys::<Entry>(),
            SHAPING,
            false,
            &[],
            &[],
        );
    }
}
