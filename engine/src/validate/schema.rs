//! The configuration keys of every in-process stage, as the reference plugins read them
//! (containernetworking/plugins 1.1.1 as Debian ships it, plus the keys upstream added up
//! to 1.9: bridge `ipMasqBackend`, `disableContainerInterface`, `portIsolation`, `vlan`
//! together with `vlanTrunk`; ptp `ipMasqBackend`; portmap `backend`), and the checks Go's `encoding/json` and the
//! plugins' own parsing would make: JSON types, then values (ranges, CIDRs, options that
//! exclude each other).
//!
//! Go matches keys case-insensitively and ignores unknown ones; a key that matches no
//! field is reported as a warning, since the stage silently ignores it. `null` is accepted
//! everywhere: Go leaves the field at its default.

use super::diag::Code;
use super::{Cx, SrcId};
use crate::spec::ipnet::{parse_ip, IpNet};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::str::FromStr;

/// A JSON type as a Go field declares it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Any,
    Str,
    Bool,
    /// libcni's readBool: a boolean or the strings "true"/"false" in any case.
    BoolStr,
    /// Go `int`, with the range the plugin accepts.
    Int(i64, i64),
    /// Go `uint64`
    U64,
    /// A string Go parses with net.ParseCIDR.
    Cidr,
    /// A string Go parses with net.ParseIP ("" is no address).
    Ip,
    /// A string Go parses with net.ParseMAC.
    Mac,
    /// A string with a fixed set of values.
    Enum(&'static [&'static str]),
    List(&'static Ty),
    /// An object whose keys are all known: others are warned about.
    Obj(&'static [F]),
    /// An object whose known keys are typed and other keys allowed (runtimeConfig, args:
    /// shared with the IPAM and other consumers).
    Open(&'static [F]),
    /// An object with any keys, every value of one type.
    MapOf(&'static Ty),
}

/// A field: its JSON key and type.
#[derive(Debug, Clone, Copy)]
pub struct F(pub &'static str, pub Ty);

const INT: Ty = Ty::Int(i64::MIN, i64::MAX);
const MTU: Ty = Ty::Int(0, 65535);
const STRS: Ty = Ty::List(&Ty::Str);

const DNS: &[F] = &[
    F("nameservers", STRS),
    F("domain", Ty::Str),
    F("search", STRS),
    F("options", STRS),
];

/// types.Route (with the spec 1.1 fields).
const ROUTE: &[F] = &[
    F("dst", Ty::Cidr),
    F("gw", Ty::Ip),
    F("mtu", INT),
    F("advmss", INT),
    F("priority", INT),
    F("table", INT),
    F("scope", INT),
];

/// host-local's Range.
const RANGE: &[F] = &[
    F("subnet", Ty::Cidr),
    F("rangeStart", Ty::Ip),
    F("rangeEnd", Ty::Ip),
    F("gateway", Ty::Ip),
];

/// Keys every plugin object may carry (types.PluginConf, plus the conventions' `args` and
/// `runtimeConfig`, typed per stage below).
const COMMON: &[F] = &[
    F("cniVersion", Ty::Str),
    F("name", Ty::Str),
    F("type", Ty::Str),
    F("capabilities", Ty::MapOf(&Ty::Bool)),
    F("dns", Ty::Obj(DNS)),
    F("prevResult", Ty::Open(&[])),
    F("cni.dev/valid-attachments", Ty::Any),
    F("cni.dev/attachments", Ty::Any),
    F("args", Ty::Open(&[])),
    F("runtimeConfig", Ty::Open(&[])),
];

/// What libcni itself reads of any plugin, in-process or not.
const LIBCNI: &[F] = &[
    F("cniVersion", Ty::Str),
    F("name", Ty::Str),
    F("type", Ty::Str),
    F("capabilities", Ty::MapOf(&Ty::Bool)),
];

/// runtimeConfig / args keys an IPAM reads from the enclosing plugin's object.
const IPAM_RC: &[F] = &[F("ips", STRS), F("ipRanges", Ty::List(&Ty::List(&Ty::Obj(RANGE))))];
const IPAM_ARGS: &[F] = &[F("cni", Ty::Open(&[F("ips", Ty::List(&Ty::Ip))]))];

const MASQ_BACKENDS: &[&str] = &["iptables", "nftables"];

const BRIDGE: &[F] = &[
    F("bridge", Ty::Str),
    F("isGateway", Ty::Bool),
    F("isDefaultGateway", Ty::Bool),
    F("forceAddress", Ty::Bool),
    F("ipMasq", Ty::Bool),
    F("ipMasqBackend", Ty::Enum(MASQ_BACKENDS)),
    F("mtu", MTU),
    F("hairpinMode", Ty::Bool),
    F("promiscMode", Ty::Bool),
    F("vlan", Ty::Int(0, 4094)),
    F(
        "vlanTrunk",
        Ty::List(&Ty::Obj(&[
            F("minID", Ty::Int(1, 4094)),
            F("maxID", Ty::Int(1, 4094)),
            F("id", Ty::Int(1, 4094)),
        ])),
    ),
    F("preserveDefaultVlan", Ty::Bool),
    F("macspoofchk", Ty::Bool),
    F("enabledad", Ty::Bool),
    F("disableContainerInterface", Ty::Bool),
    F("portIsolation", Ty::Bool),
    F(
        "args",
        Ty::Open(&[F("cni", Ty::Open(&[F("mac", Ty::Str), F("ips", Ty::List(&Ty::Ip))]))]),
    ),
    F(
        "runtimeConfig",
        Ty::Open(&[
            F("mac", Ty::Str),
            F("ips", STRS),
            F("ipRanges", Ty::List(&Ty::List(&Ty::Obj(RANGE)))),
        ]),
    ),
];

const PTP: &[F] = &[
    F("ipMasq", Ty::Bool),
    F("ipMasqBackend", Ty::Enum(MASQ_BACKENDS)),
    F("mtu", MTU),
    F("args", Ty::Open(IPAM_ARGS)),
    F("runtimeConfig", Ty::Open(IPAM_RC)),
];

const LOOPBACK: &[F] = &[];

const TUNING: &[F] = &[
    F("dataDir", Ty::Str),
    F("sysctl", Ty::MapOf(&Ty::Str)),
    F("mac", Ty::Mac),
    F("promisc", Ty::Bool),
    F("mtu", MTU),
    F("allmulti", Ty::Bool),
    F("runtimeConfig", Ty::Open(&[F("mac", Ty::Str)])),
    F(
        "args",
        Ty::Open(&[F(
            "cni",
            Ty::Open(&[
                F("sysctl", Ty::MapOf(&Ty::Str)),
                F("mac", Ty::Mac),
                F("promisc", Ty::Bool),
                F("mtu", MTU),
                F("allmulti", Ty::Bool),
            ]),
        )]),
    ),
];

const PORTMAP_ENTRY: &[F] = &[
    F("hostPort", Ty::Int(1, 65535)),
    F("containerPort", Ty::Int(1, 65535)),
    F("protocol", Ty::Str),
    F("hostIP", Ty::Str),
];

const PORTMAP: &[F] = &[
    F("backend", Ty::Enum(MASQ_BACKENDS)),
    F("snat", Ty::Bool),
    F("conditionsV4", STRS),
    F("conditionsV6", STRS),
    F("masqAll", Ty::Bool),
    F("markMasqBit", Ty::Int(0, 31)),
    F("externalSetMarkChain", Ty::Str),
    F(
        "runtimeConfig",
        Ty::Open(&[F("portMappings", Ty::List(&Ty::Obj(PORTMAP_ENTRY)))]),
    ),
];

const BANDWIDTH_ENTRY: &[F] = &[
    F("ingressRate", Ty::U64),
    F("ingressBurst", Ty::U64),
    F("egressRate", Ty::U64),
    F("egressBurst", Ty::U64),
    F("unshapedSubnets", Ty::List(&Ty::Cidr)),
    F("shapedSubnets", Ty::List(&Ty::Cidr)),
];

const BANDWIDTH: &[F] = &[
    F("ingressRate", Ty::U64),
    F("ingressBurst", Ty::U64),
    F("egressRate", Ty::U64),
    F("egressBurst", Ty::U64),
    F("unshapedSubnets", Ty::List(&Ty::Cidr)),
    F("shapedSubnets", Ty::List(&Ty::Cidr)),
    F("runtimeConfig", Ty::Open(&[F("bandwidth", Ty::Obj(BANDWIDTH_ENTRY))])),
];

const HOST_LOCAL: &[F] = &[
    F("type", Ty::Str),
    F("name", Ty::Str),
    F("routes", Ty::List(&Ty::Obj(ROUTE))),
    F("dataDir", Ty::Str),
    F("resolvConf", Ty::Str),
    F("ranges", Ty::List(&Ty::List(&Ty::Obj(RANGE)))),
    // the old single-range form
    F("subnet", Ty::Cidr),
    F("rangeStart", Ty::Ip),
    F("rangeEnd", Ty::Ip),
    F("gateway", Ty::Ip),
];

const STATIC: &[F] = &[
    F("type", Ty::Str),
    F("name", Ty::Str),
    F("routes", Ty::List(&Ty::Obj(ROUTE))),
    F(
        "addresses",
        Ty::List(&Ty::Obj(&[
            F("address", Ty::Cidr),
            F("gateway", Ty::Ip),
            F("version", Ty::Str),
        ])),
    ),
    F("dns", Ty::Obj(DNS)),
];

/// The plugin types that have an in-process stage (or will: the reference set cnichain
/// implements), with their own keys.
pub fn stage_fields(t: &str) -> Option<&'static [F]> {
    Some(match t {
        "bridge" => BRIDGE,
        "ptp" => PTP,
        "loopback" => LOOPBACK,
        "tuning" => TUNING,
        "portmap" => PORTMAP,
        "bandwidth" => BANDWIDTH,
        _ => return None,
    })
}

/// The IPAM types with an in-process stage.
pub fn ipam_fields(t: &str) -> Option<&'static [F]> {
    Some(match t {
        "host-local" => HOST_LOCAL,
        "static" => STATIC,
        _ => return None,
    })
}

/// The types the validator knows the keys of.
pub fn is_known_type(t: &str) -> bool {
    stage_fields(t).is_some()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn want(ty: &Ty) -> &'static str {
    match ty {
        Ty::Any => "any value",
        Ty::Str | Ty::Cidr | Ty::Ip | Ty::Mac | Ty::Enum(_) => "a string",
        Ty::Bool => "a boolean",
        Ty::BoolStr => "a boolean",
        Ty::Int(..) => "an integer",
        Ty::U64 => "a non-negative integer",
        Ty::List(_) => "an array",
        Ty::Obj(_) | Ty::Open(_) | Ty::MapOf(_) => "an object",
    }
}

/// Find a field the way Go does: the exact key first, then case-insensitively.
fn field<'f>(fields: &[&'f [F]], key: &str) -> Option<&'f F> {
    for fs in fields {
        if let Some(f) = fs.iter().find(|f| f.0 == key) {
            return Some(f);
        }
    }
    for fs in fields {
        if let Some(f) = fs.iter().find(|f| f.0.eq_ignore_ascii_case(key)) {
            return Some(f);
        }
    }
    None
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn unknown_key_hint(fields: &[&[F]], key: &str) -> String {
    let mut best: Option<(usize, &str)> = None;
    for f in fields.iter().flat_map(|fs| fs.iter()).filter(|_| key.len() <= 64) {
        let d = distance(key, f.0);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, f.0));
        }
    }
    match best {
        Some((d, name)) if d <= 2 || (d <= 3 && key.len() > 8) => format!("did you mean `{name}`?"),
        _ => {
            let mut names: Vec<&str> = fields.iter().flat_map(|fs| fs.iter().map(|f| f.0)).collect();
            names.sort_unstable();
            names.dedup();
            format!("the keys it reads are: {}", names.join(", "))
        }
    }
}

