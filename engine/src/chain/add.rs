//! ADD: preflight every in-process stage, run the chain in order, cache the result,
//! roll back on failure.

use super::*;
use crate::request;
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::{NetConfList, PluginConf};
use crate::spec::error::CniError;
use crate::spec::ids;
use crate::spec::result::CniResult;
use crate::stage::{Command, Invocation};
use std::time::Instant;

impl Engine {
    /// ADD, then cache the final result (libcni's AddNetworkList).
    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        traced(Command::Add, list, Some(rt), || {
            // Refused requests leave no lock file.
            validate_attachment(list, rt, Command::Add)?;
            self.preflight(list, rt)?;
            let held = self.lock_attachment(list, rt)?;
            let out = self.add_and_cache(list, rt);
            // The lock file stays with the attachment (see lock.rs) unless the failed ADD
            // was rolled back, or (no rollback) failed at its first plugin and made the
            // file: nothing was made for the runtime's DEL to undo, so nothing stays.
            let made = held.as_ref().is_some_and(|(_, att)| att.created);
            let remove = match &out {
                Ok(_) => false,
                Err((_, progressed)) => self.rollback || (made && !progressed),
            };
            release(held, remove);
            out.map_err(|(e, _)| e)
        })
    }

    /// The error carries whether any plugin's ADD had succeeded.
    pub(super) fn add_and_cache(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, (CniError, bool)> {
        let result = self.add_steps(list, rt)?;
        let cached = crate::fault::point("chain.before-cache")
            .and_then(|_| self.cache.write(&list.name, rt, &list.bytes, &result))
            .and_then(|_| crate::fault::point("chain.after-cache"));
        if let Err(e) = cached {
            // The chain is in place but the runtime would not know its result: undo it
            // (rollback on) and drop the cache entry, so a failed ADD leaves nothing.
            if self.rollback {
                let e = self.roll_back(list, rt, list.plugins.len().saturating_sub(1), Some(&result), e);
                let _ = self.cache.remove(&list.name, &rt.container_id, &rt.ifname);
                return Err((e, true));
            }
            return Err((e, true));
        }
        Ok(result)
    }

    /// ADD forward through every plugin, threading each result into the next one's
    /// prevResult. No cache (the `cnichain` meta-plugin's runtime keeps the result).
    pub fn add_uncached(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        traced(Command::Add, list, Some(rt), || {
            validate_attachment(list, rt, Command::Add)?;
            self.preflight(list, rt)?;
            self.add_steps(list, rt).map_err(|(e, _)| e)
        })
    }

    /// Before the first stage of an ADD runs: every plugin's type must resolve (an
    /// exec'd one must be in CNI_PATH), its ipam.type must be an IPAM, and every
    /// in-process stage's [`Stage::preflight`] must pass on the request it will get
    /// (prevResult aside). The error is the one that stage's ADD would give, so a bad
    /// value in the last plugin refuses the ADD with nothing created.
    pub fn preflight(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        let started = Instant::now();
        let mut each = Vec::new();
        let out = list.plugins.iter().try_for_each(|plugin| {
            let t = Instant::now();
            let r = self.preflight_one(list, plugin, rt).map_err(|e| {
                e.context(format!(
                    "plugin {} failed (add)",
                    request::describe(plugin, Command::Add)
                ))
            });
            each.push(format!(
                "{} {:.3}",
                plugin.plugin_type,
                t.elapsed().as_secs_f64() * 1000.0
            ));
            r
        });
        if self.record_timings {
            if let Ok(mut t) = self.timings.lock() {
                t.push(Timing {
                    plugin_type: "preflight".into(),
                    command: Command::Add,
                    how: format!("ms per plugin: {}", each.join(", ")),
                    elapsed: started.elapsed(),
                });
            }
        }
        out
    }

    pub(super) fn preflight_one(
        &self,
        list: &NetConfList,
        plugin: &PluginConf,
        rt: &RuntimeConf,
    ) -> Result<(), CniError> {
        let stage = self.registry.resolve(&plugin.plugin_type)?;
        if let Some(t) = &plugin.ipam_type {
            ids::validate_plugin_type(t, "ipam.type")?;
            crate::stage::check_ipam_type(&plugin.plugin_type, t)?;
        }
        if !self.registry.is_in_process(&plugin.plugin_type) {
            return Ok(());
        }
        let config = request::build(list, plugin, None, rt);
        let inv = Invocation {
            command: Command::Add,
            config: &config,
            prev_result: None,
            rt,
            version: &list.cni_version,
            cni_path: &self.registry.cni_path,
            registry: &self.registry,
        };
        stage.preflight(&inv)
    }

    /// [`Engine::add_uncached`]; the error carries whether any plugin's ADD succeeded.
    pub(super) fn add_steps(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, (CniError, bool)> {
        validate_attachment(list, rt, Command::Add).map_err(|e| (e, false))?;
        let mut prev: Option<CniResult> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let config = request::build(list, plugin, prev.as_ref(), rt);
            let step = self
                .call(list, plugin, Command::Add, &config, prev.as_ref(), rt)
                .map_err(|e| {
                    e.context(format!(
                        "plugin {} failed (add)",
                        request::describe(plugin, Command::Add)
                    ))
                })
                .and_then(|res| res.ok_or_else(|| CniError::internal("stage returned no result")))
                // libcni forwards results unconverted; the next plugin may then refuse a
                // prevResult of another result family. Convert to the selected version.
                .and_then(|res| {
                    res.convert(&list.cni_version).map_err(|e| {
                        e.context(format!(
                            "plugin {} returned a result that cannot be converted to {}",
                            request::describe(plugin, Command::Add),
                            list.cni_version
                        ))
                    })
                });
            match step {
                Ok(r) => prev = Some(r),
                Err(e) if self.rollback => return Err((self.roll_back(list, rt, i, prev.as_ref(), e), i > 0)),
                Err(e) => return Err((e, i > 0)),
            }
        }
        prev.ok_or_else(|| (CniError::invalid_config("no plugins in list"), false))
    }

    /// Undo a failed ADD: DEL the failed plugin and every one before it, in reverse,
    /// with the last good result as prevResult. The original error is returned, with
    /// any rollback failures in its details.
    pub(super) fn roll_back(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
        failed: usize,
        prev: Option<&CniResult>,
        err: CniError,
    ) -> CniError {
        let mut failures = Vec::new();
        for plugin in list.plugins[..=failed].iter().rev() {
            let config = request::build(list, plugin, prev, rt);
            if let Err(e) = self.call(list, plugin, Command::Del, &config, prev, rt) {
                failures.push(format!(
                    "rollback of plugin {}: {e}",
                    request::describe(plugin, Command::Del)
                ));
            }
        }
        if failures.is_empty() {
            return err;
        }
        let details = if err.details.is_empty() {
            failures.join("; ")
        } else {
            format!("{}; {}", err.details, failures.join("; "))
        };
        err.with_details(details)
    }
}

