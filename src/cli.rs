//! `cnichain` command line: cnitool's contract (add/check/del/gc/status <net> <netns>)
//! with named options, plus `version`.

use crate::runtime::{self, Settings};
use clap::{Args, Parser, Subcommand};
use cnichain_engine::chain::Engine;
use cnichain_engine::load;
use cnichain_engine::request::Attachment;
use cnichain_engine::spec::args::{parse_capability_args, parse_cni_args};
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_engine::spec::error::{CniError, INVALID_ENV};
use cnichain_engine::spec::version;
use cnichain_engine::stage::ExecPolicy;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cnichain",
    version,
    about = "Run CNI network configuration lists (.conflist) the way libcni does, in one process",
    long_about = "Run CNI network configuration lists (.conflist) the way libcni does, in one process.\n\n\
        NET is a network name searched in --conf-dir (NETCONFPATH) like cnitool does, or a path to a \
        .conflist/.conf file. NETNS is a network namespace path such as /run/netns/pod1. Plugins that \
        have no in-process stage are executed from CNI_PATH. On error the CNI error object is printed \
        on stdout and the exit status is 1.\n\n\
        Invoked under the name `cnitool` (a symlink), the binary behaves as cnitool. Executed by a \
        container runtime (CNI_COMMAND set) it is a CNI plugin: under the name of an in-process stage \
        (bridge, host-local, ...; see `install`) that plugin, otherwise the `cnichain` meta-plugin that \
        runs the inner chain in its config's `plugins`."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Common {
    /// Directory searched for NET by name
    #[arg(long, global = true, env = "NETCONFPATH", default_value = load::DEFAULT_CONF_DIR)]
    conf_dir: PathBuf,
    /// Colon-separated directories searched for plugin binaries
    #[arg(long, global = true, env = "CNI_PATH", default_value = "")]
    cni_path: String,
    /// Result cache directory (libcni's; results/ below it)
    #[arg(long, global = true, env = "CNICHAIN_CACHE_DIR", default_value = cnichain_engine::cache::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Container interface name
    #[arg(long, short = 'i', global = true, env = "CNI_IFNAME", default_value = "eth0")]
    ifname: String,
    /// Container ID (default: cnitool's, derived from the netns path)
    #[arg(long, global = true, env = "CNICHAIN_CONTAINER_ID")]
    container_id: Option<String>,
    /// CNI_ARGS pairs, K1=V1;K2=V2
    #[arg(long = "args", global = true, env = "CNI_ARGS", default_value = "")]
    cni_args: String,
    /// Capability arguments as a JSON object, e.g. {"portMappings":[...]}
    #[arg(long, global = true, env = "CAP_ARGS", default_value = "")]
    cap_args: String,
    /// Force the exec fallback: `all`, `none`, or a comma-separated list of types
    #[arg(long = "exec", global = true, env = "CNICHAIN_EXEC", default_value = "none")]
    exec: String,
    /// Seconds before an exec'd plugin is killed (0: never)
    #[arg(long, global = true, env = "CNICHAIN_PLUGIN_TIMEOUT", default_value_t = 120)]
    plugin_timeout: u64,
    /// Print each plugin call's wall time to stderr
    #[arg(long, global = true)]
    timings: bool,
    /// Locks and stage records (tuning) live here
    #[arg(long, global = true, env = "CNICHAIN_STATE_DIR", default_value = cnichain_engine::lock::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// On a failed ADD, leave the plugins that ran in place for the runtime's DEL (libcni's
    /// behaviour) instead of undoing them
    #[arg(long, global = true, env = "CNICHAIN_NO_ROLLBACK")]
    no_rollback: bool,
    /// fsync the result cache entry before renaming it into place
    #[arg(long, global = true, env = "CNICHAIN_CACHE_FSYNC")]
    cache_fsync: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// ADD the container in NETNS to NET and print the result
    Add { net: String, netns: String },
    /// CHECK the attachment against the cached result
    Check { net: String, netns: String },
    /// DEL the attachment (idempotent; the netns may be gone)
    Del { net: String, netns: String },
    /// GC: DEL cached attachments of NET that are not valid, then GC each plugin (which
    /// removes what invalid attachments left without a cache: veths, reservations, nft
    /// elements, ifbs, tuning records, lock files)
    Gc {
        net: String,
        /// Accepted for cnitool compatibility; unused
        netns: Option<String>,
        /// A valid attachment CONTAINERID/IFNAME (repeatable). Without any, every
        /// attachment that has a cached result or a lock file (an ADD under way) is
        /// valid, so only state with neither behind it is collected.
        #[arg(long = "valid", value_name = "CONTAINERID/IFNAME")]
        valid: Vec<String>,
        /// Treat every cached attachment as stale (cnitool's gc: removes them all)
        #[arg(long, conflicts_with = "valid")]
        all_stale: bool,
    },
    /// STATUS: can NET serve ADD now?
    Status {
        net: String,
        /// Accepted for cnitool compatibility; unused
        netns: Option<String>,
    },
    /// Print cnichain's version and the CNI spec versions it supports
    Version,
    /// Install the binary into a CNI bin dir with a symlink per in-process stage
    Install {
        /// The runtime's CNI plugin directory
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Move plugins of the same names aside (uninstall puts them back)
        #[arg(long)]
        force: bool,
        /// Only print what would be done
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove what `install` put into the bin dir and restore what it moved aside
    Uninstall {
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
    /// Lint conflists: JSON, keys, versions, plugin types, the chain's dataflow
    Validate(ValidateArgs),
    /// Run the spec conformance rules against a plugin binary, in throwaway namespaces
    /// (exit 0 all applicable rules pass, 1 a rule failed, 2 usage error)
    Conformance(crate::conformance::ConformanceArgs),
}

/// `cnichain validate [FILE|DIR]...`; exit 0 clean, 1 problems found, 2 usage error.
#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// Conflist files (.conflist, .conf, .json) or directories [default: --conf-dir]
    pub paths: Vec<PathBuf>,
    /// Output: compiler-style text, or JSON for machines
    #[arg(long, value_parser = ["human", "json"], default_value = "human")]
    pub format: String,
    /// Print each chain's dataflow graph (Graphviz DOT) on stdout; diagnostics go to stderr
    #[arg(long, value_name = "FORMAT", value_parser = ["dot"])]
    pub graph: Option<String>,
    /// Fail on warnings too
    #[arg(long)]
    pub strict: bool,
    /// Do not run external plugins' VERSION command (types are still looked up in CNI_PATH)
    #[arg(long)]
    pub no_exec: bool,
    /// Print the diagnostic codes and exit
    #[arg(long)]
    pub list_codes: bool,
}

pub fn main() -> i32 {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // Best effort: stdout may be what failed.
            let _ = write_stdout(&format!("{}\n", e.to_json_pretty()));
            write_stderr(&format!("cnichain: {e}\n"));
            1
        }
    }
}

