//! The in-process tuning stage against a real kernel and against the reference plugin
//! (containernetworking-plugins 1.1.1 in /usr/lib/cni).
//!
//! Two ways in: as a plugin (the cnichain binary under the name `tuning`, fed the same
//! stdin and environment as the reference binary, on a veth `eth0` in a pod netns), and
//! as a stage of a chain run by `cnichain add|check|del` after bridge + host-local. Every
//! test has its own sandbox; the state dir (CNICHAIN_STATE_DIR) and the reference's
//! `dataDir` point into it.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The main plugins run through the exec fallback (the reference bridge and host-local)
/// so that these tests exercise only the tuning stage.
const MAIN_EXEC: &str = "bridge,host-local";

/// The exec policy for the in-process runs: `CNICHAIN_TEST_MAIN_EXEC` (e.g. `none`, to
/// run the in-process bridge and host-local too), by default [`MAIN_EXEC`].
fn main_exec() -> String {
    std::env::var("CNICHAIN_TEST_MAIN_EXEC")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| MAIN_EXEC.to_string())
}

/// The tuning records in the sandbox's state dir (its locks/ are the engine's).
fn tuning_records(sb: &Sandbox) -> Vec<String> {
    sb.files_in("state")
        .into_iter()
        .filter(|f| f.starts_with("tuning/"))
        .collect()
}

fn state_dir(sb: &Sandbox) -> PathBuf {
    sb.dir.join("state")
}

/// A directory with `tuning` -> the cnichain binary (plugin mode by argv[0]).
fn our_plugin(sb: &Sandbox) -> PathBuf {
    let dir = sb.dir.join("bin");
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join("tuning");
    if !p.exists() {
        std::os::unix::fs::symlink(cnichain_bin(), &p).expect("symlink tuning");
    }
    p
}

fn ref_plugin() -> PathBuf {
    Path::new(REF_PLUGINS).join("tuning")
}

/// Run a plugin binary in the sandbox's host netns with a CNI environment and `conf` on
/// stdin.
fn plugin(sb: &Sandbox, bin: &Path, cmd: &str, netns: &str, cid: &str, conf: &Value, env: &[(&str, &str)]) -> Output {
    let mut c = sb.in_host(bin);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REF_PLUGINS)
        .env("CNICHAIN_STATE_DIR", state_dir(sb))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn plugin");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    child.wait_with_output().expect("plugin output")
}

/// `cnichain --exec EXEC VERB NET POD` with the sandbox's state dir.
fn chain(sb: &Sandbox, exec: &str, verb: &str, net: &str, pod: &str, env: &[(&str, &str)]) -> Output {
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", REF_PLUGINS).env("CNICHAIN_STATE_DIR", state_dir(sb));
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(["--exec", exec, verb, net, pod]);
    c.output().expect("run cnichain")
}

/// A pod with an `eth0` (MAC 02:00:00:00:00:01, MTU 1500), up: one end of a veth pair
/// whose other end stays in the pod (this kernel has no dummy driver).
fn veth_pod(sb: &mut Sandbox, name: &str) -> String {
    let p = sb.pod(name);
    sh(
        sb,
        &ns_name(&p),
        "ip link add eth0 type veth peer name eth0p && ip link set eth0 address 02:00:00:00:00:01 && ip link set eth0 up",
    );
    p
}

/// What tuning may change on eth0: MAC, MTU, txqueuelen, PROMISC and ALLMULTI flags.
fn link_state(sb: &Sandbox, pod: &str, ifname: &str) -> Value {
    let out = sh(sb, &ns_name(pod), &format!("ip -j link show dev {ifname}"));
    let v: Value = serde_json::from_str(&out).expect("ip -j");
    let l = &v[0];
    let mut flags: Vec<String> = l["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .filter(|f| *f == "PROMISC" || *f == "ALLMULTI")
        .map(String::from)
        .collect();
    flags.sort();
    json!({"mac": l["address"], "mtu": l["mtu"], "txqlen": l["txqlen"], "flags": flags})
}

fn sysctl(sb: &Sandbox, pod: &str, path: &str) -> String {
    sh(sb, &ns_name(pod), &format!("cat /proc/sys/{path}"))
}

fn prev_result(pod: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": pod}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24"}],
        "dns": {}
    })
}

