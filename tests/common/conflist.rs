//! The conflists the tests write over and over, built once: a bridge (or ptp) main
//! plugin with host-local IPAM, then tuning, portmap, bandwidth or anything else
//! appended. `@IPAM@` in a dataDir is the sandbox's IPAM dir (`Sandbox::write_conflist`).
//!
//! ```ignore
//! let text = Conflist::new("1.1.0", NET)
//!     .plugin(Plugin::bridge(BRIDGE, "10.242.0.0/24").gateway("10.242.0.1"))
//!     .plugin(Plugin::tuning(json!({"net.core.somaxconn": "512"})))
//!     .plugin(Plugin::bandwidth(None, Some((4000000, 400000))))
//!     .text();
//! ```

use serde_json::{json, Value};

/// A network configuration list.
pub struct Conflist(Value);

/// One plugin entry of a conflist.
#[derive(Clone)]
pub struct Plugin(pub Value);

impl Conflist {
    pub fn new(cni_version: &str, name: &str) -> Conflist {
        Conflist(json!({"cniVersion": cni_version, "name": name, "plugins": []}))
    }

    /// Appends a plugin.
    pub fn plugin(mut self, p: Plugin) -> Conflist {
        if let Some(list) = self.0["plugins"].as_array_mut() {
            list.push(p.0);
        }
        self
    }

    pub fn value(&self) -> Value {
        self.0.clone()
    }

    pub fn text(&self) -> String {
        serde_json::to_string_pretty(&self.0).expect("conflist JSON")
    }
}

impl Plugin {
    pub fn new(typ: &str) -> Plugin {
        Plugin(json!({ "type": typ }))
    }

    /// A gateway bridge `bridge` with host-local IPAM on `subnet` (dataDir `@IPAM@`).
    pub fn bridge(bridge: &str, subnet: &str) -> Plugin {
        Plugin(json!({"type": "bridge", "bridge": bridge, "isGateway": true, "ipam": host_local(subnet)}))
    }

    /// ptp with host-local IPAM on `subnet` (dataDir `@IPAM@`).
    pub fn ptp(subnet: &str) -> Plugin {
        Plugin(json!({"type": "ptp", "ipam": host_local(subnet)}))
    }

    /// tuning with these sysctls.
    pub fn tuning(sysctl: Value) -> Plugin {
        Plugin(json!({"type": "tuning", "sysctl": sysctl}))
    }

    /// portmap taking the portMappings capability.
    pub fn portmap() -> Plugin {
        Plugin(json!({"type": "portmap", "capabilities": {"portMappings": true}}))
    }

    /// bandwidth with (rate, burst) for ingress and egress.
    pub fn bandwidth(ingress: Option<(u64, u64)>, egress: Option<(u64, u64)>) -> Plugin {
        let mut p = Plugin::new("bandwidth");
        if let Some((rate, burst)) = ingress {
            p = p.set("ingressRate", rate).set("ingressBurst", burst);
        }
        if let Some((rate, burst)) = egress {
            p = p.set("egressRate", rate).set("egressBurst", burst);
        }
        p
    }

    /// Sets a key of the plugin entry.
    pub fn set(mut self, key: &str, v: impl Into<Value>) -> Plugin {
        self.0[key] = v.into();
        self
    }

    /// Sets a key of the IPAM section.
    pub fn ipam(mut self, key: &str, v: impl Into<Value>) -> Plugin {
        self.0["ipam"][key] = v.into();
        self
    }

    /// The gateway of the first range.
    pub fn gateway(mut self, gw: &str) -> Plugin {
        self.0["ipam"]["ranges"][0][0]["gateway"] = json!(gw);
        self
    }

    /// One more range set with one range on `subnet` (e.g. an IPv6 one).
    pub fn range(mut self, subnet: &str) -> Plugin {
        if let Some(r) = self.0["ipam"]["ranges"].as_array_mut() {
            r.push(json!([{ "subnet": subnet }]));
        }
        self
    }

    /// A default IPv4 route in the IPAM result.
    pub fn default_route(self) -> Plugin {
        self.ipam("routes", json!([{ "dst": "0.0.0.0/0" }]))
    }
}

/// host-local IPAM on `subnet`, its store in the sandbox's IPAM dir.
pub fn host_local(subnet: &str) -> Value {
    json!({"type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": subnet }]]})
}
