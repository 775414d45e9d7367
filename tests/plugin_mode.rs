//! Plugin mode: runtimes execute cnichain as drop-in plugins (symlinks named after the
//! stages) and as the `cnichain` meta-plugin. The libcni-based cnitool drives both
//! through ADD, CHECK, DEL, DEL again in throwaway namespaces; the skeleton contract
//! (VERSION, required environment, errors) is checked directly; install/uninstall.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn normalize(mut v: Value) -> Value {
    if let Some(ifs) = v["interfaces"].as_array_mut() {
        for i in ifs {
            i["mac"] = json!("<mac>");
        }
    }
    v
}

fn run_lifecycle(sb: &Sandbox, cni_path: &str, net: &str, pod: &str, caps: &str) -> Value {
    let res: Value = serde_json::from_str(&ok(&cnitool(sb, cni_path, "add", net, pod, caps))).expect("ADD result");
    ok(&cnitool(sb, cni_path, "check", net, pod, ""));
    ok(&cnitool(sb, cni_path, "del", net, pod, caps));
    ok(&cnitool(sb, cni_path, "del", net, pod, caps));
    res
}

fn assert_clean(sb: &Sandbox, pod: &str) {
    let pod_ns = pod.trim_start_matches("/run/netns/");
    assert_eq!(
        stdout(&sb.sh_in(pod_ns, "ip -o link show | grep -vc ': lo:'")).trim(),
        "0",
        "pod links left"
    );
    assert_eq!(
        stdout(&sb.sh_in(&sb.host(), "ip -o link show type veth | grep -vc cncdummy")).trim(),
        "0",
        "host veths left"
    );
    let reserved: Vec<String> = sb
        .files_in("ipam")
        .into_iter()
        .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved"))
        .collect();
    assert!(reserved.is_empty(), "reservations left: {reserved:?}");
}

/// bridge + host-local, then tuning: the plugins of the networks below.
fn inner() -> String {
    json!([
        Plugin::bridge("cncp0", "10.66.0.0/24").default_route().0,
        Plugin::tuning(json!({ "net.ipv4.conf.eth0.arp_notify": "1" })).0,
    ])
    .to_string()
}

/// libcni runs bridge and host-local as cnichain drop-ins (tuning stays the reference
/// binary found later in CNI_PATH when it is not in-process): same result as the CLI.
#[test]
fn libcni_drives_drop_in_symlinks() {
    let mut sb = Sandbox::new("dropin");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let net = format!("{}-n", sb.tag);
    let _c = ResultsCleanup(net.clone());
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":{}}}"#, inner()),
    );
    let cni_path = format!("{}:{REF_PLUGINS}", bin.display());
    let via_libcni = run_lifecycle(&sb, &cni_path, &net, &pod, "");
    assert_clean(&sb, &pod);
    let via_cli: Value = serde_json::from_str(&ok(&sb.cnichain(REF_PLUGINS, &["add", &net, &pod]))).unwrap();
    ok(&sb.cnichain(REF_PLUGINS, &["del", &net, &pod]));
    assert_clean(&sb, &pod);
    // host-local is round robin: the second pod gets the next address
    let mut a = normalize(via_libcni);
    let b = normalize(via_cli);
    assert_eq!(a["ips"][0]["address"], "10.66.0.2/24");
    assert_eq!(b["ips"][0]["address"], "10.66.0.3/24");
    a["ips"][0]["address"] = b["ips"][0]["address"].clone();
    assert_eq!(a, b);
}

/// One `cnichain` entry carries the whole chain: libcni execs one binary.
#[test]
fn libcni_drives_the_meta_plugin() {
    let mut sb = Sandbox::new("meta");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let net = format!("{}-n", sb.tag);
    let _c = ResultsCleanup(net.clone());
    sb.write_conflist(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"cnichain","capabilities":{{"portMappings":true}},"plugins":{}}}]}}"#, inner()
        ),
    );
    let cni_path = format!("{}:{REF_PLUGINS}", bin.display());
    let res = run_lifecycle(&sb, &cni_path, &net, &pod, r#"{"portMappings":[]}"#);
    assert_eq!(res["ips"][0]["address"], "10.66.0.2/24");
    assert_eq!(res["interfaces"][0]["name"], "cncp0");
    assert_eq!(res["interfaces"][2]["name"], "eth0");
    assert_clean(&sb, &pod);
}

