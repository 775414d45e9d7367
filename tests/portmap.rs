//! The in-process portmap stage and ipMasq on real namespaces, with real traffic. Each
//! test has its own Sandbox: a throwaway "host" netns (everything nft does happens
//! there), pod netns, and temp state dirs. The main plugin is the reference bridge +
//! host-local, forced through the exec fallback (`--exec bridge,host-local`) so these
//! tests do not depend on the in-process bridge.
//!
//! Servers are sockets bound inside the pod netns by this process (TCP and UDP, replying
//! "<tag> <peer address>"); TCP clients are `busybox nc` run in another netns, UDP
//! clients are sockets made in that netns.

mod common;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::stage::{Command, Invocation, Registry, Stage};
use cnichain_stages::kernel::netns::{run_in, NetNs};
use cnichain_stages::kernel::nft::expr::{Family, Proto};
use cnichain_stages::kernel::nft::layout;
use cnichain_stages::kernel::nft::{self, Batch};
use cnichain_stages::portmap;
use cnichain_stages::portmap::config::{Mapping, PortmapConf};
use cnichain_stages::portmap::rules;
use cnichain_stages::shared::ipmasq;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How these tests run `nft`: as the binary would, from this process's environment.
fn test_nft() -> nft::Nft {
    nft::Nft::new(&cnichain_engine::settings::Settings::from_process_env())
}
use std::thread::JoinHandle;
use std::time::Duration;

const EXEC: &str = "bridge,host-local";

fn ns_path(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_string()
    } else {
        format!("/run/netns/{ns}")
    }
}

fn ns_name(ns: &str) -> String {
    ns.trim_start_matches("/run/netns/").to_string()
}

/// Run `f` on a thread inside netns `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    let n = NetNs::open(&ns_path(ns))?;
    run_in(&n, f)
}

/// A TCP or UDP server bound inside a netns, answering "<tag> <peer ip>" until dropped.
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

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn tcp_server(ns: &str, port: u16, tag: &str) -> Server {
    let l = in_ns(ns, move || Ok(TcpListener::bind(("::", port))?)).expect("bind tcp server");
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (st, tag) = (stop.clone(), tag.to_string());
    let handle = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = writeln!(s, "{tag} {}", canonical(peer.ip()));
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

fn udp_server(ns: &str, port: u16, tag: &str) -> Server {
    let s = in_ns(ns, move || Ok(UdpSocket::bind(("::", port))?)).expect("bind udp server");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (st, tag) = (stop.clone(), tag.to_string());
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !st.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(format!("{tag} {}", canonical(peer.ip())).as_bytes(), peer);
            }
        }
    });
    Server {
        stop,
        handle: Some(handle),
    }
}

/// `busybox nc addr port` from netns `ns`; the first line, or "" (a few tries: ARP, DAD).
fn tcp_ask(sb: &Sandbox, ns: &str, addr: &str, port: u16) -> String {
    tcp_try(sb, ns, addr, port, 3)
}

/// One try, for what must not answer.
fn tcp_once(sb: &Sandbox, ns: &str, addr: &str, port: u16) -> String {
    tcp_try(sb, ns, addr, port, 1)
}

fn tcp_try(sb: &Sandbox, ns: &str, addr: &str, port: u16, tries: usize) -> String {
    for i in 0..tries {
        let o = sb.sh_in(&ns_name(ns), &format!("timeout 2 busybox nc {addr} {port} </dev/null"));
        let line = stdout(&o).lines().next().unwrap_or("").trim().to_string();
        if !line.is_empty() || i + 1 == tries {
            return line;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    String::new()
}

/// One UDP question from netns `ns` (source port `src`, 0 for any); the answer or "".
fn udp_ask(ns: &str, to: SocketAddr, src: u16, tries: usize) -> String {
    let any: IpAddr = if to.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let s = in_ns(ns, move || Ok(UdpSocket::bind((any, src))?)).expect("bind udp client");
    s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    for _ in 0..tries {
        let _ = s.send_to(b"ping", to);
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).trim().to_string();
        }
    }
    String::new()
}

fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), port)
}

/// A bridge (exec'd reference) + portmap conflist. `v6` adds a second range; `pm` is
/// extra portmap keys.
fn conflist(net: &str, br: &str, sub4: &str, v6: Option<&str>, masq: bool, pm: &str) -> String {
    let v6 = v6.map(|s| format!(r#",[{{"subnet":"{s}"}}]"#)).unwrap_or_default();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
  {{"type":"bridge","bridge":"{br}","isGateway":true,"ipMasq":{masq},"hairpinMode":true,
    "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"{sub4}"}}]{v6}],
             "routes":[{{"dst":"0.0.0.0/0"}}]}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}{pm}}}]}}"#
    )
}

fn run(sb: &Sandbox, verb: &str, net: &str, pod: &str, caps: Option<&Value>) -> std::process::Output {
    let caps_s = caps.map(|c| c.to_string());
    let mut args = vec!["--exec", EXEC];
    if let Some(c) = caps_s.as_deref() {
        args.extend(["--cap-args", c]);
    }
    args.extend([verb, net, pod]);
    sb.cnichain(REF_PLUGINS, &args)
}