fn code_of(o: &Output) -> u64 {
    cni_err(o)["code"].as_u64().unwrap_or(0)
}

/// The sysctls the tests look at, and their values in a fresh pod.
const WATCHED: &[&str] = &[
    "net/ipv4/conf/eth0/arp_filter",
    "net/ipv4/conf/eth0/arp_announce",
    "net/core/somaxconn",
];

fn watched(sb: &Sandbox, pod: &str) -> Vec<String> {
    WATCHED.iter().map(|p| sysctl(sb, pod, p)).collect()
}

/// Same stdin, same environment, one pod each: the in-process stage (as a drop-in plugin)
/// and the reference binary must return the same result and leave the same link
/// attributes and sysctls; both restore the link on DEL. cnichain also restores the
/// sysctls, the reference leaves them (README: differences).
#[test]
fn tuning_plugin_matches_reference() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tudiff");
    let ours_pod = veth_pod(&mut sb, "a");
    let ref_pod = veth_pod(&mut sb, "b");
    let ours = our_plugin(&sb);
    let data = sb.dir.join("data");
    let conf = |pod: &str| {
        json!({
            "cniVersion": "1.0.0",
            "name": "tunet",
            "type": "tuning",
            "dataDir": data.join(ns_name(pod)),
            "sysctl": {
                "net.ipv4.conf.eth0.arp_filter": "1",
                "net.ipv4.conf.eth0.arp_announce": "2",
                "net.core.somaxconn": "777"
            },
            "mac": "02:aa:bb:cc:dd:ee",
            "mtu": 1280,
            "promisc": true,
            "allmulti": true,
            "prevResult": prev_result(pod)
        })
    };
    let before_link = link_state(&sb, &ours_pod, "eth0");
    let before_sysctls = watched(&sb, &ours_pod);
    assert_eq!(before_link, link_state(&sb, &ref_pod, "eth0"));
    assert_eq!(before_sysctls, watched(&sb, &ref_pod));

    // ADD
    let o = plugin(&sb, &ours, "ADD", &ours_pod, "cid-a", &conf(&ours_pod), &[]);
    let mut ours_res: Value = serde_json::from_str(&ok(&o)).expect("our result");
    let o = plugin(&sb, &ref_plugin(), "ADD", &ref_pod, "cid-a", &conf(&ref_pod), &[]);
    let mut ref_res: Value = serde_json::from_str(&ok(&o)).expect("reference result");
    assert_eq!(ours_res["interfaces"][0]["mac"], "02:aa:bb:cc:dd:ee");
    ours_res["interfaces"][0]["sandbox"] = json!("<pod>");
    ref_res["interfaces"][0]["sandbox"] = json!("<pod>");
    assert_eq!(ours_res, ref_res, "ADD results differ");
    let after_link = link_state(&sb, &ours_pod, "eth0");
    assert_eq!(after_link, link_state(&sb, &ref_pod, "eth0"), "link attributes differ");
    assert_eq!(
        after_link,
        json!({"mac": "02:aa:bb:cc:dd:ee", "mtu": 1280, "txqlen": before_link["txqlen"], "flags": ["ALLMULTI", "PROMISC"]})
    );
    assert_eq!(watched(&sb, &ours_pod), vec!["1", "2", "777"]);
    assert_eq!(watched(&sb, &ours_pod), watched(&sb, &ref_pod), "sysctls differ");
    // both keep a record under dataDir, same name, same link fields
    let rec = |pod: &str| -> Value {
        let p = data.join(ns_name(pod)).join("cid-a_eth0.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
    };
    let (our_rec, ref_rec) = (rec(&ours_pod), rec(&ref_pod));
    for k in ["mac", "mtu", "promisc", "allmulti"] {
        assert_eq!(our_rec[k], ref_rec[k], "record field {k}");
    }
    assert_eq!(our_rec["sysctls"].as_array().map(|a| a.len()), Some(3));

    // CHECK passes on both
    for (bin, pod) in [(&ours, &ours_pod), (&ref_plugin(), &ref_pod)] {
        let o = plugin(&sb, bin, "CHECK", pod, "cid-a", &conf(pod), &[]);
        ok(&o);
    }

    // DEL: both restore the link; only cnichain restores the sysctls
    for (bin, pod) in [(&ours, &ours_pod), (&ref_plugin(), &ref_pod)] {
        let o = plugin(&sb, bin, "DEL", pod, "cid-a", &conf(pod), &[]);
        ok(&o);
        assert_eq!(link_state(&sb, pod, "eth0"), before_link, "{pod}: link not restored");
        assert!(
            !data.join(ns_name(pod)).join("cid-a_eth0.json").exists(),
            "{pod}: record left"
        );
    }
    assert_eq!(watched(&sb, &ours_pod), before_sysctls, "cnichain restores the sysctls");
    assert_eq!(
        watched(&sb, &ref_pod),
        vec!["1", "2", "777"],
        "the reference leaves them"
    );

    // DEL again: nothing to do, success
    for (bin, pod) in [(&ours, &ours_pod), (&ref_plugin(), &ref_pod)] {
        ok(&plugin(&sb, bin, "DEL", pod, "cid-a", &conf(pod), &[]));
    }
}

