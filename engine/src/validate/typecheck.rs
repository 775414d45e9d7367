//! Checking a plugin object against its stage's [`Schema`]: JSON types, ranges and
//! allowed values, unknown keys (with a "did you mean"), and the ipam section against its
//! IPAM's schema. Value rules across keys are in [`super::rules`].

use super::diag::Code;
use super::rules::{check_host_local, check_static, check_values, get};
use super::schema::{Role, Schema, Ty, COMMON, F, LIBCNI};
use super::{Cx, SrcId};
use crate::spec::ipnet::{parse_ip, IpNet};
use crate::spec::json_kind::{json_kind, Spelling};
use crate::stage::Registry;
use serde_json::{Map, Value};
use std::str::FromStr;

/// The keys of the in-process stage of type `t` in `role`, from the stage itself.
pub fn fields_of(reg: &Registry, t: &str, role: Role) -> Option<&'static [F]> {
    reg.schema(t).filter(|s: &&Schema| s.role == role).map(|s| s.fields)
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
            format!("{p}: expected {}, got {}", want(ty), json_kind(v, Spelling::ArticleInt)),
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
fn ipam_ty(reg: &Registry, ipam_type: Option<&str>) -> Ty {
    match ipam_type.and_then(|t| fields_of(reg, t, Role::Ipam)) {
        Some(f) => Ty::Obj(f),
        None => Ty::Open(&[F("type", Ty::Str)]),
    }
}

/// Type and value checks of one plugin object at `ptr` (the caller has checked `type`).
pub fn check_plugin(cx: &mut Cx, reg: &Registry, src: SrcId, ptr: &str, obj: &Map<String, Value>, ptype: &str) {
    let ipam = obj.get("ipam");
    let ipam_type = ipam.and_then(|i| i.get("type")).and_then(Value::as_str);
    let ipam_ptr = format!("{ptr}/ipam");
    match fields_of(reg, ptype, Role::Plugin) {
        Some(own) => {
            let what = format!("the {ptype} stage");
            let all: Vec<&[F]> = vec![own, COMMON];
            for (k, v) in obj {
                let child = super::pos::push_token(ptr, k);
                if k == "ipam" {
                    if check_ipam(cx, reg, src, &ipam_ptr, v, ipam_type) == Some(false) {
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
                if check_ipam(cx, reg, src, &ipam_ptr, v, ipam_type) == Some(false) {
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
fn check_ipam(cx: &mut Cx, reg: &Registry, src: SrcId, ptr: &str, v: &Value, ipam_type: Option<&str>) -> Option<bool> {
    let what = match ipam_type {
        Some(t) => format!("the {t} IPAM"),
        None => "the IPAM".to_string(),
    };
    check(cx, src, ptr, v, &ipam_ty(reg, ipam_type), &what);
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
        const KEYS: &[F] = &[F("isGateway", Ty::Bool), F("ipMasq", Ty::Bool), F("args", Ty::Any)];
        assert_eq!(distance("isGatway", "isGateway"), 1);
        assert_eq!(unknown_key_hint(&[KEYS], "isGatway"), "did you mean `isGateway`?");
        assert!(unknown_key_hint(&[KEYS], "zzzzzzzz").starts_with("the keys it reads are: args, ipMasq"));
    }
}
