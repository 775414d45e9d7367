//! `cnichain conformance`: spec-derived checks against any CNI plugin binary, each in
//! throwaway namespaces (see sandbox.rs). The rules are a table (rules.rs); the checks
//! they name live in checks_*.rs. Exit status: 0 every applicable rule passed, 1 a rule
//! failed, 2 usage error (no such plugin, unreadable config, not root).

mod call;
mod chain;
mod checks_add;
mod checks_chain;
mod checks_del;
mod checks_env;
mod report;
mod rules;
mod runner;
mod sandbox;
mod schema;

use cnichain_engine::spec::version;
use runner::{exec, Ctx, Verdict};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ConformanceArgs {
    /// The plugin binary under test
    /// The plugin binary under test (with --conflist: used for the list's entries of its
    /// file name's type)
    #[arg(long, required_unless_present_any = ["list", "conflist"])]
    pub plugin: Option<PathBuf>,
    /// What the plugin is [default: from its name: host-local/static/dhcp are ipam;
    /// tuning/portmap/bandwidth/firewall/sbr meta; anything else main]
    #[arg(long, value_parser = ["main", "ipam", "meta"], conflicts_with = "conflist")]
    pub kind: Option<String>,
    /// The plugin's config (one plugin object); cniVersion is set per version under test
    /// and every dataDir is moved into the sandbox [default: per kind]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run the chain-level rules over this whole conflist instead, as libcni runs it:
    /// plugins found by type in the search path, each ADD given the previous result,
    /// CHECK and DEL the cached one (DEL in reverse order)
    #[arg(long, conflicts_with = "config")]
    pub conflist: Option<PathBuf>,
    /// Spec versions to test, comma separated [default: every version the plugin's
    /// VERSION answer claims that cnichain knows; with --conflist, the list's cniVersion]
    #[arg(long, value_delimiter = ',')]
    pub versions: Vec<String>,
    /// Directories (colon separated) for delegated IPAM, the meta plugin's bridge and a
    /// conflist's plugins [default: the plugin's own directory, /usr/lib/cni, /opt/cni/bin]
    /// (not --cni-path: that global option is the runtime's CNI_PATH)
    #[arg(long)]
    pub search_path: Option<String>,
    /// Only the rules whose ID starts with one of these (comma separated)
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<String>,
    /// Seconds before a plugin call is killed
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Rules run at once, each in its own sandbox
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[arg(long, value_parser = ["human", "json"], default_value = "human")]
    pub format: String,
    /// Print the rule table and exit
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Main,
    Ipam,
    Meta,
    /// `--conflist`: the whole list, run as a runtime runs it.
    Chain,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Main => "main",
            Kind::Ipam => "ipam",
            Kind::Meta => "meta",
            Kind::Chain => "chain",
        }
    }
}

pub struct Opts {
    /// The plugin under test (`--conflist`: the list's path).
    pub plugin: PathBuf,
    /// `--conflist`: the list under test.
    pub chain: Option<chain::Chain>,
    pub kind: Kind,
    /// The plugin config before per-version and per-sandbox fixes.
    pub base: Value,
    /// `base` is the harness's default (its subnet is then made the sandbox's own).
    pub default_conf: bool,
    /// What VERSION claims (empty when it did not answer).
    pub claimed: Vec<String>,
    /// The versions under test, oldest first.
    pub versions: Vec<String>,
    pub cni_path: Vec<PathBuf>,
    pub bridge: Option<PathBuf>,
    pub timeout: Duration,
}

fn usage(err: &dyn Fn(&str), msg: &str) -> i32 {
    err(&format!("cnichain conformance: {msg}\n"));
    2
}

