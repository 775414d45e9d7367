//! The portmap stage (type `portmap`): forwards host ports to the container, as the
//! reference plugin does, with nftables (see [`rules`] and [`crate::kernel::nft::layout`]):
//!
//! * ADD: validate everything, then one transaction adding this attachment's map and
//!   set elements and its records (an nfnetlink element batch, no process, once the
//!   per-prefix / per-bit rules it needs exist; through `nft` when it adds one); `route_localnet` on the pod's host interface when
//!   `snat` (IPv4); stale UDP conntrack entries of the mapped ports deleted. prevResult
//!   passes through unchanged. A host port another container holds is an error (code 11).
//! * DEL: remove exactly this attachment's elements, found from its own records
//!   (portMappings need not be passed again); succeeds when already gone.
//! * CHECK: every host port leads to this attachment's address and port, through elements
//!   it owns.
//! * GC: what DEL removes, for every attachment of the network missing from the valid
//!   set (a result cache is not needed).
//!
//! Differences from the reference: `conditionsV4/V6` (rule text) and
//! `externalSetMarkChain` (an iptables chain) are refused with code 2, and so is
//! `backend: "iptables"`; ports, protocols and hostIP are validated (code 7, naming the
//! field); a host port held by another container is an error instead of last-writer-wins;
//! DEL needs no portMappings; the masquerade mark bit (`markMasqBit`, default 13) is set
//! and matched only inside cnichain's own table.

pub mod config;
pub mod host;
mod reconcile;
pub mod rules;

use crate::kernel::nft::Nft;
use cnichain_engine::spec::error::{CniError, PLUGIN_NOT_AVAILABLE};
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::stage::{Invocation, Stage};
use config::PortmapConf;

pub struct Portmap;

impl Stage for Portmap {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&config::SCHEMA)
    }

    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        PortmapConf::parse(inv.config).map(|_| ())
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let c = PortmapConf::parse(inv.config)?;
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::invalid_config("portmap: must be called as chained plugin"))?;
        if c.mappings.is_empty() {
            return pass_through(prev, inv.version);
        }
        let (v4, v6) = config::container_addrs(&prev.to_v1()?, &inv.rt.ifname);
        let id = rules::owner_id(&c.network, &inv.rt.container_id, &inv.rt.ifname);
        let plan = rules::plan(&c, id, v4, v6);
        if plan.dnats.is_empty() {
            return pass_through(prev, inv.version);
        }
        if c.snat {
            if let Some(a) = &v4 {
                host::enable_route_localnet(a)?;
            }
        }
        let hint = crate::kernel::nft::layout::hint(&c.network, &inv.rt.container_id, &inv.rt.ifname);
        rules::add(&Nft::new(inv.settings()), &plan, &hint)?;
        host::flush_udp_conntrack(&c.mappings, v4.is_some(), v6.is_some());
        pass_through(prev, inv.version)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        // Everything this attachment made is in its own records: neither portMappings nor
        // prevResult is needed, and the rest of the config is not read.
        let network = config::network_name(inv.config);
        let id = rules::owner_id(&network, &inv.rt.container_id, &inv.rt.ifname);
        // Removing elements leaves the kernel cleanup work (an RCU grace period): let it
        // overlap the chain's other DEL work (the engine joins it before DEL returns;
        // inline otherwise).
        let nft = Nft::new(inv.settings());
        cnichain_engine::stage::defer("portmap", move || rules::del(&nft, &id))
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        let c = PortmapConf::parse_for(inv.config, true)?;
        let prev = inv
            .prev_result
            .ok_or_else(|| CniError::invalid_config("portmap: Required prevResult missing"))?;
        if c.mappings.is_empty() {
            return Ok(());
        }
        let (v4, v6) = config::container_addrs(&prev.to_v1()?, &inv.rt.ifname);
        let id = rules::owner_id(&c.network, &inv.rt.container_id, &inv.rt.ifname);
        let plan = rules::plan(&c, id, v4, v6);
        if plan.dnats.is_empty() {
            return Ok(());
        }
        rules::check(&plan)
    }

    /// Port mappings of attachments the runtime no longer lists, cached or not.
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        match crate::shared::gc::ValidSet::from_config(inv.config)? {
            Some(valid) => rules::gc(&Nft::new(inv.settings()), &valid),
            None => Ok(()),
        }
    }

    fn reconcile(&self, inv: &Invocation, dry_run: bool) -> Result<Vec<String>, CniError> {
        reconcile::reconcile(inv, dry_run)
    }

    /// 50 when `nft` is missing or the kernel cannot hold cnichain's nat table.
    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        if Nft::new(inv.settings()).binary().is_none() {
            return Err(CniError::new(
                PLUGIN_NOT_AVAILABLE,
                "portmap: nft not found (install nftables)",
            ));
        }
        crate::kernel::probe::require(
            inv.settings(),
            "portmap",
            &[(crate::kernel::probe::Feature::NftInet, "portMappings")],
        )
    }

    fn describe(&self) -> String {
        "in-process".to_string()
    }
}

/// prevResult unchanged, in the selected version (it already is, normally).
fn pass_through(prev: &CniResult, version: &str) -> Result<CniResult, CniError> {
    if prev.version() == version {
        Ok(prev.clone())
    } else {
        prev.convert(version)
    }
}
