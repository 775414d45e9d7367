//! Many host ports in one pod (issue 12.2): SIP/RTP media servers, FTP passive ranges and
//! game servers map hundreds or thousands of ports. The runtime's request is driven the
//! way containerd sends it through libcni: cnichain exec'd as the `cnichain` meta-plugin,
//! the config (with `runtimeConfig.portMappings` injected, entries of
//! `{"hostPort","containerPort","protocol","hostIP"}` with hostIP "" or absent) on stdin.
//! Checked: the nftables state (`nft -j list table inet cnichain`), real TCP through a
//! mapped port over IPv4 and IPv6, CHECK, DEL leaving nothing, a second DEL, GC, the first
//! pod of a network (the table made through `nft`), and kill -9 during ADD then DEL.

mod common;

use cnichain_stages::kernel::netns::{run_in, NetNs};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `ports` host ports from `base`, each as tcp and udp (2 * ports entries); containerPort
/// = hostPort - 10000; hostIP alternately "" and absent, as runtimes send it.
fn mappings(base: u16, ports: u16) -> Value {
    let mut v = Vec::new();
    for i in 0..ports {
        let hp = base + i;
        for proto in ["tcp", "udp"] {
            let mut m = json!({"hostPort": hp, "containerPort": hp - 10000, "protocol": proto});
            if i % 2 == 0 {
                m["hostIP"] = json!("");
            }
            v.push(m);
        }
    }
    Value::Array(v)
}

/// The `cnichain` entry as libcni hands it to the binary: the inner chain (bridge with
/// host-local, dual-stack, and portmap) and the injected runtimeConfig.
fn entry(net: &str, br: &str, sub4: &str, sub6: &str, maps: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": net, "type": "cnichain",
        "capabilities": {"portMappings": true},
        "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": "@IPAM@",
                      "ranges": [[{"subnet": sub4}], [{"subnet": sub6}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ],
        "runtimeConfig": {"portMappings": maps}
    })
}

struct Net {
    name: String,
    br: String,
    sub4: String,
    sub6: String,
    gw4: String,
    gw6: String,
}

fn stdin_for(sb: &Sandbox, net: &Net, maps: &Value, extra: &[(&str, Value)]) -> String {
    let mut e = entry(&net.name, &net.br, &net.sub4, &net.sub6, maps);
    for (k, v) in extra {
        e[*k] = v.clone();
    }
    e.to_string().replace("@IPAM@", &sb.ipam_dir().display().to_string())
}

/// The meta-plugin started for `cmd` on pod `netns` with container id `cid`.
fn spawn(sb: &Sandbox, bin: &PathBuf, cmd: &str, cid: &str, netns: &str, stdin: &str) -> Child {
    let mut c = sb.in_host(bin);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn cnichain");
    let mut pipe = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    // The config may be larger than a pipe: write it on a thread.
    std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    child
}

fn call(sb: &Sandbox, cmd: &str, cid: &str, netns: &str, stdin: &str) -> Output {
    spawn(sb, &cnichain_bin(), cmd, cid, netns, stdin)
        .wait_with_output()
        .expect("wait for cnichain")
}

/// Every element of every set and map of `inet cnichain` in the sandbox host, as
/// (set name, comment), from `nft -j list table`; empty when the table does not exist.
fn elements(sb: &Sandbox) -> Vec<(String, String)> {
    let o = sb.sh_in(&sb.host(), "nft -j list table inet cnichain 2>/dev/null");
    if !o.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&o.stdout).expect("nft -j prints JSON");
    let mut out = Vec::new();
    for obj in v["nftables"].as_array().cloned().unwrap_or_default() {
        let Some(s) = obj.get("set").or(obj.get("map")) else {
            continue;
        };
        let name = s["name"].as_str().unwrap_or("").to_string();
        for e in s["elem"].as_array().cloned().unwrap_or_default() {
            // a set element: {"elem": {..., "comment"}} or a bare key; a map element:
            // [key, data] with the comment on the key
            let key = if e.is_array() { e[0].clone() } else { e.clone() };
            let comment = key["elem"]["comment"].as_str().unwrap_or("").to_string();
            out.push((name.clone(), comment));
        }
    }
    out
}

