//! The chain as a dataflow graph: nodes are the plugins in list order, edges the
//! resources one plugin produces and a later one consumes (the pod interface, its
//! addresses, the host-side veth, the bridge). The prevResult carries them forward, so a
//! consumer takes each resource from the nearest plugin before it that produces it.
//!
//! Plugins the validator does not know (external ones it has no table for) are opaque:
//! they may produce anything, so a consumer after one is never reported, and the edge
//! from it is drawn dashed.

use super::diag::Code;
use super::pos::push_token;
use super::{Cx, PluginRef};
use petgraph::dot::Dot;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;
use std::fmt;

/// Something a plugin creates that a later plugin works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// CNI_IFNAME inside the container.
    PodInterface,
    /// IP addresses in the result (from an IPAM).
    Addresses,
    /// The host end of a veth pair.
    HostVeth,
    /// A bridge device on the host.
    Bridge(String),
    /// The container's lo.
    Loopback,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::PodInterface => write!(f, "pod interface"),
            Resource::Addresses => write!(f, "addresses"),
            Resource::HostVeth => write!(f, "host veth"),
            Resource::Bridge(n) => write!(f, "bridge {n}"),
            Resource::Loopback => write!(f, "lo"),
        }
    }
}

/// What a plugin does with resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Known {
        produces: Vec<Resource>,
        consumes: Vec<Resource>,
    },
    /// An external plugin the validator has no table for.
    Opaque,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub label: String,
    pub ptype: String,
    pub ipam: Option<String>,
    pub in_process: bool,
    pub role: Role,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.label, self.ptype)?;
        if let Some(i) = &self.ipam {
            write!(f, "\nipam: {i}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// The producer certainly creates it.
    Certain,
    /// From an opaque plugin: it may.
    Maybe,
    /// Both create it: a conflict.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub resource: Resource,
    pub kind: FlowKind,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FlowKind::Certain => write!(f, "{}", self.resource),
            FlowKind::Maybe => write!(f, "{}?", self.resource),
            FlowKind::Conflict => write!(f, "creates {} again", self.resource),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChainGraph {
    pub network: String,
    pub graph: DiGraph<Node, Flow>,
}

impl ChainGraph {
    /// Graphviz text (petgraph's Dot), one `digraph` per chain.
    pub fn to_dot(&self) -> String {
        let edge_attrs = |_, e: petgraph::graph::EdgeReference<'_, Flow>| match e.weight().kind {
            FlowKind::Certain => String::new(),
            FlowKind::Maybe => "style = dashed".to_string(),
            FlowKind::Conflict => "color = red style = bold".to_string(),
        };
        let node_attrs = |_, (_, n): (NodeIndex, &Node)| {
            let style = if n.in_process {
                "shape = box"
            } else {
                "shape = box style = dashed"
            };
            style.to_string()
        };
        let dot = Dot::with_attr_getters(&self.graph, &[], &edge_attrs, &node_attrs);
        let body = format!("{dot}");
        let name = self.network.replace('\\', "\\\\").replace('"', "\\\"");
        body.replacen("digraph {", &format!("digraph \"{name}\" {{"), 1)
    }
}

fn str_key<'v>(obj: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v str> {
    obj.get(key).and_then(Value::as_str)
}

/// The role of a plugin type; main plugins produce addresses only when they have an IPAM.
pub fn role(p: &PluginRef) -> Role {
    let t = p.ptype.as_deref().unwrap_or("");
    let ipam = p.ipam_type.is_some();
    let mut produces = Vec::new();
    let mut consumes = Vec::new();
    match t {
        "bridge" => {
            let no_iface = p.obj.get("disableContainerInterface") == Some(&Value::Bool(true));
            if !no_iface {
                produces.push(Resource::PodInterface);
                produces.push(Resource::HostVeth);
            }
            let br = str_key(&p.obj, "bridge").filter(|s| !s.is_empty()).unwrap_or("cni0");
            produces.push(Resource::Bridge(br.to_string()));
            if ipam && !no_iface {
                produces.push(Resource::Addresses);
            }
        }
        "ptp" => {
            produces.extend([Resource::PodInterface, Resource::HostVeth]);
            if ipam {
                produces.push(Resource::Addresses);
            }
        }
        // reference main plugins without a host-side veth
        "macvlan" | "ipvlan" | "vlan" | "host-device" | "dummy" | "tap" => {
            produces.push(Resource::PodInterface);
            if ipam {
                produces.push(Resource::Addresses);
            }
        }
        "loopback" => produces.push(Resource::Loopback),
        "tuning" | "vrf" => consumes.push(Resource::PodInterface),
        "portmap" | "firewall" | "sbr" => consumes.push(Resource::Addresses),
        "bandwidth" => consumes.push(Resource::HostVeth),
        _ => return Role::Opaque,
    }
    Role::Known { produces, consumes }
}

