//! Names of the kernel objects cnichain makes, derived from the attachment (network,
//! container ID, interface) so that DEL and GC find them again after a crash.

use sha2::{Digest, Sha512};

/// hex(sha512(parts joined)), the reference's utils.FormatChainName-style hash.
pub fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Host-side veth name: "veth" + 8 hex like the reference's random names, but derived
/// from the attachment so a DEL after a crash can find it by name.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("veth{}", &hash_hex(&[network, "\0", container_id, "\0", ifname])[..8])
}

/// `net-` and 16 hex digits of a hash of the network name: how cnichain's kernel objects
/// say which network they belong to, so that GC can find a network's own.
pub fn network_word(network: &str) -> String {
    format!("net-{}", &hash_hex(&["cnichain-network", "\0", network])[..16])
}

/// The alias of a host-side link made for an attachment (a veth's host end, an ifb):
/// `cnichain <kind> net-<hash> <containerID> <ifname>`. Longer than the kernel's 255
/// bytes (very long container IDs), it is cut and [`alias_owner`] no longer reads it:
/// such a link is left to DEL.
pub fn owner_alias(kind: &str, network: &str, container_id: &str, ifname: &str) -> String {
    let mut s = format!("cnichain {kind} {} {container_id} {ifname}", network_word(network));
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// The (containerID, ifname) of a link whose alias [`owner_alias`] made for `kind` and
/// `network`; None for any other alias.
pub fn alias_owner<'a>(alias: &'a str, kind: &str, network: &str) -> Option<(&'a str, &'a str)> {
    let w: Vec<&str> = alias.split(' ').collect();
    match w.as_slice() {
        ["cnichain", k, net, cid, ifname] if *k == kind && *net == network_word(network) => Some((cid, ifname)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = host_veth_name("net", "cid", "eth0");
        assert_eq!(n.len(), 12);
        assert!(n.starts_with("veth"));
        assert_eq!(n, host_veth_name("net", "cid", "eth0"));
        assert_ne!(n, host_veth_name("net", "cid", "eth1"));
        let a = owner_alias("bridge", "net", "cid", "eth0");
        assert_eq!(alias_owner(&a, "bridge", "net"), Some(("cid", "eth0")));
        assert_eq!(alias_owner(&a, "ptp", "net"), None);
        assert_eq!(alias_owner(&a, "bridge", "net2"), None);
        assert_eq!(alias_owner("", "bridge", "net"), None);
        let long = owner_alias("bridge", "net", &"c".repeat(300), "eth0");
        assert!(long.len() <= 255 && alias_owner(&long, "bridge", "net").is_none());
    }
}
