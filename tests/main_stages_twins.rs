//! Differential tests of the bridge, ptp and loopback drop-ins against the reference
//! binaries, one plugin call at a time (tests/common/twin.rs): sysctls of dotted
//! interface names, the bridge's MAC as pods come and go, dns absent vs empty, results at
//! every spec version with and without prevResult, error texts.

mod common;
use common::twin::{self, json_out, normalize_veth_names, Twin};
use common::*;
use serde_json::{json, Value};

fn root() {
    require_root("network namespaces");
}

/// A shell loop printing `<link> <leaf>=<value>` for every per-interface entry of `proto`
/// (not all/default/lo), host veth names normalized.
fn conf_dump(proto: &str, leaf: &str) -> String {
    format!(
        "for d in /proc/sys/net/{proto}/conf/*/{leaf}; do i=${{d%/{leaf}}}; i=${{i##*/}}; case $i in all|default|lo) continue;; esac; echo \"$i {leaf}=$(cat $d)\"; done | sed -E 's/^veth[0-9a-f]{{8}}/<hostveth>/' | sort"
    )
}

/// The sysctls ADD sets, read under /proc/sys in the netns they belong to.
fn sysctls(t: &Twin, pod: &str, ifname: &str) -> Vec<String> {
    let mut out: Vec<String> = t
        .host_out(&conf_dump("ipv6", "accept_ra"))
        .lines()
        .map(|l| format!("host {l}"))
        .collect();
    for k in [
        format!("ipv6/conf/{ifname}/disable_ipv6"),
        format!("ipv6/conf/{ifname}/accept_dad"),
        format!("ipv4/conf/{ifname}/arp_notify"),
        "ipv6/conf/lo/disable_ipv6".to_string(),
    ] {
        out.push(format!("pod {k}={}", t.pod_out(pod, &format!("cat /proc/sys/net/{k}"))));
    }
    out
}

/// C: a bridge `br.77` and a pod interface `net1.100` (VLAN-style names) get every
/// per-interface sysctl ADD sets, in the right netns, exactly as the reference sets them:
/// accept_ra=0 on the bridge and the host veth, IPv6 enabled on the dotted pod link.
#[test]
fn dotted_names_get_their_sysctls_like_the_reference() {
    root();
    for typ in ["bridge", "ptp"] {
        let mut seen = Vec::new();
        for mut t in Twin::pair("dot") {
            let pod = t.sb.pod("p");
            // New links start with accept_ra=1 and, in the pod, IPv6 off: ADD must change both.
            t.host_out("echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra");
            t.pod_out(&pod, "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
            let conf = json!({"cniVersion":"1.0.0","name":"dot","type":typ,"bridge":"br.77","isGateway":true,
                "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.77.0.0/24"}],[{"subnet":"fd00:77::/64"}]]}});
            let o = t.call(typ, "ADD", &pod, "net1.100", "c1", &conf);
            let res = json_out(&o, t.label());
            assert!(o.status.success(), "{typ} {}: {res}", t.label());
            let s = sysctls(&t, &pod, "net1.100");
            if !t.reference {
                let want_host: &[&str] = if typ == "bridge" {
                    &["host <hostveth> accept_ra=0", "host br.77 accept_ra=0"]
                } else {
                    &["host <hostveth> accept_ra=0"]
                };
                for w in want_host {
                    assert!(s.contains(&w.to_string()), "{typ}: {w} missing in {s:?}");
                }
                assert!(
                    s.contains(&"pod ipv6/conf/net1.100/disable_ipv6=0".to_string()),
                    "{typ}: {s:?}"
                );
            }
            ok(&t.call(typ, "DEL", &pod, "net1.100", "c1", &conf));
            seen.push(s);
        }
        assert_eq!(
            seen[1], seen[0],
            "{typ}: cnichain's sysctls differ from the reference's"
        );
    }
}

/// `unshare -m` with /proc/sys read-only for the plugin alone: writing a sysctl fails
/// with EROFS, reading works.
const RO_PROC_SYS: &[&str] = &[
    "unshare",
    "-m",
    "--",
    "sh",
    "-c",
    "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$0\"",
];