/// One chain side of the differential: ADD, observe, CHECK, DEL, observe, DEL again.
fn chain_lifecycle(tag: &str, exec: &str) -> (Value, Value, Vec<String>, Vec<String>) {
    let mut sb = Sandbox::new(tag);
    let pod = sb.pod("p");
    let data = sb.dir.join("data");
    let text = r#"{
  "cniVersion": "1.0.0",
  "name": "tudiffc",
  "plugins": [
    { "type": "bridge", "bridge": "cni-td0", "isGateway": true,
      "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.93.1.0/24" }]] } },
    { "type": "tuning", "dataDir": "@DATA@",
      "sysctl": { "net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.conf.eth0.arp_announce": "2", "net.core.somaxconn": "777" },
      "mac": "02:aa:bb:cc:dd:01", "mtu": 1300, "promisc": true, "allmulti": true }
  ]
}"#
    .replace("@DATA@", &data.display().to_string());
    sb.write_conflist("td.conflist", &text);
    let before = sysctl(&sb, &pod, "net/core/somaxconn");
    let o = chain(&sb, exec, "add", "tudiffc", &pod, &[]);
    let mut res: Value = serde_json::from_str(&ok(&o)).unwrap_or_else(|e| panic!("{exec}: {e}"));
    for i in res["interfaces"].as_array_mut().into_iter().flatten() {
        if i["sandbox"] == json!(pod) {
            i["sandbox"] = json!("<pod>");
        } else {
            i["mac"] = json!("<mac>");
            if i["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
                i["name"] = json!("<veth>");
            }
        }
    }
    let link = link_state(&sb, &pod, "eth0");
    let sysctls = watched(&sb, &pod);
    ok(&chain(&sb, exec, "check", "tudiffc", &pod, &[]));
    ok(&chain(&sb, exec, "del", "tudiffc", &pod, &[]));
    let after = vec![before, sysctl(&sb, &pod, "net/core/somaxconn")];
    assert!(
        sb.files_in("data").is_empty(),
        "{exec}: record left: {:?}",
        sb.files_in("data")
    );
    ok(&chain(&sb, exec, "del", "tudiffc", &pod, &[]));
    (res, link, sysctls, after)
}