/// Checks one value against its type. `what` names the reader in unknown-key messages
/// ("the bridge stage").
pub fn check(cx: &mut Cx, src: SrcId, ptr: &str, v: &Value, ty: &Ty, what: &str) {
    check_in(cx, src, ptr, v, ty, &[], what);
}

fn check_in(cx: &mut Cx, src: SrcId, ptr: &str, v: &Value, ty: &Ty, extra: &[&'static [F]], what: &str) {
    // Go leaves a field alone for null; libcni's readBool refuses it
    if v.is_null() && !matches!(ty, Ty::BoolStr) {
        return;
    }
    let wrong = |cx: &mut Cx| {
        let p = cx.path(src, ptr);
        cx.at(
            src,
            Code::WrongType,
            ptr,
            format!("{p}: expected {}, got {}", want(ty), kind(v)),
        );
    };
    match ty {
        Ty::Any => {}
        Ty::Str => {
            if !v.is_string() {
                wrong(cx)
            }
        }
        Ty::Bool => {
            if !v.is_boolean() {
                let hint =
                    matches!(v, Value::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false"));
                wrong(cx);
                if hint {
                    cx.hint("write true or false without quotes: Go does not read a string as a boolean");
                }
            }
        }
        Ty::BoolStr => match v {
            Value::Bool(_) => {}
            Value::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {}
            Value::String(s) => {
                let p = cx.path(src, ptr);
                cx.at(src, Code::BadValue, ptr, format!("{p}: {s:?} is not a boolean"));
                cx.hint("use true or false");
            }
            _ => wrong(cx),
        },
        Ty::Int(lo, hi) => match v.as_i64() {
            Some(n) if n < *lo || n > *hi => {
                let p = cx.path(src, ptr);
                cx.at(
                    src,
                    Code::BadValue,
                    ptr,
                    format!("{p}: {n} is out of range {lo}..={hi}"),
                );
            }
            Some(_) => {}
            None => wrong(cx),
        },
        Ty::U64 => {
            if v.as_u64().is_none() {
                wrong(cx)
            }
        }
        Ty::Cidr => match v.as_str() {
            Some(s) => {
                if IpNet::from_str(s).is_err() {
                    let p = cx.path(src, ptr);
                    cx.at(src, Code::BadValue, ptr, format!("{p}: invalid CIDR address {s:?}"));
                    cx.hint("write an address with a prefix length, like 10.88.0.0/16");
                }
            }
            None => wrong(cx),
        },
        Ty::Ip => match v.as_str() {
            Some("") => {}
            Some(s) => {
                if parse_ip(s).is_none() {
                    let p = cx.path(src, ptr);
                    cx.at(src, Code::BadValue, ptr, format!("{p}: invalid IP address {s:?}"));
                }
            }
            None => wrong(cx),
        },
        Ty::Mac => match v.as_str() {
            Some("") => {}
            Some(s) => {
                if !is_mac(s) {
                    let p = cx.path(src, ptr);
                    cx.at(src, Code::BadValue, ptr, format!("{p}: invalid MAC address {s:?}"));
                }
            }
            None => wrong(cx),
        },
        Ty::Enum(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => {}
            Some(s) => {
                let p = cx.path(src, ptr);
                cx.at(
                    src,
                    Code::BadValue,
                    ptr,
                    format!("{p}: {s:?} is not one of: {}", allowed.join(", ")),
                );
            }
            None => wrong(cx),
        },
        Ty::List(el) => match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    check_in(cx, src, &format!("{ptr}/{i}"), x, el, &[], what);
                }
            }
            _ => wrong(cx),
        },
        Ty::MapOf(el) => match v {
            Value::Object(m) => {
                for (k, x) in m {
                    check_in(cx, src, &super::pos::push_token(ptr, k), x, el, &[], what);
                }
            }
            _ => wrong(cx),
        },
        Ty::Obj(fields) | Ty::Open(fields) => match v {
            Value::Object(m) => {
                let mut all: Vec<&[F]> = vec![fields];
                all.extend_from_slice(extra);
                for (k, x) in m {
                    let child = super::pos::push_token(ptr, k);
                    match field(&all, k) {
                        Some(f) => check_in(cx, src, &child, x, &f.1, &[], what),
                        None if matches!(ty, Ty::Obj(_)) => {
                            let p = cx.path(src, &child);
                            cx.at_key(
                                src,
                                Code::UnknownKey,
                                &child,
                                format!("{p}: unknown key: {what} does not read it"),
                            );
                            cx.hint(unknown_key_hint(&all, k));
                        }
                        None => {}
                    }
                }
            }
            _ => wrong(cx),
        },
    }
}

