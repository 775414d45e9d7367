//! No growth in one long-lived process (issue 7: "1,000 ADD/DEL cycles with no growth in
//! open files, memory, kernel objects or state files"). `tests/load.rs` runs the binary
//! once per operation, which cannot see descriptors, threads or memory kept inside one
//! process; here the engine is linked in and driven as a runtime embedding it would.
//!
//! The 4-stage chain (bridge with ipMasq + host-local, tuning, portmap with a hostPort,
//! bandwidth ingress and egress) is ADDed and DELeted `CNICHAIN_LOAD_CYCLES` times (1000)
//! in all, on `PODS` pods at once (one engine shared by their threads, as a runtime would;
//! most of a cycle is the kernel's wait while links are deleted, so they overlap), in a
//! throwaway sandbox: the loop runs on a thread that has entered the sandbox's host netns
//! (the threads it and the engine start and the `nft` it runs inherit that thread's
//! netns; the machine's root netns is never touched). After a warm-up, the
//! process's descriptors (by kind), threads, the sandbox's links, addresses, routes,
//! qdiscs, bridge fdb, nft table (chains, rules, elements), pod links and state / cache /
//! ipam files must be exactly as they were; VmRSS may grow by at most `RSS_BOUND_KIB`
//! (`RSS_SECOND_HALF_BOUND_KIB` over the second half of the cycles). While attached, the
//! chain must show in each of those kernel / file categories (else the check proves
//! nothing).
//!
//! This file holds one test only, so the process's figures are this test's.

mod common;

use cnichain_engine::cache::Cache;
use cnichain_engine::chain::Engine;
use cnichain_engine::lock::Locks;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_engine::stage::Registry;
use cnichain_stages::kernel::netns::NetNs;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NET: &str = "cyclenet";
const BRIDGE: &str = "cncy0";
const CONTAINER: &str = "cycles-inprocess";
/// Pods cycling at once; each round ADDs and DELs each of them once.
const PODS: usize = 4;
/// Rounds before the baseline: the bridge, the nft table, the store's lock files, the
/// parked nfnetlink sockets (stages/src/kernel/nft/netlink.rs keeps up to 8), glibc's thread
/// stack cache and malloc arenas all reach their steady state in the first few.
const WARMUP: usize = 20;
/// VmRSS growth allowed from the baseline to the end (KiB), and over the second half of
/// the cycles alone. Nothing may be kept per cycle, so what is left is allocator noise:
/// freed chunks kept in glibc's malloc arenas (the short-lived netns and defer threads use
/// several) and the pages they happen to touch. Measured on the 2-core VM: a plateau of
/// +40..+100 KiB reached within ~40 cycles of the baseline, then flat within +-30 KiB.
/// The bounds are ~5x that; a per-cycle leak of ~0.5 KiB crosses both over the default
/// 1000 cycles (the engine's 8 per-call `Timing` records of one cycle are ~1 KiB). The second-half bound
/// catches steady growth even if the plateau were higher elsewhere. Shorter runs (a
/// smaller CNICHAIN_LOAD_CYCLES) are proportionally less sensitive.
const RSS_BOUND_KIB: i64 = 512;
const RSS_SECOND_HALF_BOUND_KIB: i64 = 256;

fn conflist(sb: &Sandbox) -> String {
    Conflist::new("1.0.0", NET)
        .plugin(
            Plugin::bridge(BRIDGE, "10.239.0.0/16")
                .set("ipMasq", true)
                .set("hairpinMode", true)
                .gateway("10.239.0.1")
                .default_route()
                .ipam("dataDir", sb.ipam_dir().display().to_string()),
        )
        .plugin(Plugin::tuning(
            json!({ "net.core.somaxconn": "512", "net.ipv4.conf.eth0.arp_notify": "1" }),
        ))
        .plugin(Plugin::portmap().set("snat", true))
        .plugin(Plugin::bandwidth(Some((8000000, 800000)), Some((4000000, 400000))))
        .text()
}

/// The engine as `src/runtime.rs` builds it for the CLI with its defaults and an empty
/// CNI_PATH: every stage in-process, locks and records in the sandbox's state dir,
/// rollback on, no cache fsync.
fn engine(sb: &Sandbox) -> Engine {
    let mut reg = Registry::new(Vec::new());
    cnichain_stages::register_all(&mut reg);
    let mut engine = Engine::new(reg, Cache::new(sb.cache_dir()));
    engine.locks = Some(Locks::new(&sb.dir.join("state")));
    engine.rollback = true;
    engine
}