/// The same conflist (bridge + host-local, then tuning) with every plugin exec'd from
/// /usr/lib/cni and with tuning in-process: same result (the new MAC on eth0), same
/// link attributes and sysctls; CHECK passes; after DEL cnichain has put the pod-wide
/// sysctl back, the reference has not.
#[test]
fn tuning_chain_matches_reference() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let (ref_res, ref_link, ref_sysctls, ref_after) = chain_lifecycle("tdcr", "all");
    let (res, link, sysctls, after) = chain_lifecycle("tdco", &main_exec());
    assert_eq!(res, ref_res, "results differ");
    assert_eq!(res["interfaces"][2]["mac"], "02:aa:bb:cc:dd:01");
    assert_eq!(link, ref_link, "link attributes differ");
    assert_eq!(link["mtu"], 1300);
    assert_eq!(link["flags"], json!(["ALLMULTI", "PROMISC"]));
    assert_eq!(sysctls, ref_sysctls, "sysctls differ");
    assert_eq!(sysctls, vec!["1", "2", "777"]);
    assert_eq!(after[1], after[0], "cnichain restores net.core.somaxconn");
    assert_eq!(ref_after[1], "777", "the reference leaves it");
}

/// The MAC precedence: config < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac, as the
/// reference; the result carries the MAC that was set.
#[test]
fn tuning_mac_precedence_matches_reference() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tumac");
    let ours = our_plugin(&sb);
    let data = sb.dir.join("data");
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({"mac": "02:00:00:00:00:0a"}),
            Some("MAC=02:00:00:00:00:0b"),
            "02:00:00:00:00:0b",
        ),
        (
            json!({"mac": "02:00:00:00:00:0a", "runtimeConfig": {"mac": "02:00:00:00:00:0c"}}),
            Some("IgnoreUnknown=1;MAC=02:00:00:00:00:0b;K8S_POD_NAME=x"),
            "02:00:00:00:00:0c",
        ),
        (
            json!({"runtimeConfig": {"mac": "02:00:00:00:00:0c"}, "args": {"cni": {"mac": "02:00:00:00:00:0d"}}}),
            None,
            "02:00:00:00:00:0d",
        ),
    ];
    for (i, (extra, args, want)) in cases.into_iter().enumerate() {
        let mut results = Vec::new();
        for (j, bin) in [ours.clone(), ref_plugin()].iter().enumerate() {
            let pod = veth_pod(&mut sb, &format!("m{i}{j}"));
            let mut conf = json!({
                "cniVersion": "1.0.0", "name": "tunet", "type": "tuning",
                "dataDir": data, "prevResult": prev_result(&pod)
            });
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            let env: Vec<(&str, &str)> = args.map(|a| vec![("CNI_ARGS", a)]).unwrap_or_default();
            let cid = format!("cid-m{i}{j}");
            let o = plugin(&sb, bin, "ADD", &pod, &cid, &conf, &env);
            let res: Value = serde_json::from_str(&ok(&o)).unwrap();
            assert_eq!(
                link_state(&sb, &pod, "eth0")["mac"],
                want,
                "case {i} ({})",
                bin.display()
            );
            results.push(res["interfaces"][0]["mac"].clone());
            ok(&plugin(&sb, bin, "DEL", &pod, &cid, &conf, &env));
            assert_eq!(link_state(&sb, &pod, "eth0")["mac"], "02:00:00:00:00:01");
        }
        assert_eq!(results[0], results[1], "case {i}: result MAC");
        assert_eq!(results[0], want);
    }
}