/// How many elements of `set` carry owner `id` (the first word of the comment).
fn owned(all: &[(String, String)], set: &str, id: &str) -> usize {
    all.iter()
        .filter(|(s, c)| s == set && c.split_whitespace().next() == Some(id))
        .count()
}

fn owned_anywhere(all: &[(String, String)], id: &str) -> usize {
    all.iter()
        .filter(|(_, c)| c.split_whitespace().next() == Some(id))
        .count()
}

fn pm_id(net: &str, cid: &str) -> String {
    cnichain_stages::portmap::rules::owner_id(net, cid, "eth0")
}

/// A TCP server in a netns answering "<tag>" to every connection, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn tcp_server(netns: &str, port: u16, tag: &str) -> Server {
    let ns = NetNs::open(netns).expect("open pod netns");
    let l = run_in(&ns, move || Ok(TcpListener::bind(("::", port))?)).expect("bind tcp server");
    l.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let (st, tag) = (stop.clone(), tag.to_string());
    let handle = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = writeln!(s, "{tag}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server {
        stop,
        handle: Some(handle),
    }
}

/// `busybox nc addr port` from the sandbox host: the first line ("" when nothing
/// answers after a few tries: neighbour discovery, DAD).
fn ask(sb: &Sandbox, addr: &str, port: u16) -> String {
    for _ in 0..5 {
        let o = sb.sh_in(&sb.host(), &format!("timeout 2 busybox nc {addr} {port} </dev/null"));
        let line = stdout(&o).lines().next().unwrap_or("").trim().to_string();
        if !line.is_empty() {
            return line;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    String::new()
}

fn gc(sb: &Sandbox, net: &Net, valid: &[&str]) -> Output {
    let list: Vec<Value> = valid
        .iter()
        .map(|c| json!({"containerID": c, "ifname": "eth0"}))
        .collect();
    let stdin = stdin_for(
        sb,
        net,
        &json!([]),
        &[
            ("cniVersion", json!("1.1.0")),
            ("cni.dev/valid-attachments", Value::Array(list)),
            ("runtimeConfig", json!({})),
        ],
    );
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_COMMAND", "GC")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn gc");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write gc config");
    child.wait_with_output().expect("gc")
}

fn net(sb: &Sandbox, br: &str, n: u8) -> Net {
    Net {
        name: format!("{}-n", sb.tag),
        br: br.to_string(),
        sub4: format!("10.{n}.0.0/24"),
        sub6: format!("fd{n}::/64"),
        gw4: format!("10.{n}.0.1"),
        gw6: format!("fd{n}::1"),
    }
}

/// ADD, then the nftables state, traffic through two of the ports (IPv4 and IPv6), CHECK,
/// DEL (nothing of the pod left), DEL again. `first`: no other pod made the table before.
fn lifecycle(ports: u16, first: bool, tag: &str, br: &str, n: u8) {
    require_root("netns, nftables");
    let mut sb = Sandbox::new(tag);
    let pod = sb.pod("big");
    let other = sb.pod("small");
    let net = net(&sb, br, n);
    let base = 20000u16;
    let maps = mappings(base, ports);
    let entries = 2 * usize::from(ports);
    if !first {
        // another pod made the table (through nft) and keeps one mapping throughout
        ok(&call(
            &sb,
            "ADD",
            "small",
            &other,
            &stdin_for(&sb, &net, &mappings(15000, 1), &[]),
        ));
    }
    let before = elements(&sb);
    let id = pm_id(&net.name, "big");
    let add_in = stdin_for(&sb, &net, &maps, &[]);
    let out = call(&sb, "ADD", "big", &pod, &add_in);
    let res: Value = serde_json::from_str(&ok(&out)).expect("ADD result");

    // Every entry is a DNAT for both families: the data maps hold one element per entry
    // and family, the snat sets one per entry for the pod subnet (and 127.0.0.1 on v4),
    // and the records one per DNAT plus the network record.
    let all = elements(&sb);
    for set in ["pm-port4-to", "pm-port4-port", "pm-port6-to", "pm-port6-port"] {
        assert_eq!(owned(&all, set, &id), entries, "{set}");
    }
    assert_eq!(owned(&all, "records", &id), 0, "records carry text, not the id");
    let recs =
        all.iter().filter(|(s, _)| s == "records").count() - before.iter().filter(|(s, _)| s == "records").count();
    assert_eq!(recs, 2 * entries + 1, "one record per DNAT and the network record");
    assert_eq!(
        owned_anywhere(&all, &id),
        4 * entries + 3 * entries,
        "maps and snat sets"
    );

    // real TCP from the host netns through the first and the last tcp host port
    let first_port = base;
    let last_port = base + ports - 1;
    let _s1 = tcp_server(&pod, first_port - 10000, "FIRST");
    let _s2 = tcp_server(&pod, last_port - 10000, "LAST");
    assert_eq!(
        ask(&sb, &net.gw4, first_port),
        "FIRST",
        "IPv4 through host port {first_port}"
    );
    assert_eq!(
        ask(&sb, &net.gw6, last_port),
        "LAST",
        "IPv6 through host port {last_port}"
    );

    // CHECK with the ADD's result as prevResult, as libcni sends it
    let check_in = stdin_for(&sb, &net, &maps, &[("prevResult", res.clone())]);
    ok(&call(&sb, "CHECK", "big", &pod, &check_in));

    // A second pod asking for the same host ports: every element message fails (EEXIST),
    // thousands of error answers, all read; the ADD is refused naming the ports, and none
    // of its elements is written.
    let twin = sb.pod("twin");
    let out = call(&sb, "ADD", "twin", &twin, &add_in);
    assert!(!out.status.success(), "the host ports are taken");
    let e = cni_err(&out);
    let msg = e["msg"].as_str().unwrap_or("");
    assert_eq!(e["code"], 11, "{msg}");
    assert!(
        msg.contains("host port already mapped to another container")
            && msg.contains(&format!("tcp port {first_port} (ipv4)")),
        "{msg}"
    );
    let twin_id = pm_id(&net.name, "twin");
    assert_eq!(
        owned_anywhere(&elements(&sb), &twin_id),
        0,
        "nothing of the refused ADD"
    );
    assert_eq!(
        owned_anywhere(&elements(&sb), &id),
        7 * entries,
        "the first pod's intact"
    );
    ok(&call(&sb, "DEL", "twin", &twin, &add_in));

    // DEL: none of the pod's elements or records left, the other pod's untouched
    let del_in = stdin_for(&sb, &net, &maps, &[("prevResult", res)]);
    ok(&call(&sb, "DEL", "big", &pod, &del_in));
    let after = elements(&sb);
    assert_eq!(owned_anywhere(&after, &id), 0, "DEL leaves nothing of the pod");
    assert_eq!(after, before, "exactly the state before the ADD");
    assert_eq!(ask(&sb, &net.gw4, first_port), "", "the host port no longer forwards");
    // a second DEL succeeds
    ok(&call(&sb, "DEL", "big", &pod, &del_in));
    if !first {
        ok(&call(
            &sb,
            "DEL",
            "small",
            &other,
            &stdin_for(&sb, &net, &mappings(15000, 1), &[]),
        ));
        assert!(elements(&sb).iter().all(|(s, _)| !s.starts_with("pm-port")));
    }
}

/// 1,000 entries (500 ports, tcp and udp), dual-stack, as the second pod of the network.
#[test]
fn one_thousand_mappings_dual_stack() {
    lifecycle(500, false, "pmk1", "pmkb1", 93);
}

/// 5,000 entries (2,500 ports, tcp and udp), dual-stack: 10,000 DNATs, 45,000 elements
/// and records in one transaction, far past the default socket buffer.
#[test]
fn five_thousand_mappings_dual_stack() {
    lifecycle(2500, false, "pmk5", "pmkb5", 94);
}

/// The first pod of a network makes the table through `nft`; with 1,000 entries its ADD,
/// and then its DEL, work.
#[test]
fn first_pod_of_a_network_with_one_thousand_mappings() {
    lifecycle(500, true, "pmkf", "pmkbf", 95);
}

/// GC with a valid set that leaves out the 5,000-entry pod removes all of its elements
/// and records, and only those.
#[test]
fn gc_removes_a_five_thousand_mapping_pod() {
    require_root("netns, nftables");
    let mut sb = Sandbox::new("pmkg");
    let pod = sb.pod("big");
    let other = sb.pod("small");
    let net = net(&sb, "pmkbg", 96);
    let small_in = stdin_for(&sb, &net, &mappings(15000, 1), &[]);
    ok(&call(&sb, "ADD", "small", &other, &small_in));
    let before = elements(&sb);
    let t = Instant::now();
    ok(&call(
        &sb,
        "ADD",
        "big",
        &pod,
        &stdin_for(&sb, &net, &mappings(20000, 2500), &[]),
    ));
    eprintln!("many: 5,000-entry ADD took {:?}", t.elapsed());
    let id = pm_id(&net.name, "big");
    assert_eq!(owned(&elements(&sb), "pm-port4-to", &id), 5000);
    let t = Instant::now();
    ok(&gc(&sb, &net, &["small"]));
    eprintln!("many: GC of it took {:?}", t.elapsed());
    let after = elements(&sb);
    assert_eq!(owned_anywhere(&after, &id), 0, "GC removed the pod's elements");
    assert_eq!(after, before, "and left the valid pod's");
    ok(&call(
        &sb,
        "DEL",
        "big",
        &pod,
        &stdin_for(&sb, &net, &mappings(20000, 2500), &[]),
    ));
    ok(&call(&sb, "DEL", "small", &other, &small_in));
}

/// kill -9 at random moments of a 5,000-entry ADD (release binary with
/// CNICHAIN_CRASH_BIN), then DEL: nothing of the pod is left, whether the kill came
/// before, during or after the element transaction.
#[test]
fn kill_9_during_a_five_thousand_mapping_add_then_del() {
    require_root("netns, nftables");
    let bin = std::env::var_os("CNICHAIN_CRASH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(cnichain_bin);
    let trials: u32 = std::env::var("CNICHAIN_MANY_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut sb = Sandbox::new("pmkk");
    let other = sb.pod("small");
    let net = net(&sb, "pmkbk", 97);
    let small_in = stdin_for(&sb, &net, &mappings(15000, 1), &[]);
    ok(&call(&sb, "ADD", "small", &other, &small_in));
    let before = elements(&sb);
    let maps = mappings(20000, 2500);
    let add_in = stdin_for(&sb, &net, &maps, &[]);

    // one whole ADD and DEL to measure the window
    let pod = sb.pod("p0");
    let t = Instant::now();
    let o = spawn(&sb, &bin, "ADD", "p0", &pod, &add_in)
        .wait_with_output()
        .expect("add");
    let window = t.elapsed();
    ok(&o);
    ok(&call(&sb, "DEL", "p0", &pod, &add_in));
    assert_eq!(elements(&sb), before);

    let (mut killed, mut mid) = (0, 0);
    for i in 1..=trials {
        let cid = format!("p{i}");
        let pod = sb.pod(&cid);
        let id = pm_id(&net.name, &cid);
        // spread over the ADD's duration (the first half of the trials in its second half,
        // where the element transaction runs)
        let frac = if i % 2 == 0 {
            0.5 + f64::from(i) / f64::from(trials * 2 + 2)
        } else {
            f64::from(i) / f64::from(trials + 1)
        };
        let delay = window.mul_f64(frac);
        let mut child = spawn(&sb, &bin, "ADD", &cid, &pod, &add_in);
        std::thread::sleep(delay);
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            killed += 1;
        }
        let _ = child.wait();
        let n = owned(&elements(&sb), "pm-port4-to", &id);
        assert!(n == 0 || n == 5000, "trial {i}: all or nothing, saw {n} of 5000");
        if n == 5000 {
            mid += 1;
        }
        ok(&call(&sb, "DEL", &cid, &pod, &add_in));
        let after = elements(&sb);
        assert_eq!(
            owned_anywhere(&after, &id),
            0,
            "trial {i} (kill after {delay:?}): leftovers"
        );
        assert_eq!(after, before, "trial {i}: the state before the ADD");
    }
    eprintln!(
        "many: {trials} trials, ADD took {window:?}, {killed} killed before the end, {mid} with the elements committed"
    );
    ok(&call(&sb, "DEL", "small", &other, &small_in));
}
