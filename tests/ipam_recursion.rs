//! Issue 12.8: an `ipam.type` naming a main stage (ptp->ptp, bridge->bridge), another
//! non-IPAM stage (tuning, portmap, loopback, bandwidth), or a cycle through an exec'd
//! delegate. ADD is refused with code 7 (no stack overflow, no process storm), nothing
//! is left, and DEL of such an attachment succeeds.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

fn pod_links(sb: &Sandbox, pod: &str) -> String {
    stdout(&sb.sh_in(&ns_name(pod), "ip -o link show | grep -vc ': lo:'"))
        .trim()
        .to_string()
}

fn host_links(sb: &Sandbox) -> String {
    stdout(&sb.sh_in(&sb.host(), "ip -o link show | grep -v ': lo:' | cut -d: -f2"))
        .trim()
        .to_string()
}

fn main_conf(main: &str, ipam: &str) -> serde_json::Value {
    let mut c = json!({"type": main, "ipam": {"type": ipam}});
    if main == "bridge" {
        c["bridge"] = json!("cncrec0");
    }
    c
}

#[test]
fn ipam_type_naming_a_non_ipam_stage_is_refused_and_del_succeeds() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("ipamrec");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let cases = [
        ("ptp", "ptp"),
        ("bridge", "bridge"),
        ("ptp", "bridge"),
        ("bridge", "ptp"),
        ("bridge", "tuning"),
        ("bridge", "portmap"),
        ("ptp", "loopback"),
        ("ptp", "bandwidth"),
    ];
    for (main, ipam) in cases {
        let net = format!("{}-{main}-{ipam}", sb.tag);
        let conf = main_conf(main, ipam);
        sb.write_conflist(
            "10.conflist",
            &json!({"cniVersion":"1.0.0","name": net, "plugins":[conf]}).to_string(),
        );
        // CLI, in-process.
        // In-process, and with the main plugin exec'd (the reference would exec its
        // IPAM without end: it is never run with such a config, on any verb).
        for exec in ["none", main] {
            let e = cni_err(&sb.cnichain(REF_PLUGINS, &["--exec", exec, "add", &net, &pod]));
            assert_eq!(e["code"], 7, "{main}->{ipam} exec {exec}: {e}");
            assert!(e["msg"].as_str().unwrap().contains("ipam.type"), "{e}");
            ok(&sb.cnichain(REF_PLUGINS, &["--exec", exec, "del", &net, &pod]));
        }
        assert_eq!(pod_links(&sb, &pod), "0", "{main}->{ipam}");
        assert_eq!(host_links(&sb), "", "{main}->{ipam}");
        // Drop-ins.
        let mut stdin = conf.clone();
        stdin["cniVersion"] = json!("1.0.0");
        stdin["name"] = json!(net);
        for (verb, want) in [("ADD", Some(7)), ("DEL", None)] {
            let mut c = sb.in_host(&bin.join(main));
            c.env("CNI_COMMAND", verb)
                .env("CNI_CONTAINERID", "c1")
                .env("CNI_NETNS", &pod)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &bin);
            let o = pipe(c, &stdin.to_string());
            match want {
                Some(code) => assert_eq!(cni_err(&o)["code"], code, "drop-in {main}->{ipam} {verb}"),
                None => {
                    ok(&o);
                }
            }
        }
        assert_eq!(pod_links(&sb, &pod), "0", "{main}->{ipam}");
        assert_eq!(host_links(&sb), "", "{main}->{ipam}");
    }
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}

/// An exec'd IPAM that execs the ptp drop-in again with the same request: a cycle
/// through processes. It ends at the delegation depth limit with code 7; the DEL of the
/// attachment goes round the same cycle and succeeds.
#[test]
fn a_delegation_cycle_through_exec_ends() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("ipamcyc");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let sdir = sb.dir.join("scripts");
    std::fs::create_dir_all(&sdir).unwrap();
    let script = sdir.join("loopipam");
    let count = sdir.join("count");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho x >> {}\nexec {} \"$@\"\n",
            count.display(),
            bin.join("ptp").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &json!({"cniVersion":"1.0.0","name": net,
                "plugins":[{"type":"ptp","ipam":{"type":"loopipam"}}]})
        .to_string(),
    );
    let cni_path = format!("{}:{}", sdir.display(), bin.display());
    let o = sb.cnichain(&cni_path, &["add", &net, &pod]);
    let e = cni_err(&o);
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("nested"), "{e}");
    let hops = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    let add_hops = hops(&count);
    // Eight hops down on ADD, eight more for the rollback's DEL: a bounded number.
    assert!((8..=16).contains(&add_hops), "{add_hops} hops");
    ok(&sb.cnichain(&cni_path, &["del", &net, &pod]));
    assert_eq!(pod_links(&sb, &pod), "0");
    assert_eq!(host_links(&sb), "");
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}
