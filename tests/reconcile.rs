//! `cnichain reconcile` on real namespaces: a pod with a host port, ipMasq and bandwidth
//! limits (in-process bridge, host-local, portmap, bandwidth); the firewall and the
//! shaping are wiped in the test's host netns (`nft flush ruleset`, `tc qdisc del`); the
//! host port stops answering; reconcile puts everything back (it answers again, tc shows
//! the same tbfs and redirect), a second reconcile has nothing to do, `--dry-run` changes
//! nothing, and another network's attachment is not touched.

mod common;
use cnichain_stages::kernel::netns::{run_in, NetNs};
use common::kstate::KState;
use common::snapshot::{assert_unchanged, Snapshot};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP server in the pod netns answering "pod" to every connection until dropped.
struct Server(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

fn serve(netns: &str, port: u16) -> Server {
    let ns = NetNs::open(netns).expect("open pod netns");
    let l = run_in(&ns, move || Ok(TcpListener::bind(("0.0.0.0", port))?)).expect("bind in pod");
    l.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = writeln!(s, "pod");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Server(stop, Some(h))
}

/// `busybox nc ADDR PORT` from the host netns: the first line or "" (`tries` attempts).
fn ask(sb: &Sandbox, addr: &str, port: u16, tries: usize) -> String {
    for i in 0..tries {
        let o = sb.sh_in(&sb.host(), &format!("timeout 2 busybox nc {addr} {port} </dev/null"));
        let line = stdout(&o).lines().next().unwrap_or("").trim().to_string();
        if !line.is_empty() || i + 1 == tries {
            return line;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    String::new()
}

fn conflist(net: &str, br: &str, subnet: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
  {{"type":"bridge","bridge":"{br}","isGateway":true,"ipMasq":true,
    "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"{subnet}"}}]]}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}},
  {{"type":"bandwidth","capabilities":{{"bandwidth":true}}}}]}}"#
    )
}

/// The root tbf rate (bytes/s, as tc -j shows it) of `dev` in the host netns, if any.
fn tbf_rate(sb: &Sandbox, dev: &str) -> Option<u64> {
    let out = sh(sb, &sb.host(), &format!("tc -j qdisc show dev {dev} root"));
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()?
        .iter()
        .find(|q| q["kind"] == "tbf")
        .and_then(|q| q["options"]["rate"].as_u64())
}

fn kernel(sb: &Sandbox) -> KState {
    common::kstate::settled(&sb.host())
}

#[track_caller]
fn assert_kernel_same(before: &KState, sb: &Sandbox, what: &str) {
    let d = before.diff(&kernel(sb));
    assert!(
        d.is_empty(),
        "{what} changed the host's kernel state:\n  {}",
        d.join("\n  ")
    );
}

fn redirects_to(sb: &Sandbox, veth: &str, ifb: &str) -> bool {
    let out = sh(sb, &sb.host(), &format!("tc filter show dev {veth} ingress"));
    out.contains("mirred") && out.contains(ifb)
}

#[test]
fn reconcile_restores_nat_masquerade_and_shaping_after_a_wipe() {
    assert!(is_root(), "this test needs root (namespaces, nftables, tc)");
    let mut sb = Sandbox::new("recon");
    let net = format!("{}-n", sb.tag);
    let br = format!("rc{}", std::process::id() % 100000);
    sb.write_conflist("10-recon.conflist", &conflist(&net, &br, "10.97.1.0/24"));
    let pod = sb.pod("pod");
    let caps = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000}
    })
    .to_string();
    let res: Value =
        serde_json::from_str(&ok(&sb.cnichain("", &["--cap-args", &caps, "add", &net, &pod]))).expect("result");
    let names: Vec<String> = res["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    let veth = names.iter().find(|n| n.starts_with("veth")).expect("host veth").clone();
    let ifb = names.iter().find(|n| n.starts_with("bwp")).expect("ifb").clone();

    // A second network, unshaped and unmapped: reconcile must leave it as it is.
    let other = format!("{}-o", sb.tag);
    sb.write_conflist(
        "20-other.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{other}","plugins":[{{"type":"bridge","bridge":"{br}o",
                "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"10.97.2.0/24"}}]]}}}}]}}"#
        ),
    );
    let pod2 = sb.pod("pod2");
    ok(&sb.cnichain("", &["add", &other, &pod2]));

    let _server = serve(&pod, 80);
    let gw = "10.97.1.1";
    assert_eq!(ask(&sb, gw, 8080, 5), "pod", "the host port answers after ADD");
    let (in_rate, out_rate) = (tbf_rate(&sb, &veth), tbf_rate(&sb, &ifb));
    assert_eq!(in_rate, Some(1_000_000), "8 Mbit/s into the pod, tc -j gives bytes/s");
    assert_eq!(out_rate, Some(500_000));
    assert!(redirects_to(&sb, &veth, &ifb));

    // Nothing to do on an intact node; the trees and kernel unchanged.
    let roots_owned: Vec<(String, std::path::PathBuf)> = vec![
        ("state".into(), sb.dir.join("state")),
        ("cache".into(), sb.cache_dir()),
        ("ipam".into(), sb.ipam_dir()),
    ];
    let roots: Vec<(&str, &std::path::Path)> = roots_owned.iter().map(|(l, p)| (l.as_str(), p.as_path())).collect();
    let out = ok(&sb.cnichain("", &["reconcile"]));
    assert_eq!(out.trim(), "nothing to do (2 live attachments checked)", "{out}");

    // The wipe: a firewall reload and a tc cleanup in the test's host netns.
    sh(
        &sb,
        &sb.host(),
        &format!(
            "nft flush ruleset && tc qdisc del dev {veth} root && tc qdisc del dev {veth} ingress && tc qdisc del dev {ifb} root"
        ),
    );
    assert_eq!(
        ask(&sb, gw, 8080, 1),
        "",
        "the host port must not answer after the wipe"
    );
    assert_eq!(tbf_rate(&sb, &veth), None);

    // --dry-run says what it would do and changes nothing.
    let files = Snapshot::take(&roots);
    let before = kernel(&sb);
    let dry = ok(&sb.cnichain("", &["reconcile", "--dry-run"]));
    assert_kernel_same(&before, &sb, "reconcile --dry-run");
    assert_unchanged(&files, &roots, "reconcile --dry-run");
    let prefix = format!("would restore {net} ");
    for want in [
        "portmap: ",
        "bridge: masquerade of 10.97.1.",
        "bandwidth: tbf 1: on veth",
        "bandwidth: tbf 1: on bwp",
    ] {
        assert!(
            dry.lines().any(|l| l.starts_with(&prefix) && l.contains(want)),
            "--dry-run lists {want:?}:\n{dry}"
        );
    }
    assert!(!dry.contains(&other), "another network's attachment listed:\n{dry}");

    // Reconcile: everything back.
    let done = ok(&sb.cnichain("", &["reconcile", &net]));
    eprintln!("--dry-run:\n{dry}reconcile:\n{done}");
    // What --dry-run listed is what was restored (the shared table once: a dry run
    // cannot know that the first stage's restore brings it back for the next).
    let dry_set: Vec<String> = dry
        .lines()
        .map(|l| l.replacen("would restore", "restored", 1))
        .collect();
    for l in done.lines() {
        assert!(
            dry_set.iter().any(|d| d == l),
            "restored {l:?} that --dry-run did not list:\n{dry}"
        );
    }
    for d in dry_set.iter().filter(|d| !d.contains("nftables table")) {
        assert!(
            done.lines().any(|l| l == d),
            "--dry-run listed {d:?} but it was not restored:\n{done}"
        );
    }
    assert!(
        done.lines().all(|l| l.starts_with(&format!("restored {net} "))),
        "{done}"
    );
    assert!(done.contains("portmap: host port tcp port 8080"), "{done}");
    assert_eq!(
        ask(&sb, gw, 8080, 5),
        "pod",
        "the host port answers again after reconcile"
    );
    assert_eq!(tbf_rate(&sb, &veth), in_rate, "the same ingress tbf is back");
    assert_eq!(tbf_rate(&sb, &ifb), out_rate, "the same egress tbf is back");
    assert!(redirects_to(&sb, &veth, &ifb), "the redirect to the ifb is back");
    let ruleset = sh(&sb, &sb.host(), "nft list ruleset");
    assert!(ruleset.contains("masquerade"), "{ruleset}");
    // CHECK agrees that the attachment is whole.
    ok(&sb.cnichain("", &["--cap-args", &caps, "check", &net, &pod]));

    // Idempotent: nothing left to do, nothing changed.
    let files = Snapshot::take(&roots);
    let before = kernel(&sb);
    let again = ok(&sb.cnichain("", &["reconcile"]));
    assert_eq!(again.trim(), "nothing to do (2 live attachments checked)", "{again}");
    assert_kernel_same(&before, &sb, "a second reconcile");
    assert_unchanged(&files, &roots, "a second reconcile");

    // The ifb itself gone: made again under its name, shaped and redirected to.
    sh(&sb, &sb.host(), &format!("ip link del {ifb}"));
    let done = ok(&sb.cnichain("", &["reconcile"]));
    assert!(done.contains(&format!("bandwidth: ifb {ifb}")), "{done}");
    assert_eq!(tbf_rate(&sb, &ifb), out_rate);
    assert!(redirects_to(&sb, &veth, &ifb));
    ok(&sb.cnichain("", &["--cap-args", &caps, "check", &net, &pod]));

    // A stale attachment (its netns gone) is not reconciled.
    drop(_server);
    sh(&sb, &sb.host(), "nft flush ruleset");
    ok(&std::process::Command::new("ip")
        .args(["netns", "del", &ns_name(&pod)])
        .output()
        .expect("ip"));
    let out = ok(&sb.cnichain("", &["reconcile"]));
    assert_eq!(out.trim(), "nothing to do (1 live attachments checked)", "{out}");
    ok(&sb.cnichain("", &["--cap-args", &caps, "del", &net, &pod]));
    ok(&sb.cnichain("", &["del", &other, &pod2]));
    let _ = std::process::Command::new("ip")
        .args(["-n", &sb.host(), "link", "del", &br])
        .output();
}

/// An attachment made through libcni by the `cnichain` meta-plugin (the runtime's way):
/// its cache entry holds the meta entry with its inner chain; reconcile restores the
/// inner stages' state from it. libcni's cnitool writes its fixed cache dir.
#[test]
fn reconcile_restores_a_meta_plugin_attachment() {
    assert!(is_root(), "this test needs root (namespaces, nftables)");
    let mut sb = Sandbox::new("recm");
    let net = format!("{}-n", sb.tag);
    let _cleanup = ResultsCleanup(net.clone());
    let br = format!("rm{}", std::process::id() % 100000);
    sb.write_conflist(
        "10-meta.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"cnichain",
  "capabilities":{{"portMappings":true}},"plugins":[
    {{"type":"bridge","bridge":"{br}","isGateway":true,
      "ipam":{{"type":"host-local","dataDir":"@IPAM@","ranges":[[{{"subnet":"10.97.3.0/24"}}]]}}}},
    {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}]}}"#
        ),
    );
    let bin = install(&sb);
    let pod = sb.pod("p");
    let caps = r#"{"portMappings":[{"hostPort":8090,"containerPort":80,"protocol":"tcp"}]}"#;
    let cnitool = |verb: &str| {
        let mut c = sb.in_host(&peer_cnitool());
        c.env("CNI_PATH", &bin).env("CAP_ARGS", caps).args([verb, &net, &pod]);
        c.output().expect("run cnitool")
    };
    ok(&cnitool("add"));
    let _server = serve(&pod, 80);
    assert_eq!(ask(&sb, "10.97.3.1", 8090, 5), "pod");
    sh(&sb, &sb.host(), "nft flush ruleset");
    assert_eq!(ask(&sb, "10.97.3.1", 8090, 1), "");
    let reconcile = || ok(&sb.cnichain("", &["--cache-dir", "/var/lib/cni", "reconcile", &net]));
    let done = reconcile();
    assert!(
        done.contains(&format!("restored {net} ")) && done.contains("portmap: host port tcp port 8090"),
        "{done}"
    );
    assert_eq!(ask(&sb, "10.97.3.1", 8090, 5), "pod", "answers again");
    assert_eq!(reconcile().trim(), "nothing to do (1 live attachments checked)");
    drop(_server);
    ok(&cnitool("del"));
    let _ = std::process::Command::new("ip")
        .args(["-n", &sb.host(), "link", "del", &br])
        .output();
}