/// Write `text` to stdout and flush. println! panics when stdout is closed or full;
/// here the caller gets the error (a result printed after ADD committed, say).
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Write `text` to stderr, ignoring a closed stderr (eprintln! would panic).
pub fn write_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The error for a result that could not be written to stdout.
fn stdout_err(what: &str, e: std::io::Error) -> CniError {
    CniError::io(format!("{what}, but writing it to stdout failed: {e}"))
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CNICHAIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .without_time()
        .try_init();
}

fn settings(c: &Common) -> Settings {
    Settings {
        cni_path: c.cni_path.clone(),
        cache_dir: c.cache_dir.clone(),
        exec: ExecPolicy::parse(&c.exec),
        plugin_timeout: (c.plugin_timeout > 0).then(|| Duration::from_secs(c.plugin_timeout)),
        cache_fsync: c.cache_fsync,
        state_dir: Some(c.state_dir.clone()),
        rollback: !c.no_rollback,
    }
}

fn load_net(c: &Common, net: &str) -> Result<NetConfList, CniError> {
    load::load(net, &c.conf_dir)
}

fn runtime_conf(c: &Common, netns: &str) -> Result<cnichain_engine::spec::args::RuntimeConf, CniError> {
    let abs = runtime::abs_path(netns);
    let container_id = c
        .container_id
        .clone()
        .unwrap_or_else(|| runtime::cnitool_container_id(&abs));
    let mut rt = runtime::runtime_conf(container_id, abs.display().to_string(), c.ifname.clone());
    rt.args = parse_cni_args(&c.cni_args)?;
    rt.capability_args = parse_capability_args(&c.cap_args, "CAP_ARGS")?;
    Ok(rt)
}

