//! The in-process bandwidth stage against a real kernel and against the reference plugin
//! (containernetworking-plugins 1.1.1 in /usr/lib/cni): the same conflist runs in two
//! sandboxes, once with every plugin exec'd from /usr/lib/cni and once with bandwidth
//! in-process, and the tc state (`tc -raw -j qdisc show`, `tc -j filter show`) and the
//! results must agree. Then CHECK (and CHECK after tampering), DEL, DEL again, bad
//! input, and real traffic through a 1 Mbit/s shaped path in each direction.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The main plugins run through the exec fallback (the reference bridge and host-local)
/// so that these tests exercise only the bandwidth stage.
const MAIN_EXEC: &str = "bridge,host-local";

/// The exec policy for the in-process runs: `CNICHAIN_TEST_MAIN_EXEC` (e.g. `none`, to
/// run the in-process bridge and host-local too), by default [`MAIN_EXEC`].
fn main_exec() -> String {
    std::env::var("CNICHAIN_TEST_MAIN_EXEC")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| MAIN_EXEC.to_string())
}

fn chain(sb: &Sandbox, exec: &str, verb: &str, net: &str, pod: &str, cap_args: Option<&str>) -> Output {
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", REF_PLUGINS)
        .env("CNICHAIN_STATE_DIR", sb.dir.join("state"));
    if let Some(a) = cap_args {
        c.env("CAP_ARGS", a);
    }
    c.args(["--exec", exec, verb, net, pod]);
    c.output().expect("run cnichain")
}

/// cnitool's container ID for a netns path (what `cnichain add` uses).
fn container_id(netns: &str) -> String {
    format!("cnitool-{}", &sha512_hex(netns)[..20])
}

fn sha512_hex(s: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha512sum | cut -d' ' -f1", "sh", s])
        .output()
        .expect("sha512sum");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The reference's ifb name: bwp + sha512(network name + container ID), 15 characters.
fn ifb_name(net: &str, cid: &str) -> String {
    format!("bwp{}", &sha512_hex(&format!("{net}{cid}"))[..12])
}

/// The host veths of the sandbox (the bridge's ports).
fn host_veths(sb: &Sandbox) -> Vec<String> {
    let out = sh(
        sb,
        &sb.host(),
        "ip -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1",
    );
    out.lines().map(String::from).filter(|l| !l.is_empty()).collect()
}

fn conflist(net: &str, subnet: &str, bw: Value) -> String {
    let mut bw = bw;
    bw["type"] = json!("bandwidth");
    json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [
            {"type": "bridge", "bridge": "cni-bw0", "isGateway": true,
             "ipam": {"type": "host-local", "dataDir": "@IPAM@", "ranges": [[{"subnet": subnet}]]}},
            bw
        ]
    })
    .to_string()
}

/// The sandbox's tc state for the attachment, names normalized.
#[derive(Debug, PartialEq)]
struct TcState {
    qdiscs: Vec<Value>,
    /// The u32 filters on the veth's ingress qdisc (hash-table entries included), with
    /// only the first action of each (the reference adds a second, unreachable one).
    filters: Vec<Value>,
    /// How many actions the redirect filter carries.
    actions: usize,
    ifb: Option<Value>,
}

fn tc_state(sb: &Sandbox, ifb: &str) -> TcState {
    let host = sb.host();
    let veths = host_veths(sb);
    assert_eq!(veths.len(), 1, "{veths:?}");
    let veth = &veths[0];
    let rename = |v: &mut Value| {
        let s = v.to_string().replace(veth.as_str(), "<veth>").replace(ifb, "<ifb>");
        *v = serde_json::from_str(&s).unwrap();
    };
    let q: Value = serde_json::from_str(&sh(sb, &host, "tc -raw -j qdisc show")).unwrap();
    let mut qdiscs: Vec<Value> = q
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["dev"] == json!(veth) || q["dev"] == json!(ifb))
        .cloned()
        .map(|mut q| {
            q.as_object_mut().map(|o| o.remove("refcnt"));
            rename(&mut q);
            q
        })
        .collect();
    qdiscs.sort_by_key(|q| q.to_string());
    let f: Value = serde_json::from_str(&sh(sb, &host, &format!("tc -j filter show dev {veth} ingress"))).unwrap();
    let mut actions = 0;
    let filters: Vec<Value> = f
        .as_array()
        .into_iter()
        .flatten()
        .cloned()
        .map(|mut f| {
            if let Some(a) = f["options"]["actions"].as_array_mut() {
                actions = a.len();
                a.truncate(1);
                for x in a.iter_mut() {
                    if let Some(o) = x.as_object_mut() {
                        for k in ["index", "ref", "bind"] {
                            o.remove(k);
                        }
                    }
                }
            }
            rename(&mut f);
            f
        })
        .collect();
    let ifb = if ifb.is_empty() {
        None
    } else {
        let o = sb.sh_in(&host, &format!("ip -j -d link show dev {ifb}"));
        o.status.success().then(|| {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            json!({"mtu": v[0]["mtu"], "up": v[0]["flags"].as_array().is_some_and(|f| f.contains(&json!("UP"))),
                   "kind": v[0]["linkinfo"]["info_kind"], "txqlen": v[0]["txqlen"]})
        })
    };
    TcState {
        qdiscs,
        filters,
        actions,
        ifb,
    }
}