/// Go's net.ParseMAC: 6, 8 or 20 octets as hex pairs separated by ':' or '-', or as
/// groups of four hex digits separated by '.'.
pub fn is_mac(s: &str) -> bool {
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_len = |n: usize| n == 6 || n == 8 || n == 20;
    for sep in [':', '-'] {
        if s.contains(sep) {
            let groups: Vec<&str> = s.split(sep).collect();
            return ok_len(groups.len()) && groups.iter().all(|g| hex(g, 2));
        }
    }
    let groups: Vec<&str> = s.split('.').collect();
    groups.len() > 1 && ok_len(groups.len() * 2) && groups.iter().all(|g| hex(g, 4))
}

/// The ipam object's fields for a given IPAM type (`Open` for types we do not know).
fn ipam_ty(ipam_type: Option<&str>) -> Ty {
    match ipam_type.and_then(ipam_fields) {
        Some(f) => Ty::Obj(f),
        None => Ty::Open(&[F("type", Ty::Str)]),
    }
}

/// A subnet an IPAM section hands out from, for the cross-network overlap check.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub net: IpNet,
    pub src: SrcId,
    pub ptr: String,
}

/// Type and value checks of one plugin object at `ptr` (the caller has checked `type`).
pub fn check_plugin(cx: &mut Cx, src: SrcId, ptr: &str, obj: &Map<String, Value>, ptype: &str) {
    let ipam = obj.get("ipam");
    let ipam_type = ipam.and_then(|i| i.get("type")).and_then(Value::as_str);
    let ipam_ptr = format!("{ptr}/ipam");
    match stage_fields(ptype) {
        Some(own) => {
            let what = format!("the {ptype} stage");
            let all: Vec<&[F]> = vec![own, COMMON];
            for (k, v) in obj {
                let child = super::pos::push_token(ptr, k);
                if k == "ipam" {
                    if check_ipam(cx, src, &ipam_ptr, v, ipam_type) == Some(false) {
                        no_ranges(cx, src, &ipam_ptr, obj);
                    }
                    continue;
                }
                match field(&all, k) {
                    Some(f) => check_in(cx, src, &child, v, &f.1, &[], &what),
                    None => {
                        let p = cx.path(src, &child);
                        cx.at_key(
                            src,
                            Code::UnknownKey,
                            &child,
                            format!("{p}: unknown key: {what} does not read it"),
                        );
                        cx.hint(unknown_key_hint(&all, k));
                    }
                }
            }
            check_values(cx, src, ptr, obj, ptype, ipam_type);
        }
        None => {
            // An external plugin: only what libcni itself reads.
            for f in LIBCNI {
                if let Some(v) = obj.get(f.0) {
                    check(cx, src, &super::pos::push_token(ptr, f.0), v, &f.1, "libcni");
                }
            }
            if let Some(v) = ipam {
                let first = cx.diags.len();
                if check_ipam(cx, src, &ipam_ptr, v, ipam_type) == Some(false) {
                    no_ranges(cx, src, &ipam_ptr, obj);
                }
                if !PASSES_IPAM_AS_IS.contains(&ptype) {
                    foreign_ipam(cx, first, ptype, ipam_type.unwrap_or("the IPAM"));
                }
            }
        }
    }
}

