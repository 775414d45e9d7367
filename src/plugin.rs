//! Plugin mode: a runtime executes the binary with CNI_COMMAND set. Under the name of an
//! in-process stage (a symlink `bridge`, `host-local`, ...) it is that plugin, with the
//! reference skeleton's contract; under any other name it is the `cnichain` meta-plugin,
//! whose config carries a whole inner chain run in this one process.

use crate::runtime::{self, Settings};
use cnichain_engine::chain::Engine;
use cnichain_engine::lock::{self, Locks};
use cnichain_engine::request::Attachment;
use cnichain_engine::spec::args::{plugin_parses, split_pairs, RuntimeConf};
use cnichain_engine::spec::conflist::{parse_object, NetConfList};
use cnichain_engine::spec::error::{CniError, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV};
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::spec::{ids, version};
use cnichain_engine::stage::{Command, DeferScope, ExecPolicy, Invocation};
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::path::PathBuf;

struct Env {
    command: String,
    rt: RuntimeConf,
    cni_path: String,
    /// CNI_ARGS that `types.LoadArgs` cannot split: an error only where the plugin
    /// stood in for reads CNI_ARGS (`args` is then empty).
    args_error: Option<CniError>,
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

/// The skeleton's required variables per command (CNI_PATH too, as the reference).
fn read_env() -> Result<Env, CniError> {
    let command = var("CNI_COMMAND");
    let required: &[(&str, &[&str])] = &[
        ("CNI_COMMAND", &["ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION", ""]),
        ("CNI_CONTAINERID", &["ADD", "CHECK", "DEL"]),
        ("CNI_NETNS", &["ADD", "CHECK"]),
        ("CNI_IFNAME", &["ADD", "CHECK", "DEL"]),
        ("CNI_PATH", &["ADD", "CHECK", "DEL", "GC", "STATUS"]),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(k, cmds)| var(k).is_empty() && cmds.contains(&command.as_str()))
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    let (args, args_error) = match split_pairs(&var("CNI_ARGS")) {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(Env {
        command,
        rt: RuntimeConf {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args,
            capability_args: Map::new(),
        },
        cni_path: var("CNI_PATH"),
        args_error,
    })
}

/// Whether a CNI_ARGS syntax error is this call's error: the meta-plugin reads CNI_ARGS
/// for its whole inner chain; a drop-in only where its reference calls LoadArgs, itself
/// or through the IPAM it delegates to.
fn args_error_applies(stage: Option<&str>, command: Command, config: &Map<String, Value>) -> bool {
    let Some(t) = stage else { return true };
    let verb = command.as_str();
    if plugin_parses(t, verb) {
        return true;
    }
    let delegates = matches!(t, "bridge" | "ptp");
    let ipam = config
        .get("ipam")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    delegates && !ipam.is_empty() && plugin_parses(ipam, verb)
}

/// The stages that enter the pod's netns (an IPAM and portmap never open it, as their
/// references): only they check CNI_NETNS.
fn enters_netns(stage_type: &str) -> bool {
    matches!(stage_type, "bridge" | "ptp" | "loopback" | "tuning" | "bandwidth")
}

fn print_err(e: &CniError, version: &str) -> i32 {
    let mut e = e.clone();
    if e.cni_version.is_empty() {
        e.cni_version = version.to_string();
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(e.to_json_pretty().as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    1
}

/// Run as a plugin. `stage` is the drop-in type, or None for the meta-plugin.
pub fn main(stage: Option<&str>) -> i32 {
    crate::cli::init_logging();
    let mut stdin = Vec::new();
    // The config file cap: a runtime's request is never anywhere near it.
    let max = cnichain_engine::load::MAX_CONF_BYTES;
    if let Err(e) = std::io::stdin().take(max + 1).read_to_end(&mut stdin) {
        return print_err(&CniError::io(format!("error reading from stdin: {e}")), "");
    }
    if stdin.len() as u64 > max {
        return print_err(
            &CniError::new(
                INVALID_CONFIG,
                format!("network configuration on stdin is larger than {max} bytes"),
            ),
            "",
        );
    }
    let conf_version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .unwrap_or_default();
    match run(stage, &stdin) {
        Ok(out) => {
            if let Some(text) = out {
                // The runtime never sees a result that could not be written: exit 1.
                if let Err(e) = crate::cli::write_stdout(&format!("{text}\n")) {
                    crate::cli::write_stderr(&format!("cnichain: writing the result to stdout: {e}\n"));
                    return 1;
                }
            }
            0
        }
        Err(e) => print_err(&e, &conf_version),
    }
}

/// The versions a drop-in claims: its stage's (bandwidth, as the reference, starts at
/// 0.3.0: it needs a prevResult), every supported version for the meta-plugin.
fn supported_versions(stage: Option<&str>) -> Vec<String> {
    let mut registry = cnichain_engine::stage::Registry::new(Vec::new());
    cnichain_stages::register_all(&mut registry);
    match stage.and_then(|s| registry.resolve(s).ok()) {
        Some(s) => s.supported_versions(),
        None => version::SUPPORTED.iter().map(|s| s.to_string()).collect(),
    }
}

fn run(stage: Option<&str>, stdin: &[u8]) -> Result<Option<String>, CniError> {
    let env = read_env()?;
    let supported = supported_versions(stage);
    let command = match Command::parse(&env.command) {
        Some(c) => c,
        None => {
            return Err(CniError::new(
                INVALID_ENV,
                format!("unknown CNI_COMMAND: {}", env.command),
            ))
        }
    };
    if command == Command::Version {
        let v = serde_json::json!({"cniVersion": version::CURRENT, "supportedVersions": supported});
        return Ok(Some(serde_json::to_string(&v).unwrap_or_default()));
    }
    let config = parse_object(stdin, "network configuration")?;
    let conf_version = match config.get("cniVersion") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(CniError::new(DECODING_FAILURE, "\"cniVersion\" must be a string")),
    };
    // The skeleton's version reconcile is an exact match against what we support.
    let effective = if conf_version.is_empty() {
        "0.1.0".to_string()
    } else {
        conf_version.clone()
    };
    if !supported.contains(&effective) {
        return Err(CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI versions")
            .with_details(format!("config is {effective:?}, plugin supports {supported:?}")));
    }
    match command {
        Command::Check if !version::at_least(&effective, "0.4.0")? => {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                "config version does not allow CHECK",
            ))
        }
        Command::Gc | Command::Status if !version::at_least(&effective, "1.1.0")? => {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                format!("config version does not allow {}", env.command),
            ))
        }
        _ => {}
    }
    if let Some(e) = &env.args_error {
        if args_error_applies(stage, command, &config) {
            return Err(e.clone());
        }
    }
    match config.get("name") {
        Some(Value::String(n)) if !n.is_empty() => ids::validate_network_name(n)?,
        _ => return Err(CniError::new(INVALID_CONFIG, "missing network name (\"name\")")),
    }
    if matches!(command, Command::Add | Command::Check | Command::Del) {
        ids::validate_container_id(&env.rt.container_id)?;
        ids::validate_ifname(&env.rt.ifname)?;
    }
    let locks = Locks::new(&state_dir());
    let held = lock(&locks, command, &config, &env.rt)?;
    let engine = runtime::engine(&Settings {
        cni_path: env.cni_path.clone(),
        cache_dir: std::path::PathBuf::from(cnichain_engine::cache::DEFAULT_CACHE_DIR),
        exec: ExecPolicy::InProcess,
        plugin_timeout: Some(std::time::Duration::from_secs(120)),
        cache_fsync: false,
        // Locked here, around the whole call; the meta-plugin undoes its inner chain
        // when an inner ADD fails.
        state_dir: None,
        rollback: true,
    });
    // A prevResult in any version is accepted and converted (the reference refuses one
    // of another result family).
    let prev = match config.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            CniResult::from_value(v, &effective)
                .and_then(|r| r.convert(&effective))
                .map_err(|e| e.context("could not parse prevResult"))?,
        ),
    };
    let out = match stage {
        Some(t) => drop_in(&engine, t, command, &config, prev.as_ref(), &env, &effective),
        None => meta(&engine, command, &config, stdin, prev.as_ref(), env, &effective),
    };
    if let Some(Held::Attachment(_gc, att)) = held {
        // The lock file stays with the attachment (see engine/src/lock.rs): gone after
        // DEL, a failed ADD that made it (a drop-in undoes its own partial work; the
        // meta-plugin rolls back), or a CHECK or failed DEL that made it.
        let gone = match command {
            // A failed DEL leaves the lock file as it found it.
            Command::Del => out.is_ok() || att.created,
            Command::Add => out.is_err() && (stage.is_none() || att.created),
            _ => att.created,
        };
        if gone {
            att.remove();
        }
    }
    out
}

