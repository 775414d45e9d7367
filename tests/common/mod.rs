//! Shared test scaffolding: a throwaway sandbox per test (its own "host" netns, pod
//! netns, temp dir for every state path) that removes everything it made on drop, even
//! when the test fails.

#![allow(dead_code)]

pub mod bounded;
pub mod conflist;
#[allow(unused_imports)]
pub use conflist::{Conflist, Plugin};
pub mod kstate;
pub mod run;
// Not every test file uses every runner.
#[allow(unused_imports)]
pub use run::{cli, cli_with, cnitool, plugin, plugin_cmd, plugin_in_host, spawn_piped};
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod twin;

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub const REF_PLUGINS: &str = "/usr/lib/cni";

pub fn cnichain_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cnichain"))
}

pub fn recorder_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cnichain-test-recorder"))
}

/// The libcni-based cnitool peer, built once per machine into target/peer.
pub fn peer_cnitool() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/peer/cnitool");
    if !out.exists() {
        let script = root.join("../shared/peer/build-cnitool.sh");
        let st = Command::new("bash")
            .arg(script)
            .arg(&out)
            .status()
            .expect("run build-cnitool.sh");
        assert!(st.success(), "building the peer cnitool failed");
    }
    out
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Sandbox {
    pub tag: String,
    /// Network namespaces this sandbox made (host first).
    pub netns: Vec<String>,
    pub dir: PathBuf,
}

impl Sandbox {
    /// A host netns `<tag>-h` with lo up, and a temp dir with conf/, cache/, ipam/ and
    /// record/ subdirectories.
    pub fn new(tag: &str) -> Sandbox {
        require_root("a throwaway network namespace");
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("cnc{}-{}-{}", std::process::id() % 100000, n, tag);
        let dir = std::env::temp_dir().join(format!("cnichain-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["conf", "cache", "ipam", "record", "state"] {
            std::fs::create_dir_all(dir.join(sub)).expect("temp dir");
        }
        let mut sb = Sandbox {
            tag,
            netns: Vec::new(),
            dir,
        };
        let host = sb.host();
        sb.add_netns(&host);
        run_ok(Command::new("ip").args(["-n", &host, "link", "set", "lo", "up"]));
        sb
    }

    pub fn host(&self) -> String {
        format!("{}-h", self.tag)
    }

    pub fn add_netns(&mut self, name: &str) -> String {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        self.netns.push(name.to_string());
        format!("/run/netns/{name}")
    }

    /// A new pod netns `<tag>-<name>`; returns its path.
    pub fn pod(&mut self, name: &str) -> String {
        let full = format!("{}-{}", self.tag, name);
        let p = self.add_netns(&full);
        run_ok(Command::new("ip").args(["-n", &full, "link", "set", "lo", "up"]));
        p
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn record_dir(&self) -> PathBuf {
        self.dir.join("record")
    }

    /// Write a conflist into conf/, with @IPAM@ replaced by this sandbox's IPAM dir.
    pub fn write_conflist(&self, file: &str, text: &str) -> PathBuf {
        let p = self.conf_dir().join(file);
        std::fs::write(&p, text.replace("@IPAM@", &self.ipam_dir().display().to_string())).expect("write conflist");
        p
    }

    /// A command that runs inside the host netns, with this sandbox's state paths.
    pub fn in_host(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host()))
            .arg("--")
            .arg(program);
        c.env("NETCONFPATH", self.conf_dir())
            .env("CNICHAIN_CACHE_DIR", self.cache_dir())
            .env("CNICHAIN_RECORD_DIR", self.record_dir())
            .env("CNICHAIN_STATE_DIR", self.dir.join("state"))
            .env_remove("CNI_COMMAND")
            .env_remove("CNICHAIN_EXEC")
            .env_remove("CNICHAIN_FAULT")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_ARGS")
            .env_remove("CNI_IFNAME");
        c
    }

    /// `cnichain VERB NET NETNS` in the host netns with CNI_PATH set.
    pub fn cnichain(&self, cni_path: &str, args: &[&str]) -> Output {
        run::cli(self, cni_path, args)
    }

    /// Run a shell snippet inside a netns of this sandbox.
    pub fn sh_in(&self, netns: &str, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", script])
            .output()
            .expect("ip netns exec")
    }

