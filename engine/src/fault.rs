//! Named fault points for tests: before and after each kernel or state change, a stage
//! calls `fault::point("bridge.after-veth")`. In a build with the `fault-points` feature
//! (only the test build enables it, through the root crate's `test-plugins`; never a
//! release build) the variable `CNICHAIN_FAULT=<name>[:fail|:abort]` makes that point
//! return an error (`fail`, the default) or abort the process on the spot like a
//! `kill -9` (`abort`), so a test can walk every point. Without the feature a point is
//! nothing.

use crate::spec::error::CniError;

/// Every point, in the order a 4-stage chain ADD (bridge + host-local, tuning, portmap,
/// bandwidth) reaches them. Tests walk this list; a point missing here is a test gap.
pub const POINTS: &[&str] = &[
    "bridge.after-bridge",
    "bridge.after-veth",
    "host-local.after-reserve",
    "bridge.after-ipam",
    "bridge.after-addrs",
    "bridge.after-gateway",
    "bridge.after-masq",
    "tuning.after-record",
    "tuning.after-sysctls",
    "portmap.before-commit",
    "portmap.after-commit",
    "bandwidth.after-ingress",
    "bandwidth.after-ifb",
    "bandwidth.after-redirect",
    "chain.before-cache",
    "chain.after-cache",
];

/// STATUS's kernel feature probes (stages/src/kernel/probe.rs): `probe.<feature>` makes that
/// feature report missing (the real probe still runs), so a test can see STATUS's code
/// 50 on a kernel where nothing can be unloaded. Kept apart from [`POINTS`]: ADD never
/// reaches them.
pub const PROBE_POINTS: &[&str] = &[
    "probe.bridge",
    "probe.veth",
    "probe.ifb",
    "probe.tbf",
    "probe.htb",
    "probe.redirect",
    "probe.nft-inet",
    "probe.nft-bridge",
];

#[cfg(feature = "fault-points")]
pub fn point(name: &str) -> Result<(), CniError> {
    let Ok(spec) = std::env::var("CNICHAIN_FAULT") else {
        return Ok(());
    };
    let (want, mode) = spec.split_once(':').unwrap_or((spec.as_str(), "fail"));
    if want != name {
        return Ok(());
    }
    if mode == "abort" {
        // No destructors, no flushing: as abrupt as a kill -9.
        std::process::abort();
    }
    Err(CniError::internal(format!("fault point {name} (CNICHAIN_FAULT)")))
}

#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn point(_name: &str) -> Result<(), CniError> {
    Ok(())
}
