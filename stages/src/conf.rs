//! Helpers every stage uses to read its request: typed config with errors that name the
//! field, MAC addresses, CNI_ARGS lookups with the reference's IgnoreUnknown rule, and
//! names derived from the attachment.

use cnichain_engine::spec::args::{load_args, ArgKind, RuntimeConf};
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::json_kind::{json_kind, Spelling};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A `dns` object in a plugin's config (nameservers, domain, search, options). An absent
/// (or null) list differs from an empty one, as in the reference's Go types: `[]` is set.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<Vec<String>>,
}

impl DnsConf {
    /// The result's Dns when the config sets any of it, None otherwise: the reference's
    /// dnsConfSet (a list present, even empty, or a non-empty domain). Set, it replaces
    /// the IPAM's dns whole, so `"nameservers": []` gives an empty dns.
    pub fn to_dns(&self) -> Option<cnichain_engine::spec::result::Dns> {
        let domain = self.domain.clone().unwrap_or_default();
        let set = self.nameservers.is_some() || self.search.is_some() || self.options.is_some() || !domain.is_empty();
        set.then(|| cnichain_engine::spec::result::Dns {
            nameservers: self.nameservers.clone().unwrap_or_default(),
            domain,
            search: self.search.clone().unwrap_or_default(),
            options: self.options.clone().unwrap_or_default(),
        })
    }
}

/// Deserialize a stage's config with Go's key rules (see [`crate::godecode`]); a type
/// error is code 7 naming the JSON path.
pub fn parse<T: DeserializeOwned>(config: &Map<String, Value>, plugin: &str) -> Result<T, CniError> {
    let v = Value::Object(config.clone());
    crate::godecode::from_value(&v).map_err(|e| {
        let path = e.path().to_string();
        CniError::new(
            INVALID_CONFIG,
            format!("{plugin}: invalid config at {path:?}: {}", e.inner()),
        )
    })
}

/// "aa:bb:cc:dd:ee:ff" (also '-' separated), as Go's net.ParseMAC accepts for 6 bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else {
        s.split('-').collect()
    };
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Look up CNI_ARGS keys the way the reference's types.LoadArgs does (text fields
/// `known`; any other key is an error unless IgnoreUnknown is 1/true).
pub fn cni_args<'a>(rt: &'a RuntimeConf, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, CniError> {
    let fields: Vec<(&str, ArgKind)> = known.iter().map(|k| (*k, ArgKind::Text)).collect();
    load_args(&rt.args, &fields)?;
    // The last pair of a key wins, as in Go; the caller's borrowed strings are returned.
    let mut out: Vec<(&'a str, &'a str)> = Vec::new();
    for (k, v) in &rt.args {
        if known.contains(&k.as_str()) {
            out.retain(|(x, _)| *x != k.as_str());
            out.push((k.as_str(), v.as_str()));
        }
    }
    Ok(out)
}

/// A random veth name, for when the derived one is taken.
pub fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// A link name made of the characters the kernel and nft accept unquoted (1-15 bytes,
/// [A-Za-z0-9_.-]): names this crate creates always are.
pub fn is_ifname_chars(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// The value of the field `name` of a Go struct decoded from `v`: the last key matching
/// it (exactly or with Go's case folding) whose value is not `null`.
pub fn go_get<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .filter(|(k, v)| !v.is_null() && cnichain_engine::spec::result::key_is(k, name))
        .map(|(_, v)| v)
        .next_back()
}

/// [`go_get`] of a string field.
pub fn go_str<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    go_get(v, name).and_then(Value::as_str)
}

/// [`go_get`] on a config map.
pub fn config_get<'a>(config: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    config
        .iter()
        .filter(|(k, v)| !v.is_null() && cnichain_engine::spec::result::key_is(k, name))
        .map(|(_, v)| v)
        .next_back()
}

/// [`go_str`] on a config map.
pub fn config_str<'a>(config: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    config_get(config, name).and_then(Value::as_str)
}

/// The `ipam` object's `type`, if any.
pub fn ipam_type(config: &Map<String, Value>) -> Option<String> {
    go_str(config_get(config, "ipam")?, "type")
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// A MAC from config/args for the container interface, with the reference's precedence:
/// runtimeConfig.mac over args.cni.mac over CNI_ARGS MAC=.
pub fn requested_mac(config: &Map<String, Value>, env_mac: Option<&str>) -> Result<Option<[u8; 6]>, CniError> {
    let mut mac: Option<(String, &str)> = env_mac
        .filter(|m| !m.is_empty())
        .map(|m| (m.to_string(), "CNI_ARGS MAC"));
    if let Some(m) = config_get(config, "args")
        .and_then(|a| go_get(a, "cni"))
        .and_then(|c| go_str(c, "mac"))
    {
        if !m.is_empty() {
            mac = Some((m.to_string(), "args.cni.mac"));
        }
    }
    if let Some(m) = config_get(config, "runtimeConfig").and_then(|r| go_str(r, "mac")) {
        if !m.is_empty() {
            mac = Some((m.to_string(), "runtimeConfig.mac"));
        }
    }
    match mac {
        None => Ok(None),
        Some((m, field)) => parse_mac(&m)
            .map(Some)
            .ok_or_else(|| CniError::new(INVALID_CONFIG, format!("invalid MAC address {m:?} in {field}"))),
    }
}

// Go-compatible JSON walkers (encoding/json's key rules: case-insensitive match, the last
// matching key wins, `null` leaves a string alone) with errors that name the field's path.

/// Go's case-insensitive match of a JSON key against an ASCII field name (the engine's).
pub use cnichain_engine::spec::result::key_is;

/// An invalid-config error (code 7) for a check of cnichain's own (the reference has no
/// message for it): the message starts with the field's JSON path.
pub fn invalid_at(path: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::new(INVALID_CONFIG, format!("{path}: {msg}"))
}

pub(crate) fn want(path: &str, what: &str, got: &Value) -> CniError {
    invalid_at(path, format!("expected {what}, got {}", json_kind(got, Spelling::Go)))
}

/// `parent.key`, or `key` at the top level.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The value of the last key matching `name` (Go: the last one wins).
pub fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter().filter(|(k, _)| key_is(k, name)).map(|(_, v)| v).next_back()
}

