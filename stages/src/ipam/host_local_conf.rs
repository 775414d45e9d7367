//! host-local's request config (see `host_local` for the keys), loaded and checked as
//! the reference's `LoadIPAMConfig` does, before anything is written.

use super::config::{self, array_field, as_object, field, invalid, load_args, object_field, string_field, ArgKind};
use super::range::{parse_range_sets, RangeSet, RawRange};
use cnichain_engine::spec::error::{CniError, INVALID_CONFIG};
use cnichain_engine::spec::result::Route;
use cnichain_engine::spec::version;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The host-local request config, validated and canonical.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    pub name: String,
    pub cni_version: String,
    /// "" means the default directory.
    pub data_dir: String,
    pub resolv_conf: Option<String>,
    pub routes: Vec<Route>,
    pub ranges: Vec<RangeSet>,
    /// Requested addresses, in the order CNI_ARGS, args.cni.ips, runtimeConfig.ips.
    pub ip_args: Vec<IpAddr>,
}

impl HostLocalConf {
    /// The reference's `LoadIPAMConfig`: everything is checked before anything is written.
    pub fn load(
        config: &Map<String, Value>,
        cni_args: &[(String, String)],
        selected_version: &str,
    ) -> Result<HostLocalConf, CniError> {
        // --- the JSON itself
        let name = config::network_name(config)?;
        let cni_version = config::cni_version(config, selected_version)?;
        let ipam = match field(config, "ipam") {
            None | Some(Value::Null) => return Err(config::invalid("ipam", "IPAM config missing 'ipam' key")),
            Some(v) => as_object(v, "ipam")?,
        };
        let data_dir = string_field(ipam, "dataDir", "ipam")?.unwrap_or_default();
        let resolv_conf = string_field(ipam, "resolvConf", "ipam")?.filter(|s| !s.is_empty());
        let range_from_file = string_field(ipam, "rangeFromFile", "ipam")?.filter(|s| !s.is_empty());
        let routes = config::routes(ipam, "ipam")?;
        let legacy = RawRange::parse(&Value::Object(ipam.clone()), "ipam")?;
        let ipam_ranges = parse_range_sets(field(ipam, "ranges"), "ipam.ranges")?;

        let runtime = object_field(config, "runtimeConfig", "")?;
        let mut runtime_ranges = Vec::new();
        let mut runtime_ips = Vec::new();
        if let Some(rc) = runtime {
            runtime_ranges = parse_range_sets(field(rc, "ipRanges"), "runtimeConfig.ipRanges")?;
            if let Some(ips) = array_field(rc, "ips", "runtimeConfig")? {
                for (i, v) in ips.iter().enumerate() {
                    runtime_ips.push(config::requested_ip(v, &format!("runtimeConfig.ips[{i}]"))?);
                }
            }
        }
        let mut args_ips = Vec::new();
        if let Some(args) = object_field(config, "args", "")? {
            if let Some(cni) = object_field(args, "cni", "args")? {
                if let Some(ips) = array_field(cni, "ips", "args.cni")? {
                    for (i, v) in ips.iter().enumerate() {
                        args_ips.push(config::requested_ip(v, &format!("args.cni.ips[{i}]"))?);
                    }
                }
            }
        }

        // --- CNI_ARGS
        let mut ip_args = Vec::new();
        let env = load_args(cni_args, &[("IP", ArgKind::Text)])?;
        if let Some(v) = config::arg(&env, "IP") {
            if !v.is_empty() {
                let ip = config::parse_ip_or_cidr(v).ok_or_else(|| {
                    config::bad_args(format!(
                        "ARGS: error parsing value of pair \"IP={v}\": invalid IP address {v}"
                    ))
                })?;
                ip_args.push(ip);
            }
        }
        ip_args.extend(args_ips);
        ip_args.extend(runtime_ips);

        // --- range sets: runtime ones, the legacy one, then ipam.ranges
        let mut raw_sets: Vec<(Vec<RawRange>, String)> = runtime_ranges;
        if legacy.subnet.is_some() {
            raw_sets.push((vec![legacy], "ipam".to_string()));
        }
        raw_sets.extend(ipam_ranges);
        if raw_sets.is_empty() {
            if let Some(file) = &range_from_file {
                raw_sets.push((vec![range_from_file_range(file)?], "ipam.rangeFromFile".to_string()));
            }
        }
        if raw_sets.is_empty() {
            return Err(invalid("ipam.ranges", "no IP ranges specified"));
        }
        let mut ranges = Vec::with_capacity(raw_sets.len());
        let (mut v4, mut v6) = (0, 0);
        for (i, (raws, path)) in raw_sets.iter().enumerate() {
            let set = RangeSet::canonicalize(raws, path).map_err(|e| e.context(format!("invalid range set {i}")))?;
            if set.is_ipv4() {
                v4 += 1;
            } else {
                v6 += 1;
            }
            ranges.push(set);
        }
        if (v4 > 1 || v6 > 1) && !version::at_least(&cni_version, "0.3.0").unwrap_or(false) {
            return Err(invalid(
                "cniVersion",
                format!("CNI version {cni_version} does not support more than 1 address per family"),
            ));
        }
        for (i, a) in ranges.iter().enumerate() {
            for (j, b) in ranges.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(
                        CniError::new(INVALID_CONFIG, format!("range set {i} overlaps with {j}"))
                            .with_details(format!("{} and {}", a.path, b.path)),
                    );
                }
            }
        }
        Ok(HostLocalConf {
            name,
            cni_version,
            data_dir,
            resolv_conf,
            routes,
            ranges,
            ip_args,
        })
    }
}

