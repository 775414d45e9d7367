//! Stages: the [`Stage`] trait and the [`Invocation`] it receives (`contract`), IPAM
//! delegation (`delegate`), the [`Registry`] that maps a plugin `type` to an in-process
//! stage or the exec fallback (`registry`), and the deferred kernel-wait scope
//! (`defer`). Everything is re-exported here.

pub mod contract;
pub mod defer;
pub mod delegate;
pub mod registry;

pub use crate::settings::{split_cni_path, ExecPolicy, DEPTH_ENV, MAX_DELEGATION_DEPTH};
pub use contract::{Command, Invocation, Resolve, Stage};
pub use defer::{defer, DeferScope};
pub use delegate::{check_ipam_type, delegation_depth, NOT_IPAM};
pub use registry::{find_in_path, Registry, StageFactory};
