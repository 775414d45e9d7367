//! The executor: ADD forward, DEL in reverse, CHECK forward, GC and STATUS, over a list
//! of stages, with libcni's semantics plus the improvements named in the README
//! (every prevResult converted to the selected version, validation on every verb, a
//! damaged cache never blocks DEL).

use crate::cache::{Cache, Lookup};
use crate::lock::{Held, Locks};
use crate::request::{self, Attachment};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::{NetConfList, PluginConf};
use crate::spec::error::{CniError, INCOMPATIBLE_VERSION, INVALID_ENV, PLUGIN_NOT_AVAILABLE};
use crate::spec::ids;
use crate::spec::result::CniResult;
use crate::spec::version;
use crate::stage::{Command, DeferScope, Invocation, Registry, Stage};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wall time of one plugin call, for `--timings`.
#[derive(Debug, Clone)]
pub struct Timing {
    pub plugin_type: String,
    pub command: Command,
    pub how: String,
    pub elapsed: Duration,
}

pub struct Engine {
    pub registry: Registry,
    pub cache: Cache,
    /// Per-attachment and GC locks; None runs unlocked (as libcni, which leaves that to
    /// the runtime).
    pub locks: Option<Locks>,
    /// Undo the plugins that already ran when an ADD fails (libcni leaves that to the
    /// runtime's DEL).
    pub rollback: bool,
    /// Keep each plugin call's wall time for [`Engine::take_timings`]. Off by default:
    /// kept and never taken, they would grow a long-lived process without bound.
    pub record_timings: bool,
    timings: Mutex<Vec<Timing>>,
}

impl Engine {
    pub fn new(registry: Registry, cache: Cache) -> Engine {
        Engine {
            registry,
            cache,
            locks: None,
            rollback: false,
            record_timings: false,
            timings: Mutex::new(Vec::new()),
        }
    }