/// upstream's `rangeFromFile`: a file holding one range object.
fn range_from_file_range(file: &str) -> Result<RawRange, CniError> {
    let bytes = std::fs::read(file).map_err(|e| {
        CniError::new(
            cnichain_engine::spec::error::IO_FAILURE,
            format!("ipam.rangeFromFile: failed to read rangeFromFile {file:?}: {e}"),
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            "ipam.rangeFromFile",
            format!("err: {e}, failed to parse rangeFromFile {file:?} as a Range"),
        )
    })?;
    let r = RawRange::parse(&v, "ipam.rangeFromFile")?;
    if r.subnet.is_none() {
        return Err(invalid(
            "ipam.rangeFromFile",
            format!("failed to parse rangeFromFile {file:?} as a Range"),
        ));
    }
    Ok(r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    pub(crate) fn conf(ipam: Value, extra: Value) -> Map<String, Value> {
        let mut m = obj(json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam}));
        for (k, v) in obj(extra) {
            m.insert(k, v);
        }
        m
    }

    pub(crate) fn load(c: &Map<String, Value>, args: &[(&str, &str)]) -> Result<HostLocalConf, CniError> {
        let a: Vec<(String, String)> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HostLocalConf::load(c, &a, "1.0.0")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipam_config_range_order_and_sources() {
        let c = conf(
            json!({"type": "host-local", "subnet": "10.1.0.0/24", "ranges": [[{"subnet": "fd00::/64"}]],
                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/x", "resolvConf": "/r"}),
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]], "ips": ["10.1.0.7/24"]},
                   "args": {"cni": {"ips": ["fd00::7"]}}}),
        );
        let h = load(&c, &[("IP", "10.9.0.9"), ("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")]).unwrap();
        let sets: Vec<String> = h.ranges.iter().map(|s| s.path.clone()).collect();
        assert_eq!(sets, ["runtimeConfig.ipRanges[0]", "ipam", "ipam.ranges[0]"]);
        assert_eq!(h.ip_args, vec![ip("10.9.0.9"), ip("fd00::7"), ip("10.1.0.7")]);
        assert_eq!((h.data_dir.as_str(), h.resolv_conf.as_deref()), ("/x", Some("/r")));
        assert_eq!(h.routes.len(), 1);
        assert_eq!(h.name, "net1");
    }

    #[test]
    fn ipam_config_errors() {
        type Case = (Map<String, Value>, Vec<(&'static str, &'static str)>, u32, &'static str);
        let cases: Vec<Case> = vec![
            (
                obj(json!({"cniVersion": "1.0.0", "name": "n"})),
                vec![],
                7,
                "ipam: IPAM config missing 'ipam' key",
            ),
            (
                conf(json!({"type": "host-local"}), json!({})),
                vec![],
                7,
                "ipam.ranges: no IP ranges specified",
            ),
            (
                conf(json!({"ranges": []}), json!({})),
                vec![],
                7,
                "ipam.ranges: no IP ranges specified",
            ),
            (
                conf(json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]}), json!({})),
                vec![],
                7,
                "invalid range set 0: Network 10.1.0.0/31 too small to allocate from",
            ),
            (
                conf(
                    json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/25"}]]}),
                    json!({}),
                ),
                vec![],
                7,
                "range set 0 overlaps with 1",
            ),
            (
                conf(
                    json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}),
                    json!({"cniVersion": "0.2.0"}),
                ),
                vec![],
                7,
                "cniVersion: CNI version 0.2.0 does not support more than 1 address per family",
            ),
            (
                conf(
                    json!({"subnet": "10.1.0.0/24"}),
                    json!({"runtimeConfig": {"ips": ["x"]}}),
                ),
                vec![],
                7,
                "runtimeConfig.ips[0]: invalid IP address x",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({"runtimeConfig": {"ips": "x"}})),
                vec![],
                7,
                "runtimeConfig.ips: expected an array, got string",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({"args": {"cni": {"ips": [5]}}})),
                vec![],
                7,
                "args.cni.ips[0]: expected a string, got number",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({"args": 5})),
                vec![],
                7,
                "args: expected an object, got number",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24", "dataDir": []}), json!({})),
                vec![],
                7,
                "ipam.dataDir: expected a string, got array",
            ),
            (
                conf(json!("x"), json!({})),
                vec![],
                7,
                "ipam: expected an object, got string",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({"name": "../evil"})),
                vec![],
                7,
                "invalid characters in network name",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({})),
                vec![("IP", "x")],
                4,
                "ARGS: error parsing value of pair \"IP=x\": invalid IP address x",
            ),
            (
                conf(json!({"subnet": "10.1.0.0/24"}), json!({})),
                vec![("FOO", "1")],
                4,
                "ARGS: unknown args [\"FOO=1\"]",
            ),
        ];
        for (c, args, code, msg) in cases {
            let e = load(&c, &args).unwrap_err();
            assert_eq!(e.code, code, "{c:?}: {e:?}");
            let shown = config::with_field(&e);
            assert!(
                e.msg.starts_with(msg) || shown.starts_with(msg),
                "{shown:?} does not start with {msg:?}"
            );
        }
        // dual stack is fine at 0.2.0
        let c = conf(
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}),
            json!({"cniVersion": "0.2.0"}),
        );
        assert!(load(&c, &[]).is_ok());
    }
}