#[test]
fn the_skeleton_contract() {
    let mut sb = Sandbox::new("skel");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let binp = bin.display().to_string();
    let conf = r#"{"cniVersion":"1.0.0","name":"skel","type":"loopback"}"#;

    let o = plugin(
        &sb,
        &bin.join("loopback"),
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let full = |cmd: &'static str, netns: &str| -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), "c".into()),
            ("CNI_NETNS".into(), netns.into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), binp.clone()),
        ]
    };
    let only = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let no_netns = |cmd: &'static str| -> Vec<(String, String)> {
        full(cmd, "").into_iter().filter(|(k, _)| k != "CNI_NETNS").collect()
    };
    let cases: Vec<(Vec<(String, String)>, &str, u64, &str)> = vec![
        (
            only(&[("CNI_COMMAND", "ADD"), ("CNI_PATH", &binp)]),
            conf,
            4,
            "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME",
        ),
        (
            only(&[("CNI_COMMAND", "BOGUS"), ("CNI_PATH", &binp)]),
            conf,
            4,
            "unknown CNI_COMMAND",
        ),
        (no_netns("DEL"), "{nope", 6, "JSON"),
        (
            no_netns("DEL"),
            r#"{"cniVersion":"9.0.0","name":"skel","type":"loopback"}"#,
            1,
            "incompatible",
        ),
        (
            full("CHECK", &pod),
            r#"{"cniVersion":"0.3.1","name":"skel","type":"loopback"}"#,
            1,
            "CHECK",
        ),
        (
            full("ADD", &pod),
            r#"{"cniVersion":"1.0.0","type":"loopback"}"#,
            7,
            "name",
        ),
        (full("ADD", "/nonexistent"), conf, 4, "CNI_NETNS"),
    ];
    for (env, stdin, code, needle) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let o = plugin(&sb, &bin.join("loopback"), &env, stdin);
        assert_eq!(o.status.code(), Some(1), "{env:?}: {}", stdout(&o));
        let e: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no error JSON: {}", stdout(&o)));
        assert_eq!(e["code"].as_u64(), Some(code), "{env:?}: {e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(needle), "{env:?}: {text} lacks {needle}");
    }
    // Refused requests leave no attachment lock file behind.
    let locks: Vec<String> = sb
        .files_in("state")
        .into_iter()
        .filter(|f| f != "locks/gc.lock")
        .collect();
    assert!(locks.is_empty(), "{locks:?}");

    // A working ADD/CHECK/DEL of the loopback drop-in.
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", pod.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", binp.as_str()),
        ]
    };
    let o = plugin(&sb, &bin.join("loopback"), &env("ADD"), conf);
    let r: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(r["interfaces"][0]["name"], "lo");
    ok(&plugin(&sb, &bin.join("loopback"), &env("CHECK"), conf));
    ok(&plugin(&sb, &bin.join("loopback"), &env("DEL"), conf));
    assert!(stdout(&sb.sh_in(pod.trim_start_matches("/run/netns/"), "ip link show lo")).contains("state DOWN"));

    // Run by hand without CNI_COMMAND: the about text, exit 0.
    let o = plugin(&sb, &bin.join("bridge"), &[], "");
    assert!(o.status.success());
    assert!(stderr(&o).contains("CNI protocol versions supported"));
}

#[test]
fn install_refuses_foreign_files_and_uninstall_restores_them() {
    let sb = Sandbox::new("inst");
    let dir = sb.dir.join("optcnibin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bridge"), "reference bridge").unwrap();
    let run = |args: &[&str]| {
        Command::new(cnichain_bin())
            .args(args)
            .arg("--bin-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };

    let o = run(&["install", "--dry-run", "--force"]);
    assert!(stdout(&o).contains("would move"), "{}", stdout(&o));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "a dry run changes nothing");
    let o = run(&["install"]);
    let e = cni_err(&o);
    assert!(e["msg"].as_str().unwrap().contains("refusing to overwrite"), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "a refused install changes nothing"
    );

    ok(&run(&["install", "--force"]));
    assert_eq!(std::fs::read_link(dir.join("bridge")).unwrap(), Path::new("cnichain"));
    assert_eq!(
        std::fs::read_to_string(dir.join("bridge.cnichain-orig")).unwrap(),
        "reference bridge"
    );
    assert!(dir.join("cnichain").is_file());
    // idempotent
    ok(&run(&["install"]));

    ok(&run(&["uninstall"]));
    assert_eq!(std::fs::read_to_string(dir.join("bridge")).unwrap(), "reference bridge");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert_eq!(left, ["bridge"]);
}

