//! `cnichain inspect` on a node (the test's host netns and temp state dirs) holding an
//! attachment in every state: live, stale (netns gone), in-progress (ADD killed before
//! its cache entry: lock, no cache), orphan (a failed ADD left without rollback: objects
//! and records, no cache, no lock), and one made by the reference plugins through
//! libcni's cnitool. Each row's state and fields are checked in the JSON, and inspect
//! changes nothing (files and kernel).

mod common;
use common::kstate::settled as kernel_settled;
use common::snapshot::{assert_unchanged, Snapshot};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn conflist(net: &str, br: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
  {{"type":"bridge","bridge":"{br}","isGateway":true,"ipMasq":true,
    "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"10.98.1.0/24"}}]]}}}},
  {{"type":"tuning","sysctl":{{"net.ipv4.conf.IFNAME.arp_filter":"1"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}},
  {{"type":"bandwidth","capabilities":{{"bandwidth":true}}}}]}}"#
    )
}

fn caps(port: u16) -> String {
    json!({
        "portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000}
    })
    .to_string()
}

/// The pod address the host-local store gave `cid`, from the store itself.
fn reserved_ip(dir: &Path, net: &str, cid: &str) -> String {
    for e in std::fs::read_dir(dir.join(net)).expect("store").flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if text.starts_with(cid) {
            return e.file_name().to_string_lossy().into_owned();
        }
    }
    panic!("no reservation of {cid} in {}", dir.display());
}

fn rows(out: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("inspect JSON ({e}): {out}"));
    assert_eq!(v["version"], 1);
    v["attachments"].as_array().expect("attachments").clone()
}

fn row<'a>(rows: &'a [Value], cid: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["containerId"] == cid)
        .unwrap_or_else(|| panic!("no row for {cid} in {rows:#?}"))
}

