//! The network configuration list (`.conflist`) and its plugin objects, parsed the way
//! libcni parses them (NetworkConfFromBytes / NetworkPluginConfFromBytes). Plugin
//! objects keep every key, in file order, so requests pass unknown keys through.

use super::error::CniError;
use super::ids;
use super::json_kind::{json_kind, Spelling};
use super::version;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The plugin object exactly as configured (all keys, in order).
    pub raw: Map<String, Value>,
    pub plugin_type: String,
    /// Capabilities in file order (libcni reads a map; order is not significant).
    pub capabilities: Vec<(String, bool)>,
    pub ipam_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    pub name: String,
    /// The `cniVersion` key as written.
    pub declared_version: String,
    /// The version selected from `cniVersion` and `cniVersions`: what every plugin gets.
    pub cni_version: String,
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConf>,
    /// The bytes this list was loaded from (stored base64 in the result cache).
    pub bytes: Vec<u8>,
}

fn cfg_err(msg: impl Into<String>) -> CniError {
    CniError::invalid_config(format!("error parsing configuration list: {}", msg.into()))
}

/// libcni's readBool: a boolean, or the strings "true"/"false" in any case.
fn read_bool(m: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    match m.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(cfg_err(format!(
            "invalid {key:?}: want a boolean, got {} {v}",
            json_kind(v, Spelling::Word)
        ))),
    }
}

/// Decode JSON bytes into an object; syntax errors are code 6 with line and column.
pub fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(CniError::decode(format!(
            "{what}: want a JSON object, got {}",
            json_kind(&v, Spelling::Word)
        ))),
        Err(e) => Err(CniError::decode(format!("{what}: invalid JSON: {e}"))),
    }
}