/// Run the harness with `a`; the report goes to `out`, usage errors to `err` (the
/// binary's stdout and stderr writers). Returns the exit status.
pub fn run(a: &ConformanceArgs, out: &dyn Fn(&str), err: &dyn Fn(&str)) -> i32 {
    if a.list {
        out(&report::rule_table());
        return 0;
    }
    if let Some(p) = a
        .plugin
        .as_ref()
        .filter(|p| !std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    {
        return usage(err, &format!("--plugin {}: not a file", p.display()));
    }
    // Namespaces need CAP_SYS_ADMIN: say so instead of 40 failures.
    if std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(true)
    {
        return usage(err, "must run as root (it creates network namespaces)");
    }
    let o = match opts(a) {
        Ok(o) => o,
        Err(e) => return usage(err, &e),
    };
    sandbox::sweep_stale();
    let results = run_rules(&o, &a.rules, a.jobs);
    let text = if a.format == "json" {
        report::json(&o, &results)
    } else {
        report::human(&o, &results)
    };
    out(&text);
    if results.iter().any(|r| matches!(r.verdict, Verdict::Fail { .. })) {
        1
    } else {
        0
    }
}

/// The options of a run: the plugin (or list), its kind and config, the versions.
fn opts(a: &ConformanceArgs) -> Result<Opts, String> {
    let timeout = Duration::from_secs(a.timeout.max(1));
    let own_dir = a.plugin.as_ref().and_then(|p| p.parent()).map(Path::to_path_buf);
    let cni_path: Vec<PathBuf> = match a.search_path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect(),
        None => own_dir
            .into_iter()
            .chain(["/usr/lib/cni".into(), "/opt/cni/bin".into()])
            .collect(),
    };
    let check_versions = |mut vs: Vec<String>| -> Result<Vec<String>, String> {
        if let Some(bad) = vs.iter().find(|v| version::parse(v).is_err()) {
            return Err(format!("--versions: {bad:?} is not a version"));
        }
        vs.sort_by(|x, y| version::compare(x, y).unwrap_or(std::cmp::Ordering::Equal));
        vs.dedup();
        Ok(vs)
    };
    if let Some(list) = &a.conflist {
        let ch = chain::Chain::load(list, a.plugin.clone(), &cni_path)?;
        // What every plugin of the list claims (one sandbox for all the probes).
        let sb = sandbox::Sandbox::new().ok();
        let mut claimed: Option<Vec<String>> = None;
        for t in ch.types() {
            let mine = match (ch.binary(&t, &cni_path), &sb) {
                (Some(b), Some(sb)) => probe_versions(&b, sb, timeout),
                _ => Vec::new(),
            };
            claimed = Some(match claimed {
                None => mine,
                Some(c) => c.into_iter().filter(|v| mine.contains(v)).collect(),
            });
        }
        let versions = if a.versions.is_empty() {
            // What the operator deploys: the list's own version (libcni's default when
            // it has none is what plugins read as 0.1.0).
            vec![ch.version().unwrap_or_else(|| "0.1.0".into())]
        } else {
            a.versions.clone()
        };
        return Ok(Opts {
            plugin: list.clone(),
            chain: Some(ch),
            kind: Kind::Chain,
            base: Value::Null,
            default_conf: false,
            claimed: claimed.unwrap_or_default(),
            versions: check_versions(versions)?,
            cni_path,
            bridge: None,
            timeout,
        });
    }
    let plugin = a.plugin.clone().ok_or("--plugin or --conflist is required")?;
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = match a.kind.as_deref() {
        Some("ipam") => Kind::Ipam,
        Some("meta") => Kind::Meta,
        Some(_) => Kind::Main,
        None => guess_kind(&name),
    };
    let base = load_config(a, &name, kind)?;
    let bridge = cni_path.iter().map(|d| d.join("bridge")).find(|p| p.is_file());
    let claimed = match sandbox::Sandbox::new() {
        Ok(sb) => probe_versions(&plugin, &sb, timeout),
        Err(_) => Vec::new(),
    };
    let mut versions = check_versions(if a.versions.is_empty() {
        claimed.iter().filter(|v| version::is_supported(v)).cloned().collect()
    } else {
        a.versions.clone()
    })?;
    if versions.is_empty() {
        // VERSION gave nothing usable (its rule fails); still test the current version.
        versions.push("1.0.0".into());
    }
    Ok(Opts {
        plugin,
        chain: None,
        kind,
        base,
        default_conf: a.config.is_none(),
        claimed,
        versions,
        cni_path,
        bridge,
        timeout,
    })
}

fn guess_kind(name: &str) -> Kind {
    match name {
        "host-local" | "static" | "dhcp" | "whereabouts" => Kind::Ipam,
        "tuning" | "portmap" | "bandwidth" | "firewall" | "sbr" => Kind::Meta,
        _ => Kind::Main,
    }
}