/// ADD and return (result, first v4 address, first v6 address).
fn add(sb: &Sandbox, net: &str, pod: &str, caps: Option<&Value>) -> (Value, String, Option<String>) {
    let out = run(sb, "add", net, pod, caps);
    let res: Value = serde_json::from_str(&ok(&out)).expect("result JSON");
    let addrs: Vec<String> = res["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str())
                .map(|s| s.split('/').next().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let v4 = addrs
        .iter()
        .find(|a| a.contains('.'))
        .cloned()
        .expect("an IPv4 address");
    let v6 = addrs.iter().find(|a| a.contains(':')).cloned();
    (res, v4, v6)
}

fn maps(entries: &[(u16, u16, &str, Option<&str>)]) -> Value {
    let list: Vec<Value> = entries
        .iter()
        .map(|(h, c, p, ip)| {
            let mut m = json!({"hostPort": h, "containerPort": c, "protocol": p});
            if let Some(ip) = ip {
                m["hostIP"] = json!(ip);
            }
            m
        })
        .collect();
    json!({ "portMappings": list })
}

/// `nft list table inet cnichain` in the sandbox host ("" when there is none).
fn table_text(sb: &Sandbox) -> String {
    stdout(&sb.sh_in(&sb.host(), "nft list table inet cnichain 2>/dev/null"))
}

/// The elements of one map or set, as JSON values (via the nft layer's single-object
/// listing; none when it does not exist).
fn map_elems(sb: &Sandbox, name: &str) -> Vec<Value> {
    let name = name.to_string();
    let v = in_ns(&sb.host(), move || {
        Ok(nft::list(&test_nft(), nft::Listing::Map(&name))
            .or_else(|_| nft::list(&test_nft(), nft::Listing::Set(&name)))?)
    });
    v.ok()
        .and_then(|v| {
            v["nftables"].as_array().and_then(|a| {
                a.iter()
                    .find_map(|o| o["map"]["elem"].as_array().or(o["set"]["elem"].as_array()).cloned())
            })
        })
        .unwrap_or_default()
}

/// All elements of every map and set of the table whose name starts with `prefix`.
fn elems_with(sb: &Sandbox, prefix: &str) -> usize {
    let text = table_text(sb);
    names_of(&text)
        .iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| map_elems(sb, n).len())
        .sum()
}

/// The names of the table's sets and maps.
fn names_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("set ").or(l.trim().strip_prefix("map ")))
        .map(|l| l.trim_end_matches(" {").to_string())
        .collect()
}

/// The table's chains.
fn chains_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .map(|l| l.trim_end_matches(" {").to_string())
        .collect()
}

/// The owner ids of the records (one per DNAT or masqueraded address), without each
/// attachment's network record (`net <hash>`, record 0, which GC reads).
fn record_owners(sb: &Sandbox) -> Vec<String> {
    let all = map_elems(sb, layout::SET_RECORDS);
    let network_records = all
        .iter()
        .filter(|e| e["elem"]["comment"].as_str().is_some_and(|c| c.starts_with("net ")))
        .count();
    let owners: BTreeSet<&str> = all
        .iter()
        .filter_map(|e| e["elem"]["val"]["concat"][0].as_str())
        .collect();
    assert_eq!(network_records, owners.len(), "one network record per attachment");
    all.iter()
        .filter(|e| !e["elem"]["comment"].as_str().is_some_and(|c| c.starts_with("net ")))
        .filter_map(|e| e["elem"]["val"]["concat"][0].as_str().map(String::from))
        .collect()
}

fn host_sh(sb: &Sandbox, script: &str) -> String {
    let o = sb.sh_in(&sb.host(), script);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn tcp_and_udp_from_host_pod_hairpin_and_localhost_then_del() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pm4");
    let a = sb.pod("a");
    let b = sb.pod("b");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmb0", "10.61.0.0/24", None, true, ""));
    // another local address of the host, to reach the host port from the host itself
    host_sh(&sb, "ip addr add 198.51.100.7/32 dev lo");

    let caps = maps(&[(8080, 80, "tcp", None), (5353, 53, "UDP", None)]);
    let (_, ip_a, _) = add(&sb, &net, &a, Some(&caps));
    let (_, ip_b, _) = add(&sb, &net, &b, None);
    let gw = "10.61.0.1";
    let _t = tcp_server(&a, 80, "A");
    let _u = udp_server(&a, 53, "A");
    let host = sb.host();

    // from the host netns, to the bridge address and to another local address
    assert_eq!(tcp_ask(&sb, &host, gw, 8080), format!("A {gw}"));
    assert!(tcp_ask(&sb, &host, "198.51.100.7", 8080).starts_with("A "));
    assert!(udp_ask(&host, sa(gw, 5353), 0, 3).starts_with("A "));
    // localhost: route_localnet on the bridge, masqueraded to the bridge address
    assert_eq!(tcp_ask(&sb, &host, "127.0.0.1", 8080), format!("A {gw}"));
    assert_eq!(
        host_sh(&sb, "cat /proc/sys/net/ipv4/conf/pmb0/route_localnet").trim(),
        "1"
    );
    // from another pod on the bridge (masqueraded, else the answer would bypass the host)
    assert_eq!(tcp_ask(&sb, &b, gw, 8080), format!("A {gw}"));
    assert!(udp_ask(&b, sa(gw, 5353), 0, 3).starts_with("A "));
    // hairpin: the pod reaches itself through the host port
    assert_eq!(tcp_ask(&sb, &a, gw, 8080), format!("A {gw}"));
    assert!(udp_ask(&a, sa(gw, 5353), 0, 3).starts_with("A "));
    // the pod's own port still answers directly, with the real peer
    assert_eq!(tcp_ask(&sb, &b, &ip_a, 80), format!("A {ip_b}"));

    ok(&run(&sb, "check", &net, &a, Some(&caps)));
    let text = table_text(&sb);
    assert_eq!(record_owners(&sb).len(), 2, "{text}");
    assert_eq!(map_elems(&sb, layout::MAP_PORT4_TO).len(), 2, "{text}");
    assert!(text.contains("tcp . 8080") && text.contains(&ip_a), "{text}");
    // hairpin (the subnet) and localhost, for both mappings
    assert_eq!(map_elems(&sb, "pm-snat4-b13").len(), 4, "{text}");

    ok(&run(&sb, "del", &net, &a, Some(&caps)));
    assert_eq!(tcp_once(&sb, &host, gw, 8080), "", "port closed after DEL");
    assert_eq!(udp_ask(&host, sa(gw, 5353), 0, 1), "");
    let text = table_text(&sb);
    assert!(record_owners(&sb).is_empty(), "{text}");
    assert_eq!(elems_with(&sb, "pm-"), 0, "{text}");
    assert!(
        !text.contains(&ip_a) && !text.contains("8080") && !text.contains("5353"),
        "{text}"
    );
    ok(&run(&sb, "del", &net, &a, Some(&caps)));
    ok(&run(&sb, "del", &net, &b, None));
}