fn produces(role: &Role, r: &Resource) -> bool {
    matches!(role, Role::Known { produces, .. } if produces.contains(r))
}

/// Which plugins consume a capability (CONVENTIONS.md), as the message says it.
fn cap_consumers(cap: &str) -> &'static str {
    match cap {
        "portMappings" => "only portmap consumes it",
        "bandwidth" => "only bandwidth consumes it",
        "ips" => "only the host-local and static IPAMs consume it",
        "mac" => "only tuning and bridge consume it",
        "ipRanges" => "only the host-local IPAM consumes it",
        "dns" | "aliases" => "only external plugins consume it",
        _ => "no in-process stage consumes it",
    }
}

/// Whether the plugin (a type the validator knows) or its in-process IPAM reads `cap`.
/// None when an external IPAM could.
fn consumes_cap(ptype: &str, ipam: Option<&str>, cap: &str) -> Option<bool> {
    let own = matches!(
        (ptype, cap),
        ("portmap", "portMappings") | ("bandwidth", "bandwidth") | ("tuning", "mac") | ("bridge", "mac")
    );
    if own {
        return Some(true);
    }
    match ipam {
        None => Some(false),
        Some("host-local") => Some(matches!(cap, "ips" | "ipRanges")),
        Some("static") => Some(cap == "ips"),
        Some(_) => None,
    }
}

fn cap_enabled(p: &PluginRef, cap: &str) -> bool {
    matches!(p.obj.get("capabilities"), Some(Value::Object(c)) if c.get(cap) == Some(&Value::Bool(true)))
}

fn has_static(p: &PluginRef, keys: &[&str], rc_key: &str) -> bool {
    let nonzero = |v: Option<&Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    keys.iter().any(|k| nonzero(p.obj.get(*k)))
        || matches!(p.obj.get("runtimeConfig"), Some(Value::Object(rc)) if nonzero(rc.get(rc_key)))
}

/// Build the graph of a chain and report what does not flow.
pub fn check_chain(cx: &mut Cx, plugins: &[PluginRef], network: &str) -> ChainGraph {
    let mut graph: DiGraph<Node, Flow> = DiGraph::new();
    let roles: Vec<Role> = plugins.iter().map(role).collect();
    let nodes: Vec<NodeIndex> = plugins
        .iter()
        .zip(&roles)
        .map(|(p, r)| {
            graph.add_node(Node {
                label: p.label.clone(),
                ptype: p.ptype.clone().unwrap_or_default(),
                ipam: p.ipam_type.clone(),
                in_process: p.in_process,
                role: r.clone(),
            })
        })
        .collect();
    for (j, p) in plugins.iter().enumerate() {
        let t = p.ptype.as_deref().unwrap_or("");
        let tp = push_token(&p.ptr, "type");
        let me = cx.path(p.src, &p.ptr);
        let Role::Known {
            produces: prod,
            consumes,
        } = &roles[j]
        else {
            continue;
        };
        // the pod interface made twice
        if prod.contains(&Resource::PodInterface) {
            if let Some(i) = (0..j).rev().find(|&i| produces(&roles[i], &Resource::PodInterface)) {
                graph.add_edge(
                    nodes[i],
                    nodes[j],
                    Flow {
                        resource: Resource::PodInterface,
                        kind: FlowKind::Conflict,
                    },
                );
                let other = &plugins[i];
                cx.at(
                    p.src,
                    Code::InterfaceTwice,
                    &tp,
                    format!(
                        "{me}: {t} creates the pod interface, but {} ({}) already created it",
                        other.label,
                        other.ptype.as_deref().unwrap_or("")
                    ),
                );
                cx.hint("a chain has one main plugin that creates the interface; the others after it modify it");
            }
        }
        let any_iface_before =
            (0..j).any(|i| matches!(roles[i], Role::Opaque) || produces(&roles[i], &Resource::PodInterface));
        if !consumes.is_empty() && !any_iface_before {
            cx.at(
                p.src,
                Code::MetaBeforeInterface,
                &tp,
                format!("{me}: {t} works on the pod interface, but no plugin before it creates one"),
            );
            cx.hint("move it after the plugin that creates the interface (bridge, ptp, macvlan, ...)");
            continue;
        }
        for r in consumes {
            let from = (0..j).rev().find_map(|i| match &roles[i] {
                Role::Opaque => Some((i, FlowKind::Maybe)),
                role if produces(role, r) => Some((i, FlowKind::Certain)),
                _ => None,
            });
            match from {
                Some((i, kind)) => {
                    graph.add_edge(
                        nodes[i],
                        nodes[j],
                        Flow {
                            resource: r.clone(),
                            kind,
                        },
                    );
                }
                None => match r {
                    Resource::HostVeth => {
                        cx.at(
                            p.src,
                            Code::NoHostVeth,
                            &tp,
                            format!(
                                "{me}: {t} shapes traffic on a host-side veth, but no plugin before it creates one"
                            ),
                        );
                        cx.hint("bandwidth works after bridge or ptp; macvlan, ipvlan and host-device have no host-side veth");
                    }
                    Resource::Addresses => no_address(cx, p, &tp, &me, t),
                    _ => {}
                },
            }
        }
    }
    check_capabilities(cx, plugins);
    ChainGraph {
        network: network.to_string(),
        graph,
    }
}

