//! Request derivation (spec §3 "Deriving request configuration", libcni buildOneConfig):
//! the plugin object plus `name`, the selected `cniVersion`, `prevResult`, and a
//! `runtimeConfig` of the capabilities the plugin enables and the runtime supplied.

use crate::spec::args::RuntimeConf;
use crate::spec::conflist::{NetConfList, PluginConf};
use crate::spec::result::CniResult;
use crate::stage::Command;
use serde_json::{Map, Value};

/// One (container, ifname) pair of the GC valid set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The request config for ADD, DEL or CHECK.
pub fn build(
    list: &NetConfList,
    plugin: &PluginConf,
    prev: Option<&CniResult>,
    rt: &RuntimeConf,
) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.to_value());
    }
    let mut rc = Map::new();
    for (cap, enabled) in &plugin.capabilities {
        if !*enabled {
            continue;
        }
        if let Some(v) = rt.capability_args.get(cap) {
            rc.insert(cap.clone(), v.clone());
        }
    }
    // An empty map adds no key, so a static runtimeConfig in the file survives; a
    // non-empty one replaces it wholesale (libcni injectRuntimeConfig).
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    conf
}

/// The request config for GC: name, version and (when a valid set is given) both the
/// spec's `cni.dev/valid-attachments` and the older `cni.dev/attachments` key.
pub fn build_gc(list: &NetConfList, plugin: &PluginConf, valid: Option<&[Attachment]>) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(valid) = valid {
        let arr: Vec<Value> = valid
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("containerID".into(), Value::String(a.container_id.clone()));
                m.insert("ifname".into(), Value::String(a.ifname.clone()));
                Value::Object(m)
            })
            .collect();
        conf.insert("cni.dev/valid-attachments".into(), Value::Array(arr.clone()));
        conf.insert("cni.dev/attachments".into(), Value::Array(arr));
    }
    conf
}

/// The request config for STATUS: name and version only.
pub fn build_status(list: &NetConfList, plugin: &PluginConf) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    conf
}

/// For messages: libcni's pluginDescription, `type="bridge"` plus the plugin-local name.
pub fn describe(plugin: &PluginConf, cmd: Command) -> String {
    let _ = cmd;
    let mut s = format!("type={:?}", plugin.plugin_type);
    if let Some(Value::String(n)) = plugin.raw.get("name") {
        if !n.is_empty() {
            s.push_str(&format!(" name={n:?}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> NetConfList {
        NetConfList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net1","plugins":[
              {"type":"bridge","name":"local","cniVersion":"0.3.1","x":{"b":1,"a":2}},
              {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},"runtimeConfig":{"static":1}}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn injects_name_and_selected_version_over_plugin_values() {
        let l = list();
        let c = build(&l, &l.plugins[0], None, &RuntimeConf::default());
        let expect: Value = serde_json::json!({"type":"bridge","name":"net1","cniVersion":"1.0.0","x":{"b":1,"a":2}});
        assert_eq!(Value::Object(c.clone()), expect);
        assert!(!c.contains_key("prevResult"));
        assert!(!c.contains_key("runtimeConfig"));
    }

    #[test]
    fn runtime_config_only_from_enabled_and_supplied_capabilities() {
        let l = list();
        let mut rt = RuntimeConf::default();
        // nothing supplied: the static runtimeConfig survives
        let c = build(&l, &l.plugins[1], None, &rt);
        assert_eq!(c.get("runtimeConfig"), Some(&serde_json::json!({"static":1})));
        rt.capability_args
            .insert("portMappings".into(), serde_json::json!([{"hostPort":8080}]));
        rt.capability_args
            .insert("bandwidth".into(), serde_json::json!({"ingressRate":1}));
        rt.capability_args.insert("mac".into(), serde_json::json!("x"));
        let c = build(&l, &l.plugins[1], None, &rt);
        assert_eq!(
            c.get("runtimeConfig"),
            Some(&serde_json::json!({"portMappings":[{"hostPort":8080}]}))
        );
        // capabilities stay in the request, as libcni leaves them
        assert!(c.contains_key("capabilities"));
        // a plugin without capabilities gets none
        assert!(!build(&l, &l.plugins[0], None, &rt).contains_key("runtimeConfig"));
    }

    #[test]
    fn gc_sends_both_keys_only_with_a_valid_set() {
        let l = list();
        let v = vec![Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        let c = build_gc(&l, &l.plugins[0], Some(&v));
        let want = serde_json::json!([{"containerID":"c1","ifname":"eth0"}]);
        assert_eq!(c.get("cni.dev/valid-attachments"), Some(&want));
        assert_eq!(c.get("cni.dev/attachments"), Some(&want));
        let c = build_gc(&l, &l.plugins[0], None);
        assert!(!c.contains_key("cni.dev/valid-attachments"));
    }
}
