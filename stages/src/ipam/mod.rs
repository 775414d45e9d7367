//! In-process IPAM: host-local and static, behaving as the reference plugins do (see
//! each module for what is read), with the reference's on-disk store for host-local.

use cnichain_engine::stage::Registry;
use std::sync::Arc;

pub mod allocator;
pub mod config;
pub mod host_local;
pub mod host_local_conf;
pub mod range;
pub mod resolv;
pub mod static_ipam;
pub mod store;
pub mod store_files;
pub mod store_index;

pub use host_local::HostLocal;
pub use static_ipam::StaticIpam;

/// Register `host-local` and `static`.
pub fn register(registry: &mut Registry) {
    registry.register("host-local", Arc::new(HostLocal));
    registry.register("static", Arc::new(StaticIpam));
}