#[cfg(test)]
mod preflight_tests {
    use super::*;
    use crate::cache::Cache;
    use crate::chain::Engine;
    use crate::spec::error::INVALID_CONFIG;
    use crate::stage::{Registry, Stage};
    use serde_json::{json, Map, Value};
    use std::sync::{Arc, Mutex};

    /// A stage that records what it was asked and refuses a preflight whose config has
    /// `"bad": true`, naming the capability arguments it saw.
    struct Probe(Arc<Mutex<Vec<String>>>);

    impl Stage for Probe {
        fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
            let t = inv.config.get("type").and_then(Value::as_str).unwrap_or_default();
            let rc = inv.config.get("runtimeConfig").cloned().unwrap_or(Value::Null);
            self.0
                .lock()
                .unwrap()
                .push(format!("preflight {t} prev={} rc={rc}", inv.prev_result.is_some()));
            if inv.config.get("bad") == Some(&Value::Bool(true)) {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("{t}: bad value, runtimeConfig {rc}"),
                ));
            }
            Ok(())
        }
        fn add(&self, _inv: &Invocation) -> Result<CniResult, CniError> {
            self.0.lock().unwrap().push("add".into());
            Err(CniError::internal("add must not run in these tests"))
        }
        fn del(&self, _inv: &Invocation) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _inv: &Invocation) -> Result<(), CniError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "in-process".into()
        }
    }

    fn engine(calls: &Arc<Mutex<Vec<String>>>) -> Engine {
        let mut reg = Registry::new(vec!["/nonexistent-cnichain-test".into()]);
        for t in ["one", "two", "three"] {
            reg.register(t, Arc::new(Probe(calls.clone())));
        }
        Engine::new(reg, Cache::new("/nonexistent-cnichain-test/cache"))
    }

    fn list(plugins: Value) -> NetConfList {
        let raw: Map<String, Value> = serde_json::from_value(json!({
            "cniVersion": "1.0.0", "name": "pf", "plugins": plugins
        }))
        .unwrap();
        NetConfList::from_map(&raw, Vec::new(), Vec::new()).unwrap()
    }

    #[test]
    fn preflight_refuses_with_the_failing_stage_before_any_add() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let e = engine(&calls);
        let rt = RuntimeConf {
            capability_args: serde_json::from_value(json!({"portMappings": [{"hostPort": 0}]})).unwrap(),
            ..Default::default()
        };
        let l = list(json!([
            {"type": "one"},
            {"type": "two"},
            {"type": "three", "bad": true, "capabilities": {"portMappings": true}}
        ]));
        let err = e.preflight(&l, &rt).unwrap_err();
        assert_eq!(err.code, INVALID_CONFIG);
        assert_eq!(
            err.msg,
            r#"plugin type="three" failed (add): three: bad value, runtimeConfig {"portMappings":[{"hostPort":0}]}"#
        );
        // every stage up to the failing one, each without prevResult, and no ADD
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "preflight one prev=false rc=null",
                "preflight two prev=false rc=null",
                r#"preflight three prev=false rc={"portMappings":[{"hostPort":0}]}"#
            ]
        );
        assert!(e
            .preflight(&list(json!([{"type": "one"}, {"type": "two"}])), &rt)
            .is_ok());
    }

    #[test]
    fn preflight_refuses_missing_exec_plugins_and_bad_ipam_types() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let e = engine(&calls);
        let rt = RuntimeConf::default();
        let err = e
            .preflight(&list(json!([{"type": "one"}, {"type": "not-here"}])), &rt)
            .unwrap_err();
        assert!(
            err.msg
                .starts_with(r#"plugin type="not-here" failed (add): failed to find plugin"#),
            "{}",
            err.msg
        );
        let err = e
            .preflight(&list(json!([{"type": "one", "ipam": {"type": "bridge"}}])), &rt)
            .unwrap_err();
        assert!(err.msg.contains("is not an IPAM plugin"), "{}", err.msg);
        assert!(!calls.lock().unwrap().iter().any(|c| c == "add"));
    }
}
