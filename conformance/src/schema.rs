//! Result and error-object shapes per spec version (§5), checked on the raw JSON. The
//! engine's decoder (what libcni accepts) is the first gate; these are the spec's words
//! on top of it: required keys, types, address syntax, index ranges.

use cnichain_engine::spec::ipnet::parse_ip;
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::spec::version::{self, Family};
use serde_json::{Map, Value};

fn cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, p)) => {
            let Some(addr) = parse_ip(ip) else { return false };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| n <= max)
        }
        None => false,
    }
}

fn mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() >= 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct P(Vec<String>);

impl P {
    fn str_opt(&mut self, o: &Map<String, Value>, k: &str, at: &str) -> Option<String> {
        match o.get(k) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.0.push(format!("{at}.{k} must be a string, is {other}"));
                None
            }
        }
    }
    fn ip_opt(&mut self, o: &Map<String, Value>, k: &str, at: &str) {
        if let Some(s) = self.str_opt(o, k, at) {
            if parse_ip(&s).is_none() {
                self.0.push(format!("{at}.{k} {s:?} is not an IP address"));
            }
        }
    }
    fn cidr_req(&mut self, o: &Map<String, Value>, k: &str, at: &str) -> Option<String> {
        match self.str_opt(o, k, at) {
            Some(s) if cidr(&s) => Some(s),
            Some(s) => {
                self.0.push(format!("{at}.{k} {s:?} is not an address/prefix"));
                None
            }
            None => {
                self.0.push(format!("{at}.{k} is required"));
                None
            }
        }
    }
    fn int_opt(&mut self, o: &Map<String, Value>, k: &str, at: &str) -> Option<i64> {
        match o.get(k) {
            None => None,
            Some(v) => match v.as_i64() {
                Some(n) => Some(n),
                None => {
                    self.0.push(format!("{at}.{k} must be an integer, is {v}"));
                    None
                }
            },
        }
    }
    fn objects<'v>(&mut self, o: &'v Map<String, Value>, k: &str) -> Vec<&'v Map<String, Value>> {
        match o.get(k) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, x)| {
                    let m = x.as_object();
                    if m.is_none() {
                        self.0.push(format!("{k}[{i}] must be an object"));
                    }
                    m
                })
                .collect(),
            Some(other) => {
                self.0.push(format!("{k} must be an array, is {other}"));
                Vec::new()
            }
        }
    }
    fn routes(&mut self, list: &[&Map<String, Value>], at: &str, v11: bool) {
        for (i, r) in list.iter().enumerate() {
            let at = format!("{at}[{i}]");
            self.cidr_req(r, "dst", &at);
            self.ip_opt(r, "gw", &at);
            if v11 {
                for k in ["mtu", "advmss", "priority", "table", "scope"] {
                    self.int_opt(r, k, &at);
                }
            }
        }
    }
    fn dns(&mut self, o: &Map<String, Value>) {
        match o.get("dns") {
            None | Some(Value::Null) => {}
            Some(Value::Object(d)) => {
                self.str_opt(d, "domain", "dns");
                for k in ["nameservers", "search", "options"] {
                    match d.get(k) {
                        None | Some(Value::Null) => {}
                        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                        Some(other) => self.0.push(format!("dns.{k} must be an array of strings, is {other}")),
                    }
                }
            }
            Some(other) => self.0.push(format!("dns must be an object, is {other}")),
        }
    }
}

