//! The kernel layer: clients for netlink (links, addresses, routes, qdiscs), nftables,
//! network namespaces and sysctls, and the probes that report what the running kernel
//! offers. Knows nothing of stages; every stage uses it.

pub mod names;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod sysctl;