    /// Shared GC lock plus the attachment's lock, for ADD/DEL/CHECK.
    fn lock_attachment(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<Option<(Held, Held)>, CniError> {
        let Some(locks) = &self.locks else { return Ok(None) };
        ids::validate_network_name(&list.name)?;
        ids::validate_container_id(&rt.container_id)?;
        ids::validate_ifname(&rt.ifname)?;
        let gc = locks.gc(false)?;
        let att = locks.attachment(&list.name, &rt.container_id, &rt.ifname)?;
        Ok(Some((gc, att)))
    }

    pub fn take_timings(&self) -> Vec<Timing> {
        self.timings
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    fn record(&self, plugin: &PluginConf, command: Command, stage: &dyn Stage, started: Instant) {
        if !self.record_timings {
            return;
        }
        let how = stage.describe();
        if let Ok(mut t) = self.timings.lock() {
            t.push(Timing {
                plugin_type: plugin.plugin_type.clone(),
                command,
                how,
                elapsed: started.elapsed(),
            });
        }
    }

    /// Resolve the plugin's stage and run one verb on it.
    pub(crate) fn call(
        &self,
        list: &NetConfList,
        plugin: &PluginConf,
        command: Command,
        config: &serde_json::Map<String, serde_json::Value>,
        prev: Option<&CniResult>,
        rt: &RuntimeConf,
    ) -> Result<Option<CniResult>, CniError> {
        let stage = self.registry.resolve(&plugin.plugin_type)?;
        if let Some(t) = &plugin.ipam_type {
            ids::validate_plugin_type(t, "ipam.type")?;
            // An ipam.type that would recurse: ADD and CHECK are refused before anything
            // changes. On DEL an in-process stage skips that delegate and releases the
            // rest; an exec'd one is not run at all (it would exec itself without end).
            if let Err(e) = crate::stage::check_ipam_type(&plugin.plugin_type, t) {
                if matches!(command, Command::Add | Command::Check) {
                    return Err(e);
                }
                if !self.registry.is_in_process(&plugin.plugin_type) {
                    tracing::warn!("not running {} {}: {e}", plugin.plugin_type, command.as_str());
                    return Ok(None);
                }
            }
        }
        let inv = Invocation {
            command,
            config,
            prev_result: prev,
            rt,
            version: &list.cni_version,
            cni_path: &self.registry.cni_path,
            registry: &self.registry,
        };
        let started = Instant::now();
        let out = match command {
            Command::Add => stage.add(&inv).map(Some),
            Command::Del => stage.del(&inv).map(|_| None),
            Command::Check => stage.check(&inv).map(|_| None),
            Command::Gc => stage.gc(&inv).map(|_| None),
            Command::Status => stage.status(&inv).map(|_| None),
            Command::Version => Ok(None),
        };
        self.record(plugin, command, stage.as_ref(), started);
        out
    }

    /// ADD, then cache the final result (libcni's AddNetworkList).
    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
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
    }

    /// The error carries whether any plugin's ADD had succeeded.
    fn add_and_cache(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, (CniError, bool)> {
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
        validate_attachment(list, rt, Command::Add)?;
        self.preflight(list, rt)?;
        self.add_steps(list, rt).map_err(|(e, _)| e)
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

    fn preflight_one(&self, list: &NetConfList, plugin: &PluginConf, rt: &RuntimeConf) -> Result<(), CniError> {
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
    fn add_steps(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, (CniError, bool)> {
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
    fn roll_back(
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

    pub fn check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
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
    }

    fn cached_for_check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<Option<CniResult>, CniError> {
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
    }

    pub fn del(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        validate_attachment(list, rt, Command::Del)?;
        let held = self.lock_attachment(list, rt)?;
        let out = self.del_unlocked(list, rt);
        // A failed DEL keeps the attachment's lock file, unless it made it (no ADD had).
        let made = held.as_ref().is_some_and(|(_, att)| att.created);
        release(held, out.is_ok() || made);
        out
    }

    /// DEL with the cached result as prevResult, then drop the cache (libcni's
    /// DelNetworkList), without taking locks.
    fn del_unlocked(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
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
    }

    /// GC: DEL every cached attachment of this network that is not valid, then GC each
    /// plugin (spec >= 1.1.0). `valid = None` is libcni's nil args: every cached
    /// attachment is stale and no valid-set key is sent.
    pub fn gc(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
        ids::validate_network_name(&list.name)?;
        if list.disable_gc {
            return Ok(());
        }
        // GC is exclusive with ADD/DEL on the node (spec): the GC lock is taken alone,
        // slice by slice (see gc_slices.rs).
        match &self.locks {
            Some(l) => self.gc_in_slices(l, list, valid, false),
            None => self.gc_locked(list, valid),
        }
    }

    /// GC keeping every attachment of this network that has a cached result or a lock
    /// file (`cnichain gc NET` without `--valid`). The valid set is read from the cache under the GC
    /// lock: read before it, an ADD finishing while GC waits for the lock would be
    /// missing from it and GC would DEL that fresh attachment (found by tests/load.rs).
    pub fn gc_keep_cached(&self, list: &NetConfList) -> Result<(), CniError> {
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
    }

    /// GC's work, with the GC lock held by the caller.
    fn gc_locked(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
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
            let rt = RuntimeConf {
                container_id: entry.container_id,
                netns: entry.netns,
                ifname: entry.ifname,
                args: entry.cni_args,
                capability_args: entry.capability_args,
            };
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
        let mut errors: Vec<CniError> = Vec::new();
        if version::at_least(&list.cni_version, "1.1.0")? {
            let empty = RuntimeConf::default();
            for plugin in &list.plugins {
                let config = request::build_gc(list, plugin, valid);
                if let Err(e) = self.call(list, plugin, Command::Gc, &config, None, &empty) {
                    errors.push(e.context(format!("plugin {} failed (gc)", request::describe(plugin, Command::Gc))));
                }
            }
        }
        join_errors(errors)
    }

    /// STATUS: each plugin in order, stopping at the first error; nothing below 1.1.0.
    pub fn status(&self, list: &NetConfList) -> Result<(), CniError> {
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
    }
}

/// Release an attachment's locks, removing its lock file when `remove` (the attachment
/// is gone, or was never made).
fn release(held: Option<(Held, Held)>, remove: bool) {
    if let Some((_gc, att)) = held {
        if remove {
            att.remove();
        }
    }
}

pub(crate) fn join_errors(mut errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let code = errors[0].code;
            let msg = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
            Err(CniError::new(code, msg))
        }
    }
}

/// The first error's code and msg, every other error appended to its details.
pub fn combine_errors(errors: Vec<CniError>) -> Result<(), CniError> {
    let mut it = errors.into_iter();
    let Some(first) = it.next() else { return Ok(()) };
    let rest: Vec<String> = it.map(|e| e.to_string()).collect();
    if rest.is_empty() {
        return Err(first);
    }
    let mut details = Vec::new();
    if !first.details.is_empty() {
        details.push(first.details.clone());
    }
    details.push(format!("{} more failed: {}", rest.len(), rest.join("; ")));
    let joined = details.join("; ");
    Err(first.with_details(joined))
}

/// Checks made on every verb (libcni makes them on ADD only), before anything runs.
pub fn validate_attachment(list: &NetConfList, rt: &RuntimeConf, command: Command) -> Result<(), CniError> {
    ids::validate_network_name(&list.name)?;
    if !version::is_supported(&list.cni_version) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "unsupported cniVersion {:?} of network {:?}: cnichain supports {}",
                list.cni_version,
                list.name,
                version::SUPPORTED.join(", ")
            ),
        ));
    }
    ids::validate_container_id(&rt.container_id)?;
    ids::validate_ifname(&rt.ifname)?;
    for (k, v) in &rt.args {
        if k.is_empty() || k.contains(';') || k.contains('=') || v.contains(';') {
            return Err(CniError::new(INVALID_ENV, format!("invalid CNI_ARGS pair {k:?}={v:?}")));
        }
    }
    match command {
        Command::Add | Command::Check => check_netns(&rt.netns, true),
        // DEL is best effort: the netns may already be gone.
        Command::Del => check_netns(&rt.netns, false),
        _ => Ok(()),
    }
}

