//! cnichain-stages: the in-process stages and the kernel helpers they use. Stages are
//! registered by type name; any type not registered here runs through the engine's exec
//! fallback.

use cnichain_engine::stage::Registry;

pub mod bandwidth;
pub mod bridge;
pub mod conf;
pub mod godecode;
pub mod ipam;
pub mod kernel;
pub mod loopback;
pub mod portmap;
pub mod ptp;
pub mod shared;
pub mod tuning;

#[cfg(test)]
mod tests;

/// Register every in-process stage.
pub fn register_all(registry: &mut Registry) {
    registry.register(
        "bridge",
        std::sync::Arc::new(bridge::Bridge {
            reservations: ipam::host_local::has_reservations,
        }),
    );
    registry.register(
        "ptp",
        std::sync::Arc::new(ptp::Ptp {
            reservations: ipam::host_local::has_reservations,
        }),
    );
    registry.register("loopback", std::sync::Arc::new(loopback::Loopback));
    ipam::register(registry);
    registry.register("tuning", std::sync::Arc::new(tuning::Tuning));
    registry.register("bandwidth", std::sync::Arc::new(bandwidth::Bandwidth));
    registry.register("portmap", std::sync::Arc::new(portmap::Portmap));
}