/// What the test process holds.
#[derive(Debug, Clone, PartialEq)]
struct ProcFigures {
    /// Open descriptors by kind: "socket", "pipe", "anon_inode:[eventfd]", a path...
    fds: BTreeMap<String, usize>,
    threads: u64,
    /// Processes whose parent is this one (an `nft` not waited for stays a zombie).
    children: usize,
    rss_kib: u64,
    hwm_kib: u64,
}

impl ProcFigures {
    /// `now`, once short-lived workers are gone: the sample with the fewest threads over
    /// up to 2 s. A deferred link deletion or a child's pipe reader is a thread for a few
    /// milliseconds; a leaked one is in every sample.
    fn settled() -> ProcFigures {
        let mut best = ProcFigures::now();
        for _ in 0..40 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let p = ProcFigures::now();
            if p.threads < best.threads {
                best = p;
            }
        }
        best
    }

    fn now() -> ProcFigures {
        let mut fds = BTreeMap::new();
        for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            // socket:[123] / pipe:[456]: the kind only (a parked socket is replaced by a
            // newer one, same count); the read_dir's own descriptor is counted every time.
            let kind = match target.split_once(":[") {
                Some((k, _)) if !target.starts_with("anon_inode") => k.to_string(),
                _ => target,
            };
            *fds.entry(kind).or_insert(0) += 1;
        }
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        };
        let me = std::process::id().to_string();
        let children = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            .filter(|st| st.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) == Some(me.as_str()))
            .count();
        ProcFigures {
            fds,
            children,
            threads: field("Threads:"),
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    fn fd_count(&self) -> usize {
        self.fds.values().sum()
    }
}

/// Run a shell snippet in a sandbox netns; its stdout lines (trimmed, sorted, non-empty).
fn lines_in(sb: &Sandbox, ns: &str, script: &str) -> Vec<String> {
    let o = sb.sh_in(ns, script);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    let mut v: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Kernel objects and files of the sandbox, by category. Interface indices and the like
/// are left out where they would change from one cycle to the next for the same object.
fn objects(sb: &Sandbox, pods: &[String]) -> BTreeMap<&'static str, Vec<String>> {
    let host = sb.host();
    let mut m = BTreeMap::new();
    let names = |lines: Vec<String>| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    };
    m.insert("host links", names(lines_in(sb, &host, "ip -o link show")));
    // The bridge's IPv6 link-local address and its routes come and go on the kernel's
    // own timeline (addrconf, DAD), as in tests/load.rs; so does "linkdown" on the
    // bridge's routes (its carrier drops a moment after its last port goes).
    m.insert(
        "host addresses",
        lines_in(sb, &host, "ip -o addr show | grep -v fe80 | awk '{print $2, $3, $4}'"),
    );
    m.insert(
        "host routes",
        lines_in(
            sb,
            &host,
            "{ ip -4 route show table all; ip -6 route show table all | grep -v -e fe80 -e ff00::; } \
             | sed 's/ linkdown//'",
        ),
    );
    m.insert(
        "host qdiscs",
        lines_in(sb, &host, "tc qdisc show | sed 's/ refcnt [0-9]*//'"),
    );
    // The bridge's own multicast memberships (33:33:..., 01:00:5e:...) follow its
    // addresses (the link-local one above): left out.
    m.insert(
        "bridge fdb",
        lines_in(
            sb,
            &host,
            &format!("bridge fdb show br {BRIDGE} 2>/dev/null | grep -v -e '^33:33:' -e '^01:00:5e:' || true"),
        ),
    );
    // nft: every chain with its rule count, every set / map with its element count.
    let o = sb.sh_in(&host, "nft -j list ruleset");
    assert!(o.status.success(), "nft -j list ruleset: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nft -j output");
    let mut nft: BTreeMap<String, usize> = BTreeMap::new();
    for item in v["nftables"].as_array().cloned().unwrap_or_default() {
        if let Some(t) = item.get("table") {
            nft.insert(format!("table {} {}", t["family"], t["name"]), 0);
        }
        if let Some(c) = item.get("chain") {
            nft.entry(format!("chain {} {} rules", c["table"], c["name"]))
                .or_insert(0);
        }
        if let Some(r) = item.get("rule") {
            *nft.entry(format!("chain {} {} rules", r["table"], r["chain"]))
                .or_insert(0) += 1;
        }
        for kind in ["set", "map"] {
            if let Some(s) = item.get(kind) {
                let n = s["elem"].as_array().map_or(0, |a| a.len());
                nft.insert(format!("{kind} {} {} elements", s["table"], s["name"]), n);
            }
        }
    }
    m.insert("nft", nft.into_iter().map(|(k, n)| format!("{k}: {n}")).collect());
    m.insert(
        "pod links",
        pods.iter()
            .flat_map(|pod| names(lines_in(sb, &ns_name(pod), "ip -o link show")))
            .collect(),
    );
    for sub in ["state", "cache", "ipam"] {
        let key = match sub {
            "state" => "state files",
            "cache" => "cache files",
            _ => "ipam files",
        };
        m.insert(key, sb.files_in(sub));
    }
    m
}