/// A string field: the last non-null matching key (Go leaves a string alone on null).
pub fn string_field(m: &Map<String, Value>, name: &str, parent: &str) -> Result<Option<String>, CniError> {
    let mut out = None;
    for (k, v) in m.iter().filter(|(k, _)| key_is(k, name)) {
        match v {
            Value::Null => {}
            Value::String(s) => out = Some(s.clone()),
            other => return Err(want(&join(parent, k), "a string", other)),
        }
    }
    Ok(out)
}

/// An object field; `null` or absent is `None`.
pub fn object_field<'a>(
    m: &'a Map<String, Value>,
    name: &str,
    parent: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match field(m, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(want(&join(parent, name), "an object", other)),
    }
}

/// An array field; `null` or absent is `None`.
pub fn array_field<'a>(
    m: &'a Map<String, Value>,
    name: &str,
    parent: &str,
) -> Result<Option<&'a Vec<Value>>, CniError> {
    match field(m, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(other) => Err(want(&join(parent, name), "an array", other)),
    }
}

pub fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CniError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(want(path, "an object", other)),
    }
}

pub fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, CniError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(want(path, "an array", other)),
    }
}

pub fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, CniError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(want(path, "a string", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:42:0A:58:00:02"), Some([2, 0x42, 10, 0x58, 0, 2]));
        assert_eq!(parse_mac("02-42-0a-58-00-02"), Some([2, 0x42, 10, 0x58, 0, 2]));
        for bad in [
            "",
            "02:42:0a:58:00",
            "02:42:0a:58:00:02:03",
            "zz:42:0a:58:00:02",
            "2:42:0a:58:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(format_mac(&[2, 0x42, 10, 0x58, 0, 2]), "02:42:0a:58:00:02");
    }

    #[test]
    fn cni_args_unknown_keys() {
        let mut rt = RuntimeConf::default();
        rt.args = vec![("MAC".into(), "x".into()), ("K8S_POD_NAME".into(), "p".into())];
        assert_eq!(cni_args(&rt, &["MAC"]).unwrap_err().code, 4);
        rt.args.push(("IgnoreUnknown".into(), "1".into()));
        assert_eq!(cni_args(&rt, &["MAC"]).unwrap(), vec![("MAC", "x")]);
    }

    #[test]
    fn random_veth_names() {
        assert_eq!(random_veth_name().len(), 12);
        assert!(random_veth_name().starts_with("veth"));
    }

    #[test]
    fn dns_absent_is_not_empty() {
        let dns = |j: &str| serde_json::from_str::<DnsConf>(j).unwrap().to_dns();
        assert!(dns("{}").is_none());
        assert!(dns(r#"{"domain":"","nameservers":null}"#).is_none());
        let empty = dns(r#"{"nameservers":[]}"#).expect("an empty list is set");
        assert!(empty.is_empty());
        assert!(dns(r#"{"search":[]}"#).is_some() && dns(r#"{"options":[]}"#).is_some());
        assert_eq!(dns(r#"{"domain":"x"}"#).unwrap().domain, "x");
    }

    #[test]
    fn mac_precedence() {
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#,
        )
        .unwrap();
        assert_eq!(
            requested_mac(&c, Some("02:00:00:00:00:01")).unwrap(),
            Some([2, 0, 0, 0, 0, 3])
        );
        let c: Map<String, Value> = serde_json::from_str(r#"{"runtimeConfig":{"mac":"nope"}}"#).unwrap();
        let e = requested_mac(&c, None).unwrap_err();
        assert!(e.msg.contains("runtimeConfig.mac"));
        // Go's key matching: any case, the last key wins, null is no value
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"Args":{"CNI":{"MAC":"02:00:00:00:00:02"}},"RuntimeConfig":{"Mac":"02:00:00:00:00:03","mac":null}}"#,
        )
        .unwrap();
        assert_eq!(requested_mac(&c, None).unwrap(), Some([2, 0, 0, 0, 0, 3]));
    }

    #[test]
    fn ipam_type_like_go() {
        let c: Map<String, Value> = serde_json::from_str(r#"{"IPAM":{"Type":"host-local"},"ipam":null}"#).unwrap();
        assert_eq!(ipam_type(&c).as_deref(), Some("host-local"));
        let c: Map<String, Value> = serde_json::from_str(r#"{"ipam":{"type":"a","TYPE":"b"}}"#).unwrap();
        assert_eq!(ipam_type(&c).as_deref(), Some("b"));
        let c: Map<String, Value> = serde_json::from_str(r#"{"ipam":{"type":""}}"#).unwrap();
        assert_eq!(ipam_type(&c), None);
    }
}
