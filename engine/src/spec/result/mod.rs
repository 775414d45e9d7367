//! CNI results in the three layouts of the spec's history, read and written the way
//! libcni's Go types do it.
//!
//! * 0.1.0, 0.2.0 (`Result020`): `ip4` / `ip6` objects, each with its own routes.
//! * 0.3.0, 0.3.1, 0.4.0 (`Result040`): `interfaces`, `ips` with a `version`, `routes`.
//! * 1.0.0, 1.1.0 (`Result100`): as 0.4 without `version`; interfaces may carry the 1.1
//!   fields `mtu`, `socketPath`, `pciID`.
//!
//! Routes are one shared type in every layout (as `types.Route` is in Go), so the 1.1
//! route fields are read and written in every version.
//!
//! Reading follows Go's `encoding/json` as libcni uses it: unknown keys are ignored, keys
//! match case-insensitively, a `null` leaves a scalar as it was and empties a list,
//! integers must be integer literals that fit in 64 bits. Where Go would keep a zero
//! address (a missing `address`, `dst` or `ip`, which it then prints as "`<nil>`") or a
//! `null` list element, we return a decoding error instead.
//!
//! Writing follows Go's struct field order and `omitempty` rules; `dns` is always written
//! (as `{}` when empty), exactly as libcni 1.1.2's cnitool prints it.

use super::error::CniError;
use super::ipnet::{format_ip, parse_ip, IpNet};
use super::json_kind::{json_kind, Spelling};
use super::version::{self, Family};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io;
use std::net::IpAddr;

/// `types.DNS`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// `types.Route` (spec 1.1 fields included: `mtu`, `advmss`, `priority` are omitted when
/// 0, `table` and `scope` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: i64,
    pub advmss: i64,
    pub priority: i64,
    pub table: Option<i64>,
    pub scope: Option<i64>,
}

/// An interface entry. In 0.3/0.4 results only `name`, `mac` and `sandbox` exist (the
/// other fields are neither read nor written there, and are dropped by conversion to 0.x).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: i64,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

/// A 1.x `ips` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    /// Index into `interfaces` (Go `*int`: any 64-bit value, unchecked).
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// Result of spec 1.0.0 and 1.1.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result100 {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A 0.3/0.4 `ips` entry; `version` is "4" or "6" (kept verbatim when read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ip040 {
    pub version: String,
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// Result of spec 0.3.0, 0.3.1 and 0.4.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result040 {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<Ip040>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A 0.1/0.2 `ip4` or `ip6` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ip020 {
    pub ip: IpNet,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
}

/// Result of spec 0.1.0 and 0.2.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result020 {
    pub cni_version: String,
    pub ip4: Option<Ip020>,
    pub ip6: Option<Ip020>,
    pub dns: Dns,
}

/// A result of any supported version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniResult {
    V02(Result020),
    V04(Result040),
    V1(Result100),
}

impl Default for CniResult {
    fn default() -> Self {
        CniResult::V1(Result100 {
            cni_version: version::CURRENT.to_string(),
            ..Default::default()
        })
    }
}

/// The versions each layout accepts when read (libcni's creators' lists).
pub(crate) const VERSIONS_020: &[&str] = &["0.1.0", "0.2.0"];
pub(crate) const VERSIONS_040: &[&str] = &["0.3.0", "0.3.1", "0.4.0"];
pub(crate) const VERSIONS_100: &[&str] = &["1.0.0", "1.1.0"];

/// What a layout's Go type assumes for an unset version (its ImplementedSpecVersion).
pub(crate) fn implemented_version(f: Family) -> &'static str {
    match f {
        Family::V02 => "0.2.0",
        Family::V04 => "0.4.0",
        Family::V1 => "1.1.0",
    }
}

