//! Which ifb device is an attachment's. The reference names it `bwp` + a hash of network
//! and container ID ([`ifb_name`]), so two attachments of one network in one pod (Multus:
//! `net1`, `net2`) would share it. cnichain takes the reference's name when it is free
//! and otherwise a name derived from the whole attachment ([`attachment_ifb_name`]), and
//! marks the device with its owner alias (`cnichain bandwidth net-<hash> <cid> <ifname>`).
//! DEL, CHECK and GC find an attachment's ifb by that alias; an ifb under the reference's
//! name with no cnichain alias was made by the reference plugin (or by a cnichain ADD
//! killed before it set the alias) and belongs to the attachment whose result lists it.

use super::config::{attachment_ifb_name, ifb_name};
use crate::kernel::netlink::{errno_of, Link, Netlink};
use anyhow::{anyhow, Context, Result};

/// An attachment's ifb candidates and owner alias.
pub(super) struct Owner {
    pub reference: String,
    pub derived: String,
    pub alias: String,
}

impl Owner {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Owner {
        Owner {
            reference: ifb_name(network, container_id),
            derived: attachment_ifb_name(network, container_id, ifname),
            alias: crate::kernel::names::owner_alias("bandwidth", network, container_id, ifname),
        }
    }

    /// Create the attachment's ifb (up, with `mtu`) and return it: under the reference's
    /// name unless another attachment holds that, then under the derived name. An ifb of
    /// this very attachment already there is an error, as for the reference ("file
    /// exists").
    pub fn create(&self, host: &mut Netlink, mtu: u32) -> Result<Link> {
        let name = match host.add_ifb_with(&self.reference, Some(mtu)) {
            Ok(()) => &self.reference,
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {
                let held = host.link_by_name(&self.reference)?;
                if held.as_ref().is_some_and(|l| l.alias == self.alias) {
                    return Err(e.context("adding link"));
                }
                host.add_ifb_with(&self.derived, Some(mtu)).context("adding link")?;
                &self.derived
            }
            Err(e) => return Err(e.context("adding link")),
        };
        host.link_by_name(name)?
            .ok_or_else(|| anyhow!("ifb {name} vanished after creation"))
    }

    /// The attachment's ifb, if there is one. `listed`: the interface names of the
    /// attachment's result when known (prevResult), which must name an ifb the reference
    /// made for it to count as this attachment's.
    pub fn find(&self, host: &mut Netlink, listed: Option<&[String]>) -> Result<Option<Link>> {
        let reference = host.link_by_name(&self.reference)?;
        if let Some(l) = reference.as_ref().filter(|l| l.alias == self.alias) {
            return Ok(Some(l.clone()));
        }
        // the derived name is this attachment's alone (its alias may be missing if an
        // ADD was killed right after creating it)
        if let Some(l) = host.link_by_name(&self.derived)? {
            if l.alias == self.alias || l.alias.is_empty() {
                return Ok(Some(l));
            }
        }
        Ok(reference.filter(|l| {
            l.alias.is_empty() && l.kind.as_deref() == Some("ifb") && listed.is_none_or(|names| names.contains(&l.name))
        }))
    }
}
