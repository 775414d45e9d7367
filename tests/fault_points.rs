//! Walks every named fault point of a 4-stage chain ADD (engine/src/fault.rs; the test
//! build enables them): ADD failing there must be rolled back to nothing, and ADD
//! aborted there (as abruptly as a kill -9) must be undone by DEL. "Nothing" is the
//! sandbox exactly as it was before the ADD: links, nftables, reservations, records,
//! locks, cache and the pod's sysctls.

mod common;
use common::*;
use serde_json::json;
use std::process::Command;

/// bridge + host-local, tuning, portmap, bandwidth.
fn chain4() -> String {
    Conflist::new("1.0.0", "fp")
        .plugin(
            Plugin::bridge("cncfp0", "10.73.0.0/24")
                .set("ipMasq", true)
                .set("hairpinMode", true)
                .default_route(),
        )
        .plugin(Plugin::tuning(json!({ "net.core.somaxconn": "512" })))
        .plugin(Plugin::portmap())
        .plugin(Plugin::bandwidth(Some((8000000, 800000)), Some((4000000, 400000))))
        .text()
}
const CAPS: &str = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

fn run(sb: &Sandbox, verb: &str, pod: &str, fault: Option<&str>) -> std::process::Output {
    let env: Vec<(&str, &str)> = fault.map(|f| ("CNICHAIN_FAULT", f)).into_iter().collect();
    cli_with(sb, REF_PLUGINS, &env, &["--cap-args", CAPS, verb, "fp", pod])
}

/// Everything an ADD can leave on the host side (the pod netns is checked separately).
fn snapshot(sb: &Sandbox) -> String {
    let host = sb.host();
    let keep = |f: &String| !f.ends_with("/lock") && !f.contains("last_reserved_ip") && f != "locks/gc.lock";
    let files = |d: &str| sb.files_in(d).into_iter().filter(keep).collect::<Vec<_>>().join(" ");
    format!(
        "links: {}\nnft: {}\nipam: {}\nstate: {}\ncache: {}",
        sh(
            sb,
            &host,
            "ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | paste -sd' '"
        ),
        sh(sb, &host, "nft list table inet cnichain"),
        files("ipam"),
        files("state"),
        files("cache"),
    )
}

#[test]
fn every_fault_point_leaves_nothing_behind() {
    let mut sb = Sandbox::new("fault");
    sb.write_conflist("10.conflist", &chain4());
    // Warm up: the bridge and the nftables table stay by design after the first ADD.
    let pod = sb.pod("warm");
    ok(&run(&sb, "add", &pod, None));
    ok(&run(&sb, "del", &pod, None));
    let baseline = snapshot(&sb);
    let mut walked = 0;
    for (i, point) in cnichain_engine::fault::POINTS.iter().enumerate() {
        for mode in ["fail", "abort"] {
            let pod = sb.pod(&format!("p{i}{}", &mode[..1]));
            let ns = ns_name(&pod);
            let before = sh(&sb, &ns, "cat /proc/sys/net/core/somaxconn; ip -o link show | wc -l");
            let o = run(&sb, "add", &pod, Some(&format!("{point}:{mode}")));
            assert!(
                !o.status.success(),
                "{point}:{mode}: ADD succeeded, the point was never reached"
            );
            assert_ne!(o.status.code(), Some(101), "{point}:{mode}: panic: {}", stderr(&o));
            if mode == "fail" {
                // the fault is reported like any error, and rollback undid the rest
                let e = cni_err(&o);
                assert!(e["msg"].as_str().unwrap_or_default().contains(point), "{point}: {e}");
            } else {
                ok(&run(&sb, "del", &pod, None));
            }
            assert_eq!(snapshot(&sb), baseline, "{point}:{mode}: the host is not as before");
            assert_eq!(
                sh(&sb, &ns, "cat /proc/sys/net/core/somaxconn; ip -o link show | wc -l"),
                before,
                "{point}:{mode}: pod"
            );
            // and the pod can be added again cleanly
            ok(&run(&sb, "add", &pod, None));
            ok(&run(&sb, "del", &pod, None));
            assert_eq!(snapshot(&sb), baseline, "{point}:{mode}: after a clean ADD/DEL");
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            walked += 1;
        }
    }
    assert_eq!(walked, cnichain_engine::fault::POINTS.len() * 2);
}
