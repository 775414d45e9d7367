//! The verb dispatch of the two modes: one in-process stage (drop-in), or the inner
//! chain of the `cnichain` meta-plugin through the engine.

use super::locking::valid_attachments;
use crate::chain::{check_netns, refuse_own_netns_path, validate_attachment, Engine};
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::{CniError, INVALID_CONFIG};
use crate::spec::result::CniResult;
use crate::stage::{check_ipam_type, Command, DeferScope, Invocation};
use serde_json::{Map, Value};

/// One decoded plugin call.
pub(super) struct Call<'a> {
    pub engine: &'a Engine,
    pub command: Command,
    pub config: &'a Map<String, Value>,
    /// Already converted to `version`.
    pub prev: Option<&'a CniResult>,
    pub version: &'a str,
}

/// The stages that enter the pod's netns (an IPAM and portmap never open it, as their
/// references): only they check CNI_NETNS.
fn enters_netns(stage_type: &str) -> bool {
    matches!(stage_type, "bridge" | "ptp" | "loopback" | "tuning" | "bandwidth")
}

impl Call<'_> {
    /// A drop-in: the in-process stage `stage_type`, never exec'd.
    pub(super) fn drop_in(&self, stage_type: &str, rt: &RuntimeConf) -> Result<Option<String>, CniError> {
        let (engine, command, config) = (self.engine, self.command, self.config);
        // ADD and CHECK: the stage opens the netns where its reference does (one that
        // needs none, as bandwidth without limits, accepts any). DEL: a netns that is
        // gone (missing, a plain file) is fine; the host's own is refused before
        // anything changes.
        if enters_netns(stage_type) {
            match command {
                Command::Del => check_netns(&rt.netns, false)?,
                // The stages refuse it too; here it comes before an IPAM delegate runs.
                Command::Add | Command::Check => refuse_own_netns_path(&rt.netns)?,
                _ => {}
            }
        }
        // An ipam.type that would recurse (or run a main plugin as IPAM): refused before
        // anything changes; DEL goes on without it.
        if matches!(command, Command::Add | Command::Check) {
            if let Some(t) = config.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str) {
                check_ipam_type(stage_type, t)?;
            }
        }
        // Never exec: the binary found in CNI_PATH under this name may be this one.
        if !engine.registry.is_in_process(stage_type) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "cnichain has no in-process {stage_type:?} stage; install the reference plugin under that name"
                ),
            ));
        }
        let stage = engine.registry.resolve(stage_type)?;
        let inv = Invocation {
            command,
            config,
            prev_result: self.prev,
            rt,
            version: self.version,
            cni_path: &engine.registry.cni_path,
            registry: &engine.registry,
        };
        // DEL: the stage's slow kernel waits (link deletion, nft's exit) overlap each
        // other, joined before the call returns.
        let scope = (command == Command::Del).then(DeferScope::begin);
        let span = crate::trace::span(|| format!("{} {stage_type}", command.as_str()));
        if crate::trace::enabled() {
            span.attr("cni.command", command.as_str());
            span.attr("cni.plugin.type", stage_type);
            span.attr("cni.plugin.how", stage.describe());
            span.attr("cni.plugin.exec", false);
        }
        let out = stage.run(&inv);
        crate::trace::end_with(span, &out);
        let out = out?;
        if let Some(e) = scope.and_then(|s| s.join().into_iter().next()) {
            return Err(e);
        }
        match out {
            Some(r) => Ok(Some(r.convert(self.version)?.to_json_pretty())),
            None => Ok(None),
        }
    }

    /// The `cnichain` meta-plugin: the config is a list (`plugins`); its runtimeConfig
    /// is the capability arguments the inner stages see.
    pub(super) fn meta(&self, stdin: &[u8], mut rt: RuntimeConf) -> Result<Option<String>, CniError> {
        let (engine, config, version) = (self.engine, self.config, self.version);
        let mut inner = Map::new();
        for k in [
            "cniVersion",
            "cniVersions",
            "name",
            "disableCheck",
            "disableGC",
            "plugins",
        ] {
            if let Some(v) = config.get(k) {
                inner.insert(k.to_string(), v.clone());
            }
        }
        if !inner.contains_key("plugins") {
            return Err(CniError::new(
                INVALID_CONFIG,
                "cnichain: missing \"plugins\" (the inner chain)",
            ));
        }
        // The runtime already selected the version: keep it for every inner plugin.
        inner.insert("cniVersion".into(), Value::String(version.to_string()));
        inner.remove("cniVersions");
        let list = NetConfList::from_map(&inner, stdin.to_vec(), Vec::new())?;
        if let Some(Value::Object(rc)) = config.get("runtimeConfig") {
            rt.capability_args = rc.clone();
        }
        match self.command {
            Command::Add => {
                let r = engine.add_uncached(&list, &rt)?.convert(version)?;
                Ok(Some(r.to_json_pretty()))
            }
            Command::Del => {
                validate_attachment(&list, &rt, Command::Del)?;
                engine.del_with(&list, &rt, self.prev).map(|_| None)
            }
            Command::Check => {
                validate_attachment(&list, &rt, Command::Check)?;
                if list.disable_check {
                    return Ok(None);
                }
                engine.check_with(&list, &rt, self.prev).map(|_| None)
            }
            Command::Gc => {
                let valid = valid_attachments(config);
                engine.gc_plugins(&list, valid.as_deref()).map(|_| None)
            }
            Command::Status => engine.status(&list).map(|_| None),
            Command::Version => Ok(None),
        }
    }
}
