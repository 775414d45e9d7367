//! CNI results in the three layouts of the spec's history, read and written the way
//! libcni's Go types do it.
//!
//! * 0.1.0, 0.2.0 (`Result020`): `ip4` / `ip6` objects, each with its own routes.
//! * 0.3.0, 0.3.1, 0.4.0 (`Result040`): `interfaces`, `ips` with a `version`, `routes`.
//! * 1.0.0, 1.1.0 (`Result100`): as 0.4 without `version`; interfaces may carry the 1.1
//!   fields `mtu`, `socketPath`, `pciID`.
//!
//! Routes are one shared type in every layout (as `types.Route` is in Go), so the 1.1
//! route fields are read and written in every version.
//!
//! Reading follows Go's `encoding/json` as libcni uses it: unknown keys are ignored, keys
//! match case-insensitively, a `null` leaves a scalar as it was and empties a list,
//! integers must be integer literals that fit in 64 bits. Where Go would keep a zero
//! address (a missing `address`, `dst` or `ip`, which it then prints as "`<nil>`") or a
//! `null` list element, we return a decoding error instead.
//!
//! Writing follows Go's struct field order and `omitempty` rules; `dns` is always written
//! (as `{}` when empty), exactly as libcni 1.1.2's cnitool prints it.

use super::error::CniError;
use super::ipnet::{format_ip, parse_ip, IpNet};
use super::json_kind::{json_kind, Spelling};
use super::version::{self, Family};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io;
use std::net::IpAddr;

/// `types.DNS`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// `types.Route` (spec 1.1 fields included: `mtu`, `advmss`, `priority` are omitted when
/// 0, `table` and `scope` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: i64,
    pub advmss: i64,
    pub priority: i64,
    pub table: Option<i64>,
    pub scope: Option<i64>,
}

/// An interface entry. In 0.3/0.4 results only `name`, `mac` and `sandbox` exist (the
/// other fields are neither read nor written there, and are dropped by conversion to 0.x).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: i64,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

/// A 1.x `ips` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    /// Index into `interfaces` (Go `*int`: any 64-bit value, unchecked).
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// Result of spec 1.0.0 and 1.1.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result100 {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A 0.3/0.4 `ips` entry; `version` is "4" or "6" (kept verbatim when read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ip040 {
    pub version: String,
    pub interface: Option<i64>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// Result of spec 0.3.0, 0.3.1 and 0.4.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result040 {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<Ip040>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A 0.1/0.2 `ip4` or `ip6` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ip020 {
    pub ip: IpNet,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
}

/// Result of spec 0.1.0 and 0.2.0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Result020 {
    pub cni_version: String,
    pub ip4: Option<Ip020>,
    pub ip6: Option<Ip020>,
    pub dns: Dns,
}

/// A result of any supported version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniResult {
    V02(Result020),
    V04(Result040),
    V1(Result100),
}

impl Default for CniResult {
    fn default() -> Self {
        CniResult::V1(Result100 {
            cni_version: version::CURRENT.to_string(),
            ..Default::default()
        })
    }
}

/// The versions each layout accepts when read (libcni's creators' lists).
pub(crate) const VERSIONS_020: &[&str] = &["0.1.0", "0.2.0"];
pub(crate) const VERSIONS_040: &[&str] = &["0.3.0", "0.3.1", "0.4.0"];
pub(crate) const VERSIONS_100: &[&str] = &["1.0.0", "1.1.0"];

/// What a layout's Go type assumes for an unset version (its ImplementedSpecVersion).
pub(crate) fn implemented_version(f: Family) -> &'static str {
    match f {
        Family::V02 => "0.2.0",
        Family::V04 => "0.4.0",
        Family::V1 => "1.1.0",
    }
}

impl CniResult {
    /// Read a result as libcni reads a plugin's output (invoke's `fixupResultVersion`
    /// then `create.Create`): `cniVersion` missing, empty or not a string means
    /// `fallback_version`; `null` is an empty result; anything but an object is an error.
    /// Unknown version: code 1. Bad JSON shapes, addresses or numbers: code 6.
    pub fn from_value(v: &Value, fallback_version: &str) -> Result<CniResult, CniError> {
        let empty = Map::new();
        let obj = match v {
            Value::Object(m) => m,
            Value::Null => &empty,
            other => {
                return Err(CniError::decode(format!(
                    "failed to unmarshal raw result: expected a JSON object, got {}",
                    json_kind(other, Spelling::Go)
                )))
            }
        };
        let (ver, body): (String, Cow<'_, Map<String, Value>>) = match obj.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => (s.clone(), Cow::Borrowed(obj)),
            _ => {
                let mut m = obj.clone();
                m.insert("cniVersion".to_string(), Value::String(fallback_version.to_string()));
                (fallback_version.to_string(), Cow::Owned(m))
            }
        };
        // libcni re-marshals a fixed-up result from a Go map, which sorts every object's
        // keys; with case-insensitive keys that order decides which duplicate wins.
        let ctx = Ctx {
            sorted: matches!(body, Cow::Owned(_)),
        };
        let fam = version::family(&ver)?;
        let res = match fam {
            Family::V02 => {
                let mut r = decode_020(&body, ctx)?;
                if r.cni_version.is_empty() {
                    r.cni_version = "0.1.0".to_string();
                }
                check_decoded(&r.cni_version, VERSIONS_020, "[ 0.1.0 0.2.0]")?;
                CniResult::V02(r)
            }
            Family::V04 => {
                let r = decode_040(&body, ctx)?;
                check_decoded(&r.cni_version, VERSIONS_040, "[0.3.0 0.3.1 0.4.0]")?;
                CniResult::V04(r)
            }
            Family::V1 => {
                let r = decode_100(&body, ctx)?;
                check_decoded(&r.cni_version, VERSIONS_100, "[1.0.0 1.1.0]")?;
                CniResult::V1(r)
            }
        };
        Ok(res)
    }