/// A plugin that works on the result's addresses, with no IPAM before it. portmap and
/// firewall return the previous result unchanged when it has no IPs (an L2 network, as
/// podman's bridge without ipam): the chain works, they just do nothing. sbr fails.
fn no_address(cx: &mut Cx, p: &PluginRef, tp: &str, me: &str, t: &str) {
    let (code, msg, hint) = match t {
        "portmap" => (
            Code::NoAddressNoop,
            format!("{me}: portmap has no address to map ports to: no plugin before it has an IPAM, so it maps nothing"),
            "fine for an L2 network; give the main plugin an \"ipam\" section if pods need port mappings",
        ),
        "firewall" => (
            Code::NoAddressNoop,
            format!("{me}: firewall has no address to allow traffic for: no plugin before it has an IPAM, so it adds no rules"),
            "fine for an L2 network; give the main plugin an \"ipam\" section if pods need firewall rules",
        ),
        _ => (
            Code::NoAddress,
            format!("{me}: {t} needs the pod's addresses, but no plugin before it has an IPAM"),
            "sbr fails with \"No IP addresses on interface\"; give the main plugin an \"ipam\" section",
        ),
    };
    cx.at(p.src, code, tp, msg);
    cx.hint(hint);
}

fn check_capabilities(cx: &mut Cx, plugins: &[PluginRef]) {
    for p in plugins {
        let t = p.ptype.as_deref().unwrap_or("");
        if p.schema.is_none() {
            continue;
        }
        if let Some(Value::Object(caps)) = p.obj.get("capabilities") {
            for (cap, on) in caps {
                if on != &Value::Bool(true) {
                    continue;
                }
                if consumes_cap(t, p.ipam_type.as_deref(), cap) == Some(false) {
                    let cp = push_token(&push_token(&p.ptr, "capabilities"), cap);
                    let path = cx.path(p.src, &cp);
                    cx.at_key(
                        p.src,
                        Code::CapabilityUnused,
                        &cp,
                        format!("{path}: {t} does not consume {cap:?}; {}", cap_consumers(cap)),
                    );
                    cx.hint("the runtime passes a capability only to the plugins that declare it: declare it on its consumer");
                }
            }
        }
        let tp = push_token(&p.ptr, "type");
        let me = cx.path(p.src, &p.ptr);
        match t {
            "portmap" if !cap_enabled(p, "portMappings") && !has_static(p, &[], "portMappings") => {
                cx.at(
                    p.src,
                    Code::CapabilityNotEnabled,
                    &tp,
                    format!("{me}: portmap maps nothing: the portMappings capability is not enabled"),
                );
                cx.hint("add \"capabilities\": {\"portMappings\": true}");
            }
            "bandwidth"
                if !cap_enabled(p, "bandwidth")
                    && !has_static(
                        p,
                        &["ingressRate", "ingressBurst", "egressRate", "egressBurst"],
                        "bandwidth",
                    ) =>
            {
                cx.at(
                    p.src,
                    Code::CapabilityNotEnabled,
                    &tp,
                    format!(
                        "{me}: bandwidth shapes nothing: no limits are set and the bandwidth capability is not enabled"
                    ),
                );
                cx.hint("add \"capabilities\": {\"bandwidth\": true}, or set ingressRate/egressRate with their bursts");
            }
            _ => {}
        }
    }
}