/// The reference main plugins, which hand their ipam section to the IPAM unchanged
/// (bridge and ptp have their own tables above).
const PASSES_IPAM_AS_IS: &[&str] = &["macvlan", "ipvlan", "vlan", "host-device", "dummy", "tap"];

/// The ipam section of any other plugin (calico, antrea, ...) is that plugin's input: it
/// may fill it in or rewrite it (calico's "usePodCidr", antrea's ranges) before it calls
/// the IPAM. What the IPAM would refuse as written is a warning, not an error.
fn foreign_ipam(cx: &mut Cx, first: usize, ptype: &str, ipam: &str) {
    for d in cx.diags.iter_mut().skip(first) {
        if d.code.severity() != super::Severity::Error {
            continue;
        }
        d.code = Code::ForeignIpam;
        d.message = format!("{} ({ipam} refuses this as written)", d.message);
        // the fix-it hint was for a section the IPAM reads as written: replaced
        d.hint = Some(format!(
            "note: this ipam section is {ptype}'s own input: it may fill it in or rewrite it before it calls {ipam}"
        ));
    }
}

/// Checks an ipam object; for host-local, whether it configures any range.
fn check_ipam(cx: &mut Cx, src: SrcId, ptr: &str, v: &Value, ipam_type: Option<&str>) -> Option<bool> {
    let what = match ipam_type {
        Some(t) => format!("the {t} IPAM"),
        None => "the IPAM".to_string(),
    };
    check(cx, src, ptr, v, &ipam_ty(ipam_type), &what);
    match (v, ipam_type) {
        (Value::Object(m), Some("host-local")) => Some(check_host_local(cx, src, ptr, m)),
        (Value::Object(m), Some("static")) => {
            check_static(cx, src, ptr, m);
            None
        }
        _ => None,
    }
}

