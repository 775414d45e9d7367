//! `cnichain reconcile` for portmap: the attachment's host ports, from its cached
//! `portMappings` and result (the nft records went with a flushed ruleset, so they cannot
//! be the source). When the shared layout, a per-prefix rule, an element or a record is
//! missing, the fixed objects are declared again (if needed) and the attachment's plan is
//! written once more in one transaction ([`rules::add`]: it replaces what is left of its
//! own and fails, changing nothing, when another attachment took a host port since).

use super::config::{self, PortmapConf};
use super::rules::{self, Plan};
use crate::kernel::nft::layout;
use crate::kernel::nft::netlink::Nfnl;
use crate::kernel::nft::Nft;
use crate::kernel::nft::{records, restore};
use cnichain_engine::spec::error::CniError;
use cnichain_engine::stage::Invocation;

fn nl_err(e: std::io::Error) -> CniError {
    CniError::internal(format!("portmap: nfnetlink: {e}"))
}

/// What is missing of `plan` (empty: nothing to do).
fn missing(nl: &mut Nfnl, plan: &Plan) -> Result<Vec<String>, CniError> {
    let mut out = Vec::new();
    let chains = restore::missing_fixed(nl).map_err(nl_err)?;
    if !chains.is_empty() {
        out.push(format!(
            "nftables table inet {} (fixed rules of {})",
            layout::TABLE,
            chains.join(", ")
        ));
    }
    let mut rules_missing = Vec::new();
    for r in plan.rules() {
        if !rules_missing.contains(&r.comment) && !restore::has_rule(nl, &r).map_err(nl_err)? {
            rules_missing.push(r.comment.clone());
        }
    }
    if !rules_missing.is_empty() {
        out.push(format!("shared rules {}", rules_missing.join(", ")));
    }
    for d in &plan.dnats {
        let mut gone = false;
        for (e, _) in d.elements() {
            if !records::owned_by(nl, &e, &plan.id).map_err(nl_err)? {
                gone = true;
            }
        }
        if gone {
            out.push(format!(
                "host port {} -> {}:{}",
                d.host.describe(),
                cnichain_engine::spec::ipnet::format_ip(&d.to.addr),
                d.to_port
            ));
        }
    }
    let recs = records::read(nl, &plan.id).map_err(nl_err)?;
    if recs.len() != plan.dnats.len() + 1 && out.is_empty() {
        out.push(format!("records of {}", plan.id));
    }
    Ok(out)
}

/// Restore the attachment's port mappings; one line per thing restored.
pub fn reconcile(inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
    let c = PortmapConf::parse_for(inv.config, true)?;
    let Some(prev) = inv.prev_result else {
        return Ok(Vec::new());
    };
    if c.mappings.is_empty() {
        return Ok(Vec::new());
    }
    let nft = Nft::new(inv.settings());
    let (v4, v6) = config::container_addrs(&prev.to_v1()?, &inv.rt.ifname);
    let id = rules::owner_id(&c.network, &inv.rt.container_id, &inv.rt.ifname);
    let plan = rules::plan(&c, id, v4, v6);
    if plan.dnats.is_empty() {
        return Ok(Vec::new());
    }
    let mut nl = Nfnl::open().map_err(nl_err)?;
    let todo = missing(&mut nl, &plan)?;
    if todo.is_empty() || dry_run {
        return Ok(todo);
    }
    if todo.iter().any(|t| t.starts_with("nftables table")) {
        restore::restore_fixed(&nft)
            .map_err(|e| CniError::internal(format!("portmap: restoring the nftables table: {e}")))?;
    }
    let hint = layout::hint(&c.network, &inv.rt.container_id, &inv.rt.ifname);
    rules::add(&nft, &plan, &hint)?;
    if c.snat {
        if let Some(a) = &v4 {
            super::host::enable_route_localnet(a)?;
        }
    }
    Ok(todo)
}
