//! The OTLP/JSON shape of finished spans (opentelemetry-proto's TracesData, JSON
//! mapping): one object per line, as the OpenTelemetry file exporter spec asks, so a
//! collector's file receiver (otlpjsonfile) can tail the file. IDs are hex and 64-bit
//! integers are decimal strings, per the OTLP/JSON encoding.

use super::context::hex;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}
impl From<i64> for AttrValue {
    fn from(n: i64) -> Self {
        AttrValue::Int(n)
    }
}
impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// A finished span, as recorded.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<EventData>,
    /// None: unset; Ok(()): ok; Err(message): error.
    pub status: Option<Result<(), String>>,
}

#[derive(Debug, Clone)]
pub struct EventData {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TracesData<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource {
    attributes: Vec<KeyValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    /// SPAN_KIND_INTERNAL: cnichain runs inside the runtime's CNI call.
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
    status: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    time_unix_nano: String,
    name: String,
    attributes: Vec<KeyValue>,
}

#[derive(Serialize)]
struct Status {
    /// 0 unset, 1 ok, 2 error.
    code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize)]
struct KeyValue {
    key: String,
    value: Value,
}

#[derive(Serialize)]
enum Value {
    #[serde(rename = "stringValue")]
    Str(String),
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
}

fn key_values(attrs: &[(String, AttrValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: match v {
                AttrValue::Str(s) => Value::Str(s.clone()),
                AttrValue::Int(n) => Value::Int(n.to_string()),
                AttrValue::Bool(b) => Value::Bool(*b),
            },
        })
        .collect()
}

/// One TracesData line (no newline) holding `spans`.
pub fn encode(spans: &[SpanData]) -> String {
    let resource = Resource {
        attributes: key_values(&[
            ("service.name".into(), "cnichain".into()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("process.pid".into(), i64::from(std::process::id()).into()),
        ]),
    };
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: hex(&s.trace_id),
            span_id: hex(&s.span_id),
            trace_state: s.trace_state.as_deref(),
            parent_span_id: s.parent_span_id.map(|p| hex(&p)),
            name: &s.name,
            kind: 1,
            start_time_unix_nano: s.start_unix_nano.to_string(),
            end_time_unix_nano: s.end_unix_nano.to_string(),
            attributes: key_values(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| Event {
                    time_unix_nano: e.time_unix_nano.to_string(),
                    name: e.name.clone(),
                    attributes: key_values(&e.attributes),
                })
                .collect(),
            status: match &s.status {
                None => Status { code: 0, message: None },
                Some(Ok(())) => Status { code: 1, message: None },
                Some(Err(m)) => Status {
                    code: 2,
                    message: Some(m.clone()),
                },
            },
        })
        .collect();
    let data = TracesData {
        resource_spans: [ResourceSpans {
            resource,
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: "cnichain",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans,
            }],
        }],
    };
    // Serializing these plain structs cannot fail; an empty object keeps the file valid
    // JSON lines should it ever.
    serde_json::to_string(&data).unwrap_or_else(|_| "{}".into())
}