/// Mixed chains: reference plugins from /usr/lib/cni next to cnichain's stages, in both
/// forms. macvlan (reference) delegates its IPAM to `host-local`, which is cnichain's
/// drop-in (found first in CNI_PATH); firewall (reference, iptables) follows cnichain's
/// bridge.
#[test]
fn mixed_chains_with_reference_plugins_work_in_both_forms() {
    let mut sb = Sandbox::new("mixed");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let host = sb.host();
    ok(&sb.sh_in(
        &host,
        "ip link add cncdummy0 type veth peer name cncdummy1 && ip link set cncdummy0 up && ip link set cncdummy1 up",
    ));
    let cni_path = format!("{}:{REF_PLUGINS}", bin.display());
    let macvlan = r#"[
      { "type": "macvlan", "master": "cncdummy0", "mode": "bridge",
        "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.67.0.0/24" }]] } },
      { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.arp_notify": "1" } }
    ]"#;
    let firewall = r#"[
      { "type": "bridge", "bridge": "cncm0", "isGateway": true,
        "ipam": { "type": "host-local", "dataDir": "@IPAM@", "ranges": [[{ "subnet": "10.68.0.0/24" }]] } },
      { "type": "firewall" }
    ]"#;
    for (name, inner, subnet) in [("mv", macvlan, "10.67.0."), ("fw", firewall, "10.68.0.")] {
        for meta in [false, true] {
            let net = format!("{}-{name}{}", sb.tag, if meta { "m" } else { "d" });
            let _c = ResultsCleanup(net.clone());
            let plugins = if meta {
                format!(r#"[{{"type":"cnichain","plugins":{inner}}}]"#)
            } else {
                inner.to_string()
            };
            sb.write_conflist(
                "10.conflist",
                &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":{plugins}}}"#),
            );
            let res = run_lifecycle(&sb, &cni_path, &net, &pod, "");
            let addr = res["ips"][0]["address"].as_str().unwrap_or_default();
            assert!(addr.starts_with(subnet), "{net}: {res}");
            if name == "mv" {
                let kinds: Vec<&str> = res["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|i| i["name"].as_str())
                    .collect();
                assert_eq!(kinds, ["eth0"], "{net}: macvlan's result");
            }
            assert_clean(&sb, &pod);
            if name == "fw" {
                let rules = stdout(&sb.sh_in(&host, "iptables-save -t filter"));
                assert!(
                    !rules.contains(&addr.split('/').next().unwrap().to_string()),
                    "{net}: firewall rules left:\n{rules}"
                );
            }
        }
    }
}

/// A drop-in waits for the attachment's lock (held here by util-linux `flock`, as
/// another cnichain process would hold it), and goes on at once when the process that
/// exec'd it says it holds that lock for it (CNICHAIN_HELD_LOCKS).
#[test]
fn drop_ins_take_the_attachment_lock() {
    let mut sb = Sandbox::new("lockd");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let state = sb.dir.join("state");
    let lock = state.join("locks/lk/c:eth0.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let ready = sb.dir.join("held");
    // Its own process group: killing it must also end the shell that inherited the lock.
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["-c", &format!("touch {} && sleep 30", ready.display())])
        .process_group(0)
        .spawn()
        .unwrap();
    while !ready.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let start = |held: Option<&Path>| {
        let (pod, binp, held) = (
            pod.as_str(),
            bin.display().to_string(),
            held.map(|h| h.display().to_string()),
        );
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", pod),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", binp.as_str()),
        ];
        if let Some(h) = &held {
            env.push(("CNICHAIN_HELD_LOCKS", h.as_str()));
        }
        spawn_piped(
            plugin_cmd(&sb, &bin.join("loopback"), &env, false),
            r#"{"cniVersion":"1.0.0","name":"lk","type":"loopback"}"#,
        )
    };
    // Held for it by its parent: done while the lock is held.
    ok(&start(Some(&lock)).wait_with_output().unwrap());
    // Not held for it: it waits as long as the lock is held, then finishes.
    let mut waiting = start(None);
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(waiting.try_wait().unwrap().is_none(), "ran while the lock was held");
    // SAFETY: a signal to the process group we made.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    holder.wait().unwrap();
    ok(&waiting.wait_with_output().unwrap());
    // The lock file stays with the attachment until its DEL.
    assert!(lock.exists(), "ADD keeps the attachment's lock file");
    let binp = bin.display().to_string();
    let env = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_NETNS", pod.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", binp.as_str()),
    ];
    ok(&plugin(
        &sb,
        &bin.join("loopback"),
        &env,
        r#"{"cniVersion":"1.0.0","name":"lk","type":"loopback"}"#,
    ));
    assert!(!lock.exists(), "DEL removes the attachment's lock file");
}
