//! Reading results the way Go's `encoding/json` fills libcni's types.

use super::*;

#[derive(Clone, Copy)]
pub(super) struct Ctx {
    /// Visit object keys in sorted order (a result libcni re-marshalled from a map).
    pub(super) sorted: bool,
}

pub(super) fn derr(path: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::decode(format!("failed to decode result: {path}: {msg}"))
}

pub(super) fn want(path: &str, what: &str, got: &Value) -> CniError {
    derr(path, format!("expected {what}, got {}", json_kind(got, Spelling::Go)))
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Go's case-insensitive key match for an ASCII field name, including its folding of
/// U+017F (long s) to "s" and U+212A (Kelvin sign) to "k".
pub fn key_is(key: &str, name: &str) -> bool {
    let mut nb = name.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{017f}' => b's',
            '\u{212a}' => b'k',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
            _ => return false,
        };
        match nb.next() {
            Some(b) if b.to_ascii_lowercase() == folded => {}
            _ => return false,
        }
    }
    nb.next().is_none()
}

/// An object's entries in the order Go would decode them.
pub(super) fn entries(m: &Map<String, Value>, ctx: Ctx) -> Vec<(&str, &Value)> {
    let mut e: Vec<(&str, &Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if ctx.sorted {
        e.sort_by(|a, b| a.0.cmp(b.0));
    }
    e
}

pub(super) fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CniError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(want(path, "an object", other)),
    }
}

/// A string field: `null` leaves it unchanged.
pub(super) fn dec_string(into: &mut String, v: &Value, path: &str) -> Result<(), CniError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            *into = s.clone();
            Ok(())
        }
        other => Err(want(path, "a string", other)),
    }
}

pub(super) fn int_of(v: &Value, path: &str) -> Result<i64, CniError> {
    let Value::Number(n) = v else {
        return Err(want(path, "an integer", v));
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    // "-0" is an integer literal to Go; serde_json reads it as a float.
    if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) {
        return Ok(0);
    }
    Err(derr(path, format!("expected a 64-bit integer, got {n}")))
}

/// An `int` field: `null` leaves it unchanged.
pub(super) fn dec_int(into: &mut i64, v: &Value, path: &str) -> Result<(), CniError> {
    if !v.is_null() {
        *into = int_of(v, path)?;
    }
    Ok(())
}

/// A `*int` field: `null` clears it.
pub(super) fn dec_opt_int(into: &mut Option<i64>, v: &Value, path: &str) -> Result<(), CniError> {
    *into = if v.is_null() { None } else { Some(int_of(v, path)?) };
    Ok(())
}

/// A `[]string` field: `null` empties it, a `null` element is "".
pub(super) fn dec_string_list(into: &mut Vec<String>, v: &Value, path: &str) -> Result<(), CniError> {
    match v {
        Value::Null => {
            into.clear();
            Ok(())
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, e) in a.iter().enumerate() {
                match e {
                    Value::Null => out.push(String::new()),
                    Value::String(s) => out.push(s.clone()),
                    other => return Err(want(&format!("{path}[{i}]"), "a string", other)),
                }
            }
            *into = out;
            Ok(())
        }
        other => Err(want(path, "an array", other)),
    }
}

/// A CIDR (`types.IPNet`); Go fails on `null` the same way as on "".
pub(super) fn dec_cidr(v: &Value, path: &str) -> Result<IpNet, CniError> {
    match v {
        Value::String(s) => s.parse::<IpNet>().map_err(|e| derr(path, e)),
        Value::Null => Err(derr(path, "invalid CIDR address: ")),
        other => Err(want(path, "a string", other)),
    }
}

/// A `net.IP`: `null` and "" are none.
pub(super) fn dec_ip(v: &Value, path: &str) -> Result<Option<IpAddr>, CniError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => match parse_ip(s) {
            Some(ip) => Ok(Some(ip)),
            None => Err(derr(path, format!("invalid IP address: {s}"))),
        },
        other => Err(want(path, "a string", other)),
    }
}

/// A decoding problem that only counts if the value carrying it survives: Go keeps a
/// missing address as a zero value (printed "<nil>"), and a later duplicate key may still
/// replace it. We report it when it is still there at the end.
pub(super) type Pending = Option<CniError>;

pub(super) fn missing(path: &str, key: &str) -> CniError {
    derr(&join(path, key), "missing")
}