/// host-local without ranges works only when the runtime supplies `ipRanges`.
fn no_ranges(cx: &mut Cx, src: SrcId, ipam_ptr: &str, plugin: &Map<String, Value>) {
    let cap =
        matches!(plugin.get("capabilities"), Some(Value::Object(c)) if c.get("ipRanges") == Some(&Value::Bool(true)));
    let static_rc = matches!(get(plugin, "runtimeConfig"), Some(Value::Object(rc)) if get(rc, "ipRanges").is_some());
    if !cap && !static_rc {
        let path = cx.path(src, ipam_ptr);
        cx.at(
            src,
            Code::Missing,
            ipam_ptr,
            format!("{path}: host-local has no IP ranges"),
        );
        cx.hint("add \"ranges\": [[{\"subnet\": \"10.88.0.0/16\"}]], or enable the ipRanges capability");
    }
}

fn get<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

fn truthy(m: &Map<String, Value>, key: &str) -> bool {
    matches!(get(m, key), Some(Value::Bool(true)))
}

fn key_ptr(ptr: &str, m: &Map<String, Value>, key: &str) -> String {
    let actual = if m.contains_key(key) {
        key.to_string()
    } else {
        m.keys()
            .find(|k| k.eq_ignore_ascii_case(key))
            .cloned()
            .unwrap_or_else(|| key.to_string())
    };
    super::pos::push_token(ptr, &actual)
}

