//! One throwaway sandbox per rule: a "host" netns and a pod netns with unique names, and a
//! temp dir for every state path. Removed on drop (also when a check panics). The root
//! netns is never touched: plugins and kernel queries run under `nsenter --net=`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Sandbox {
    pub tag: String,
    /// The third octet of this sandbox's default subnets (10.77.N.0/24, 10.78.N.0/24):
    /// rules that run at once, in one run or two, hand out different pod addresses, so a
    /// file or rule naming one pod's address is never taken for another's.
    pub net: u8,
    pub host: String,
    pub pod: String,
    /// A second pod netns for the baseline attachment (see `Ctx::baseline`).
    pub base: String,
    pub dir: PathBuf,
    made: Vec<String>,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !o.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Sandbox {
    pub fn new() -> Result<Sandbox, String> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        // Short: netns names show up in messages, and the tag prefixes container IDs.
        // The pid lets a later run tell a killed harness's leftovers (`sweep_stale`).
        let tag = format!("cncf{}x{}", std::process::id(), n);
        let dir = std::env::temp_dir().join(format!("cnichain-conformance-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["bin", "ipam", "state", "cache", "files"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let net = ((std::process::id() as usize).wrapping_mul(37).wrapping_add(n) % 250) as u8 + 1;
        let mut sb = Sandbox {
            net,
            host: format!("{tag}-h"),
            pod: format!("{tag}-p"),
            base: format!("{tag}-b"),
            tag,
            dir,
            made: Vec::new(),
        };
        for name in [sb.host.clone(), sb.pod.clone(), sb.base.clone()] {
            ip(&["netns", "add", &name])?;
            sb.made.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(sb)
    }

    pub fn pod_path(&self) -> String {
        format!("/run/netns/{}", self.pod)
    }
    pub fn base_path(&self) -> String {
        format!("/run/netns/{}", self.base)
    }
    pub fn host_path(&self) -> String {
        format!("/run/netns/{}", self.host)
    }

    /// Remove the pod netns now (the "netns is gone" DEL rules).
    pub fn remove_pod(&mut self) -> Result<(), String> {
        ip(&["netns", "del", &self.pod])?;
        self.made.retain(|n| n != &self.pod);
        Ok(())
    }

    /// `cmd args` inside the netns file `ns` (a /run/netns path or any nsfs path).
    pub fn run_in(ns: &str, cmd: &str, args: &[&str]) -> Result<String, String> {
        let o = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg("--")
            .arg(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("nsenter {cmd}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "{cmd} {} in {ns}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    pub fn sh_pod(&self, script: &str) -> Result<String, String> {
        Sandbox::run_in(&self.pod_path(), "sh", &["-c", script])
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Removing a netns destroys the links, addresses, routes and firewall rules in it.
        for n in self.made.drain(..) {
            let _ = ip(&["netns", "del", &n]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid in a sandbox name (`cncf<pid>x<n>` then `-h`/`-p`/`-b` or nothing).
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cncf")?;
    let (pid, tail) = rest.split_once('x')?;
    let seq = tail.split('-').next()?;
    let ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| pid.parse().ok()).flatten()
}

/// Is `pid` running? (A reused pid only delays the sweep: never removes a live run's.)
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove what a harness killed mid-run (SIGKILL runs no Drop) left: its namespaces and
/// temp dirs, found by the pid in their names. Only names of the harness's own pattern,
/// and only when no process has that pid.
pub fn sweep_stale() {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner(name).is_some_and(|p| !alive(p)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(tag) = n.strip_prefix("cnichain-conformance-") {
            if owner(tag).is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A link as `ip -j link` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub name: String,
    pub mac: String,
    pub kind: String,
}

fn ip_json(ns: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = Sandbox::run_in(ns, "ip", &all)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(format!("ip -j {}: {e}", args.join(" "))),
    }
}

pub fn links(ns: &str) -> Result<Vec<Link>, String> {
    Ok(ip_json(ns, &["-d", "link", "show"])?
        .iter()
        .map(|l| Link {
            name: l["ifname"].as_str().unwrap_or_default().to_string(),
            mac: l["address"].as_str().unwrap_or_default().to_lowercase(),
            kind: l["linkinfo"]["info_kind"].as_str().unwrap_or_default().to_string(),
        })
        .collect())
}

/// (ifname, "addr/prefix") for every address in `ns`.
pub fn addrs(ns: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for l in ip_json(ns, &["addr", "show"])? {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if let (Some(ip), Some(p)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                // The kernel's own IPv6 link-local addresses appear when a link comes up
                // (some time later): not the plugin's.
                if ip.starts_with("fe80:") {
                    continue;
                }
                out.push((name.clone(), format!("{ip}/{p}")));
            }
        }
    }
    Ok(out)
}

/// Every route of both families in every table, one normalized line each:
/// "table DST via GW dev DEV".
pub fn routes(ns: &str) -> Result<Vec<RouteEntry>, String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        for r in ip_json(ns, &[fam, "route", "show", "table", "all"])? {
            let dst = r["dst"].as_str().unwrap_or_default();
            let dst = match dst {
                "default" if fam == "-4" => "0.0.0.0/0".to_string(),
                "default" => "::/0".to_string(),
                d if d.contains('/') => d.to_string(),
                d if fam == "-4" => format!("{d}/32"),
                d => format!("{d}/128"),
            };
            // Kernel-made IPv6 link-local and multicast routes (see addrs).
            if dst.starts_with("fe80:") || dst.starts_with("ff00:") {
                continue;
            }
            out.push(RouteEntry {
                dst,
                gw: r["gateway"].as_str().unwrap_or_default().to_string(),
                dev: r["dev"].as_str().unwrap_or_default().to_string(),
                table: r["table"].as_str().unwrap_or("main").to_string(),
                rtype: r["type"].as_str().unwrap_or("unicast").to_string(),
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    pub dst: String,
    pub gw: String,
    pub dev: String,
    pub table: String,
    pub rtype: String,
}

impl std::fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.rtype, self.dst)?;
        if !self.gw.is_empty() {
            write!(f, " via {}", self.gw)?;
        }
        write!(f, " dev {} table {}", self.dev, self.table)
    }
}

/// Firewall rules of `ns` as lines, counters stripped (they are not state the plugin made).
pub fn firewall(ns: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if let Ok(t) = Sandbox::run_in(ns, "nft", &["list", "ruleset"]) {
        lines.extend(t.lines().map(|l| format!("nft: {}", strip_counters(l.trim()))));
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        if let Ok(t) = Sandbox::run_in(ns, tool, &[]) {
            lines.extend(
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{tool}: {}", strip_counters(l.trim()))),
            );
        }
    }
    lines
}

fn strip_counters(line: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut it = line.split_whitespace().peekable();
    while let Some(w) = it.next() {
        if (w == "packets" || w == "bytes") && it.peek().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            it.next();
            continue;
        }
        if w.starts_with('[') && w.ends_with(']') && w.contains(':') {
            continue;
        }
        words.push(w);
    }
    words.join(" ")
}

/// Directories outside the sandbox where plugins keep state; only files that mention the
/// attachment (container ID or pod address) in their path or content are held against it,
/// so what other processes do there meanwhile does not count.
pub const SHARED_STATE_DIRS: &[&str] = &["/var/lib/cni", "/run"];
/// Parts of /run that are not plugin state (and are large or churn).
const SKIP: &[&str] = &[
    "/run/netns",
    "/run/user",
    "/run/udev",
    "/run/systemd",
    "/run/containerd/io.containerd.runtime.v2.task",
];

/// path -> size for every regular file below `root` (bounded walk).
pub fn files(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if SKIP.iter().any(|s| dir == Path::new(s)) || depth > 8 || out.len() > 50_000 {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push((e.path(), depth + 1));
            } else if ft.is_file() {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.insert(e.path(), size);
            }
        }
    }
    out
}

/// Files present in `after` but not `before` whose path or content (first 1 MiB) mentions
/// one of `needles`.
pub fn new_files_mentioning(
    before: &BTreeMap<PathBuf, u64>,
    after: &BTreeMap<PathBuf, u64>,
    needles: &[String],
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        let name = p.display().to_string();
        let content = std::fs::read(p)
            .map(|mut b| {
                b.truncate(1 << 20);
                String::from_utf8_lossy(&b).into_owned()
            })
            .unwrap_or_default();
        if needles
            .iter()
            .any(|n| !n.is_empty() && (name.contains(n.as_str()) || content.contains(n.as_str())))
        {
            out.insert(name);
        }
    }
    out.into_iter().collect()
}