/// A list of elements each decoded afresh (Go types with their own UnmarshalJSON).
pub(super) fn dec_list<T>(
    into: &mut Vec<T>,
    v: &Value,
    path: &str,
    ctx: Ctx,
    f: impl Fn(&Value, &str, Ctx) -> Result<(T, Pending), CniError>,
) -> Result<Pending, CniError> {
    match v {
        Value::Null => {
            into.clear();
            Ok(None)
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            let mut pending = None;
            for (i, e) in a.iter().enumerate() {
                let (x, p) = f(e, &format!("{path}[{i}]"), ctx)?;
                pending = pending.or(p);
                out.push(x);
            }
            *into = out;
            Ok(pending)
        }
        other => Err(want(path, "an array", other)),
    }
}

pub(super) fn dec_dns_into(d: &mut Dns, v: &Value, path: &str, ctx: Ctx) -> Result<(), CniError> {
    if v.is_null() {
        return Ok(());
    }
    for (k, v) in entries(as_object(v, path)?, ctx) {
        let p = join(path, k);
        if key_is(k, "nameservers") {
            dec_string_list(&mut d.nameservers, v, &p)?;
        } else if key_is(k, "domain") {
            dec_string(&mut d.domain, v, &p)?;
        } else if key_is(k, "search") {
            dec_string_list(&mut d.search, v, &p)?;
        } else if key_is(k, "options") {
            dec_string_list(&mut d.options, v, &p)?;
        }
    }
    Ok(())
}

pub(super) fn dec_route(v: &Value, path: &str, ctx: Ctx) -> Result<(Route, Pending), CniError> {
    let mut r = Route::default();
    let mut dst = None;
    for (k, v) in entries(as_object(v, path)?, ctx) {
        let p = join(path, k);
        if key_is(k, "dst") {
            dst = Some(dec_cidr(v, &p)?);
        } else if key_is(k, "gw") {
            r.gw = dec_ip(v, &p)?;
        } else if key_is(k, "mtu") {
            dec_int(&mut r.mtu, v, &p)?;
        } else if key_is(k, "advmss") {
            dec_int(&mut r.advmss, v, &p)?;
        } else if key_is(k, "priority") {
            dec_int(&mut r.priority, v, &p)?;
        } else if key_is(k, "table") {
            dec_opt_int(&mut r.table, v, &p)?;
        } else if key_is(k, "scope") {
            dec_opt_int(&mut r.scope, v, &p)?;
        }
    }
    let pending = match dst {
        Some(d) => {
            r.dst = d;
            None
        }
        None => Some(missing(path, "dst")),
    };
    Ok((r, pending))
}

/// Interfaces have no custom decoder in Go: a repeated key merges into the elements
/// already decoded, which we mirror.
pub(super) fn dec_interfaces(
    into: &mut Vec<Interface>,
    v: &Value,
    path: &str,
    ctx: Ctx,
    v1: bool,
) -> Result<(), CniError> {
    let a = match v {
        Value::Null => {
            into.clear();
            return Ok(());
        }
        Value::Array(a) => a,
        other => return Err(want(path, "an array", other)),
    };
    into.truncate(a.len());
    for (i, e) in a.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        if i >= into.len() {
            into.push(Interface::default());
        }
        let intf = &mut into[i];
        for (k, v) in entries(as_object(e, &ip)?, ctx) {
            let p = join(&ip, k);
            if key_is(k, "name") {
                dec_string(&mut intf.name, v, &p)?;
            } else if key_is(k, "mac") {
                dec_string(&mut intf.mac, v, &p)?;
            } else if key_is(k, "sandbox") {
                dec_string(&mut intf.sandbox, v, &p)?;
            } else if v1 && key_is(k, "mtu") {
                dec_int(&mut intf.mtu, v, &p)?;
            } else if v1 && key_is(k, "socketPath") {
                dec_string(&mut intf.socket_path, v, &p)?;
            } else if v1 && key_is(k, "pciID") {
                dec_string(&mut intf.pci_id, v, &p)?;
            }
        }
    }
    Ok(())
}

pub(super) fn dec_ip040(v: &Value, path: &str, ctx: Ctx) -> Result<(Ip040, Pending), CniError> {
    let mut r = Ip040::default();
    let mut addr = None;
    for (k, v) in entries(as_object(v, path)?, ctx) {
        let p = join(path, k);
        if key_is(k, "version") {
            dec_string(&mut r.version, v, &p)?;
        } else if key_is(k, "interface") {
            dec_opt_int(&mut r.interface, v, &p)?;
        } else if key_is(k, "address") {
            addr = Some(dec_cidr(v, &p)?);
        } else if key_is(k, "gateway") {
            r.gateway = dec_ip(v, &p)?;
        }
    }
    let pending = match addr {
        Some(a) => {
            r.address = a;
            None
        }
        None => Some(missing(path, "address")),
    };
    Ok((r, pending))
}

