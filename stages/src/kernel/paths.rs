//! Where cnichain keeps its own state on the host (the kernel feature cache, tuning's
//! records): the directory named by `CNICHAIN_STATE_DIR`, else the engine's default.

pub use cnichain_engine::lock::DEFAULT_STATE_DIR;

/// The environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "CNICHAIN_STATE_DIR";
