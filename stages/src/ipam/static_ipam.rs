//! The static IPAM stage: the addresses, routes and dns the config names, nothing kept.
//!
//! Config (the full request config): `ipam.addresses` `[{address: CIDR, gateway?}]`,
//! `ipam.routes`, `ipam.dns`. CNI_ARGS `IP=cidr[,cidr...]` adds addresses and
//! `GATEWAY=ip[,ip...]` sets the gateway of those CNI_ARGS addresses that contain it;
//! `args.cni.ips`, then `runtimeConfig.ips` (the `ips` capability), when non-empty,
//! replace all addresses. As the reference 1.1.1 does it.

use super::config::{self, array_field, as_object, as_str, field, invalid, load_args, object_field, ArgKind};
use cnichain_engine::spec::error::{CniError, INTERNAL, INVALID_CONFIG};
use cnichain_engine::spec::ipnet::{format_ip, parse_ip, IpNet};
use cnichain_engine::spec::result::{CniResult, Dns, IpConfig, Result100, Route};
use cnichain_engine::spec::version;
use cnichain_engine::stage::{Invocation, Stage};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address with its prefix (host bits kept).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct StaticConf {
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An address not yet parsed (from the config) or already parsed (from CNI_ARGS).
enum Pending {
    Text {
        text: String,
        gateway: Option<IpAddr>,
        path: String,
    },
    Parsed(Address),
}

impl StaticConf {
    /// The reference's `LoadIPAMConfig` (1.1.1).
    pub fn load(
        config: &Map<String, Value>,
        cni_args: &[(String, String)],
        selected_version: &str,
    ) -> Result<StaticConf, CniError> {
        let cni_version = config::cni_version(config, selected_version)?;
        let ipam = match field(config, "ipam") {
            None | Some(Value::Null) => return Err(invalid("ipam", "IPAM config missing 'ipam' key")),
            Some(v) => as_object(v, "ipam")?,
        };
        let routes = config::routes(ipam, "ipam")?;
        let dns = config::dns(ipam, "ipam")?;
        let mut addrs: Vec<Pending> = Vec::new();
        if let Some(list) = array_field(ipam, "addresses", "ipam")? {
            for (i, a) in list.iter().enumerate() {
                let path = format!("ipam.addresses[{i}]");
                let m = as_object(a, &path)?;
                addrs.push(Pending::Text {
                    text: config::string_field(m, "address", &path)?.unwrap_or_default(),
                    gateway: config::ip_field(m, "gateway", &path)?,
                    path: format!("{path}.address"),
                });
            }
        }
        let string_list = |m: Option<&Map<String, Value>>, key: &str, parent: &str| -> Result<Vec<String>, CniError> {
            let Some(m) = m else { return Ok(Vec::new()) };
            let Some(a) = array_field(m, key, parent)? else {
                return Ok(Vec::new());
            };
            a.iter()
                .enumerate()
                .map(|(i, v)| as_str(v, &format!("{parent}.{key}[{i}]")).map(str::to_string))
                .collect()
        };
        let runtime_ips = string_list(object_field(config, "runtimeConfig", "")?, "ips", "runtimeConfig")?;
        let args_cni = match object_field(config, "args", "")? {
            Some(a) => object_field(a, "cni", "args")?,
            None => None,
        };
        let args_ips = string_list(args_cni, "ips", "args.cni")?;

        // CNI_ARGS
        let env = load_args(cni_args, &[("IP", ArgKind::Text), ("GATEWAY", ArgKind::Text)])?;
        if let Some(ips) = config::arg(&env, "IP").filter(|s| !s.is_empty()) {
            for item in ips.split(',') {
                let s = item.trim();
                let address = s.parse::<IpNet>().map_err(|_| {
                    config::bad_args(format!("the 'ip' field is expected to be in CIDR notation, got: '{s}'"))
                })?;
                addrs.push(Pending::Parsed(Address { address, gateway: None }));
            }
        }
        if let Some(gws) = config::arg(&env, "GATEWAY").filter(|s| !s.is_empty()) {
            for item in gws.split(',') {
                let gw = parse_ip(item.trim())
                    .ok_or_else(|| config::bad_args(format!("invalid gateway address: {item}")))?;
                // Only addresses parsed so far (those from CNI_ARGS) can match.
                for a in addrs.iter_mut() {
                    if let Pending::Parsed(a) = a {
                        if a.address.contains(gw) {
                            a.gateway = Some(gw);
                        }
                    }
                }
            }
        }
        let replace = |list: &[String], parent: &str| -> Result<Vec<Pending>, CniError> {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<IpNet>()
                        .map(|address| Pending::Parsed(Address { address, gateway: None }))
                        .map_err(|_| {
                            invalid(
                                &format!("{parent}[{i}]"),
                                format!("an entry in the 'ips' field is NOT in CIDR notation, got: '{s}'"),
                            )
                        })
                })
                .collect()
        };
        if !args_ips.is_empty() {
            addrs = replace(&args_ips, "args.cni.ips")?;
        }
        if !runtime_ips.is_empty() {
            addrs = replace(&runtime_ips, "runtimeConfig.ips")?;
        }

        let mut addresses = Vec::with_capacity(addrs.len());
        for p in addrs {
            addresses.push(match p {
                Pending::Parsed(a) => a,
                Pending::Text { text, gateway, path } => Address {
                    address: text.parse::<IpNet>().map_err(|_| {
                        invalid(
                            &path,
                            format!("the 'address' field is expected to be in CIDR notation, got: '{text}'"),
                        )
                    })?,
                    gateway,
                },
            });
        }
        let v4 = addresses.iter().filter(|a| a.address.is_ipv4()).count();
        let v6 = addresses.len() - v4;
        if (v4 > 1 || v6 > 1) && !version::at_least(&cni_version, "0.3.0").unwrap_or(false) {
            return Err(invalid(
                "cniVersion",
                format!("CNI version {cni_version} does not support more than 1 address per family"),
            ));
        }
        Ok(StaticConf { addresses, routes, dns })
    }
}