/// C: accept_ra=0 on the bridge or the host veth that cannot be written fails the ADD
/// and leaves no veth; a value already 0 needs no write. The reference ignores the
/// failure and leaves accept_ra=1 (README: differences).
#[test]
fn an_accept_ra_that_cannot_be_set_fails_the_add() {
    root();
    let conf = json!({"cniVersion":"1.0.0","name":"ra","type":"bridge","bridge":"br.78",
        "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.78.0.0/24"}]]}});
    for t in Twin::pair("ra") {
        let mut t = t;
        let pod = t.sb.pod("p");
        t.host_out("echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra");
        // 1. A new bridge (accept_ra=1) on a read-only /proc/sys.
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        if t.reference {
            assert!(o.status.success(), "the reference ignores it: {}", stdout(&o));
            assert_eq!(t.host_out("cat /proc/sys/net/ipv6/conf/br.78/accept_ra"), "1");
            ok(&t.call("bridge", "DEL", &pod, "eth0", "c1", &conf));
            continue;
        }
        let e = cni_err(&o);
        assert!(e["msg"].as_str().unwrap().contains("accept_ra"), "{e}");
        assert_eq!(t.host_out("ip -o link show type veth | wc -l"), "0", "veth left");
        assert_eq!(
            t.pod_out(&pod, "ip -o link show | grep -vc ': lo:' || true"),
            "0",
            "pod link left"
        );
        // 2. The bridge is fine now (0), the new host veth is not (default 1).
        t.host_out("echo 0 > /proc/sys/net/ipv6/conf/br.78/accept_ra");
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        let e = cni_err(&o);
        assert!(e["msg"].as_str().unwrap().contains("accept_ra"), "{e}");
        assert_eq!(t.host_out("ip -o link show type veth | wc -l"), "0", "veth left");
        assert_eq!(
            t.pod_out(&pod, "ip -o link show | grep -vc ': lo:' || true"),
            "0",
            "pod link left"
        );
        // 3. New links start with 0: nothing to write, the ADD works on a read-only /proc/sys.
        t.host_out("echo 0 > /proc/sys/net/ipv6/conf/default/accept_ra");
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        ok(&o);
        assert_eq!(
            t.host_out(&conf_dump("ipv6", "accept_ra")),
            "<hostveth> accept_ra=0\nbr.78 accept_ra=0"
        );
        ok(&t.call("bridge", "DEL", &pod, "eth0", "c1", &conf));
        assert!(leftover_files(&t.sb).is_empty(), "{:?}", leftover_files(&t.sb));
    }
}

/// What one bridge MAC round shows, per step: the bridge's MAC is the first one seen,
/// the result names it, and it is not the new pod's host veth MAC.
fn mac_round(t: &mut Twin, bridge: &str, premade: bool, del_order: [usize; 3]) -> Vec<String> {
    let conf = json!({"cniVersion":"1.0.0","name":"mac","type":"bridge","bridge":bridge,"isGateway":true,
        "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.76.0.0/24"}]]}});
    if premade {
        // Made without an address, as `ip link add` does: the kernel may change it.
        t.host_out(&format!("ip link add {bridge} type bridge && ip link set {bridge} up"));
    }
    let pods: Vec<String> = (0..3).map(|i| t.sb.pod(&format!("{bridge}{i}"))).collect();
    let mut first = if premade { t.host_mac(bridge) } else { String::new() };
    let mut steps = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let res = json_out(
            &t.call("bridge", "ADD", pod, "eth0", &format!("c{i}"), &conf),
            t.label(),
        );
        let now = t.host_mac(bridge);
        if first.is_empty() {
            first = now.clone();
        }
        steps.push(format!(
            "add {i}: kept={} result={} not-veth={}",
            now == first,
            res["interfaces"][0]["mac"] == json!(now),
            res["interfaces"][1]["mac"] != json!(now)
        ));
    }
    for i in del_order {
        ok(&t.call("bridge", "DEL", &pods[i], "eth0", &format!("c{i}"), &conf));
        steps.push(format!("del {i}: kept={}", t.host_mac(bridge) == first));
    }
    // A pod added again after all left still finds the same MAC.
    ok(&t.call("bridge", "ADD", &pods[1], "eth0", "c9", &conf));
    steps.push(format!("re-add: kept={}", t.host_mac(bridge) == first));
    ok(&t.call("bridge", "DEL", &pods[1], "eth0", "c9", &conf));
    steps
}

