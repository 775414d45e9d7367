//! The portmap request: the plugin's own keys, `runtimeConfig.portMappings`, and the
//! container addresses taken from prevResult. Everything is validated before anything is
//! written; a bad value is code 7 naming its JSON path
//! (`runtimeConfig.portMappings[1].hostPort`), a key we refuse is code 2.

use crate::conf;
use crate::kernel::nft::expr::Proto;
use cnichain_engine::spec::error::{CniError, UNSUPPORTED_FIELD};
use cnichain_engine::spec::ipnet::{parse_ip, IpNet};
use cnichain_engine::spec::result::Result100;
use cnichain_engine::validate::schema::{Role, Schema, Ty, F, STRS};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The reference's default mark bit (Kubernetes uses 14 and 15, Calico 20-31).
pub const DEFAULT_MARK_BIT: u8 = 13;

/// The plugin keys, as the reference declares them.
#[derive(Debug, Deserialize, Default)]
struct Keys {
    #[serde(default)]
    name: String,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default, rename = "masqAll")]
    masq_all: Option<bool>,
    #[serde(default, rename = "markMasqBit")]
    mark_masq_bit: Option<i64>,
    #[serde(default, rename = "externalSetMarkChain")]
    external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
}

/// `runtimeConfig`, as the reference declares the part it reads.
#[derive(Debug, Deserialize, Default)]
struct RuntimeConfig {
    #[serde(default, rename = "portMappings")]
    port_mappings: Option<Vec<Entry>>,
}

/// One `portMappings` entry with its keys matched by the typed parse; the values stay
/// JSON so that a bad one is reported naming its field (the reference's `int` and
/// `string` fields, checked below).
#[derive(Debug, Deserialize, Default)]
struct Entry {
    #[serde(default, rename = "hostPort")]
    host_port: Option<Value>,
    #[serde(default, rename = "containerPort")]
    container_port: Option<Value>,
    #[serde(default)]
    protocol: Option<Value>,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<Value>,
}

/// One validated `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
    /// None: every local address. An unspecified address (0.0.0.0, ::) is None for its
    /// family only, as in the reference.
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct PortmapConf {
    pub network: String,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_bit: u8,
    pub mappings: Vec<Mapping>,
}

fn invalid(msg: String) -> CniError {
    CniError::invalid_config(format!("portmap: {msg}"))
}

/// An error the reference reports for the same condition: its text as `msg` (ADD and
/// DEL wrap parse errors in "failed to parse config: ", CHECK does not), cnichain's
/// help (the JSON path) as `details`.
fn reference(check: bool, text: String, help: String) -> CniError {
    let msg = if check {
        text
    } else {
        format!("failed to parse config: {text}")
    };
    CniError::invalid_config(msg).with_details(format!("portmap: {help}"))
}

fn unsupported(key: &str, why: &str) -> CniError {
    CniError::new(UNSUPPORTED_FIELD, format!("portmap: {key} is not supported: {why}"))
}

impl PortmapConf {
    /// Parse and validate the whole request config (for ADD).
    pub fn parse(config: &Map<String, Value>) -> Result<PortmapConf, CniError> {
        PortmapConf::parse_for(config, false)
    }

    /// Parse and validate the whole request config; `check`: for CHECK, whose errors the
    /// reference does not prefix.
    pub fn parse_for(config: &Map<String, Value>, check: bool) -> Result<PortmapConf, CniError> {
        let keys: Keys = conf::parse(config, "portmap")?;
        // The reference's own checks first, in its order.
        if keys.external_set_mark_chain.is_some() && keys.mark_masq_bit.is_some() {
            return Err(reference(
                check,
                "Cannot specify externalSetMarkChain and markMasqBit".to_string(),
                "externalSetMarkChain and markMasqBit are both set".to_string(),
            ));
        }
        let mark_bit = match keys.mark_masq_bit {
            None => DEFAULT_MARK_BIT,
            Some(b) if (0..=31).contains(&b) => b as u8,
            Some(b) => {
                return Err(reference(
                    check,
                    "MasqMarkBit must be between 0 and 31".to_string(),
                    format!("markMasqBit must be between 0 and 31, got {b}"),
                ))
            }
        };
        let entries: &[Entry] = keys
            .runtime_config
            .as_ref()
            .and_then(|r| r.port_mappings.as_deref())
            .unwrap_or_default();
        reference_port_checks(entries, check)?;
        for (key, c) in [
            ("conditionsV4", &keys.conditions_v4),
            ("conditionsV6", &keys.conditions_v6),
        ] {
            if c.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(unsupported(
                    key,
                    "cnichain never passes config text to nftables as rules (use hostIP to restrict a mapping)",
                ));
            }
        }
        if let Some(chain) = &keys.external_set_mark_chain {
            return Err(unsupported(
                "externalSetMarkChain",
                &format!(
                    "{chain:?} would be an iptables chain; cnichain's nftables rules cannot jump to it \
                     (leave it out: cnichain marks and masquerades in its own table)"
                ),
            ));
        }
        match keys.backend.as_deref() {
            None | Some("") | Some("nftables") => {}
            Some("iptables") => {
                return Err(unsupported(
                    "backend",
                    "\"iptables\": cnichain's portmap always uses nftables (leave out backend or set \"nftables\")",
                ))
            }
            Some(other) => return Err(invalid(format!("unknown backend {other:?}"))),
        }
        Ok(PortmapConf {
            network: keys.name,
            snat: keys.snat.unwrap_or(true),
            masq_all: keys.masq_all.unwrap_or(false),
            mark_bit,
            mappings: mappings(entries)?,
        })
    }
}

