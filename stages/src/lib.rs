//! cnichain-stages: the in-process stages and the kernel helpers they use. Stages are
//! registered by type name; any type not registered here runs through the engine's exec
//! fallback.

use cnichain_engine::stage::Registry;

/// Register every in-process stage.
pub fn register_all(_registry: &mut Registry) {}