/// A: the gateway bridge's MAC never changes as pods come and go, whether the bridge
/// existed before the first ADD or the first ADD made it, and the result names it; the
/// same as the reference in a twin sandbox.
#[test]
fn bridge_mac_never_changes_like_the_reference() {
    root();
    let mut seen = Vec::new();
    for mut t in Twin::pair("mac") {
        let mut steps = mac_round(&mut t, "brm0", true, [1, 0, 2]);
        steps.extend(mac_round(&mut t, "brn0", false, [2, 0, 1]));
        if !t.reference {
            for s in &steps {
                assert!(!s.contains("false"), "cnichain: {s} (all: {steps:?})");
            }
        }
        seen.push(steps);
    }
    assert_eq!(seen[1], seen[0], "cnichain differs from the reference");
}

/// A bridge whose ports all left before it was ever pinned reads 00:00:00:00:00:00 (a
/// failed ADD's veth removed by the runtime's DEL). The reference fails every later ADD
/// on it ("could not set bridge's mac: invalid argument"); cnichain pins the address the
/// bridge takes from its first port instead (README, Differences).
#[test]
fn a_bridge_with_a_zero_mac_still_takes_pods() {
    root();
    for mut t in Twin::pair("zmac") {
        let pod = t.sb.pod("p");
        t.host_out("ip link add brz0 type bridge && ip link add za type veth peer name zb && ip link set za master brz0 && ip link del za");
        assert_eq!(t.host_mac("brz0"), "00:00:00:00:00:00", "{}: the set-up", t.label());
        let conf = json!({"cniVersion":"1.0.0","name":"zmac","type":"bridge","bridge":"brz0","isGateway":true,
            "ipam":{"type":"static","addresses":[{"address":"10.76.0.2/24","gateway":"10.76.0.1"}]}});
        let o = t.call("bridge", "ADD", &pod, "eth0", "c1", &conf);
        let res = json_out(&o, t.label());
        if t.reference {
            assert!(!o.status.success(), "the reference now takes it: {res}");
            assert!(
                res["msg"].as_str().unwrap_or("").contains("could not set bridge's mac"),
                "{res}"
            );
        } else {
            assert!(o.status.success(), "cnichain: {res}");
            let mac = t.host_mac("brz0");
            assert_ne!(mac, "00:00:00:00:00:00");
            assert_eq!(res["interfaces"][0]["mac"], json!(mac), "{res}");
            ok(&t.call("bridge", "DEL", &pod, "eth0", "c1", &conf));
            // Pinned: the bridge keeps it once its last port is gone.
            assert_eq!(t.host_mac("brz0"), mac);
        }
    }
}

