//! The rows `cnichain inspect` prints; `--format json` is these structs serialized, so
//! the field names and meanings here are the stable interface (documented in the
//! README, field by field). Add fields; never rename or repurpose one.

use serde::Serialize;

/// The JSON document: `{"version": 1, "attachments": [...]}`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The format's version; a field is added without changing it, a change of meaning
    /// would.
    pub version: u32,
    pub attachments: Vec<Row>,
}

/// One attachment (network, container ID, ifname), or objects of one that no longer
/// exists.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The network's name; `net-<16 hex>` for cnichain objects of a network whose name
    /// nothing on the node gives any more (its hash as the objects carry it).
    pub network: String,
    /// None for nftables records whose owner cannot be named (only their hash is kept).
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    /// `live`, `stale`, `in-progress` or `orphan`.
    pub state: String,
    /// `cnichain` when cnichain left its marks (a lock file, a link alias, nftables
    /// records, a tuning record), else `other` (the reference plugins through libcni: only
    /// the cache and host-local store show them).
    pub made_by: String,
    /// The pod's netns path, from the cache entry (or its result's sandbox, or the tuning
    /// record).
    pub netns: Option<String>,
    pub netns_alive: bool,
    /// A readable libcni cache entry exists (`<cache-dir>/results/<net>-<cid>-<ifname>`).
    pub cache: bool,
    /// cnichain's lock file exists (`<state-dir>/locks/<net>/<cid>:<ifname>.lock`).
    pub lock: bool,
    /// Addresses reserved for it in the host-local store, sorted.
    pub addresses: Vec<String>,
    /// Host veth: the one carrying cnichain's owner alias, else the result's interface
    /// without a sandbox that is a veth on the host.
    pub host_veth: Option<String>,
    /// The ifb of its egress shaping (by owner alias or as its result lists it).
    pub ifb: Option<String>,
    /// Rate of the root tbf on the host veth (shaping into the pod), bits/s.
    pub ingress_rate: Option<u64>,
    /// Rate of the root tbf on the ifb (shaping out of the pod), bits/s.
    pub egress_rate: Option<u64>,
    pub host_ports: Vec<HostPort>,
    /// Pod addresses masqueraded for it (ipMasq records), `addr/prefix`.
    pub masquerade: Vec<String>,
    /// Path of its tuning restore record.
    pub tuning_record: Option<String>,
    /// Owner ids of its nftables records (`p...` portmap, `m...` ipMasq).
    pub nft_owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The host address the port is bound to; "" for every local address.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    pub host_port: u16,
    /// The pod address the port leads to ("" when the record does not say: the cache of
    /// an attachment whose result names none).
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    pub pod_port: u16,
    /// `nftables` (cnichain's records in the kernel) or `cache` (the cached
    /// `portMappings`, for attachments without records).
    pub source: String,
}

pub const LIVE: &str = "live";
pub const STALE: &str = "stale";
pub const IN_PROGRESS: &str = "in-progress";
pub const ORPHAN: &str = "orphan";
