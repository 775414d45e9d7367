//! The bridge plugin's config, with the reference's keys and defaults, read whole through
//! typed structs (`conf::parse`), `args.cni` and `runtimeConfig` included. As in Go, a
//! JSON null leaves a field at its default.

use crate::conf;
use crate::shared::mainconf::{self, IpamRef, MacArgs, MacField};
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG, UNSUPPORTED_FIELD};
use cnichain_engine::spec::ids;
use cnichain_engine::stage::Invocation;
use cnichain_engine::validate::schema::{Role, Schema, Ty, F, MTU, RANGE, STRS};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "bridge", default)]
    br_name: Option<String>,
    #[serde(rename = "isGateway", default)]
    is_gw: Option<bool>,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gw: Option<bool>,
    #[serde(rename = "forceAddress", default)]
    force_address: Option<bool>,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: Option<bool>,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: Option<bool>,
    #[serde(rename = "enabledad", default)]
    enable_dad: Option<bool>,
    #[serde(default)]
    macspoofchk: Option<bool>,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Value>,
    #[serde(rename = "preserveDefaultVlan", default)]
    preserve_default_vlan: Option<bool>,
    #[serde(default)]
    dns: Option<conf::DnsConf>,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    args: Option<MacArgs>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<MacField>,
}

#[derive(Debug)]
pub struct BridgeConf {
    pub name: String,
    pub br_name: String,
    pub is_gw: bool,
    pub is_default_gw: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    mtu: i64,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    pub enable_dad: bool,
    pub macspoofchk: bool,
    pub dns: Option<conf::DnsConf>,
    /// The IPAM's type; None is layer 2 (no addresses).
    pub ipam: Option<String>,
}

impl BridgeConf {
    pub fn load(inv: &Invocation) -> Result<(BridgeConf, Option<[u8; 6]>), CniError> {
        let r: Raw = conf::parse(inv.config, "bridge")?;
        let vlan = r.vlan.unwrap_or(0);
        if !(0..=4094).contains(&vlan) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("invalid VLAN ID {vlan} (must be between 0 and 4094)"),
            ));
        }
        // The VLAN options need bridge VLAN filtering, which cnichain does not offer (see
        // the README): refuse them rather than silently ignore them.
        if vlan != 0 {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!("bridge: unsupported field \"vlan\": {vlan}"),
            ));
        }
        if let Some(t) = &r.vlan_trunk {
            if !(t.is_null() || t.as_array().is_some_and(|a| a.is_empty())) {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!("bridge: unsupported field \"vlanTrunk\": {t}"),
                ));
            }
        }
        if r.preserve_default_vlan == Some(false) {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                "bridge: unsupported field \"preserveDefaultVlan\": false",
            ));
        }
        let is_default_gw = r.is_default_gw.unwrap_or(false);
        let mtu = r.mtu.unwrap_or(0);
        // Go's netlink sends an MTU only when it is positive; beyond 32 bits it would be cut.
        if mtu > u32::MAX as i64 {
            return Err(CniError::new(INVALID_CONFIG, format!("bridge: invalid \"mtu\" {mtu}")));
        }
        let br_name = r.br_name.unwrap_or_else(|| "cni0".into());
        ids::validate_ifname(&br_name).map_err(|e| {
            CniError::new(
                INVALID_CONFIG,
                format!("bridge: invalid \"bridge\" name {br_name:?}: {}", e.msg),
            )
        })?;
        let env = conf::cni_args(inv.rt, &["MAC"])?;
        let env_mac = env.iter().find(|(k, _)| *k == "MAC").map(|(_, v)| *v);
        let mac = mainconf::requested_mac(env_mac, &r.args, &r.runtime_config)?;
        let c = BridgeConf {
            name: r.name.unwrap_or_default(),
            br_name,
            is_gw: r.is_gw.unwrap_or(false) || is_default_gw,
            is_default_gw,
            force_address: r.force_address.unwrap_or(false),
            ip_masq: r.ip_masq.unwrap_or(false),
            mtu,
            hairpin_mode: r.hairpin_mode.unwrap_or(false),
            promisc_mode: r.promisc_mode.unwrap_or(false),
            enable_dad: r.enable_dad.unwrap_or(false),
            macspoofchk: r.macspoofchk.unwrap_or(false),
            dns: r.dns,
            ipam: mainconf::ipam_type(&r.ipam),
        };
        Ok((c, mac))
    }

    /// The MTU to ask for, None to leave the kernel's (0 or negative, as in Go's netlink).
    pub fn mtu(&self) -> Option<u32> {
        (self.mtu > 0).then_some(self.mtu as u32)
    }
}

/// The keys the bridge plugin reads (1.1.1, plus upstream's `ipMasqBackend`,
/// `disableContainerInterface`, `portIsolation` and `vlan` with `vlanTrunk` up to 1.9).
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[
        F("bridge", Ty::Str),
        F("isGateway", Ty::Bool),
        F("isDefaultGateway", Ty::Bool),
        F("forceAddress", Ty::Bool),
        F("ipMasq", Ty::Bool),
        F("ipMasqBackend", Ty::Enum(mainconf::MASQ_BACKENDS)),
        F("mtu", MTU),
        F("hairpinMode", Ty::Bool),
        F("promiscMode", Ty::Bool),
        F("vlan", Ty::Int(0, 4094)),
        F(
            "vlanTrunk",
            Ty::List(&Ty::Obj(&[
                F("minID", Ty::Int(1, 4094)),
                F("maxID", Ty::Int(1, 4094)),
                F("id", Ty::Int(1, 4094)),
            ])),
        ),
        F("preserveDefaultVlan", Ty::Bool),
        F("macspoofchk", Ty::Bool),
        F("enabledad", Ty::Bool),
        F("disableContainerInterface", Ty::Bool),
        F("portIsolation", Ty::Bool),
        F(
            "args",
            Ty::Open(&[F("cni", Ty::Open(&[F("mac", Ty::Str), F("ips", Ty::List(&Ty::Ip))]))]),
        ),
        F(
            "runtimeConfig",
            Ty::Open(&[
                F("mac", Ty::Str),
                F("ips", STRS),
                F("ipRanges", Ty::List(&Ty::List(&Ty::Obj(RANGE)))),
            ]),
        ),
    ],
};

/// The schema `cnichain validate` uses declares the keys this loader reads.
#[cfg(test)]
mod schema_matches_loader {
    use super::*;
    use crate::tests::schema_conformance::{
        assert_runtime_config, assert_same_keys, assert_schema, nested, struct_keys,
    };

    #[test]
    fn bridge() {
        // Upstream's later keys (1.9), which the 1.1.1 reference ignores and so does
        // cnichain; validate knows them so that it does not call them typos.
        let later = ["ipMasqBackend", "disableContainerInterface", "portIsolation"];
        assert_schema::<Raw>(&SCHEMA, &[], &later);
        // ips and ipRanges are the IPAM's, which reads them from this object
        let ipam = ["ips", "ipRanges"];
        assert_runtime_config::<MacField>(&SCHEMA, &ipam);
        let cni = nested(nested(SCHEMA.fields, "args"), "cni");
        assert_same_keys("args.cni", &struct_keys::<MacField>(), cni, false, &[], &["ips"]);
    }
}