/// B: a `dns` list that is present, even empty, replaces the IPAM's dns (an empty dns);
/// an absent or null one does not; an empty domain is unset. bridge and ptp as the
/// reference, but for the one documented difference: with no dns of its own, bridge 1.1.1
/// drops the IPAM's dns and cnichain keeps it, as upstream does (README).
#[test]
fn dns_absent_is_not_empty_like_the_reference() {
    root();
    let ipam_dns = json!({"nameservers":["10.75.0.53"],"domain":"ipam.test"});
    let variants: Vec<(Value, bool)> = vec![
        // (the plugin's dns, whether it is "set")
        (Value::Null, false),
        (json!({}), false),
        (json!({"nameservers":[],"search":[],"options":[]}), true),
        (json!({"nameservers":[]}), true),
        (json!({"search":[]}), true),
        (json!({"options":[]}), true),
        (json!({"domain":""}), false),
        (json!({"nameservers":null,"search":null}), false),
        (json!({"domain":"own.test","options":["ndots:2"]}), true),
    ];
    let mut twins = Twin::pair("dns");
    let pods: Vec<String> = twins.iter_mut().map(|t| t.sb.pod("p")).collect();
    let mut compared = 0;
    for typ in ["ptp", "bridge"] {
        for (dns, set) in &variants {
            let mut conf = json!({"cniVersion":"1.0.0","name":"dns","type":typ,"bridge":"brd0","isGateway":true,
                "ipam":{"type":"static","addresses":[{"address":"10.75.0.2/24","gateway":"10.75.0.1"}],"dns":ipam_dns}});
            if !dns.is_null() || typ == "ptp" {
                conf["dns"] = dns.clone();
            }
            let mut got = Vec::new();
            for (t, pod) in twins.iter().zip(&pods) {
                let o = t.call(typ, "ADD", pod, "eth0", "c1", &conf);
                let res = json_out(&o, t.label());
                assert!(o.status.success(), "{typ} {dns} {}: {res}", t.label());
                ok(&t.call(typ, "DEL", pod, "eth0", "c1", &conf));
                got.push(res["dns"].clone());
            }
            let want = if *set {
                let mut d = dns.clone();
                d.as_object_mut()
                    .unwrap()
                    .retain(|_, v| !(v.is_null() || v == &json!([]) || v == &json!("")));
                d
            } else {
                ipam_dns.clone()
            };
            assert_eq!(got[1], want, "{typ} dns {dns}: cnichain");
            if typ == "bridge" && !set {
                assert_eq!(
                    got[0],
                    json!({}),
                    "{typ} dns {dns}: the reference 1.1.1 drops the IPAM's"
                );
            } else {
                assert_eq!(got[1], got[0], "{typ} dns {dns}: cnichain differs from the reference");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 9 + 5);
}

const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A result with what differs by nature replaced by what it must equal: each interface's
/// MAC by the name of the live link it matches, host veth names, the pod's netns path.
fn normalize(t: &Twin, pod: &str, mut res: Value) -> Value {
    let pod_macs = t.pod_out(
        pod,
        "ip -o link show | sed -E 's/^[0-9]+: ([^:@]+).*link\\/[a-z]+ ([0-9a-f:]+).*/\\1 \\2/'",
    );
    let host_macs = t.host_out("ip -o link show | sed -E 's/^[0-9]+: ([^:@]+).*link\\/[a-z]+ ([0-9a-f:]+).*/\\1 \\2/'");
    if let Some(ifs) = res.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs {
            let name = i["name"].as_str().unwrap_or_default().to_string();
            let in_pod = i["sandbox"] == json!(pod);
            let table = if in_pod { &pod_macs } else { &host_macs };
            let live = table
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .map(String::from);
            if let Some(mac) = i.get_mut("mac") {
                if live.as_deref() == mac.as_str() {
                    *mac = json!("<live mac>");
                }
            }
            if name.starts_with("veth") {
                i["name"] = json!("<hostveth>");
            }
            if in_pod {
                i["sandbox"] = json!("<netns>");
            }
        }
    }
    res
}

/// A prevResult a previous plugin could have returned, at `version`.
fn prev_result(version: &str, pod: &str) -> Value {
    if version.starts_with("0.1") || version.starts_with("0.2") {
        return json!({"cniVersion":version,"ip4":{"ip":"10.74.0.9/24","gateway":"10.74.0.1"},"dns":{"nameservers":["10.74.0.53"]}});
    }
    let mut ip = json!({"interface":0,"address":"10.74.0.9/24","gateway":"10.74.0.1"});
    if version != "1.0.0" {
        ip["version"] = json!("4");
    }
    json!({"cniVersion":version,"interfaces":[{"name":"eth9","mac":"02:00:00:00:00:09","sandbox":pod}],
        "ips":[ip],"routes":[{"dst":"0.0.0.0/0","gw":"10.74.0.1"}],"dns":{"nameservers":["10.74.0.53"]}})
}

/// The configs compared: the main plugin of every conflist in conflists/ that runs only
/// bridge, ptp, loopback, host-local and static, and a few more (IPv6-only, dual-stack
/// ptp with routes, a static IPAM with routes and dns).
fn configs() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conflists");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let plugins = list["plugins"].as_array().unwrap();
        let main = ["bridge", "ptp", "loopback", "host-local", "static"];
        let all_main = plugins.iter().all(|p| {
            main.contains(&p["type"].as_str().unwrap_or_default())
                && p["ipam"]["type"].as_str().is_none_or(|t| main.contains(&t))
        });
        if !all_main {
            continue;
        }
        let mut p = plugins[0].clone();
        p["name"] = list["name"].clone();
        out.push((f.file_name().unwrap().to_string_lossy().to_string(), p));
    }
    out.push((
        "bridge-v6only".into(),
        json!({"name":"v6","type":"bridge","bridge":"cni-v6","isDefaultGateway":true,
        "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"fd00:73::/64"}]]}}),
    ));
    out.push(("ptp-routes".into(), json!({"name":"pr","type":"ptp","ipMasq":false,
        "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"fd00:72::/64"}],[{"subnet":"10.72.0.0/24"}]],
            "routes":[{"dst":"192.0.2.0/24"},{"dst":"2001:db8::/64"}]}})));
    out.push((
        "bridge-gwroute".into(),
        json!({"name":"gr","type":"bridge","bridge":"cni-gr","isDefaultGateway":true,
        "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.71.0.0/24"}]],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.71.0.254"}]}}),
    ));
    out.push((
        "ptp-static".into(),
        json!({"name":"ps","type":"ptp",
        "ipam":{"type":"static","addresses":[{"address":"10.70.0.5/24","gateway":"10.70.0.1"}],
            "routes":[{"dst":"198.51.100.0/24"}],"dns":{"nameservers":["10.70.0.53"],"domain":"s.test"}}}),
    ));
    out
}

