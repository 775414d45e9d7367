//! GC in slices, so that it never blocks ADD/DEL for longer than one stage's work: the
//! spec makes GC exclusive with ADD/DEL, and a node with thousands of attachments needs
//! seconds to collect them, so the node-wide GC lock is taken alone only
//!
//! 1. to read the cache and the attachment lock files (what exists now, what is stale);
//! 2. for each plugin's GC, one plugin at a time;
//! 3. to sweep the lock files of stale attachments.
//!
//! Stale cached attachments are DELeted in between as a runtime would DEL them (shared
//! GC lock plus that attachment's lock): other attachments' ADD/DEL go on meanwhile. An
//! ADD that starts while GC runs made its lock file before it did anything (under the
//! shared GC lock), so every later slice counts an attachment whose lock file was not
//! there in slice 1 as valid: GC never collects what was added while it ran.

use crate::chain::Engine;
use crate::lock::Locks;
use crate::request::{self, Attachment};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::CniError;
use crate::spec::version;
use crate::stage::Command;
use std::collections::HashSet;

impl Engine {
    /// GC of `list` with the valid set `valid` (None: libcni's nil args, every cached
    /// attachment is stale and no key is sent), or with the set `cnichain gc NET` keeps
    /// (every cached or locked attachment, read in slice 1) when `keep_cached`.
    pub(crate) fn gc_in_slices(
        &self,
        locks: &Locks,
        list: &NetConfList,
        valid: Option<&[Attachment]>,
        keep_cached: bool,
    ) -> Result<(), CniError> {
        let net = list.name.as_str();
        let (valid, known, stale) = {
            let _gc = locks.gc(true)?;
            let known: HashSet<(String, String)> = locks.attachments(net).into_iter().collect();
            let entries: Vec<_> = self
                .cache
                .entries()
                .into_iter()
                .filter(|e| e.network_name == net)
                .collect();
            let valid: Option<Vec<Attachment>> = if keep_cached {
                let mut v: Vec<Attachment> = entries
                    .iter()
                    .map(|e| (e.container_id.clone(), e.ifname.clone()))
                    .chain(known.iter().cloned())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .map(|(container_id, ifname)| Attachment { container_id, ifname })
                    .collect();
                v.sort();
                Some(v)
            } else {
                valid.map(<[Attachment]>::to_vec)
            };
            let keep: Option<HashSet<(&str, &str)>> = valid
                .as_ref()
                .map(|v| v.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect());
            let stale: Vec<_> = entries
                .into_iter()
                .filter(|e| {
                    !keep
                        .as_ref()
                        .is_some_and(|k| k.contains(&(e.container_id.as_str(), e.ifname.as_str())))
                })
                .collect();
            (valid, known, stale)
        };

        let mut errors: Vec<CniError> = Vec::new();
        for entry in stale {
            let rt = entry.into_runtime();
            if let Err(e) = self.del(list, &rt) {
                errors.push(e);
            }
        }

        // The valid set as of now: plus the attachments added since slice 1.
        let current = || -> Option<Vec<Attachment>> {
            let mut v = valid.clone()?;
            let have: HashSet<Attachment> = v.iter().cloned().collect();
            for (container_id, ifname) in locks.attachments(net) {
                let a = Attachment { container_id, ifname };
                if !known.contains(&(a.container_id.clone(), a.ifname.clone())) && !have.contains(&a) {
                    v.push(a);
                }
            }
            Some(v)
        };
        if version::at_least(&list.cni_version, "1.1.0")? {
            let empty = RuntimeConf::default();
            for plugin in &list.plugins {
                let _gc = locks.gc(true)?;
                let v = current();
                let config = request::build_gc(list, plugin, v.as_deref());
                if let Err(e) = self.call(list, plugin, Command::Gc, &config, None, &empty) {
                    errors.push(e.context(format!("plugin {} failed (gc)", request::describe(plugin, Command::Gc))));
                }
            }
        }
        if valid.is_some() {
            let _gc = locks.gc(true)?;
            let v = current().unwrap_or_default();
            let keep: Vec<(&str, &str)> = v.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
            locks.sweep(net, &keep);
        }
        crate::chain::join_errors(errors)
    }
}
