//! Issue 13, "bad input changes nothing, anywhere": a table of refused inputs through the
//! CLI (`cnichain add NET NETNS`), the drop-ins and the `cnichain` meta-plugin. Every row
//! asserts the CNI error code, exit status 1, one CNI error object on stdout, no panic on
//! stderr, and that neither the sandbox's state/cache/data trees nor the kernel state of
//! its host and pod namespaces (links, addresses, routes, rules, nft ruleset, qdiscs,
//! the sysctls the stages write) changed. Many rows put the bad value in the LAST plugin
//! of the 4-stage default chain, which preflight must refuse before bridge runs.

mod common;
use common::kstate::{assert_kernel_unchanged, settle_dad, KState};
use common::snapshot::{assert_unchanged, Snapshot};
use common::*;
use std::path::Path;
use std::process::Output;

const BRIDGE: &str = r#"{"type":"bridge","bridge":"cnctbl0","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.77.0.0/24","gateway":"10.77.0.1"}]],
          "routes":[{"dst":"0.0.0.0/0"}]}}"#;
const TUNING: &str = r#"{"type":"tuning","sysctl":{"net.core.somaxconn":"512"}}"#;
const PORTMAP: &str = r#"{"type":"portmap","capabilities":{"portMappings":true},"snat":true}"#;
const BANDWIDTH: &str =
    r#"{"type":"bandwidth","ingressRate":8000000,"ingressBurst":800000,"egressRate":4000000,"egressBurst":400000}"#;
const GOOD_CAPS: &str = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

/// The default 4-stage chain with the given plugin objects.
fn chain4(b: &str, t: &str, p: &str, w: &str) -> String {
    format!(r#"{{"cniVersion":"1.0.0","name":"tbl-net","plugins":[{b},{t},{p},{w}]}}"#)
}

/// The 4-stage chain with `last` as its bandwidth plugin.
fn last(w: &str) -> String {
    chain4(BRIDGE, TUNING, PORTMAP, w)
}

/// A one-plugin list.
fn one(p: &str) -> String {
    format!(r#"{{"cniVersion":"1.0.0","name":"tbl-net","plugins":[{p}]}}"#)
}

enum Via {
    /// `cnichain [flags] add <conflist path> <netns>`; `{NETNS}` in flags is the pod.
    Cli { flags: Vec<String>, netns: Option<String> },
    /// A drop-in symlink run by hand, with environment overrides (an empty value removes).
    DropIn {
        name: &'static str,
        env: Vec<(String, String)>,
    },
}

struct Row {
    what: String,
    conf: String,
    via: Via,
    code: u64,
}

fn cli(what: &str, conf: String, flags: &[&str], code: u64) -> Row {
    Row {
        what: what.into(),
        conf,
        via: Via::Cli {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            netns: None,
        },
        code,
    }
}

fn cli_ns(what: &str, netns: &str, code: u64) -> Row {
    Row {
        what: what.into(),
        conf: last(BANDWIDTH),
        via: Via::Cli {
            flags: vec!["--cap-args".into(), GOOD_CAPS.into()],
            netns: Some(netns.into()),
        },
        code,
    }
}

fn drop_in(what: &str, name: &'static str, conf: String, env: &[(&str, &str)], code: u64) -> Row {
    Row {
        what: what.into(),
        conf,
        via: Via::DropIn {
            name,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        },
        code,
    }
}

/// A plugin's request config (what a runtime writes on a drop-in's stdin).
fn req(p: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(p).expect("row config");
    v["cniVersion"] = "1.0.0".into();
    v["name"] = "tbl-net".into();
    v.to_string()
}

/// The meta-plugin's request config carrying `inner` as its chain.
fn meta(inner: &[&str], rc: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"tbl-net","type":"cnichain","runtimeConfig":{rc},"plugins":[{}]}}"#,
        inner.join(",")
    )
}

