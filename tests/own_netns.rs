//! Issue 12.7: a CNI_NETNS that is the caller's own network namespace is refused (code 4)
//! before anything changes, on ADD, CHECK and DEL, by the CLI, the meta-plugin and every
//! drop-in that enters the netns. "The caller" runs in the sandbox's throwaway host
//! netns (nsenter), so that is the namespace at stake: never the machine's.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Output;

/// The host netns as the pod would see it: addresses, routes, links, sysctls that a
/// wrongly entered stage would change.
fn host_state(sb: &Sandbox) -> String {
    stdout(&sb.sh_in(
        &sb.host(),
        "ip -o link | sed 's/^[0-9]*: //' | cut -d' ' -f1-3; ip -o addr; ip route; ip -6 route; \
         sysctl -n net.ipv4.conf.eth0.arp_notify; nft list ruleset",
    ))
}

fn own_paths(sb: &Sandbox) -> Vec<String> {
    vec![
        "/proc/self/ns/net".into(),
        "/proc/thread-self/ns/net".into(),
        format!("/run/netns/{}", sb.host()),
    ]
}

fn assert_refused(o: &Output, what: &str) {
    let e = cni_err(o);
    assert_eq!(e["code"], 4, "{what}: {e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("caller's own network namespace"),
        "{what}: {e}"
    );
}

/// A dummy `eth0` with an address in the host: what a pod's DEL or CHECK would touch.
fn host_with_eth0(tag: &str) -> Sandbox {
    let sb = Sandbox::new(tag);
    sh(
        &sb,
        &sb.host(),
        "ip link add eth0 type veth peer name cncpeer0 && ip addr add 10.90.0.2/24 dev eth0 && ip link set eth0 up",
    );
    sb
}

#[test]
fn cli_and_meta_refuse_the_callers_own_netns() {
    require_root("netns, veth");
    let sb = host_with_eth0("ownc");
    let net = format!("{}-n", sb.tag);
    let plugins = json!([
        { "type": "bridge", "bridge": "cncown0", "isGateway": true, "ipMasq": true,
          "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.91.0.0/24" }]] } },
        { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.arp_notify": "1" } },
        { "type": "portmap", "capabilities": { "portMappings": true } }
    ]);
    sb.write_conflist(
        "10.conflist",
        &json!({"cniVersion":"1.0.0","name": net, "plugins": plugins}).to_string(),
    );
    let before = host_state(&sb);
    for path in own_paths(&sb) {
        for verb in ["add", "check", "del"] {
            let o = sb.cnichain(REF_PLUGINS, &["--container-id", "c1", verb, &net, &path]);
            assert_refused(&o, &format!("cli {verb} {path}"));
        }
    }
    assert_eq!(host_state(&sb), before);
    assert_eq!(leftover_files(&sb), Vec::<String>::new());

    // The meta-plugin, exec'd as a runtime would.
    let bin = install(&sb);
    let meta = json!({"cniVersion":"1.0.0","name": net, "type":"cnichain",
        "plugins": serde_json::from_str::<Value>(&plugins.to_string().replace("@IPAM@", &sb.ipam_dir().display().to_string())).unwrap()});
    for path in own_paths(&sb) {
        for verb in ["ADD", "DEL"] {
            let mut c = sb.in_host(&bin.join("cnichain"));
            c.env("CNI_COMMAND", verb)
                .env("CNI_CONTAINERID", "c1")
                .env("CNI_NETNS", &path)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &bin);
            assert_refused(&pipe(c, &meta.to_string()), &format!("meta {verb} {path}"));
        }
    }
    assert_eq!(host_state(&sb), before);
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}

#[test]
fn drop_ins_that_enter_the_netns_refuse_the_callers_own() {
    require_root("netns, veth");
    let sb = host_with_eth0("ownd");
    let bin = install(&sb);
    let ipam = json!({"type":"host-local","dataDir": sb.ipam_dir(),"ranges":[[{"subnet":"10.92.0.0/24"}]]});
    let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"cncown1"},{"name":"veth0"},{"name":"eth0","sandbox":"x"}],
                      "ips":[{"address":"10.92.0.2/24","gateway":"10.92.0.1","interface":2}]});
    let confs = [
        (
            "bridge",
            json!({"cniVersion":"1.0.0","name":"o","type":"bridge","bridge":"cncown1","ipam": ipam}),
        ),
        (
            "ptp",
            json!({"cniVersion":"1.0.0","name":"o","type":"ptp","ipMasq":true,"ipam": ipam}),
        ),
        ("loopback", json!({"cniVersion":"1.0.0","name":"o","type":"loopback"})),
        (
            "tuning",
            json!({"cniVersion":"1.0.0","name":"o","type":"tuning","mtu":1280,
                   "sysctl":{"net.ipv4.conf.eth0.arp_notify":"1"},"prevResult": prev}),
        ),
        (
            "bandwidth",
            json!({"cniVersion":"1.0.0","name":"o","type":"bandwidth","ingressRate":1000,"ingressBurst":1000,"prevResult": prev}),
        ),
    ];
    let before = host_state(&sb);
    for path in own_paths(&sb) {
        for (t, conf) in &confs {
            for verb in ["ADD", "CHECK", "DEL"] {
                if *t == "bandwidth" && verb == "DEL" {
                    // bandwidth's DEL never enters the netns (it removes its ifb by name).
                    continue;
                }
                let mut c = sb.in_host(&bin.join(t));
                c.env("CNI_COMMAND", verb)
                    .env("CNI_CONTAINERID", "c1")
                    .env("CNI_NETNS", &path)
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", &bin);
                let mut conf = conf.clone();
                if verb == "CHECK" && conf.get("prevResult").is_none() {
                    conf["prevResult"] = prev.clone();
                }
                assert_refused(&pipe(c, &conf.to_string()), &format!("{t} {verb} {path}"));
            }
        }
    }
    assert_eq!(host_state(&sb), before);
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}

/// IPAM plugins never open the netns (the reference's unit tests call host-local with
/// CNI_NETNS=/some/where): the drop-ins take any path there, the host's own included.
#[test]
fn ipam_drop_ins_never_look_at_the_netns() {
    require_root("netns, veth");
    let sb = Sandbox::new("ownipam");
    let bin = install(&sb);
    let conf = json!({"cniVersion":"1.0.0","name":"o","type":"host-local",
        "ipam":{"type":"host-local","dataDir": sb.ipam_dir(),"ranges":[[{"subnet":"10.93.0.0/24"}]]}});
    for path in ["/some/where", "/proc/self/ns/net"] {
        for verb in ["ADD", "DEL"] {
            let mut c = sb.in_host(&bin.join("host-local"));
            c.env("CNI_COMMAND", verb)
                .env("CNI_CONTAINERID", "c1")
                .env("CNI_NETNS", path)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &bin);
            let o = pipe(c, &conf.to_string());
            ok(&o);
        }
    }
}
