//! Runtime arguments: what the runtime supplies besides the conflist (libcni's
//! RuntimeConf), and the CNI_ARGS string format.
//!
//! Two rule sets, one parser:
//! - libcni's (cnitool's `parseArgs`), where cnichain itself consumes CNI_ARGS (the CLI,
//!   `cnitool`): every pair `K=V` with a non-empty key and value;
//! - the reference plugins' `types.LoadArgs`, where a drop-in stands in for a plugin that
//!   reads CNI_ARGS: [`split_pairs`] (exactly one `=` per pair, empty parts allowed),
//!   then [`load_args`] into the plugin's typed fields with the IgnoreUnknown rule.
//!   A plugin that never calls LoadArgs never sees a syntax error ([`plugin_parses`]).

use super::error::{CniError, INVALID_ENV};
use serde_json::{Map, Value};

/// One attachment's runtime arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, ...), filtered per plugin into
    /// `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

/// Parse `K1=V1;K2=V2` as cnitool does: every pair has exactly one '=' and a non-empty
/// key and value. An empty string is no pairs. The msg is cnitool's.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in s.split(';') {
        let kv: Vec<&str> = item.split('=').collect();
        if kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty() {
            return Err(CniError::new(INVALID_ENV, format!("invalid CNI_ARGS pair {item:?}"))
                .with_details("want KEY=VALUE pairs separated by ';', with non-empty key and value"));
        }
        if kv[0].contains('\0') || kv[1].contains('\0') {
            return Err(CniError::new(INVALID_ENV, format!("invalid CNI_ARGS pair {item:?}")).with_details("NUL byte"));
        }
        out.push((kv[0].to_string(), kv[1].to_string()));
    }
    Ok(out)
}

/// The pair syntax of `types.LoadArgs`: `;`-separated pairs with exactly one `=`; an
/// empty key or value is allowed. An empty string is no pairs. The msg is LoadArgs's.
pub fn split_pairs(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for pair in s.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        if kv.len() != 2 {
            return Err(CniError::new(INVALID_ENV, format!("ARGS: invalid pair {pair:?}")));
        }
        out.push((kv[0].to_string(), kv[1].to_string()));
    }
    Ok(out)
}

/// Whether the reference plugin `plugin_type` calls `types.LoadArgs` itself for
/// `command` ("ADD", "DEL", "CHECK"), i.e. whether a CNI_ARGS it cannot split is its
/// error (containernetworking/plugins 1.1.1): bridge, host-local and tuning on every
/// verb, static on ADD and CHECK; loopback, ptp, portmap and bandwidth never (ptp's
/// IPAM may, as its own plugin).
pub fn plugin_parses(plugin_type: &str, command: &str) -> bool {
    match plugin_type {
        "bridge" | "host-local" | "tuning" => matches!(command, "ADD" | "DEL" | "CHECK"),
        "static" => matches!(command, "ADD" | "CHECK"),
        _ => false,
    }
}

/// A typed field target of `types.LoadArgs` (CNI_ARGS `K=V;...`).
pub enum ArgKind {
    /// `types.UnmarshallableBool`: 1/0/true/false, any case.
    Bool,
    /// Any text.
    Text,
    /// A struct field that cannot be set from text (Go's embedded `CommonArgs`).
    Struct(&'static str),
}

/// Go's `types.LoadArgs` over CNI_ARGS pairs into the named fields (case-sensitive Go
/// field names). `IgnoreUnknown` is always a field. Returns the values set, in order
/// (a later pair overrides an earlier one for the same key).
pub fn load_args(pairs: &[(String, String)], fields: &[(&str, ArgKind)]) -> Result<Vec<(String, String)>, CniError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut ignore_unknown = false;
    for (k, v) in pairs {
        let pair = format!("{k}={v}");
        let kind = if k == "IgnoreUnknown" {
            Some(&ArgKind::Bool)
        } else if k == "CommonArgs" {
            Some(&ArgKind::Struct("*types.CommonArgs"))
        } else {
            fields.iter().find(|(n, _)| *n == k.as_str()).map(|(_, t)| t)
        };
        match kind {
            None => unknown.push(pair),
            Some(ArgKind::Struct(t)) => {
                return Err(CniError::env(format!(
                    "ARGS: cannot unmarshal into field '{k}' - type '{t}' does not implement encoding.TextUnmarshaler"
                )))
            }
            Some(ArgKind::Bool) => {
                let b = match v.to_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => {
                        return Err(CniError::env(format!(
                            "ARGS: error parsing value of pair {pair:?}: boolean unmarshal error: invalid input {other}"
                        )))
                    }
                };
                if k == "IgnoreUnknown" {
                    ignore_unknown = b;
                }
                out.retain(|(x, _)| x != k);
                out.push((k.clone(), b.to_string()));
            }
            Some(ArgKind::Text) => {
                out.retain(|(x, _)| x != k);
                out.push((k.clone(), v.clone()));
            }
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        let list: Vec<String> = unknown.iter().map(|u| format!("{u:?}")).collect();
        return Err(CniError::env(format!("ARGS: unknown args [{}]", list.join(" "))));
    }
    Ok(out)
}

/// The value a `load_args` result holds for `key`.
pub fn arg<'a>(args: &'a [(String, String)], key: &str) -> Option<&'a str> {
    args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// libcni's `stringify`: pairs joined with ';', no escaping.
pub fn format_cni_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Capability args from a JSON object (cnitool's CAP_ARGS). Anything but an object is a
/// decoding error naming the source.
pub fn parse_capability_args(s: &str, source: &str) -> Result<Map<String, Value>, CniError> {
    if s.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(CniError::decode(format!("{source} must be a JSON object"))),
        Err(e) => Err(CniError::decode(format!("{source} is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_round_trip() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=x").unwrap();
        assert_eq!(
            a,
            vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), "x".into())
            ]
        );
        assert_eq!(format_cni_args(&a), "IgnoreUnknown=1;K8S_POD_NAME=x");
        assert!(parse_cni_args("").unwrap().is_empty());
    }

    #[test]
    fn load_args_syntax_like_go() {
        assert!(split_pairs("").unwrap().is_empty());
        assert_eq!(
            split_pairs("A=;=B").unwrap(),
            vec![("A".into(), "".into()), ("".into(), "B".into())]
        );
        for (bad, pair) in [
            ("none", "none"),
            ("A=1=2", "A=1=2"),
            ("A=;B", "B"),
            (";", ""),
            ("A=1;", ""),
        ] {
            let e = split_pairs(bad).unwrap_err();
            assert_eq!((e.code, e.msg), (4, format!("ARGS: invalid pair {pair:?}")), "{bad}");
        }
        assert!(plugin_parses("host-local", "DEL"));
        assert!(!plugin_parses("static", "DEL"));
        assert!(!plugin_parses("loopback", "ADD"));
    }

    #[test]
    fn cni_args_rejects_bad_pairs() {
        for bad in ["A", "A=", "=1", "A=1=2", "A=1;", ";A=1", "A=1;;B=2"] {
            let e = parse_cni_args(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
            assert!(e.msg.contains("CNI_ARGS"));
        }
    }

    #[test]
    fn capability_args() {
        assert!(parse_capability_args("", "CAP_ARGS").unwrap().is_empty());
        assert_eq!(parse_capability_args("{\"a\":1}", "CAP_ARGS").unwrap().len(), 1);
        assert_eq!(parse_capability_args("[1]", "CAP_ARGS").unwrap_err().code, 6);
        assert_eq!(parse_capability_args("{", "CAP_ARGS").unwrap_err().code, 6);
    }
}