    /// Records written by the recording plugin, oldest first.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.record_dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    pub fn clear_records(&self) {
        let _ = std::fs::remove_dir_all(self.record_dir());
        let _ = std::fs::create_dir_all(self.record_dir());
    }

    /// Paths of every file below `sub` (relative), sorted. host-local's index beside
    /// its stores (`<dataDir>/.cnichain-index`, cnichain's cache of them, which the
    /// reference has not) is left out: tests/ipam_scale.rs checks it.
    pub fn files_in(&self, sub: &str) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        if e.file_name() == ".cnichain-index" {
                            continue;
                        }
                        walk(base, &p, out);
                    } else if let Ok(rel) = p.strip_prefix(base) {
                        out.push(rel.display().to_string());
                    }
                }
            }
        }
        let base = self.dir.join(sub);
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for n in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Files an attachment may leave in this sandbox's state paths, which must be gone once
/// every attachment is DELeted: reservations (not the store's `lock` and
/// `last_reserved_ip.N`, which stay by design), state-dir files (not `locks/gc.lock`) and
/// cache entries.
pub fn leftover_files(sb: &Sandbox) -> Vec<String> {
    let mut out = Vec::new();
    for f in sb.files_in("ipam") {
        let base = f.rsplit('/').next().unwrap_or("");
        if base != "lock" && !base.starts_with("last_reserved_ip.") {
            out.push(format!("ipam {f}"));
        }
    }
    out.extend(
        sb.files_in("state")
            .into_iter()
            .filter(|f| f != "locks/gc.lock")
            .map(|f| format!("state {f}")),
    );
    out.extend(sb.files_in("cache").into_iter().map(|f| format!("cache {f}")));
    out
}

/// Removes what libcni-based tools (the peer cnitool, podman) leave in libcni's fixed
/// cache dir for one network: they have no option to point it elsewhere.
pub struct ResultsCleanup(pub String);

impl Drop for ResultsCleanup {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!("{}-", self.0)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run a shell snippet in a netns, assert it succeeded, return its trimmed stdout.
pub fn sh(sb: &Sandbox, ns: &str, script: &str) -> String {
    let o = sb.sh_in(ns, script);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// The netns name of a /run/netns path.
pub fn ns_name(path: &str) -> String {
    path.trim_start_matches("/run/netns/").to_string()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}): stdout={} stderr={}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Assert exit status 1 with a CNI error object on stdout; return it.
#[track_caller]
pub fn cni_err(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(1),
        "want exit 1: stdout={} stderr={}",
        stdout(o),
        stderr(o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a CNI error object ({e}): {}", stdout(o)));
    assert!(v.get("code").and_then(|c| c.as_u64()).is_some(), "no code in {v}");
    assert!(v.get("msg").and_then(|c| c.as_str()).is_some(), "no msg in {v}");
    v
}

/// ADD/DEL cycles of the no-growth tests: `CNICHAIN_LOAD_CYCLES`, default 1000.
pub fn load_cycles() -> usize {
    std::env::var("CNICHAIN_LOAD_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Runs `c` with `stdin` written to it, as a runtime runs a plugin; its whole output.
pub fn pipe(c: Command, stdin: &str) -> Output {
    run::spawn_piped(c, stdin)
        .wait_with_output()
        .expect("wait for the plugin")
}

/// `cnichain install` into `<sandbox>/cnibin`: the binary and its drop-in links.
pub fn install(sb: &Sandbox) -> PathBuf {
    install_to(sb.dir.join("cnibin"))
}

/// `cnichain install --bin-dir dir`; the dir.
pub fn install_to(dir: PathBuf) -> PathBuf {
    ok(&Command::new(cnichain_bin())
        .args(["install", "--bin-dir"])
        .arg(&dir)
        .output()
        .expect("run cnichain install"));
    dir
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test loudly unless it runs as root: a test that needs the kernel
/// (CAP_NET_ADMIN for netns, links, nftables, tc) must never pass by doing nothing.
/// `need` names what the test uses, for the message.
#[track_caller]
pub fn require_root(need: &str) {
    if !is_root() {
        let test = std::thread::current().name().unwrap_or("this test").to_string();
        panic!(
            "{test} needs root (CAP_NET_ADMIN) for {need}; run it as root, e.g. scripts/test \
             (it was run with euid {})",
            unsafe { libc::geteuid() }
        );
    }
}