#[test]
fn ipv6_pod_through_v6_host_port_and_host_ip_families() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pm6");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &conflist(&net, "pmb6", "10.62.0.0/24", Some("fd62::/64"), true, ""),
    );
    let caps = maps(&[
        (8080, 80, "tcp", None),
        (5353, 53, "udp", None),
        (8081, 80, "tcp", Some("fd62::1")),
        (8082, 80, "tcp", Some("10.62.0.1")),
        (8083, 80, "tcp", Some("::")),
    ]);
    let (_, _, ip6) = add(&sb, &net, &a, Some(&caps));
    let ip6 = ip6.expect("an IPv6 address");
    let _t = tcp_server(&a, 80, "A");
    let _u = udp_server(&a, 53, "A");
    let host = sb.host();

    assert!(tcp_ask(&sb, &host, "fd62::1", 8080).starts_with("A "), "tcp over IPv6");
    assert!(
        udp_ask(&host, sa("fd62::1", 5353), 0, 5).starts_with("A "),
        "udp over IPv6"
    );
    assert!(tcp_ask(&sb, &host, "10.62.0.1", 8080).starts_with("A "), "and IPv4");
    // hostIP of the v6 family only on v6, the v4 one only on v4; "::" is every v6 address
    assert!(tcp_ask(&sb, &host, "fd62::1", 8081).starts_with("A "));
    assert_eq!(tcp_once(&sb, &host, "10.62.0.1", 8081), "");
    assert!(tcp_ask(&sb, &host, "10.62.0.1", 8082).starts_with("A "));
    assert_eq!(tcp_once(&sb, &host, "fd62::1", 8082), "");
    assert!(tcp_ask(&sb, &host, "fd62::1", 8083).starts_with("A "));
    assert_eq!(tcp_once(&sb, &host, "10.62.0.1", 8083), "");
    // v6 hairpin
    assert!(tcp_ask(&sb, &a, "fd62::1", 8080).starts_with("A "));
    assert_eq!(map_elems(&sb, layout::MAP_IP6_TO).len(), 1);
    assert_eq!(map_elems(&sb, layout::MAP_IP4_TO).len(), 1);
    ok(&run(&sb, "check", &net, &a, Some(&caps)));

    ok(&run(&sb, "del", &net, &a, None));
    assert_eq!(tcp_once(&sb, &host, "fd62::1", 8080), "");
    let text = table_text(&sb);
    assert!(record_owners(&sb).is_empty() && !text.contains(&ip6), "{text}");
    assert_eq!(elems_with(&sb, "pm-"), 0, "{text}");
}

/// CVE-2025-67499: nothing is DNATed unless it is addressed to the host itself, also for
/// hostIP mappings; and a hostIP mapping answers only on that address.
#[test]
fn host_ip_mappings_and_non_local_destinations() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmcve");
    let a = sb.pod("a");
    let b = sb.pod("b");
    let x = sb.pod("x"); // "outside": a routed neighbour of the host
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbc", "10.63.0.0/24", None, false, ""));
    let xn = ns_name(&x);
    host_sh(
        &sb,
        &format!(
            "ip link add vout type veth peer name eth0 netns {xn} && ip addr add 203.0.113.1/24 dev vout && \
             ip link set vout up && sysctl -qw net.ipv4.ip_forward=1"
        ),
    );
    let o = sb.sh_in(
        &xn,
        "ip addr add 203.0.113.2/24 dev eth0 && ip link set eth0 up && ip route add default via 203.0.113.1",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let caps = maps(&[(8080, 80, "tcp", None), (9090, 80, "tcp", Some("203.0.113.1"))]);
    add(&sb, &net, &a, Some(&caps));
    let (_, ip_b, _) = add(&sb, &net, &b, None);
    let _a80 = tcp_server(&a, 80, "A");
    let _x8080 = tcp_server(&x, 8080, "X");
    let _x9090 = tcp_server(&x, 9090, "X");

    // pod B talks to the outside host on the mapped ports: not hijacked
    assert_eq!(tcp_ask(&sb, &b, "203.0.113.2", 8080), format!("X {ip_b}"));
    assert_eq!(tcp_ask(&sb, &b, "203.0.113.2", 9090), format!("X {ip_b}"));
    // the outside reaches the pod through the host's addresses, not masqueraded (snat
    // covers the pod's own subnet and localhost only)
    assert_eq!(tcp_ask(&sb, &x, "203.0.113.1", 9090), "A 203.0.113.2");
    assert_eq!(tcp_ask(&sb, &x, "203.0.113.1", 8080), "A 203.0.113.2");
    // a pod of the subnet through the hostIP mapping: masqueraded to the bridge address
    assert_eq!(tcp_ask(&sb, &b, "203.0.113.1", 9090), "A 10.63.0.1");
    // the hostIP mapping answers on its address only
    assert_eq!(tcp_once(&sb, &sb.host(), "10.63.0.1", 9090), "");
    assert!(tcp_ask(&sb, &sb.host(), "203.0.113.1", 9090).starts_with("A "));

    // masqAll (another network): every source is masqueraded
    let net2 = format!("{}-all", sb.tag);
    let c = sb.pod("c");
    sb.write_conflist(
        "20.conflist",
        &conflist(&net2, "pmbc2", "10.73.0.0/24", None, false, r#","masqAll":true"#),
    );
    let caps_c = maps(&[(7070, 80, "tcp", None)]);
    add(&sb, &net2, &c, Some(&caps_c));
    let _c80 = tcp_server(&c, 80, "C");
    assert_eq!(tcp_ask(&sb, &x, "203.0.113.1", 7070), "C 10.73.0.1");
    ok(&run(&sb, "check", &net2, &c, Some(&caps_c)));
    ok(&run(&sb, "del", &net2, &c, None));
    // and pod A's mappings are untouched by C's DEL
    assert_eq!(tcp_ask(&sb, &x, "203.0.113.1", 8080), "A 203.0.113.2");
    ok(&run(&sb, "del", &net, &a, None));
    ok(&run(&sb, "del", &net, &b, None));
    assert!(record_owners(&sb).is_empty());
}

#[test]
fn del_without_port_mappings_removes_everything_and_repeats() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmdel");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &conflist(&net, "pmbd", "10.64.0.0/24", Some("fd64::/64"), true, ""),
    );
    let caps = maps(&[
        (8080, 80, "tcp", None),
        (53, 53, "udp", Some("10.64.0.1")),
        (8443, 443, "sctp", None),
    ]);
    let (_, ip4, ip6) = add(&sb, &net, &a, Some(&caps));
    let text = table_text(&sb);
    assert_eq!(record_owners(&sb).len(), 5, "{text}");
    assert_eq!(
        map_elems(&sb, layout::MAP_PORT4_TO).len() + map_elems(&sb, layout::MAP_PORT6_TO).len(),
        4,
        "8080 and 8443, both families"
    );

    // no capability args on DEL (and no cache: the netns may be gone too)
    let _ = std::fs::remove_dir_all(sb.cache_dir());
    let _ = std::fs::create_dir_all(sb.cache_dir());
    ok(&run(&sb, "del", &net, &a, None));
    let text = table_text(&sb);
    assert!(record_owners(&sb).is_empty(), "{text}");
    assert!(
        !text.contains(&ip4) && !text.contains(ip6.as_deref().unwrap_or("-")),
        "{text}"
    );
    for m in names_of(&text) {
        assert!(map_elems(&sb, &m).is_empty(), "{m}: {text}");
    }
    ok(&run(&sb, "del", &net, &a, None));
    ok(&run(&sb, "del", &net, &a, Some(&caps)));
}

