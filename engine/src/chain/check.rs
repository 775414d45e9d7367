//! CHECK: the cached result as prevResult, each plugin in order.

use super::*;
use crate::cache::Lookup;
use crate::request::{self};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::{CniError, INCOMPATIBLE_VERSION};
use crate::spec::result::CniResult;
use crate::spec::version;
use crate::stage::Command;

impl Engine {
    /// CHECK (libcni's CheckNetworkList): each plugin in order with the cached ADD
    /// result as prevResult; refused below 0.4.0, skipped when `disableCheck`.
    pub fn check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        traced(Command::Check, list, Some(rt), || {
            if !version::at_least(&list.cni_version, "0.4.0")? {
                return Err(CniError::new(
                    INCOMPATIBLE_VERSION,
                    format!(
                        "configuration version {:?} does not support the CHECK command",
                        list.cni_version
                    ),
                ));
            }
            validate_attachment(list, rt, Command::Check)?;
            if list.disable_check {
                return Ok(());
            }
            let held = self.lock_attachment(list, rt)?;
            let out = self
                .cached_for_check(list, rt)
                .and_then(|cached| self.check_with(list, rt, cached.as_ref()));
            // CHECK of an attachment without a lock file leaves none.
            let made = held.as_ref().is_some_and(|(_, att)| att.created);
            release(held, made);
            out
        })
    }

    pub(super) fn cached_for_check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<Option<CniResult>, CniError> {
        Ok(match self.cache.read(&list.name, &rt.container_id, &rt.ifname) {
            Lookup::Missing => None,
            Lookup::Found(e) => match e.result {
                Some(v) => Some(
                    CniResult::from_value(&v, &list.cni_version)
                        .and_then(|r| r.convert(&list.cni_version))
                        .map_err(|err| err.context(format!("failed to get network {:?} cached result", list.name)))?,
                ),
                None => None,
            },
            Lookup::Corrupt(why) => {
                return Err(CniError::decode(format!(
                    "failed to get network {:?} cached result: {why}",
                    list.name
                )))
            }
        })
    }

    /// CHECK forward with `prev` as every plugin's prevResult (no cache read).
    pub fn check_with(&self, list: &NetConfList, rt: &RuntimeConf, prev: Option<&CniResult>) -> Result<(), CniError> {
        traced(Command::Check, list, Some(rt), || {
            for plugin in &list.plugins {
                let config = request::build(list, plugin, prev, rt);
                self.call(list, plugin, Command::Check, &config, prev, rt)
                    .map_err(|e| {
                        e.context(format!(
                            "plugin {} failed (check)",
                            request::describe(plugin, Command::Check)
                        ))
                    })?;
            }
            Ok(())
        })
    }
}