const NSFS_MAGIC: i64 = 0x6e736673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The refusal of a CNI_NETNS that is the caller's own network namespace.
pub fn own_netns_msg(path: &str) -> String {
    format!("CNI_NETNS {path:?} is the caller's own network namespace, not a pod's: refusing to configure it")
}

/// The netns must be a path to a network namespace (nsfs, or procfs for
/// /proc/<pid>/ns/net) other than the caller's own. With `required` false (DEL) an empty
/// path, a vanished one, or one that is no longer a network namespace (a runtime
/// unmounted it and crashed before unlinking the file) means the pod side is gone: DEL
/// goes on and releases what is host-side.
pub fn check_netns(path: &str, required: bool) -> Result<(), CniError> {
    if path.is_empty() {
        return if required {
            Err(CniError::new(INVALID_ENV, "missing network namespace path (CNI_NETNS)"))
        } else {
            Ok(())
        };
    }
    if path.contains('\0') {
        return Err(CniError::new(
            INVALID_ENV,
            "network namespace path (CNI_NETNS) contains a NUL byte",
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let gone = matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
            if !required && gone {
                return Ok(());
            }
            return Err(CniError::new(
                INVALID_ENV,
                format!("network namespace (CNI_NETNS) {path:?}: {e}"),
            ));
        }
    };
    let cpath = std::ffi::CString::new(path).map_err(|_| CniError::new(INVALID_ENV, "bad CNI_NETNS"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: cpath is a valid C string and st a properly sized out-parameter.
    let rc = unsafe { libc::statfs(cpath.as_ptr(), &mut st) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CniError::new(
            INVALID_ENV,
            format!("network namespace (CNI_NETNS) {path:?}: {e}"),
        ));
    }
    let magic = (st.f_type as i64) & 0xffff_ffff;
    if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
        if !required {
            return Ok(());
        }
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {path:?} is not a network namespace (filesystem magic {magic:#x})"),
        ));
    }
    refuse_own_netns(path, &meta)
}

/// Code 4 when `path` names the calling thread's own netns; anything else (a missing
/// path included) is left to the code that opens it.
pub fn refuse_own_netns_path(path: &str) -> Result<(), CniError> {
    match std::fs::metadata(path) {
        Ok(meta) if !path.is_empty() => refuse_own_netns(path, &meta),
        _ => Ok(()),
    }
}

/// Code 4 when `path` (already stat'ed as `meta`) is the calling thread's own netns:
/// the same nsfs device and inode as /proc/thread-self/ns/net.
pub fn refuse_own_netns(path: &str, meta: &std::fs::Metadata) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| {
        CniError::new(
            INVALID_ENV,
            format!("cannot tell whether CNI_NETNS {path:?} is the caller's own network namespace: {e}"),
        )
    })?;
    if own.dev() == meta.dev() && own.ino() == meta.ino() {
        return Err(CniError::new(INVALID_ENV, own_netns_msg(path)));
    }
    Ok(())
}

#[cfg(test)]
mod netns_tests {
    use super::*;

    #[test]
    fn del_takes_a_gone_netns_add_does_not() {
        let dir = std::env::temp_dir().join(format!("cnichain-chain-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        let plain = plain.to_str().unwrap();
        let missing = dir.join("missing");
        let missing = missing.to_str().unwrap();
        for p in [plain, missing, dir.to_str().unwrap(), "", "/proc/self/status/x"] {
            assert!(check_netns(p, false).is_ok(), "DEL {p:?}");
        }
        for p in [plain, missing, ""] {
            assert_eq!(check_netns(p, true).unwrap_err().code, 4, "ADD {p:?}");
        }
        assert_eq!(check_netns("a\0b", false).unwrap_err().code, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_callers_own_netns_is_refused_on_every_verb() {
        for p in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
            for required in [true, false] {
                let e = check_netns(p, required).unwrap_err();
                assert_eq!(e.code, 4);
                assert!(e.msg.contains("caller's own network namespace"), "{}", e.msg);
            }
            assert_eq!(refuse_own_netns_path(p).unwrap_err().code, 4);
        }
        assert!(refuse_own_netns_path("/nonexistent").is_ok());
    }

    #[test]
    fn combined_errors_keep_the_first_code_and_msg() {
        assert!(combine_errors(Vec::new()).is_ok());
        let one = CniError::new(11, "a").with_details("d");
        assert_eq!(combine_errors(vec![one.clone()]).unwrap_err(), one);
        let e = combine_errors(vec![one, CniError::new(7, "b"), CniError::new(999, "c")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "a"));
        assert_eq!(e.details, "d; 2 more failed: b; c");
    }
}

#[cfg(test)]
mod preflight_tests {
    use super::*;
    use crate::cache::Cache;
    use crate::spec::error::INVALID_CONFIG;
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
