//! Helpers more than one stage uses (mostly bridge and ptp): the pod end of a veth,
//! addresses on it, IP masquerade, MAC spoof checking, forwarding, GC of kernel objects,
//! the config pieces and error texts main stages share. Uses the kernel layer; no stage.

pub mod forwarding;
pub mod gc;
pub mod goerr;
pub mod ifaddr;
pub mod ipmasq;
pub mod macspoof;
pub mod mainconf;
pub mod masq_restore;
pub mod pods;
pub mod undo;
pub mod veth;