    /// `from_value` on raw bytes (a plugin's stdout). Not JSON: code 6.
    pub fn from_slice(b: &[u8], fallback_version: &str) -> Result<CniResult, CniError> {
        let v: Value =
            serde_json::from_slice(b).map_err(|e| CniError::decode(format!("failed to unmarshal raw result: {e}")))?;
        CniResult::from_value(&v, fallback_version)
    }

    /// The result's version. An unset version reads as the layout's newest version
    /// (0.2.0, 0.4.0, 1.1.0), as libcni's `GetAsVersion` assumes.
    pub fn version(&self) -> &str {
        let (v, f) = match self {
            CniResult::V02(r) => (&r.cni_version, Family::V02),
            CniResult::V04(r) => (&r.cni_version, Family::V04),
            CniResult::V1(r) => (&r.cni_version, Family::V1),
        };
        if v.is_empty() {
            implemented_version(f)
        } else {
            v
        }
    }

    pub fn family(&self) -> Family {
        match self {
            CniResult::V02(_) => Family::V02,
            CniResult::V04(_) => Family::V04,
            CniResult::V1(_) => Family::V1,
        }
    }

    /// The result as version `to` (libcni's `GetAsVersion`). The same version gives the
    /// same value back; "" means 0.1.0; a version outside `version::SUPPORTED` is code 1;
    /// a result without IPs cannot go to 0.1/0.2 (code 1, "cannot convert: no valid IP
    /// addresses").
    pub fn convert(&self, to: &str) -> Result<CniResult, CniError> {
        super::convert::convert(self, to)
    }

    /// Go-compatible JSON, keys in Go's struct field order.
    pub fn to_value(&self) -> Value {
        match self {
            CniResult::V02(r) => r.to_value(),
            CniResult::V04(r) => r.to_value(),
            CniResult::V1(r) => r.to_value(),
        }
    }

    /// What cnitool prints: Go's `json.MarshalIndent(r, "", "    ")`, no trailing newline.
    pub fn to_json_pretty(&self) -> String {
        go_json(&self.to_value(), true)
    }

    /// Compact Go `json.Marshal` text.
    pub fn to_json(&self) -> String {
        go_json(&self.to_value(), false)
    }

    /// The result as a 1.1.0 struct, for in-process stages.
    pub fn to_v1(&self) -> Result<Result100, CniError> {
        match self.convert(version::CURRENT)? {
            CniResult::V1(r) => Ok(r),
            _ => Err(CniError::internal("result conversion to 1.x gave another layout")),
        }
    }

    /// A result of `version` built from a 1.x struct. A struct whose own version is not a
    /// 1.x one is taken as 1.1.0.
    pub fn from_v1(r: Result100, version: &str) -> Result<CniResult, CniError> {
        let mut r = r;
        if !VERSIONS_100.contains(&r.cni_version.as_str()) {
            r.cni_version = version::CURRENT.to_string();
        }
        CniResult::V1(r).convert(version)
    }
}

impl Serialize for CniResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl From<Result020> for CniResult {
    fn from(r: Result020) -> Self {
        CniResult::V02(r)
    }
}

impl From<Result040> for CniResult {
    fn from(r: Result040) -> Self {
        CniResult::V04(r)
    }
}

impl From<Result100> for CniResult {
    fn from(r: Result100) -> Self {
        CniResult::V1(r)
    }
}

fn check_decoded(v: &str, allowed: &[&str], shown: &str) -> Result<(), CniError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(CniError::version(format!(
            "result type supports {shown} but unmarshalled CNIVersion is {v:?}"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Writing

fn put_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
}

fn put_list(m: &mut Map<String, Value>, k: &str, v: &[String]) {
    if !v.is_empty() {
        m.insert(
            k.to_string(),
            Value::Array(v.iter().map(|s| Value::String(s.clone())).collect()),
        );
    }
}

fn put_int(m: &mut Map<String, Value>, k: &str, v: i64) {
    if v != 0 {
        m.insert(k.to_string(), Value::from(v));
    }
}

fn put_opt_int(m: &mut Map<String, Value>, k: &str, v: Option<i64>) {
    if let Some(v) = v {
        m.insert(k.to_string(), Value::from(v));
    }
}

fn put_ip(m: &mut Map<String, Value>, k: &str, v: &Option<IpAddr>) {
    if let Some(ip) = v {
        m.insert(k.to_string(), Value::String(format_ip(ip)));
    }
}

fn put_net(m: &mut Map<String, Value>, k: &str, v: &IpNet) {
    m.insert(k.to_string(), Value::String(v.to_string()));
}

fn put_objs<T>(m: &mut Map<String, Value>, k: &str, v: &[T], f: impl Fn(&T) -> Value) {
    if !v.is_empty() {
        m.insert(k.to_string(), Value::Array(v.iter().map(f).collect()));
    }
}

impl Dns {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_list(&mut m, "nameservers", &self.nameservers);
        put_str(&mut m, "domain", &self.domain);
        put_list(&mut m, "search", &self.search);
        put_list(&mut m, "options", &self.options);
        Value::Object(m)
    }
}

impl Route {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_net(&mut m, "dst", &self.dst);
        put_ip(&mut m, "gw", &self.gw);
        put_int(&mut m, "mtu", self.mtu);
        put_int(&mut m, "advmss", self.advmss);
        put_int(&mut m, "priority", self.priority);
        put_opt_int(&mut m, "table", self.table);
        put_opt_int(&mut m, "scope", self.scope);
        Value::Object(m)
    }
}