fn print_timings(engine: &Engine) {
    for t in engine.take_timings() {
        write_stderr(&format!(
            "timing: {:<6} {:<12} {:>9.3} ms  {}\n",
            t.command.as_str(),
            t.plugin_type,
            t.elapsed.as_secs_f64() * 1000.0,
            t.how
        ));
    }
}

fn run(cli: Cli) -> Result<(), CniError> {
    let c = &cli.common;
    // Stages that keep records (tuning) find the state dir in the environment, as they do
    // when a runtime executes them as plugins. Set before any thread is started.
    std::env::set_var("CNICHAIN_STATE_DIR", &c.state_dir);
    if let Cmd::Version = cli.cmd {
        let engine = runtime::engine(&settings(c));
        let text = format!(
            "cnichain {}\nCNI spec versions: {}\nin-process stages: {}\n",
            env!("CARGO_PKG_VERSION"),
            version::SUPPORTED.join(", "),
            engine.registry.in_process_types().join(", ")
        );
        return write_stdout(&text).map_err(|e| stdout_err("version", e));
    }
    let mut engine = runtime::engine(&settings(c));
    engine.record_timings = c.timings;
    match &cli.cmd {
        Cmd::Install {
            bin_dir,
            force,
            dry_run,
        } => {
            return crate::install::install(bin_dir, *force, *dry_run, &engine.registry.in_process_types())
                .map_err(|m| CniError::new(cnichain_engine::spec::error::IO_FAILURE, m));
        }
        Cmd::Uninstall { bin_dir, dry_run } => {
            return crate::install::uninstall(bin_dir, *dry_run)
                .map_err(|m| CniError::new(cnichain_engine::spec::error::IO_FAILURE, m));
        }
        _ => {}
    }
    let started = std::time::Instant::now();
    let res = match &cli.cmd {
        Cmd::Add { net, netns } => {
            let list = load_net(c, net)?;
            let rt = runtime_conf(c, netns)?;
            // ADD has committed (result cached) when its result is written: a failing
            // stdout is reported and the exit status is 1; DEL undoes the attachment.
            engine.add(&list, &rt).and_then(|r| {
                write_stdout(&format!("{}\n", r.to_json_pretty()))
                    .map_err(|e| stdout_err("ADD succeeded (its result is cached)", e))
            })
        }
        Cmd::Check { net, netns } => {
            let list = load_net(c, net)?;
            engine.check(&list, &runtime_conf(c, netns)?)
        }
        Cmd::Del { net, netns } => {
            let list = load_net(c, net)?;
            engine.del(&list, &runtime_conf(c, netns)?)
        }
        Cmd::Gc {
            net, valid, all_stale, ..
        } => {
            let list = load_net(c, net)?;
            if *all_stale {
                engine.gc(&list, None)
            } else if valid.is_empty() {
                // The cached set is read under the GC lock (see gc_keep_cached).
                engine.gc_keep_cached(&list)
            } else {
                let valid_set: Vec<Attachment> = valid.iter().map(|v| parse_attachment(v)).collect::<Result<_, _>>()?;
                engine.gc(&list, Some(&valid_set))
            }
        }
        Cmd::Status { net, .. } => {
            let list = load_net(c, net)?;
            engine.status(&list)
        }
        Cmd::Version | Cmd::Install { .. } | Cmd::Uninstall { .. } => Ok(()),
        Cmd::Conformance(a) => std::process::exit(crate::conformance::run(a)),
        Cmd::Validate(a) => {
            let timeout = settings(c).plugin_timeout;
            std::process::exit(crate::validate_cmd::run(a, &engine.registry, &c.conf_dir, timeout))
        }
    };
    if c.timings {
        print_timings(&engine);
        write_stderr(&format!(
            "timing: total {:>9.3} ms\n",
            started.elapsed().as_secs_f64() * 1000.0
        ));
    }
    res
}

fn parse_attachment(s: &str) -> Result<Attachment, CniError> {
    let (cid, ifname) = s
        .split_once('/')
        .ok_or_else(|| CniError::new(INVALID_ENV, format!("--valid {s:?}: want CONTAINERID/IFNAME")))?;
    cnichain_engine::spec::ids::validate_container_id(cid)?;
    cnichain_engine::spec::ids::validate_ifname(ifname)?;
    Ok(Attachment {
        container_id: cid.into(),
        ifname: ifname.into(),
    })
}
