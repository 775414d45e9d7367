//! DEL: every plugin in reverse order, errors collected, the cache entry removed.

use super::*;
use crate::cache::Lookup;
use crate::request::{self};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version;
use crate::stage::{Command, DeferScope};

impl Engine {
    /// DEL (libcni's DelNetworkList): each plugin in reverse order with the cached result
    /// as prevResult, under the attachment's lock; the cache entry is removed after.
    /// Idempotent: a gone netns or a missing cache entry is not an error.
    pub fn del(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        traced(Command::Del, list, Some(rt), || {
            validate_attachment(list, rt, Command::Del)?;
            let held = self.lock_attachment(list, rt)?;
            let out = self.del_unlocked(list, rt);
            // A failed DEL keeps the attachment's lock file, unless it made it (no ADD had).
            let made = held.as_ref().is_some_and(|(_, att)| att.created);
            release(held, out.is_ok() || made);
            out
        })
    }

    /// DEL with the cached result as prevResult, then drop the cache (libcni's
    /// DelNetworkList), without taking locks.
    pub(super) fn del_unlocked(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        validate_attachment(list, rt, Command::Del)?;
        let mut cached = None;
        if version::at_least(&list.cni_version, "0.4.0")? {
            match self.cache.read(&list.name, &rt.container_id, &rt.ifname) {
                Lookup::Missing => {}
                Lookup::Found(e) => {
                    if let Some(v) = e.result {
                        match CniResult::from_value(&v, &list.cni_version).and_then(|r| r.convert(&list.cni_version)) {
                            Ok(r) => cached = Some(r),
                            Err(err) => tracing::warn!(
                                "ignoring cached result of {:?} that cannot be used: {err}; deleting without prevResult",
                                list.name
                            ),
                        }
                    }
                }
                // A damaged cache must never block DEL (cni#1055): drop it and go on.
                Lookup::Corrupt(why) => {
                    tracing::warn!("ignoring damaged result cache: {why}; deleting without prevResult")
                }
            }
        }
        self.del_with(list, rt, cached.as_ref())?;
        self.cache.remove(&list.name, &rt.container_id, &rt.ifname)
    }

    /// DEL in reverse with `prev` as every plugin's prevResult (no cache). Every plugin
    /// gets its DEL even when one before it fails (libcni stops at the first failure, so
    /// the IPAM release that usually comes last never runs and the address leaks:
    /// containerd#12130, cni#797); the error is the first failure's code and msg with
    /// the others in its details. Slow kernel waits the stages defer (link deletions)
    /// overlap and are joined before returning.
    pub fn del_with(&self, list: &NetConfList, rt: &RuntimeConf, prev: Option<&CniResult>) -> Result<(), CniError> {
        traced(Command::Del, list, Some(rt), || {
            let scope = DeferScope::begin();
            let mut errors = Vec::new();
            for plugin in list.plugins.iter().rev() {
                let config = request::build(list, plugin, prev, rt);
                if let Err(e) = self.call(list, plugin, Command::Del, &config, prev, rt) {
                    errors.push(e.context(format!(
                        "plugin {} failed (delete)",
                        request::describe(plugin, Command::Del)
                    )));
                }
            }
            errors.extend(scope.join().into_iter().map(|e| e.context("failed (delete)")));
            combine_errors(errors)
        })
    }
}