/// The reference 1.1.1's quirks that cnichain does not copy (README: differences), each
/// asserted as seen and then taken out of the comparison.
fn known_differences(label: &str, version: &str, with_prev: bool, got: &mut [Value]) {
    let [reference, ours] = got else { return };
    // Its loopback labels its 1.0.0-shaped result with an older version without
    // converting it: no ip4 for 0.1.0/0.2.0, ips without the required "version" for
    // 0.3.x/0.4.0. cnichain converts it.
    if label.starts_with("loopback") && !with_prev && version != "1.0.0" {
        assert!(
            reference["ips"][0].is_object() && reference["ips"][0].get("version").is_none(),
            "{label} {version}: the reference's loopback quirk is gone: {reference}"
        );
        let mut want = json!({"cniVersion": version, "dns": {}});
        if version.starts_with("0.1") || version.starts_with("0.2") {
            want["ip4"] = json!({"ip":"127.0.0.1/8"});
            want["ip6"] = json!({"ip":"::1/128"});
        } else {
            want["interfaces"] = reference["interfaces"].clone();
            want["ips"] = json!([{"version":"4","interface":0,"address":"127.0.0.1/8"},{"version":"6","interface":0,"address":"::1/128"}]);
        }
        if let Some(c) = reference.get("<CHECK>") {
            want["<CHECK>"] = c.clone();
        }
        assert_eq!(ours, &want, "{label} {version}");
        *ours = reference.clone();
    }
    // Its CHECK looks for the result's routes without a gateway as routes without one,
    // but ADD gave them the interface's gateway: it fails CHECK of its own ADD.
    if let Some(msg) = reference["<CHECK>"].as_str() {
        if msg.starts_with("Expected Route {Dst:") && msg.ends_with("GW:<nil>} not found in routing table") {
            assert_eq!(ours["<CHECK>"], json!("ok"), "{label} {version}");
            ours["<CHECK>"] = reference["<CHECK>"].clone();
        }
    }
    // bridge 1.1.1 fails CHECK in L2 mode ("no plugin name provided"); cnichain's passes.
    if label.contains("-l2") && reference.get("<CHECK>").is_none() {
        if let Some(o) = ours.as_object_mut() {
            assert_eq!(
                o.remove("<CHECK>"),
                Some(json!("ok")).filter(|_| version >= "0.4.0"),
                "{label} {version}"
            );
        }
    }
}