#[test]
fn inspect_shows_every_state_and_changes_nothing() {
    assert!(is_root(), "this test needs root (namespaces, nftables, tc)");
    let mut sb = Sandbox::new("insp");
    let net = format!("{}-n", sb.tag);
    let br = format!("in{}", std::process::id() % 100000);
    sb.write_conflist("10-insp.conflist", &conflist(&net, &br));
    let ipam = sb.ipam_dir();

    let add = |sb: &Sandbox, cid: &str, pod: &str, port: u16, extra: &[(&str, &str)], args: &[&str]| {
        let mut c = sb.in_host(&cnichain_bin());
        for (k, v) in extra {
            c.env(k, v);
        }
        let caps = caps(port);
        let mut argv = vec!["--container-id", cid, "--cap-args", caps.as_str()];
        argv.extend_from_slice(args);
        argv.extend(["add", net.as_str(), pod]);
        c.args(argv).output().expect("run cnichain")
    };

    // live
    let pod_a = sb.pod("a");
    let res_a: Value = serde_json::from_str(&ok(&add(&sb, "live-a", &pod_a, 8080, &[], &[]))).expect("result");
    // stale: its netns removed behind cnichain's back
    let pod_b = sb.pod("b");
    ok(&add(&sb, "stale-b", &pod_b, 8081, &[], &[]));
    ok(&std::process::Command::new("ip")
        .args(["netns", "del", &ns_name(&pod_b)])
        .output()
        .expect("ip"));
    // in-progress: an ADD killed (like kill -9) just before its cache entry
    let pod_c = sb.pod("c");
    let o = add(
        &sb,
        "prog-c",
        &pod_c,
        8082,
        &[("CNICHAIN_FAULT", "chain.before-cache:abort")],
        &[],
    );
    assert!(!o.status.success(), "the ADD must have been killed");
    // orphan: an attachment whose cache entry and lock file were wiped (a runtime's state
    // dirs cleared while the host kept running): its objects and records stay
    let pod_d = sb.pod("d");
    ok(&add(&sb, "orph-d", &pod_d, 8083, &[], &[]));
    for f in [
        sb.cache_dir().join(format!("results/{net}-orph-d-eth0")),
        sb.dir.join(format!("state/locks/{net}/orph-d:eth0.lock")),
    ] {
        std::fs::remove_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }

    let state = sb.dir.join("state");
    let roots_owned: Vec<(String, PathBuf)> = vec![
        ("state".into(), state.clone()),
        ("cache".into(), sb.cache_dir()),
        ("ipam".into(), ipam.clone()),
    ];
    let roots: Vec<(&str, &Path)> = roots_owned.iter().map(|(l, p)| (l.as_str(), p.as_path())).collect();
    let files = Snapshot::take(&roots);
    let kernel = kernel_settled(&sb.host());

    let out = ok(&sb.cnichain("", &["inspect", "--format", "json"]));
    let table = ok(&sb.cnichain("", &["inspect", &net]));
    eprintln!("{table}");
    assert_unchanged(&files, &roots, "inspect");
    let d = kernel.diff(&kernel_settled(&sb.host()));
    assert!(d.is_empty(), "inspect changed the kernel: {d:?}");

    let all = rows(&out);
    let ifnames = |v: &Value| v["ifname"].as_str().unwrap_or_default().to_string();
    for r in &all {
        assert_eq!(r["network"], net.as_str(), "only this sandbox's network: {r}");
        assert_eq!(ifnames(r), "eth0");
    }
    assert_eq!(all.len(), 4, "{all:#?}");

    let a = row(&all, "live-a");
    let ip_a = reserved_ip(&ipam, &net, "live-a");
    let names: Vec<&str> = res_a["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    let veth_a = names.iter().find(|n| n.starts_with("veth")).expect("veth");
    let ifb_a = names.iter().find(|n| n.starts_with("bwp")).expect("ifb");
    assert_eq!(a["state"], "live");
    assert_eq!(a["madeBy"], "cnichain");
    assert_eq!(a["netns"], pod_a.as_str());
    assert_eq!(
        (a["netnsAlive"].as_bool(), a["cache"].as_bool(), a["lock"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(a["addresses"], json!([ip_a]));
    assert_eq!(a["hostVeth"], *veth_a);
    assert_eq!(a["ifb"], *ifb_a);
    assert_eq!(a["ingressRate"], 8000000);
    assert_eq!(a["egressRate"], 4000000);
    assert_eq!(
        a["hostPorts"],
        json!([{"protocol": "tcp", "hostIP": "", "hostPort": 8080, "podIP": ip_a, "podPort": 80, "source": "nftables"}])
    );
    assert_eq!(a["masquerade"], json!([format!("{ip_a}/24")]));
    let rec = state.join("tuning/live-a_eth0.json");
    assert!(rec.exists());
    assert_eq!(a["tuningRecord"], rec.display().to_string());
    assert_eq!(
        a["nftOwners"].as_array().map(|v| v.len()),
        Some(2),
        "portmap and ipMasq: {a}"
    );

    let b = row(&all, "stale-b");
    assert_eq!(b["state"], "stale");
    assert_eq!(
        (b["netnsAlive"].as_bool(), b["cache"].as_bool(), b["lock"].as_bool()),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(b["addresses"], json!([reserved_ip(&ipam, &net, "stale-b")]));
    assert_eq!(b["hostPorts"][0]["hostPort"], 8081);
    assert_eq!(b["hostVeth"], Value::Null, "the veth went with its netns");

    let c = row(&all, "prog-c");
    assert_eq!(c["state"], "in-progress");
    assert_eq!((c["cache"].as_bool(), c["lock"].as_bool()), (Some(false), Some(true)));
    assert_eq!(c["netns"], pod_c.as_str(), "from its tuning record");
    assert_eq!(c["netnsAlive"], true);
    assert_eq!(c["addresses"], json!([reserved_ip(&ipam, &net, "prog-c")]));
    assert_eq!(c["hostPorts"][0]["hostPort"], 8082);
    assert_eq!(c["ingressRate"], 8000000);

    let dd = row(&all, "orph-d");
    assert_eq!(dd["state"], "orphan");
    assert_eq!(dd["madeBy"], "cnichain");
    assert_eq!(
        (dd["cache"].as_bool(), dd["lock"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(dd["addresses"], json!([reserved_ip(&ipam, &net, "orph-d")]));
    assert!(
        dd["hostVeth"].as_str().is_some_and(|v| v.starts_with("veth")),
        "found by its alias: {dd}"
    );
    assert!(
        dd["ifb"].as_str().is_some_and(|v| v.starts_with("bwp")),
        "found by its alias: {dd}"
    );
    assert_eq!(
        (dd["ingressRate"].as_u64(), dd["egressRate"].as_u64()),
        (Some(8000000), Some(4000000))
    );
    assert_eq!(dd["netns"], pod_d.as_str(), "from its tuning record");
    assert_eq!(dd["hostPorts"][0]["hostPort"], 8083);
    assert!(dd["tuningRecord"].is_string());

    // The table names the same rows.
    for (cid, st) in [
        ("live-a", "live"),
        ("stale-b", "stale"),
        ("prog-c", "in-progress"),
        ("orph-d", "orphan"),
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(st) && l.contains(cid)),
            "table row {cid} {st}:\n{table}"
        );
    }

    // Clean up what the test made (the netns removal takes the rest).
    for (cid, pod, port) in [
        ("live-a", &pod_a, 8080),
        ("stale-b", &pod_b, 8081),
        ("prog-c", &pod_c, 8082),
        ("orph-d", &pod_d, 8083),
    ] {
        let caps = caps(port);
        ok(&sb.cnichain("", &["--container-id", cid, "--cap-args", &caps, "del", &net, pod]));
    }
    let _ = std::process::Command::new("ip")
        .args(["-n", &sb.host(), "link", "del", &br])
        .output();
}

/// An attachment the reference plugins made through libcni (the peer cnitool, which
/// writes libcni's fixed cache dir): only the cache and the host-local store show it.
#[test]
fn inspect_shows_reference_attachments_from_the_libcni_cache() {
    assert!(is_root(), "this test needs root (namespaces)");
    let mut sb = Sandbox::new("insr");
    let net = format!("{}-n", sb.tag);
    let _cleanup = ResultsCleanup(net.clone());
    let br = format!("ir{}", std::process::id() % 100000);
    sb.write_conflist(
        "10-ref.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
  {{"type":"bridge","bridge":"{br}","isGateway":true,
    "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"10.98.2.0/24"}}]]}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#
        ),
    );
    let pod = sb.pod("p");
    let caps = r#"{"portMappings":[{"hostPort":9090,"containerPort":90,"protocol":"udp"}]}"#;
    let cnitool = |verb: &str| {
        let mut c = sb.in_host(&peer_cnitool());
        c.env("CNI_PATH", REF_PLUGINS)
            .env("CAP_ARGS", caps)
            .args([verb, &net, &pod]);
        c.output().expect("run cnitool")
    };
    let res: Value = serde_json::from_str(&ok(&cnitool("add"))).expect("result");
    let veth = res["interfaces"][1]["name"].as_str().expect("host veth").to_string();
    let ip = res["ips"][0]["address"]
        .as_str()
        .expect("ip")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();

    let files = Snapshot::take(&[("state", &sb.dir.join("state")), ("ipam", &sb.ipam_dir())]);
    let out = ok(&sb.cnichain(
        "",
        &["--cache-dir", "/var/lib/cni", "inspect", &net, "--format", "json"],
    ));
    assert_unchanged(
        &files,
        &[("state", &sb.dir.join("state")), ("ipam", &sb.ipam_dir())],
        "inspect",
    );
    let all = rows(&out);
    assert_eq!(all.len(), 1, "{all:#?}");
    let r = &all[0];
    assert_eq!(r["state"], "live");
    assert_eq!(r["madeBy"], "other");
    assert_eq!((r["cache"].as_bool(), r["lock"].as_bool()), (Some(true), Some(false)));
    assert_eq!(r["netnsAlive"], true);
    assert_eq!(r["netns"], pod.as_str(), "from the result's sandbox or the cache");
    assert_eq!(r["addresses"], json!([ip]));
    assert_eq!(r["hostVeth"], veth.as_str());
    assert_eq!(
        r["hostPorts"],
        json!([{"protocol": "udp", "hostIP": "", "hostPort": 9090, "podIP": ip, "podPort": 90, "source": "cache"}])
    );
    assert_eq!(r["nftOwners"], json!([]));

    // reconcile leaves it alone: no lock file, not cnichain's.
    let out = ok(&sb.cnichain("", &["--cache-dir", "/var/lib/cni", "reconcile", &net]));
    assert_eq!(out.trim(), "nothing to do (0 live attachments checked)");
    ok(&cnitool("del"));
    let _ = std::process::Command::new("ip")
        .args(["-n", &sb.host(), "link", "del", &br])
        .output();
}
