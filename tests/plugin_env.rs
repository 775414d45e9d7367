//! Issue 11.4, differential: the drop-ins accept what the reference plugins accept in
//! CNI_ARGS and CNI_NETNS, and refuse the rest with the reference's msg. Each case runs
//! the reference binary and the drop-in on the same input in the same throwaway host
//! netns (separate IPAM dirs) and compares success and msg. The CLI keeps cnitool's
//! stricter CNI_ARGS rule.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

/// (success, msg or the result)
fn outcome(o: &Output) -> (bool, Value) {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    if o.status.success() {
        (true, v)
    } else {
        (false, v["msg"].clone())
    }
}

fn call(sb: &Sandbox, bin: &Path, t: &str, cmd: &str, cid: &str, netns: &str, args: &str, conf: &Value) -> Output {
    let mut c = sb.in_host(&bin.join(t));
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin)
        .env("CNI_ARGS", args);
    pipe(c, &conf.to_string())
}

fn conf(t: &str, ipam_dir: &Path) -> Value {
    let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/some/where"}],
                      "ips":[{"address":"10.95.1.2/24","interface":0}]});
    let mut c = json!({"cniVersion":"1.0.0","name":"envnet","type": t, "prevResult": prev});
    match t {
        "bridge" | "ptp" => {
            c["ipam"] = json!({"type":"static","addresses":[{"address":"10.95.1.2/24"}]});
        }
        "host-local" => {
            c["ipam"] = json!({"type":"host-local","dataDir": ipam_dir,"ranges":[[{"subnet":"10.95.0.0/24"}]]});
        }
        "static" => {
            c["ipam"] = json!({"type":"static","addresses":[{"address":"10.95.1.2/24"}]});
        }
        _ => {}
    }
    c
}

/// Differences kept on purpose (README "Differences from the reference"): tuning's DEL
/// does not parse CNI_ARGS (it needs only its record); with a bad CNI_ARGS and a
/// missing netns ptp names the netns first on ADD (it opens the pod before its IPAM so
/// that the host's own netns is refused before anything is allocated) and the CNI_ARGS
/// first on CHECK; bandwidth's CHECK text has a Go formatting bug (`%!q(<nil>)`).
fn deliberate(t: &str, cmd: &str, args_bad: bool) -> bool {
    (t == "tuning" && cmd == "DEL" && args_bad)
        || (t == "ptp" && args_bad && cmd != "DEL")
        || (t == "bandwidth" && cmd == "CHECK")
}

#[test]
fn drop_ins_take_cni_args_and_cni_netns_like_the_reference() {
    require_root("netns, veth, the reference plugins");
    let sb = Sandbox::new("envdiff");
    let bin = install(&sb);
    let ref_bin = PathBuf::from(REF_PLUGINS);
    let args_cases = [
        ("", false),
        ("none", true),
        ("A=1", true),
        ("IgnoreUnknown=1;A=1", false),
        ("A=1=2", true),
        ("IgnoreUnknown=x;A=1", true),
        (";", true),
        ("A=;=B;IgnoreUnknown=true", false),
    ];
    let types = [
        "bridge",
        "ptp",
        "host-local",
        "static",
        "tuning",
        "loopback",
        "portmap",
        "bandwidth",
    ];
    let (mut same, mut skipped) = (0, 0);
    let mut diffs = Vec::new();
    for (i, (args, bad)) in args_cases.iter().enumerate() {
        for cmd in ["ADD", "DEL", "CHECK"] {
            for t in types {
                let cid = format!("c{i}");
                let r = outcome(&call(
                    &sb,
                    &ref_bin,
                    t,
                    cmd,
                    &cid,
                    "/some/where",
                    args,
                    &conf(t, &sb.dir.join("ipam-ref")),
                ));
                let o = outcome(&call(
                    &sb,
                    &bin,
                    t,
                    cmd,
                    &cid,
                    "/some/where",
                    args,
                    &conf(t, &sb.dir.join("ipam-ours")),
                ));
                if deliberate(t, cmd, *bad) {
                    skipped += 1;
                } else if r == o {
                    same += 1;
                } else {
                    diffs.push(format!("{t} {cmd} CNI_ARGS={args:?}: reference {r:?}, cnichain {o:?}"));
                }
            }
        }
    }
    eprintln!("{same} cases the same, {skipped} deliberate differences skipped");
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(same > 100, "{same}");
}

/// The reference's own unit tests: loopback with CNI_ARGS=none, host-local with
/// CNI_NETNS=/some/where. Same results as the reference.
#[test]
fn reference_unit_test_inputs_work() {
    require_root("netns, veth, the reference plugins");
    let mut sb = Sandbox::new("envunit");
    let bin = install(&sb);
    let ref_bin = PathBuf::from(REF_PLUGINS);
    let lo = json!({"cniVersion":"1.0.0","name":"envnet","type":"loopback"});
    let mut results = Vec::new();
    for b in [&ref_bin, &bin] {
        let pod = sb.pod(if *b == ref_bin { "r" } else { "o" });
        let o = call(&sb, b, "loopback", "ADD", "c1", &pod, "none", &lo);
        let mut v: Value = serde_json::from_str(&ok(&o)).unwrap();
        v["interfaces"][0]["sandbox"] = json!("<pod>");
        results.push(v);
        ok(&call(&sb, b, "loopback", "DEL", "c1", &pod, "none", &lo));
    }
    assert_eq!(results[0], results[1]);

    let mut results = Vec::new();
    for (b, dir) in [(&ref_bin, "hl-ref"), (&bin, "hl-ours")] {
        let hl = json!({"cniVersion":"1.0.0","name":"envnet","type":"host-local",
            "ipam":{"type":"host-local","dataDir": sb.dir.join(dir),"ranges":[[{"subnet":"10.96.0.0/24"}]]}});
        let o = call(&sb, b, "host-local", "ADD", "c1", "/some/where", "", &hl);
        results.push(serde_json::from_str::<Value>(&ok(&o)).unwrap());
        ok(&call(&sb, b, "host-local", "DEL", "c1", "/some/where", "", &hl));
    }
    assert_eq!(results[0], results[1]);
}

/// The CLI consumes CNI_ARGS itself: cnitool's rule (non-empty key and value) and msg.
#[test]
fn the_cli_keeps_cnitools_rule() {
    require_root("netns, veth, the reference plugins");
    let mut sb = Sandbox::new("envcli");
    let pod = sb.pod("p");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &json!({"cniVersion":"1.0.0","name": net,"plugins":[{"type":"loopback"}]}).to_string(),
    );
    for bad in ["none", "A=", "=B", "A=1=2"] {
        let e = cni_err(&sb.cnichain(REF_PLUGINS, &["--args", bad, "add", &net, &pod]));
        assert_eq!(e["code"], 4, "{e}");
        assert_eq!(e["msg"], format!("invalid CNI_ARGS pair {bad:?}"), "{e}");
    }
    ok(&sb.cnichain(
        REF_PLUGINS,
        &["--args", "IgnoreUnknown=1;K8S_POD_NAME=x", "add", &net, &pod],
    ));
    ok(&sb.cnichain(REF_PLUGINS, &["del", &net, &pod]));
}
