//! Reading IPAM request configs the way the reference plugins' Go decoder reads them,
//! with errors that name the field.
//!
//! Go's `encoding/json` matches object keys case-insensitively (with its Unicode folding
//! of U+017F and U+212A), ignores unknown keys, and lets the last matching key win. A
//! `null` leaves a string unchanged and clears a list or pointer. Type mismatches are
//! errors. Every problem found here is an invalid config (code 7) whose message starts
//! with the JSON path of the field; problems in CNI_ARGS are code 4.

use cnichain_engine::spec::error::{CniError, INVALID_CONFIG, INVALID_ENV};
use cnichain_engine::spec::ipnet::{parse_ip, IpNet};
use cnichain_engine::spec::result::{CniResult, Dns, Route};
use cnichain_engine::validate::schema::{Role, Schema, Ty, DNS, F, RANGE, ROUTE};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

// The Go-compatible JSON walkers every config reader shares live in the config module.
use crate::conf::want;
pub use crate::conf::{
    array_field, as_array, as_object, as_str, field, invalid_at, join, key_is, object_field, string_field,
};

/// An invalid-config error (code 7) for a condition the reference plugin reports too:
/// `msg` is the reference's text exactly (tools match it), the field goes in `details`.
pub fn invalid(path: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::new(INVALID_CONFIG, msg.to_string()).with_details(format!("field {path}"))
}

/// The error as one line, `path: msg`, the way the tests compare it.
#[cfg(test)]
pub fn with_field(e: &CniError) -> String {
    match e.details.strip_prefix("field ") {
        Some(p) => format!("{}: {}", p.split(": ").next().unwrap_or(p), e.msg),
        None => e.msg.clone(),
    }
}

/// A CNI_ARGS error (code 4).
pub fn bad_args(msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_ENV, msg)
}

/// A `net.IP` field: absent, `null` and "" are `None`; anything else must be an IP.
pub fn ip_field(m: &Map<String, Value>, name: &str, parent: &str) -> Result<Option<IpAddr>, CniError> {
    let path = join(parent, name);
    match field(m, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_ip(s)
            .map(Some)
            .ok_or_else(|| invalid(&path, format!("invalid IP address: {s}"))),
        Some(other) => Err(want(&path, "a string", other)),
    }
}

/// A requested address as the plugins' `ip.IP` reads it: a plain IP or a CIDR whose
/// address part is taken. "" is no address (Go then fails to canonicalize it).
pub fn requested_ip(v: &Value, path: &str) -> Result<IpAddr, CniError> {
    let s = as_str(v, path)?;
    if s.is_empty() {
        return Err(invalid(path, "cannot understand ip: IP <nil> not v4 nor v6"));
    }
    parse_ip_or_cidr(s).ok_or_else(|| invalid(path, format!("invalid IP address {s}")))
}

/// `ip.ParseIP` of the plugins: `ip` or `ip/prefix`.
pub fn parse_ip_or_cidr(s: &str) -> Option<IpAddr> {
    if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.addr)
    } else {
        parse_ip(s)
    }
}

/// Rewrites the engine's result-decoding message ("failed to decode result: routes[0]...")
/// into a config error under `ipam.`.
fn result_error_to_config(e: CniError, parent: &str) -> CniError {
    let msg = e.msg.strip_prefix("failed to decode result: ").unwrap_or(&e.msg);
    CniError::new(INVALID_CONFIG, join(parent, msg))
}

/// `ipam.routes` (`[]*types.Route`), decoded exactly as result routes are.
pub fn routes(ipam: &Map<String, Value>, parent: &str) -> Result<Vec<Route>, CniError> {
    let Some(v) = field(ipam, "routes") else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let fake = json!({"cniVersion": "1.1.0", "routes": v});
    match CniResult::from_value(&fake, "1.1.0") {
        Ok(CniResult::V1(r)) => Ok(r.routes),
        Ok(_) => Err(invalid_at(&join(parent, "routes"), "could not be decoded")),
        Err(e) => Err(result_error_to_config(e, parent)),
    }
}

