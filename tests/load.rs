//! Load (issue 7): 64 concurrent ADDs on one network (bridge + host-local, in-process),
//! then 64 concurrent DELs, repeated, with `cnichain gc NET` running concurrently: no
//! failed operation, no duplicate address, every attachment intact after its ADD (GC
//! must never take a valid one), nothing left after the DELs. And a "no growth" check:
//! many ADD/DEL cycles leave the same number of files and host links as before.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NET: &str = "loadnet";
const BRIDGE: &str = "cnld0";
const PODS: usize = 64;

fn conflist() -> String {
    Conflist::new("1.1.0", NET)
        .plugin(
            Plugin::bridge(BRIDGE, "10.241.0.0/16")
                .gateway("10.241.0.1")
                .default_route(),
        )
        .text()
}

/// Host links other than lo and the bridge.
fn host_links(sb: &Sandbox) -> Vec<String> {
    let o = sb.sh_in(&sb.host(), "ip -o link show");
    stdout(&o)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n != "lo" && n != BRIDGE)
        .collect()
}

/// State that must be gone once every attachment is DELeted.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    let mut out: Vec<String> = host_links(sb).into_iter().map(|l| format!("host link {l}")).collect();
    out.extend(leftover_files(sb));
    out
}

/// Run `f(i)` for every i in 0..n, each on its own thread, all started together.
fn concurrently<F>(n: usize, f: F) -> Vec<Output>
where
    F: Fn(usize) -> Output + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect()
}

/// `cnichain gc NET` `times` times, spaced out, on a thread; returns the outputs.
fn gc_in_background(sb: &Arc<Sandbox>, times: usize, every: Duration) -> std::thread::JoinHandle<Vec<Output>> {
    let sb = sb.clone();
    std::thread::spawn(move || {
        (0..times)
            .map(|_| {
                std::thread::sleep(every);
                cli(&sb, "", &["gc", NET])
            })
            .collect()
    })
}

#[test]
fn concurrent_adds_and_dels_with_gc() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("load");
    sb.write_conflist("load.conflist", &conflist());
    let pods: Vec<String> = (0..PODS).map(|i| sb.pod(&format!("p{i}"))).collect();
    let sb = Arc::new(sb);
    let pods = Arc::new(pods);
    let started = Instant::now();
    let mut seen_addresses = 0;
    for round in 0..3 {
        // ADD x64, GC three times meanwhile.
        let gc = gc_in_background(&sb, 3, Duration::from_millis(40));
        let (s2, p2) = (sb.clone(), pods.clone());
        let adds = concurrently(PODS, move |i| cli(&s2, "", &["add", NET, &p2[i]]));
        for o in gc.join().expect("gc thread") {
            ok(&o);
        }
        let mut addr_of: BTreeMap<String, usize> = BTreeMap::new();
        for (i, o) in adds.iter().enumerate() {
            let out = ok(o);
            let v: serde_json::Value = serde_json::from_str(&out).expect("ADD result JSON");
            let ip = v["ips"][0]["address"].as_str().unwrap_or_default().to_string();
            assert!(!ip.is_empty(), "round {round} pod {i}: no address in {out}");
            if let Some(j) = addr_of.insert(ip.clone(), i) {
                panic!("round {round}: {ip} given to pods {j} and {i}");
            }
        }
        seen_addresses += addr_of.len();
        // Every attachment is still whole after the concurrent GCs: its cache entry, its
        // reservation and its interface with its address.
        let cached = sb.files_in("cache").len();
        assert_eq!(cached, PODS, "round {round}: cache entries {:?}", sb.files_in("cache"));
        let reserved: BTreeSet<String> = sb
            .files_in("ipam")
            .into_iter()
            .filter_map(|f| f.rsplit('/').next().map(str::to_string))
            .filter(|b| b.parse::<std::net::IpAddr>().is_ok())
            .collect();
        let want: BTreeSet<String> = addr_of
            .keys()
            .map(|a| a.split('/').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(reserved, want, "round {round}: reservations differ from the results");
        assert_eq!(host_links(&sb).len(), PODS, "round {round}: host veths");
        for (ip, i) in &addr_of {
            let got = sh(&sb, &ns_name(&pods[*i]), "ip -o -4 addr show dev eth0");
            assert!(got.contains(ip.as_str()), "round {round} pod {i}: {ip} missing: {got}");
        }

        // DEL x64, GC three times meanwhile.
        let gc = gc_in_background(&sb, 3, Duration::from_millis(40));
        let (s2, p2) = (sb.clone(), pods.clone());
        let dels = concurrently(PODS, move |i| cli(&s2, "", &["del", NET, &p2[i]]));
        for o in gc.join().expect("gc thread") {
            ok(&o);
        }
        for o in &dels {
            ok(o);
        }
        let left = leftovers(&sb);
        assert!(left.is_empty(), "round {round}: left after DEL: {left:#?}");
        for p in pods.iter() {
            let links = sh(&sb, &ns_name(p), "ip -o link show | wc -l");
            assert_eq!(links, "1", "round {round}: {p} still has links");
        }
    }
    eprintln!(
        "load: 3 rounds of {PODS} concurrent ADDs and DELs with 6 concurrent GCs each: \
         {seen_addresses} addresses handed out, no duplicate, nothing left, in {:?}",
        started.elapsed()
    );
}