impl PluginConf {
    /// A plugin object. `at` names it in messages (e.g. `"plugins[2]"`).
    pub fn from_map(raw: Map<String, Value>, at: &str) -> Result<PluginConf, CniError> {
        let plugin_type = match raw.get("type") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => return Err(cfg_err(format!("{at}: missing \"type\""))),
            Some(v) => {
                return Err(cfg_err(format!(
                    "{at}.type: want a string, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        };
        ids::validate_plugin_type(&plugin_type, &format!("{at}.type"))?;
        let mut capabilities = Vec::new();
        match raw.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                for (k, v) in caps {
                    match v {
                        Value::Bool(b) => capabilities.push((k.clone(), *b)),
                        // Go decodes null into a map[string]bool element as false.
                        Value::Null => capabilities.push((k.clone(), false)),
                        other => {
                            return Err(cfg_err(format!(
                                "{at}.capabilities.{k}: want a boolean, got {}",
                                json_kind(other, Spelling::Word)
                            )))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(cfg_err(format!(
                    "{at}.capabilities: want an object, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        }
        let ipam_type = match raw.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ipam)) => match ipam.get("type") {
                None | Some(Value::Null) => None,
                // An empty type means no IPAM, as the reference plugins read it.
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => {
                    ids::validate_plugin_type(s, &format!("{at}.ipam.type"))?;
                    Some(s.clone())
                }
                Some(v) => {
                    return Err(cfg_err(format!(
                        "{at}.ipam.type: want a string, got {}",
                        json_kind(v, Spelling::Word)
                    )))
                }
            },
            Some(v) => {
                return Err(cfg_err(format!(
                    "{at}.ipam: want an object, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        };
        for key in ["name", "cniVersion"] {
            if let Some(v) = raw.get(key) {
                if !v.is_string() && !v.is_null() {
                    return Err(cfg_err(format!(
                        "{at}.{key}: want a string, got {}",
                        json_kind(v, Spelling::Word)
                    )));
                }
            }
        }
        Ok(PluginConf {
            raw,
            plugin_type,
            capabilities,
            ipam_type,
        })
    }

    pub fn from_bytes(bytes: &[u8], at: &str) -> Result<PluginConf, CniError> {
        Self::from_map(parse_object(bytes, at)?, at)
    }

    pub fn capability_enabled(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|(k, v)| k == cap && *v)
    }
}

impl NetConfList {
    /// Parse a conflist. `extra_plugins` are aggregated plugin objects (appended after the
    /// inlined ones unless `loadOnlyInlinedPlugins`).
    pub fn from_bytes(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let raw = parse_object(bytes, "configuration list")?;
        Self::from_map(&raw, bytes.to_vec(), Vec::new())
    }

    pub fn from_map(
        raw: &Map<String, Value>,
        bytes: Vec<u8>,
        extra_plugins: Vec<PluginConf>,
    ) -> Result<NetConfList, CniError> {
        let name = match raw.get("name") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(cfg_err("no name")),
            Some(v) => {
                return Err(cfg_err(format!(
                    "invalid name type: want a string, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        };
        let declared_version = match raw.get("cniVersion") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(cfg_err(format!(
                    "invalid cniVersion type: want a string, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        };
        let mut cni_versions = Vec::new();
        match raw.get("cniVersions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => cni_versions.push(s.clone()),
                        other => {
                            return Err(cfg_err(format!(
                                "cniVersions[{i}]: want a string, got {}",
                                json_kind(other, Spelling::Word)
                            )))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(cfg_err(format!(
                    "invalid cniVersions type: want an array, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        }
        let cni_version = version::select(&declared_version, &cni_versions)?;
        let disable_check = read_bool(raw, "disableCheck")?;
        let disable_gc = read_bool(raw, "disableGC")?;
        let load_only_inlined_plugins = read_bool(raw, "loadOnlyInlinedPlugins")?;

        let mut plugins = Vec::new();
        match raw.get("plugins") {
            None => {
                if load_only_inlined_plugins {
                    return Err(cfg_err(
                        "\"loadOnlyInlinedPlugins\" is true but there is no \"plugins\" key",
                    ));
                }
            }
            Some(Value::Array(a)) => {
                if a.is_empty() {
                    return Err(cfg_err("no plugins in list"));
                }
                for (i, p) in a.iter().enumerate() {
                    let at = format!("plugins[{i}]");
                    match p {
                        Value::Object(m) => plugins.push(PluginConf::from_map(m.clone(), &at)?),
                        other => {
                            return Err(cfg_err(format!(
                                "{at}: want an object, got {}",
                                json_kind(other, Spelling::Word)
                            )))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(cfg_err(format!(
                    "invalid \"plugins\" type: want an array, got {}",
                    json_kind(v, Spelling::Word)
                )))
            }
        }
        if !load_only_inlined_plugins {
            plugins.extend(extra_plugins);
        }
        if plugins.is_empty() {
            return Err(cfg_err("no plugin configs found"));
        }
        Ok(NetConfList {
            name,
            declared_version,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
            bytes,
        })
    }

    /// libcni's ConfListFromConf: a single-plugin `.conf` becomes a list of one.
    pub fn from_single_conf(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let raw = parse_object(bytes, "configuration")?;
        let plugin = PluginConf::from_map(raw.clone(), "configuration")?;
        let name = raw.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut list = Map::new();
        list.insert("cniVersion".into(), Value::String(version));
        list.insert("name".into(), Value::String(name));
        list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin.raw.clone())]));
        let bytes = serde_json::to_vec(&list).map_err(|e| CniError::internal(e.to_string()))?;
        Self::from_map(&list, bytes, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Result<NetConfList, CniError> {
        NetConfList::from_bytes(s.as_bytes())
    }

    /// Go leaves a null map[string]bool element false; a string is still refused.
    #[test]
    fn a_null_capability_is_false() {
        let l = list(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","capabilities":{"portMappings":null,"mac":true}}]}"#)
            .expect("null capability");
        assert_eq!(
            l.plugins[0].capabilities,
            vec![("portMappings".to_string(), false), ("mac".to_string(), true)]
        );
        assert!(list(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","capabilities":{"mac":"true"}}]}"#
        )
        .is_err());
    }

    #[test]
    fn parses_a_chain_keeping_unknown_keys_in_order() {
        let l = list(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","zeta":1,"alpha":{"b":2,"a":1},"ipam":{"type":"host-local"}},
                {"type":"portmap","capabilities":{"portMappings":true,"x":false}}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.0.0");
        assert_eq!(l.plugins.len(), 2);
        let keys: Vec<_> = l.plugins[0].raw.keys().cloned().collect();
        assert_eq!(keys, ["type", "zeta", "alpha", "ipam"]);
        assert_eq!(l.plugins[0].ipam_type.as_deref(), Some("host-local"));
        assert!(l.plugins[1].capability_enabled("portMappings"));
        assert!(!l.plugins[1].capability_enabled("x"));
    }

    #[test]
    fn reads_bools_like_libcni() {
        let l = list(r#"{"name":"n","disableCheck":"TRUE","disableGC":true,"plugins":[{"type":"a"}]}"#).unwrap();
        assert!(l.disable_check && l.disable_gc);
        let e = list(r#"{"name":"n","disableCheck":"yes","plugins":[{"type":"a"}]}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("disableCheck"));
    }

    #[test]
    fn selects_version() {
        let l = list(r#"{"name":"n","cniVersion":"1.0.0","cniVersions":["1.1.0","0.4.0"],"plugins":[{"type":"a"}]}"#)
            .unwrap();
        assert_eq!(l.cni_version, "1.1.0");
        assert_eq!(l.declared_version, "1.0.0");
    }

    #[test]
    fn rejects_bad_lists_with_the_field_named() {
        let table: &[(&str, u32, &str)] = &[
            ("{", 6, "JSON"),
            ("[]", 6, "object"),
            (r#"{"plugins":[{"type":"a"}]}"#, 7, "name"),
            (r#"{"name":1,"plugins":[{"type":"a"}]}"#, 7, "name"),
            (
                r#"{"name":"n","cniVersion":1,"plugins":[{"type":"a"}]}"#,
                7,
                "cniVersion",
            ),
            (r#"{"name":"n","plugins":[]}"#, 7, "no plugins"),
            (r#"{"name":"n","plugins":{}}"#, 7, "plugins"),
            (r#"{"name":"n","plugins":[1]}"#, 7, "plugins[0]"),
            (r#"{"name":"n","plugins":[{}]}"#, 7, "type"),
            (r#"{"name":"n","plugins":[{"type":5}]}"#, 7, "type"),
            (r#"{"name":"n","plugins":[{"type":"../x"}]}"#, 7, "type"),
            (
                r#"{"name":"n","plugins":[{"type":"a","ipam":{"type":"a/b"}}]}"#,
                7,
                "ipam.type",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"a","capabilities":{"p":1}}]}"#,
                7,
                "capabilities.p",
            ),
            (
                r#"{"name":"n","loadOnlyInlinedPlugins":true}"#,
                7,
                "loadOnlyInlinedPlugins",
            ),
            (r#"{"name":"n"}"#, 7, "no plugin"),
            (
                r#"{"name":"n","cniVersions":["x"],"plugins":[{"type":"a"}]}"#,
                7,
                "cniVersions",
            ),
        ];
        for (src, code, needle) in table {
            let e = list(src).unwrap_err();
            assert_eq!(e.code, *code, "{src}: {e}");
            assert!(e.msg.contains(needle), "{src}: {} lacks {needle}", e.msg);
        }
    }

    #[test]
    fn an_empty_ipam_type_is_no_ipam_as_the_reference_reads_it() {
        let l = list(r#"{"name":"n","plugins":[{"type":"bridge","ipam":{"type":""}}]}"#).unwrap();
        assert_eq!(l.plugins[0].ipam_type, None);
    }

    #[test]
    fn upconverts_a_single_conf() {
        let l = NetConfList::from_single_conf(br#"{"cniVersion":"0.4.0","name":"s","type":"bridge","x":1}"#).unwrap();
        assert_eq!(l.name, "s");
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].raw.get("x"), Some(&Value::from(1)));
    }
}