impl Interface {
    /// The 1.x form (all fields).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".to_string(), Value::String(self.name.clone()));
        put_str(&mut m, "mac", &self.mac);
        put_int(&mut m, "mtu", self.mtu);
        put_str(&mut m, "sandbox", &self.sandbox);
        put_str(&mut m, "socketPath", &self.socket_path);
        put_str(&mut m, "pciID", &self.pci_id);
        Value::Object(m)
    }

    /// The 0.3/0.4 form: name, mac, sandbox.
    pub fn to_value_040(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".to_string(), Value::String(self.name.clone()));
        put_str(&mut m, "mac", &self.mac);
        put_str(&mut m, "sandbox", &self.sandbox);
        Value::Object(m)
    }
}

impl IpConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_opt_int(&mut m, "interface", self.interface);
        put_net(&mut m, "address", &self.address);
        put_ip(&mut m, "gateway", &self.gateway);
        Value::Object(m)
    }
}

impl Ip040 {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("version".to_string(), Value::String(self.version.clone()));
        put_opt_int(&mut m, "interface", self.interface);
        put_net(&mut m, "address", &self.address);
        put_ip(&mut m, "gateway", &self.gateway);
        Value::Object(m)
    }
}

impl Ip020 {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_net(&mut m, "ip", &self.ip);
        put_ip(&mut m, "gateway", &self.gateway);
        put_objs(&mut m, "routes", &self.routes, Route::to_value);
        Value::Object(m)
    }
}

impl Result100 {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_str(&mut m, "cniVersion", &self.cni_version);
        put_objs(&mut m, "interfaces", &self.interfaces, Interface::to_value);
        put_objs(&mut m, "ips", &self.ips, IpConfig::to_value);
        put_objs(&mut m, "routes", &self.routes, Route::to_value);
        m.insert("dns".to_string(), self.dns.to_value());
        Value::Object(m)
    }
}

impl Result040 {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_str(&mut m, "cniVersion", &self.cni_version);
        put_objs(&mut m, "interfaces", &self.interfaces, Interface::to_value_040);
        put_objs(&mut m, "ips", &self.ips, Ip040::to_value);
        put_objs(&mut m, "routes", &self.routes, Route::to_value);
        m.insert("dns".to_string(), self.dns.to_value());
        Value::Object(m)
    }
}

impl Result020 {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        put_str(&mut m, "cniVersion", &self.cni_version);
        if let Some(ip) = &self.ip4 {
            m.insert("ip4".to_string(), ip.to_value());
        }
        if let Some(ip) = &self.ip6 {
            m.insert("ip6".to_string(), ip.to_value());
        }
        m.insert("dns".to_string(), self.dns.to_value());
        Value::Object(m)
    }
}

/// A serde_json formatter that escapes strings as Go's `encoding/json` does: `<`, `>`,
/// `&`, U+2028 and U+2029 as `\u....`, and backspace / form feed as `\u0008` / `\u000c`.
struct GoFormatter {
    pretty: bool,
    inner: serde_json::ser::PrettyFormatter<'static>,
}

impl serde_json::ser::Formatter for GoFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.begin_array(w)
        } else {
            w.write_all(b"[")
        }
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.end_array(w)
        } else {
            w.write_all(b"]")
        }
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if self.pretty {
            self.inner.begin_array_value(w, first)
        } else if first {
            Ok(())
        } else {
            w.write_all(b",")
        }
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.end_array_value(w)
        } else {
            Ok(())
        }
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.begin_object(w)
        } else {
            w.write_all(b"{")
        }
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.end_object(w)
        } else {
            w.write_all(b"}")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if self.pretty {
            self.inner.begin_object_key(w, first)
        } else if first {
            Ok(())
        } else {
            w.write_all(b",")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.begin_object_value(w)
        } else {
            w.write_all(b":")
        }
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.pretty {
            self.inner.end_object_value(w)
        } else {
            Ok(())
        }
    }
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc)?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        e: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        match e {
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(w, other),
        }
    }
}

