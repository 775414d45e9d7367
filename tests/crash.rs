//! Crash consistency (issue 7): the 4-stage chain's ADD (bridge with ipMasq + host-local,
//! tuning, portmap with a mapping, bandwidth) is killed with SIGKILL at a random moment,
//! then DELeted (with or without its cache entry, with or without the pod netns), and
//! nothing of that attachment may be left: host links, ifb, pod links, nft elements and
//! records, host-local reservations, tuning records, lock files, cache files.
//!
//! All trials share one sandbox host netns (a fresh pod netns each); the moment of the
//! kill is spread uniformly over one ADD's measured duration. The binary is the one
//! cargo builds for the tests (`CARGO_BIN_EXE_cnichain`, the dev profile) unless
//! `CNICHAIN_CRASH_BIN` names another (e.g. target/release/cnichain). The seed is printed;
//! `CNICHAIN_CRASH_SEED` replays it, `CNICHAIN_CRASH_TRIALS` changes the count (100).

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NET: &str = "crashnet";
const BRIDGE: &str = "cncr0";
const CAPS: &str = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

fn conflist() -> String {
    Conflist::new("1.0.0", NET)
        .plugin(
            Plugin::bridge(BRIDGE, "10.240.0.0/16")
                .set("ipMasq", true)
                .set("hairpinMode", true)
                .gateway("10.240.0.1")
                .default_route(),
        )
        .plugin(Plugin::tuning(
            json!({ "net.core.somaxconn": "512", "net.ipv4.conf.eth0.arp_notify": "1" }),
        ))
        .plugin(Plugin::portmap().set("snat", true))
        .plugin(Plugin::bandwidth(Some((8000000, 800000)), Some((4000000, 400000))))
        .text()
}

/// xorshift64*: no dependency, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn bin() -> PathBuf {
    std::env::var_os("CNICHAIN_CRASH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(cnichain_bin)
}

fn op(sb: &Sandbox, verb: &str, cid: &str, netns: &str) -> Command {
    let mut c = sb.in_host(&bin());
    c.env("CNI_PATH", "")
        .args(["--cap-args", CAPS, "--container-id", cid, verb, NET, netns]);
    c
}

/// Everything of the attachment still present, as readable lines. `pod` is the pod
/// netns name when it still exists.
fn leftovers(sb: &Sandbox, pod: Option<&str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let host = sb.host();
    // Host links: only lo and the bridge may stay (this catches veths and ifbs).
    let o = sb.sh_in(&host, "ip -o link show");
    for line in stdout(&o).lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or("");
        if name != "lo" && name != BRIDGE {
            out.insert(format!("host link {name}"));
        }
    }
    if let Some(pod) = pod {
        let o = sb.sh_in(pod, "ip -o link show");
        for line in stdout(&o).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name != "lo" {
                out.insert(format!("pod link {name}"));
            }
        }
    }
    // nft: every set and map of our table must be empty again (trials run one after
    // another, so any element is a leftover of one of them).
    let o = sb.sh_in(&host, "nft -j list table inet cnichain 2>/dev/null || true");
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
        for item in v["nftables"].as_array().cloned().unwrap_or_default() {
            for kind in ["set", "map"] {
                if let Some(s) = item.get(kind) {
                    for e in s["elem"].as_array().cloned().unwrap_or_default() {
                        out.insert(format!("nft {kind} {} element {e}", s["name"]));
                    }
                }
            }
            // Chains are listed all; the base ones are in the baseline taken after
            // the warm-up, so a per-attachment chain left behind shows as new.
            if let Some(ch) = item.get("chain") {
                out.insert(format!("nft chain {}", ch["name"].as_str().unwrap_or("")));
            }
        }
    }
    for f in sb.files_in("ipam") {
        let base = f.rsplit('/').next().unwrap_or("");
        if base != "lock" && !base.starts_with("last_reserved_ip.") {
            let content = std::fs::read(sb.ipam_dir().join(&f)).unwrap_or_default();
            out.insert(format!("ipam {f} {:?}", String::from_utf8_lossy(&content)));
        }
    }
    for f in sb.files_in("state") {
        if f != "locks/gc.lock" {
            out.insert(format!("state {f}"));
        }
    }
    for f in sb.files_in("cache") {
        out.insert(format!("cache {f}"));
    }
    out
}

