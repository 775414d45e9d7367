//! cnichain-stages: the in-process stages and the kernel helpers they use. Stages are
//! registered by type name; any type not registered here runs through the engine's exec
//! fallback.

use cnichain_engine::stage::Registry;

pub mod conf;
pub mod ipam;
pub mod ipmasq;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod portmap;
pub mod sysctl;

/// Register every in-process stage.
pub fn register_all(registry: &mut Registry) {
    ipam::register(registry);
    registry.register("portmap", std::sync::Arc::new(portmap::Portmap));
}
