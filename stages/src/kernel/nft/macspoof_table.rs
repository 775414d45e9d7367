//! The layout of `table bridge cnichain`, macspoofchk's table (see
//! `shared::macspoof`): declared by its ADD and by STATUS's probe of the bridge family.

use super::Batch;
use serde_json::json;

pub const FAMILY: &str = "bridge";
pub const TABLE: &str = "cnichain";
pub const PORTS: &str = "ms-ports";
pub const ALLOWED: &str = "ms-allowed";

/// The table, sets and rule (also STATUS's probe of the bridge family, see `kernel::probe`).
pub fn declare(b: &mut Batch) {
    b.add(json!({"table": {"family": FAMILY, "name": TABLE}}));
    b.add(json!({"set": {"family": FAMILY, "table": TABLE, "name": PORTS, "type": "ifname"}}));
    b.add(json!({"set": {"family": FAMILY, "table": TABLE, "name": ALLOWED, "type": ["ifname", "ether_addr"]}}));
    b.add(json!({"chain": {"family": FAMILY, "table": TABLE, "name": "prerouting",
        "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}));
    b.add(
        json!({"rule": {"family": FAMILY, "table": TABLE, "chain": "prerouting", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": format!("@{PORTS}")}},
            {"match": {"op": "!=", "left": {"concat": [{"meta": {"key": "iifname"}},
                {"payload": {"protocol": "ether", "field": "saddr"}}]}, "right": format!("@{ALLOWED}")}},
            {"drop": null}
        ]}}),
    );
}