/// JSON text as Go's `json.Marshal` (or `json.MarshalIndent(v, "", "    ")` when `pretty`)
/// writes it for this value: key order kept, Go's string escaping.
pub fn go_json(v: &Value, pretty: bool) -> String {
    let mut buf = Vec::new();
    let fmt = GoFormatter {
        pretty,
        inner: serde_json::ser::PrettyFormatter::with_indent(b"    "),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------------------
// Reading

#[derive(Clone, Copy)]
struct Ctx {
    /// Visit object keys in sorted order (a result libcni re-marshalled from a map).
    sorted: bool,
}

fn derr(path: &str, msg: impl std::fmt::Display) -> CniError {
    CniError::decode(format!("failed to decode result: {path}: {msg}"))
}

fn want(path: &str, what: &str, got: &Value) -> CniError {
    derr(path, format!("expected {what}, got {}", json_kind(got, Spelling::Go)))
}

fn join(path: &str, key: &str) -> String {
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
fn entries(m: &Map<String, Value>, ctx: Ctx) -> Vec<(&str, &Value)> {
    let mut e: Vec<(&str, &Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if ctx.sorted {
        e.sort_by(|a, b| a.0.cmp(b.0));
    }
    e
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CniError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(want(path, "an object", other)),
    }
}

/// A string field: `null` leaves it unchanged.
fn dec_string(into: &mut String, v: &Value, path: &str) -> Result<(), CniError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            *into = s.clone();
            Ok(())
        }
        other => Err(want(path, "a string", other)),
    }
}