/// The result with the names and MACs that differ by nature normalized.
fn normalize_result(mut r: Value, pod: &str, ifb: &str) -> Value {
    for i in r["interfaces"].as_array_mut().into_iter().flatten() {
        i["mac"] = json!("<mac>");
        let name = i["name"].as_str().unwrap_or("").to_string();
        if name.starts_with("veth") {
            i["name"] = json!("<veth>");
        }
        if name == ifb {
            i["name"] = json!("<ifb>");
        }
        if i["sandbox"] == json!(pod) {
            i["sandbox"] = json!("<pod>");
        }
    }
    r
}

struct Observed {
    result: Value,
    tc: TcState,
}

/// ADD, observe, CHECK (also with the other implementation when `cross` names its exec
/// policy), DEL, check nothing is left, DEL again.
fn lifecycle(tag: &str, exec: &str, text: &str, cap_args: Option<&str>, cross: Option<&str>) -> Observed {
    let mut sb = Sandbox::new(tag);
    let pod = sb.pod("p");
    let net = serde_json::from_str::<Value>(text).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    sb.write_conflist("bw.conflist", text);
    let ifb = ifb_name(&net, &container_id(&pod));
    let o = chain(&sb, exec, "add", &net, &pod, cap_args);
    let res: Value = serde_json::from_str(&ok(&o)).unwrap_or_else(|e| panic!("{exec}: {e}"));
    let tc = tc_state(&sb, &ifb);
    let o = chain(&sb, exec, "check", &net, &pod, cap_args);
    assert!(o.status.success(), "{exec}: CHECK failed: {}", stdout(&o));
    if let Some(other) = cross {
        let o = chain(&sb, other, "check", &net, &pod, cap_args);
        assert!(
            o.status.success(),
            "CHECK by {other} of what {exec} made failed: {}",
            stdout(&o)
        );
    }
    ok(&chain(&sb, exec, "del", &net, &pod, cap_args));
    let left = sh(&sb, &sb.host(), "ip -o link show type ifb | wc -l");
    assert_eq!(left, "0", "{exec}: ifb left");
    ok(&chain(&sb, exec, "del", &net, &pod, cap_args));
    Observed {
        result: normalize_result(res, &pod, &ifb),
        tc,
    }
}

/// Reference and in-process must agree on the result and the tc state. Returns the
/// in-process state.
fn compare(tag: &str, text: &str, cap_args: Option<&str>) -> TcState {
    let reference = lifecycle(&format!("{tag}r"), "all", text, cap_args, Some(&main_exec()));
    let ours = lifecycle(&format!("{tag}o"), &main_exec(), text, cap_args, Some("all"));
    assert_eq!(ours.result, reference.result, "{tag}: results differ");
    assert_eq!(ours.tc.qdiscs, reference.tc.qdiscs, "{tag}: qdiscs differ");
    assert_eq!(ours.tc.filters, reference.tc.filters, "{tag}: filters differ");
    // The reference's netlink library adds a second mirred action (pass) after the
    // redirect (stolen), which never runs; cnichain installs the one that does.
    if reference.tc.actions > 0 {
        assert_eq!(reference.tc.actions, 2);
        assert_eq!(ours.tc.actions, 1);
    }
    match (&ours.tc.ifb, &reference.tc.ifb) {
        (Some(o), Some(r)) => {
            // txqlen: the veth's (0 for veths the reference bridge makes), as upstream
            // and, by way of its netlink library's zero value, 1.1.1.
            for k in ["mtu", "up", "kind", "txqlen"] {
                assert_eq!(o[k], r[k], "{tag}: ifb {k}");
            }
        }
        (None, None) => {}
        (o, r) => panic!("{tag}: ifb {o:?} vs reference {r:?}"),
    }
    ours.tc
}

