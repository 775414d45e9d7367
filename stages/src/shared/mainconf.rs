//! The config pieces bridge and ptp share, read through typed structs (so `conf::parse`
//! matches their keys as Go's encoding/json does): the IPAM's type, the requested MAC
//! from `args.cni.mac` and `runtimeConfig.mac`. A JSON null anywhere is "not set", as in Go.

use crate::conf;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use serde::Deserialize;

/// `ipam`, of which a main stage reads only the type (the IPAM reads the rest).
#[derive(Debug, Default, Deserialize)]
pub struct IpamRef {
    #[serde(rename = "type", default)]
    pub typ: Option<String>,
}

/// The IPAM type, None when absent or empty (layer 2 for bridge).
pub fn ipam_type(ipam: &Option<IpamRef>) -> Option<String> {
    ipam.as_ref().and_then(|i| i.typ.clone()).filter(|t| !t.is_empty())
}

/// `args`, of which the main stages read `cni.mac`.
#[derive(Debug, Default, Deserialize)]
pub struct MacArgs {
    #[serde(default)]
    pub cni: Option<MacField>,
}

/// An object whose `mac` is read: `args.cni`, `runtimeConfig`.
#[derive(Debug, Default, Deserialize)]
pub struct MacField {
    #[serde(default)]
    pub mac: Option<String>,
}

/// The MAC for the container interface with the reference's precedence: runtimeConfig.mac
/// over args.cni.mac over CNI_ARGS MAC= (empty means unset). A bad one is refused with the
/// reference's text (Go's net.ParseMAC error, as its veth set-up reports it).
pub fn requested_mac(
    env_mac: Option<&str>,
    args: &Option<MacArgs>,
    runtime: &Option<MacField>,
) -> Result<Option<[u8; 6]>, CniError> {
    let args_mac = args
        .as_ref()
        .and_then(|a| a.cni.as_ref())
        .and_then(|c| c.mac.as_deref());
    let rt_mac = runtime.as_ref().and_then(|r| r.mac.as_deref());
    let pick = [
        (rt_mac, "runtimeConfig.mac"),
        (args_mac, "args.cni.mac"),
        (env_mac, "CNI_ARGS MAC"),
    ]
    .into_iter()
    .find_map(|(m, field)| m.filter(|m| !m.is_empty()).map(|m| (m, field)));
    match pick {
        None => Ok(None),
        Some((m, field)) => conf::parse_mac(m).map(Some).ok_or_else(|| {
            CniError::new(
                INVALID_CONFIG,
                format!("failed to make veth pair: address {m}: invalid MAC address"),
            )
            .with_details(format!("{field} {m:?} is not a 6-byte MAC address"))
        }),
    }
}

/// The masquerade backends bridge, ptp and portmap accept (upstream's `ipMasqBackend`
/// and `backend`; cnichain uses nftables for both).
pub const MASQ_BACKENDS: &[&str] = &["iptables", "nftables"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_precedence_and_errors() {
        let f = |m: &str| Some(MacField { mac: Some(m.into()) });
        let args = Some(MacArgs {
            cni: f("02:00:00:00:00:02"),
        });
        assert_eq!(
            requested_mac(Some("02:00:00:00:00:01"), &args, &f("02:00:00:00:00:03")).unwrap(),
            Some([2, 0, 0, 0, 0, 3])
        );
        assert_eq!(
            requested_mac(Some("02:00:00:00:00:01"), &args, &f("")).unwrap(),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(requested_mac(Some(""), &None, &None).unwrap(), None);
        let e = requested_mac(None, &None, &f("zz")).unwrap_err();
        assert_eq!(e.msg, "failed to make veth pair: address zz: invalid MAC address");
        assert!(e.details.contains("runtimeConfig.mac"));
    }
}
