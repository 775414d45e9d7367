//! Differential tests of the bridge, ptp and loopback drop-ins against the reference
//! binaries, one plugin call at a time (tests/common/twin.rs): sysctls of dotted
//! interface names, the bridge's MAC as pods come and go, dns absent vs empty, results at
//! every spec version with and without prevResult, error texts.

mod common;
use common::twin::{json_out, Twin};
use common::*;
use serde_json::{json, Value};

fn root() {
    assert!(is_root(), "these tests need root (network namespaces)");
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
        .host_sh(&conf_dump("ipv6", "accept_ra"))
        .lines()
        .map(|l| format!("host {l}"))
        .collect();
    for k in [
        format!("ipv6/conf/{ifname}/disable_ipv6"),
        format!("ipv6/conf/{ifname}/accept_dad"),
        format!("ipv4/conf/{ifname}/arp_notify"),
        "ipv6/conf/lo/disable_ipv6".to_string(),
    ] {
        out.push(format!("pod {k}={}", t.pod_sh(pod, &format!("cat /proc/sys/net/{k}"))));
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
            t.host_sh("echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra");
            t.pod_sh(&pod, "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
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
        t.host_sh("echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra");
        // 1. A new bridge (accept_ra=1) on a read-only /proc/sys.
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        if t.reference {
            assert!(o.status.success(), "the reference ignores it: {}", stdout(&o));
            assert_eq!(t.host_sh("cat /proc/sys/net/ipv6/conf/br.78/accept_ra"), "1");
            ok(&t.call("bridge", "DEL", &pod, "eth0", "c1", &conf));
            continue;
        }
        let e = cni_err(&o);
        assert!(e["msg"].as_str().unwrap().contains("accept_ra"), "{e}");
        assert_eq!(t.host_sh("ip -o link show type veth | wc -l"), "0", "veth left");
        assert_eq!(
            t.pod_sh(&pod, "ip -o link show | grep -vc ': lo:' || true"),
            "0",
            "pod link left"
        );
        // 2. The bridge is fine now (0), the new host veth is not (default 1).
        t.host_sh("echo 0 > /proc/sys/net/ipv6/conf/br.78/accept_ra");
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        let e = cni_err(&o);
        assert!(e["msg"].as_str().unwrap().contains("accept_ra"), "{e}");
        assert_eq!(t.host_sh("ip -o link show type veth | wc -l"), "0", "veth left");
        assert_eq!(
            t.pod_sh(&pod, "ip -o link show | grep -vc ': lo:' || true"),
            "0",
            "pod link left"
        );
        // 3. New links start with 0: nothing to write, the ADD works on a read-only /proc/sys.
        t.host_sh("echo 0 > /proc/sys/net/ipv6/conf/default/accept_ra");
        let o = t.call_wrapped(RO_PROC_SYS, "bridge", "ADD", &pod, "eth0", "c1", &[], &conf);
        ok(&o);
        assert_eq!(
            t.host_sh(&conf_dump("ipv6", "accept_ra")),
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
        t.host_sh(&format!("ip link add {bridge} type bridge && ip link set {bridge} up"));
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
