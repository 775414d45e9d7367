//! `cnichain` command line: cnitool's contract (add/check/del/gc/status <net> <netns>)
//! with named options, plus `version`.

use crate::output::{init_logging, write_stderr, write_stdout};
use crate::runtime;
use crate::validate_cmd::ValidateArgs;
use clap::{Args, Parser, Subcommand};
use cnichain_engine::chain::Engine;
use cnichain_engine::load;
use cnichain_engine::request::Attachment;
use cnichain_engine::settings::{ExecPolicy, Settings, DEFAULT_STATE_DIR};
use cnichain_engine::spec::args::{parse_capability_args, parse_cni_args};
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_engine::spec::error::{CniError, INVALID_ENV};
use cnichain_engine::spec::version;
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
    #[arg(long, global = true, env = "CNICHAIN_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// On a failed ADD, leave the plugins that ran in place for the runtime's DEL (libcni's
    /// behaviour) instead of undoing them
    #[arg(long, global = true, env = "CNICHAIN_NO_ROLLBACK")]
    no_rollback: bool,
    /// fsync the result cache entry before renaming it into place
    #[arg(long, global = true, env = "CNICHAIN_CACHE_FSYNC")]
    cache_fsync: bool,
    /// Append this run's spans (one per verb, one per plugin call) to FILE as OTLP/JSON,
    /// parented on TRACEPARENT when the environment has it
    #[arg(long, global = true, env = "CNICHAIN_TRACE_FILE", value_name = "FILE")]
    trace: Option<PathBuf>,
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
    /// List the node's attachments and their state (read-only)
    ///
    /// One row per attachment cnichain can see: the result cache (--cache-dir), lock files
    /// (--state-dir), host-local reservations and tuning records (the dataDirs of the
    /// conflists in --conf-dir and in the cache), host links, qdiscs and nftables records.
    /// State: live, stale (netns gone), in-progress (lock file, no cache entry) or orphan
    /// (objects or records with neither). Takes at most the shared GC lock.
    Inspect {
        /// Only this network (a name, or a conflist path whose name is taken)
        net: Option<String>,
        /// Output: a table for people, or JSON (stable, see the README)
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// Restore the NAT, masquerade and shaping that live attachments lost
    ///
    /// For every live attachment cnichain made (cache entry, lock file, netns alive),
    /// re-create what its cached config, capability arguments and result say it has and
    /// the kernel no longer has (after a firewall reload, `nft flush ruleset`, `tc qdisc
    /// del`): the nftables table and shared rules, port-mapping, masquerade and
    /// macspoofchk elements, tbf / ingress / htb qdiscs and filters, the ifb. Each
    /// attachment under the locks its ADD takes. Prints one line per thing restored, or
    /// `nothing to do`; exit status 1 if an attachment failed (the others still run).
    Reconcile {
        /// Only this network (a name, or a conflist path whose name is taken)
        net: Option<String>,
        /// Only print what would be restored
        #[arg(long)]
        dry_run: bool,
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
    /// Run the spec conformance rules against a plugin binary, or a whole conflist as
    /// libcni runs it, in throwaway namespaces (exit 0 all applicable rules pass, 1 a rule
    /// failed, 2 usage error)
    Conformance(cnichain_conformance::ConformanceArgs),
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

/// The error for a result that could not be written to stdout.
fn stdout_err(what: &str, e: std::io::Error) -> CniError {
    CniError::io(format!("{what}, but writing it to stdout failed: {e}"))
}

/// The CLI's settings: its flags (each with its variable, merged by clap) over what
/// only the environment says (the inherited delegation depth, nft).
fn settings(c: &Common) -> Settings {
    Settings {
        cache_dir: c.cache_dir.clone(),
        exec: ExecPolicy::parse(&c.exec),
        plugin_timeout: (c.plugin_timeout > 0).then(|| Duration::from_secs(c.plugin_timeout)),
        cache_fsync: c.cache_fsync,
        state_dir: c.state_dir.clone(),
        engine_locks: true,
        rollback: !c.no_rollback,
        trace_file: c.trace.clone().filter(|f| !f.as_os_str().is_empty()),
        ..Settings::from_process_env()
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
    if let Cmd::Version = cli.cmd {
        let engine = runtime::engine(&c.cni_path, settings(c));
        let text = format!(
            "cnichain {}\nCNI spec versions: {}\nin-process stages: {}\n",
            env!("CARGO_PKG_VERSION"),
            version::SUPPORTED.join(", "),
            engine.registry.in_process_types().join(", ")
        );
        return write_stdout(&text).map_err(|e| stdout_err("version", e));
    }
    let mut engine = runtime::engine(&c.cni_path, settings(c));
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
        Cmd::Inspect { net, format } => {
            let net = net.as_deref().map(|n| network_name(c, n));
            crate::inspect::run(&c.conf_dir, &c.state_dir, &engine, net.as_deref(), format == "json")
        }
        Cmd::Reconcile { net, dry_run } => {
            let net = net.as_deref().map(|n| network_name(c, n));
            crate::reconcile_cmd::run(&engine, net.as_deref(), *dry_run)
        }
        Cmd::Version | Cmd::Install { .. } | Cmd::Uninstall { .. } => Ok(()),
        Cmd::Conformance(a) => std::process::exit(cnichain_conformance::run(
            a,
            &|t| {
                let _ = write_stdout(t);
            },
            &|t| write_stderr(t),
        )),
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

/// NET of inspect and reconcile: the name of the conflist it loads, else taken as the
/// name itself (a network whose conflist is gone still has attachments).
fn network_name(c: &Common, net: &str) -> String {
    load_net(c, net).map(|l| l.name).unwrap_or_else(|_| net.to_string())
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