pub struct StaticIpam;

impl Stage for StaticIpam {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&super::config::STATIC_SCHEMA)
    }

    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        StaticConf::load(inv.config, &inv.rt.args, inv.version).map(|_| ())
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let conf = StaticConf::load(inv.config, &inv.rt.args, inv.version)?;
        let result = Result100 {
            cni_version: String::new(),
            interfaces: Vec::new(),
            ips: conf
                .addresses
                .iter()
                .map(|a| IpConfig {
                    interface: None,
                    address: a.address,
                    gateway: a.gateway,
                })
                .collect(),
            routes: conf.routes,
            dns: conf.dns,
        };
        CniResult::from_v1(result, inv.version)
    }

    /// Nothing was allocated, so nothing is released (the reference does not even read
    /// the config).
    fn del(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }

    /// Each configured address found in prevResult must carry the configured gateway.
    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        config::check_allowed(inv.config, inv.version)?;
        let conf = StaticConf::load(inv.config, &inv.rt.args, inv.version)?;
        let prev = match inv.prev_result {
            Some(p) => p.clone(),
            None => match field(inv.config, "prevResult") {
                Some(v) if !v.is_null() => CniResult::from_value(v, inv.version)?,
                _ => return Err(CniError::new(INVALID_CONFIG, "prevResult: Required prevResult missing")),
            },
        };
        let prev = prev.to_v1()?;
        for a in &conf.addresses {
            for ipc in &prev.ips {
                if a.address.addr != ipc.address.addr {
                    continue;
                }
                match a.gateway {
                    None => break,
                    Some(gw) if Some(gw) == ipc.gateway => break,
                    Some(_) => {
                        return Err(CniError::new(
                            INTERNAL,
                            format!(
                                "static: Failed to match addr {} on interface {}",
                                format_ip(&ipc.address.addr),
                                inv.rt.ifname
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnichain_engine::spec::args::RuntimeConf;
    use cnichain_engine::stage::{Command, Registry};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn conf(extra: Value) -> Map<String, Value> {
        let mut m = obj(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": {
            "type": "static",
            "addresses": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "fd00::5/64"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["8.8.8.8"]}
        }}));
        for (k, v) in obj(extra) {
            m.insert(k, v);
        }
        m
    }

    fn run(
        c: &Map<String, Value>,
        cmd: Command,
        args: &[(&str, &str)],
        prev: Option<&CniResult>,
    ) -> Result<Option<CniResult>, CniError> {
        let reg = Registry::new(vec![]);
        let rt = RuntimeConf {
            container_id: "c1".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let inv = Invocation {
            command: cmd,
            config: c,
            prev_result: prev,
            rt: &rt,
            version: "1.0.0",
            cni_path: &[],
            registry: &reg,
        };
        StaticIpam.run(&inv)
    }

    fn add(c: &Map<String, Value>, args: &[(&str, &str)]) -> Result<String, CniError> {
        Ok(run(c, Command::Add, args, None)?.unwrap().to_json())
    }

    #[test]
    fn ipam_static_result() {
        assert_eq!(
            add(&conf(json!({})), &[]).unwrap(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["8.8.8.8"]}}"#
        );
        let r = add(
            &conf(json!({})),
            &[("IP", "10.1.0.9/24, fd00::9/64"), ("GATEWAY", "10.1.0.254,10.1.0.253")],
        )
        .unwrap();
        assert!(r.contains(r#"{"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"address":"fd00::5/64"},{"address":"10.1.0.9/24","gateway":"10.1.0.253"},{"address":"fd00::9/64"}"#), "{r}");
        let r = add(
            &conf(json!({"args": {"cni": {"ips": ["10.1.0.7/24"]}}})),
            &[("IP", "10.1.0.9/24")],
        )
        .unwrap();
        assert!(r.contains(r#""ips":[{"address":"10.1.0.7/24"}]"#), "{r}");
        let r = add(
            &conf(json!({"args": {"cni": {"ips": ["10.1.0.7/24"]}}, "runtimeConfig": {"ips": ["10.1.0.8/24"]}})),
            &[],
        )
        .unwrap();
        assert!(r.contains(r#""ips":[{"address":"10.1.0.8/24"}]"#), "{r}");
        let mut none = conf(json!({}));
        none.insert("ipam".into(), json!({"type": "static"}));
        assert_eq!(add(&none, &[]).unwrap(), r#"{"cniVersion":"1.0.0","dns":{}}"#);
    }

    #[test]
    fn ipam_static_errors() {
        let e = add(&conf(json!({})), &[("IP", "10.1.0.9")]).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "the 'ip' field is expected to be in CIDR notation, got: '10.1.0.9'")
        );
        let e = add(&conf(json!({})), &[("GATEWAY", "x")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "invalid gateway address: x"));
        let e = add(&conf(json!({})), &[("FOO", "1")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(add(&conf(json!({})), &[("FOO", "1"), ("IgnoreUnknown", "1")]).is_ok());
        let e = add(&conf(json!({"runtimeConfig": {"ips": ["10.1.0.8"]}})), &[]).unwrap_err();
        assert_eq!(
            (e.code, super::config::with_field(&e).as_str()),
            (
                7,
                "runtimeConfig.ips[0]: an entry in the 'ips' field is NOT in CIDR notation, got: '10.1.0.8'"
            )
        );
        let mut c = conf(json!({}));
        c.insert("ipam".into(), json!({"addresses": [{"address": "10.1.0.5"}]}));
        let e = add(&c, &[]).unwrap_err();
        assert_eq!(
            (e.code, super::config::with_field(&e).as_str()),
            (
                7,
                "ipam.addresses[0].address: the 'address' field is expected to be in CIDR notation, got: '10.1.0.5'"
            )
        );
        c.insert(
            "ipam".into(),
            json!({"addresses": [{"address": "10.1.0.5/24", "gateway": "x"}]}),
        );
        assert_eq!(
            super::config::with_field(&add(&c, &[]).unwrap_err()),
            "ipam.addresses[0].gateway: invalid IP address: x"
        );
        c.insert(
            "ipam".into(),
            json!({"addresses": [{"address": "10.1.0.5/24"}, {"address": "10.1.0.6/24"}]}),
        );
        c.insert("cniVersion".into(), json!("0.2.0"));
        assert_eq!(
            add(&c, &[]).unwrap_err().msg,
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        c.remove("ipam");
        assert_eq!(add(&c, &[]).unwrap_err().msg, "IPAM config missing 'ipam' key");
        // DEL never fails
        assert!(run(&c, Command::Del, &[], None).is_ok());
    }

    #[test]
    fn ipam_static_check() {
        let c = conf(json!({}));
        let e = run(&c, Command::Check, &[], None).unwrap_err();
        assert!(e.msg.contains("Required prevResult missing"));
        let prev = |gw: &str| {
            CniResult::from_value(
                &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": gw}]}),
                "1.0.0",
            )
            .unwrap()
        };
        assert!(run(&c, Command::Check, &[], Some(&prev("10.1.0.1"))).is_ok());
        let e = run(&c, Command::Check, &[], Some(&prev("10.1.0.2"))).unwrap_err();
        assert_eq!(e.msg, "static: Failed to match addr 10.1.0.5 on interface eth0");
        // an address that is not in prevResult at all is not an error (as the reference)
        let other = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.5/24"}]}),
            "1.0.0",
        )
        .unwrap();
        assert!(run(&c, Command::Check, &[], Some(&other)).is_ok());
        // prevResult from the config when the engine passes none
        let mut c2 = c.clone();
        c2.insert("prevResult".into(), prev("10.1.0.2").to_value());
        assert!(run(&c2, Command::Check, &[], None).is_err());
    }
}