fn state_dir() -> PathBuf {
    std::env::var_os("CNICHAIN_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(lock::DEFAULT_STATE_DIR))
}

/// Held until the call returns (dropping releases).
enum Held {
    Attachment(lock::Held, lock::Held),
    Gc(#[allow(dead_code)] lock::Held),
}

/// The same locks as the CLI: ADD/CHECK/DEL share the node's GC lock and hold the
/// attachment's alone; GC holds the GC lock alone, and afterwards removes the lock files
/// of attachments that are not valid. Runtimes serialize calls themselves, but several
/// runtimes (or a runtime and the CLI) can share a node.
fn lock(
    locks: &Locks,
    command: Command,
    config: &Map<String, Value>,
    rt: &RuntimeConf,
) -> Result<Option<Held>, CniError> {
    let net = config.get("name").and_then(Value::as_str).unwrap_or_default();
    match command {
        Command::Add | Command::Check | Command::Del => {
            let gc = locks.gc(false)?;
            Ok(Some(Held::Attachment(
                gc,
                locks.attachment(net, &rt.container_id, &rt.ifname)?,
            )))
        }
        Command::Gc => {
            let gc = locks.gc(true)?;
            if let Some(valid) = valid_attachments(config) {
                let keep: Vec<(&str, &str)> = valid
                    .iter()
                    .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
                    .collect();
                locks.sweep(net, &keep);
            }
            Ok(Some(Held::Gc(gc)))
        }
        _ => Ok(None),
    }
}

/// `cni.dev/valid-attachments` (or the older key) of a GC request; None without either.
fn valid_attachments(config: &Map<String, Value>) -> Option<Vec<Attachment>> {
    match config
        .get("cni.dev/valid-attachments")
        .or_else(|| config.get("cni.dev/attachments"))
    {
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| Attachment {
                    container_id: v.get("containerID").and_then(Value::as_str).unwrap_or_default().into(),
                    ifname: v.get("ifname").and_then(Value::as_str).unwrap_or_default().into(),
                })
                .collect(),
        ),
        _ => None,
    }
}