#[test]
fn bandwidth_matches_reference_both_directions() {
    require_root("netns, veth, tc");
    let text = conflist(
        "bwdiff",
        "10.95.0.0/24",
        json!({"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 2000000, "egressBurst": 200000}),
    );
    let tc = compare("bwd", &text, None);
    let tbfs: Vec<&Value> = tc.qdiscs.iter().filter(|q| q["kind"] == "tbf").collect();
    assert_eq!(tbfs.len(), 2, "{:?}", tc.qdiscs);
    let on = |dev: &str| {
        tbfs.iter()
            .find(|q| q["dev"] == dev)
            .map(|q| q["options"].clone())
            .unwrap()
    };
    assert_eq!(on("<veth>")["rate"], 125000);
    assert_eq!(on("<veth>")["burst"], 12500);
    assert_eq!(on("<veth>")["limit"], 3125 + 12500);
    assert_eq!(on("<veth>")["lat"], 25000);
    assert_eq!(on("<ifb>")["rate"], 250000);
    assert_eq!(on("<ifb>")["limit"], 6250 + 25000);
    assert!(tc.qdiscs.iter().any(|q| q["kind"] == "ingress" && q["dev"] == "<veth>"));
}

/// Rates whose burst time is not a whole number of microseconds: the reference truncates
/// the tbf buffer to whole microseconds and then to whole 64 ns ticks, and so does
/// cnichain: the tc state is the same to the last unit (tests/bandwidth_diff.rs runs a
/// whole table of such pairs).
#[test]
fn bandwidth_matches_reference_odd_values() {
    require_root("netns, veth, tc");
    let text = conflist(
        "bwodd",
        "10.95.1.0/24",
        json!({"ingressRate": 3000000, "ingressBurst": 123456, "egressRate": 777777, "egressBurst": 99999}),
    );
    let tc = compare("bwodd", &text, None);
    assert_eq!(tc.qdiscs.iter().filter(|q| q["kind"] == "tbf").count(), 2);
}

/// The `bandwidth` capability, and which entry wins: the plugin config's own keys
/// (even all zero) over runtimeConfig, never merged (reference 1.1.1 getBandwidth).
#[test]
fn bandwidth_capability_and_precedence_match_reference() {
    require_root("netns, veth, tc");
    let cap = r#"{"bandwidth": {"ingressRate": 2000000, "ingressBurst": 160000, "egressRate": 4000000, "egressBurst": 320000}}"#;
    // runtime only
    let text = conflist("bwcap", "10.95.2.0/24", json!({"capabilities": {"bandwidth": true}}));
    let tc = compare("bwc1", &text, Some(cap));
    assert_eq!(tc.qdiscs.iter().filter(|q| q["kind"] == "tbf").count(), 2);
    assert!(tc.qdiscs.iter().any(|q| q["options"]["rate"] == 250000));
    // plain zeros win: nothing shaped
    let text = conflist(
        "bwcap",
        "10.95.2.0/24",
        json!({"capabilities": {"bandwidth": true}, "ingressRate": 0, "ingressBurst": 0}),
    );
    let tc = compare("bwc2", &text, Some(cap));
    assert!(tc.qdiscs.iter().all(|q| q["kind"] != "tbf"), "{:?}", tc.qdiscs);
    // plain ingress only: the runtime's egress is ignored
    let text = conflist(
        "bwcap",
        "10.95.2.0/24",
        json!({"capabilities": {"bandwidth": true}, "ingressRate": 1000000, "ingressBurst": 80000}),
    );
    let tc = compare("bwc3", &text, Some(cap));
    let tbfs: Vec<&Value> = tc.qdiscs.iter().filter(|q| q["kind"] == "tbf").collect();
    assert_eq!(tbfs.len(), 1);
    assert_eq!(tbfs[0]["options"]["rate"], 125000);
    assert!(tc.filters.is_empty());
}

/// CHECK passes, then fails after the tbf or the redirect is changed behind its back.
/// DEL removes the ifb and the veth's qdiscs; DEL again succeeds; a DEL without
/// prevResult (plugin mode) still removes the ifb.
#[test]
fn bandwidth_check_tamper_and_del() {
    require_root("netns, veth, tc");
    let mut sb = Sandbox::new("bwchk");
    let pod = sb.pod("p");
    let text = conflist(
        "bwchk",
        "10.95.3.0/24",
        json!({"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000, "egressBurst": 100000}),
    );
    sb.write_conflist("bw.conflist", &text);
    let host = sb.host();
    let ifb = ifb_name("bwchk", &container_id(&pod));
    ok(&chain(&sb, &main_exec(), "add", "bwchk", &pod, None));
    ok(&chain(&sb, &main_exec(), "check", "bwchk", &pod, None));
    let veth = host_veths(&sb).remove(0);

    let check_fails = |what: &str| {
        let o = chain(&sb, &main_exec(), "check", "bwchk", &pod, None);
        let e = cni_err(&o);
        let text = format!(
            "{} {}",
            e["msg"].as_str().unwrap_or(""),
            e["details"].as_str().unwrap_or("")
        );
        assert!(text.to_lowercase().contains(what), "want {what:?}: {e}");
    };
    sh(
        &sb,
        &host,
        &format!("tc qdisc change dev {ifb} root handle 1: tbf rate 2mbit burst 12500 latency 25ms"),
    );
    check_fails("rate");
    sh(
        &sb,
        &host,
        &format!("tc qdisc change dev {ifb} root handle 1: tbf rate 1mbit burst 12500 latency 25ms"),
    );
    ok(&chain(&sb, &main_exec(), "check", "bwchk", &pod, None));
    sh(
        &sb,
        &host,
        &format!("tc qdisc change dev {veth} root handle 1: tbf rate 1mbit burst 20000 latency 25ms"),
    );
    check_fails("limit doesn't match");
    sh(
        &sb,
        &host,
        &format!("tc qdisc change dev {veth} root handle 1: tbf rate 1mbit burst 20000 limit 15625"),
    );
    check_fails("buffer doesn't match");
    sh(
        &sb,
        &host,
        &format!("tc qdisc change dev {veth} root handle 1: tbf rate 1mbit burst 12500 latency 25ms"),
    );
    ok(&chain(&sb, &main_exec(), "check", "bwchk", &pod, None));
    sh(&sb, &host, &format!("tc qdisc del dev {veth} ingress"));
    check_fails("redirect");
    sh(&sb, &host, &format!("tc qdisc del dev {veth} root"));
    check_fails("qdisc");

    // DEL as a plugin (the cnichain binary under the name `bandwidth`): with prevResult
    // it takes the ifb and the veth's qdiscs away (the veth stays: that is the main
    // plugin's); without prevResult it still finds the ifb by name; twice is fine.
    ok(&chain(&sb, &main_exec(), "del", "bwchk", &pod, None));
    let res: Value = serde_json::from_str(&ok(&chain(&sb, &main_exec(), "add", "bwchk", &pod, None))).unwrap();
    let veth = host_veths(&sb).remove(0);
    assert!(sh(&sb, &host, &format!("tc qdisc show dev {veth}")).contains("tbf"));
    let dir = sb.dir.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("bandwidth");
    std::os::unix::fs::symlink(cnichain_bin(), &bin).unwrap();
    let conf: Value = serde_json::from_str(&text).unwrap();
    let mut pconf = conf["plugins"][1].clone();
    pconf["cniVersion"] = json!("1.0.0");
    pconf["name"] = json!("bwchk");
    let plugin_del = |pconf: &Value| {
        let mut c = sb.in_host(&bin);
        c.env("CNI_COMMAND", "DEL")
            .env("CNI_CONTAINERID", container_id(&pod))
            .env("CNI_NETNS", &pod)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", REF_PLUGINS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pconf.to_string().as_bytes())
            .unwrap();
        ok(&child.wait_with_output().unwrap());
    };
    let mut with_prev = pconf.clone();
    with_prev["prevResult"] = res;
    plugin_del(&with_prev);
    assert_eq!(sh(&sb, &host, "ip -o link show type ifb | wc -l"), "0");
    let q = sh(&sb, &host, &format!("tc qdisc show dev {veth}"));
    assert!(!q.contains("tbf") && !q.contains("ingress"), "{q}");
    plugin_del(&pconf);
    plugin_del(&pconf);

    // without prevResult after a fresh ADD: the ifb goes, the veth keeps its qdiscs
    // (as the reference) until the main plugin removes the veth
    ok(&chain(&sb, &main_exec(), "del", "bwchk", &pod, None));
    ok(&chain(&sb, &main_exec(), "add", "bwchk", &pod, None));
    plugin_del(&pconf);
    assert_eq!(sh(&sb, &host, "ip -o link show type ifb | wc -l"), "0");
    ok(&chain(&sb, &main_exec(), "del", "bwchk", &pod, None));
    assert!(host_veths(&sb).is_empty());
    ok(&chain(&sb, &main_exec(), "del", "bwchk", &pod, None));
}

/// Bad rates, bursts and subnet lists: the reference's message (code 999) with the field
/// in `details`, or for a value of the wrong JSON type code 7 naming the field; no ifb
/// and no qdisc made. DEL of the same config succeeds.
#[test]
fn bandwidth_bad_input() {
    require_root("netns, veth, tc");
    let mut sb = Sandbox::new("bwbad");
    let pod = sb.pod("p");
    let host = sb.host();
    let cap_conf = json!({"capabilities": {"bandwidth": true}});
    let rate_no_burst = "if rate is set, burst must also be set";
    let burst_no_rate = "if burst is set, rate must also be set";
    // (config, capability args, code, msg (exact, or a prefix ending in ':'), field in msg or details)
    let cases: Vec<(Value, Option<&str>, u64, &str, &str)> = vec![
        (
            json!({"ingressRate": 1000000}),
            None,
            999,
            rate_no_burst,
            "ingressBurst",
        ),
        (json!({"egressBurst": 100000}), None, 999, burst_no_rate, "egressRate"),
        (
            json!({"ingressRate": -1, "ingressBurst": 1000}),
            None,
            7,
            "",
            "ingressRate",
        ),
        (
            json!({"egressRate": -1000000, "egressBurst": -8}),
            None,
            7,
            "",
            "egressRate",
        ),
        (
            json!({"egressRate": 1000000, "egressBurst": 40000000000u64}),
            None,
            999,
            "burst cannot be more than 4GB",
            "egressBurst",
        ),
        (
            json!({"ingressRate": 7, "ingressBurst": 800}),
            None,
            999,
            "create qdisc: invalid argument",
            "ingress rate 7",
        ),
        (
            json!({"ingressRate": 1000000, "ingressBurst": 4}),
            None,
            999,
            "create qdisc: invalid argument",
            "burst 4 bits",
        ),
        (
            json!({"egressRate": 1000000, "egressBurst": 4}),
            None,
            999,
            "create ifb qdisc: create qdisc: invalid argument",
            "egress",
        ),
        (
            json!({"ingressRate": 1.5e6, "ingressBurst": 1000}),
            None,
            7,
            "",
            "ingressRate",
        ),
        (
            json!({"ingressRate": "1000000", "ingressBurst": 1000}),
            None,
            7,
            "",
            "ingressRate",
        ),
        (
            cap_conf.clone(),
            Some(r#"{"bandwidth": {"egressRate": -5, "egressBurst": 1}}"#),
            7,
            "",
            "runtimeConfig.bandwidth.egressRate",
        ),
        (
            cap_conf.clone(),
            Some(r#"{"bandwidth": {"egressRate": 1000000}}"#),
            999,
            rate_no_burst,
            "runtimeConfig.bandwidth.egressBurst",
        ),
        (
            json!({"ingressRate": 1000000, "ingressBurst": 100000, "shapedSubnets": ["10.0.0.0/33"]}),
            None,
            999,
            "bad subnet \"10.0.0.0/33\" provided, details invalid CIDR address: 10.0.0.0/33",
            "shapedSubnets[0]",
        ),
        (
            json!({"unshapedSubnets": "10.0.0.0/8", "egressRate": 1000000, "egressBurst": 100000}),
            None,
            7,
            "",
            "unshapedSubnets",
        ),
        (
            json!({"unshapedSubnets": ["10.0.0.0/8", 5], "egressRate": 1000000, "egressBurst": 100000}),
            None,
            7,
            "",
            "unshapedSubnets[1]",
        ),
        (
            json!({"unshapedSubnets": ["10.0.0.0/8"], "shapedSubnets": ["10.1.0.0/16"],
                   "egressRate": 1000000, "egressBurst": 100000}),
            None,
            999,
            "unshapedSubnets and shapedSubnets cannot be both specified, one of them should be discarded",
            "shapedSubnets",
        ),
        (
            cap_conf.clone(),
            Some(r#"{"bandwidth": {"egressRate": 1000000, "egressBurst": 100000, "unshapedSubnets": ["fd00::/200"]}}"#),
            999,
            "bad subnet \"fd00::/200\" provided, details invalid CIDR address: fd00::/200",
            "unshapedSubnets[0]",
        ),
    ];
    for (i, (bw, cap, code, msg, field)) in cases.into_iter().enumerate() {
        let text = conflist("bwbad", "10.95.4.0/24", bw);
        sb.write_conflist("bw.conflist", &text);
        let o = chain(&sb, &main_exec(), "add", "bwbad", &pod, cap);
        let e = cni_err(&o);
        assert_eq!(e["code"], code, "case {i}: {e}");
        let got = e["msg"].as_str().unwrap_or("");
        // libcni-style context: the chain prefixes the plugin's message
        if !msg.is_empty() {
            assert!(got.ends_with(msg), "case {i}: msg {got:?}, want {msg:?}");
        }
        let text = format!("{got} {}", e["details"].as_str().unwrap_or(""));
        assert!(text.contains(field), "case {i}: {e} does not name {field}");
        assert_eq!(
            sh(&sb, &host, "ip -o link show type ifb | wc -l"),
            "0",
            "case {i}: ifb made"
        );
        for veth in host_veths(&sb) {
            let q = sh(&sb, &host, &format!("tc qdisc show dev {veth}"));
            assert!(
                !q.contains("tbf") && !q.contains("ingress") && !q.contains("htb"),
                "case {i}: {q}"
            );
        }
        ok(&chain(&sb, &main_exec(), "del", "bwbad", &pod, cap));
    }
}

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(netns: &str, port: u16, dir: &Path) -> Server {
    let child = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["--", "busybox", "httpd", "-f", "-p", &port.to_string(), "-h"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("busybox httpd");
    Server(child)
}

/// Seconds for `wget` in `from` to fetch `url` (retried until the server answers; only
/// the successful run is timed).
/// The bytes htb class `classid` of `dev` has sent, from `tc -s class show`.
fn class_bytes(sb: &Sandbox, ns: &str, dev: &str, classid: &str) -> u64 {
    let out = sh(sb, ns, &format!("tc -s class show dev {dev}"));
    let head = format!("class htb {classid} ");
    let block = out
        .split("class htb ")
        .map(|b| format!("class htb {b}"))
        .find(|b| b.starts_with(&head))
        .unwrap_or_else(|| panic!("{dev}: no class {classid} in\n{out}"));
    block
        .split_once(" Sent ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{dev}: no byte count for {classid} in\n{block}"))
}

fn fetch_seconds(sb: &Sandbox, from: &str, url: &str, out: &Path, want_len: u64) -> f64 {
    for _ in 0..50 {
        let _ = std::fs::remove_file(out);
        let t = Instant::now();
        // Bounded: a broken path must fail the test, not hang the suite.
        let o = sb.sh_in(from, &format!("timeout 20 busybox wget -q -O {} {url}", out.display()));
        let secs = t.elapsed().as_secs_f64();
        if o.status.success() {
            let len = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            assert_eq!(len, want_len, "short transfer from {url}");
            return secs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("wget {url} never succeeded");
}

/// Real traffic through a 1 Mbit/s shaped path: 300 kB into the pod (tbf on the host
/// veth) and out of it (ifb), each expected to take about (size - burst) / rate = 2.3 s;
/// a wide band (0.5x - 3x) keeps the check robust on a busy machine.
#[test]
fn bandwidth_shapes_real_traffic() {
    require_root("netns, veth, tc");
    let mut sb = Sandbox::new("bwtp");
    let pod = sb.pod("p");
    let podn = ns_name(&pod);
    let text = conflist(
        "bwtp",
        "10.95.5.0/24",
        json!({"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000, "egressBurst": 100000}),
    );
    sb.write_conflist("bw.conflist", &text);
    let res: Value = serde_json::from_str(&ok(&chain(&sb, &main_exec(), "add", "bwtp", &pod, None))).unwrap();
    let pod_ip = res["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let gw = res["ips"][0]["gateway"].as_str().unwrap().to_string();

    let www: PathBuf = sb.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let size: u64 = 300_000;
    std::fs::write(www.join("blob"), vec![0x5au8; size as usize]).unwrap();
    let host_path = format!("/run/netns/{}", sb.host());
    let _h = http_server(&host_path, 8081, &www);
    let _p = http_server(&pod, 8082, &www);

    let expected = (size as f64 - 12_500.0) / 125_000.0;
    let into_pod = fetch_seconds(&sb, &podn, &format!("http://{gw}:8081/blob"), &sb.dir.join("in"), size);
    let out_of_pod = fetch_seconds(
        &sb,
        &sb.host(),
        &format!("http://{pod_ip}:8082/blob"),
        &sb.dir.join("out"),
        size,
    );
    eprintln!("1 Mbit/s shaped, {size} B: into the pod {into_pod:.2} s, out of the pod {out_of_pod:.2} s, expected ~{expected:.2} s");
    for (what, t) in [("into the pod", into_pod), ("out of the pod", out_of_pod)] {
        assert!(
            t >= expected * 0.5 && t <= expected * 3.0,
            "{what}: {t:.2} s, expected {expected:.2} s (0.5x - 3x)"
        );
    }
    drop(_h);
    drop(_p);
    ok(&chain(&sb, &main_exec(), "del", "bwtp", &pod, None));
}

/// A pod annotated with rates and no burst, as containerd passes it: the `bandwidth`
/// capability with burst 2^32-1 bits at 1 Mbit/s in both directions. The reference's
/// buffer wraps there (to about 171 s); cnichain saturates it at the longest the kernel
/// takes (u32::MAX ticks, 274.9 s: about 34.4 MB at 1 Mbit/s, passed at once). Real
/// traffic: one TCP stream each way; once well past the burst (33.5 MB of payload, over
/// 35 MB on the wire), the next 250 kB must arrive at about the rate (0.5x - 3x).
#[test]
fn bandwidth_runtime_burst_real_traffic() {
    require_root("netns, veth, tc");
    let mut sb = Sandbox::new("bwrt");
    let pod = sb.pod("p");
    let podn = ns_name(&pod);
    let text = conflist("bwrt", "10.95.8.0/24", json!({"capabilities": {"bandwidth": true}}));
    sb.write_conflist("bw.conflist", &text);
    let cap = r#"{"bandwidth": {"ingressRate": 1000000, "ingressBurst": 4294967295, "egressRate": 1000000, "egressBurst": 4294967295}}"#;
    let res: Value = serde_json::from_str(&ok(&chain(&sb, &main_exec(), "add", "bwrt", &pod, Some(cap)))).unwrap();
    ok(&chain(&sb, &main_exec(), "check", "bwrt", &pod, Some(cap)));
    let pod_ip = res["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let gw = res["ips"][0]["gateway"].as_str().unwrap().to_string();
    let host = sb.host();
    let veth = host_veths(&sb).remove(0);
    let ifb = ifb_name("bwrt", &container_id(&pod));
    // the burst the kernel keeps, as tc reads it back from the buffer
    let burst_of = |dev: &str| -> u64 {
        let q: Value = serde_json::from_str(&sh(&sb, &host, &format!("tc -j qdisc show dev {dev} root"))).unwrap();
        let o = &q[0]["options"];
        assert_eq!(o["rate"], 125000, "{dev}: {q}");
        o["burst"].as_u64().unwrap_or(0)
    };
    assert_eq!((burst_of(&veth), burst_of(&ifb)), (34_359_738, 34_359_738));

    let past_burst: u64 = 33_500_000;
    let window: u64 = 250_000;
    let expected = window as f64 / 125_000.0;
    let into_pod = stream_seconds(&podn, &host, &pod_ip, 9001, past_burst, window);
    let out_of_pod = stream_seconds(&host, &podn, &gw, 9002, past_burst, window);
    eprintln!(
        "containerd's burst at 1 Mbit/s: {window} B after {past_burst} B: into the pod {into_pod:.2} s, out of the pod {out_of_pod:.2} s, expected ~{expected:.2} s (plus headers)"
    );
    for (what, t) in [("into the pod", into_pod), ("out of the pod", out_of_pod)] {
        assert!(
            t >= expected * 0.5 && t <= expected * 3.0,
            "{what}: {t:.2} s, expected {expected:.2} s (0.5x - 3x)"
        );
    }
    ok(&chain(&sb, &main_exec(), "del", "bwrt", &pod, Some(cap)));
    assert_eq!(sh(&sb, &host, "ip -o link show type ifb | wc -l"), "0");
}

/// One TCP stream from netns `from` to a listener in netns `to` at `addr:port` (busybox
/// nc at both ends): seconds between the receiver having `skip` bytes and having
/// `skip + window` bytes.
fn stream_seconds(to: &str, from: &str, addr: &str, port: u16, skip: u64, window: u64) -> f64 {
    use std::io::Read;
    let mut rx = Server(
        Command::new("ip")
            .args(["netns", "exec", to, "busybox", "nc", "-l", "-p", &port.to_string()])
            // an open stdin: nc ends the connection at its stdin's end
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox nc -l"),
    );
    let total = skip + window + 1_000_000;
    // retried until the listener is up
    let _tx = Server(
        Command::new("ip")
            .args(["netns", "exec", from, "sh", "-c"])
            .arg(format!(
                "for i in $(seq 100); do head -c {total} /dev/zero | busybox nc {addr} {port} && break; sleep 0.1; done"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox nc"),
    );
    let mut out = rx.0.stdout.take().expect("nc stdout");
    let mut buf = vec![0u8; 1 << 16];
    let (mut got, mut t1) = (0u64, None);
    while got < skip + window {
        let n = out.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended after {got} bytes");
        got += n as u64;
        if got >= skip && t1.is_none() {
            t1 = Some(Instant::now());
        }
    }
    t1.map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// Upstream's subnet lists with real traffic out of the pod (through the ifb's htb) to
/// two destinations in the sandbox host netns: the bridge's own address (10.95.x.1) and
/// a second address 192.0.2.1/32 added on the bridge (picked as the source of the
/// host's connection by a /32 route to the pod with `src 192.0.2.1`). With
/// `unshapedSubnets: [192.0.2.1/32]` (plugin config) traffic to 192.0.2.1 is not
/// shaped and traffic to the gateway is; with `shapedSubnets: [192.0.2.1/32]`
/// (runtimeConfig) the reverse. The in-process bridge and host-local run the main plugin.
fn subnet_shaping(tag: &str, subnet: &str, shaped_listed: bool) {
    let mut sb = Sandbox::new(tag);
    let pod = sb.pod("p");
    let host = sb.host();
    let list = json!(["192.0.2.1/32"]);
    let rates = json!({"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000, "egressBurst": 100000});
    let (bw, cap) = if shaped_listed {
        let mut entry = rates.clone();
        entry["shapedSubnets"] = list;
        (
            json!({"capabilities": {"bandwidth": true}}),
            Some(json!({ "bandwidth": entry }).to_string()),
        )
    } else {
        let mut bw = rates.clone();
        bw["unshapedSubnets"] = list;
        (bw, None)
    };
    let text = conflist(tag, subnet, bw);
    sb.write_conflist("bw.conflist", &text);
    let cap = cap.as_deref();
    let res: Value = serde_json::from_str(&ok(&chain(&sb, "none", "add", tag, &pod, cap))).unwrap();
    let pod_ip = res["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let gw = res["ips"][0]["gateway"].as_str().unwrap().to_string();
    let ifb = ifb_name(tag, &container_id(&pod));
    let veths = host_veths(&sb);
    assert_eq!(veths.len(), 1, "{veths:?}");
    let veth = &veths[0];

    // the layout: htb on the veth and on the ifb, default class and filter as upstream
    let (defcls, target) = if shaped_listed { ("1", "1:30") } else { ("30", "1:1") };
    for dev in [veth.as_str(), ifb.as_str()] {
        let q = sh(&sb, &host, &format!("tc qdisc show dev {dev} root"));
        assert!(
            q.contains("htb 1: root") && q.contains(&format!("default 0x{defcls}")),
            "{dev}: {q}"
        );
        let c = sh(&sb, &host, &format!("tc class show dev {dev}"));
        assert!(
            c.contains("class htb 1:30 root") && c.contains("rate 1Mbit ceil 2Mbit"),
            "{dev}: {c}"
        );
        assert!(
            c.contains("class htb 1:1 root") && c.contains("rate 800Gbit ceil 800Gbit"),
            "{dev}: {c}"
        );
        let f = sh(&sb, &host, &format!("tc filter show dev {dev} parent 1:"));
        assert!(
            f.contains(&format!("flowid {target}")) && f.contains("match c0000201/ffffffff at 16"),
            "{dev}: {f}"
        );
    }
    ok(&chain(&sb, "none", "check", tag, &pod, cap));

    sh(&sb, &host, "ip addr add 192.0.2.1/32 dev cni-bw0");
    // the pod has no default route (isGateway without isDefaultGateway)
    sh(&sb, &ns_name(&pod), &format!("ip route add 192.0.2.1/32 via {gw}"));
    let www: PathBuf = sb.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let size: u64 = 300_000;
    std::fs::write(www.join("blob"), vec![0x5au8; size as usize]).unwrap();
    let _p = http_server(&pod, 8083, &www);
    let url = format!("http://{pod_ip}:8083/blob");

    // Which htb class of the ifb (the pod's outgoing traffic) carried each transfer, from
    // the kernel's per-class byte counters: the shaped class 1:30 or the unshaped 1:1.
    let classes = || {
        (
            class_bytes(&sb, &host, &ifb, "1:30"),
            class_bytes(&sb, &host, &ifb, "1:1"),
        )
    };
    let before = classes();
    fetch_seconds(&sb, &host, &url, &sb.dir.join("a"), size);
    let after_gw = classes();
    sh(
        &sb,
        &host,
        &format!("ip route add {pod_ip}/32 dev cni-bw0 src 192.0.2.1"),
    );
    fetch_seconds(&sb, &host, &url, &sb.dir.join("b"), size);
    let after_other = classes();
    sh(&sb, &host, &format!("ip route del {pod_ip}/32"));
    // (bytes through 1:30, bytes through 1:1) during each transfer
    let to_gw = (after_gw.0 - before.0, after_gw.1 - before.1);
    let to_other = (after_other.0 - after_gw.0, after_other.1 - after_gw.1);
    let (shaped, unshaped) = if shaped_listed {
        (to_other, to_gw)
    } else {
        (to_gw, to_other)
    };
    // The blob (plus headers) through the expected class; at most stray packets (ARP,
    // neighbour discovery) through the other.
    assert!(
        shaped.0 >= size && shaped.1 < size / 10,
        "shaped transfer: {} B via 1:30, {} B via 1:1 ({size} B sent)",
        shaped.0,
        shaped.1
    );
    assert!(
        unshaped.1 >= size && unshaped.0 < size / 10,
        "unshaped transfer: {} B via 1:30, {} B via 1:1 ({size} B sent)",
        unshaped.0,
        unshaped.1
    );
    drop(_p);

    // CHECK notices a missing subnet filter on the ifb
    let prio = sh(
        &sb,
        &host,
        &format!("tc filter del dev {ifb} parent 1: prio 16 && echo done"),
    );
    assert_eq!(prio, "done");
    let e = cni_err(&chain(&sb, "none", "check", tag, &pod, cap));
    assert!(e["details"].as_str().unwrap_or("").contains("192.0.2.1/32"), "{e}");

    ok(&chain(&sb, "none", "del", tag, &pod, cap));
    assert_eq!(sh(&sb, &host, "ip -o link show type ifb | wc -l"), "0");
    assert!(host_veths(&sb).is_empty());
    ok(&chain(&sb, "none", "del", tag, &pod, cap));
}

#[test]
fn bandwidth_unshaped_subnets_real_traffic() {
    require_root("netns, veth, tc");
    subnet_shaping("bwuns", "10.95.6.0/24", false);
}

#[test]
fn bandwidth_shaped_subnets_real_traffic() {
    require_root("netns, veth, tc");
    subnet_shaping("bwshp", "10.95.7.0/24", true);
}
