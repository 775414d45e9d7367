//! One value for everything an entry point decides before a chain runs: where state and
//! the result cache live, which plugins are exec'd, the timeouts. Each entry point (the
//! CLI, plugin mode, the cnitool stand-in) builds it once, from flags or the environment,
//! and hands it to the engine's registry; every stage reaches it through
//! `Invocation::settings`. Nothing below the
//! entry point reads these variables again.

use std::path::PathBuf;
use std::time::Duration;

/// Locks, stage records (tuning) and the kernel-feature cache live here unless
/// `CNICHAIN_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/cnichain";

/// The variable naming the state dir (README: Environment).
pub const STATE_DIR_ENV: &str = "CNICHAIN_STATE_DIR";

/// The variable that carries the IPAM delegation depth into exec'd delegates, so a cycle
/// through exec'd plugins and cnichain drop-ins ends too.
pub const DEPTH_ENV: &str = "CNICHAIN_DELEGATION_DEPTH";

/// IPAM delegation deeper than this is a cycle (bridge -> host-local is depth 1).
pub const MAX_DELEGATION_DEPTH: u32 = 8;

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

    /// Whether `t` must be exec'd even if it has an in-process stage.
    pub fn forces(&self, t: &str) -> bool {
        match self {
            ExecPolicy::InProcess => false,
            ExecPolicy::All => true,
            ExecPolicy::Types(ts) => ts.iter().any(|x| x == t),
        }
    }
}

/// The settings of one process's chain runs. [`Settings::default`] is what a runtime's
/// plugin call gets with no cnichain variables set.
#[derive(Debug, Clone)]
pub struct Settings {
    /// libcni's result cache (`results/` below it).
    pub cache_dir: PathBuf,
    /// fsync a cache entry before renaming it into place.
    pub cache_fsync: bool,
    /// Locks, tuning's records and the kernel-feature cache.
    pub state_dir: PathBuf,
    /// Whether the engine takes the attachment and GC locks itself (plugin mode takes
    /// them around the whole call instead).
    pub engine_locks: bool,
    /// Which plugins run through the exec fallback.
    pub exec: ExecPolicy,
    /// How long an exec'd plugin may run; None: no limit.
    pub plugin_timeout: Option<Duration>,
    /// Undo the plugins that ran when an ADD fails (libcni leaves them to the runtime).
    pub rollback: bool,
    /// The IPAM delegation depth inherited from a delegating parent process.
    pub inherited_depth: u32,
    /// `CNICHAIN_NFT`: an explicit nft binary (None: search PATH and the sbin dirs).
    pub nft_binary: Option<PathBuf>,
    /// How long one `nft` run may take (`CNICHAIN_NFT_TIMEOUT`, default 30 s).
    pub nft_timeout: Duration,
    /// Where spans go as OTLP/JSON lines (`CNICHAIN_TRACE_FILE`, `--trace`); None: no
    /// spans are recorded.
    pub trace_file: Option<PathBuf>,
    /// `PATH`, split: where `nft` is looked for when `nft_binary` is None (before the
    /// usual sbin dirs, which are always searched).
    pub search_path: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cache_dir: PathBuf::from(crate::cache::DEFAULT_CACHE_DIR),
            cache_fsync: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            engine_locks: true,
            exec: ExecPolicy::InProcess,
            plugin_timeout: None,
            rollback: true,
            inherited_depth: 0,
            nft_binary: None,
            nft_timeout: DEFAULT_NFT_TIMEOUT,
            trace_file: None,
            search_path: Vec::new(),
        }
    }
}

const DEFAULT_NFT_TIMEOUT: Duration = Duration::from_secs(30);

impl Settings {
    /// The variables every entry point reads the same way, from `get` (the process
    /// environment, or a map in tests): `CNICHAIN_STATE_DIR`,
    /// `CNICHAIN_CACHE_DIR`, `CNICHAIN_CACHE_FSYNC`, `CNICHAIN_EXEC`,
    /// `CNICHAIN_DELEGATION_DEPTH`, `CNICHAIN_NFT`, `CNICHAIN_NFT_TIMEOUT`,
    /// `CNICHAIN_TRACE_FILE`, `PATH`. An empty
    /// value is unset. Entry points override what their flags say.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Settings {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut s = Settings::default();
        if let Some(d) = var(STATE_DIR_ENV) {
            s.state_dir = PathBuf::from(d);
        }
        if let Some(d) = var("CNICHAIN_CACHE_DIR") {
            s.cache_dir = PathBuf::from(d);
        }
        s.cache_fsync = var("CNICHAIN_CACHE_FSYNC").is_some_and(|v| v == "1" || v == "true");
        if let Some(e) = var("CNICHAIN_EXEC") {
            s.exec = ExecPolicy::parse(&e);
        }
        s.inherited_depth = var(DEPTH_ENV)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
            .min(MAX_DELEGATION_DEPTH);
        s.nft_binary = var("CNICHAIN_NFT").map(PathBuf::from);
        s.nft_timeout = var("CNICHAIN_NFT_TIMEOUT")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_NFT_TIMEOUT, Duration::from_secs);
        s.trace_file = var(crate::trace::TRACE_FILE_ENV).map(PathBuf::from);
        s.search_path = var("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        s
    }

    /// Start recording spans when a trace file is named, parented on the runtime's
    /// `TRACEPARENT`/`TRACESTATE` from `env` (see [`crate::trace`]).
    pub fn start_tracing(&self, env: &dyn Fn(&str) -> Option<String>) {
        crate::trace::start_from_env(self.trace_file.clone(), env);
    }

    /// [`Settings::from_env`] over this process's environment.
    pub fn from_process_env() -> Settings {
        Settings::from_env(|k| std::env::var(k).ok())
    }
}

/// CNI_PATH split on ':' (empty entries dropped).
pub fn split_cni_path(s: &str) -> Vec<PathBuf> {
    s.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}
