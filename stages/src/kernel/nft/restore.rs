//! For `cnichain reconcile`: whether the fixed objects of `table inet cnichain` (the
//! table, its sets and maps, and the rules of the chains that hold fixed rules) are all
//! there, and putting them back. A firewall reload (`nft flush ruleset`) removes the
//! whole table; `nft flush table inet cnichain` keeps sets and elements but empties
//! every chain. Both are found here.

use super::layout::{self, TABLE};
use super::netlink::Nfnl;
use super::{Batch, NftError};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What this process already found in place (or put back): a reconcile walks thousands of
/// attachments that share the table and rules, and asks the kernel once. Something
/// removing them again during the walk is caught by the next reconcile.
static FIXED_OK: AtomicBool = AtomicBool::new(false);
static RULES_OK: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// The number of rules each chain with fixed rules holds, as `declare_base` makes them
/// (it flushes those chains first: nothing else goes there).
fn fixed_rules() -> BTreeMap<String, usize> {
    let mut b = Batch::new();
    layout::declare_base(&mut b);
    let mut out = BTreeMap::new();
    for cmd in b.to_json()["nftables"].as_array().cloned().unwrap_or_default() {
        let Some(rule) = cmd.get("add").and_then(|a| a.get("rule")) else {
            continue;
        };
        if let Some(chain) = rule.get("chain").and_then(Value::as_str) {
            *out.entry(chain.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// The chains whose fixed rules are not all there (every one of them when the table is
/// gone). Empty: the shared layout is intact.
pub fn missing_fixed(nl: &mut Nfnl) -> io::Result<Vec<String>> {
    let mut missing = Vec::new();
    if FIXED_OK.load(Ordering::Relaxed) {
        return Ok(missing);
    }
    for (chain, want) in fixed_rules() {
        let have = super::elements::rule_comments(nl, TABLE, &chain)?.len();
        if have != want {
            missing.push(chain);
        }
    }
    if missing.is_empty() {
        FIXED_OK.store(true, Ordering::Relaxed);
    }
    Ok(missing)
}

/// Whether the per-prefix / per-bit rule `r` is there (remembered once seen).
pub fn has_rule(nl: &mut Nfnl, r: &layout::DynRule) -> io::Result<bool> {
    let key = (r.chain.to_string(), r.comment.clone());
    if RULES_OK
        .lock()
        .is_ok_and(|s| s.as_ref().is_some_and(|s| s.contains(&key)))
    {
        return Ok(true);
    }
    let found = layout::has_rule(nl, r)?;
    if found {
        if let Ok(mut s) = RULES_OK.lock() {
            s.get_or_insert_with(HashSet::new).insert(key);
        }
    }
    Ok(found)
}

/// Declare the fixed objects again: tables, sets and maps are added (kept with their
/// elements when there), the chains with fixed rules flushed and refilled; the
/// per-prefix / per-bit rules are left to the pods' own restore (`ensure_rules`).
pub fn restore_fixed(nft: &super::Nft) -> Result<(), NftError> {
    let mut b = Batch::new();
    layout::declare_base(&mut b);
    super::apply_nft(nft, &b)?;
    FIXED_OK.store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_rules_are_counted_per_chain() {
        let f = super::fixed_rules();
        assert_eq!(f.get(super::layout::CHAIN_PREROUTING), Some(&2));
        assert_eq!(f.get(super::layout::CHAIN_DNAT4), Some(&4));
        assert!(
            f.get(super::layout::CHAIN_SNAT4).is_none(),
            "only per-prefix rules there"
        );
    }
}