/// `ipam.dns` (`types.DNS`), decoded exactly as a result's dns is.
pub fn dns(ipam: &Map<String, Value>, parent: &str) -> Result<Dns, CniError> {
    let Some(v) = field(ipam, "dns") else {
        return Ok(Dns::default());
    };
    let fake = json!({"cniVersion": "1.1.0", "dns": v});
    match CniResult::from_value(&fake, "1.1.0") {
        Ok(CniResult::V1(r)) => Ok(r.dns),
        Ok(_) => Err(invalid_at(&join(parent, "dns"), "could not be decoded")),
        Err(e) => Err(result_error_to_config(e, parent)),
    }
}

/// The config's own `cniVersion` (what the reference checks), else the selected one.
pub fn cni_version(config: &Map<String, Value>, selected: &str) -> Result<String, CniError> {
    Ok(string_field(config, "cniVersion", "")?.unwrap_or_else(|| selected.to_string()))
}

/// CHECK exists from spec 0.4.0 on; the reference's skeleton refuses it before.
pub fn check_allowed(config: &Map<String, Value>, selected: &str) -> Result<(), CniError> {
    let v = cni_version(config, selected)?;
    if !cnichain_engine::spec::version::at_least(&v, "0.4.0").unwrap_or(false) {
        return Err(CniError::new(
            cnichain_engine::spec::error::INCOMPATIBLE_VERSION,
            "config version does not allow CHECK",
        ));
    }
    Ok(())
}

/// The network name, which becomes a directory name: it must be a valid CNI name.
pub fn network_name(config: &Map<String, Value>) -> Result<String, CniError> {
    let name = string_field(config, "name", "")?.unwrap_or_default();
    cnichain_engine::spec::ids::validate_network_name(&name)?;
    Ok(name)
}

// CNI_ARGS as the reference plugins read it: one parser for the whole project.
pub use cnichain_engine::spec::args::{arg, load_args, ArgKind};

/// The keys of host-local's ipam object.
pub static HOST_LOCAL_SCHEMA: Schema = Schema {
    role: Role::Ipam,
    fields: &[
        F("type", Ty::Str),
        F("name", Ty::Str),
        F("routes", Ty::List(&Ty::Obj(ROUTE))),
        F("dataDir", Ty::Str),
        F("resolvConf", Ty::Str),
        F("ranges", Ty::List(&Ty::List(&Ty::Obj(RANGE)))),
        // the old single-range form
        F("subnet", Ty::Cidr),
        F("rangeStart", Ty::Ip),
        F("rangeEnd", Ty::Ip),
        F("gateway", Ty::Ip),
    ],
};

