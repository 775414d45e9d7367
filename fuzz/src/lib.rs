//! The invariants the fuzz targets check, one function per target. The engine's property
//! tests (engine/tests/prop_invariants.rs) include this same file, so `cargo test` checks
//! the same things on generated inputs. Each function panics, with the input's story in
//! the message, when an invariant does not hold; on any input it returns otherwise.
//!
//! * [`result_passing`]: a plugin's output of any version, read as libcni reads it, then
//!   converted to every version and back, threaded into the next plugin's request.
//! * [`conflist`]: loading and request derivation; the validator explains every list the
//!   engine refuses.
//! * [`cni_args`]: CNI_ARGS, CAP_ARGS and identifier rules.
//! * [`cache`]: reading result-cache files, and writing back what was read.

#![allow(dead_code)]

use cnichain_engine::cache::{parse_entry, Cache, Lookup};
use cnichain_engine::exec::parse_result;
use cnichain_engine::request;
use cnichain_engine::spec::args::{format_cni_args, parse_capability_args, parse_cni_args, RuntimeConf};
use cnichain_engine::spec::conflist::{NetConfList, PluginConf};
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::ids;
use cnichain_engine::spec::result::{CniResult, Result020, Route};
use cnichain_engine::spec::version::{self, Family, SUPPORTED};
use cnichain_engine::stage::Registry;
use cnichain_engine::validate::{self, Code, Kind, Options};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;

/// The codes a parse error may have: 6 (decoding), 7 (invalid config), 1 (version).
pub const PARSE_CODES: &[u32] = &[1, 6, 7];

fn show(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn assert_parse_error(e: &CniError, what: &str, data: &[u8]) {
    assert!(
        PARSE_CODES.contains(&e.code),
        "{what}: a parse error must have code 1, 6 or 7, got {} ({}) for {:?}",
        e.code,
        e.msg,
        show(data)
    );
}

/// The fallback version a byte selects: one of SUPPORTED, or "".
pub fn fallback_for(b: u8) -> &'static str {
    let i = b as usize % (SUPPORTED.len() + 1);
    SUPPORTED.get(i).copied().unwrap_or("")
}

/// Target `result_passing`: the first byte picks the version a plugin's config had (the
/// fallback for a result without one), the rest is what the plugin printed.
pub fn result_passing(data: &[u8]) {
    let Some((b, body)) = data.split_first() else { return };
    let fallback = fallback_for(*b);
    // what the exec fallback does with a plugin's stdout
    let via_exec = parse_result(body, fallback);
    // what the cache and CHECK do with a stored result
    let via_value = serde_json::from_slice::<Value>(body).map(|v| CniResult::from_value(&v, fallback));
    let r = match via_exec {
        Ok(r) => r,
        Err(e) => {
            assert_parse_error(&e, "reading a result", body);
            if let Ok(Ok(r)) = via_value {
                panic!(
                    "parse_result refused what from_value read: {e} / {r:?} for {:?}",
                    show(body)
                );
            }
            return;
        }
    };
    if let Ok(v) = via_value {
        let v = v.unwrap_or_else(|e| panic!("from_value refused what parse_result read: {e} for {:?}", show(body)));
        assert_eq!(v, r, "parse_result and from_value disagree on {:?}", show(body));
    }
    check_result(&r, body);
}

/// Whether converting `r` to a 0.1/0.2 version must fail (no IP it can carry).
fn no_ip_for_020(r: &CniResult) -> bool {
    match r {
        CniResult::V02(_) => false,
        CniResult::V04(x) => !x.ips.iter().any(|i| i.version == "4" || i.version == "6"),
        CniResult::V1(x) => x.ips.is_empty(),
    }
}

/// The invariants of one parsed result.
pub fn check_result(r: &CniResult, input: &[u8]) {
    let v = r.version().to_string();
    assert!(version::is_supported(&v), "a parsed result has version {v:?}");
    // converting to the same version is the identity
    let same = r
        .convert(&v)
        .unwrap_or_else(|e| panic!("{v} -> {v}: {e} for {:?}", show(input)));
    assert_eq!(&same, r, "{v} -> {v} is not the identity for {:?}", show(input));
    // what we print, we read back
    round_trip(r, input);
    for to in SUPPORTED {
        let must_fail = version::family(to).ok() == Some(Family::V02) && no_ip_for_020(r);
        match r.convert(to) {
            Ok(c) => {
                assert!(
                    !must_fail,
                    "{v} -> {to} converted a result without a usable IP: {:?}",
                    show(input)
                );
                assert_eq!(c.version(), *to, "{v} -> {to} gave version {}", c.version());
                round_trip(&c, input);
                threading(&c, to, input);
                if version::compare(to, &v).is_ok_and(|o| o.is_gt()) {
                    up_and_down(r, &c, input);
                }
            }
            Err(e) => {
                assert!(must_fail, "{v} -> {to} failed: {e} for {:?}", show(input));
                assert_eq!(e.code, 1, "{v} -> {to}: {e}");
            }
        }
    }
}

