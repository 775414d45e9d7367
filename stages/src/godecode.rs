//! A serde Deserializer over a JSON value that reads object keys the way Go's
//! `encoding/json` does, so a stage's typed config accepts exactly the spellings the
//! reference plugin accepts (`"runtimeConfig": {"bandWidth": ...}`, `"MTU"`, ...).
//!
//! Go's rules, applied to every struct at every depth:
//! - a key matches a field exactly, else case-insensitively with Go's folding (which also
//!   folds U+017F to `s` and U+212A to `k`); among several folding fields the first
//!   declared wins; keys matching nothing are ignored (or left to `deny_unknown_fields`);
//! - keys are applied in document order, so of two keys naming one field the last wins;
//!   two objects for one struct or map field are merged, as Go decodes the second into the
//!   value the first filled;
//! - `null` for a struct field leaves it as it was (its `#[serde(default)]`); a `null`
//!   anywhere else (a list element, a map value, a nested field's value) is the type's zero
//!   value: `false`, `0`, `""`, an empty list, map or struct, `None`.
//!
//! Maps (`HashMap`, `serde_json::Map`) keep their keys as written, as Go's maps do.
//! `#[serde(flatten)]` and untagged enums buffer the input and match keys exactly, so
//! stage configs do not use them.
//!
//! One case cannot be reproduced: serde_json has already merged two byte-identical keys
//! into one entry at the first one's position, so `{"a":1,"A":2,"a":3}` reads `A` last.

use cnichain_engine::spec::result::key_is;
use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Error, Value};

/// Deserialize `T` from `v` with Go's key rules; errors carry the JSON path.
pub fn from_value<T: de::DeserializeOwned>(v: &Value) -> Result<T, serde_path_to_error::Error<Error>> {
    serde_path_to_error::deserialize(Go::One(v))
}

/// A value to deserialize: one JSON value, or the entries of several objects given for
/// one field (merged, in document order).
#[derive(Clone)]
enum Go<'a> {
    One(&'a Value),
    Merged(Vec<(&'a str, &'a Value)>),
}

/// Which declared field `key` sets: the exact name, else the first that folds equal.
fn field_for(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| key_is(key, f)))
        .copied()
}

/// The entries a struct visitor sees: each key renamed to the field it sets, one entry
/// per field (the last value, or the merge of a trailing run of objects), `null`s
/// dropped, unknown keys kept as written.
fn struct_entries<'a>(entries: &[(&'a str, &'a Value)], fields: &'static [&'static str]) -> Vec<(&'a str, Go<'a>)> {
    let mut grouped: Vec<(&'a str, Vec<&'a Value>)> = Vec::new();
    for (k, v) in entries {
        if v.is_null() {
            continue;
        }
        let name: &'a str = field_for(k, fields).unwrap_or(k);
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, vals)) => vals.push(v),
            None => grouped.push((name, vec![v])),
        }
    }
    grouped.into_iter().map(|(name, vals)| (name, merge(&vals))).collect()
}

/// Several values for one field: the last, or the objects at the end merged in order.
fn merge<'a>(vals: &[&'a Value]) -> Go<'a> {
    let last = vals[vals.len() - 1];
    if vals.len() == 1 || !last.is_object() {
        return Go::One(last);
    }
    let first_obj = vals.iter().rposition(|v| !v.is_object()).map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for v in &vals[first_obj..] {
        out.extend(object_entries(v));
    }
    Go::Merged(out)
}

fn object_entries(v: &Value) -> Vec<(&str, &Value)> {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        _ => Vec::new(),
    }
}

impl<'a> Go<'a> {
    fn is_null(&self) -> bool {
        matches!(self, Go::One(Value::Null))
    }

    /// The entries when this is an object.
    fn entries(&self) -> Option<Vec<(&'a str, &'a Value)>> {
        match self {
            Go::One(v @ Value::Object(_)) => Some(object_entries(v)),
            Go::Merged(e) => Some(e.clone()),
            Go::One(_) => None,
        }
    }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de, 'a> SeqAccess<'de> for Seq<'a> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(Go::One(v)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'a> {
    items: std::vec::IntoIter<(&'a str, Go<'a>)>,
    value: Option<Go<'a>>,
}

impl<'a> Entries<'a> {
    fn new(items: Vec<(&'a str, Go<'a>)>) -> Self {
        Entries {
            items: items.into_iter(),
            value: None,
        }
    }
}

impl<'de, 'a> MapAccess<'de> for Entries<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.items.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let key: StrDeserializer<'_, Error> = k.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map's entries as Go's map decoding keeps them: every key as written (a later
/// identical key replaces the earlier one, which the visitor's insert does).
fn map_entries<'a>(entries: Vec<(&'a str, &'a Value)>) -> Vec<(&'a str, Go<'a>)> {
    entries.into_iter().map(|(k, v)| (k, Go::One(v))).collect()
}

/// The typed entry points: `null` is the type's zero value, anything else is read as is.
macro_rules! zero_on_null {
    ($($method:ident => |$v:ident| $zero:expr;)*) => {
        $(fn $method<V: Visitor<'de>>(self, $v: V) -> Result<V::Value, Error> {
            if self.is_null() { $zero } else { self.deserialize_any($v) }
        })*
    };
}