fn counts(o: &BTreeMap<&'static str, Vec<String>>) -> String {
    o.iter()
        .map(|(k, v)| format!("{k} {}", v.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Report {
    cycles: usize,
    warmup_took: Duration,
    took: Duration,
    base: ProcFigures,
    end: ProcFigures,
    base_objects: BTreeMap<&'static str, Vec<String>>,
    end_objects: BTreeMap<&'static str, Vec<String>>,
    max_rss_kib: u64,
    /// VmRSS after the first half of the cycles.
    mid_rss_kib: u64,
}

/// Enter the sandbox's host netns on this thread; refuse to go on if that failed or if
/// this thread is still in the netns the test process was started in.
fn enter_host_netns(sb: &Sandbox) {
    let path = format!("/run/netns/{}", sb.host());
    let host = NetNs::open(&path).expect("open the sandbox host netns");
    let started_in = NetNs::current().expect("current netns");
    assert!(!started_in.same_as(&host).unwrap(), "the test already runs in {path}?");
    // SAFETY: setns on a descriptor we hold; it changes this thread's netns only.
    let rc = unsafe { libc::setns(host.fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    let here = NetNs::current().expect("current netns");
    assert!(here.same_as(&host).unwrap(), "this thread is not in {path}");
    assert!(!here.same_as(&started_in).unwrap(), "still in the machine's netns");
}

/// The cycles, in rounds of one ADD+DEL per pod on a thread of its own, started from the
/// calling thread (which must be in the sandbox host netns) and joined each round.
fn run_cycles(sb: &Sandbox, pods: &[String], rounds: usize) -> Report {
    enter_host_netns(sb);
    let engine = engine(sb);
    let list = NetConfList::from_bytes(conflist(sb).as_bytes()).expect("conflist");
    let rts: Vec<RuntimeConf> = pods
        .iter()
        .enumerate()
        .map(|(k, pod)| RuntimeConf {
            container_id: format!("{CONTAINER}-{k}"),
            netns: pod.to_string(),
            ifname: "eth0".into(),
            capability_args: serde_json::from_value(serde_json::json!({"portMappings": [
                {"hostPort": 8080 + k, "containerPort": 80, "protocol": "tcp"}]}))
            .expect("caps"),
            ..Default::default()
        })
        .collect();
    let cycle = |i: usize| {
        std::thread::scope(|s| {
            for rt in &rts {
                let (engine, list) = (&engine, &list);
                s.spawn(move || {
                    let res = engine.add(list, rt).unwrap_or_else(|e| panic!("round {i} ADD: {e}"));
                    let v = res.to_value();
                    assert!(
                        v["ips"][0]["address"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("10.239.")),
                        "round {i} ADD: no address in {v}"
                    );
                    engine.del(list, rt).unwrap_or_else(|e| panic!("round {i} DEL: {e}"));
                });
            }
        })
    };

    let started = Instant::now();
    for i in 0..WARMUP - 1 {
        cycle(i);
    }
    // The last warm-up round looks at the attachments in place.
    for rt in &rts {
        engine.add(&list, rt).expect("ADD before the baseline");
    }
    let attached = objects(sb, pods);
    for rt in &rts {
        engine.del(&list, rt).expect("DEL before the baseline");
    }
    let warmup_took = started.elapsed();
    let base_objects = objects(sb, pods);
    eprintln!("attached: {}", counts(&attached));
    for k in [
        "host links",
        "host qdiscs",
        "bridge fdb",
        "nft",
        "pod links",
        "cache files",
        "state files",
        "ipam files",
    ] {
        assert_ne!(attached[k], base_objects[k], "the attachment shows nowhere in {k}");
    }
    let base = ProcFigures::settled();
    eprintln!(
        "baseline after {WARMUP} warm-up rounds of {PODS} pods ({warmup_took:?}): fds {} {:?}, threads {}, \
         children {}, VmRSS {} KiB, VmHWM {} KiB; {}",
        base.fd_count(),
        base.fds,
        base.threads,
        base.children,
        base.rss_kib,
        base.hwm_kib,
        counts(&base_objects)
    );

    let every = (rounds / 10).max(1);
    let mut max_rss_kib = base.rss_kib;
    let mut mid_rss_kib = base.rss_kib;
    let started = Instant::now();
    for i in 0..rounds {
        cycle(WARMUP + i);
        let sample = (i + 1) % every == 0;
        if sample || i + 1 == rounds / 2 {
            let p = ProcFigures::now();
            max_rss_kib = max_rss_kib.max(p.rss_kib);
            if i + 1 == rounds / 2 {
                mid_rss_kib = p.rss_kib;
            }
            if !sample {
                continue;
            }
            eprintln!(
                "  after {:>5} cycles ({:>6.1} s): fds {}, threads {}, VmRSS {} KiB ({:+} KiB)",
                (i + 1) * pods.len(),
                started.elapsed().as_secs_f64(),
                p.fd_count(),
                p.threads,
                p.rss_kib,
                p.rss_kib as i64 - base.rss_kib as i64
            );
        }
    }
    let took = started.elapsed();
    let end = ProcFigures::settled();
    let end_objects = objects(sb, pods);
    Report {
        cycles: rounds * pods.len(),
        warmup_took,
        took,
        base,
        end,
        base_objects,
        end_objects,
        max_rss_kib,
        mid_rss_kib,
    }
}

#[test]
fn inprocess_add_del_cycles_do_not_grow_anything() {
    require_root("netns, veth, bridges");
    let cycles = load_cycles();
    let mut sb = Sandbox::new("inproc");
    let pods: Vec<String> = (0..PODS).map(|k| sb.pod(&format!("p{k}"))).collect();
    // The tuning stage keeps its records under $CNICHAIN_STATE_DIR/tuning: set before
    // any thread of this test starts (the only test in this binary).
    std::env::set_var("CNICHAIN_STATE_DIR", sb.dir.join("state"));

    let r = std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("cycles-in-host-netns".into())
            .spawn_scoped(s, || run_cycles(&sb, &pods, cycles.div_ceil(PODS)))
            .expect("start the cycle thread");
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    });

    let per_cycle_ms = r.took.as_secs_f64() * 1000.0 / r.cycles.max(1) as f64;
    let rss_growth = r.end.rss_kib as i64 - r.base.rss_kib as i64;
    let second_half = r.end.rss_kib as i64 - r.mid_rss_kib as i64;
    eprintln!(
        "end after {} cycles in {:?} ({per_cycle_ms:.2} ms per ADD+DEL; warm-up {:?}): \
         fds {} {:?}, threads {}, children {}, VmRSS {} KiB ({rss_growth:+} KiB; {second_half:+} KiB \
         over the second half; max seen {} KiB), VmHWM {} KiB; {}",
        r.cycles,
        r.took,
        r.warmup_took,
        r.end.fd_count(),
        r.end.fds,
        r.end.threads,
        r.end.children,
        r.end.rss_kib,
        r.max_rss_kib,
        r.end.hwm_kib,
        counts(&r.end_objects)
    );

    assert_eq!(r.end.fds, r.base.fds, "open descriptors (by kind) changed");
    assert_eq!(r.end.threads, r.base.threads, "thread count changed");
    assert_eq!(r.end.children, r.base.children, "child processes (zombies?) changed");
    for (k, before) in &r.base_objects {
        assert_eq!(&r.end_objects[k], before, "{k} changed");
    }
    assert_eq!(r.end_objects["pod links"], vec!["lo".to_string(); PODS], "pod links");
    assert!(
        leftover_files(&sb).is_empty(),
        "left after DEL: {:#?}",
        leftover_files(&sb)
    );
    assert!(
        rss_growth < RSS_BOUND_KIB,
        "VmRSS grew by {rss_growth} KiB over {} cycles (bound {RSS_BOUND_KIB} KiB)",
        r.cycles
    );
    assert!(
        second_half < RSS_SECOND_HALF_BOUND_KIB,
        "VmRSS grew by {second_half} KiB over the last {} cycles (bound {RSS_SECOND_HALF_BOUND_KIB} KiB)",
        r.cycles - r.cycles / 2
    );
}
