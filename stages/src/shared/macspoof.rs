//! The bridge stage's `macspoofchk`: frames entering the bridge from a pod's host veth
//! must carry the pod interface's MAC, others are dropped before the bridge sees them
//! (the reference plugin's check, in the bridge family of nftables). Flat like portmap's
//! layout: one rule for every pod, and per pod two set elements carrying its owner id,
//! so adding or removing one pod never touches another's.
//!
//! ```text
//! table bridge cnichain {
//!   set ms-ports   { type ifname; }                 # protected host veths
//!   set ms-allowed { type ifname . ether_addr; }    # the MAC each may send from
//!   chain prerouting { type filter hook prerouting priority -300; policy accept;
//!     iifname @ms-ports iifname . ether saddr != @ms-allowed drop }
//! }
//! ```

use crate::conf;
use crate::kernel::nft::macspoof_table::{declare, ALLOWED, FAMILY, PORTS, TABLE};
use crate::kernel::nft::{self, Batch, Nft, NftErrorKind};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};

/// The attachment's owner id, carried as the elements' comment: the attachment's hash,
/// then its network's (GC finds a network's attachments by the second word).
pub fn owner(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "ms-{} {}",
        &crate::kernel::names::hash_hex(&[network, "\0", container_id, "\0", ifname])[..16],
        crate::kernel::names::network_word(network)
    )
}

fn elements(b: &mut Batch, verb: &str, host_veth: &str, mac: &str, owner: &str) {
    let port = json!({"element": {"family": FAMILY, "table": TABLE, "name": PORTS,
        "elem": [{"elem": {"val": host_veth, "comment": owner}}]}});
    let allowed = json!({"element": {"family": FAMILY, "table": TABLE, "name": ALLOWED,
        "elem": [{"elem": {"val": {"concat": [host_veth, mac]}, "comment": owner}}]}});
    // The allowed pair first, so the port is never protected without it.
    if verb == "add" {
        b.add(allowed);
        b.add(port);
    } else {
        b.delete(port);
        b.delete(allowed);
    }
}

/// Protect `host_veth`: only `mac` may send through it. The names and MAC were made by
/// the bridge stage (validated), never taken from config text.
pub fn setup(nft: &Nft, host_veth: &str, mac: &str, owner: &str) -> Result<()> {
    if !conf::is_ifname_chars(host_veth) || conf::parse_mac(mac).is_none() {
        return Err(anyhow!("macspoofchk: bad interface {host_veth:?} or MAC {mac:?}"));
    }
    let mut b = Batch::new();
    elements(&mut b, "add", host_veth, mac, owner);
    match nft::apply_nft(nft, &b) {
        Ok(()) => Ok(()),
        // First use on this host: declare the table, sets and rule with the elements.
        Err(e) if e.kind == NftErrorKind::NotFound => {
            let mut full = Batch::new();
            declare(&mut full);
            elements(&mut full, "add", host_veth, mac, owner);
            nft::apply_nft(nft, &full).map_err(|e| anyhow!("macspoofchk: {e}"))
        }
        Err(e) => Err(anyhow!("macspoofchk: {e}")),
    }
}

/// This owner's elements: (port, mac) pairs found by their comment.
fn owned(nft: &Nft, owner: &str) -> Result<Vec<(String, String)>> {
    Ok(listed(nft)?
        .into_iter()
        .filter(|(o, _, _)| o == owner)
        .map(|(_, p, m)| (p, m))
        .collect())
}

/// Every protected port: (owner comment, port, mac).
fn listed(nft: &Nft) -> Result<Vec<(String, String, String)>> {
    let listed = match nft::list_set(nft, FAMILY, TABLE, ALLOWED) {
        Ok(v) => v,
        Err(e) if e.kind == NftErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("macspoofchk: {e}")),
    };
    let mut out = Vec::new();
    let sets = listed
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in sets {
        let elems = item
            .get("set")
            .and_then(|s| s.get("elem"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for e in elems {
            let Some(inner) = e.get("elem") else { continue };
            let comment = inner.get("comment").and_then(Value::as_str).unwrap_or_default();
            let parts = inner.get("val").and_then(|v| v.get("concat")).and_then(Value::as_array);
            if let Some([Value::String(port), Value::String(mac)]) = parts.map(|p| p.as_slice()) {
                out.push((comment.to_string(), port.clone(), mac.clone()));
            }
        }
    }
    Ok(out)
}

/// Remove this attachment's elements (found by owner; nothing to do when gone).
pub fn teardown(nft: &Nft, owner: &str) -> Result<()> {
    let mine = owned(nft, owner)?;
    if mine.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    for (port, mac) in &mine {
        elements(&mut b, "delete", port, mac, owner);
    }
    match nft::apply_nft(nft, &b) {
        Ok(()) => Ok(()),
        Err(e) if e.kind == NftErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("macspoofchk: {e}")),
    }
}

/// GC: unprotect the ports of every attachment of `network` that is not in `keep` (the
/// owners of the valid attachments).
pub fn gc(nft: &Nft, network: &str, keep: &[String]) -> Result<()> {
    let word = crate::kernel::names::network_word(network);
    let keep: std::collections::HashSet<&String> = keep.iter().collect();
    let stale: Vec<(String, String, String)> = listed(nft)?
        .into_iter()
        .filter(|(o, _, _)| o.split_whitespace().nth(1) == Some(word.as_str()) && !keep.contains(o))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    for (owner, port, mac) in &stale {
        elements(&mut b, "delete", port, mac, owner);
    }
    nft::apply_nft(nft, &b).map_err(|e| anyhow!("macspoofchk gc: {e}"))
}

/// CHECK: this attachment's port is protected with `mac`.
pub fn check(nft: &Nft, owner: &str, mac: &str) -> Result<()> {
    let mine = owned(nft, owner)?;
    if mine.iter().any(|(_, m)| m.eq_ignore_ascii_case(mac)) {
        Ok(())
    } else {
        Err(anyhow!(
            "macspoofchk: no MAC spoof check for this attachment with MAC {mac}"
        ))
    }
}