/// D: every config at every version the reference supports (0.1.0-1.0.0), with and
/// without a prevResult, gives the reference's result: interfaces in order, each MAC that
/// of the live link it names, sandbox, ips with their interface index, routes, dns (but
/// for bridge 1.1.1 dropping the IPAM's dns, README), and CHECK (0.4.0+) and DEL pass.
#[test]
fn every_config_at_every_version_matches_the_reference() {
    root();
    let mut twins = Twin::pair("ver");
    let mut compared = 0;
    let mut diffs: Vec<String> = Vec::new();
    for (label, base) in configs() {
        let typ = base["type"].as_str().unwrap().to_string();
        for version in VERSIONS {
            for with_prev in [false, true] {
                if with_prev && version.starts_with("0.1") {
                    continue; // no prevResult before 0.2.0 results could be chained
                }
                let mut got = Vec::new();
                for t in twins.iter_mut() {
                    let pod = t.sb.pod(&format!("v{compared}"));
                    let mut conf = base.clone();
                    conf["cniVersion"] = json!(version);
                    if with_prev {
                        conf["prevResult"] = prev_result(version, &pod);
                    }
                    let what = format!("{label} {version} prev={with_prev} {}", t.label());
                    let o = t.call(&typ, "ADD", &pod, "eth0", "c1", &conf);
                    let res = json_out(&o, &what);
                    if !o.status.success() {
                        // Both must fail alike (bridge's L2 mode has no result below 0.3.0).
                        ok(&t.call(&typ, "DEL", &pod, "eth0", "c1", &conf));
                        got.push(json!({"error": res["msg"]}));
                        continue;
                    }
                    let mut res = normalize(t, &pod, res);
                    if version.starts_with("0.4") || version.starts_with("1.") {
                        let mut check = conf.clone();
                        check["prevResult"] = json_out(&o, &what);
                        let c = t.call(&typ, "CHECK", &pod, "eth0", "c1", &check);
                        let l2 = typ == "bridge" && base.get("ipam").is_none();
                        // 1.1.1 fails CHECK in bridge's L2 mode (README).
                        if !(l2 && t.reference) {
                            let outcome = if c.status.success() {
                                json!("ok")
                            } else {
                                json_out(&c, &what)["msg"].clone()
                            };
                            res["<CHECK>"] = outcome;
                        }
                    }
                    ok(&t.call(&typ, "DEL", &pod, "eth0", "c1", &conf));
                    let ipam_dns = &base["ipam"]["dns"];
                    if !t.reference && typ == "bridge" && base.get("dns").is_none() && ipam_dns.is_object() {
                        // bridge keeps the IPAM's dns, 1.1.1 drops it (README).
                        assert_eq!(&res["dns"], ipam_dns, "{what}");
                        res["dns"] = json!({});
                    }
                    got.push(res);
                }
                known_differences(&label, version, with_prev, &mut got);
                if got[1] != got[0] {
                    diffs.push(format!(
                        "{label} at {version} (prevResult: {with_prev}):\n  reference {}\n  cnichain  {}",
                        got[0], got[1]
                    ));
                }
                compared += 1;
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {compared} differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(compared >= 11 * 11, "only {compared} compared");
}

/// `msg` with what differs by nature between twins (MACs, host veth names, paths)
/// replaced.
fn norm_msg(t: &Twin, v: &Value) -> String {
    let mut m = v["msg"].as_str().unwrap_or("<no msg>").to_string();
    m = m.replace(&t.sb.tag, "<tag>");
    let mac = regex_lite_mac(&m);
    for x in mac {
        m = m.replace(&x, "<mac>");
    }
    let words: Vec<String> = m
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 12 && w.starts_with("veth"))
        .map(String::from)
        .collect();
    for w in words {
        m = m.replace(&w, "<hostveth>");
    }
    m
}

/// The xx:xx:xx:xx:xx:xx words of a text.
fn regex_lite_mac(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(String::from)
        .collect()
}

/// D: ADD refused for the same reason gives the reference's `msg` (cnichain's extra help
/// is in `details`; config errors are code 7 where the reference says 999, README).
#[test]
fn add_errors_read_as_the_reference() {
    root();
    let ipam = json!({"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.69.0.0/24"}]]});
    let bridge = |extra: Value| {
        let mut c = json!({"cniVersion":"1.0.0","name":"err","type":"bridge","bridge":"bre0","ipam":ipam});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // (what, type, config, host setup, pod setup)
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        (
            "not a bridge",
            "bridge",
            bridge(json!({})),
            "ip link add bre0 type veth peer name brex",
            "",
        ),
        (
            "ifname taken",
            "bridge",
            bridge(json!({})),
            "",
            "ip link add eth0 type veth peer name ethx",
        ),
        (
            "gateway taken",
            "bridge",
            bridge(json!({"isGateway":true})),
            "ip link add bre0 type bridge && ip addr add 10.68.0.1/24 dev bre0",
            "",
        ),
        (
            "hairpin and promisc",
            "bridge",
            bridge(json!({"hairpinMode":true,"promiscMode":true})),
            "",
            "",
        ),
        ("vlan range", "bridge", bridge(json!({"vlan":5000})), "", ""),
        (
            "bad mac",
            "bridge",
            bridge(json!({"runtimeConfig":{"mac":"zz"}})),
            "",
            "",
        ),
        ("mtu too big", "bridge", bridge(json!({"mtu":70000})), "", ""),
        (
            "unreachable route gw",
            "bridge",
            bridge(
                json!({"ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.69.0.0/24"}]],"routes":[{"dst":"192.0.2.0/24","gw":"10.1.1.1"}]}}),
            ),
            "",
            "",
        ),
        (
            "ptp without ipam",
            "ptp",
            json!({"cniVersion":"1.0.0","name":"err","type":"ptp"}),
            "",
            "",
        ),
        (
            "ptp ifname taken",
            "ptp",
            json!({"cniVersion":"1.0.0","name":"err","type":"ptp","ipam":ipam}),
            "",
            "ip link add eth0 type veth peer name ethx",
        ),
        (
            "ptp v4 without gateway",
            "ptp",
            json!({"cniVersion":"1.0.0","name":"err","type":"ptp","ipam":{"type":"static","addresses":[{"address":"10.69.0.2/24"}]}}),
            "",
            "",
        ),
        (
            "ptp v6 without gateway",
            "ptp",
            json!({"cniVersion":"1.0.0","name":"err","type":"ptp","ipam":{"type":"static","addresses":[{"address":"10.69.0.2/24"},{"address":"fd00:69::2/64"}]}}),
            "",
            "",
        ),
        (
            "ptp mtu too big",
            "ptp",
            json!({"cniVersion":"1.0.0","name":"err","type":"ptp","mtu":70000,"ipam":ipam}),
            "",
            "",
        ),
    ];
    let mut diffs = Vec::new();
    for (i, (what, typ, conf, host_setup, pod_setup)) in cases.iter().enumerate() {
        let mut msgs = Vec::new();
        for mut t in Twin::pair("err") {
            let pod = t.sb.pod(&format!("e{i}"));
            if !host_setup.is_empty() {
                sh(&t.sb, &t.sb.host(), host_setup);
            }
            if !pod_setup.is_empty() {
                sh(&t.sb, &ns_name(&pod), pod_setup);
            }
            let o = t.call(typ, "ADD", &pod, "eth0", "c1", conf);
            let e = cni_err(&o);
            msgs.push(norm_msg(&t, &e));
            let _ = t.call(typ, "DEL", &pod, "eth0", "c1", conf);
        }
        if msgs[0] != msgs[1] {
            diffs.push(format!("{what}:\n  reference {}\n  cnichain  {}", msgs[0], msgs[1]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} differ:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n")
    );
}

/// D: CHECK finding the same fault gives the reference's `msg`, for bridge and ptp.
#[test]
fn check_errors_read_as_the_reference() {
    root();
    // (what, type, fault made after ADD: a script in the host netns (H) or pod (P))
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "container MAC changed",
            "bridge",
            "P",
            "ip link set eth0 address 02:00:00:00:00:42",
        ),
        ("address gone", "bridge", "P", "ip addr flush dev eth0"),
        ("route gone", "bridge", "P", "ip route del 192.0.2.0/24"),
        (
            "veth off the bridge",
            "bridge",
            "H",
            "ip link set $(ip -o link show type veth | cut -d: -f2 | cut -d@ -f1) nomaster",
        ),
        ("bridge promisc", "bridge", "H", "ip link set brc0 promisc on"),
        (
            "bridge MAC changed",
            "bridge",
            "H",
            "ip link set brc0 address 02:00:00:00:00:43",
        ),
        (
            "ptp container MAC changed",
            "ptp",
            "P",
            "ip link set eth0 address 02:00:00:00:00:44",
        ),
        ("ptp address gone", "ptp", "P", "ip addr flush dev eth0"),
        ("ptp default route gone", "ptp", "P", "ip route del default"),
    ];
    let mut diffs = Vec::new();
    for (i, (what, typ, place, fault)) in cases.iter().enumerate() {
        let conf = json!({"cniVersion":"1.0.0","name":"chk","type":typ,"bridge":"brc0","isGateway":true,
            "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.67.0.0/24"}]],
                "routes":[{"dst":"0.0.0.0/0"},{"dst":"192.0.2.0/24","gw":"10.67.0.1"}]}});
        let mut msgs = Vec::new();
        for mut t in Twin::pair("chk") {
            let pod = t.sb.pod(&format!("k{i}"));
            let o = t.call(typ, "ADD", &pod, "eth0", "c1", &conf);
            let res = json_out(&o, what);
            assert!(o.status.success(), "{what} {}: {res}", t.label());
            let mut check = conf.clone();
            check["prevResult"] = res;
            ok(&t.call(typ, "CHECK", &pod, "eth0", "c1", &check));
            let ns = if *place == "H" { t.sb.host() } else { ns_name(&pod) };
            sh(&t.sb, &ns, fault);
            let e = cni_err(&t.call(typ, "CHECK", &pod, "eth0", "c1", &check));
            msgs.push(norm_msg(&t, &e));
            ok(&t.call(typ, "DEL", &pod, "eth0", "c1", &conf));
        }
        if msgs[0] != msgs[1] {
            diffs.push(format!("{what}:\n  reference {}\n  cnichain  {}", msgs[0], msgs[1]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} differ:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n")
    );
}

