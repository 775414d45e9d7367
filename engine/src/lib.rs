//! cnichain-engine: the CNI protocol, with no kernel code. Loads conflists, selects the
//! version, derives each plugin's request exactly as libcni does, runs the chain over
//! in-process stages or the exec fallback, and keeps libcni's result cache.

pub mod cache;
pub mod chain;
pub mod exec;
pub mod fault;
mod gc_slices;
pub mod load;
pub mod lock;
pub mod nodefs;
pub mod request;
pub mod spec;
pub mod stage;
pub mod validate;

pub use spec::CniError;
