//! The executor: ADD forward, DEL in reverse, CHECK forward, GC and STATUS, over a list
//! of stages, with libcni's semantics plus the improvements named in the README
//! (every prevResult converted to the selected version, validation on every verb, a
//! damaged cache never blocks DEL).

use crate::cache::{Cache, Lookup};
use crate::request::{self, Attachment};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::{NetConfList, PluginConf};
use crate::spec::error::{CniError, INCOMPATIBLE_VERSION, INVALID_ENV};
use crate::spec::ids;
use crate::spec::result::CniResult;
use crate::spec::version;
use crate::stage::{Command, Invocation, Registry};
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
    timings: Mutex<Vec<Timing>>,
}

impl Engine {
    pub fn new(registry: Registry, cache: Cache) -> Engine {
        Engine {
            registry,
            cache,
            timings: Mutex::new(Vec::new()),
        }
    }

    pub fn take_timings(&self) -> Vec<Timing> {
        self.timings
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    fn record(&self, plugin: &PluginConf, command: Command, how: String, started: Instant) {
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
    fn call(
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
        self.record(plugin, command, stage.describe(), started);
        out
    }

    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        validate_attachment(list, rt, Command::Add)?;
        let mut prev: Option<CniResult> = None;
        for plugin in &list.plugins {
            let config = request::build(list, plugin, prev.as_ref(), rt);
            let res = self
                .call(list, plugin, Command::Add, &config, prev.as_ref(), rt)
                .map_err(|e| {
                    e.context(format!(
                        "plugin {} failed (add)",
                        request::describe(plugin, Command::Add)
                    ))
                })?;
            let res = res.ok_or_else(|| CniError::internal("stage returned no result"))?;
            // libcni forwards results unconverted; the next plugin may then refuse a
            // prevResult of another result family. Convert to the selected version.
            let converted = res.convert(&list.cni_version).map_err(|e| {
                e.context(format!(
                    "plugin {} returned a result that cannot be converted to {}",
                    request::describe(plugin, Command::Add),
                    list.cni_version
                ))
            })?;
            prev = Some(converted);
        }
        let result = prev.ok_or_else(|| CniError::invalid_config("no plugins in list"))?;
        self.cache.write(&list.name, rt, &list.bytes, &result)?;
        Ok(result)
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
        let cached = match self.cache.read(&list.name, &rt.container_id, &rt.ifname) {
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
        };
        for plugin in &list.plugins {
            let config = request::build(list, plugin, cached.as_ref(), rt);
            self.call(list, plugin, Command::Check, &config, cached.as_ref(), rt)
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
        for plugin in list.plugins.iter().rev() {
            let config = request::build(list, plugin, cached.as_ref(), rt);
            self.call(list, plugin, Command::Del, &config, cached.as_ref(), rt)
                .map_err(|e| {
                    e.context(format!(
                        "plugin {} failed (delete)",
                        request::describe(plugin, Command::Del)
                    ))
                })?;
        }
        self.cache.remove(&list.name, &rt.container_id, &rt.ifname)
    }

    /// GC: DEL every cached attachment of this network that is not valid, then GC each
    /// plugin (spec >= 1.1.0). `valid = None` is libcni's nil args: every cached
    /// attachment is stale and no valid-set key is sent.
    pub fn gc(&self, list: &NetConfList, valid: Option<&[Attachment]>) -> Result<(), CniError> {
        ids::validate_network_name(&list.name)?;
        if list.disable_gc {
            return Ok(());
        }
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
            if let Err(e) = self.del(list, &rt) {
                errors.push(e);
            }
        }
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

fn join_errors(mut errors: Vec<CniError>) -> Result<(), CniError> {
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

/// The netns must be a path to a network namespace (nsfs, or procfs for
/// /proc/<pid>/ns/net). With `required` false an empty or vanished path is accepted.
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
    let meta = std::fs::metadata(path);
    if let Err(e) = &meta {
        if !required && e.kind() == std::io::ErrorKind::NotFound {
            return Ok(());
        }
        return Err(CniError::new(
            INVALID_ENV,
            format!("network namespace (CNI_NETNS) {path:?}: {e}"),
        ));
    }
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
    let magic = st.f_type as i64;
    if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {path:?} is not a network namespace (filesystem magic {magic:#x})"),
        ));
    }
    Ok(())
}
