//! The portmap request: the plugin's own keys, `runtimeConfig.portMappings`, and the
//! container addresses taken from prevResult. Everything is validated before anything is
//! written; a bad value is code 7 naming its JSON path
//! (`runtimeConfig.portMappings[1].hostPort`), a key we refuse is code 2.

use crate::conf;
use crate::nft::expr::Proto;
use cnichain_engine::spec::error::{CniError, UNSUPPORTED_FIELD};
use cnichain_engine::spec::ipnet::{parse_ip, IpNet};
use cnichain_engine::spec::result::Result100;
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

fn unsupported(key: &str, why: &str) -> CniError {
    CniError::new(UNSUPPORTED_FIELD, format!("portmap: {key} is not supported: {why}"))
}

impl PortmapConf {
    /// Parse and validate the whole request config.
    pub fn parse(config: &Map<String, Value>) -> Result<PortmapConf, CniError> {
        let keys: Keys = conf::parse(config, "portmap")?;
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
            if keys.mark_masq_bit.is_some() {
                return Err(invalid(
                    "cannot specify externalSetMarkChain and markMasqBit".to_string(),
                ));
            }
            return Err(unsupported(
                "externalSetMarkChain",
                &format!(
                    "{chain:?} would be an iptables chain; cnichain's nftables rules cannot jump to it \
                     (leave it out: cnichain marks and masquerades in its own table)"
                ),
            ));
        }
        let mark_bit = match keys.mark_masq_bit {
            None => DEFAULT_MARK_BIT,
            Some(b) if (0..=31).contains(&b) => b as u8,
            Some(b) => return Err(invalid(format!("markMasqBit must be between 0 and 31, got {b}"))),
        };
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
            mappings: parse_mappings(config)?,
        })
    }
}

/// A key of a JSON object, matched exactly first and then case-insensitively (Go's
/// encoding/json rule, which the reference's parsing follows).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// `runtimeConfig.portMappings`, validated entry by entry.
pub fn parse_mappings(config: &Map<String, Value>) -> Result<Vec<Mapping>, CniError> {
    let rc = match field(config, "runtimeConfig") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("runtimeConfig must be an object".to_string())),
    };
    let list = match field(rc, "portMappings") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("runtimeConfig.portMappings must be a list".to_string())),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let at = |k: &str| format!("runtimeConfig.portMappings[{i}].{k}");
        let obj = match e {
            Value::Object(o) => o,
            _ => return Err(invalid(format!("runtimeConfig.portMappings[{i}] must be an object"))),
        };
        let port = |k: &str| -> Result<u16, CniError> {
            let v = field(obj, k);
            match v.and_then(Value::as_i64) {
                Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
                _ => Err(invalid(format!(
                    "{}: must be a port number 1-65535, got {}",
                    at(k),
                    v.map(|v| v.to_string()).unwrap_or_else(|| "nothing".to_string())
                ))),
            }
        };
        let host_port = port("hostPort")?;
        let container_port = port("containerPort")?;
        let proto = match field(obj, "protocol") {
            Some(Value::String(s)) => Proto::parse(s),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "{}: must be \"tcp\", \"udp\" or \"sctp\", got {}",
                at("protocol"),
                field(obj, "protocol")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "nothing".to_string())
            ))
        })?;
        let host_ip = match field(obj, "hostIP") {
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
            assert!(e.msg.contains(path), "{entry}: {}", e.msg);
        }
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
            assert!(e.msg.contains(key), "{c}: {}", e.msg);
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
