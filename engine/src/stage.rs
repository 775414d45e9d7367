//! The Stage trait and the registry that maps a plugin `type` to an in-process stage or
//! to the exec fallback.

use crate::exec::ExecStage;
use crate::spec::args::RuntimeConf;
use crate::spec::error::{CniError, INVALID_CONFIG};
use crate::spec::result::CniResult;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
    /// libcni's word for a verb in wrapped errors ("plugin ... failed (add)").
    pub fn verb(self) -> &'static str {
        match self {
            Command::Add => "add",
            Command::Del => "delete",
            Command::Check => "check",
            Command::Gc => "gc",
            Command::Status => "status",
            Command::Version => "version",
        }
    }
}

/// Everything one plugin invocation receives: the derived request config (exactly the
/// JSON an exec'd plugin would read on stdin) and the runtime arguments (its env).
pub struct Invocation<'a> {
    pub command: Command,
    pub config: &'a Map<String, Value>,
    /// Already converted to `version`.
    pub prev_result: Option<&'a CniResult>,
    pub rt: &'a RuntimeConf,
    /// The selected spec version.
    pub version: &'a str,
    pub cni_path: &'a [PathBuf],
    /// For delegation: a main stage reaches its IPAM through the registry (in-process
    /// when the IPAM type has a stage, else exec'd from CNI_PATH).
    pub registry: &'a Registry,
}

impl Invocation<'_> {
    /// Delegate `command` to the plugin `type_name` (an IPAM) with delegate semantics:
    /// the same request config and runtime arguments, only the command differs (libcni
    /// DelegateAdd/Del/Check/GC/Status). ADD returns the delegate's result.
    ///
    /// A delegate that cannot be an IPAM (a main or meta stage, the delegating plugin's
    /// own type) or a delegation nested too deep (a cycle through exec'd plugins) is
    /// refused on ADD and CHECK (code 7) and skipped on DEL, GC and STATUS, so such an
    /// attachment can still be deleted: the reference recurses until it runs out of
    /// stack or processes.
    pub fn delegate(&self, type_name: &str, command: Command) -> Result<Option<CniResult>, CniError> {
        let own = self.config.get("type").and_then(Value::as_str).unwrap_or_default();
        let refusal = check_ipam_type(own, type_name).err().or_else(|| {
            (delegation_depth() >= MAX_DELEGATION_DEPTH).then(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!("ipam.type {type_name:?}: IPAM delegation nested more than {MAX_DELEGATION_DEPTH} deep (a cycle)"),
                )
            })
        });
        if let Some(e) = refusal {
            return match command {
                Command::Add | Command::Check => Err(e),
                _ => {
                    tracing::warn!("skipping the IPAM {}: {e}", command.as_str());
                    Ok(None)
                }
            };
        }
        let stage = self.registry.resolve(type_name)?;
        let _depth = DepthGuard::enter();
        let inv = Invocation {
            command,
            config: self.config,
            prev_result: self.prev_result,
            rt: self.rt,
            version: self.version,
            cni_path: self.cni_path,
            registry: self.registry,
        };
        match command {
            Command::Add => stage.add(&inv).map(Some),
            Command::Del => stage.del(&inv).map(|_| None),
            Command::Check => stage.check(&inv).map(|_| None),
            Command::Gc => stage.gc(&inv).map(|_| None),
            Command::Status => stage.status(&inv).map(|_| None),
            Command::Version => Ok(None),
        }
    }
}

impl Invocation<'_> {
    /// The preflight of the IPAM `type_name` this (main) stage delegates to: the
    /// refusals of [`Invocation::delegate`] on ADD, the plugin's lookup (an exec'd IPAM
    /// must exist in CNI_PATH), and an in-process IPAM's own preflight.
    pub fn preflight_ipam(&self, type_name: &str) -> Result<(), CniError> {
        let own = self.config.get("type").and_then(Value::as_str).unwrap_or_default();
        check_ipam_type(own, type_name)?;
        if delegation_depth() >= MAX_DELEGATION_DEPTH {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "ipam.type {type_name:?}: IPAM delegation nested more than {MAX_DELEGATION_DEPTH} deep (a cycle)"
                ),
            ));
        }
        let stage = self.registry.resolve(type_name)?;
        let _depth = DepthGuard::enter();
        let inv = Invocation {
            command: Command::Add,
            config: self.config,
            prev_result: self.prev_result,
            rt: self.rt,
            version: self.version,
            cni_path: self.cni_path,
            registry: self.registry,
        };
        stage.preflight(&inv)
    }
}

/// In-process stages that are not IPAM plugins: an `ipam.type` naming one would run it
/// as its own IPAM (the reference execs it with the same config: bridge and ptp recurse
/// without end, loopback "allocates" 127.0.0.1/8 for the pod's interface).
pub const NOT_IPAM: &[&str] = &[
    "bridge",
    "ptp",
    "loopback",
    "tuning",
    "portmap",
    "bandwidth",
    "cnichain",
];