impl CniResult {
    /// Read a result as libcni reads a plugin's output (invoke's `fixupResultVersion`
    /// then `create.Create`): `cniVersion` missing, empty or not a string means
    /// `fallback_version`; `null` is an empty result; anything but an object is an error.
    /// Unknown version: code 1. Bad JSON shapes, addresses or numbers: code 6.
    pub fn from_value(v: &Value, fallback_version: &str) -> Result<CniResult, CniError> {
        let empty = Map::new();
        let obj = match v {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                return Err(CniError::decode(format!(
                    "failed to unmarshal raw result: expected a JSON object, got {}",
                    json_kind(other, Spelling::Go)
                )))
            }
        };
        let (ver, body): (String, Cow<'_, Map<String, Value>>) = match obj.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => (s.clone(), Cow::Borrowed(obj)),
            _ => {
                let mut m = obj.clone();
                m.insert("cniVersion".to_string(), Value::String(fallback_version.to_string()));
                (fallback_version.to_string(), Cow::Owned(m))
            }
        };
        // libcni re-marshals a fixed-up result from a Go map, which sorts every object's
        // keys; with case-insensitive keys that order decides which duplicate wins.
        let ctx = Ctx {
            sorted: matches!(body, Cow::Owned(_)),
        };
        let fam = version::family(&ver)?;
        let res = match fam {
            Family::V02 => {
                let mut r = decode_020(&body, ctx)?;
                if r.cni_version.is_empty() {
                    r.cni_version = "0.1.0".to_string();
                }
                check_decoded(&r.cni_version, VERSIONS_020, "[ 0.1.0 0.2.0]")?;
                CniResult::V02(r)
            }
            Family::V04 => {
                let r = decode_040(&body, ctx)?;
                check_decoded(&r.cni_version, VERSIONS_040, "[0.3.0 0.3.1 0.4.0]")?;
                CniResult::V04(r)
            }
            Family::V1 => {
                let r = decode_100(&body, ctx)?;
                check_decoded(&r.cni_version, VERSIONS_100, "[1.0.0 1.1.0]")?;
                CniResult::V1(r)
            }
        };
        Ok(res)
    }

    /// `from_value` on raw bytes (a plugin's stdout). Not JSON: code 6.
    pub fn from_slice(b: &[u8], fallback_version: &str) -> Result<CniResult, CniError> {
        let v: Value =
            serde_json::from_slice(b).map_err(|e| CniError::decode(format!("failed to unmarshal raw result: {e}")))?;
        CniResult::from_value(&v, fallback_version)
    }

    /// The result's version. An unset version reads as the layout's newest version
    /// (0.2.0, 0.4.0, 1.1.0), as libcni's `GetAsVersion` assumes.
    pub fn version(&self) -> &str {
        let (v, f) = match self {
            CniResult::V02(r) => (&r.cni_version, Family::V02),
            CniResult::V04(r) => (&r.cni_version, Family::V04),
            CniResult::V1(r) => (&r.cni_version, Family::V1),
        };
        if v.is_empty() {
            implemented_version(f)
        } else {
            v
        }
    }

    pub fn family(&self) -> Family {
        match self {
            CniResult::V02(_) => Family::V02,
            CniResult::V04(_) => Family::V04,
            CniResult::V1(_) => Family::V1,
        }
    }

    /// The result as version `to` (libcni's `GetAsVersion`). The same version gives the
    /// same value back; "" means 0.1.0; a version outside `version::SUPPORTED` is code 1;
    /// a result without IPs cannot go to 0.1/0.2 (code 1, "cannot convert: no valid IP
    /// addresses").
    pub fn convert(&self, to: &str) -> Result<CniResult, CniError> {
        super::convert::convert(self, to)
    }

    /// Go-compatible JSON, keys in Go's struct field order.
    pub fn to_value(&self) -> Value {
        match self {
            CniResult::V02(r) => r.to_value(),
            CniResult::V04(r) => r.to_value(),
            CniResult::V1(r) => r.to_value(),
        }
    }

    /// What cnitool prints: Go's `json.MarshalIndent(r, "", "    ")`, no trailing newline.
    pub fn to_json_pretty(&self) -> String {
        go_json(&self.to_value(), true)
    }

    /// Compact Go `json.Marshal` text.
    pub fn to_json(&self) -> String {
        go_json(&self.to_value(), false)
    }

    /// The result as a 1.1.0 struct, for in-process stages.
    pub fn to_v1(&self) -> Result<Result100, CniError> {
        match self.convert(version::CURRENT)? {
            CniResult::V1(r) => Ok(r),
            _ => Err(CniError::internal("result conversion to 1.x gave another layout")),
        }
    }

    /// A result of `version` built from a 1.x struct. A struct whose own version is not a
    /// 1.x one is taken as 1.1.0.
    pub fn from_v1(r: Result100, version: &str) -> Result<CniResult, CniError> {
        let mut r = r;
        if !VERSIONS_100.contains(&r.cni_version.as_str()) {
            r.cni_version = version::CURRENT.to_string();
        }
        CniResult::V1(r).convert(version)
    }
}

impl Serialize for CniResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl From<Result020> for CniResult {
    fn from(r: Result020) -> Self {
        CniResult::V02(r)
    }
}

impl From<Result040> for CniResult {
    fn from(r: Result040) -> Self {
        CniResult::V04(r)
    }
}

impl From<Result100> for CniResult {
    fn from(r: Result100) -> Self {
        CniResult::V1(r)
    }
}

fn check_decoded(v: &str, allowed: &[&str], shown: &str) -> Result<(), CniError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(CniError::version(format!(
            "result type supports {shown} but unmarshalled CNIVersion is {v:?}"
        )))
    }
}

mod read;
mod write;
pub use read::key_is;
use read::*;
pub use write::go_json;

#[cfg(test)]
mod tests;