fn drop_in(
    engine: &Engine,
    stage_type: &str,
    command: Command,
    config: &Map<String, Value>,
    prev: Option<&CniResult>,
    env: &Env,
    version: &str,
) -> Result<Option<String>, CniError> {
    // ADD and CHECK: the stage opens the netns where its reference does (one that needs
    // none, as bandwidth without limits, accepts any). DEL: a netns that is gone
    // (missing, a plain file) is fine; the host's own is refused before anything changes.
    if enters_netns(stage_type) {
        match command {
            Command::Del => cnichain_engine::chain::check_netns(&env.rt.netns, false)?,
            // The stages refuse it too; here it comes before an IPAM delegate runs.
            Command::Add | Command::Check => cnichain_engine::chain::refuse_own_netns_path(&env.rt.netns)?,
            _ => {}
        }
    }
    // An ipam.type that would recurse (or run a main plugin as IPAM): refused before
    // anything changes; DEL goes on without it.
    if matches!(command, Command::Add | Command::Check) {
        if let Some(t) = config.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str) {
            cnichain_engine::stage::check_ipam_type(stage_type, t)?;
        }
    }
    // Never exec: the binary found in CNI_PATH under this name may be this one.
    if !engine.registry.is_in_process(stage_type) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("cnichain has no in-process {stage_type:?} stage; install the reference plugin under that name"),
        ));
    }
    let stage = engine.registry.resolve(stage_type)?;
    let inv = Invocation {
        command,
        config,
        prev_result: prev,
        rt: &env.rt,
        version,
        cni_path: &engine.registry.cni_path,
        registry: &engine.registry,
    };
    match command {
        Command::Add => {
            let r = stage.add(&inv)?.convert(version)?;
            Ok(Some(r.to_json_pretty()))
        }
        Command::Del => {
            // The stage's slow kernel waits (link deletion, nft's exit) overlap each other.
            let scope = DeferScope::begin();
            stage.del(&inv)?;
            match scope.join().into_iter().next() {
                Some(e) => Err(e),
                None => Ok(None),
            }
        }
        Command::Check => stage.check(&inv).map(|_| None),
        Command::Gc => stage.gc(&inv).map(|_| None),
        Command::Status => stage.status(&inv).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// The `cnichain` meta-plugin: the config is a list (`plugins`); its runtimeConfig is the
/// capability arguments the inner stages see.
fn meta(
    engine: &Engine,
    command: Command,
    config: &Map<String, Value>,
    stdin: &[u8],
    prev: Option<&CniResult>,
    mut env: Env,
    version: &str,
) -> Result<Option<String>, CniError> {
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
        env.rt.capability_args = rc.clone();
    }
    match command {
        Command::Add => {
            let r = engine.add_uncached(&list, &env.rt)?.convert(version)?;
            Ok(Some(r.to_json_pretty()))
        }
        Command::Del => {
            cnichain_engine::chain::validate_attachment(&list, &env.rt, Command::Del)?;
            engine.del_with(&list, &env.rt, prev).map(|_| None)
        }
        Command::Check => {
            cnichain_engine::chain::validate_attachment(&list, &env.rt, Command::Check)?;
            if list.disable_check {
                return Ok(None);
            }
            engine.check_with(&list, &env.rt, prev).map(|_| None)
        }
        Command::Gc => {
            let valid = valid_attachments(config);
            engine.gc_plugins(&list, valid.as_deref()).map(|_| None)
        }
        Command::Status => engine.status(&list).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// The skeleton's "about" text for a drop-in run by hand without CNI_COMMAND.
pub fn about(name: &str) -> i32 {
    crate::cli::write_stderr(&format!(
        "CNI {name} plugin (cnichain {})\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        version::SUPPORTED.join(", ")
    ));
    0
}
