//! GC and STATUS: stale cached attachments deleted, then every plugin's GC; STATUS of
//! every plugin.

use super::*;
use crate::request::{self, Attachment};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::{CniError, PLUGIN_NOT_AVAILABLE};
use crate::spec::ids;
use crate::spec::version;
use crate::stage::Command;

impl Engine {
    /// GC: DEL every cached attachment of this network that is not valid, then GC each
    /// plugin (spec >= 1.1.0). `valid = None` is libcni's nil args: every cached
    /// attachment is stale and no valid-set key is sent.
    pub fn gc(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
        traced(Command::Gc, list, None, || {
            ids::validate_network_name(&list.name)?;
            if list.disable_gc {
                return Ok(());
            }
            // GC is exclusive with ADD/DEL on the node (spec): the GC lock is taken
            // alone, slice by slice (see gc_slices.rs).
            match &self.locks {
                Some(l) => self.gc_in_slices(l, list, valid, false),
                None => self.gc_locked(list, valid),
            }
        })
    }

    /// GC keeping every attachment of this network that has a cached result or a lock
    /// file (`cnichain gc NET` without `--valid`). The valid set is read from the cache under the GC
    /// lock: read before it, an ADD finishing while GC waits for the lock would be
    /// missing from it and GC would DEL that fresh attachment (found by tests/load.rs).
    pub fn gc_keep_cached(&self, list: &NetConfList) -> Result<(), CniError> {
        traced(Command::Gc, list, None, || {
            ids::validate_network_name(&list.name)?;
            if list.disable_gc {
                return Ok(());
            }
            if let Some(l) = &self.locks {
                return self.gc_in_slices(l, list, None, true);
            }
            let mut valid: Vec<Attachment> = self
                .cache
                .entries()
                .into_iter()
                .filter(|e| e.network_name == list.name)
                .map(|e| Attachment {
                    container_id: e.container_id,
                    ifname: e.ifname,
                })
                .collect();
            // An attachment with a lock file but no cached result yet may be half-way
            // through a runtime's chain of drop-ins (libcni caches after the last plugin):
            // valid too. Only an explicit valid set collects those.
            for (container_id, ifname) in self
                .locks
                .as_ref()
                .map(|l| l.attachments(&list.name))
                .unwrap_or_default()
            {
                let a = Attachment { container_id, ifname };
                if !valid.contains(&a) {
                    valid.push(a);
                }
            }
            self.gc_locked(list, Some(&valid))
        })
    }

    /// GC's work, with the GC lock held by the caller.
    pub(super) fn gc_locked(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
        let mut errors: Vec<CniError> = Vec::new();
        for entry in self.cache.entries() {
            if entry.network_name != list.name {
                continue;
            }
            let att = Attachment {
                container_id: entry.container_id.clone(),
                ifname: entry.ifname.clone(),
            };
            if valid.is_some_and(|v| v.contains(&att)) {
                continue;
            }
            let rt = entry.into_runtime();
            if let Err(e) = self.del_unlocked(list, &rt) {
                errors.push(e);
            }
        }
        if let Err(e) = self.gc_plugins(list, valid) {
            errors.push(e);
        }
        if let (Some(locks), Some(valid)) = (&self.locks, valid) {
            let keep: Vec<(&str, &str)> = valid
                .iter()
                .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
                .collect();
            locks.sweep(&list.name, &keep);
        }
        join_errors(errors)
    }

    /// GC each plugin (spec >= 1.1.0), continuing past errors; no cache involved (the
    /// `cnichain` meta-plugin's runtime has already DELeted stale attachments).
    pub fn gc_plugins(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
        traced(Command::Gc, list, None, || {
            let mut errors: Vec<CniError> = Vec::new();
            if version::at_least(&list.cni_version, "1.1.0")? {
                let empty = RuntimeConf::default();
                for plugin in &list.plugins {
                    let config = request::build_gc(list, plugin, valid);
                    if let Err(e) = self.call(list, plugin, Command::Gc, &config, None, &empty) {
                        errors
                            .push(e.context(format!("plugin {} failed (gc)", request::describe(plugin, Command::Gc))));
                    }
                }
            }
            join_errors(errors)
        })
    }

    /// STATUS: each plugin in order, stopping at the first error; nothing below 1.1.0.
    pub fn status(&self, list: &NetConfList) -> Result<(), CniError> {
        traced(Command::Status, list, None, || {
            ids::validate_network_name(&list.name)?;
            if !version::at_least(&list.cni_version, "1.1.0")? {
                return Ok(());
            }
            // ADD needs the state dir (locks, tuning records): unwritable, it cannot work.
            if let Some(locks) = &self.locks {
                locks
                    .probe_writable()
                    .map_err(|e| CniError::new(PLUGIN_NOT_AVAILABLE, e))?;
            }
            let empty = RuntimeConf::default();
            for plugin in &list.plugins {
                let config = request::build_status(list, plugin);
                self.call(list, plugin, Command::Status, &config, None, &empty)
                    .map_err(|e| {
                        e.context(format!(
                            "plugin {} failed (status)",
                            request::describe(plugin, Command::Status)
                        ))
                    })?;
            }
            Ok(())
        })
    }
}
