//! The names of the reference host-local's on-disk store, which the store and cnichain's
//! index beside it both know (so neither imports the other for them).

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// `last_reserved_ip.<range set index>`: the round-robin cursor.
pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
/// Between the container ID and the ifname in a reservation file.
pub const LINE_BREAK: &str = "\r\n";
pub const LOCK_FILE: &str = "lock";