fn round_trip(r: &CniResult, input: &[u8]) {
    for text in [r.to_json(), r.to_json_pretty()] {
        let back = CniResult::from_slice(text.as_bytes(), "")
            .unwrap_or_else(|e| panic!("cannot read back {text} ({e}) for {:?}", show(input)));
        assert_eq!(&back, r, "printed {text} reads back differently, for {:?}", show(input));
    }
}

/// The result as the next plugin gets it: converted to the list's version, in the
/// request's prevResult, read by a plugin (libcni's fallback: the config's version),
/// and passed through by a plugin that prints its prevResult.
fn threading(c: &CniResult, to: &str, input: &[u8]) {
    let list_json = format!(
        r#"{{"cniVersion":"{to}","name":"fuzz","plugins":[{{"type":"bridge"}},{{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#
    );
    let list = NetConfList::from_bytes(list_json.as_bytes()).unwrap_or_else(|e| panic!("{list_json}: {e}"));
    let mut rt = RuntimeConf {
        container_id: "c1".into(),
        netns: "/run/netns/x".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let conf = request::build(&list, &list.plugins[1], Some(c), &rt);
    assert_eq!(conf.get("cniVersion"), Some(&json!(to)));
    assert_eq!(conf.get("name"), Some(&json!("fuzz")));
    assert_eq!(conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    let stdin = serde_json::to_vec(&conf).expect("a request serializes");
    let read: Value = serde_json::from_slice(&stdin).expect("a request is JSON");
    let prev = CniResult::from_value(&read["prevResult"], to)
        .unwrap_or_else(|e| panic!("the next plugin cannot read its prevResult ({e}) for {:?}", show(input)));
    assert_eq!(
        &prev,
        c,
        "prevResult changed on the way into the request, for {:?}",
        show(input)
    );
    let passed = parse_result(prev.to_json().as_bytes(), to)
        .unwrap_or_else(|e| panic!("a passed-through prevResult does not parse ({e}) for {:?}", show(input)));
    assert_eq!(&passed, c, "a passed-through prevResult changed, for {:?}", show(input));
    // the request itself is a valid plugin config
    let again = PluginConf::from_map(read.as_object().cloned().unwrap_or_default(), "request")
        .unwrap_or_else(|e| panic!("a derived request is not a plugin config: {e}"));
    assert_eq!(again.plugin_type, "portmap");
}

type Addr = (IpAddr, u8, Option<IpAddr>);

fn addr_of(n: &cnichain_engine::spec::ipnet::IpNet, gw: Option<IpAddr>) -> Addr {
    (n.addr, n.prefix, gw)
}

fn dst_gw(r: &Route) -> (String, Option<IpAddr>) {
    (r.dst.to_string(), r.gw)
}

/// Converting `low` up to `high` and back down keeps everything `low` can represent.
fn up_and_down(low: &CniResult, high: &CniResult, input: &[u8]) {
    let lv = low.version().to_string();
    let hv = high.version().to_string();
    let ctx = || format!("{lv} -> {hv} -> {lv} for {:?}", show(input));
    let back = match high.convert(&lv) {
        Ok(b) => b,
        Err(e) => {
            // only a 0.1/0.2 result without any IP cannot come back
            let empty020 = matches!(
                low,
                CniResult::V02(Result020 {
                    ip4: None,
                    ip6: None,
                    ..
                })
            );
            assert!(empty020, "{}: {e}", ctx());
            return;
        }
    };
    match (low, &back) {
        (CniResult::V1(a), CniResult::V1(b)) => assert_eq!(a, b, "{}", ctx()),
        (CniResult::V04(a), CniResult::V04(b)) => {
            assert_eq!(a.interfaces, b.interfaces, "interfaces: {}", ctx());
            assert_eq!(a.routes, b.routes, "routes: {}", ctx());
            assert_eq!(a.dns, b.dns, "dns: {}", ctx());
            assert_eq!(a.ips.len(), b.ips.len(), "ips: {}", ctx());
            for (x, y) in a.ips.iter().zip(&b.ips) {
                assert_eq!(
                    (addr_of(&x.address, x.gateway), x.interface),
                    (addr_of(&y.address, y.gateway), y.interface),
                    "ips: {}",
                    ctx()
                );
                // the family a 0.4 entry declares is kept when it is the address's own
                let own = if x.address.is_ipv4() { "4" } else { "6" };
                if x.version == own {
                    assert_eq!(y.version, own, "ips version: {}", ctx());
                }
            }
        }
        (CniResult::V02(a), CniResult::V02(b)) => {
            assert_eq!(a.dns, b.dns, "dns: {}", ctx());
            // An ip4 object holding an IPv6 address (or the reverse) is not something 0.2
            // represents: on the way through 1.x the family comes from the address, so
            // such an entry moves slot and may displace the other one (as in libcni).
            let canonical =
                a.ip4.as_ref().is_none_or(|x| x.ip.is_ipv4()) && a.ip6.as_ref().is_none_or(|x| x.ip.is_ipv6());
            for (slot, x, y, v4) in [("ip4", &a.ip4, &b.ip4, true), ("ip6", &a.ip6, &b.ip6, false)] {
                let Some(x) = x else { continue };
                if !canonical {
                    continue;
                }
                let y = y.as_ref().unwrap_or_else(|| panic!("{slot} lost: {}", ctx()));
                assert_eq!(
                    addr_of(&x.ip, x.gateway),
                    addr_of(&y.ip, y.gateway),
                    "{slot}: {}",
                    ctx()
                );
                // 0.2 routes carry dst and gw; those of the slot's family come back
                let want: Vec<_> = x.routes.iter().filter(|r| r.dst.is_ipv4() == v4).map(dst_gw).collect();
                let got: Vec<_> = y.routes.iter().map(dst_gw).collect();
                for w in &want {
                    assert!(got.contains(w), "{slot} route {w:?} lost: {}", ctx());
                }
            }
        }
        (a, b) => panic!("layout changed: {a:?} came back as {b:?}: {}", ctx()),
    }
}

/// Target `conflist`: loading (list and single .conf), request derivation for every
/// verb, and the validator on the same bytes.
pub fn conflist(data: &[u8]) {
    match NetConfList::from_bytes(data) {
        Ok(list) => check_list(&list, data),
        Err(e) => assert_parse_error(&e, "loading a conflist", data),
    }
    match NetConfList::from_single_conf(data) {
        Ok(list) => check_list(&list, data),
        Err(e) => assert_parse_error(&e, "loading a .conf", data),
    }
    check_validator(data, Kind::List);
    check_validator(data, Kind::Single);
}

fn check_list(list: &NetConfList, data: &[u8]) {
    assert!(!list.plugins.is_empty());
    let declared_or_listed = list.cni_version == list.declared_version || list.cni_versions.contains(&list.cni_version);
    assert!(
        declared_or_listed,
        "selected {:?} is in neither field: {:?}",
        list.cni_version,
        show(data)
    );
    let mut rt = RuntimeConf {
        container_id: "c1".into(),
        netns: "/run/netns/x".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    rt.capability_args.insert("portMappings".into(), json!([]));
    rt.capability_args.insert("mac".into(), json!("0a:58:0a:01:00:05"));
    let prev = CniResult::default();
    for p in &list.plugins {
        for prev in [None, Some(&prev)] {
            let conf = request::build(list, p, prev, &rt);
            assert_eq!(conf.get("name"), Some(&Value::String(list.name.clone())));
            assert_eq!(conf.get("cniVersion"), Some(&Value::String(list.cni_version.clone())));
            for (k, v) in &p.raw {
                if !matches!(k.as_str(), "name" | "cniVersion" | "prevResult" | "runtimeConfig") {
                    assert_eq!(conf.get(k), Some(v), "key {k} changed in the request: {:?}", show(data));
                }
            }
            if let Some(Value::Object(rc)) = conf.get("runtimeConfig") {
                if p.raw.get("runtimeConfig") != conf.get("runtimeConfig") {
                    for k in rc.keys() {
                        assert!(
                            p.capability_enabled(k),
                            "runtimeConfig.{k} given to a plugin that did not enable it"
                        );
                        assert!(rt.capability_args.contains_key(k));
                    }
                }
            }
            let text = serde_json::to_vec(&conf).expect("a request serializes");
            let again = PluginConf::from_bytes(&text, "request")
                .unwrap_or_else(|e| panic!("a derived request does not parse back: {e}: {:?}", show(data)));
            assert_eq!(again.plugin_type, p.plugin_type);
        }
        let gc = request::build_gc(list, p, Some(&[]));
        assert!(gc.contains_key("cni.dev/valid-attachments"));
        let st = request::build_status(list, p);
        assert_eq!(st.get("cniVersion"), Some(&Value::String(list.cni_version.clone())));
    }
}

/// The validator never panics, never leaves an engine refusal unexplained, and puts
/// every finding inside the file.
fn check_validator(data: &[u8], kind: Kind) {
    let reg = Registry::new(Vec::new());
    let opts = Options {
        registry: &reg,
        resolve: false,
        exec_versions: false,
        version_timeout: None,
    };
    let diags = validate::validate_bytes("fuzz", data, kind, opts);
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    for d in &diags {
        assert_ne!(
            d.code,
            Code::EngineRejects,
            "the engine refuses {:?} ({kind:?}) and no check explains why: {}",
            show(data),
            d.message
        );
        if d.line > 0 {
            let line = lines
                .get(d.line - 1)
                .unwrap_or_else(|| panic!("{d:?} is past the end of {:?}", show(data)));
            assert!(
                d.col <= line.chars().count() + 1,
                "{d:?} is past the end of its line in {:?}",
                show(data)
            );
        }
        let _ = d.render();
    }
}

/// Target `cni_args`: CNI_ARGS round-trips, CAP_ARGS and the identifier rules fail with
/// their codes.
pub fn cni_args(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match parse_cni_args(&s) {
        Ok(pairs) => {
            assert_eq!(format_cni_args(&pairs), s, "CNI_ARGS does not round-trip");
            for (k, v) in &pairs {
                assert!(!k.is_empty() && !v.is_empty());
                assert!(!k.contains('=') && !k.contains(';') && !v.contains('=') && !v.contains(';'));
            }
        }
        Err(e) => assert_eq!(e.code, 4, "CNI_ARGS error {e} for {s:?}"),
    }
    if let Err(e) = parse_capability_args(&s, "CAP_ARGS") {
        assert_eq!(e.code, 6, "CAP_ARGS error {e} for {s:?}");
    }
    if let Err(e) = ids::validate_container_id(&s) {
        assert!(e.code == 3 || e.code == 4, "{e}");
    }
    if let Err(e) = ids::validate_ifname(&s) {
        assert_eq!(e.code, 4, "{e}");
    } else {
        assert!(!s.is_empty() && s.len() <= 15 && !s.contains('/'));
    }
    match ids::validate_network_name(&s) {
        Err(e) => assert_eq!(e.code, 7, "{e}"),
        Ok(()) => assert!(!s.contains('/') && !s.starts_with('.'), "{s:?} would be a path"),
    }
    if let Err(e) = ids::validate_plugin_type(&s, "type") {
        assert_eq!(e.code, 7, "{e}");
    } else {
        assert!(!s.contains('/') && s != "." && s != "..");
    }
}

/// JSON equality, but floats equal within a few units in the last place (serde_json
/// without `float_roundtrip` misreads some decimal floats by one ulp).
pub fn json_eq_loose(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq_loose(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq_loose(v, w)))
        }
        _ => a == b,
    }
}

