//! The tuning stage's config: the reference's keys (`sysctl`, `mac`, `mtu`, `promisc`,
//! `allmulti`, upstream's `txQLen`, `dataDir`), the `args.cni` overrides, the MAC
//! precedence, and every sysctl key turned into a checked path below `/proc/sys/net`.
//!
//! Everything here is checked before anything is written; a problem is an invalid
//! config (code 7) naming the field or the sysctl key.

use crate::conf;
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG, UNSUPPORTED_FIELD};
use cnichain_engine::stage::Invocation;
use cnichain_engine::validate::schema::{Role, Schema, Ty, F, MTU};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The upstream plugin's sysctl allowlist (one regex per line). cnichain cannot
/// evaluate it, so when it exists sysctls are refused rather than let through.
pub const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

#[derive(Debug, Default, Deserialize)]
struct RawConf {
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(default)]
    sysctl: Option<Map<String, Value>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(default)]
    args: Option<RawArgs>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRuntimeConfig {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawArgsCni>,
}

#[derive(Debug, Default, Deserialize)]
struct RawArgsCni {
    #[serde(default)]
    sysctl: Option<Map<String, Value>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default)]
    txqlen: Option<i64>,
}

/// One sysctl to set: the key as written in the config and its path relative to
/// `/proc/sys` in slashed form (`net/ipv4/conf/eth0/arp_filter`), which is what the
/// sysctl helpers take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub path: String,
    pub value: String,
}

/// A requested MAC: the address and where it came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac {
    pub addr: [u8; 6],
    pub field: &'static str,
}

/// The checked config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningConf {
    /// `dataDir` when given; else the record goes under the cnichain state dir.
    pub data_dir: Option<PathBuf>,
    /// In config order; `args.cni.sysctl` entries replace those with the same path.
    pub sysctls: Vec<Sysctl>,
    pub mac: Option<Mac>,
    /// Only `true` does anything on ADD (as in the reference); CHECK also verifies
    /// that promiscuous mode is off when this is false.
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, format!("tuning: {}", msg.into()))
}