fn int_of(v: &Value, path: &str) -> Result<i64, CniError> {
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
fn dec_int(into: &mut i64, v: &Value, path: &str) -> Result<(), CniError> {
    if !v.is_null() {
        *into = int_of(v, path)?;
    }
    Ok(())
}

/// A `*int` field: `null` clears it.
fn dec_opt_int(into: &mut Option<i64>, v: &Value, path: &str) -> Result<(), CniError> {
    *into = if v.is_null() { None } else { Some(int_of(v, path)?) };
    Ok(())
}

/// A `[]string` field: `null` empties it, a `null` element is "".
fn dec_string_list(into: &mut Vec<String>, v: &Value, path: &str) -> Result<(), CniError> {
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
fn dec_cidr(v: &Value, path: &str) -> Result<IpNet, CniError> {
    match v {
        Value::String(s) => s.parse::<IpNet>().map_err(|e| derr(path, e)),
        Value::Null => Err(derr(path, "invalid CIDR address: ")),
        other => Err(want(path, "a string", other)),
    }
}

/// A `net.IP`: `null` and "" are none.
fn dec_ip(v: &Value, path: &str) -> Result<Option<IpAddr>, CniError> {
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
type Pending = Option<CniError>;

fn missing(path: &str, key: &str) -> CniError {
    derr(&join(path, key), "missing")
}

/// A list of elements each decoded afresh (Go types with their own UnmarshalJSON).
fn dec_list<T>(
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

fn dec_dns_into(d: &mut Dns, v: &Value, path: &str, ctx: Ctx) -> Result<(), CniError> {
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

fn dec_route(v: &Value, path: &str, ctx: Ctx) -> Result<(Route, Pending), CniError> {
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
fn dec_interfaces(into: &mut Vec<Interface>, v: &Value, path: &str, ctx: Ctx, v1: bool) -> Result<(), CniError> {
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

fn dec_ip040(v: &Value, path: &str, ctx: Ctx) -> Result<(Ip040, Pending), CniError> {
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

fn dec_ip100(v: &Value, path: &str, ctx: Ctx) -> Result<(IpConfig, Pending), CniError> {
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

fn dec_ip020(v: &Value, path: &str, ctx: Ctx) -> Result<(Option<Ip020>, Pending), CniError> {
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

fn finish<T>(r: T, pending: [Pending; 2]) -> Result<T, CniError> {
    match pending.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

fn decode_020(m: &Map<String, Value>, ctx: Ctx) -> Result<Result020, CniError> {
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

fn decode_040(m: &Map<String, Value>, ctx: Ctx) -> Result<Result040, CniError> {
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

fn decode_100(m: &Map<String, Value>, ctx: Ctx) -> Result<Result100, CniError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::{DECODING_FAILURE, INCOMPATIBLE_VERSION};
    use serde_json::json;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }
    fn parse(s: &str, fallback: &str) -> CniResult {
        CniResult::from_slice(s.as_bytes(), fallback).unwrap()
    }
    fn parse_err(s: &str, fallback: &str) -> CniError {
        CniResult::from_slice(s.as_bytes(), fallback).unwrap_err()
    }

    // Printed by libcni 1.1.2's PrintTo for the same input (checked against the Go code).
    const GOLDEN_040: &str = r#"{
    "cniVersion": "0.4.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "sandbox": "/var/run/netns/c1"
        },
        {
            "name": "lo"
        }
    ],
    "ips": [
        {
            "version": "4",
            "interface": 0,
            "address": "10.1.0.5/16",
            "gateway": "10.1.0.1"
        },
        {
            "version": "6",
            "interface": 1,
            "address": "2001:db8::5/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1"
        },
        {
            "dst": "::/0"
        }
    ],
    "dns": {
        "nameservers": [
            "10.1.0.1",
            "2001:db8::53"
        ],
        "domain": "example.com",
        "search": [
            "example.com",
            "svc.example.com"
        ],
        "options": [
            "ndots:5"
        ]
    }
}"#;

    #[test]
    fn golden_040_both_ways() {
        let input = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/c1","mtu":1500},{"name":"lo"}],
            "ips":[{"version":"4","interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"version":"6","interface":1,"address":"2001:DB8::5/64","gateway":""}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0"}],
            "dns":{"nameservers":["10.1.0.1","2001:db8::53"],"domain":"example.com","search":["example.com","svc.example.com"],"options":["ndots:5"]}}"#;
        let r = parse(input, "1.0.0");
        let want = Result040 {
            cni_version: "0.4.0".into(),
            interfaces: vec![
                // mtu is not a 0.4 field: not read
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:01:00:05".into(),
                    sandbox: "/var/run/netns/c1".into(),
                    ..Default::default()
                },
                Interface {
                    name: "lo".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                Ip040 {
                    version: "4".into(),
                    interface: Some(0),
                    address: net("10.1.0.5/16"),
                    gateway: ip("10.1.0.1"),
                },
                Ip040 {
                    version: "6".into(),
                    interface: Some(1),
                    address: net("2001:db8::5/64"),
                    gateway: None,
                },
            ],
            routes: vec![
                Route {
                    dst: net("0.0.0.0/0"),
                    gw: ip("10.1.0.1"),
                    ..Default::default()
                },
                Route {
                    dst: net("::/0"),
                    ..Default::default()
                },
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into(), "2001:db8::53".into()],
                domain: "example.com".into(),
                search: vec!["example.com".into(), "svc.example.com".into()],
                options: vec!["ndots:5".into()],
            },
        };
        assert_eq!(r, CniResult::V04(want.clone()));
        assert_eq!(r.version(), "0.4.0");
        assert_eq!(r.to_json_pretty(), GOLDEN_040);
        // and the golden text reads back to the same value
        assert_eq!(parse(GOLDEN_040, "1.0.0"), CniResult::V04(want));
        // writing a 0.4 result never emits the 1.x-only interface fields
        let mut odd = match parse(GOLDEN_040, "") {
            CniResult::V04(r) => r,
            other => panic!("{other:?}"),
        };
        odd.interfaces[0].mtu = 9000;
        odd.interfaces[0].pci_id = "0000:00:01.0".into();
        assert_eq!(CniResult::V04(odd).to_json_pretty(), GOLDEN_040);
    }

    const GOLDEN_110: &str = r#"{
    "cniVersion": "1.1.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "mtu": 1400,
            "sandbox": "/var/run/netns/c1",
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:00:1f.6"
        },
        {
            "name": ""
        }
    ],
    "ips": [
        {
            "interface": 0,
            "address": "10.1.0.5/16",
            "gateway": "10.1.0.1"
        },
        {
            "address": "2001:db8::5/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1300,
            "advmss": 1260,
            "priority": 10,
            "table": 0,
            "scope": 253
        },
        {
            "dst": "::/0"
        }
    ],
    "dns": {}
}"#;

    #[test]
    fn golden_1x_both_ways() {
        let input = r#"{"cniVersion":"1.1.0",
            "interfaces":[{"name":"eth0","mac":"0a:58:0a:01:00:05","mtu":1400,"sandbox":"/var/run/netns/c1","socketPath":"/run/vhost.sock","pciID":"0000:00:1f.6"},{}],
            "ips":[{"interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"address":"2001:db8:0::5/64","interface":null}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1300,"advmss":1260,"priority":10,"table":0,"scope":253},{"dst":"::/0","gw":null,"mtu":0,"table":null}],
            "dns":{}}"#;
        let r = parse(input, "0.4.0");
        let want = Result100 {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:01:00:05".into(),
                    mtu: 1400,
                    sandbox: "/var/run/netns/c1".into(),
                    socket_path: "/run/vhost.sock".into(),
                    pci_id: "0000:00:1f.6".into(),
                },
                Interface::default(),
            ],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: net("10.1.0.5/16"),
                    gateway: ip("10.1.0.1"),
                },
                IpConfig {
                    interface: None,
                    address: net("2001:db8::5/64"),
                    gateway: None,
                },
            ],
            routes: vec![
                Route {
                    dst: net("0.0.0.0/0"),
                    gw: ip("10.1.0.1"),
                    mtu: 1300,
                    advmss: 1260,
                    priority: 10,
                    table: Some(0),
                    scope: Some(253),
                },
                Route {
                    dst: net("::/0"),
                    ..Default::default()
                },
            ],
            dns: Dns::default(),
        };
        assert_eq!(r, CniResult::V1(want.clone()));
        assert_eq!(r.to_json_pretty(), GOLDEN_110);
        assert_eq!(parse(GOLDEN_110, ""), CniResult::V1(want.clone()));
        // 1.0.0 is the same layout
        let r10 = parse(&GOLDEN_110.replace("1.1.0", "1.0.0"), "");
        assert_eq!(
            r10,
            CniResult::V1(Result100 {
                cni_version: "1.0.0".into(),
                ..want
            })
        );
        assert_eq!(r10.to_json_pretty(), GOLDEN_110.replace("1.1.0", "1.0.0"));
    }

    const GOLDEN_020: &str = r#"{
    "cniVersion": "0.2.0",
    "ip4": {
        "ip": "10.1.0.5/16",
        "gateway": "10.1.0.1",
        "routes": [
            {
                "dst": "0.0.0.0/0",
                "gw": "10.1.0.1"
            },
            {
                "dst": "192.168.0.0/16"
            }
        ]
    },
    "ip6": {
        "ip": "2001:db8::5/64",
        "gateway": "2001:db8::1",
        "routes": [
            {
                "dst": "::/0",
                "gw": "2001:db8::1"
            }
        ]
    },
    "dns": {
        "nameservers": [
            "10.1.0.1"
        ],
        "search": [
            "example.com"
        ]
    }
}"#;

    #[test]
    fn golden_020_both_ways() {
        let r = parse(GOLDEN_020, "1.0.0");
        let want = Result020 {
            cni_version: "0.2.0".into(),
            ip4: Some(Ip020 {
                ip: net("10.1.0.5/16"),
                gateway: ip("10.1.0.1"),
                routes: vec![
                    Route {
                        dst: net("0.0.0.0/0"),
                        gw: ip("10.1.0.1"),
                        ..Default::default()
                    },
                    Route {
                        dst: net("192.168.0.0/16"),
                        ..Default::default()
                    },
                ],
            }),
            ip6: Some(Ip020 {
                ip: net("2001:db8::5/64"),
                gateway: ip("2001:db8::1"),
                routes: vec![Route {
                    dst: net("::/0"),
                    gw: ip("2001:db8::1"),
                    ..Default::default()
                }],
            }),
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                search: vec!["example.com".into()],
                ..Default::default()
            },
        };
        assert_eq!(r, CniResult::V02(want.clone()));
        assert_eq!(r.to_json_pretty(), GOLDEN_020);
        // 0.1.0, only ip4, no dns content, routes omitted when empty
        let r = parse(
            r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.1.0.5/16","routes":[]},"ip6":null}"#,
            "",
        );
        assert_eq!(
            r.to_json_pretty(),
            "{\n    \"cniVersion\": \"0.1.0\",\n    \"ip4\": {\n        \"ip\": \"10.1.0.5/16\"\n    },\n    \"dns\": {}\n}"
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.1.0.5/16"},"dns":{}}"#
        );
    }

    #[test]
    fn empty_results_always_print_dns() {
        for (v, text) in [
            ("0.1.0", r#"{"cniVersion":"0.1.0","dns":{}}"#),
            ("0.3.1", r#"{"cniVersion":"0.3.1","dns":{}}"#),
            ("1.1.0", r#"{"cniVersion":"1.1.0","dns":{}}"#),
        ] {
            assert_eq!(parse("{}", v).to_json(), text);
        }
        assert_eq!(
            parse("{}", "1.0.0").to_json_pretty(),
            "{\n    \"cniVersion\": \"1.0.0\",\n    \"dns\": {}\n}"
        );
    }

    #[test]
    fn host_bits_and_canonical_ips() {
        let r = parse(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16","gateway":"::FFFF:10.1.0.1"},{"address":"2001:0DB8:0000::0005/64"},{"address":"::ffff:10.9.8.7/120"}],
               "routes":[{"dst":"10.1.2.3/8","gw":"2001:DB8::1"}]}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"address":"2001:db8::5/64"},{"address":"10.9.8.7/24"}],"routes":[{"dst":"10.1.2.3/8","gw":"2001:db8::1"}],"dns":{}}"#
        );
    }

    #[test]
    fn interface_index_kept() {
        for idx in [0i64, 3, -1, i64::MAX, i64::MIN] {
            let text = format!(r#"{{"cniVersion":"1.0.0","ips":[{{"interface":{idx},"address":"10.0.0.2/24"}}]}}"#);
            let r = parse(&text, "");
            let CniResult::V1(r1) = &r else { panic!() };
            assert_eq!(r1.ips[0].interface, Some(idx));
            assert!(r.to_json().contains(&format!(r#""interface":{idx},"#)));
            for v in version::SUPPORTED
                .iter()
                .filter(|v| !v.starts_with("0.1") && !v.starts_with("0.2"))
            {
                assert!(
                    r.convert(v)
                        .unwrap()
                        .to_json()
                        .contains(&format!(r#""interface":{idx},"#)),
                    "{v}"
                );
            }
        }
        // "-0" is an integer literal to Go
        let r = parse(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","interface":-0,"address":"10.0.0.2/24"}]}"#,
            "",
        );
        assert!(r.to_json().contains(r#""interface":0,"#));
    }

    #[test]
    fn missing_version_takes_the_fallback() {
        let r = parse(r#"{"ips":[{"address":"10.0.0.2/24"}]}"#, "1.0.0");
        assert_eq!(r.version(), "1.0.0");
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"dns":{}}"#
        );
        // empty or non-string: same (fixupResultVersion)
        assert_eq!(parse(r#"{"cniVersion":"","ips":[]}"#, "0.3.1").version(), "0.3.1");
        assert_eq!(parse(r#"{"cniVersion":5}"#, "0.4.0").version(), "0.4.0");
        assert_eq!(parse(r#"{"cniVersion":null}"#, "1.1.0").version(), "1.1.0");
        // plugin printed "null": an empty result of the fallback version
        assert_eq!(parse("null", "0.4.0").to_json(), r#"{"cniVersion":"0.4.0","dns":{}}"#);
        // an empty fallback is 0.1.0, as in libcni
        assert_eq!(parse(r#"{"ip4":{"ip":"10.0.0.2/24"}}"#, "").version(), "0.1.0");
        // a present version wins over the fallback
        assert_eq!(
            parse(r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}"#, "1.0.0").version(),
            "0.2.0"
        );
        // fallback used in a layout it does not fit: still read in the fallback's layout
        let r = CniResult::from_value(&json!({"ip4": {"ip": "10.0.0.2/24"}}), "1.0.0").unwrap();
        assert_eq!(r.to_json(), r#"{"cniVersion":"1.0.0","dns":{}}"#);
        // unknown fallback
        let e = CniResult::from_value(&json!({}), "9.9.9").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (INCOMPATIBLE_VERSION, "unsupported CNI result version \"9.9.9\"")
        );
    }

    #[test]
    fn unknown_versions_are_code_1() {
        for v in ["9.9.9", "1.0", "0.4", "v1.0.0", "1.2.0"] {
            let e = parse_err(&format!(r#"{{"cniVersion":"{v}"}}"#), "1.0.0");
            assert_eq!(e.code, INCOMPATIBLE_VERSION, "{v}");
            assert_eq!(e.msg, format!("unsupported CNI result version {v:?}"));
        }
        // a case-variant key that Go's decoder also applies
        let e = parse_err(r#"{"cniVersion":"0.4.0","CNIVERSION":"1.0.0"}"#, "");
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert_eq!(
            e.msg,
            "result type supports [0.3.0 0.3.1 0.4.0] but unmarshalled CNIVersion is \"1.0.0\""
        );
    }

    #[test]
    fn bad_inputs_are_code_6_naming_the_field() {
        let cases: &[(&str, &str)] = &[
            ("", "failed to unmarshal raw result"),
            ("{", "failed to unmarshal raw result"),
            ("[]", "expected a JSON object, got array"),
            ("\"x\"", "expected a JSON object, got string"),
            ("5", "expected a JSON object, got number"),
            (
                r#"{"cniVersion":"1.0.0","ips":{}}"#,
                "ips: expected an array, got object",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":["x"]}"#,
                "ips[0]: expected an object, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[null]}"#,
                "ips[0]: expected an object, got null",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":5}]}"#,
                "ips[0].address: expected a string, got number",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1"}]}"#,
                "ips[0].address: invalid CIDR address: 10.0.0.1",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/33"}]}"#,
                "ips[0].address: invalid CIDR address: 10.0.0.1/33",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":null}]}"#,
                "ips[0].address: invalid CIDR address: ",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"gateway":"10.0.0.1"}]}"#,
                "ips[0].address: missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","gateway":"x"}]}"#,
                "ips[0].gateway: invalid IP address: x",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","gateway":7}]}"#,
                "ips[0].gateway: expected a string, got number",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":"0"}]}"#,
                "ips[0].interface: expected an integer, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":1.5}]}"#,
                "ips[0].interface: expected a 64-bit integer, got 1.5",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":9223372036854775808}]}"#,
                "ips[0].interface: expected a 64-bit integer",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":1e400}]}"#,
                "failed to unmarshal raw result",
            ),
            (
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","mtu":"1500"}]}"#,
                "routes[0].mtu: expected an integer, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","table":true}]}"#,
                "routes[0].table: expected an integer, got bool",
            ),
            (
                r#"{"cniVersion":"1.0.0","routes":[{"gw":"10.0.0.1"}]}"#,
                "routes[0].dst: missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","gw":"::/0"}]}"#,
                "routes[0].gw: invalid IP address: ::/0",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":1}]}"#,
                "interfaces[0].name: expected a string, got number",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mtu":"x"}]}"#,
                "interfaces[0].mtu: expected an integer, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":[null]}"#,
                "interfaces[0]: expected an object, got null",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":"eth0"}"#,
                "interfaces: expected an array, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","dns":[]}"#,
                "dns: expected an object, got array",
            ),
            (
                r#"{"cniVersion":"1.0.0","dns":{"nameservers":"1.1.1.1"}}"#,
                "dns.nameservers: expected an array, got string",
            ),
            (
                r#"{"cniVersion":"1.0.0","dns":{"search":[1]}}"#,
                "dns.search[0]: expected a string, got number",
            ),
            (
                r#"{"cniVersion":"1.0.0","dns":{"domain":{}}}"#,
                "dns.domain: expected a string, got object",
            ),
            (
                r#"{"cniVersion":"0.4.0","ips":[{"version":4,"address":"10.0.0.2/8"}]}"#,
                "ips[0].version: expected a string, got number",
            ),
            (
                r#"{"cniVersion":"0.2.0","ip4":[]}"#,
                "ip4: expected an object, got array",
            ),
            (
                r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2"}}"#,
                "ip4.ip: invalid CIDR address: 10.0.0.2",
            ),
            (r#"{"cniVersion":"0.2.0","ip6":{"gateway":"::1"}}"#, "ip6.ip: missing"),
            (
                r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/8","routes":"x"}}"#,
                "ip4.routes: expected an array, got string",
            ),
            (
                r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/8","routes":[{"dst":"x"}]}}"#,
                "ip4.routes[0].dst: invalid CIDR address: x",
            ),
        ];
        for (input, needle) in cases {
            let e = parse_err(input, "1.0.0");
            assert_eq!(e.code, DECODING_FAILURE, "{input}: {e:?}");
            assert!(
                e.msg.contains(needle),
                "{input}: {:?} does not contain {needle:?}",
                e.msg
            );
        }
    }

    #[test]
    fn go_decoder_quirks() {
        // unknown keys ignored, keys case-insensitive (incl. Go's long-s folding), null
        // leaves scalars alone and empties lists
        let r = parse(
            r#"{"cniVersion":"1.0.0","extra":{"x":[1]},"IPS":[{"ADDRESS":"10.0.0.2/8","Gateway":null,"foo":1}],
                "ipſ":[{"address":"10.0.0.3/8"}],"Routes":null,"dns":{"Domain":"a","search":["x",null],"domain":null}}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/8"}],"dns":{"domain":"a","search":["x",""]}}"#
        );
        // a repeated dns object merges, as Go decodes into the same struct
        let r = parse(
            r#"{"cniVersion":"1.0.0","dns":{"domain":"a"},"DNS":{"search":["b"]}}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","dns":{"domain":"a","search":["b"]}}"#
        );
        // interfaces merge element-wise on a repeated key; ips/routes are replaced
        let r = parse(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mac":"m"},{"name":"c"}],"Interfaces":[{"sandbox":"s"}]}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mac":"m","sandbox":"s"}],"dns":{}}"#
        );
        // a missing address only matters if it survives a later duplicate key
        let r = parse(
            r#"{"cniVersion":"1.0.0","ips":[{}],"IPs":[{"address":"10.0.0.1/8"}]}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/8"}],"dns":{}}"#
        );
        // when the fallback is used libcni re-marshals a map: keys sorted, "IP4" < "ip4"
        let r = parse(r#"{"ip4":{"ip":"10.0.0.1/8"},"IP4":{"gateway":"10.0.0.9"}}"#, "0.2.0");
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.1/8"},"dns":{}}"#
        );
    }

    #[test]
    fn go_string_escaping() {
        let r = parse(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"<a&b>\u2028\u2029\b\f\u0001\u007f\n\t\"\\/é😀"}]}"#,
            "",
        );
        assert_eq!(
            r.to_json(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"\u003ca\u0026b\u003e\u2028\u2029\u0008\u000c\u0001"#
                .to_string()
                + "\u{7f}"
                + r#"\n\t\"\\/é😀"}],"dns":{}}"#
        );
    }

    #[test]
    fn v1_helpers() {
        let r = parse(GOLDEN_040, "");
        let v1 = r.to_v1().unwrap();
        assert_eq!(v1.cni_version, "1.1.0");
        assert_eq!(v1.ips[1].interface, Some(1));
        assert_eq!(v1.interfaces.len(), 2);
        let back = CniResult::from_v1(v1.clone(), "0.4.0").unwrap();
        assert_eq!(back, r);
        assert_eq!(
            CniResult::from_v1(v1.clone(), "1.1.0").unwrap(),
            CniResult::V1(v1.clone())
        );
        // a hand-built struct without a version is taken as 1.1.0
        let bare = Result100 {
            cni_version: String::new(),
            ..v1.clone()
        };
        assert_eq!(
            CniResult::from_v1(bare.clone(), "1.1.0").unwrap(),
            CniResult::V1(v1.clone())
        );
        assert_eq!(CniResult::V1(bare).version(), "1.1.0");
        let e = CniResult::from_v1(v1, "2.0.0").unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        let e = CniResult::from_v1(Result100::default(), "0.2.0").unwrap_err();
        assert_eq!(e.msg, "cannot convert: no valid IP addresses");
        assert_eq!(CniResult::default().version(), version::CURRENT);
        // Serialize matches to_value
        assert_eq!(serde_json::to_value(&r).unwrap(), r.to_value());
    }

    /// Deterministic mutations of valid results: never a panic, and whatever parses
    /// converts or fails cleanly.
    #[test]
    fn no_panics_on_mangled_input() {
        let seeds = [GOLDEN_020, GOLDEN_040, GOLDEN_110];
        let atoms = [
            json!(null),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(""),
            json!("x"),
            json!("10.0.0.1"),
            json!("::ffff:1.2.3.4/100"),
            json!(true),
            json!([]),
            json!({}),
            json!([null]),
            json!(["a"]),
            json!([{"dst": "1.0.0.0/8"}]),
            json!(u64::MAX),
            json!(i64::MIN),
        ];
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        fn mutate(v: &mut Value, next: &mut dyn FnMut(usize) -> usize, atoms: &[Value]) {
            match v {
                Value::Object(m) => {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    for k in keys {
                        match next(8) {
                            0 => {
                                m.remove(&k);
                            }
                            1 => {
                                m.insert(k, atoms[next(atoms.len())].clone());
                            }
                            2 => {
                                if let Some(x) = m.remove(&k) {
                                    m.insert(k.to_uppercase(), x);
                                }
                            }
                            _ => {
                                if let Some(x) = m.get_mut(&k) {
                                    mutate(x, next, atoms);
                                }
                            }
                        }
                    }
                }
                Value::Array(a) => {
                    for x in a.iter_mut() {
                        if next(3) == 0 {
                            mutate(x, next, atoms);
                        }
                    }
                }
                _ => {
                    if next(4) == 0 {
                        *v = atoms[next(atoms.len())].clone();
                    }
                }
            }
        }
        let mut parsed = 0;
        for round in 0..3000 {
            let mut v: Value = serde_json::from_str(seeds[round % seeds.len()]).unwrap();
            mutate(&mut v, &mut next, &atoms);
            let fallback = version::SUPPORTED[next(version::SUPPORTED.len())];
            if let Ok(r) = CniResult::from_value(&v, fallback) {
                parsed += 1;
                let _ = r.to_json_pretty();
                for to in version::SUPPORTED {
                    if let Ok(c) = r.convert(to) {
                        // what we print, we read back to the same value
                        assert_eq!(CniResult::from_slice(c.to_json().as_bytes(), "").unwrap(), c);
                    }
                }
            }
        }
        assert!(parsed > 100, "{parsed}");
    }
}