/// IPAM delegation deeper than this is a cycle (bridge -> host-local is depth 1).
pub const MAX_DELEGATION_DEPTH: u32 = 8;

/// The environment variable that carries the delegation depth into exec'd delegates, so
/// a cycle through exec'd plugins and cnichain drop-ins ends too.
pub const DEPTH_ENV: &str = "CNICHAIN_DELEGATION_DEPTH";

/// Refuse an `ipam.type` that cannot be an IPAM plugin: a main or meta stage, or the
/// delegating plugin's own type (code 7, naming the field).
pub fn check_ipam_type(plugin_type: &str, ipam_type: &str) -> Result<(), CniError> {
    // An IPAM plugin called directly names itself (`{"type":"host-local","ipam":{"type":"host-local"}}`).
    let self_ipam = ["host-local", "static", "dhcp"].contains(&plugin_type);
    if NOT_IPAM.contains(&ipam_type) || (!plugin_type.is_empty() && ipam_type == plugin_type && !self_ipam) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("ipam.type {ipam_type:?} is not an IPAM plugin (it would delegate to itself or run a main plugin as IPAM)"),
        ));
    }
    Ok(())
}

thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// This thread's delegation depth plus the depth inherited from a delegating parent
/// process.
pub fn delegation_depth() -> u32 {
    let inherited = std::env::var(DEPTH_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
        .min(MAX_DELEGATION_DEPTH);
    inherited + DEPTH.with(|d| d.get())
}

struct DepthGuard;

impl DepthGuard {
    fn enter() -> DepthGuard {
        DEPTH.with(|d| d.set(d.get() + 1));
        DepthGuard
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// One link of a chain. Each stage shows the CNI triad; gc and status default to
/// success for stages that keep no state.
pub trait Stage: Send + Sync {
    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError>;
    fn del(&self, inv: &Invocation) -> Result<(), CniError>;
    fn check(&self, inv: &Invocation) -> Result<(), CniError>;
    fn gc(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    /// ADD's checks that change nothing, run for every in-process stage of a chain
    /// before its first stage's ADD: the config, capability arguments and CNI_ARGS as
    /// `add` reads them first (and the stage's in-process IPAM's), so that a bad value
    /// in the last plugin refuses the ADD before anything is created. Checks that need
    /// prevResult are left to `add`. Exec'd plugins cannot be asked: Ok.
    fn preflight(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    /// `cnichain reconcile`: re-create what this stage's records (the cached config,
    /// runtimeConfig and result in `inv`) say a live attachment has and the kernel no
    /// longer has; one line per thing restored (with `dry_run`, what would be). Only
    /// called for attachments cnichain made. Stages that keep no kernel state: nothing.
    fn reconcile(&self, _inv: &Invocation, _dry_run: bool) -> Result<Vec<String>, CniError> {
        Ok(Vec::new())
    }
    /// Spec versions this stage accepts (VERSION, validation).
    fn supported_versions(&self) -> Vec<String> {
        crate::spec::version::SUPPORTED.iter().map(|s| s.to_string()).collect()
    }
    /// "in-process" or the exec'd binary's path, for --timings and errors.
    fn describe(&self) -> String;
}

/// Which types to force through the exec fallback even when an in-process stage exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ExecPolicy {
    /// Use in-process stages where they exist.
    #[default]
    InProcess,
    /// Exec every plugin from CNI_PATH.
    All,
    /// Exec these types; in-process for the rest.
    Types(Vec<String>),
}

impl ExecPolicy {
    /// `all`, `none`, or a comma-separated list of types.
    pub fn parse(s: &str) -> ExecPolicy {
        let s = s.trim();
        match s {
            "" | "none" => ExecPolicy::InProcess,
            "all" => ExecPolicy::All,
            list => ExecPolicy::Types(
                list.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            ),
        }
    }
    fn forces(&self, t: &str) -> bool {
        match self {
            ExecPolicy::InProcess => false,
            ExecPolicy::All => true,
            ExecPolicy::Types(ts) => ts.iter().any(|x| x == t),
        }
    }
}

pub type StageFactory = fn() -> Arc<dyn Stage>;

/// Type name -> in-process stage, plus how to reach plugins that are not in-process.
pub struct Registry {
    stages: HashMap<String, Arc<dyn Stage>>,
    pub cni_path: Vec<PathBuf>,
    pub policy: ExecPolicy,
    pub plugin_timeout: Option<Duration>,
}

impl Registry {
    pub fn new(cni_path: Vec<PathBuf>) -> Registry {
        Registry {
            stages: HashMap::new(),
            cni_path,
            policy: ExecPolicy::InProcess,
            plugin_timeout: None,
        }
    }

    pub fn register(&mut self, type_name: &str, stage: Arc<dyn Stage>) {
        self.stages.insert(type_name.to_string(), stage);
    }

    pub fn in_process_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stages.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `type_name` would run in-process under the current policy.
    pub fn is_in_process(&self, type_name: &str) -> bool {
        self.stages.contains_key(type_name) && !self.policy.forces(type_name)
    }

    /// The stage for a plugin type: in-process unless forced, else the binary found in
    /// CNI_PATH (an error when there is none).
    pub fn resolve(&self, type_name: &str) -> Result<Arc<dyn Stage>, CniError> {
        crate::spec::ids::validate_plugin_type(type_name, "type")?;
        if let Some(s) = self.stages.get(type_name) {
            if !self.policy.forces(type_name) {
                return Ok(s.clone());
            }
        }
        let path = find_in_path(type_name, &self.cni_path)?;
        Ok(Arc::new(ExecStage {
            path,
            timeout: self.plugin_timeout,
        }))
    }
}

/// libcni's FindInPath: the first `dir/type` that stats as a regular file (symlinks
/// followed).
pub fn find_in_path(type_name: &str, paths: &[PathBuf]) -> Result<PathBuf, CniError> {
    crate::spec::ids::validate_plugin_type(type_name, "type")?;
    if paths.is_empty() {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("failed to find plugin {type_name:?}: CNI_PATH is empty"),
        ));
    }
    for dir in paths {
        let full = dir.join(type_name);
        if let Ok(md) = std::fs::metadata(&full) {
            if md.is_file() {
                return Ok(full);
            }
        }
    }
    let dirs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(CniError::new(
        INVALID_CONFIG,
        format!("failed to find plugin {type_name:?} in path [{}]", dirs.join(" ")),
    ))
}

/// CNI_PATH split on ':' (empty entries dropped).
pub fn split_cni_path(s: &str) -> Vec<PathBuf> {
    s.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

/// Slow kernel waits a stage may leave running while the chain goes on: deleting a link
/// waits 20-30 ms in the kernel (rcu_barrier), and a DEL of a 4-stage chain pays several
/// of those one after another. Inside a `DeferScope` (the engine opens one around DEL),
/// `defer` runs the work on its own thread, which inherits the caller's netns, and the
/// scope joins them all before the operation returns; their errors are reported as the
/// operation's. Outside a scope the work runs inline.
pub fn defer(
    what: impl Into<String>,
    f: impl FnOnce() -> Result<(), CniError> + Send + 'static,
) -> Result<(), CniError> {
    let what = what.into();
    let active = DEFERRED.with(|d| d.borrow().is_some());
    if !active {
        return f();
    }
    let handle = std::thread::Builder::new()
        .name("cnichain-defer".into())
        .spawn(f)
        .map_err(|e| CniError::internal(format!("{what}: cannot start a thread: {e}")))?;
    DEFERRED.with(|d| {
        if let Some(v) = d.borrow_mut().as_mut() {
            v.push((what, handle));
        }
    });
    Ok(())
}

type DeferredWork = Vec<(String, std::thread::JoinHandle<Result<(), CniError>>)>;

thread_local! {
    static DEFERRED: std::cell::RefCell<Option<DeferredWork>> = const { std::cell::RefCell::new(None) };
}

/// Collects deferred work on this thread until `join`.
pub struct DeferScope(());

impl DeferScope {
    pub fn begin() -> DeferScope {
        DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(Vec::new());
            }
        });
        DeferScope(())
    }

    /// Wait for every deferred piece of work; their errors, in the order they were
    /// deferred.
    pub fn join(self) -> Vec<CniError> {
        let work = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        work.into_iter()
            .filter_map(|(what, h)| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.context(what)),
                Err(_) => Some(CniError::internal(format!("{what}: the thread panicked"))),
            })
            .collect()
    }
}

impl Drop for DeferScope {
    fn drop(&mut self) {
        // Never leave work unjoined (and never leave the scope open) on an early return.
        let work = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for (_, h) in work {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod defer_tests {
    use super::*;

    #[test]
    fn deferred_work_overlaps_and_reports_errors() {
        let scope = DeferScope::begin();
        let t = std::time::Instant::now();
        for i in 0..3 {
            defer(format!("job {i}"), move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if i == 1 {
                    Err(CniError::internal("boom"))
                } else {
                    Ok(())
                }
            })
            .unwrap();
        }
        let errs = scope.join();
        assert!(t.elapsed() < std::time::Duration::from_millis(250), "ran concurrently");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].msg, "job 1: boom");
        // outside a scope: inline
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ran.clone();
        defer("inline", move || {
            r2.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