impl TuningConf {
    /// Read and check the whole request: config keys, `args.cni`, `runtimeConfig.mac`,
    /// CNI_ARGS `MAC`, and every sysctl key against the interface name.
    pub fn load(inv: &Invocation) -> Result<TuningConf, CniError> {
        let raw: RawConf = conf::parse(inv.config, "tuning")?;
        let ifname = &inv.rt.ifname;
        if ifname.contains('/') {
            return Err(invalid(format!(
                "interface name ({ifname}) contains an invalid character /"
            )));
        }
        let mut c = TuningConf {
            data_dir: raw.data_dir.filter(|d| !d.is_empty()).map(PathBuf::from),
            promisc: raw.promisc.unwrap_or(false),
            allmulti: raw.allmulti,
            ..Default::default()
        };
        if let Some(d) = &c.data_dir {
            if !d.is_absolute() {
                return Err(invalid(format!(
                    "\"dataDir\" must be an absolute path, got {:?}",
                    d.display()
                )));
            }
        }
        let mut mtu = raw.mtu;
        let mut txqlen = raw.txqlen;

        // The reference's precedence for the MAC: the config, then CNI_ARGS MAC, then
        // runtimeConfig.mac, then args.cni.mac (which wins even when empty).
        let mut mac: Option<(String, &'static str)> = raw.mac.filter(|m| !m.is_empty()).map(|m| (m, "mac"));
        if !inv.rt.args.is_empty() {
            let env = conf::cni_args(inv.rt, &["MAC"])?;
            if let Some((_, m)) = env.iter().find(|(k, _)| *k == "MAC") {
                if !m.is_empty() {
                    mac = Some((m.to_string(), "CNI_ARGS MAC"));
                }
            }
        }
        if let Some(m) = raw.runtime_config.and_then(|r| r.mac).filter(|m| !m.is_empty()) {
            mac = Some((m, "runtimeConfig.mac"));
        }

        let mut sysctls = sysctl_list(raw.sysctl.as_ref(), "sysctl", ifname)?;
        if let Some(a) = raw.args.and_then(|a| a.cni) {
            for s in sysctl_list(a.sysctl.as_ref(), "args.cni.sysctl", ifname)? {
                match sysctls.iter_mut().find(|x| x.path == s.path) {
                    Some(x) => *x = s,
                    None => sysctls.push(s),
                }
            }
            if let Some(m) = a.mac {
                mac = (!m.is_empty()).then_some((m, "args.cni.mac"));
            }
            if let Some(p) = a.promisc {
                c.promisc = p;
            }
            if a.mtu.is_some() {
                mtu = a.mtu;
            }
            if a.allmulti.is_some() {
                c.allmulti = a.allmulti;
            }
            if a.txqlen.is_some() {
                txqlen = a.txqlen;
            }
        }
        c.sysctls = sysctls;

        if let Some((m, field)) = mac {
            // the reference's text (net.ParseMAC's error wrapped by its changeMacAddr)
            let addr = conf::parse_mac(&m).ok_or_else(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!("invalid args {m} for MAC addr: address {m}: invalid MAC address"),
                )
                .with_details(format!("field {field}"))
            })?;
            if addr[0] & 1 != 0 {
                return Err(invalid(format!(
                    "invalid MAC address {m:?} in {field}: a multicast address"
                )));
            }
            if addr == [0; 6] {
                return Err(invalid(format!("invalid MAC address {m:?} in {field}: all zeros")));
            }
            c.mac = Some(Mac { addr, field });
        }
        c.mtu = match mtu {
            None | Some(0) => None,
            Some(v) => Some(
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| invalid(format!("invalid \"mtu\" {v}")))?,
            ),
        };
        c.txqlen = match txqlen {
            None => None,
            Some(v) => Some(
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| invalid(format!("invalid \"txQLen\" {v}")))?,
            ),
        };
        if !c.sysctls.is_empty() && Path::new(ALLOWLIST).exists() {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!(
                    "tuning: unsupported field \"sysctl\": {ALLOWLIST} exists and cnichain does not evaluate \
                     sysctl allowlists; run tuning through the exec fallback"
                ),
            ));
        }
        Ok(c)
    }

    /// Whether any link attribute is to be changed (the link must then exist).
    pub fn changes_link(&self) -> bool {
        self.mac.is_some() || self.promisc || self.mtu.is_some() || self.allmulti.is_some() || self.txqlen.is_some()
    }

    /// Whether ADD changes anything at all.
    pub fn changes_anything(&self) -> bool {
        self.changes_link() || !self.sysctls.is_empty()
    }
}

/// The sysctls of one map, keys checked, duplicates (two keys naming one path) refused.
fn sysctl_list(m: Option<&Map<String, Value>>, field: &str, ifname: &str) -> Result<Vec<Sysctl>, CniError> {
    let mut out: Vec<Sysctl> = Vec::new();
    for (key, v) in m.into_iter().flatten() {
        let value = match v {
            Value::String(s) => s.clone(),
            other => {
                return Err(invalid(format!(
                    "invalid config at \"{field}.{key}\": expected a string value, got {other}"
                )))
            }
        };
        if value.contains('\0') {
            return Err(invalid(format!(
                "invalid value for sysctl {key:?} in {field}: contains NUL"
            )));
        }
        // the reference's text for a key it refuses; why cnichain refuses it in details
        let path = sysctl_path(key, ifname).map_err(|why| {
            CniError::new(INVALID_CONFIG, format!("invalid net sysctl key: {key:?}"))
                .with_details(format!("field {field}.{key}: {why}"))
        })?;
        if let Some(first) = out.iter().find(|s| s.path == path) {
            return Err(invalid(format!(
                "duplicated sysctl keys are not allowed: {:?} and {key:?} in {field} both name /proc/sys/{path}",
                first.key
            )));
        }
        out.push(Sysctl {
            key: key.clone(),
            path,
            value,
        });
    }
    Ok(out)
}