/// The network name alone (DEL reads nothing else); "" when it is missing or not a string.
pub fn network_name(config: &Map<String, Value>) -> String {
    #[derive(Deserialize, Default)]
    struct Name {
        #[serde(default)]
        name: String,
    }
    conf::parse::<Name>(config, "portmap")
        .map(|n| n.name)
        .unwrap_or_default()
}

/// The reference's port checks, entry by entry: container port, then host port, each
/// refused when not positive (a missing one is Go's zero).
fn reference_port_checks(entries: &[Entry], check: bool) -> Result<(), CniError> {
    for (i, e) in entries.iter().enumerate() {
        for (v, key, what) in [
            (&e.container_port, "containerPort", "container"),
            (&e.host_port, "hostPort", "host"),
        ] {
            let n = match v {
                None | Some(Value::Null) => Some(0),
                Some(v) => v.as_i64(),
            };
            if let Some(n) = n.filter(|n| *n <= 0) {
                return Err(reference(
                    check,
                    format!("Invalid {what} port number: {n}"),
                    format!("runtimeConfig.portMappings[{i}].{key}: must be a port number 1-65535, got {n}"),
                ));
            }
        }
    }
    Ok(())
}

/// `runtimeConfig.portMappings`, validated entry by entry.
fn mappings(entries: &[Entry]) -> Result<Vec<Mapping>, CniError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = |k: &str| format!("runtimeConfig.portMappings[{i}].{k}");
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "nothing".to_string())
        };
        let port = |v: &Option<Value>, k: &str| -> Result<u16, CniError> {
            match v.as_ref().and_then(Value::as_i64) {
                Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
                _ => Err(invalid(format!(
                    "{}: must be a port number 1-65535, got {}",
                    at(k),
                    show(v)
                ))),
            }
        };
        let host_port = port(&e.host_port, "hostPort")?;
        let container_port = port(&e.container_port, "containerPort")?;
        let proto = match &e.protocol {
            Some(Value::String(s)) => Proto::parse(s),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "{}: must be \"tcp\", \"udp\" or \"sctp\", got {}",
                at("protocol"),
                show(&e.protocol)
            ))
        })?;
        let host_ip = match &e.host_ip {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                Some(parse_ip(s).ok_or_else(|| invalid(format!("{}: {s:?} is not an IP address", at("hostIP"))))?)
            }
            Some(v) => return Err(invalid(format!("{}: must be a string, got {v}", at("hostIP")))),
        };
        out.push(Mapping {
            host_port,
            container_port,
            proto,
            host_ip,
        });
    }
    Ok(out)
}

/// The container's addresses, as the reference picks them: the first IPv4 and the first
/// IPv6 address whose `interface` is unset, out of range, or names an interface called
/// `ifname` inside a sandbox.
pub fn container_addrs(res: &Result100, ifname: &str) -> (Option<IpNet>, Option<IpNet>) {
    let (mut v4, mut v6) = (None, None);
    for ip in &res.ips {
        let is4 = ip.address.is_ipv4();
        if (is4 && v4.is_some()) || (!is4 && v6.is_some()) {
            continue;
        }
        if let Some(idx) = ip.interface {
            if let Some(intf) = usize::try_from(idx).ok().and_then(|i| res.interfaces.get(i)) {
                if intf.name != ifname || intf.sandbox.is_empty() {
                    continue;
                }
            }
        }
        if is4 {
            v4 = Some(ip.address);
        } else {
            v6 = Some(ip.address);
        }
    }
    (v4, v6)
}

/// One `runtimeConfig.portMappings` entry.
const ENTRY: &[F] = &[
    F("hostPort", Ty::Int(1, 65535)),
    F("containerPort", Ty::Int(1, 65535)),
    F("protocol", Ty::Str),
    F("hostIP", Ty::Str),
];