fn scratch_cache() -> Cache {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let tid = format!("{:?}", std::thread::current().id());
    let tid: String = tid.chars().filter(char::is_ascii_alphanumeric).collect();
    Cache::new(base.join(format!("cnichain-fuzz-cache-{}-{tid}", std::process::id())))
}

/// Target `cache`: a cache file is read or refused, never panics; a readable result is
/// what DEL and CHECK would use; what was read writes back and reads the same.
pub fn cache(data: &[u8]) {
    let Ok(entry) = parse_entry(data) else { return };
    let Some(v) = &entry.result else { return };
    for list_version in ["0.4.0", "1.0.0", "1.1.0"] {
        // what CHECK and DEL do with a cached result
        match CniResult::from_value(v, list_version).and_then(|r| r.convert(list_version)) {
            Ok(r) => assert_eq!(r.version(), list_version),
            Err(e) => assert_parse_error(&e, "a cached result", data),
        }
    }
    let Ok(result) = CniResult::from_value(v, "1.1.0") else {
        return;
    };
    let cache = scratch_cache();
    let rt = RuntimeConf {
        container_id: "c1".into(),
        netns: entry.netns.clone(),
        ifname: "eth0".into(),
        args: entry.cni_args.clone(),
        capability_args: entry.capability_args.clone(),
    };
    if let Err(e) = cache.write("n", &rt, &entry.config, &result) {
        panic!("writing back a cache entry failed: {e}");
    }
    let back = cache.read("n", "c1", "eth0");
    let _ = std::fs::remove_dir_all(&cache.dir);
    match back {
        Lookup::Found(e) => {
            assert_eq!(e.config, entry.config);
            assert_eq!(e.cni_args, entry.cni_args);
            // exact equality fails today for some floats: engine bug, see
            // prop_invariants::floats_pass_through_unchanged
            let (a, b) = (
                Value::Object(e.capability_args.clone()),
                Value::Object(entry.capability_args.clone()),
            );
            assert!(
                json_eq_loose(&a, &b),
                "capabilityArgs changed on a round trip: {a} / {b}"
            );
            assert_eq!(e.netns, entry.netns);
            let again = e.result.map(|r| CniResult::from_value(&r, "1.1.0"));
            assert_eq!(again, Some(Ok(result)), "the cached result changed on a round trip");
        }
        other => panic!("a written cache entry reads back as {other:?}"),
    }
}