/// In a chain after bridge + host-local: upstream's `IFNAME` placeholder with an
/// interface name that has a dot, `txQLen`, the record in CNICHAIN_STATE_DIR, CHECK
/// passing and then failing after each value is tampered with, DEL restoring and
/// removing the record, DEL twice.
#[test]
fn tuning_in_chain_ifname_txqlen_check_and_del() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tuchain");
    let pod = sb.pod("p");
    let podn = ns_name(&pod);
    sb.write_conflist(
        "tc.conflist",
        r#"{
  "cniVersion": "1.0.0",
  "name": "tuchain",
  "plugins": [
    { "type": "bridge", "bridge": "cni-tu0", "isGateway": true,
      "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.93.0.0/24" }]] } },
    { "type": "tuning",
      "sysctl": { "net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.conf.IFNAME.arp_ignore": "2", "net.core.somaxconn": "321" },
      "mtu": 1400, "txQLen": 500, "allmulti": true }
  ]
}"#,
    );
    let ifname = "e0.100";
    let env = [("CNI_IFNAME", ifname)];
    let before_somaxconn = sysctl(&sb, &pod, "net/core/somaxconn");
    let o = chain(&sb, &main_exec(), "add", "tuchain", &pod, &env);
    let res: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(res["interfaces"][2]["name"], ifname);
    let arp_filter = format!("net/ipv4/conf/{ifname}/arp_filter");
    let arp_ignore = format!("net/ipv4/conf/{ifname}/arp_ignore");
    assert_eq!(sysctl(&sb, &pod, &arp_filter), "1");
    assert_eq!(sysctl(&sb, &pod, &arp_ignore), "2");
    assert_eq!(sysctl(&sb, &pod, "net/core/somaxconn"), "321");
    let l = link_state(&sb, &pod, ifname);
    assert_eq!(l["mtu"], 1400);
    assert_eq!(l["txqlen"], 500);
    assert_eq!(l["flags"], json!(["ALLMULTI"]));
    // the record, in the state dir
    let recs = std::fs::read_dir(state_dir(&sb).join("tuning"))
        .unwrap()
        .flatten()
        .count();
    assert_eq!(recs, 1);

    ok(&chain(&sb, &main_exec(), "check", "tuchain", &pod, &env));
    let tamper = |set: &str, reset: &str, what: &str| {
        sh(&sb, &podn, set);
        let o = chain(&sb, &main_exec(), "check", "tuchain", &pod, &env);
        let e = cni_err(&o);
        assert!(e["msg"].as_str().unwrap_or("").contains(what), "{what}: {e}");
        sh(&sb, &podn, reset);
        ok(&chain(&sb, &main_exec(), "check", "tuchain", &pod, &env));
    };
    tamper(
        &format!("echo 0 > /proc/sys/{arp_filter}"),
        &format!("echo 1 > /proc/sys/{arp_filter}"),
        "arp_filter",
    );
    tamper(
        &format!("ip link set {ifname} txqueuelen 1000"),
        &format!("ip link set {ifname} txqueuelen 500"),
        "tx queue length",
    );
    tamper(
        &format!("ip link set {ifname} mtu 1500"),
        &format!("ip link set {ifname} mtu 1400"),
        "MTU",
    );
    tamper(
        &format!("ip link set {ifname} allmulticast off"),
        &format!("ip link set {ifname} allmulticast on"),
        "all-multicast",
    );
    tamper(
        &format!("ip link set {ifname} promisc on"),
        &format!("ip link set {ifname} promisc off"),
        "promisc",
    );

    ok(&chain(&sb, &main_exec(), "del", "tuchain", &pod, &env));
    assert_eq!(
        sysctl(&sb, &pod, "net/core/somaxconn"),
        before_somaxconn,
        "somaxconn restored"
    );
    assert!(tuning_records(&sb).is_empty(), "record left: {:?}", tuning_records(&sb));
    ok(&chain(&sb, &main_exec(), "del", "tuchain", &pod, &env));
}

