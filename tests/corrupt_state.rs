//! Corrupt state (issue 7): an empty, truncated or garbage result cache, tuning record or
//! host-local reservation, and stale lock files (left by a holder killed with SIGKILL).
//! DEL still removes everything of the attachment, ADD either proceeds safely or fails
//! with a clear CNI error, and nothing ever panics (exit status 101).

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NET: &str = "corruptnet";
const BRIDGE: &str = "cnco0";
const CID: &str = "corrupt1";

fn conflist() -> String {
    Conflist::new("1.1.0", NET)
        .plugin(Plugin::bridge(BRIDGE, "10.242.0.0/24").gateway("10.242.0.1"))
        .plugin(Plugin::tuning(json!({ "net.ipv4.conf.eth0.arp_notify": "1" })).set("mtu", 1400))
        .plugin(Plugin::bandwidth(None, Some((4000000, 400000))))
        .text()
}

fn run(sb: &Sandbox, verb: &str, netns: &str) -> Output {
    cli(sb, "", &["--container-id", CID, verb, NET, netns])
}

fn setup() -> (Sandbox, String) {
    let mut sb = Sandbox::new("corrupt");
    sb.write_conflist("c.conflist", &conflist());
    let pod = sb.pod("p");
    (sb, pod)
}

fn cache_file(sb: &Sandbox) -> PathBuf {
    sb.cache_dir().join(format!("results/{NET}-{CID}-eth0"))
}

fn tuning_record(sb: &Sandbox) -> PathBuf {
    sb.dir.join(format!("state/tuning/{CID}_eth0.json"))
}

fn store(sb: &Sandbox) -> PathBuf {
    sb.ipam_dir().join(NET)
}

/// What is left of the attachment (waits briefly for links the kernel removes late).
fn leftovers(sb: &Sandbox, pod: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut out = Vec::new();
        for (ns, keep) in [(sb.host(), vec!["lo", BRIDGE]), (ns_name(pod), vec!["lo"])] {
            let o = sb.sh_in(&ns, "ip -o link show");
            for line in stdout(&o).lines() {
                let name = line.split(':').nth(1).unwrap_or("").trim();
                let name = name.split('@').next().unwrap_or("");
                if !keep.contains(&name) {
                    out.push(format!("link {name} in {ns}"));
                }
            }
        }
        out.extend(leftover_files(sb));
        if out.is_empty() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn assert_clean(sb: &Sandbox, pod: &str, what: &str) {
    let l = leftovers(sb, pod);
    assert!(l.is_empty(), "{what}: left {l:#?}");
}

/// A damaged result cache never blocks DEL, which still removes everything; CHECK
/// reports it as a CNI error.
#[test]
fn damaged_cache_does_not_block_del() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    ok(&run(&sb, "add", &pod));
    let good = std::fs::read(cache_file(&sb)).expect("cache written");
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"\x00\xff\xfegarbage{{{".to_vec()),
        ("wrong kind", br#"{"kind":"other","result":{}}"#.to_vec()),
        (
            "bad result",
            br#"{"kind":"cniCacheV1","containerId":"corrupt1","ifName":"eth0","networkName":"corruptnet","result":{"cniVersion":"1.1.0","ips":[{"address":"nonsense"}]}}"#.to_vec(),
        ),
    ];
    for (i, (what, bytes)) in damages.into_iter().enumerate() {
        if i > 0 {
            ok(&run(&sb, "add", &pod));
        }
        std::fs::write(cache_file(&sb), &bytes).expect("damage cache");
        let c = run(&sb, "check", &pod);
        let e = cni_err(&c);
        assert!(!e["msg"].as_str().unwrap_or("").is_empty(), "{what}: CHECK {e}");
        ok(&run(&sb, "del", &pod));
        assert_clean(&sb, &pod, &format!("DEL with a {what} cache"));
        // DEL again: idempotent on clean state.
        ok(&run(&sb, "del", &pod));
    }
}

/// An ADD left a damaged cache entry and then the runtime retries ADD: it proceeds.
#[test]
fn add_over_a_damaged_cache_proceeds() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    std::fs::create_dir_all(sb.cache_dir().join("results")).expect("mkdir");
    std::fs::write(cache_file(&sb), b"{\"kind\":\"cniCa").expect("write");
    ok(&run(&sb, "add", &pod));
    ok(&run(&sb, "check", &pod));
    ok(&run(&sb, "del", &pod));
    assert_clean(&sb, &pod, "ADD over a damaged cache, then DEL");
}

/// An empty, truncated or garbage tuning record: DEL removes it and the rest; an ADD
/// that finds one (its earlier ADD was killed) replaces it.
#[test]
fn damaged_tuning_record() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    for what in ["empty", "truncated", "garbage"] {
        ok(&run(&sb, "add", &pod));
        let good = std::fs::read(tuning_record(&sb)).expect("tuning record written");
        let bad = match what {
            "empty" => Vec::new(),
            "truncated" => good[..good.len() / 2].to_vec(),
            _ => b"\x01\x02 not json".to_vec(),
        };
        std::fs::write(tuning_record(&sb), &bad).expect("damage record");
        ok(&run(&sb, "del", &pod));
        assert_clean(&sb, &pod, &format!("DEL with a {what} tuning record"));

        // A damaged record before ADD (and a temporary file of a killed writer).
        std::fs::create_dir_all(sb.dir.join("state/tuning")).expect("mkdir");
        std::fs::write(tuning_record(&sb), &bad).expect("write record");
        std::fs::write(sb.dir.join(format!("state/tuning/.{CID}_eth0.json.tmp")), b"{").expect("tmp");
        ok(&run(&sb, "add", &pod));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tuning_record(&sb)).expect("record")).expect("record is JSON again");
        assert_eq!(v["containerID"], CID, "{what}: {v}");
        ok(&run(&sb, "del", &pod));
        assert_clean(&sb, &pod, &format!("ADD over a {what} tuning record, then DEL"));
    }
}

