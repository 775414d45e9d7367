//! The hash cnichain derives kernel object names and record owners from.

use sha2::{Digest, Sha512};

/// hex(sha512(parts joined)), the reference's utils.FormatChainName-style hash.
pub fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