/// DEL succeeds without a record, without a netns, and with a record whose netns is gone
/// (the record is then removed).
#[test]
fn tuning_del_without_record_or_netns() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tudel");
    let ours = our_plugin(&sb);
    let pod = veth_pod(&mut sb, "p");
    let conf = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "mtu": 1300,
                      "sysctl": {"net.core.somaxconn": "99"}, "prevResult": prev_result(&pod)});
    // no record
    ok(&plugin(&sb, &ours, "DEL", &pod, "cid-none", &conf, &[]));
    // no netns at all
    ok(&plugin(&sb, &ours, "DEL", "", "cid-none", &conf, &[]));
    ok(&plugin(
        &sb,
        &ours,
        "DEL",
        "/run/netns/does-not-exist-tudel",
        "cid-none",
        &conf,
        &[],
    ));
    // a record, then the netns goes away
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-gone", &conf, &[]));
    assert_eq!(tuning_records(&sb), vec!["tuning/cid-gone_eth0.json".to_string()]);
    let podn = ns_name(&pod);
    let _ = Command::new("ip").args(["netns", "del", &podn]).output();
    sb.netns.retain(|n| *n != podn);
    ok(&plugin(&sb, &ours, "DEL", &pod, "cid-gone", &conf, &[]));
    assert!(tuning_records(&sb).is_empty(), "record left: {:?}", tuning_records(&sb));
}

/// A record left by a pod that some other tool tore down (the reference's DEL does not
/// know cnichain's records) is stale once a new netns stands at the same path: a new ADD
/// replaces it instead of keeping its "before" values, and a DEL does not restore from
/// it. A retried ADD in the same pod keeps the first ADD's "before" values.
#[test]
fn tuning_stale_record_is_not_used() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tustale");
    let ours = our_plugin(&sb);
    let pod = veth_pod(&mut sb, "p");
    let podn = ns_name(&pod);
    let conf = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "mtu": 1300,
                      "sysctl": {"net.core.somaxconn": "99"}, "prevResult": prev_result(&pod)});
    let renew = |mtu: u32, somaxconn: &str| {
        let _ = Command::new("ip").args(["netns", "del", &podn]).output();
        let o = Command::new("ip").args(["netns", "add", &podn]).output().unwrap();
        assert!(o.status.success());
        sh(
            &sb,
            &podn,
            &format!(
                "ip link add eth0 type veth peer name eth0p && ip link set eth0 mtu {mtu} && \
                 echo {somaxconn} > /proc/sys/net/core/somaxconn"
            ),
        );
    };
    // ADD, then the pod goes without a cnichain DEL; a new pod at the same path
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-s", &conf, &[]));
    renew(1400, "555");
    // DEL there must not "restore" the old pod's values
    ok(&plugin(&sb, &ours, "DEL", &pod, "cid-s", &conf, &[]));
    assert_eq!(link_state(&sb, &pod, "eth0")["mtu"], 1400);
    assert_eq!(sysctl(&sb, &pod, "net/core/somaxconn"), "555");
    assert!(tuning_records(&sb).is_empty());
    // ADD, pod replaced, ADD again: the second record holds the new pod's values
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-s", &conf, &[]));
    renew(1450, "556");
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-s", &conf, &[]));
    assert_eq!(link_state(&sb, &pod, "eth0")["mtu"], 1300);
    ok(&plugin(&sb, &ours, "DEL", &pod, "cid-s", &conf, &[]));
    assert_eq!(link_state(&sb, &pod, "eth0")["mtu"], 1450);
    assert_eq!(sysctl(&sb, &pod, "net/core/somaxconn"), "556");
    assert!(tuning_records(&sb).is_empty());
    // a retried ADD in the same pod keeps the first ADD's "before" values
    let conf2 = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "mtu": 1200,
                       "sysctl": {"net.core.somaxconn": "98"}, "prevResult": prev_result(&pod)});
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-r", &conf, &[]));
    ok(&plugin(&sb, &ours, "ADD", &pod, "cid-r", &conf2, &[]));
    assert_eq!(link_state(&sb, &pod, "eth0")["mtu"], 1200);
    ok(&plugin(&sb, &ours, "DEL", &pod, "cid-r", &conf2, &[]));
    assert_eq!(link_state(&sb, &pod, "eth0")["mtu"], 1450);
    assert_eq!(sysctl(&sb, &pod, "net/core/somaxconn"), "556");
}