/// A sysctl key as the upstream plugin reads it: every '.' becomes a path separator,
/// then the first `IFNAME` becomes the interface name (in that order, so that an
/// interface name with a dot, such as a VLAN `eth0.100`, stays one segment). The result
/// must be a relative path of at least two plain segments starting with `net`. Keys
/// that contain a '/' are refused (the reference would turn their dots into separators
/// too, so the slashed form buys nothing and only opens `..` tricks).
pub fn sysctl_path(key: &str, ifname: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    if key.contains('/') {
        return Err("contains '/'; write keys with dots (use IFNAME for the interface)".into());
    }
    if key.contains('\0') {
        return Err("contains NUL".into());
    }
    let path = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("empty segment".into());
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err("relative segment".into());
    }
    if segments[0] != "net" {
        return Err("only keys under net (/proc/sys/net) may be set".into());
    }
    if segments.len() < 2 {
        return Err("names no entry under net".into());
    }
    Ok(path)
}

/// `txQLen` as the loader takes it: a Go int, 0 to 2^31-1 (negative or larger is refused).
const TXQLEN: Ty = Ty::Int(0, i32::MAX as i64);

/// The keys the tuning plugin reads, `args.cni` (its per-pod overrides) included.
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[
        F("dataDir", Ty::Str),
        F("sysctl", Ty::MapOf(&Ty::Str)),
        F("mac", Ty::Mac),
        F("promisc", Ty::Bool),
        F("mtu", MTU),
        F("allmulti", Ty::Bool),
        F("txQLen", TXQLEN),
        F("runtimeConfig", Ty::Open(&[F("mac", Ty::Str)])),
        F(
            "args",
            Ty::Open(&[F(
                "cni",
                Ty::Open(&[
                    F("sysctl", Ty::MapOf(&Ty::Str)),
                    F("mac", Ty::Mac),
                    F("promisc", Ty::Bool),
                    F("mtu", MTU),
                    F("allmulti", Ty::Bool),
                    F("txQLen", TXQLEN),
                ]),
            )]),
        ),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths() {
        assert_eq!(sysctl_path("net.core.somaxconn", "eth0").unwrap(), "net/core/somaxconn");
        assert_eq!(
            sysctl_path("net.ipv4.conf.IFNAME.arp_filter", "eth0.100").unwrap(),
            "net/ipv4/conf/eth0.100/arp_filter"
        );
        // only the first IFNAME
        assert_eq!(sysctl_path("net.IFNAME.IFNAME", "e").unwrap(), "net/e/IFNAME");
        for bad in [
            "",
            "net",
            "kernel.hostname",
            "net..core",
            "net.",
            ".net.core",
            "net.ipv4.conf.eth0.../../../kernel/hostname",
            "net/../kernel.x",
            "net/core/somaxconn",
            "netx.core",
            "net.core\0",
        ] {
            assert!(sysctl_path(bad, "eth0").is_err(), "{bad:?} accepted");
        }
        // an interface name of ".." cannot turn a segment into a relative one
        assert!(sysctl_path("net.ipv4.conf.IFNAME.x", "..").is_err());
        assert!(sysctl_path("IFNAME.x", "net").is_ok());
    }

    fn map(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn duplicates_after_normalization() {
        let m = map(r#"{"net.ipv4.conf.IFNAME.rp_filter":"1","net.ipv4.conf.eth0.rp_filter":"2"}"#);
        let e = sysctl_list(Some(&m), "sysctl", "eth0").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("duplicated"), "{}", e.msg);
        assert!(sysctl_list(Some(&m), "sysctl", "eth1").is_ok());
        let m = map(r#"{"net.core.somaxconn":5}"#);
        let e = sysctl_list(Some(&m), "sysctl", "eth0").unwrap_err();
        assert!(e.msg.contains("sysctl.net.core.somaxconn"), "{}", e.msg);
    }
}

/// The schema `cnichain validate` uses declares the keys this loader reads.
#[cfg(test)]
mod schema_matches_loader {
    use super::*;
    use crate::tests::schema_conformance::{
        assert_runtime_config, assert_same_keys, assert_schema, nested, struct_keys,
    };

    #[test]
    fn tuning() {
        assert_schema::<RawConf>(&SCHEMA, &[], &[]);
        assert_runtime_config::<RawRuntimeConfig>(&SCHEMA, &[]);
        let cni = nested(nested(SCHEMA.fields, "args"), "cni");
        assert_same_keys("args.cni", &struct_keys::<RawArgsCni>(), cni, false, &[], &[]);
    }
}
