//! The bridge plugin's config, with the reference's keys and defaults.

use crate::conf;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG, UNSUPPORTED_FIELD};
use cnichain_engine::spec::ids;
use cnichain_engine::stage::Invocation;
use serde::Deserialize;
use serde_json::Value;

fn default_bridge() -> String {
    "cni0".into()
}

#[derive(Debug, Deserialize)]
pub struct BridgeConf {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "bridge", default = "default_bridge")]
    pub br_name: String,
    #[serde(rename = "isGateway", default)]
    pub is_gw: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gw: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: i64,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(rename = "enabledad", default)]
    pub enable_dad: bool,
    #[serde(default)]
    pub macspoofchk: bool,
    #[serde(default)]
    pub vlan: i64,
    #[serde(rename = "vlanTrunk", default)]
    pub vlan_trunk: Option<Value>,
    #[serde(rename = "preserveDefaultVlan", default)]
    pub preserve_default_vlan: Option<bool>,
    #[serde(default)]
    pub dns: Option<crate::conf::DnsConf>,
}

impl BridgeConf {
    pub fn load(inv: &Invocation) -> Result<(BridgeConf, Option<[u8; 6]>), CniError> {
        let mut c: BridgeConf = conf::parse(inv.config, "bridge")?;
        // The VLAN options need bridge VLAN filtering, which cnichain does not offer (see
        // the README): refuse them rather than silently ignore them.
        if c.vlan != 0 {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!("bridge: unsupported field \"vlan\": {}", c.vlan),
            ));
        }
        if let Some(t) = &c.vlan_trunk {
            if !(t.is_null() || t.as_array().is_some_and(|a| a.is_empty())) {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!("bridge: unsupported field \"vlanTrunk\": {t}"),
                ));
            }
        }
        if c.preserve_default_vlan == Some(false) {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                "bridge: unsupported field \"preserveDefaultVlan\": false",
            ));
        }
        if c.is_default_gw {
            c.is_gw = true;
        }
        if !(0..=65535).contains(&c.mtu) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("bridge: invalid \"mtu\" {}", c.mtu),
            ));
        }
        ids::validate_ifname(&c.br_name).map_err(|e| {
            CniError::new(
                INVALID_CONFIG,
                format!("bridge: invalid \"bridge\" name {:?}: {}", c.br_name, e.msg),
            )
        })?;
        let env = conf::cni_args(inv.rt, &["MAC"])?;
        let env_mac = env.iter().find(|(k, _)| *k == "MAC").map(|(_, v)| *v);
        let mac = conf::requested_mac(inv.config, env_mac)?;
        Ok((c, mac))
    }

    pub fn mtu(&self) -> Option<u32> {
        (self.mtu > 0).then_some(self.mtu as u32)
    }
}
