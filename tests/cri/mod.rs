//! Support for tests/containerd_cri.rs (kept out of tests/common so that other test
//! binaries do not compile the CRI client): a real containerd in a sandbox, a CRI client
//! doing the kubelet's sandbox calls, and traffic between the test's namespaces.

#![allow(dead_code)]

pub mod client;
pub mod containerd;
pub mod nsnet;