/// The keys the portmap plugin reads (1.1.1, plus upstream's `backend`).
pub static SCHEMA: Schema = Schema {
    role: Role::Plugin,
    fields: &[
        F("backend", Ty::Enum(crate::shared::mainconf::MASQ_BACKENDS)),
        F("snat", Ty::Bool),
        F("conditionsV4", STRS),
        F("conditionsV6", STRS),
        F("masqAll", Ty::Bool),
        F("markMasqBit", Ty::Int(0, 31)),
        F("externalSetMarkChain", Ty::Str),
        F(
            "runtimeConfig",
            Ty::Open(&[F("portMappings", Ty::List(&Ty::Obj(ENTRY)))]),
        ),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn defaults_and_mappings() {
        let c = PortmapConf::parse(&cfg(
            json!({"name":"n","type":"portmap","runtimeConfig":{"portMappings":[
            {"hostPort":8080,"containerPort":80,"protocol":"TCP"},
            {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"192.0.2.1"},
            {"hostPort":1,"containerPort":65535,"protocol":"sctp","hostIP":""}]}}),
        ))
        .unwrap();
        assert!(c.snat);
        assert!(!c.masq_all);
        assert_eq!(c.mark_bit, 13);
        assert_eq!(c.mappings.len(), 3);
        assert_eq!(c.mappings[0].proto, Proto::Tcp);
        assert_eq!(c.mappings[1].host_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(c.mappings[2].host_ip, None);
        let c = PortmapConf::parse(&cfg(json!({"name":"n","snat":false,"masqAll":true,"markMasqBit":0}))).unwrap();
        assert!(!c.snat && c.masq_all && c.mark_bit == 0 && c.mappings.is_empty());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                json!({"hostPort":0,"containerPort":80,"protocol":"tcp"}),
                "portMappings[1].hostPort",
            ),
            (
                json!({"hostPort":65536,"containerPort":80,"protocol":"tcp"}),
                "portMappings[1].hostPort",
            ),
            (
                json!({"hostPort":"80","containerPort":80,"protocol":"tcp"}),
                "portMappings[1].hostPort",
            ),
            (
                json!({"hostPort":80.5,"containerPort":80,"protocol":"tcp"}),
                "portMappings[1].hostPort",
            ),
            (
                json!({"hostPort":80,"containerPort":-1,"protocol":"tcp"}),
                "portMappings[1].containerPort",
            ),
            (json!({"hostPort":80,"protocol":"tcp"}), "portMappings[1].containerPort"),
            (
                json!({"hostPort":80,"containerPort":80,"protocol":"tcp; flush ruleset"}),
                "portMappings[1].protocol",
            ),
            (json!({"hostPort":80,"containerPort":80}), "portMappings[1].protocol"),
            (
                json!({"hostPort":80,"containerPort":80,"protocol":"icmp"}),
                "portMappings[1].protocol",
            ),
            (
                json!({"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"1.2.3.4 drop"}),
                "portMappings[1].hostIP",
            ),
            (
                json!({"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"fe80::1%eth0"}),
                "portMappings[1].hostIP",
            ),
            (
                json!({"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":5}),
                "portMappings[1].hostIP",
            ),
            (json!(7), "portMappings[1]"),
        ];
        for (entry, path) in cases {
            let c = cfg(json!({"name":"n","runtimeConfig":{"portMappings":[
                {"hostPort":1,"containerPort":1,"protocol":"tcp"}, entry.clone()]}}));
            let e = PortmapConf::parse(&c).unwrap_err();
            assert_eq!(e.code, 7, "{entry}");
            assert!(e.msg.contains(path) || e.details.contains(path), "{entry}: {e:?}");
        }
    }

    /// Where the reference has a message for the condition, `msg` is its text exactly
    /// (prefixed as its ADD and DEL prefix parse errors; CHECK is not), the help in
    /// `details`; its order: externalSetMarkChain with markMasqBit, the bit's range, then
    /// per entry the container port and the host port.
    #[test]
    fn reference_messages() {
        let pm = |entries: Value| json!({"name":"n","runtimeConfig":{"portMappings": entries}});
        for (c, want) in [
            (
                pm(json!([{"hostPort":0,"containerPort":80,"protocol":"tcp"}])),
                "Invalid host port number: 0",
            ),
            (
                pm(json!([{"hostPort":-5,"containerPort":80}])),
                "Invalid host port number: -5",
            ),
            (
                pm(json!([{"hostPort":80,"containerPort":-1}])),
                "Invalid container port number: -1",
            ),
            (
                pm(json!([{"hostPort":80,"protocol":"tcp"}])),
                "Invalid container port number: 0",
            ),
            (
                pm(json!([{"hostPort":0,"containerPort":0}])),
                "Invalid container port number: 0",
            ),
            // a later entry's reference error wins over an earlier entry's own check
            (
                pm(json!([{"hostPort":99999,"containerPort":80,"protocol":"tcp"},{"hostPort":0,"containerPort":1}])),
                "Invalid host port number: 0",
            ),
            (json!({"markMasqBit":32}), "MasqMarkBit must be between 0 and 31"),
            (
                json!({"markMasqBit":-1,"runtimeConfig":{"portMappings":[{"hostPort":0}]}}),
                "MasqMarkBit must be between 0 and 31",
            ),
            (
                json!({"markMasqBit":40,"externalSetMarkChain":"X"}),
                "Cannot specify externalSetMarkChain and markMasqBit",
            ),
        ] {
            let e = PortmapConf::parse(&cfg(c.clone())).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (7, format!("failed to parse config: {want}").as_str()),
                "{c}"
            );
            assert!(e.details.starts_with("portmap: "), "{c}: {e:?}");
            let e = PortmapConf::parse_for(&cfg(c.clone()), true).unwrap_err();
            assert_eq!(e.msg, want, "CHECK: {c}");
        }
        let e = PortmapConf::parse(&cfg(pm(json!([{"hostPort":0,"containerPort":80}])))).unwrap_err();
        assert_eq!(
            e.details,
            "portmap: runtimeConfig.portMappings[0].hostPort: must be a port number 1-65535, got 0"
        );
    }

    #[test]
    fn refused_keys() {
        for (c, code, key) in [
            (json!({"conditionsV4":["!", "-d", "192.0.2.0/24"]}), 2, "conditionsV4"),
            (json!({"conditionsV6":["ip6 daddr fd00::/8"]}), 2, "conditionsV6"),
            (
                json!({"externalSetMarkChain":"KUBE-MARK-MASQ"}),
                2,
                "externalSetMarkChain",
            ),
            (
                json!({"externalSetMarkChain":"X","markMasqBit":3}),
                7,
                "externalSetMarkChain",
            ),
            (json!({"markMasqBit":32}), 7, "markMasqBit"),
            (json!({"markMasqBit":-1}), 7, "markMasqBit"),
            (json!({"backend":"iptables"}), 2, "backend"),
            (json!({"backend":"pf"}), 7, "backend"),
            (json!({"snat":"yes"}), 7, "snat"),
        ] {
            let e = PortmapConf::parse(&cfg(c.clone())).unwrap_err();
            assert_eq!(e.code, code, "{c}");
            assert!(e.msg.contains(key) || e.details.contains(key), "{c}: {e:?}");
        }
        // empty condition lists are fine
        assert!(PortmapConf::parse(&cfg(
            json!({"conditionsV4":[],"conditionsV6":null,"backend":"nftables"})
        ))
        .is_ok());
    }

    #[test]
    fn picks_container_addresses_like_the_reference() {
        use cnichain_engine::spec::result::{Interface, IpConfig};
        let intf = |name: &str, sandbox: &str| Interface {
            name: name.into(),
            sandbox: sandbox.into(),
            ..Default::default()
        };
        let ip = |i: Option<i64>, a: &str| IpConfig {
            interface: i,
            address: a.parse().unwrap(),
            gateway: None,
        };
        let res = Result100 {
            interfaces: vec![
                intf("cni0", ""),
                intf("veth1", ""),
                intf("eth0", "/run/netns/p"),
                intf("eth1", "/x"),
            ],
            ips: vec![
                ip(Some(0), "10.0.0.1/24"),
                ip(Some(3), "10.9.0.2/24"),
                ip(Some(2), "10.88.0.2/16"),
                ip(Some(2), "10.88.0.3/16"),
                ip(None, "fd00::2/64"),
            ],
            ..Default::default()
        };
        let (v4, v6) = container_addrs(&res, "eth0");
        assert_eq!(v4.unwrap().to_string(), "10.88.0.2/16");
        assert_eq!(v6.unwrap().to_string(), "fd00::2/64");
        let res = Result100 {
            ips: vec![ip(Some(7), "10.1.0.2/24")],
            ..Default::default()
        };
        assert_eq!(container_addrs(&res, "eth0").0.unwrap().to_string(), "10.1.0.2/24");
    }
}

/// The schema `cnichain validate` uses declares the keys this loader reads.
#[cfg(test)]
mod schema_matches_loader {
    use super::*;
    use crate::tests::schema_conformance::{assert_runtime_config, assert_same_keys, assert_schema, struct_keys};

    #[test]
    fn portmap() {
        assert_schema::<Keys>(&SCHEMA, &[], &[]);
        assert_runtime_config::<RuntimeConfig>(&SCHEMA, &[]);
        assert_same_keys("portMappings[]", &struct_keys::<Entry>(), ENTRY, false, &[], &[]);
    }
}