#[test]
fn second_pod_on_a_taken_host_port_fails_and_the_first_keeps_working() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmdup");
    let a = sb.pod("a");
    let b = sb.pod("b");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbx", "10.65.0.0/24", None, true, ""));
    add(&sb, &net, &a, Some(&maps(&[(8080, 80, "tcp", None)])));
    let _t = tcp_server(&a, 80, "A");
    let before = table_text(&sb);

    let caps_b = maps(&[(9000, 90, "tcp", None), (8080, 80, "tcp", None)]);
    let e = cni_err(&run(&sb, "add", &net, &b, Some(&caps_b)));
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap_or("");
    assert!(msg.contains("tcp port 8080") && msg.contains("already mapped"), "{msg}");
    // nothing of B was written (9000 included: one transaction)
    let after = table_text(&sb);
    assert_eq!(after, before);
    assert!(!after.contains("9000"), "{after}");
    assert!(tcp_ask(&sb, &sb.host(), "10.65.0.1", 8080).starts_with("A "));
    // the runtime DELs the failed attachment: A is untouched
    ok(&run(&sb, "del", &net, &b, Some(&caps_b)));
    assert!(tcp_ask(&sb, &sb.host(), "10.65.0.1", 8080).starts_with("A "));
    assert_eq!(map_elems(&sb, layout::MAP_PORT4_TO).len(), 1);
    assert_eq!(record_owners(&sb).len(), 1);
    ok(&run(&sb, "del", &net, &a, None));
}

