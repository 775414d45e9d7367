//! Wire types of the CNI protocol: versions, errors, results and their conversion,
//! conflists, CNI_ARGS and identifier rules.

pub mod args;
pub mod conflist;
pub mod convert;
pub mod error;
pub mod ids;
pub mod ipnet;
pub mod json_kind;
pub mod result;
pub mod version;

pub use error::CniError;
pub use result::CniResult;
