//! Test-only modules of the crate: checks across every stage, and the helpers the
//! per-stage schema tests share.

pub(crate) mod schema_conformance;
mod validate_schemas;