#[test]
fn injection_attempts_are_code_7_and_write_nothing() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pminj");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbi", "10.66.0.0/24", None, false, ""));
    let cases = [
        (
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp; flush ruleset"}),
            "[1].protocol",
        ),
        (
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4 drop"}),
            "[1].hostIP",
        ),
        (
            json!({"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}),
            "[1].hostPort",
        ),
        (
            json!({"hostPort": 8080, "containerPort": 0, "protocol": "tcp"}),
            "[1].containerPort",
        ),
    ];
    // the reference's text for the condition it checks itself, through the chain
    let caps = json!({"portMappings": [{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]});
    let e = cni_err(&run(&sb, "add", &net, &a, Some(&caps)));
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or("")
            .ends_with("failed to parse config: Invalid host port number: 0"),
        "{e}"
    );
    for (bad, field) in cases {
        let caps = json!({"portMappings": [{"hostPort": 1234, "containerPort": 80, "protocol": "tcp"}, bad]});
        let e = cni_err(&run(&sb, "add", &net, &a, Some(&caps)));
        assert_eq!(e["code"], 7, "{e}");
        // the path is in msg, or in details where msg is the reference's own text
        let text = format!(
            "{} {}",
            e["msg"].as_str().unwrap_or(""),
            e["details"].as_str().unwrap_or("")
        );
        assert!(text.contains(&format!("runtimeConfig.portMappings{field}")), "{e}");
        assert_eq!(table_text(&sb), "", "nothing written for {bad}");
        ok(&run(&sb, "del", &net, &a, Some(&caps)));
    }
    // refused keys: code 2 naming the key
    for (extra, key) in [
        (r#","conditionsV4":["!","-d","192.0.2.0/24"]"#, "conditionsV4"),
        (r#","externalSetMarkChain":"KUBE-MARK-MASQ""#, "externalSetMarkChain"),
    ] {
        sb.write_conflist(
            "10.conflist",
            &conflist(&net, "pmbi", "10.66.0.0/24", None, false, extra),
        );
        let e = cni_err(&run(&sb, "add", &net, &a, Some(&maps(&[(8080, 80, "tcp", None)]))));
        assert_eq!(e["code"], 2, "{e}");
        assert!(e["msg"].as_str().unwrap_or("").contains(key), "{e}");
        assert_eq!(table_text(&sb), "");
        ok(&run(&sb, "del", &net, &a, None));
    }
}

#[test]
fn no_mappings_touches_nothing_and_a_lone_portmap_needs_prev_result() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmnone");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbn", "10.67.0.0/24", None, false, ""));
    let (res, _, _) = add(&sb, &net, &a, None);
    assert_eq!(res["interfaces"][0]["name"], "pmbn", "prevResult passed through");
    assert_eq!(table_text(&sb), "", "no nft work without mappings");
    ok(&run(&sb, "check", &net, &a, None));
    ok(&run(&sb, "del", &net, &a, None));

    let lone = format!("{net}-lone");
    sb.write_conflist(
        "20.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{lone}","plugins":[{{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#),
    );
    let e = cni_err(&run(&sb, "add", &lone, &a, Some(&maps(&[(8080, 80, "tcp", None)]))));
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or("")
            .contains("must be called as chained plugin"),
        "{e}"
    );
    assert_eq!(table_text(&sb), "");
}

/// A UDP conntrack entry made before the mapping existed would keep the client's packets
/// away from the pod; ADD deletes it, and only the entries of its own UDP host ports
/// (filtered in the kernel: by port for one port, by protocol for several).
#[test]
fn udp_conntrack_entries_of_a_new_host_port_are_flushed() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmct");
    let a = sb.pod("a");
    let b = sb.pod("b");
    let c = sb.pod("c");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbt", "10.68.0.0/24", None, true, ""));
    // a first pod with a mapping makes the table (and conntrack) live in the host netns
    add(&sb, &net, &b, Some(&maps(&[(7000, 70, "tcp", None)])));
    let host = sb.host();
    let count = |port: u16| {
        let h = host.clone();
        in_ns(&h, move || Ok(nft::conntrack::count_udp_by_dport(Family::V4, port)?)).unwrap()
    };
    // clients ask host ports nobody serves yet, from fixed source ports
    for (port, src) in [(5353, 40000), (5354, 40001), (5355, 40002), (5357, 40003)] {
        assert_eq!(udp_ask(&host, sa("10.68.0.1", port), src, 1), "");
        assert!(count(port) >= 1, "a stale conntrack entry for {port} exists");
    }
    // the kernel filters the dump (CTA_FILTER): for one port it sends that port's entry
    // only, for several the UDP entries only (not the TCP ones of the host's own nc)
    let sent = |ports: Vec<u16>| {
        let h = host.clone();
        in_ns(&h, move || Ok(nft::conntrack::dumped_for(Family::V4, &ports)?)).unwrap()
    };
    assert_eq!(sent(vec![5357]), count(5357), "filtered by port in the kernel");
    let _ = tcp_once(&sb, &host, "10.68.0.1", 7001);
    let all_udp = sent(vec![1, 2]);
    assert!(all_udp >= 4, "the four UDP entries");
    assert!(
        all_udp
            < in_ns(&host, || Ok(std::fs::read_to_string(
                "/proc/sys/net/netfilter/nf_conntrack_count"
            )?))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap(),
        "not the TCP entry"
    );

    // one UDP port: 5353's entry goes, the others stay
    add(
        &sb,
        &net,
        &a,
        Some(&maps(&[(5353, 53, "udp", None), (5354, 54, "tcp", None)])),
    );
    assert_eq!(count(5353), 0, "the mapped UDP port's entry is flushed");
    assert!(count(5354) >= 1, "a TCP mapping's port keeps its UDP entry");
    assert!(count(5355) >= 1 && count(5357) >= 1, "other ports keep theirs");
    let _u = udp_server(&a, 53, "A");
    // the same client socket tuple now reaches the pod
    assert!(udp_ask(&host, sa("10.68.0.1", 5353), 40000, 3).starts_with("A "));

    // several UDP ports: 5355's entry goes, 5357 (not mapped) and 5354 stay
    add(
        &sb,
        &net,
        &c,
        Some(&maps(&[(5355, 55, "udp", None), (5356, 56, "udp", None)])),
    );
    assert_eq!(count(5355), 0, "a mapped UDP port's entry is flushed");
    assert!(count(5357) >= 1 && count(5354) >= 1, "the others survive");
    ok(&run(&sb, "del", &net, &c, None));
    ok(&run(&sb, "del", &net, &a, None));
    ok(&run(&sb, "del", &net, &b, None));
}

/// The stage called directly (no main plugin): a fabricated prevResult in the sandbox host.
fn call(
    sb: &Sandbox,
    cmd: Command,
    conf: Value,
    prev: Option<Value>,
    cid: &str,
) -> Result<Option<CniResult>, CniError> {
    let cid = cid.to_string();
    in_ns(&sb.host(), move || {
        let config = conf.as_object().cloned().unwrap_or_default();
        let prev = prev.map(|p| CniResult::from_value(&p, "1.0.0")).transpose()?;
        let rt = RuntimeConf {
            container_id: cid,
            netns: "/run/netns/none".into(),
            ifname: "eth0".into(),
            ..Default::default()
        };
        let reg = Registry::new(Vec::new());
        let inv = Invocation {
            command: cmd,
            config: &config,
            prev_result: prev.as_ref(),
            rt: &rt,
            version: "1.0.0",
            cni_path: &[],
            registry: &reg,
        };
        let st = portmap::Portmap;
        Ok(match cmd {
            Command::Add => st.add(&inv).map(Some),
            Command::Del => st.del(&inv).map(|_| None),
            _ => st.check(&inv).map(|_| None),
        })
    })
    .expect("netns")
}

fn pm_conf(net: &str, caps: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": net, "type": "portmap"});
    if let Some(caps) = caps {
        c["runtimeConfig"] = caps;
    }
    c
}

fn prev_for(ip: &str) -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "br"}, {"name": "veth"}, {"name": "eth0", "sandbox": "/run/netns/none"}],
        "ips": [{"interface": 2, "address": format!("{ip}/24")}]})
}

