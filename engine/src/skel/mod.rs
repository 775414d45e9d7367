//! The plugin side of the protocol (the reference's `skel` package): what a binary run
//! by a container runtime with CNI_COMMAND set does with its environment and stdin.
//! [`run`] takes them as values and returns what to write and the exit status, so the
//! binary only does I/O.
//!
//! Two modes: a drop-in for one reference plugin (`bridge`, `host-local`, ...), with the
//! reference skeleton's contract, or the `cnichain` meta-plugin, whose config carries a
//! whole inner chain run in this one process.

mod locking;
mod verbs;

use crate::chain::Engine;
use crate::lock::Locks;
use crate::settings::{split_cni_path, ExecPolicy, Settings};
use crate::spec::args::{plugin_parses, split_pairs, RuntimeConf};
use crate::spec::conflist::parse_object;
use crate::spec::error::{CniError, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV};
use crate::spec::result::CniResult;
use crate::spec::{ids, version};
use crate::stage::{Command, Registry};
use serde_json::{Map, Value};
use std::time::Duration;

/// Which plugin the binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// A drop-in for the reference plugin of this type (the binary's name).
    DropIn(&'a str),
    /// The `cnichain` meta-plugin: the config's `plugins` is an inner chain.
    Meta,
}

/// What the binary writes and its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// For stdout: a result or version answer (status 0), or the CNI error (status 1).
    pub stdout: String,
    /// For stderr.
    pub stderr: String,
    /// The exit status.
    pub status: i32,
}

/// The most stdin a request may carry (the config file cap): read at most one byte
/// more, and [`run`] refuses the request when it got more.
pub const MAX_STDIN: u64 = crate::load::MAX_CONF_BYTES;

/// Run one plugin call. `env` answers environment lookups (the process environment in
/// the binary); `stdin` is what the runtime wrote, up to [`MAX_STDIN`] + 1 bytes;
/// `register` adds the in-process stages to the registry (the binary passes
/// `cnichain_stages::register_all`).
pub fn run(mode: Mode, env: &dyn Fn(&str) -> Option<String>, stdin: &[u8], register: &dyn Fn(&mut Registry)) -> Output {
    if stdin.len() as u64 > MAX_STDIN {
        return error_output(
            &CniError::new(
                INVALID_CONFIG,
                format!("network configuration on stdin is larger than {MAX_STDIN} bytes"),
            ),
            "",
        );
    }
    let conf_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .unwrap_or_default();
    let settings = plugin_settings(env);
    settings.start_tracing(env);
    let span = crate::trace::root_span(|| format!("cnichain {}", env("CNI_COMMAND").unwrap_or_default()));
    if let Some(span) = &span {
        span.attr("cni.command", env("CNI_COMMAND").unwrap_or_default());
        span.attr(
            "cni.mode",
            match mode {
                Mode::DropIn(t) => t.to_string(),
                Mode::Meta => "cnichain".to_string(),
            },
        );
        span.attr("cni.container_id", env("CNI_CONTAINERID").unwrap_or_default());
        span.attr("cni.ifname", env("CNI_IFNAME").unwrap_or_default());
    }
    let out = call(mode, env, stdin, register, settings);
    if let Some(span) = span {
        crate::trace::end_with(span, &out);
    }
    match out {
        Ok(Some(text)) => Output {
            stdout: format!("{text}\n"),
            ..Output::default()
        },
        Ok(None) => Output::default(),
        Err(e) => error_output(&e, &conf_version),
    }
}

/// The output for stdin that could not be read.
pub fn stdin_failed(e: &std::io::Error) -> Output {
    error_output(&CniError::io(format!("error reading from stdin: {e}")), "")
}

/// The skeleton's "about" text for a drop-in run by hand without CNI_COMMAND.
pub fn about(name: &str) -> Output {
    Output {
        stderr: format!(
            "CNI {name} plugin (cnichain {})\nCNI protocol versions supported: {}\n",
            env!("CARGO_PKG_VERSION"),
            version::SUPPORTED.join(", ")
        ),
        ..Output::default()
    }
}

fn error_output(e: &CniError, version: &str) -> Output {
    let mut e = e.clone();
    if e.cni_version.is_empty() {
        e.cni_version = version.to_string();
    }
    Output {
        stdout: format!("{}\n", e.to_json_pretty()),
        stderr: String::new(),
        status: 1,
    }
}

/// The call's environment, read once.
struct Env {
    command: String,
    rt: RuntimeConf,
    /// CNI_ARGS that `types.LoadArgs` cannot split: an error only where the plugin
    /// stood in for reads CNI_ARGS (`args` is then empty).
    args_error: Option<CniError>,
}

/// The skeleton's required variables per command (CNI_PATH too, as the reference).
fn read_env(var: &dyn Fn(&str) -> String) -> Result<Env, CniError> {
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
        args_error,
    })
}

/// The versions a drop-in claims: its stage's (bandwidth, as the reference, starts at
/// 0.3.0: it needs a prevResult); every supported version for the meta-plugin.
fn supported_versions(mode: Mode, registry: &Registry) -> Vec<String> {
    if let Mode::DropIn(t) = mode {
        if let Ok(stage) = registry.resolve(t) {
            return stage.supported_versions();
        }
    }
    version::SUPPORTED.iter().map(|s| s.to_string()).collect()
}

/// Plugin mode's settings: the shared variables, and what a runtime's call always gets
/// (libcni's cache dir, every stage in-process, exec'd IPAMs killed after 120 s).
fn plugin_settings(env: &dyn Fn(&str) -> Option<String>) -> Settings {
    let mut s = Settings::from_env(env);
    s.cache_dir = std::path::PathBuf::from(crate::cache::DEFAULT_CACHE_DIR);
    s.cache_fsync = false;
    s.exec = ExecPolicy::InProcess;
    s.plugin_timeout = Some(Duration::from_secs(120));
    // Locked here, around the whole call; the meta-plugin undoes its inner chain when an
    // inner ADD fails.
    s.engine_locks = false;
    s.rollback = true;
    s
}

/// Whether a CNI_ARGS syntax error is this call's error: the meta-plugin reads CNI_ARGS
/// for its whole inner chain; a drop-in only where its reference calls LoadArgs, itself
/// or through the IPAM it delegates to.
fn args_error_applies(mode: Mode, command: Command, config: &Map<String, Value>) -> bool {
    let Mode::DropIn(t) = mode else { return true };
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

fn call(
    mode: Mode,
    getenv: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    register: &dyn Fn(&mut Registry),
    settings: Settings,
) -> Result<Option<String>, CniError> {
    let env = read_env(&|k| getenv(k).unwrap_or_default())?;
    // Pure constructors: the registry answers VERSION and then runs the call.
    let locks = Locks::new(&settings.state_dir);
    let cni_path = split_cni_path(&getenv("CNI_PATH").unwrap_or_default());
    let engine = Engine::from_settings(cni_path, settings, register);
    let supported = supported_versions(mode, &engine.registry);
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
        if args_error_applies(mode, command, &config) {
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
    let held = locking::lock(&locks, command, &config, &env.rt)?;
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
    let call = verbs::Call {
        engine: &engine,
        command,
        config: &config,
        prev: prev.as_ref(),
        version: &effective,
    };
    let out = match mode {
        Mode::DropIn(t) => call.drop_in(t, &env.rt),
        Mode::Meta => call.meta(stdin, env.rt),
    };
    locking::release(held, command, mode, out.is_ok());
    out
}
