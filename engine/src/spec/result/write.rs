//! Writing results: Go's struct field order and `omitempty` rules, Go's string escapes.

use super::*;

pub(super) fn put_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
}

pub(super) fn put_list(m: &mut Map<String, Value>, k: &str, v: &[String]) {
    if !v.is_empty() {
        m.insert(
            k.to_string(),
            Value::Array(v.iter().map(|s| Value::String(s.clone())).collect()),
        );
    }
}

pub(super) fn put_int(m: &mut Map<String, Value>, k: &str, v: i64) {
    if v != 0 {
        m.insert(k.to_string(), Value::from(v));
    }
}

pub(super) fn put_opt_int(m: &mut Map<String, Value>, k: &str, v: Option<i64>) {
    if let Some(v) = v {
        m.insert(k.to_string(), Value::from(v));
    }
}

pub(super) fn put_ip(m: &mut Map<String, Value>, k: &str, v: &Option<IpAddr>) {
    if let Some(ip) = v {
        m.insert(k.to_string(), Value::String(format_ip(ip)));
    }
}

pub(super) fn put_net(m: &mut Map<String, Value>, k: &str, v: &IpNet) {
    m.insert(k.to_string(), Value::String(v.to_string()));
}

pub(super) fn put_objs<T>(m: &mut Map<String, Value>, k: &str, v: &[T], f: impl Fn(&T) -> Value) {
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
pub(super) struct GoFormatter {
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