/// 300 other attachments' elements and records exist (made directly, in the same layout,
/// with snat); one more pod comes and goes with the same single transaction, touching none
/// of them, and the table keeps its fixed set of chains. (Timing belongs to the benchmark,
/// bench/portmap-scale; this only checks that it works and leaves the others alone.)
#[test]
fn add_and_del_among_300_mapped_pods() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pm300");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbm", "10.69.0.0/24", None, true, ""));
    let empty_chains = in_ns(&sb.host(), || {
        let mut b = Batch::new();
        layout::declare_base(&mut b);
        Ok(nft::apply(&test_nft(), &b)?)
    })
    .map(|_| chains_of(&table_text(&sb)))
    .expect("declare the table");
    in_ns(&sb.host(), || {
        let mut b = Batch::new();
        let mut have_rules = false;
        for i in 0..300u16 {
            let conf = PortmapConf {
                network: "fake".into(),
                snat: true,
                masq_all: false,
                mark_bit: 13,
                mappings: vec![Mapping {
                    host_port: 20000 + i,
                    container_port: 80,
                    proto: Proto::Tcp,
                    host_ip: None,
                }],
            };
            let pod = format!("10.200.{}.{}/16", i / 250, i % 250 + 1).parse()?;
            let plan = rules::plan(&conf, format!("pfake{i:010}"), Some(pod), None);
            if !have_rules {
                for r in plan.rules() {
                    for set in r.sets {
                        b.add(set);
                    }
                    b.add(r.rule);
                }
                have_rules = true;
            }
            plan.write(&mut b, &format!("fake/eth0/c{i}"))?;
        }
        Ok(nft::apply(&test_nft(), &b)?)
    })
    .expect("pre-create 300 pods");
    let fake = |sb: &Sandbox| record_owners(sb).iter().filter(|o| o.starts_with("pfake")).count();
    assert_eq!(fake(&sb), 300);
    assert_eq!(map_elems(&sb, "pm-snat4-b13").len(), 600, "subnet and localhost each");

    let caps = maps(&[(8080, 80, "tcp", None)]);
    add(&sb, &net, &a, Some(&caps));
    let _t = tcp_server(&a, 80, "A");
    assert!(tcp_ask(&sb, &sb.host(), "10.69.0.1", 8080).starts_with("A "));
    assert_eq!(map_elems(&sb, layout::MAP_PORT4_TO).len(), 301);
    assert_eq!(chains_of(&table_text(&sb)), empty_chains, "no chain per pod");
    ok(&run(&sb, "del", &net, &a, None));
    assert_eq!(tcp_once(&sb, &sb.host(), "10.69.0.1", 8080), "");
    assert_eq!(map_elems(&sb, layout::MAP_PORT4_TO).len(), 300);
    assert_eq!(map_elems(&sb, "pm-snat4-b13").len(), 600);
    assert_eq!(fake(&sb), 300);

    // a port one of them holds is reported, naming the holder
    let e = call(
        &sb,
        Command::Add,
        pm_conf(&net, Some(maps(&[(31005, 80, "tcp", None), (20007, 80, "tcp", None)]))),
        Some(prev_for("10.69.0.50")),
        "c1",
    )
    .unwrap_err();
    assert_eq!(e.code, 11);
    assert!(
        e.msg.contains("tcp port 20007") && e.msg.contains("fake/eth0/c7"),
        "{}",
        e.msg
    );
    assert!(!table_text(&sb).contains("31005"), "nothing of c1 written");
    // re-ADD of one attachment replaces its mappings
    let c = |p: u16| pm_conf(&net, Some(maps(&[(p, 80, "tcp", None)])));
    call(&sb, Command::Add, c(31000), Some(prev_for("10.69.0.51")), "c2").unwrap();
    call(&sb, Command::Add, c(31001), Some(prev_for("10.69.0.51")), "c2").unwrap();
    let text = table_text(&sb);
    assert!(!text.contains("31000") && text.contains("31001"), "{text}");
    call(&sb, Command::Check, c(31001), Some(prev_for("10.69.0.51")), "c2").unwrap();
    // CHECK notices another address, and a missing element
    assert!(call(&sb, Command::Check, c(31001), Some(prev_for("10.69.0.52")), "c2").is_err());
    host_sh(&sb, "nft delete element inet cnichain pm-port4-to '{ tcp . 31001 }'");
    let e = call(&sb, Command::Check, c(31001), Some(prev_for("10.69.0.51")), "c2").unwrap_err();
    assert!(e.msg.contains("31001"), "{}", e.msg);
    call(&sb, Command::Del, pm_conf(&net, None), None, "c2").unwrap();
    call(&sb, Command::Del, pm_conf(&net, None), None, "c2").unwrap();
    assert!(!table_text(&sb).contains("31001"));

    // DEL removes only elements that still carry the attachment's id
    call(&sb, Command::Add, c(31002), Some(prev_for("10.69.0.53")), "c3").unwrap();
    host_sh(
        &sb,
        "nft delete element inet cnichain pm-port4-port '{ tcp . 31002 }' && \
         nft add element inet cnichain pm-port4-port '{ tcp . 31002 comment \"pother0000000000 someone/else\" : 80 }'",
    );
    call(&sb, Command::Del, pm_conf(&net, None), None, "c3").unwrap();
    let left = map_elems(&sb, layout::MAP_PORT4_PORT);
    assert_eq!(left.len(), 301, "the other owner's element stays");
    assert!(table_text(&sb).contains("pother0000000000"));
    assert_eq!(map_elems(&sb, layout::MAP_PORT4_TO).len(), 300);
    assert_eq!(fake(&sb), 300);
    assert_eq!(record_owners(&sb).len(), 300);
}

/// ipMasq: masquerades a pod's traffic leaving its subnet; teardown finds its own
/// elements without being told the addresses; a re-used address is taken over and the
/// old holder's teardown leaves it alone.
#[test]
fn ipmasq_setup_check_teardown() {
    require_root("netns, nftables, conntrack");
    let mut sb = Sandbox::new("pmmq");
    let a = sb.pod("a");
    let x = sb.pod("x");
    let net = format!("{}-n", sb.tag);
    // bridge without its own ipMasq: ours does the masquerading
    sb.write_conflist(
        "10.conflist",
        &conflist(&net, "pmbq", "10.70.0.0/24", Some("fd70::/64"), false, ""),
    );
    let xn = ns_name(&x);
    host_sh(
        &sb,
        &format!(
            "ip link add vout type veth peer name eth0 netns {xn} && ip addr add 203.0.113.1/24 dev vout && \
             ip link set vout up && sysctl -qw net.ipv4.ip_forward=1"
        ),
    );
    assert!(sb
        .sh_in(&xn, "ip addr add 203.0.113.2/24 dev eth0 && ip link set eth0 up")
        .status
        .success());
    let (_, ip4, ip6) = add(&sb, &net, &a, None);
    let ip6 = ip6.expect("v6");
    let _x = tcp_server(&x, 80, "X");
    let ips: Vec<cnichain_engine::spec::ipnet::IpNet> = vec![
        format!("{ip4}/24").parse().unwrap(),
        format!("{ip6}/64").parse().unwrap(),
    ];

    // without masquerade the outside host has no route back to the pod
    assert_eq!(tcp_once(&sb, &a, "203.0.113.2", 80), "");
    let (n, i2) = (net.clone(), ips.clone());
    in_ns(&sb.host(), move || ipmasq::setup(&test_nft(), &n, "cid-a", "eth0", &i2)).unwrap();
    assert_eq!(
        tcp_ask(&sb, &a, "203.0.113.2", 80),
        "X 203.0.113.1",
        "masqueraded to the host address"
    );
    let (n, i2) = (net.clone(), ips.clone());
    in_ns(&sb.host(), move || ipmasq::check(&n, "cid-a", "eth0", &i2)).unwrap();
    assert_eq!(map_elems(&sb, layout::SET_MQ_SRC4).len(), 1);
    assert_eq!(map_elems(&sb, layout::SET_MQ_SRC6).len(), 1);
    assert_eq!(map_elems(&sb, layout::SET_MQ_OWN4).len(), 1);
    assert_eq!(record_owners(&sb).len(), 2);
    // setting up again is idempotent
    let (n, i2) = (net.clone(), ips.clone());
    in_ns(&sb.host(), move || ipmasq::setup(&test_nft(), &n, "cid-a", "eth0", &i2)).unwrap();

    // teardown without addresses
    let n = net.clone();
    in_ns(&sb.host(), move || {
        ipmasq::teardown(&test_nft(), &n, "cid-a", "eth0", &[])
    })
    .unwrap();
    assert_eq!(tcp_once(&sb, &a, "203.0.113.2", 80), "");
    let text = table_text(&sb);
    assert!(
        record_owners(&sb).is_empty() && !text.contains(&ip4) && !text.contains(&ip6),
        "{text}"
    );
    assert_eq!(elems_with(&sb, "mq-"), 0, "{text}");
    let n = net.clone();
    in_ns(&sb.host(), move || {
        ipmasq::teardown(&test_nft(), &n, "cid-a", "eth0", &[])
    })
    .unwrap();
    let (n, i2) = (net.clone(), ips.clone());
    assert!(in_ns(&sb.host(), move || ipmasq::check(&n, "cid-a", "eth0", &i2)).is_err());

    // an address handed out again: the new holder takes the element over
    let (n, i2) = (net.clone(), ips.clone());
    in_ns(&sb.host(), move || {
        ipmasq::setup(&test_nft(), &n, "old", "eth0", &i2)?;
        ipmasq::setup(&test_nft(), &n, "new", "eth0", &i2)?;
        ipmasq::teardown(&test_nft(), &n, "old", "eth0", &i2)?;
        ipmasq::check(&n, "new", "eth0", &i2)
    })
    .unwrap();
    assert_eq!(tcp_ask(&sb, &a, "203.0.113.2", 80), "X 203.0.113.1");
    let n = net.clone();
    in_ns(&sb.host(), move || {
        ipmasq::teardown(&test_nft(), &n, "new", "eth0", &[])
    })
    .unwrap();
    assert_eq!(elems_with(&sb, "mq-"), 0);
    assert!(record_owners(&sb).is_empty());
    ok(&run(&sb, "del", &net, &a, None));
}