impl<'de, 'a> Deserializer<'de> for Go<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let v = match self {
            Go::Merged(e) => return visitor.visit_map(Entries::new(map_entries(e))),
            Go::One(v) => v,
        };
        match v {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.iter())),
            Value::Object(_) => visitor.visit_map(Entries::new(map_entries(object_entries(v)))),
        }
    }

    zero_on_null! {
        deserialize_bool => |v| v.visit_bool(false);
        deserialize_i8 => |v| v.visit_i64(0);
        deserialize_i16 => |v| v.visit_i64(0);
        deserialize_i32 => |v| v.visit_i64(0);
        deserialize_i64 => |v| v.visit_i64(0);
        deserialize_i128 => |v| v.visit_i64(0);
        deserialize_u8 => |v| v.visit_u64(0);
        deserialize_u16 => |v| v.visit_u64(0);
        deserialize_u32 => |v| v.visit_u64(0);
        deserialize_u64 => |v| v.visit_u64(0);
        deserialize_u128 => |v| v.visit_u64(0);
        deserialize_f32 => |v| v.visit_f64(0.0);
        deserialize_f64 => |v| v.visit_f64(0.0);
        deserialize_char => |v| v.visit_str("");
        deserialize_str => |v| v.visit_str("");
        deserialize_string => |v| v.visit_str("");
        deserialize_bytes => |v| v.visit_bytes(&[]);
        deserialize_byte_buf => |v| v.visit_bytes(&[]);
        deserialize_seq => |v| v.visit_seq(Seq([].iter()));
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_unit()
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            return visitor.visit_map(Entries::new(Vec::new()));
        }
        match self.entries() {
            Some(e) => visitor.visit_map(Entries::new(map_entries(e))),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if self.is_null() {
            return visitor.visit_map(Entries::new(Vec::new()));
        }
        match self.entries() {
            Some(e) => visitor.visit_map(Entries::new(struct_entries(&e, fields))),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // Go has no enums; a stage's enum (if any) is read as serde_json reads it.
        match self {
            Go::One(v) => v.clone().deserialize_enum(name, variants, visitor),
            Go::Merged(_) => Err(de::Error::custom(format!("expected {name}"))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{json, Map};
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        #[serde(default)]
        rate: u64,
        #[serde(default)]
        burst: Option<u64>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Conf {
        #[serde(default)]
        mtu: Option<i64>,
        #[serde(rename = "ipMasq", default)]
        ip_masq: bool,
        #[serde(rename = "isGateway", default)]
        is_gateway: bool,
        #[serde(default = "default_bridge")]
        bridge: String,
        #[serde(rename = "bandWidth", alias = "bw", default)]
        bandwidth: Option<Inner>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        sysctl: Map<String, Value>,
        #[serde(default)]
        names: BTreeMap<String, String>,
        #[serde(default)]
        nested: Vec<Inner>,
        #[serde(default)]
        link: String,
    }

    fn default_bridge() -> String {
        "cni0".into()
    }

    fn de(v: Value) -> Conf {
        from_value(&v).unwrap()
    }

    #[test]
    fn case_insensitive_keys_and_go_folding() {
        let c = de(json!({"MTU": 1400, "IPMASQ": true, "isgateway": true, "BANDWIDTH": {"RATE": 5}}));
        assert_eq!(c.mtu, Some(1400));
        assert!(c.ip_masq && c.is_gateway);
        assert_eq!(c.bandwidth, Some(Inner { rate: 5, burst: None }));
        // U+017F (long s) folds to s, U+212A (Kelvin) to k: Go matches them
        let c = de(json!({"i\u{17f}Gateway": true, "LIN\u{212a}": "x"}));
        assert!(c.is_gateway);
        assert_eq!(c.link, "x");
        let c = de(json!({"ipMa\u{17f}q": true}));
        assert!(c.ip_masq);
        // other non-ASCII letters never match ASCII names
        let c = de(json!({"mtü": 1}));
        assert_eq!(c.mtu, None);
        // unknown keys are ignored
        let c = de(json!({"nope": 1, "bridge": "br0"}));
        assert_eq!(c.bridge, "br0");
    }

    #[test]
    fn last_key_wins_in_document_order() {
        assert_eq!(de(json!({"mtu": 1, "MTU": 2})).mtu, Some(2));
        assert_eq!(de(json!({"MTU": 2, "mtu": 1})).mtu, Some(1));
        assert_eq!(de(json!({"bridge": "a", "Bridge": "b", "BRIDGE": "c"})).bridge, "c");
        // two objects for one struct field merge, the later keys winning
        let c = de(json!({"bandWidth": {"rate": 1, "burst": 2}, "bandwidth": {"RATE": 3}}));
        assert_eq!(
            c.bandwidth,
            Some(Inner {
                rate: 3,
                burst: Some(2)
            })
        );
        // and for a map field
        let c = de(json!({"sysctl": {"a": "1", "b": "2"}, "Sysctl": {"a": "3"}}));
        assert_eq!(c.sysctl, json!({"a": "3", "b": "2"}).as_object().unwrap().clone());
        // a list is replaced
        assert_eq!(de(json!({"list": ["a", "b"], "LIST": ["c"]})).list, vec!["c"]);
    }

    #[test]
    fn exact_match_beats_fold_and_first_field_wins_the_fold() {
        #[derive(Debug, Deserialize)]
        struct Two {
            #[serde(default)]
            abc: i64,
            #[serde(rename = "ABC", default)]
            upper: i64,
            #[serde(rename = "aBc", default)]
            mixed: i64,
        }
        let t: Two = from_value(&json!({"ABC": 1})).unwrap();
        assert_eq!((t.abc, t.upper, t.mixed), (0, 1, 0));
        let t: Two = from_value(&json!({"aBc": 1})).unwrap();
        assert_eq!((t.abc, t.upper, t.mixed), (0, 0, 1));
        let t: Two = from_value(&json!({"Abc": 1})).unwrap();
        assert_eq!((t.abc, t.upper, t.mixed), (1, 0, 0));
    }

    #[test]
    fn null_keeps_the_default_and_is_the_zero_value_inside() {
        let c = de(json!({"bridge": null, "mtu": null, "list": null, "sysctl": null, "bandWidth": null}));
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.mtu, None);
        assert!(c.list.is_empty() && c.sysctl.is_empty() && c.bandwidth.is_none());
        // a later null does not undo an earlier value
        assert_eq!(de(json!({"bridge": "br0", "BRIDGE": null})).bridge, "br0");
        // inside lists and maps null is the zero value (Go: "", 0, empty struct)
        assert_eq!(de(json!({"list": ["a", null]})).list, vec!["a", ""]);
        let c = de(json!({"nested": [null, {"rate": null, "BURST": 3}], "names": {"x": null}}));
        assert_eq!(
            c.nested,
            vec![
                Inner::default(),
                Inner {
                    rate: 0,
                    burst: Some(3)
                }
            ]
        );
        assert_eq!(c.names.get("x").map(String::as_str), Some(""));
        // a map of JSON values keeps the null itself
        let c = de(json!({"sysctl": {"k": null}}));
        assert_eq!(c.sysctl.get("k"), Some(&Value::Null));
    }

    #[test]
    fn nested_structs_in_lists_and_aliases() {
        let c = de(json!({"NESTED": [{"Rate": 1}, {"rAtE": 2, "burst": 4}]}));
        assert_eq!(
            c.nested,
            vec![
                Inner { rate: 1, burst: None },
                Inner {
                    rate: 2,
                    burst: Some(4)
                }
            ]
        );
        let c = de(json!({"BW": {"rate": 7}}));
        assert_eq!(c.bandwidth, Some(Inner { rate: 7, burst: None }));
    }

    #[test]
    fn map_keys_stay_as_written() {
        let c = de(json!({"names": {"A": "1", "a": "2"}}));
        assert_eq!(c.names.len(), 2);
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = from_value::<Conf>(&json!({"BandWidth": {"rate": "fast"}})).unwrap_err();
        assert_eq!(e.path().to_string(), "bandWidth.rate");
        let e = from_value::<Conf>(&json!({"mtu": 1.5})).unwrap_err();
        assert_eq!(e.path().to_string(), "mtu");
        assert!(from_value::<Conf>(&json!({"ipMasq": "true"})).is_err());
        assert!(from_value::<Conf>(&json!({"nested": [1]})).is_err());
        assert!(from_value::<Conf>(&json!({"list": "a"})).is_err());
        // a negative number into an unsigned field
        assert!(from_value::<Inner>(&json!({"rate": -1})).is_err());
    }
}