/// What is wrong with `v` as an ADD result of version `want` (empty: nothing).
pub fn result_problems(v: &Value, want: &str) -> Vec<String> {
    let mut p = P(Vec::new());
    let Some(o) = v.as_object() else {
        return vec![format!("the result must be a JSON object, is {v}")];
    };
    match o.get("cniVersion") {
        Some(Value::String(s)) if s == want => {}
        Some(other) => {
            p.0.push(format!("cniVersion must be the config's {want:?}, is {other}"))
        }
        None => p.0.push(format!("cniVersion is required (the config's {want:?})")),
    }
    // What libcni can read at all (its own decoder, e.g. type errors inside).
    if let Err(e) = CniResult::from_value(v, want) {
        p.0.push(format!("libcni cannot decode it: {}", e.msg));
    }
    let fam = version::family(want).unwrap_or(Family::V1);
    let v11 = want == "1.1.0";
    match fam {
        Family::V02 => {
            for k in ["ip4", "ip6"] {
                match o.get(k) {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(ip)) => {
                        p.cidr_req(ip, "ip", k);
                        p.ip_opt(ip, "gateway", k);
                        let rs = p.objects(ip, "routes");
                        p.routes(&rs, &format!("{k}.routes"), false);
                    }
                    Some(other) => p.0.push(format!("{k} must be an object, is {other}")),
                }
            }
        }
        Family::V04 | Family::V1 => {
            let ifs = p.objects(o, "interfaces");
            for (i, itf) in ifs.iter().enumerate() {
                let at = format!("interfaces[{i}]");
                match p.str_opt(itf, "name", &at) {
                    Some(n) if !n.is_empty() => {}
                    _ => p.0.push(format!("{at}.name is required")),
                }
                if let Some(m) = p.str_opt(itf, "mac", &at) {
                    if !m.is_empty() && !mac(&m) {
                        p.0.push(format!("{at}.mac {m:?} is not a MAC address"));
                    }
                }
                p.str_opt(itf, "sandbox", &at);
                if fam == Family::V1 {
                    p.int_opt(itf, "mtu", &at);
                    p.str_opt(itf, "socketPath", &at);
                    p.str_opt(itf, "pciID", &at);
                }
            }
            for (i, ip) in p.objects(o, "ips").iter().enumerate() {
                let at = format!("ips[{i}]");
                let addr = p.cidr_req(ip, "address", &at);
                p.ip_opt(ip, "gateway", &at);
                if let Some(idx) = p.int_opt(ip, "interface", &at) {
                    if idx < 0 || idx as usize >= ifs.len() {
                        p.0.push(format!(
                            "{at}.interface {idx} is out of range: the result has {} interfaces",
                            ifs.len()
                        ));
                    }
                }
                if fam == Family::V04 {
                    let want_fam = addr
                        .as_deref()
                        .and_then(|a| a.split('/').next())
                        .and_then(parse_ip)
                        .map(|a| if a.is_ipv4() { "4" } else { "6" });
                    match (p.str_opt(ip, "version", &at), want_fam) {
                        (Some(v), Some(f)) if v == f => {}
                        (Some(v), Some(f)) => p.0.push(format!("{at}.version is {v:?} for an IPv{f} address")),
                        (None, _) => p.0.push(format!("{at}.version is required in a {want} result")),
                        _ => {}
                    }
                }
            }
            let rs = p.objects(o, "routes");
            p.routes(&rs, "routes", v11);
        }
    }
    p.dns(o);
    p.0
}

/// What is wrong with `stdout` as a CNI error object (empty: nothing).
pub fn error_problems(stdout: &str) -> Vec<String> {
    let v: Value = match serde_json::from_str(stdout) {
        Ok(v) => v,
        Err(_) if stdout.trim().is_empty() => return vec!["stdout is empty: the error object must be on stdout".into()],
        Err(e) => return vec![format!("stdout is not one JSON value: {e}")],
    };
    let Some(o) = v.as_object() else {
        return vec![format!("the error must be a JSON object, is {v}")];
    };
    let mut p = Vec::new();
    match o.get("code") {
        Some(c) if c.as_u64().is_some() => {}
        Some(c) => p.push(format!("code must be a non-negative integer, is {c}")),
        None => p.push("code is required".into()),
    }
    match o.get("msg") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(m) => p.push(format!("msg must be a non-empty string, is {m}")),
        None => p.push("msg is required".into()),
    }
    for k in ["details", "cniVersion"] {
        if let Some(x) = o.get(k).filter(|x| !x.is_string()) {
            p.push(format!("{k} must be a string, is {x}"));
        }
    }
    p
}

/// The error code of a plugin's stdout, if it is an error object.
pub fn error_code(stdout: &str) -> Option<u64> {
    serde_json::from_str::<Value>(stdout).ok()?.get("code")?.as_u64()
}

pub fn error_msg(stdout: &str) -> String {
    serde_json::from_str::<Value>(stdout)
        .ok()
        .and_then(|v| v.get("msg").and_then(Value::as_str).map(String::from))
        .unwrap_or_default()
}

/// The result as 1.x JSON (engine conversion), for kernel comparisons across versions.
pub fn as_v1(v: &Value, version: &str) -> Option<Value> {
    let r = CniResult::from_value(v, version).ok()?;
    let r = if r.family() == Family::V1 {
        r
    } else {
        r.convert("1.0.0").ok()?
    };
    Some(r.to_value())
}