/// Two interfaces of one pod on networks with the same default route: bridge adds the
/// second one beside the first, as the reference, instead of failing with "file exists";
/// its CHECK answers as the reference's. ptp refuses the second (its gateway route is
/// taken) with the reference's text. Found by `cnichain conformance
/// --conflist` (CHN-08, a second attachment of the list in the same pod).
#[test]
fn a_second_interface_with_the_same_default_route_is_added_like_the_reference() {
    root();
    for typ in ["bridge", "ptp"] {
        let mut got = Vec::new();
        for t in Twin::pair(&format!("rt{}", &typ[..1])) {
            let conf = json!({"cniVersion":"1.0.0","name":"rt","type":typ,"bridge":"brrt0","isGateway":true,
                "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.74.0.0/24"}]],
                        "routes":[{"dst":"0.0.0.0/0"}]}});
            let first = t.run_on_pod(typ, "ADD", &conf, "c1", "eth0");
            assert!(first.status.success(), "{typ} {}: {}", t.label(), stdout(&first));
            let second = t.run_on_pod(typ, "ADD", &conf, "c2", "eth1");
            let res = json_out(&second, t.label());
            let mut conf2 = conf.clone();
            conf2["prevResult"] = res.clone();
            let check = if second.status.success() {
                twin::Outcome::of(&t.run_on_pod(typ, "CHECK", &conf2, "c2", "eth1"))
            } else {
                twin::Outcome::Other {
                    status: -1,
                    stdout: String::new(),
                }
            };
            let routes = t.pod_out(&t.pod, "ip -4 route show default");
            for (cid, ifname) in [("c2", "eth1"), ("c1", "eth0")] {
                ok(&t.run_on_pod(typ, "DEL", &conf, cid, ifname));
            }
            let added = match twin::Outcome::of(&second) {
                twin::Outcome::Ok(_) => "ok".to_string(),
                other => normalize_veth_names(&format!("{other:?}")),
            };
            // A failed ADD is rolled back by cnichain, left to the runtime's DEL by the
            // reference (README, Differences): its routes are not compared.
            let routes = if added == "ok" {
                normalize_veth_names(&routes)
            } else {
                String::new()
            };
            got.push((added, format!("{check:?}"), routes));
        }
        if typ == "bridge" {
            assert_eq!(got[0].0, "ok", "{typ}: the reference takes the second interface");
            assert!(
                got[0].2.contains("dev eth1") && got[0].2.contains("dev eth0"),
                "{got:?}"
            );
        }
        assert_eq!(got[1], got[0], "{typ}: cnichain differs from the reference");
    }
}
