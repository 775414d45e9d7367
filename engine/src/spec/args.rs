//! Runtime arguments: what the runtime supplies besides the conflist (libcni's
//! RuntimeConf), and the CNI_ARGS string format.

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
/// key and value. An empty string is no pairs.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in s.split(';') {
        let kv: Vec<&str> = item.split('=').collect();
        if kv.len() != 2 || kv[0].is_empty() || kv[1].is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!("invalid CNI_ARGS pair {item:?}: want KEY=VALUE with non-empty key and value"),
            ));
        }
        if kv[0].contains('\0') || kv[1].contains('\0') {
            return Err(CniError::new(
                INVALID_ENV,
                format!("invalid CNI_ARGS pair {item:?}: NUL byte"),
            ));
        }
        out.push((kv[0].to_string(), kv[1].to_string()));
    }
    Ok(out)
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