fn rows(not_ns: &str) -> Vec<Row> {
    let bw = |extra: &str| format!(r#"{{"type":"bandwidth",{extra}}}"#);
    let pm_caps = |m: &str| format!(r#"{{"portMappings":[{m}]}}"#);
    let tuning = |sysctl: &str| format!(r#"{{"type":"tuning","sysctl":{sysctl}}}"#);
    let hl = |ipam_extra: &str| {
        format!(
            r#"{{"type":"bridge","bridge":"cnctbl0","isGateway":true,"ipam":{{"type":"host-local","dataDir":"@IPAM@",{ipam_extra}}}}}"#
        )
    };
    let br = |extra: &str| {
        format!(
            r#"{{"type":"bridge",{extra},"ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"10.77.0.0/24"}}]]}}}}"#
        )
    };
    let caps = ["--cap-args", GOOD_CAPS];
    let mut v = vec![
        // --- the list itself
        cli(
            "malformed JSON",
            r#"{"cniVersion":"1.0.0","name":"tbl-net","plugins":[{"type":"bridge"}"#.into(),
            &[],
            6,
        ),
        cli(
            "plugins not a list",
            r#"{"cniVersion":"1.0.0","name":"tbl-net","plugins":{"type":"bridge"}}"#.into(),
            &[],
            7,
        ),
        cli(
            "cniVersion a number",
            r#"{"cniVersion":1,"name":"tbl-net","plugins":[{"type":"bridge"}]}"#.into(),
            &[],
            7,
        ),
        cli(
            "name a number",
            r#"{"cniVersion":"1.0.0","name":7,"plugins":[{"type":"bridge"}]}"#.into(),
            &[],
            7,
        ),
        cli(
            "network name traversal",
            one(BRIDGE).replace("tbl-net", "../../etc"),
            &[],
            7,
        ),
        cli("network name with slash", one(BRIDGE).replace("tbl-net", "a/b"), &[], 7),
        cli(
            "network name with newline",
            one(BRIDGE).replace("tbl-net", "a\\nb"),
            &[],
            7,
        ),
        cli(
            "type traversal in the last plugin",
            chain4(BRIDGE, TUNING, PORTMAP, r#"{"type":"../../bin/true"}"#),
            &caps,
            7,
        ),
        cli(
            "absolute type in the last plugin",
            chain4(BRIDGE, TUNING, PORTMAP, r#"{"type":"/bin/true"}"#),
            &caps,
            7,
        ),
        cli(
            "last plugin not in CNI_PATH",
            chain4(BRIDGE, TUNING, PORTMAP, r#"{"type":"no-such-plugin"}"#),
            &caps,
            7,
        ),
        cli(
            "ipam.type traversal",
            one(&BRIDGE.replace(r#""type":"host-local""#, r#""type":"../host-local""#)),
            &[],
            7,
        ),
        cli(
            "ipam.type a main plugin",
            one(&BRIDGE.replace(r#""type":"host-local""#, r#""type":"bridge""#)),
            &[],
            7,
        ),
        cli(
            "unsupported cniVersion",
            last(BANDWIDTH).replace("1.0.0", "9.9.9"),
            &caps,
            1,
        ),
        // --- runtime arguments
        cli(
            "container id traversal",
            last(BANDWIDTH),
            &["--container-id=../../x"],
            4,
        ),
        cli("container id with slash", last(BANDWIDTH), &["--container-id=a/b"], 4),
        cli(
            "container id with a quote",
            last(BANDWIDTH),
            &["--container-id=a\"b"],
            4,
        ),
        cli("ifname ..", last(BANDWIDTH), &["--ifname", ".."], 4),
        cli("ifname with a space", last(BANDWIDTH), &["--ifname", "eth 0"], 4),
        cli("ifname with a newline", last(BANDWIDTH), &["--ifname", "eth0\nx"], 4),
        cli("ifname too long", last(BANDWIDTH), &["--ifname", "abcdefghijklmnop"], 4),
        cli("ifname with a slash", last(BANDWIDTH), &["--ifname", "a/b"], 4),
        cli("CNI_ARGS without =", last(BANDWIDTH), &["--args", "NOEQUALS"], 4),
        cli(
            "CNI_ARGS IP not an address",
            last(BANDWIDTH),
            &["--args", "IgnoreUnknown=1;IP=nope"],
            4,
        ),
        cli(
            "CNI_ARGS IP outside the range",
            last(BANDWIDTH),
            &["--args", "IgnoreUnknown=1;IP=10.99.0.5"],
            999,
        ),
        cli(
            "CNI_ARGS IP is the gateway",
            last(BANDWIDTH),
            &["--args", "IgnoreUnknown=1;IP=10.77.0.1"],
            999,
        ),
        cli(
            "CNI_ARGS MAC invalid (tuning)",
            last(BANDWIDTH),
            &["--args", "MAC=zz:zz"],
            7,
        ),
        cli("CAP_ARGS not JSON", last(BANDWIDTH), &["--cap-args", "{nope"], 6),
        cli_ns("netns missing", "/run/netns/no-such-cnc-netns", 4),
        cli_ns("netns a plain file", not_ns, 4),
        cli_ns("netns traversal", "/run/netns/../../etc/passwd", 4),
        cli_ns("netns the caller's own", "/proc/self/ns/net", 4),
        // --- bridge
        cli(
            "bridge name too long",
            one(&br(r#""bridge":"abcdefghijklmnopq""#)),
            &[],
            7,
        ),
        cli("bridge name with a space", one(&br(r#""bridge":"br 0""#)), &[], 7),
        cli("bridge name traversal", one(&br(r#""bridge":"../x""#)), &[], 7),
        cli(
            "bridge mtu a string",
            one(&br(r#""bridge":"cnctbl0","mtu":"1500""#)),
            &[],
            7,
        ),
        cli(
            "bridge mtu too big",
            one(&br(r#""bridge":"cnctbl0","mtu":99999999999""#).replace("99999999999\"", "99999999999")),
            &[],
            7,
        ),
        cli(
            "bridge vlan out of range",
            one(&br(r#""bridge":"cnctbl0","vlan":5000"#)),
            &[],
            7,
        ),
        cli(
            "bridge hairpin and promisc",
            last(BANDWIDTH).replace(r#""hairpinMode":true"#, r#""hairpinMode":true,"promiscMode":true"#),
            &caps,
            999,
        ),
        // --- host-local
        cli(
            "host-local subnet not a CIDR",
            one(&hl(r#""ranges":[[{"subnet":"nope"}]]"#)),
            &[],
            7,
        ),
        cli(
            "host-local rangeStart outside the subnet",
            one(&hl(
                r#""ranges":[[{"subnet":"10.77.0.0/24","rangeStart":"10.78.0.5"}]]"#,
            )),
            &[],
            7,
        ),
        cli(
            "host-local overlapping ranges",
            one(&hl(
                r#""ranges":[[{"subnet":"10.77.0.0/24"}],[{"subnet":"10.77.0.0/25"}]]"#,
            )),
            &[],
            7,
        ),
        cli("host-local no ranges", one(&hl(r#""ranges":[]"#)), &[], 7),
        cli(
            "host-local dataDir a number",
            one(&hl(r#""ranges":[[{"subnet":"10.77.0.0/24"}]],"dataDir":5"#).replace(r#""dataDir":"@IPAM@","#, "")),
            &[],
            7,
        ),
        cli(
            "host-local requested ip in runtimeConfig outside the range",
            one(&BRIDGE.replace(r#""type":"bridge","#, r#""type":"bridge","capabilities":{"ips":true},"#)),
            &["--cap-args", r#"{"ips":["10.99.0.9/24"]}"#],
            999,
        ),
        // --- static IPAM and ptp
        cli(
            "static address not a CIDR",
            one(
                r#"{"type":"bridge","bridge":"cnctbl0","ipam":{"type":"static","addresses":[{"address":"10.77.0.300/24"}]}}"#,
            ),
            &[],
            7,
        ),
        cli(
            "static CNI_ARGS IP not a CIDR",
            one(r#"{"type":"bridge","bridge":"cnctbl0","ipam":{"type":"static"}}"#),
            &["--args", "IgnoreUnknown=1;IP=nope"],
            4,
        ),
        cli(
            "ptp chain, bad last plugin",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"tbl-net","plugins":[{{"type":"ptp","ipam":{{"type":"host-local","dataDir":"@IPAM@","subnet":"10.78.0.0/24"}}}},{BANDWIDTH},{}]}}"#,
                r#"{"type":"tuning","mtu":-1}"#
            ),
            &[],
            7,
        ),
        // --- tuning (not last: the chain's bandwidth is good)
        cli(
            "tuning sysctl traversal",
            chain4(
                BRIDGE,
                &tuning(r#"{"net/../../kernel/hostname":"x"}"#),
                PORTMAP,
                BANDWIDTH,
            ),
            &caps,
            7,
        ),
        cli(
            "tuning sysctl dotted traversal",
            chain4(
                BRIDGE,
                &tuning(r#"{"net.ipv4.conf.....kernel.hostname":"x"}"#),
                PORTMAP,
                BANDWIDTH,
            ),
            &caps,
            7,
        ),
        cli(
            "tuning sysctl outside net",
            chain4(BRIDGE, &tuning(r#"{"kernel.hostname":"x"}"#), PORTMAP, BANDWIDTH),
            &caps,
            7,
        ),
        cli(
            "tuning mac invalid",
            chain4(BRIDGE, r#"{"type":"tuning","mac":"nope"}"#, PORTMAP, BANDWIDTH),
            &caps,
            7,
        ),
        cli(
            "tuning mtu negative",
            chain4(BRIDGE, r#"{"type":"tuning","mtu":-5}"#, PORTMAP, BANDWIDTH),
            &caps,
            7,
        ),
        cli(
            "tuning dataDir relative",
            chain4(
                BRIDGE,
                r#"{"type":"tuning","promisc":true,"dataDir":"rel/dir"}"#,
                PORTMAP,
                BANDWIDTH,
            ),
            &caps,
            7,
        ),
        // --- portmap (bad runtime arguments reach the third plugin)
        cli(
            "portmap hostPort 0",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":0,"containerPort":80,"protocol":"tcp"}"#),
            ],
            7,
        ),
        cli(
            "portmap hostPort 70000",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":70000,"containerPort":80,"protocol":"tcp"}"#),
            ],
            7,
        ),
        cli(
            "portmap containerPort negative",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":8080,"containerPort":-1,"protocol":"tcp"}"#),
            ],
            7,
        ),
        cli(
            "portmap protocol icmp",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":8080,"containerPort":80,"protocol":"icmp"}"#),
            ],
            7,
        ),
        cli(
            "portmap protocol injection",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp; flush ruleset"}"#),
            ],
            7,
        ),
        cli(
            "portmap hostIP injection",
            last(BANDWIDTH),
            &[
                "--cap-args",
                &pm_caps(r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"1.2.3.4 drop"}"#),
            ],
            7,
        ),
        cli(
            "portmap portMappings not a list",
            last(BANDWIDTH),
            &["--cap-args", r#"{"portMappings":{"hostPort":8080}}"#],
            7,
        ),
        cli(
            "portmap conditionsV4",
            chain4(
                BRIDGE,
                TUNING,
                r#"{"type":"portmap","capabilities":{"portMappings":true},"conditionsV4":["-s","1.2.3.4"]}"#,
                BANDWIDTH,
            ),
            &caps,
            2,
        ),
        cli(
            "portmap backend iptables",
            chain4(
                BRIDGE,
                TUNING,
                r#"{"type":"portmap","capabilities":{"portMappings":true},"backend":"iptables"}"#,
                BANDWIDTH,
            ),
            &caps,
            2,
        ),
        // --- bandwidth, the last plugin
        cli(
            "bandwidth rate a string",
            last(&bw(r#""ingressRate":"fast","ingressBurst":100"#)),
            &caps,
            7,
        ),
        cli(
            "bandwidth rate negative",
            last(&bw(r#""ingressRate":-1,"ingressBurst":100"#)),
            &caps,
            7,
        ),
        cli(
            "bandwidth rate without burst",
            last(&bw(r#""ingressRate":8000000"#)),
            &caps,
            999,
        ),
        cli(
            "bandwidth shaped and unshaped",
            last(&bw(
                r#""ingressRate":8000000,"ingressBurst":800000,"shapedSubnets":["10.0.0.0/8"],"unshapedSubnets":["10.1.0.0/16"]"#,
            )),
            &caps,
            999,
        ),
        cli(
            "bandwidth subnet not a CIDR",
            last(&bw(
                r#""ingressRate":8000000,"ingressBurst":800000,"shapedSubnets":["nope"]"#,
            )),
            &caps,
            999,
        ),
        cli(
            "bandwidth runtime rate a string",
            last(r#"{"type":"bandwidth","capabilities":{"bandwidth":true}}"#),
            &[
                "--cap-args",
                r#"{"portMappings":[],"bandwidth":{"ingressRate":"x","ingressBurst":1}}"#,
            ],
            7,
        ),
        cli(
            "bandwidth burst the kernel refuses",
            last(&bw(r#""ingressRate":8000000000,"ingressBurst":8"#)),
            &caps,
            999,
        ),
    ];
    // --- plugin mode: drop-ins
    let bad_hl = BRIDGE.replace("10.77.0.0/24", "10.77.0.0/99");
    v.extend([
        drop_in("drop-in bridge malformed JSON", "bridge", r#"{"cniVersion":"1.0.0","#.into(), &[], 6),
        drop_in("drop-in bridge IPAM subnet invalid", "bridge", req(&bad_hl), &[], 7),
        drop_in("drop-in bridge CNI_ARGS IP outside the range", "bridge", req(BRIDGE), &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.99.0.5")], 999),
        drop_in("drop-in bridge name too long", "bridge", req(&br(r#""bridge":"abcdefghijklmnopq""#)), &[], 7),
        drop_in("drop-in bridge ifname with a newline", "bridge", req(BRIDGE), &[("CNI_IFNAME", "eth0\nx")], 4),
        drop_in("drop-in bridge container id traversal", "bridge", req(BRIDGE), &[("CNI_CONTAINERID", "../../x")], 4),
        drop_in("drop-in bridge netns a plain file", "bridge", req(BRIDGE), &[("CNI_NETNS", not_ns)], 4),
        drop_in("drop-in host-local requested gateway", "host-local",
            req(r#"{"type":"host-local","ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.77.0.0/24","gateway":"10.77.0.1"}]]},"runtimeConfig":{"ips":["10.77.0.1/24"]}}"#),
            &[], 999),
        drop_in("drop-in host-local ranges a string", "host-local",
            req(r#"{"type":"host-local","ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":"10.77.0.0/24"}}"#), &[], 7),
        drop_in("drop-in ptp without ipam", "ptp", req(r#"{"type":"ptp"}"#), &[], 7),
        drop_in("drop-in tuning sysctl outside net", "tuning", req(&tuning(r#"{"kernel.hostname":"x"}"#)), &[], 7),
        drop_in("drop-in portmap hostPort 70000", "portmap",
            req(r#"{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80,"protocol":"tcp"}]}}"#), &[], 7),
        drop_in("drop-in bandwidth rate negative", "bandwidth", req(&bw(r#""egressRate":-5,"egressBurst":100"#)), &[], 7),
        drop_in("drop-in CNI_ARGS malformed", "bridge", req(BRIDGE), &[("CNI_ARGS", "A=1;;B")], 4),
        // --- plugin mode: the meta-plugin's inner 4-stage chain, bad last plugin
        drop_in("meta: bandwidth rate negative last", "cnichain",
            meta(&[BRIDGE, TUNING, PORTMAP, &bw(r#""ingressRate":-1,"ingressBurst":100"#)], GOOD_CAPS), &[], 7),
        drop_in("meta: hostPort 0 for portmap", "cnichain",
            meta(&[BRIDGE, TUNING, PORTMAP, BANDWIDTH], &pm_caps(r#"{"hostPort":0,"containerPort":80,"protocol":"tcp"}"#)), &[], 7),
        drop_in("meta: type traversal last", "cnichain", meta(&[BRIDGE, TUNING, PORTMAP, r#"{"type":"../bandwidth"}"#], GOOD_CAPS), &[], 7),
        drop_in("meta: tuning sysctl escape", "cnichain",
            meta(&[BRIDGE, &tuning(r#"{"net/../kernel/hostname":"x"}"#), PORTMAP, BANDWIDTH], GOOD_CAPS), &[], 7),
        drop_in("meta: CNI_ARGS IP outside the range", "cnichain", meta(&[BRIDGE, TUNING, PORTMAP, BANDWIDTH], GOOD_CAPS),
            &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.99.0.5")], 999),
    ]);
    v
}

/// A drop-in started in the sandbox's host netns with a runtime's ADD environment.
fn run_drop_in(sb: &Sandbox, bin: &Path, name: &str, pod: &str, env: &[(String, String)], stdin: &str) -> Output {
    let cni_path = format!("{}:{REF_PLUGINS}", bin.display());
    let mut all = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "tbl-ctr"),
        ("CNI_NETNS", pod),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", cni_path.as_str()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    plugin_in_host(sb, &bin.join(name), &all, stdin)
}

#[test]
fn refused_inputs_change_nothing_anywhere() {
    require_root("netns, bridges, nftables");
    let mut sb = Sandbox::new("tbl");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let not_ns = sb.dir.join("plain-file");
    std::fs::write(&not_ns, "x").unwrap();
    let rows = rows(&not_ns.display().to_string());
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let ipam = sb.ipam_dir().display().to_string();
    let netns = [sb.host(), ns_name(&pod)];
    let mut failures = Vec::new();
    for r in &rows {
        let conf = r.conf.replace("@IPAM@", &ipam);
        let file = sb.write_conflist("10-tbl.conflist", &conf);
        let roots: Vec<(&str, &Path)> = vec![("sandbox", sb.dir.as_path())];
        let files_before = Snapshot::take(&roots);
        let kernel_before: Vec<(String, KState)> = netns.iter().map(|n| (n.clone(), KState::take(n))).collect();
        let out = match &r.via {
            Via::Cli { flags, netns } => {
                let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
                let f = file.display().to_string();
                args.extend(["add", &f, netns.as_deref().unwrap_or(&pod)]);
                sb.cnichain(REF_PLUGINS, &args)
            }
            Via::DropIn { name, env } => run_drop_in(&sb, &bin, name, &pod, env, &conf),
        };
        let before = (&files_before, kernel_before.as_slice());
        if let Some(p) = problems(r, &out, before, &roots) {
            failures.push(p);
        }
        if out.status.success() {
            // An accepted row: undo it so the next row starts clean.
            let f = file.display().to_string();
            let _ = sb.cnichain(REF_PLUGINS, &["del", &f, &pod]);
            let _ = sb.sh_in(&sb.host(), "ip link del cnctbl0");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// What is wrong with a row's outcome, or None: exit status 1, no panic, one CNI error
/// object with the row's code, and nothing changed in the files or the kernel.
fn problems(
    r: &Row,
    out: &Output,
    before: (&Snapshot, &[(String, KState)]),
    roots: &[(&str, &Path)],
) -> Option<String> {
    let what = &r.what;
    let err = stderr(out);
    let text = stdout(out);
    if err.contains("panicked") {
        return Some(format!("{what}: panicked: {err}"));
    }
    if out.status.code() != Some(1) {
        return Some(format!("{what}: exit {:?}, stdout {text}", out.status.code()));
    }
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let [e] = values.as_slice() else {
        return Some(format!("{what}: stdout is not one JSON object: {text}"));
    };
    let msg = e["msg"].as_str().unwrap_or_default();
    if e["code"].as_u64() != Some(r.code) || msg.is_empty() {
        return Some(format!("{what}: want code {}, got {e}", r.code));
    }
    let d = before.0.diff(&Snapshot::take(roots));
    if !d.is_empty() {
        return Some(format!("{what}: files changed: {}", d.join("; ")));
    }
    for (ns, k) in before.1 {
        let d = k.diff(&KState::take(ns));
        if !d.is_empty() {
            return Some(format!("{what}: kernel state of {ns} changed: {}", d.join("; ")));
        }
    }
    None
}

/// 13.2: with a working attachment in place (a bridge, host-local reservations, a cache
/// entry, nft maps, qdiscs), a second pod's ADD with a bad value in the LAST plugin of
/// the 4-stage chain is refused before the first stage runs: the state, cache and data
/// trees and the kernel state of the host and both pods are what they were.
#[test]
fn bad_last_plugin_changes_nothing_beside_a_live_attachment() {
    require_root("netns, bridges, nftables");
    let mut sb = Sandbox::new("tblb");
    let pod_a = sb.pod("a");
    let pod_b = sb.pod("b");
    let ipam = sb.ipam_dir().display().to_string();
    let good = sb.write_conflist("10-good.conflist", &last(BANDWIDTH).replace("@IPAM@", &ipam));
    let bad = sb.write_conflist(
        "20-bad.conflist",
        &last(
            r#"{"type":"bandwidth","ingressRate":8000000,"ingressBurst":800000,"egressRate":-4,"egressBurst":400000}"#,
        )
        .replace("@IPAM@", &ipam),
    );
    let (good, bad) = (good.display().to_string(), bad.display().to_string());
    // Each pod its own host port, so that without preflight the refused ADD would get
    // as far as bandwidth.
    let with = |verb: &str, file: &str, pod: &str, id: &str| {
        let caps = if id == "ctr-a" {
            GOOD_CAPS.to_string()
        } else {
            GOOD_CAPS.replace("8080", "8081")
        };
        sb.cnichain(
            REF_PLUGINS,
            &["--container-id", id, "--cap-args", &caps, verb, file, pod],
        )
    };
    ok(&with("add", &good, &pod_a, "ctr-a"));
    let roots: Vec<(&str, &Path)> = vec![("sandbox", sb.dir.as_path())];
    let files = Snapshot::take(&roots);
    let netns = [sb.host(), ns_name(&pod_a), ns_name(&pod_b)];
    netns.iter().for_each(|n| settle_dad(n));
    let kernel: Vec<(String, KState)> = netns.iter().map(|n| (n.clone(), KState::take(n))).collect();
    // The live attachment really put state where the refused ADD would: a vacuous
    // comparison would prove nothing.
    assert!(
        !sb.files_in("cache").is_empty(),
        "no cache entry for the live attachment"
    );
    assert!(kernel[0].1 .0["nft"].contains("8080"), "no port mapping in the ruleset");
    assert!(kernel[0].1 .0["qdisc"].contains("tbf"), "no tbf qdisc on the host");

    let out = with("add", &bad, &pod_b, "ctr-b");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let e = cni_err(&out);
    assert_eq!(e["code"], 7, "{e}");
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("bandwidth") && msg.contains("egressRate"), "{msg}");
    assert_unchanged(&files, &roots, "the refused ADD");
    assert_kernel_unchanged(&kernel, "the refused ADD");

    ok(&with("del", &good, &pod_a, "ctr-a"));
}
