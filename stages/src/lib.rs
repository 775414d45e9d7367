//! cnichain-stages: the in-process stages and the kernel helpers they use. Stages are
//! registered by type name; any type not registered here runs through the engine's exec
//! fallback.

use cnichain_engine::stage::Registry;

pub mod bandwidth;
pub mod bridge;
pub mod conf;
pub mod gc;
pub mod godecode;
pub mod goerr;
pub mod ifaddr;
pub mod ipam;
pub mod ipmasq;
pub mod loopback;
pub mod macspoof;
pub mod mainconf;
pub mod masq_restore;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod portmap;
pub mod probe;
pub mod ptp;
pub mod sysctl;
pub mod tuning;
pub mod veth;

/// Register every in-process stage.
pub fn register_all(registry: &mut Registry) {
    registry.register("bridge", std::sync::Arc::new(bridge::Bridge));
    registry.register("ptp", std::sync::Arc::new(ptp::Ptp));
    registry.register("loopback", std::sync::Arc::new(loopback::Loopback));
    ipam::register(registry);
    registry.register("tuning", std::sync::Arc::new(tuning::Tuning));
    registry.register("bandwidth", std::sync::Arc::new(bandwidth::Bandwidth));
    registry.register("portmap", std::sync::Arc::new(portmap::Portmap));
}