fn load_config(a: &ConformanceArgs, name: &str, kind: Kind) -> Result<Value, String> {
    if let Some(p) = &a.config {
        let text = std::fs::read_to_string(p).map_err(|e| format!("--config {}: {e}", p.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("--config {}: {e}", p.display()))?;
        return v
            .is_object()
            .then_some(v)
            .ok_or_else(|| format!("--config {}: not a JSON object", p.display()));
    }
    Ok(default_config(name, kind))
}

/// The default config per kind. Keys another plugin of the kind does not know are
/// ignored by the spec's rules (Go's decoder), so one config serves the whole kind.
pub fn default_config(name: &str, kind: Kind) -> Value {
    let ipam = json!({
        "type": "host-local", "ranges": [[{ "subnet": "10.77.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
    });
    match kind {
        // A list brings its own config: this is only its main plugin's shape.
        Kind::Main | Kind::Chain => json!({ "name": "cncf-main", "type": name, "ipam": ipam }),
        Kind::Ipam => {
            let mut i = ipam;
            i["type"] = json!(name);
            // static's keys; host-local ignores them (and static host-local's).
            i["addresses"] = json!([{ "address": "10.77.0.9/24", "gateway": "10.77.0.1" }]);
            json!({ "name": "cncf-ipam", "type": "cncf-main", "ipam": i })
        }
        Kind::Meta => json!({
            "name": "cncf-meta", "type": name,
            "capabilities": { "portMappings": true, "bandwidth": true },
            "runtimeConfig": {
                "portMappings": [{ "hostPort": 18080, "containerPort": 80, "protocol": "tcp" }],
                "bandwidth": { "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 8000000, "egressBurst": 800000 }
            },
            "sysctl": { "net.ipv4.conf.eth0.arp_notify": "1" }
        }),
    }
}

/// VERSION's supportedVersions (empty if it does not answer usably).
fn probe_versions(plugin: &Path, sb: &sandbox::Sandbox, timeout: Duration) -> Vec<String> {
    let env = vec![
        ("CNI_COMMAND".to_string(), "VERSION".to_string()),
        ("PATH".to_string(), "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
    ];
    let stdin = format!("{{\"cniVersion\":\"{}\"}}", version::CURRENT);
    let c = exec("VERSION", plugin, &sb.host_path(), env, stdin.as_bytes(), timeout);
    c.json()
        .ok()
        .and_then(|v| v["supportedVersions"].as_array().cloned())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// One rule's outcome.
pub struct RuleResult {
    pub rule: &'static rules::Rule,
    pub verdict: Verdict,
    /// The version the verdict was reached at (a failure names the first failing one).
    pub version: String,
}

/// The rules, `jobs` at a time: each has its own sandbox, and most of a rule's time is
/// spent waiting on the kernel and the plugin's processes. Reported in table order.
fn run_rules(o: &Opts, only: &[String], jobs: usize) -> Vec<RuleResult> {
    let picked: Vec<&'static rules::Rule> = rules::RULES
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|p| r.id.starts_with(p.as_str())))
        .collect();
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<RuleResult>>> = picked.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, picked.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(rule) = picked.get(i) else { break };
                let r = run_rule(o, rule);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

fn run_rule(o: &Opts, rule: &'static rules::Rule) -> RuleResult {
    let res = |verdict, version: &str| RuleResult {
        rule,
        verdict,
        version: version.to_string(),
    };
    if !rule.kinds.contains(&o.kind) {
        return res(
            Verdict::Na(format!("applies to {} plugins", kinds_text(rule.kinds))),
            "",
        );
    }
    let eligible: Vec<&String> = o
        .versions
        .iter()
        .filter(|v| version::at_least(v, rule.min).unwrap_or(false))
        .filter(|v| {
            rule.max
                .is_none_or(|m| version::compare(v, m).is_ok_and(|c| c == std::cmp::Ordering::Less))
        })
        .collect();
    let picked: Vec<&String> = if rule.each_version {
        eligible
    } else {
        eligible.last().into_iter().copied().collect()
    };
    if picked.is_empty() {
        let why = match rule.max {
            Some(m) => format!("needs a tested version >= {} and < {m}", rule.min),
            None => format!("needs a tested version >= {}", rule.min),
        };
        return res(Verdict::Na(why), "");
    }
    let mut last = None;
    let mut at = String::new();
    for v in picked {
        at = v.clone();
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match Ctx::new(o, v) {
            Ok(mut ctx) => match (rule.check)(&mut ctx) {
                Ok(()) => Verdict::Pass,
                Err(v) => v,
            },
            Err(e) => runner::fail("the harness can create its sandbox", e, None),
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            runner::fail(
                "the check runs to its end",
                format!("the harness panicked: {msg}"),
                None,
            )
        });
        match verdict {
            // Not applicable at one version (say, no prevResult before 0.3.0): go on.
            Verdict::Na(why) => {
                if last.is_none() {
                    last = Some(Verdict::Na(why));
                }
            }
            Verdict::Pass => last = Some(Verdict::Pass),
            other => return res(other, &at),
        }
    }
    res(last.unwrap_or(Verdict::Pass), &at)
}

pub fn kinds_text(k: &[Kind]) -> String {
    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("/")
}
