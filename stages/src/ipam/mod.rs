//! In-process IPAM: host-local and static.

use cnichain_engine::stage::Registry;

pub fn register(_registry: &mut Registry) {}