pub(super) fn dec_ip100(v: &Value, path: &str, ctx: Ctx) -> Result<(IpConfig, Pending), CniError> {
    let mut r = IpConfig::default();
    let mut addr = None;
    for (k, v) in entries(as_object(v, path)?, ctx) {
        let p = join(path, k);
        if key_is(k, "interface") {
            dec_opt_int(&mut r.interface, v, &p)?;
        } else if key_is(k, "address") {
            addr = Some(dec_cidr(v, &p)?);
        } else if key_is(k, "gateway") {
            r.gateway = dec_ip(v, &p)?;
        }
    }
    let pending = match addr {
        Some(a) => {
            r.address = a;
            None
        }
        None => Some(missing(path, "address")),
    };
    Ok((r, pending))
}

pub(super) fn dec_ip020(v: &Value, path: &str, ctx: Ctx) -> Result<(Option<Ip020>, Pending), CniError> {
    if v.is_null() {
        return Ok((None, None));
    }
    let mut r = Ip020::default();
    let mut ip = None;
    let mut pend_routes = None;
    for (k, v) in entries(as_object(v, path)?, ctx) {
        let p = join(path, k);
        if key_is(k, "ip") {
            ip = Some(dec_cidr(v, &p)?);
        } else if key_is(k, "gateway") {
            r.gateway = dec_ip(v, &p)?;
        } else if key_is(k, "routes") {
            pend_routes = dec_list(&mut r.routes, v, &p, ctx, dec_route)?;
        }
    }
    let pending = match ip {
        Some(ip) => {
            r.ip = ip;
            pend_routes
        }
        None => Some(missing(path, "ip")),
    };
    Ok((Some(r), pending))
}

pub(super) fn finish<T>(r: T, pending: [Pending; 2]) -> Result<T, CniError> {
    match pending.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

pub(super) fn decode_020(m: &Map<String, Value>, ctx: Ctx) -> Result<Result020, CniError> {
    let mut r = Result020::default();
    let (mut p4, mut p6) = (None, None);
    for (k, v) in entries(m, ctx) {
        if key_is(k, "cniVersion") {
            dec_string(&mut r.cni_version, v, k)?;
        } else if key_is(k, "ip4") {
            (r.ip4, p4) = dec_ip020(v, k, ctx)?;
        } else if key_is(k, "ip6") {
            (r.ip6, p6) = dec_ip020(v, k, ctx)?;
        } else if key_is(k, "dns") {
            dec_dns_into(&mut r.dns, v, k, ctx)?;
        }
    }
    finish(r, [p4, p6])
}

pub(super) fn decode_040(m: &Map<String, Value>, ctx: Ctx) -> Result<Result040, CniError> {
    let mut r = Result040::default();
    let (mut p_ips, mut p_routes) = (None, None);
    for (k, v) in entries(m, ctx) {
        if key_is(k, "cniVersion") {
            dec_string(&mut r.cni_version, v, k)?;
        } else if key_is(k, "interfaces") {
            dec_interfaces(&mut r.interfaces, v, k, ctx, false)?;
        } else if key_is(k, "ips") {
            p_ips = dec_list(&mut r.ips, v, k, ctx, dec_ip040)?;
        } else if key_is(k, "routes") {
            p_routes = dec_list(&mut r.routes, v, k, ctx, dec_route)?;
        } else if key_is(k, "dns") {
            dec_dns_into(&mut r.dns, v, k, ctx)?;
        }
    }
    finish(r, [p_ips, p_routes])
}

pub(super) fn decode_100(m: &Map<String, Value>, ctx: Ctx) -> Result<Result100, CniError> {
    let mut r = Result100::default();
    let (mut p_ips, mut p_routes) = (None, None);
    for (k, v) in entries(m, ctx) {
        if key_is(k, "cniVersion") {
            dec_string(&mut r.cni_version, v, k)?;
        } else if key_is(k, "interfaces") {
            dec_interfaces(&mut r.interfaces, v, k, ctx, true)?;
        } else if key_is(k, "ips") {
            p_ips = dec_list(&mut r.ips, v, k, ctx, dec_ip100)?;
        } else if key_is(k, "routes") {
            p_routes = dec_list(&mut r.routes, v, k, ctx, dec_route)?;
        } else if key_is(k, "dns") {
            dec_dns_into(&mut r.dns, v, k, ctx)?;
        }
    }
    finish(r, [p_ips, p_routes])
}
