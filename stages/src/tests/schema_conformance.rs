//! Test-only: holds each stage's [`Schema`] to its loader. The loaders read configs through
//! serde structs (with Go's key rules, `godecode`); this asks a struct which keys it reads
//! and checks that the stage's schema, which `cnichain validate` uses, declares the same
//! ones, so the two cannot drift apart unnoticed. The differences there are on purpose are
//! named per stage, with why.

use cnichain_engine::validate::schema::{Schema, Ty, COMMON, F};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// A deserializer that records the field names the struct asks for, then stops.
struct Probe<'a>(&'a mut Vec<&'static str>);

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The JSON keys struct `T` reads (serde's renames and aliases).
pub fn struct_keys<T: DeserializeOwned>() -> Vec<&'static str> {
    let mut keys = Vec::new();
    let _ = T::deserialize(Probe(&mut keys));
    assert!(!keys.is_empty(), "{} is not a struct", std::any::type_name::<T>());
    keys
}

/// The fields of the object a schema key holds (`runtimeConfig`, `args`, ...).
pub fn nested(fields: &'static [F], key: &str) -> &'static [F] {
    match fields.iter().find(|f| f.0 == key).map(|f| f.1) {
        Some(Ty::Obj(f) | Ty::Open(f)) => f,
        other => panic!("{key} is not an object in the schema: {other:?}"),
    }
}

/// `loader` (the keys a loader struct reads) and `declared` (a schema's, plus the keys
/// every plugin may carry when `common`) are the same, but for the keys named on purpose:
/// `loader_only` are read but not declared, `schema_only` declared but not read.
pub fn assert_same_keys(
    what: &str,
    loader: &[&str],
    declared: &[F],
    common: bool,
    loader_only: &[&str],
    schema_only: &[&str],
) {
    let in_schema = |k: &str| declared.iter().any(|f| f.0 == k) || (common && COMMON.iter().any(|f| f.0 == k));
    let mut wrong = Vec::new();
    for k in loader {
        if !(in_schema(k) || (common && *k == "ipam") || loader_only.contains(k)) {
            wrong.push(format!("the loader reads {k:?}, which the schema does not declare"));
        }
    }
    for f in declared {
        if !(loader.contains(&f.0) || schema_only.contains(&f.0)) {
            wrong.push(format!("the schema declares {:?}, which the loader does not read", f.0));
        }
    }
    for k in loader_only.iter().chain(schema_only) {
        if loader.contains(k) == in_schema(k) {
            wrong.push(format!("{k:?} is named as a difference but is not one"));
        }
    }
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

/// [`assert_same_keys`] for a stage's top-level keys.
pub fn assert_schema<T: DeserializeOwned>(schema: &Schema, loader_only: &[&str], schema_only: &[&str]) {
    let what = std::any::type_name::<T>();
    assert_same_keys(what, &struct_keys::<T>(), schema.fields, true, loader_only, schema_only);
}

/// [`assert_same_keys`] for the `runtimeConfig` object struct `T` reads; `schema_only`
/// are declared there for someone else (the IPAM's keys).
pub fn assert_runtime_config<T: DeserializeOwned>(schema: &Schema, schema_only: &[&str]) {
    let declared = nested(schema.fields, "runtimeConfig");
    assert_same_keys("runtimeConfig", &struct_keys::<T>(), declared, false, &[], schema_only);
}