/// The keys of static's ipam object.
pub static STATIC_SCHEMA: Schema = Schema {
    role: Role::Ipam,
    fields: &[
        F("type", Ty::Str),
        F("name", Ty::Str),
        F("routes", Ty::List(&Ty::Obj(ROUTE))),
        F(
            "addresses",
            Ty::List(&Ty::Obj(&[
                F("address", Ty::Cidr),
                F("gateway", Ty::Ip),
                F("version", Ty::Str),
            ])),
        ),
        F("dns", Ty::Obj(DNS)),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn ipam_keys_match_like_go() {
        let o = m(json!({"DataDir": "/a", "datadir": "/b", "x": 1}));
        assert_eq!(string_field(&o, "dataDir", "ipam").unwrap().as_deref(), Some("/b"));
        let o = m(json!({"dataDir": "/a", "DATADIR": null}));
        assert_eq!(string_field(&o, "dataDir", "ipam").unwrap().as_deref(), Some("/a"));
        let o = m(json!({"ſubnet": "10.0.0.0/8"}));
        assert!(field(&o, "subnet").is_some());
        let o = m(json!({"dataDir": 5}));
        let e = string_field(&o, "dataDir", "ipam").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (7, "ipam.dataDir: expected a string, got number")
        );
    }

    #[test]
    fn ipam_ip_fields() {
        let o = m(json!({"a": "", "b": null, "c": "::ffff:10.0.0.1", "d": "x", "e": []}));
        assert_eq!(ip_field(&o, "a", "p").unwrap(), None);
        assert_eq!(ip_field(&o, "b", "p").unwrap(), None);
        assert_eq!(ip_field(&o, "c", "p").unwrap(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            with_field(&ip_field(&o, "d", "p").unwrap_err()),
            "p.d: invalid IP address: x"
        );
        assert_eq!(ip_field(&o, "e", "p").unwrap_err().code, 7);
        assert_eq!(ip_field(&o, "zz", "p").unwrap(), None);
    }

    #[test]
    fn ipam_requested_ips() {
        assert_eq!(
            requested_ip(&json!("10.1.0.9/24"), "x").unwrap(),
            "10.1.0.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            requested_ip(&json!("fd00::9"), "x").unwrap(),
            "fd00::9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            with_field(&requested_ip(&json!("x"), "r[0]").unwrap_err()),
            "r[0]: invalid IP address x"
        );
        assert_eq!(
            with_field(&requested_ip(&json!(""), "r[0]").unwrap_err()),
            "r[0]: cannot understand ip: IP <nil> not v4 nor v6"
        );
        assert_eq!(
            requested_ip(&json!(null), "r[0]").unwrap_err().msg,
            "r[0]: expected a string, got null"
        );
    }

    #[test]
    fn ipam_routes_and_dns() {
        let o = m(
            json!({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"DST": "fd00::/8"}],
                         "dns": {"nameservers": ["1.1.1.1"], "domain": "d"}}),
        );
        let r = routes(&o, "ipam").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gw, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r[1].dst.to_string(), "fd00::/8");
        let d = dns(&o, "ipam").unwrap();
        assert_eq!(d.nameservers, vec!["1.1.1.1"]);
        assert_eq!(d.domain, "d");
        let bad = m(json!({"routes": [{"dst": "x"}]}));
        let e = routes(&bad, "ipam").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (7, "ipam.routes[0].dst: invalid CIDR address: x")
        );
        let bad = m(json!({"routes": [{"gw": "10.0.0.1"}]}));
        assert_eq!(routes(&bad, "ipam").unwrap_err().msg, "ipam.routes[0].dst: missing");
        let bad = m(json!({"routes": {}}));
        assert_eq!(
            routes(&bad, "ipam").unwrap_err().msg,
            "ipam.routes: expected an array, got object"
        );
        let bad = m(json!({"dns": {"nameservers": "x"}}));
        assert_eq!(
            dns(&bad, "ipam").unwrap_err().msg,
            "ipam.dns.nameservers: expected an array, got string"
        );
        assert!(routes(&m(json!({"routes": null})), "ipam").unwrap().is_empty());
    }

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ipam_cni_args_like_load_args() {
        let f = [("IP", ArgKind::Text)];
        let a = load_args(&pairs(&[("IP", "10.0.0.1"), ("IP", "10.0.0.2")]), &f).unwrap();
        assert_eq!(arg(&a, "IP"), Some("10.0.0.2"));
        let e = load_args(&pairs(&[("FOO", "1")]), &f).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "ARGS: unknown args [\"FOO=1\"]"));
        let e = load_args(&pairs(&[("FOO", "1"), ("ip", "2")]), &f).unwrap_err();
        assert_eq!(e.msg, "ARGS: unknown args [\"FOO=1\" \"ip=2\"]");
        // IgnoreUnknown applies wherever it appears
        assert!(load_args(&pairs(&[("FOO", "1"), ("IgnoreUnknown", "TRUE")]), &f).is_ok());
        assert!(load_args(&pairs(&[("IgnoreUnknown", "1"), ("FOO", "1")]), &f).is_ok());
        let e = load_args(&pairs(&[("FOO", "1"), ("IgnoreUnknown", "0")]), &f).unwrap_err();
        assert_eq!(e.code, 4);
        let e = load_args(&pairs(&[("IgnoreUnknown", "yes")]), &f).unwrap_err();
        assert_eq!(
            e.msg,
            "ARGS: error parsing value of pair \"IgnoreUnknown=yes\": boolean unmarshal error: invalid input yes"
        );
        let e = load_args(&pairs(&[("CommonArgs", "x")]), &f).unwrap_err();
        assert_eq!(
            e.msg,
            "ARGS: cannot unmarshal into field 'CommonArgs' - type '*types.CommonArgs' does not implement encoding.TextUnmarshaler"
        );
        assert!(load_args(&[], &f).unwrap().is_empty());
    }
}
