//! The executor: ADD forward, DEL in reverse, CHECK forward, GC and STATUS, over a list
//! of stages, with libcni's semantics plus the improvements named in the README
//! (every prevResult converted to the selected version, validation on every verb, a
//! damaged cache never blocks DEL).

use crate::cache::Cache;
use crate::lock::{Held, Locks};
use crate::settings::Settings;
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::{NetConfList, PluginConf};
use crate::spec::error::{CniError, INCOMPATIBLE_VERSION, INVALID_ENV};
use crate::spec::ids;
use crate::spec::result::CniResult;
use crate::spec::version;
use crate::stage::{Command, Invocation, Registry, Stage};
use std::path::PathBuf;
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

/// Runs conflists: ADD, CHECK, DEL, GC and STATUS over a [`Registry`] of stages, with
/// libcni's result cache and (optionally) cnichain's locks and rollback. Build one with
/// [`Engine::from_settings`]; it can serve many calls.
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
    /// An engine over `registry` and `cache` that takes no locks and does not roll back
    /// (libcni's behaviour); see [`Engine::from_settings`] for the configured one.
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

    /// The engine an entry point runs: a registry over CNI_PATH `cni_path` with
    /// `settings` (its in-process stages
    /// added by `register`, e.g. `cnichain_stages::register_all`), the result cache in
    /// `settings.cache_dir`, locks in `settings.state_dir` when `settings.engine_locks`,
    /// and `settings.rollback`.
    pub fn from_settings(cni_path: Vec<PathBuf>, settings: Settings, register: impl FnOnce(&mut Registry)) -> Engine {
        let mut cache = Cache::new(&settings.cache_dir);
        cache.fsync = settings.cache_fsync;
        let locks = settings.engine_locks.then(|| Locks::new(&settings.state_dir));
        let rollback = settings.rollback;
        let mut registry = Registry::with_settings(cni_path, settings);
        register(&mut registry);
        let mut engine = Engine::new(registry, cache);
        engine.locks = locks;
        engine.rollback = rollback;
        engine
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

    /// The plugin calls' wall times recorded since the last take (when
    /// `record_timings` is on).
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
        let span = crate::trace::span(|| format!("{} {}", command.as_str(), plugin.plugin_type));
        if crate::trace::enabled() {
            span.attr("cni.command", command.as_str());
            span.attr("cni.plugin.type", plugin.plugin_type.as_str());
            span.attr("cni.plugin.how", stage.describe());
            span.attr("cni.plugin.exec", !self.registry.is_in_process(&plugin.plugin_type));
        }
        let out = stage.run(&inv);
        crate::trace::end_with(span, &out);
        self.record(plugin, command, stage.as_ref(), started);
        out
    }
}

/// Run one verb of a chain inside its trace span (one per verb; see [`crate::trace`]).
pub(super) fn traced<T>(
    command: Command,
    list: &NetConfList,
    rt: Option<&RuntimeConf>,
    f: impl FnOnce() -> Result<T, CniError>,
) -> Result<T, CniError> {
    let Some(span) = crate::trace::root_span(|| format!("cnichain {}", command.as_str())) else {
        return f();
    };
    span.attr("cni.command", command.as_str());
    span.attr("cni.network", list.name.as_str());
    span.attr("cni.version", list.cni_version.as_str());
    if let Some(rt) = rt {
        span.attr("cni.container_id", rt.container_id.as_str());
        span.attr("cni.ifname", rt.ifname.as_str());
        span.attr("cni.netns", rt.netns.as_str());
    }
    let out = f();
    crate::trace::end_with(span, &out);
    out
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

mod add;
mod check;
mod del;
mod gc;
mod gc_slices;
mod netns;

pub use netns::*;