/// (key, data, comment) of each element of a map or set as `nft -j list` shows it.
fn elems_listed(sb: &Sandbox, name: &str) -> Vec<(Value, Value, String)> {
    map_elems(sb, name)
        .into_iter()
        .map(|e| {
            // a map element is [ {"elem": {"val": key, "comment": …}}, data ]; a set
            // element with a comment is {"elem": {…}}
            let (k, data) = match e.as_array() {
                Some(pair) => (pair.first().cloned().unwrap_or_default(), pair.get(1).cloned()),
                None => (e, None),
            };
            let comment = k["elem"]["comment"].as_str().unwrap_or("").to_string();
            (k["elem"]["val"].clone(), data.unwrap_or_default(), comment)
        })
        .collect()
}

/// The common case writes its elements over nfnetlink (one batch, no nft process): after
/// in-process ADDs (the first one declares the table and the rules through nft, the
/// second and third only add elements), nft lists every element with its data and with
/// the comment that names its owner, ownership checks (CHECK, the holder named in a
/// conflict, DEL) keep working, and a conflicting batch writes nothing.
#[test]
fn elements_written_over_nfnetlink_carry_their_comments() {
    require_root("netns, nftables, conntrack");
    let sb = Sandbox::new("pmnl");
    let net = format!("{}-n", sb.tag);
    let conf = |hp: u16, cp: u16| pm_conf(&net, Some(maps(&[(hp, cp, "tcp", None)])));
    let first = call(
        &sb,
        Command::Add,
        conf(8080, 80),
        Some(prev_for("10.71.0.2")),
        "cid-one",
    );
    assert!(first.is_ok(), "{first:?}");
    let rules_before = chains_of(&table_text(&sb));
    let second = call(
        &sb,
        Command::Add,
        conf(9090, 90),
        Some(prev_for("10.71.0.3")),
        "cid-two",
    );
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(chains_of(&table_text(&sb)), rules_before);

    for (cid, ip, hp, cp) in [
        ("cid-one", "10.71.0.2", 8080u16, 80u16),
        ("cid-two", "10.71.0.3", 9090, 90),
    ] {
        let id = rules::owner_id(&net, cid, "eth0");
        let want = format!("{id} {}", layout::hint(&net, cid, "eth0"));
        let to: Vec<_> = elems_listed(&sb, layout::MAP_PORT4_TO)
            .into_iter()
            .filter(|e| e.0 == json!({"concat": ["tcp", hp]}))
            .collect();
        assert_eq!(to.len(), 1, "{cid}: {to:?}");
        assert_eq!((to[0].1.clone(), to[0].2.as_str()), (json!(ip), want.as_str()), "{cid}");
        let port: Vec<_> = elems_listed(&sb, layout::MAP_PORT4_PORT)
            .into_iter()
            .filter(|e| e.0 == json!({"concat": ["tcp", hp]}))
            .collect();
        assert_eq!(port.len(), 1, "{cid}: {port:?}");
        assert_eq!(
            (port[0].1.clone(), port[0].2.as_str()),
            (json!(cp), want.as_str()),
            "{cid}"
        );
        // hairpin (the /24) and localhost, both with the owner's comment
        let snat: Vec<_> = elems_listed(&sb, "pm-snat4-b13")
            .into_iter()
            .filter(|e| e.0["concat"][3] == json!(hp))
            .collect();
        assert_eq!(snat.len(), 2, "{cid}: {snat:?}");
        assert!(snat.iter().all(|e| e.2 == want), "{cid}: {snat:?}");
        assert!(
            snat.iter()
                .any(|e| e.0["concat"][0] == json!("10.71.0.0") && e.0["concat"][1] == json!("10.71.0.255")),
            "{cid}: {snat:?}"
        );
        // the records: "<id>" . 0 naming the network, "<id>" . 1 with the mapping
        let mut recs: Vec<_> = elems_listed(&sb, layout::SET_RECORDS)
            .into_iter()
            .filter(|e| e.0["concat"][0] == json!(id))
            .collect();
        recs.sort_by_key(|e| e.0["concat"][1].as_u64());
        assert_eq!(recs.len(), 2, "{cid}: {recs:?}");
        assert_eq!(recs[0].0["concat"][1], json!(0));
        assert!(recs[0].2.starts_with("net "), "{cid}: {recs:?}");
        assert_eq!(recs[1].0["concat"][1], json!(1));
        assert_eq!(recs[1].2, format!("port4 tcp {hp} {ip}/24 {cp} hairpin 13"));
        let c = call(&sb, Command::Check, conf(hp, cp), Some(prev_for(ip)), cid);
        assert!(c.is_ok(), "{cid}: {c:?}");
    }

    // a host port held by another attachment: the whole batch fails (9091 not written)
    // and the error names the holder
    let caps = maps(&[(9091, 91, "tcp", None), (8080, 81, "tcp", None)]);
    let before = table_text(&sb);
    let e = call(
        &sb,
        Command::Add,
        pm_conf(&net, Some(caps)),
        Some(prev_for("10.71.0.4")),
        "cid-three",
    )
    .err()
    .expect("8080 is taken");
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        e.msg.contains("tcp port 8080") && e.msg.contains("cid-one"),
        "{}",
        e.msg
    );
    assert_eq!(table_text(&sb), before);

    // ipMasq: the second setup (its rule exists) is an element batch as well
    let ips: Vec<cnichain_engine::spec::ipnet::IpNet> = vec!["10.71.0.2/24".parse().unwrap()];
    let n = net.clone();
    in_ns(&sb.host(), move || {
        ipmasq::setup(&test_nft(), &n, "cid-one", "eth0", &ips)?;
        ipmasq::setup(&test_nft(), &n, "cid-one", "eth0", &ips)?;
        ipmasq::check(&n, "cid-one", "eth0", &ips)
    })
    .unwrap();
    let mid = ipmasq::owner_id(&net, "cid-one", "eth0");
    let hint = layout::hint(&net, "cid-one", "eth0");
    let src = elems_listed(&sb, layout::SET_MQ_SRC4);
    assert_eq!(src.len(), 1);
    assert_eq!(
        (src[0].0.clone(), src[0].2.clone()),
        (json!("10.71.0.2"), format!("{mid} 10.71.0.2/24 {hint}"))
    );
    let own = elems_listed(&sb, layout::SET_MQ_OWN4);
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].2, format!("{mid} {hint}"));

    // element batches on their own: all or nothing, errors by kind
    let r = in_ns(&sb.host(), || {
        let e = layout::Elem::new(
            layout::MAP_PORT4_PORT,
            vec![layout::Field::Proto(Proto::Udp), layout::Field::Port(7)],
        );
        let taken = layout::Elem::new(
            layout::MAP_PORT4_PORT,
            vec![layout::Field::Proto(Proto::Tcp), layout::Field::Port(8080)],
        );
        let mut b = Batch::new();
        b.create_elem(&e, Some(&layout::Field::Port(7)), "x1 test");
        b.create_elem(&taken, Some(&layout::Field::Port(1)), "x1 test");
        let exists = nft::apply(&test_nft(), &b).err().map(|e| (e.kind, e.msg));
        let mut b = Batch::new();
        b.delete_elem(&e);
        let missing = nft::apply(&test_nft(), &b).err().map(|e| e.kind);
        let mut b = Batch::new();
        b.create_elem(
            &layout::Elem::new("no-such-set", vec![layout::Field::Port(1)]),
            None,
            "x",
        );
        let no_set = nft::apply(&test_nft(), &b).err().map(|e| e.kind);
        Ok((exists, missing, no_set))
    })
    .unwrap();
    let (exists, missing, no_set) = r;
    let (kind, msg) = exists.expect("EEXIST");
    assert_eq!(kind, nft::NftErrorKind::Exists);
    assert!(msg.contains("tcp . 8080") && msg.contains("pm-port4-port"), "{msg}");
    assert_eq!(missing, Some(nft::NftErrorKind::NotFound), "udp . 7 was not written");
    assert_eq!(no_set, Some(nft::NftErrorKind::NotFound));

    for cid in ["cid-one", "cid-two", "cid-three"] {
        let d = call(&sb, Command::Del, pm_conf(&net, None), None, cid);
        assert!(d.is_ok(), "{cid}: {d:?}");
    }
    let n = net.clone();
    in_ns(&sb.host(), move || {
        ipmasq::teardown(&test_nft(), &n, "cid-one", "eth0", &[])
    })
    .unwrap();
    assert_eq!(
        elems_with(&sb, "pm-") + elems_with(&sb, "mq-"),
        0,
        "{}",
        table_text(&sb)
    );
    assert!(record_owners(&sb).is_empty());
}