/// Keys escaping /proc/sys/net, malformed keys, bad MACs and numbers: code 7 naming the
/// key or field, and nothing changed in the pod (the valid entries next to the bad one
/// are not written either) and no record left. A value the kernel refuses in the middle
/// of ADD undoes what was already written.
#[test]
fn tuning_bad_input_changes_nothing() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tubad");
    let ours = our_plugin(&sb);
    let pod = veth_pod(&mut sb, "p");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let before_link = link_state(&sb, &pod, "eth0");
    let before = watched(&sb, &pod);
    let good = ("net.core.somaxconn", "4242");
    let bad_keys = [
        "net.ipv4.conf.eth0.../../../kernel/hostname",
        "net/../kernel.x",
        "kernel.hostname",
        "net..core",
        "net/core/somaxconn",
        "net.ipv4.conf.eth0/../../../../kernel/hostname",
        "net",
        "net.",
        "..net.core.somaxconn",
        "net.ipv4.conf.eth0.no_such_entry",
        "net.ipv4.conf.no_such_if.arp_filter",
    ];
    let mut cases: Vec<(Value, String)> = Vec::new();
    for k in bad_keys {
        let mut sysctls = serde_json::Map::new();
        sysctls.insert(good.0.into(), json!(good.1));
        sysctls.insert(k.into(), json!("1"));
        sysctls.insert("net.ipv4.conf.eth0.arp_filter".into(), json!("1"));
        cases.push((json!({"sysctl": sysctls, "mtu": 1300}), k.to_string()));
    }
    let with_good = |extra: Value| {
        let mut v = json!({"sysctl": {"net.core.somaxconn": "4242"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    cases.extend([
        (with_good(json!({"mac": "02:aa:bb:cc:dd"})), "mac".to_string()),
        (with_good(json!({"mac": "zz:aa:bb:cc:dd:ee"})), "mac".to_string()),
        (with_good(json!({"mac": "01:00:5e:00:00:01"})), "multicast".to_string()),
        (with_good(json!({"runtimeConfig": {"mac": "nope"}})), "runtimeConfig.mac".to_string()),
        (with_good(json!({"args": {"cni": {"mac": "02:00:00:00:00"}}})), "args.cni.mac".to_string()),
        (with_good(json!({"mtu": -1})), "mtu".to_string()),
        (with_good(json!({"mtu": "1400"})), "mtu".to_string()),
        (with_good(json!({"txQLen": -5})), "txQLen".to_string()),
        (with_good(json!({"promisc": "yes"})), "promisc".to_string()),
        (json!({"sysctl": {"net.core.somaxconn": 5}}), "net.core.somaxconn".to_string()),
        (json!({"sysctl": ["net.core.somaxconn"]}), "sysctl".to_string()),
        (
            json!({"sysctl": {"net.core.somaxconn": "4242", "net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.conf.eth0.arp_filter": "0"}}),
            "duplicated".to_string(),
        ),
        (
            with_good(json!({"args": {"cni": {"sysctl": {"kernel.hostname": "pwned"}}}})),
            "kernel.hostname".to_string(),
        ),
    ]);
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let mut conf =
            json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "prevResult": prev_result(&pod)});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let o = plugin(&sb, &ours, "ADD", &pod, &format!("cid-bad{i}"), &conf, &[]);
        let e = cni_err(&o);
        assert_eq!(e["code"], 7, "case {i} ({needle}): {e}");
        // the reference's text in msg, cnichain's help (the field, why) in details
        let shown = format!(
            "{} {}",
            e["msg"].as_str().unwrap_or(""),
            e["details"].as_str().unwrap_or("")
        );
        assert!(shown.contains(needle.as_str()), "case {i}: {e} does not name {needle}");
        assert_eq!(watched(&sb, &pod), before, "case {i} ({needle}) changed a sysctl");
        assert_eq!(
            link_state(&sb, &pod, "eth0"),
            before_link,
            "case {i} ({needle}) changed the link"
        );
        assert!(tuning_records(&sb).is_empty(), "case {i}: record left");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
        hostname
    );

    // CNI_ARGS with an unknown key (no IgnoreUnknown): code 4, nothing written
    let conf = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "mtu": 1300,
                      "sysctl": {"net.core.somaxconn": "4242"}, "prevResult": prev_result(&pod)});
    let o = plugin(&sb, &ours, "ADD", &pod, "cid-args", &conf, &[("CNI_ARGS", "FOO=bar")]);
    assert_eq!(code_of(&o), 4);
    assert_eq!(watched(&sb, &pod), before);
    // no prevResult
    let mut np = conf.clone();
    np.as_object_mut().unwrap().remove("prevResult");
    let o = plugin(&sb, &ours, "ADD", &pod, "cid-np", &np, &[]);
    assert!(cni_err(&o)["msg"].as_str().unwrap_or("").contains("prevResult"));
    assert_eq!(watched(&sb, &pod), before);

    // the kernel refuses a value after others were written: all undone, no record
    let conf = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.core.somaxconn": "4242",
                   "net.ipv4.conf.eth0.arp_announce": "not-a-number"},
        "mtu": 1300, "prevResult": prev_result(&pod)});
    let o = plugin(&sb, &ours, "ADD", &pod, "cid-kern", &conf, &[]);
    cni_err(&o);
    assert_eq!(watched(&sb, &pod), before, "partial ADD not undone");
    assert_eq!(link_state(&sb, &pod, "eth0"), before_link);
    assert!(tuning_records(&sb).is_empty(), "record left after a failed ADD");
    // an MTU the device refuses, after the sysctls were written
    let conf = json!({"cniVersion": "1.0.0", "name": "tunet", "type": "tuning",
        "sysctl": {"net.core.somaxconn": "4242"}, "mac": "02:00:00:00:00:77",
        "mtu": 70000, "prevResult": prev_result(&pod)});
    let o = plugin(&sb, &ours, "ADD", &pod, "cid-mtu", &conf, &[]);
    cni_err(&o);
    assert_eq!(watched(&sb, &pod), before, "partial ADD not undone");
    assert_eq!(link_state(&sb, &pod, "eth0"), before_link, "MAC not undone");
    assert!(tuning_records(&sb).is_empty());
}

/// A bad key in a chain: the engine passes the stage's error through (code 7), the pod's
/// sysctls are unchanged.
#[test]
fn tuning_bad_key_in_chain() {
    require_root("netns, veth, bridges, the reference tuning plugin");
    let mut sb = Sandbox::new("tubadc");
    let pod = sb.pod("p");
    sb.write_conflist(
        "tb.conflist",
        r#"{
  "cniVersion": "1.0.0",
  "name": "tubad",
  "plugins": [
    { "type": "bridge", "bridge": "cni-tb0",
      "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.94.0.0/24" }]] } },
    { "type": "tuning",
      "sysctl": { "net.core.somaxconn": "1234", "net.ipv4.conf.eth0.../../../kernel/hostname": "x" } }
  ]
}"#,
    );
    let before = sysctl(&sb, &pod, "net/core/somaxconn");
    let o = chain(&sb, &main_exec(), "add", "tubad", &pod, &[]);
    let e = cni_err(&o);
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap_or("").contains("kernel/hostname"), "{e}");
    assert_eq!(sysctl(&sb, &pod, "net/core/somaxconn"), before);
    assert!(tuning_records(&sb).is_empty());
    ok(&chain(&sb, &main_exec(), "del", "tubad", &pod, &[]));
}