fn count_files(sb: &Sandbox) -> (usize, usize, usize) {
    (
        sb.files_in("state").len(),
        sb.files_in("cache").len(),
        sb.files_in("ipam").len(),
    )
}

#[test]
fn add_del_cycles_do_not_grow_anything() {
    require_root("netns, veth, bridges");
    let cycles = load_cycles();
    let mut sb = Sandbox::new("cycles");
    sb.write_conflist("load.conflist", &conflist());
    let pod = sb.pod("p");
    // One cycle first: the bridge, the store's lock and last_reserved_ip, locks/gc.lock.
    ok(&cli(&sb, "", &["add", NET, &pod]));
    ok(&cli(&sb, "", &["del", NET, &pod]));
    let files_before = count_files(&sb);
    let links_before = sh(&sb, &sb.host(), "ip -o link show | wc -l");
    let addrs_before = sh(&sb, &sb.host(), "ip -o addr show | grep -v fe80 | wc -l");
    // The bridge's IPv6 link-local address and multicast route appear on the kernel's own
    // timeline (addrconf, DAD), not because of anything an ADD or DEL did.
    // So does "linkdown" on the bridge's routes (its carrier drops a moment after its
    // last port goes).
    let routes =
        "{ ip -4 route show table all; ip -6 route show table all | grep -v -e fe80 -e ff00::; } | sed 's/ linkdown//'";
    let routes_before = sh(&sb, &sb.host(), routes);
    let started = Instant::now();
    for i in 0..cycles {
        let a = cli(&sb, "", &["add", NET, &pod]);
        assert!(a.status.success(), "cycle {i} ADD: {} {}", stdout(&a), stderr(&a));
        let d = cli(&sb, "", &["del", NET, &pod]);
        assert!(d.status.success(), "cycle {i} DEL: {} {}", stdout(&d), stderr(&d));
    }
    let took = started.elapsed();
    assert_eq!(count_files(&sb), files_before, "state/cache/ipam file counts grew");
    assert_eq!(
        sh(&sb, &sb.host(), "ip -o link show | wc -l"),
        links_before,
        "host links"
    );
    assert_eq!(
        sh(&sb, &sb.host(), "ip -o addr show | grep -v fe80 | wc -l"),
        addrs_before,
        "host addresses"
    );
    assert_eq!(sh(&sb, &sb.host(), routes), routes_before, "host routes");
    assert_eq!(sh(&sb, &ns_name(&pod), "ip -o link show | wc -l"), "1", "pod links");
    assert!(leftovers(&sb).is_empty(), "{:#?}", leftovers(&sb));
    eprintln!("cycles: {cycles} ADD/DEL cycles in {took:?}, file and kernel object counts unchanged");
}