/// An `nft` run that hangs (here a stand-in that never answers, with a child of its own
/// holding the pipes) is killed with its whole process group after CNICHAIN_NFT_TIMEOUT
/// seconds and reaped; ADD fails with an error that says so.
#[test]
fn a_hanging_nft_is_killed_and_reaped() {
    require_root("netns, nftables");
    let mut sb = Sandbox::new("pmto");
    let a = sb.pod("a");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10.conflist", &conflist(&net, "pmbto", "10.69.0.0/24", None, false, ""));
    let pidfile = sb.dir.join("sleeper.pid");
    let fake = sb.dir.join("nft");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n", pidfile.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let caps = maps(&[(8080, 80, "tcp", None)]).to_string();
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", REF_PLUGINS)
        .env("CNICHAIN_NFT", &fake)
        .env("CNICHAIN_NFT_TIMEOUT", "1")
        .args(["--exec", EXEC, "--cap-args", &caps, "add", &net, &a]);
    let out = c.output().expect("run cnichain");
    assert!(!out.status.success());
    let e = cni_err(&out);
    let msg = e["msg"].as_str().unwrap_or("");
    assert!(msg.contains("nft did not finish within 1 s and was killed"), "{e}");
    // the stand-in's child was killed with it (its process group), not left behind
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the nft stand-in's child {pid} is still running");
    // nothing was written; DEL succeeds
    assert_eq!(table_text(&sb), "");
    let mut d = sb.in_host(&cnichain_bin());
    d.env("CNI_PATH", REF_PLUGINS).args(["--exec", EXEC, "del", &net, &a]);
    ok(&d.output().expect("del"));
}
