//! The CNI error object: the one error type that crosses the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODING_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// Our own internal failures (a kernel call that failed, a plugin that did not answer).
/// Codes >= 100 are plugin-specific per the spec.
pub const INTERNAL: u32 = 999;

/// `{cniVersion, code, msg, details}`. libcni's Go type omits cniVersion; the spec asks
/// for it, and Go readers ignore unknown keys, so we emit it when we know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion", default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn with_version(mut self, v: &str) -> Self {
        self.cni_version = v.to_string();
        self
    }
    /// Prefix the message, keeping code and details (libcni wraps errors the same way).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.msg = format!("{prefix}: {}", self.msg);
        self
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"\"}}", self.code))
    }
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| self.to_json())
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(INVALID_CONFIG, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(DECODING_FAILURE, msg)
    }
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(INVALID_ENV, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(IO_FAILURE, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(INTERNAL, msg)
    }
    pub fn version(msg: impl Into<String>) -> Self {
        Self::new(INCOMPATIBLE_VERSION, msg)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

/// Internal code uses anyhow for context; at the boundary an anyhow error becomes a CNI
/// error. If a CniError is anywhere in the chain its code wins, and the context is kept.
impl From<anyhow::Error> for CniError {
    fn from(e: anyhow::Error) -> Self {
        let code = e
            .chain()
            .find_map(|c| c.downcast_ref::<CniError>().map(|ce| ce.code))
            .unwrap_or(INTERNAL);
        let details = e
            .chain()
            .find_map(|c| c.downcast_ref::<CniError>().map(|ce| ce.details.clone()))
            .unwrap_or_default();
        let msg = e
            .chain()
            .map(|c| match c.downcast_ref::<CniError>() {
                Some(ce) => ce.msg.clone(),
                None => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(": ");
        CniError::new(code, msg).with_details(details)
    }
}

pub type CniResultT<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_the_spec() {
        let e = CniError::new(7, "bad").with_version("1.0.0");
        assert_eq!(e.to_json(), r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#);
        let e = CniError::new(3, "x").with_details("d");
        assert_eq!(e.to_json(), r#"{"code":3,"msg":"x","details":"d"}"#);
    }

    #[test]
    fn anyhow_keeps_the_inner_code_and_context() {
        let inner = CniError::new(7, "field \"type\" is missing");
        let e = anyhow::Error::new(inner).context("plugin 2");
        let c: CniError = e.into();
        assert_eq!(c.code, 7);
        assert_eq!(c.msg, "plugin 2: field \"type\" is missing");
        let c: CniError = anyhow::anyhow!("boom").into();
        assert_eq!(c.code, INTERNAL);
    }
}