/// host-local: an empty reservation (its writer was killed), a truncated one of this
/// attachment, garbage in last_reserved_ip: ADD proceeds without handing out a reserved
/// address, DEL releases everything.
#[test]
fn damaged_reservations() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    std::fs::create_dir_all(store(&sb)).expect("mkdir");
    // An empty reservation of the first address, garbage in last_reserved_ip.
    std::fs::write(store(&sb).join("10.242.0.2"), b"").expect("write");
    std::fs::write(store(&sb).join("last_reserved_ip.0"), b"\xff\xfe not an ip").expect("write");
    let out = ok(&run(&sb, "add", &pod));
    let v: serde_json::Value = serde_json::from_str(&out).expect("result");
    let ip = v["ips"][0]["address"].as_str().unwrap_or_default().to_string();
    assert_ne!(ip, "10.242.0.2/24", "an address with a reservation file was handed out");
    ok(&run(&sb, "del", &pod));
    assert_clean(&sb, &pod, "DEL with an empty reservation in the store");

    // Our own reservation cut after the container ID (the old format's content).
    let out = ok(&run(&sb, "add", &pod));
    let v: serde_json::Value = serde_json::from_str(&out).expect("result");
    let ip = v["ips"][0]["address"].as_str().unwrap_or_default();
    let ip = ip.split('/').next().unwrap_or_default().to_string();
    std::fs::write(store(&sb).join(&ip), CID.as_bytes()).expect("truncate reservation");
    ok(&run(&sb, "del", &pod));
    assert_clean(&sb, &pod, "DEL with a truncated reservation");

    // Garbage in a reservation of someone else is left alone (it is not ours to free).
    std::fs::write(store(&sb).join("10.242.0.9"), b"\x00\x01garbage").expect("write");
    ok(&run(&sb, "add", &pod));
    ok(&run(&sb, "del", &pod));
    assert!(
        store(&sb).join("10.242.0.9").exists(),
        "another owner's reservation was freed"
    );
    std::fs::remove_file(store(&sb).join("10.242.0.9")).expect("rm");
    assert_clean(&sb, &pod, "DEL next to a garbage reservation");
}

/// Lock files left behind by holders killed with SIGKILL (with odd contents) block
/// nobody: ADD and DEL finish promptly and DEL removes the attachment's lock file.
#[test]
fn stale_locks_block_nobody() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    let locks = sb.dir.join("state/locks");
    std::fs::create_dir_all(locks.join(NET)).expect("mkdir");
    let att = locks.join(format!("{NET}/{CID}:eth0.lock"));
    let gc = locks.join("gc.lock");
    for (f, content) in [(&att, &b"garbage"[..]), (&gc, &b"\x00"[..])] {
        std::fs::write(f, content).expect("write lock");
        // A holder that dies with the lock held: one process (sh exec'ing sleep) owns
        // the only descriptor of the locked file.
        let mut holder = Command::new("sh")
            .arg("-c")
            .arg("exec 9<>\"$0\" && flock -x 9 && exec sleep 60")
            .arg(f)
            .spawn()
            .expect("lock holder");
        std::thread::sleep(Duration::from_millis(200));
        let held = Command::new("flock")
            .args(["-n"])
            .arg(f)
            .arg("true")
            .status()
            .expect("flock -n");
        assert!(!held.success(), "the holder does not hold {}", f.display());
        let _ = holder.kill();
        let _ = holder.wait();
    }
    let t = Instant::now();
    ok(&run(&sb, "add", &pod));
    ok(&run(&sb, "del", &pod));
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(!att.exists(), "DEL keeps the attachment's lock file");
    assert_clean(&sb, &pod, "ADD/DEL over stale locks");
    // GC over the stale GC lock too.
    ok(&sb.cnichain("", &["gc", NET]));
}

/// The state directory is a file (unusable): ADD and DEL fail with a CNI error, no panic.
#[test]
fn unusable_state_dir_is_a_clear_error() {
    require_root("netns, veth, bridges");
    let (sb, pod) = setup();
    let _ = std::fs::remove_dir_all(sb.dir.join("state"));
    std::fs::write(sb.dir.join("state"), b"not a dir").expect("write");
    let e = cni_err(&run(&sb, "add", &pod));
    assert!(e["msg"].as_str().unwrap_or("").contains("state"), "{e}");
    let _ = cni_err(&run(&sb, "del", &pod));
    std::fs::remove_file(sb.dir.join("state")).expect("rm");
    std::fs::create_dir_all(sb.dir.join("state")).expect("mkdir");
    ok(&run(&sb, "del", &pod));
    assert_clean(&sb, &pod, "after the state dir is usable again");
}