/// Options that exclude each other and other value rules of the plugins' parsers.
fn check_values(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>, ptype: &str, ipam_type: Option<&str>) {
    match ptype {
        "bridge" => {
            if truthy(m, "hairpinMode") && truthy(m, "promiscMode") {
                let p = key_ptr(ptr, m, "promiscMode");
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::BadValue,
                    &p,
                    format!("{path}: cannot be set together with hairpinMode"),
                );
            }
            // vlan with vlanTrunk (the native VLAN of a trunk port) is allowed since 1.8
            if let Some(Value::Array(trunks)) = get(m, "vlanTrunk") {
                for (i, t) in trunks.iter().enumerate() {
                    let Value::Object(t) = t else { continue };
                    let tp = format!("{}/{i}", key_ptr(ptr, m, "vlanTrunk"));
                    let min = get(t, "minID").and_then(Value::as_i64);
                    let max = get(t, "maxID").and_then(Value::as_i64);
                    match (min, max) {
                        (Some(a), Some(b)) if a > b => {
                            let path = cx.path(src, &tp);
                            cx.at(
                                src,
                                Code::BadValue,
                                &tp,
                                format!("{path}: minID {a} is greater than maxID {b}"),
                            );
                        }
                        (Some(_), None) | (None, Some(_)) => {
                            let path = cx.path(src, &tp);
                            cx.at(
                                src,
                                Code::BadValue,
                                &tp,
                                format!("{path}: minID and maxID must be set together"),
                            );
                        }
                        _ => {}
                    }
                }
            }
            if truthy(m, "disableContainerInterface") && ipam_type.is_some_and(|t| !t.is_empty()) {
                let p = key_ptr(ptr, m, "disableContainerInterface");
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::BadValue,
                    &p,
                    format!("{path}: cannot be used with an ipam section"),
                );
            }
        }
        "ptp" if ipam_type.is_none_or(str::is_empty) => {
            let p = if m.contains_key("ipam") {
                format!("{ptr}/ipam")
            } else {
                format!("{ptr}/type")
            };
            let path = cx.path(src, ptr);
            cx.at(
                src,
                Code::IpamRequired,
                &p,
                format!("{path}: ptp needs an ipam section with a type"),
            );
            cx.hint("add \"ipam\": {\"type\": \"host-local\", ...}: ptp configures the addresses its IPAM returns");
        }
        "portmap" if get(m, "markMasqBit").is_some() && get(m, "externalSetMarkChain").is_some() => {
            let p = key_ptr(ptr, m, "externalSetMarkChain");
            let path = cx.path(src, &p);
            cx.at(
                src,
                Code::BadValue,
                &p,
                format!("{path}: cannot be set together with markMasqBit"),
            );
        }
        "bandwidth" => {
            check_bandwidth(cx, src, ptr, m);
            if let Some(Value::Object(rc)) = get(m, "runtimeConfig") {
                if let Some(Value::Object(bw)) = get(rc, "bandwidth") {
                    let bp = key_ptr(&key_ptr(ptr, m, "runtimeConfig"), rc, "bandwidth");
                    check_bandwidth(cx, src, &bp, bw);
                }
            }
        }
        "tuning" => {
            check_sysctls(cx, src, &key_ptr(ptr, m, "sysctl"), get(m, "sysctl"));
            if let Some(Value::Object(args)) = get(m, "args") {
                if let Some(Value::Object(a)) = get(args, "cni") {
                    let ap = key_ptr(&key_ptr(ptr, m, "args"), args, "cni");
                    check_sysctls(cx, src, &key_ptr(&ap, a, "sysctl"), get(a, "sysctl"));
                }
            }
        }
        _ => {}
    }
}