/// Leftovers, waiting up to 3 s for the kernel's asynchronous netns cleanup (a deleted
/// pod netns takes its veth pair with it, a little later).
fn settled_leftovers(sb: &Sandbox, pod: Option<&str>, base: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let l = leftovers(sb, pod);
        if l.is_subset(base) || Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_during_add_then_del_leaves_nothing() {
    require_root("netns, veth, bridges, kill -9 trials");
    let trials: usize = std::env::var("CNICHAIN_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("CNICHAIN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let mut sb = Sandbox::new("crash");
    sb.write_conflist("crash.conflist", &conflist());
    eprintln!("crash: binary {}, seed {seed}", bin().display());

    // Measure whole ADDs (process start to exit), which also makes the bridge and the
    // nft table; each is DELeted and must leave nothing.
    let mut adds = Vec::new();
    let mut base = BTreeSet::new();
    for i in 0..5 {
        let path = sb.pod(&format!("w{i}"));
        let cid = format!("warm{i}");
        let t = Instant::now();
        ok(&op(&sb, "add", &cid, &path).output().expect("run add"));
        adds.push(t.elapsed());
        ok(&op(&sb, "del", &cid, &path).output().expect("run del"));
        let pod = ns_name(&path);
        if i == 0 {
            // The table's base chains stay (so do the bridge and lo): the baseline.
            base = leftovers(&sb, Some(&pod));
            assert!(
                base.iter().all(|l| l.starts_with("nft chain ")),
                "a complete ADD+DEL left {base:#?}"
            );
        }
        let l = settled_leftovers(&sb, Some(&pod), &base);
        assert!(l.is_subset(&base), "a complete ADD+DEL left {l:#?}");
        let _ = Command::new("ip").args(["netns", "del", &pod]).output();
    }
    // The fastest ADD (the others may have shared the machine with a build): kills are
    // spread a little past its end, so that the last steps (the cache write) and some
    // completed ADDs are covered too.
    let add_time = adds.iter().min().copied().unwrap_or(Duration::from_millis(30));
    let window = add_time.as_micros() as u64 * 12 / 10;
    eprintln!("crash: ADDs took {adds:?}, kill window 0..{window} us");

    let started = Instant::now();
    let (mut killed, mut completed, mut leftover_trials) = (0, 0, 0);
    let mut total_leftovers = 0;
    let mut known: BTreeSet<String> = base.clone();
    for i in 0..trials {
        let path = sb.pod(&format!("t{i}"));
        let pod = ns_name(&path);
        let cid = format!("crash{i}");
        let delay = Duration::from_micros(rng.below(window));
        let mut child = op(&sb, "add", &cid, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn add");
        std::thread::sleep(delay);
        match child.try_wait() {
            Ok(Some(_)) => completed += 1,
            _ => {
                let _ = child.kill();
                killed += 1;
            }
        }
        let _ = child.wait();

        let drop_cache = i % 2 == 0;
        let drop_netns = i % 3 == 1;
        if drop_cache {
            let _ = std::fs::remove_file(sb.cache_dir().join(format!("results/{NET}-{cid}-eth0")));
        }
        if drop_netns {
            let _ = Command::new("ip").args(["netns", "del", &pod]).output();
        }
        let del = op(&sb, "del", &cid, &path).output().expect("run del");
        if !del.status.success() {
            eprintln!(
                "trial {i}: DEL failed ({}): {} {}",
                del.status,
                stdout(&del),
                stderr(&del)
            );
            total_leftovers += 1;
            leftover_trials += 1;
        }
        let pod_alive = (!drop_netns).then_some(pod.as_str());
        let now = settled_leftovers(&sb, pod_alive, &known);
        let new: Vec<&String> = now.difference(&known).collect();
        if !new.is_empty() {
            leftover_trials += 1;
            total_leftovers += new.len();
            eprintln!(
                "trial {i} (kill after {delay:?}, cache {}, netns {}): leftovers {new:#?}",
                if drop_cache { "removed" } else { "kept" },
                if drop_netns { "removed" } else { "kept" },
            );
        }
        known = now;
        let _ = Command::new("ip").args(["netns", "del", &pod]).output();
    }
    eprintln!(
        "crash: {trials} trials ({killed} killed during ADD, {completed} ADDs completed first) in {:?}: \
         {total_leftovers} leftovers in {leftover_trials} trials",
        started.elapsed()
    );
    assert_eq!(total_leftovers, 0, "leftovers after DEL (see stderr)");
}