fn check_bandwidth(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) {
    for (rate, burst) in [("ingressRate", "ingressBurst"), ("egressRate", "egressBurst")] {
        // a value of the wrong type counts as set: it is reported on its own
        let set = |k: &str| get(m, k).is_some_and(|v| v.as_u64() != Some(0));
        let (r, b) = (set(rate), set(burst));
        if r && !b {
            let p = key_ptr(ptr, m, rate);
            let path = cx.path(src, &p);
            cx.at(src, Code::BadValue, &p, format!("{path}: a rate needs {burst} too"));
        } else if !r && b {
            let p = key_ptr(ptr, m, burst);
            let path = cx.path(src, &p);
            cx.at(src, Code::BadValue, &p, format!("{path}: a burst needs {rate} too"));
        }
        if get(m, burst).and_then(Value::as_u64).unwrap_or(0) / 8 >= u64::from(u32::MAX) {
            let p = key_ptr(ptr, m, burst);
            let path = cx.path(src, &p);
            cx.at(
                src,
                Code::BadValue,
                &p,
                format!("{path}: burst cannot be more than 4GB"),
            );
        }
    }
    let nonempty = |k: &str| matches!(get(m, k), Some(Value::Array(a)) if !a.is_empty());
    if nonempty("unshapedSubnets") && nonempty("shapedSubnets") {
        let p = key_ptr(ptr, m, "shapedSubnets");
        let path = cx.path(src, &p);
        cx.at(
            src,
            Code::BadValue,
            &p,
            format!("{path}: cannot be set together with unshapedSubnets"),
        );
    }
}

fn check_sysctls(cx: &mut Cx, src: SrcId, ptr: &str, v: Option<&Value>) {
    let Some(Value::Object(m)) = v else { return };
    for k in m.keys() {
        let parts: Vec<&str> = k.split(['.', '/']).collect();
        if parts.first() != Some(&"net") || parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "..") {
            let p = super::pos::push_token(ptr, k);
            let path = cx.path(src, &p);
            cx.at_key(src, Code::BadValue, &p, format!("{path}: not a net.* sysctl"));
            cx.hint("tuning only writes sysctls below /proc/sys/net, like net.ipv4.conf.IFNAME.arp_notify");
        }
    }
}

fn ip_of(m: &Map<String, Value>, key: &str) -> Option<IpAddr> {
    get(m, key).and_then(Value::as_str).and_then(parse_ip)
}

/// host-local's LoadIPAMConfig and Range.Canonicalize, statically. Returns whether any
/// range is configured.
fn check_host_local(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) -> bool {
    // (range set pointer, ranges with their pointers)
    let mut sets: Vec<(String, Vec<(String, IpNet)>)> = Vec::new();
    let check_range = |cx: &mut Cx, rp: &str, r: &Map<String, Value>| -> Option<IpNet> {
        let subnet = match get(r, "subnet") {
            None => {
                let path = cx.path(src, rp);
                cx.at(src, Code::Missing, rp, format!("{path}: a range needs a \"subnet\""));
                return None;
            }
            Some(v) => IpNet::from_str(v.as_str()?).ok()?,
        };
        let sp = key_ptr(rp, r, "subnet");
        let too_small = if subnet.is_ipv4() {
            subnet.prefix > 30
        } else {
            subnet.prefix > 126
        };
        if too_small {
            let path = cx.path(src, &sp);
            cx.at(
                src,
                Code::BadValue,
                &sp,
                format!("{path}: network {subnet} is too small to allocate from"),
            );
        } else if subnet.network().addr != subnet.addr {
            // host-local's Range.Canonicalize, after the size check
            let net = subnet.network();
            let path = cx.path(src, &sp);
            cx.at(
                src,
                Code::BadValue,
                &sp,
                format!(
                    "{path}: network {subnet} has host bits set; for a subnet mask of length {} the network address is {}",
                    net.prefix, net.addr
                ),
            );
            cx.hint(format!("write the network address: {net}"));
        }
        let start = ip_of(r, "rangeStart");
        let end = ip_of(r, "rangeEnd");
        for (key, ip) in [
            ("rangeStart", start),
            ("rangeEnd", end),
            ("gateway", ip_of(r, "gateway")),
        ] {
            if let Some(ip) = ip {
                if !subnet.contains(ip) {
                    let kp = key_ptr(rp, r, key);
                    let path = cx.path(src, &kp);
                    cx.at(
                        src,
                        Code::BadValue,
                        &kp,
                        format!("{path}: {ip} is not in subnet {subnet}"),
                    );
                }
            }
        }
        if let (Some(a), Some(b)) = (start, end) {
            if subnet.contains(a) && subnet.contains(b) && a > b {
                let kp = key_ptr(rp, r, "rangeEnd");
                let path = cx.path(src, &kp);
                cx.at(
                    src,
                    Code::BadValue,
                    &kp,
                    format!("{path}: {b} is before rangeStart {a}"),
                );
            }
        }
        Some(subnet)
    };
    if let Some(Value::String(_)) = get(m, "subnet") {
        if let Some(n) = check_range(cx, ptr, m) {
            sets.push((key_ptr(ptr, m, "subnet"), vec![(key_ptr(ptr, m, "subnet"), n)]));
        }
    }
    if let Some(Value::Array(rs)) = get(m, "ranges") {
        let rsp = key_ptr(ptr, m, "ranges");
        for (i, set) in rs.iter().enumerate() {
            let setp = format!("{rsp}/{i}");
            let Value::Array(set) = set else { continue };
            if set.is_empty() {
                let path = cx.path(src, &setp);
                cx.at(src, Code::BadValue, &setp, format!("{path}: empty range set"));
                continue;
            }
            let mut nets = Vec::new();
            for (j, r) in set.iter().enumerate() {
                let rp = format!("{setp}/{j}");
                if let Value::Object(r) = r {
                    if let Some(n) = check_range(cx, &rp, r) {
                        nets.push((key_ptr(&rp, r, "subnet"), n));
                    }
                }
            }
            if let Some((_, first)) = nets.first().cloned() {
                if let Some((p, other)) = nets.iter().find(|(_, n)| n.is_ipv4() != first.is_ipv4()) {
                    let path = cx.path(src, p);
                    cx.at(
                        src,
                        Code::BadValue,
                        p,
                        format!("{path}: {other} mixes address families with {first} in one range set"),
                    );
                }
            }
            sets.push((setp, nets));
        }
    }
    for (i, (_, a)) in sets.iter().enumerate() {
        for (_, b) in sets.iter().skip(i + 1) {
            for (bp, bn) in b {
                if let Some((_, an)) = a.iter().find(|(_, an)| overlaps(an, bn)) {
                    let path = cx.path(src, bp);
                    cx.at(
                        src,
                        Code::BadValue,
                        bp,
                        format!("{path}: {bn} overlaps {an} of an earlier range set"),
                    );
                }
            }
        }
    }
    for (_, nets) in &sets {
        for (p, n) in nets {
            cx.subnets.push(Subnet {
                net: *n,
                src,
                ptr: p.clone(),
            });
        }
    }
    get(m, "subnet").is_some() || matches!(get(m, "ranges"), Some(Value::Array(a)) if !a.is_empty())
}

fn check_static(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) {
    let Some(Value::Array(addrs)) = get(m, "addresses") else {
        return;
    };
    let ap = key_ptr(ptr, m, "addresses");
    for (i, a) in addrs.iter().enumerate() {
        let Value::Object(a) = a else { continue };
        let p = format!("{ap}/{i}");
        match get(a, "address").and_then(Value::as_str) {
            None if get(a, "address").is_none() => {
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::Missing,
                    &p,
                    format!("{path}: an address entry needs \"address\""),
                );
            }
            Some(s) => {
                if let Ok(n) = IpNet::from_str(s) {
                    cx.subnets.push(Subnet {
                        net: n.network(),
                        src,
                        ptr: key_ptr(&p, a, "address"),
                    });
                }
            }
            None => {}
        }
    }
}

/// Two networks share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network().addr) || b.contains(a.network().addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_like_go() {
        for ok in [
            "0a:58:0a:01:00:05",
            "0A-58-0A-01-00-05",
            "0a58.0a01.0005",
            "00:00:00:00:fe:80:00:00",
        ] {
            assert!(is_mac(ok), "{ok}");
        }
        for bad in [
            "",
            "0a:58:0a:01:00",
            "0a:58:0a:01:00:5",
            "zz:58:0a:01:00:05",
            "0a58.0a01",
            "0a:58-0a:01:00:05",
        ] {
            assert!(!is_mac(bad), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(distance("isGatway", "isGateway"), 1);
        assert_eq!(unknown_key_hint(&[BRIDGE], "isGatway"), "did you mean `isGateway`?");
        assert!(unknown_key_hint(&[PTP], "zzzzzzzz").starts_with("the keys it reads are: args, ipMasq"));
    }

    #[test]
    fn overlap() {
        let n = |s: &str| IpNet::from_str(s).unwrap();
        assert!(overlaps(&n("10.0.0.0/16"), &n("10.0.5.0/24")));
        assert!(overlaps(&n("10.0.5.0/24"), &n("10.0.0.0/16")));
        assert!(!overlaps(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
        assert!(!overlaps(&n("::/0"), &n("10.0.1.0/24")));
    }
}
