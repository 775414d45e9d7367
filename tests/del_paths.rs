//! DEL paths: a netns path that is no longer a namespace (issue 12.3), DEL that goes on
//! past a failing plugin and keeps the cache for a retry (12.4), a kill -9 during DEL,
//! an `ipam.type` that would recurse (12.8). Through the CLI, the drop-ins driven by
//! libcni's cnitool, and the meta-plugin.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cnichain install` into the sandbox's `cnibin`.
/// How a test drives the runtime side.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `cnichain VERB NET NETNS` (the engine, with its cache in the sandbox).
    Cli,
    /// libcni's cnitool exec'ing cnichain drop-ins (cache in /var/lib/cni).
    DropIns,
    /// libcni's cnitool exec'ing the `cnichain` meta-plugin once per verb.
    Meta,
}

struct Net {
    via: Via,
    name: String,
    cni_path: String,
}

fn run(sb: &Sandbox, n: &Net, verb: &str, pod: &str, caps: &str) -> Output {
    match n.via {
        Via::Cli => cli(sb, &n.cni_path, &["--cap-args", caps, verb, &n.name, pod]),
        Via::DropIns | Via::Meta => cnitool(sb, &n.cni_path, verb, &n.name, pod, caps),
    }
}

/// The libcni-style cache entries of this network (the sandbox's for the CLI, libcni's
/// fixed dir for cnitool).
fn cache_entries(sb: &Sandbox, n: &Net) -> Vec<String> {
    let dir = match n.via {
        Via::Cli => sb.cache_dir().join("results"),
        _ => PathBuf::from("/var/lib/cni/results"),
    };
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with(&format!("{}-", n.name)))
                .collect()
        })
        .unwrap_or_default()
}

fn reservations(sb: &Sandbox) -> Vec<String> {
    sb.files_in("ipam")
        .into_iter()
        .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
        .collect()
}

fn ruleset(sb: &Sandbox) -> String {
    stdout(&sb.sh_in(&sb.host(), "nft list ruleset 2>/dev/null"))
}

fn host_links(sb: &Sandbox, kind: &str) -> String {
    stdout(&sb.sh_in(&sb.host(), &format!("ip -o link show type {kind} | cut -d: -f2")))
        .trim()
        .to_string()
}

/// The chain of every scenario: bridge with ipMasq and host-local, an optional extra
/// plugin, portmap, bandwidth (an ifb for the ingress limit).
fn plugins(tag: &str, subnet: &str, extra: Option<Value>) -> Vec<Value> {
    let mut v = vec![
        Plugin::bridge(&format!("br{}", &tag[tag.len() - 4..]), subnet)
            .set("ipMasq", true)
            .0,
    ];
    if let Some(e) = extra {
        v.push(e);
    }
    v.push(Plugin::portmap().0);
    v.push(Plugin::bandwidth(Some((1000000, 100000)), Some((1000000, 100000))).0);
    v
}

fn setup(sb: &Sandbox, via: Via, subnet: &str, extra: Option<Value>, extra_path: &str) -> Net {
    let name = format!("{}-n", sb.tag);
    let list = plugins(&sb.tag, subnet, extra);
    let conf = match via {
        Via::Meta => json!({ "cniVersion": "1.0.0", "name": name, "plugins": [
            { "type": "cnichain", "capabilities": { "portMappings": true }, "plugins": list } ] }),
        _ => json!({ "cniVersion": "1.0.0", "name": name, "plugins": list }),
    };
    sb.write_conflist("10.conflist", &conf.to_string());
    let cni_path = match via {
        Via::Cli => format!("{extra_path}:{REF_PLUGINS}"),
        _ => format!("{extra_path}:{}:{REF_PLUGINS}", install(sb).display()),
    };
    Net { via, name, cni_path }
}

const PORT: &str = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#;

/// The pod's address from an ADD result.
fn pod_ip(out: &Output) -> String {
    let res: Value = serde_json::from_str(&ok(out)).expect("ADD result");
    res["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("an address")
        .to_string()
}

/// Unmount the pod's netns bind mount, leaving the plain empty file a crashed runtime
/// leaves; the namespace (nothing else holds it) and its veth pair die.
fn kill_netns_leaving_file(pod: &str) {
    let st = Command::new("umount").arg(pod).status().unwrap();
    assert!(st.success(), "umount {pod}");
    let md = std::fs::metadata(pod).expect("the path stays");
    assert!(md.is_file() && md.len() == 0, "a plain empty file");
}

/// Issue 12.3: ADD a pod with a host port and ipMasq, unmount its netns so the path is a
/// plain empty file, DEL: success and nothing host-side left; DEL again: success; a new
/// pod gets the same host port.
fn dead_netns_scenario(via: Via) {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("dead");
    let pod = sb.pod("p");
    let n = setup(&sb, via, "10.81.0.0/24", None, "/nonexistent");
    let _c = ResultsCleanup(n.name.clone());
    let ip = pod_ip(&run(&sb, &n, "add", &pod, PORT));
    let rules = ruleset(&sb);
    assert!(rules.contains("18080") && rules.contains(&ip), "{rules}");
    assert!(rules.contains(&format!("ipmasq {ip}/24")), "{rules}");
    assert!(!host_links(&sb, "ifb").is_empty(), "an ifb");
    assert_eq!(reservations(&sb).len(), 1);

    kill_netns_leaving_file(&pod);
    let o = run(&sb, &n, "del", &pod, PORT);
    ok(&o);
    let rules = ruleset(&sb);
    assert!(!rules.contains("18080"), "{via:?}: port mapping left: {rules}");
    assert!(!rules.contains(&ip), "{via:?}: pod address left: {rules}");
    assert_eq!(host_links(&sb, "ifb"), "", "{via:?}: ifb left");
    assert_eq!(host_links(&sb, "veth"), "", "{via:?}: veth left");
    assert!(reservations(&sb).is_empty(), "{via:?}: {:?}", reservations(&sb));
    assert!(cache_entries(&sb, &n).is_empty(), "{via:?}: cache left");
    // The attachment's lock file went with it.
    let locks: Vec<String> = sb
        .files_in("state")
        .into_iter()
        .filter(|f| f.starts_with("locks/") && f != "locks/gc.lock")
        .collect();
    assert!(locks.is_empty(), "{via:?}: {locks:?}");
    ok(&run(&sb, &n, "del", &pod, PORT));
    let _ = std::fs::remove_file(&pod);

    // The host port is free for the next pod.
    let pod2 = sb.pod("q");
    let ip2 = pod_ip(&run(&sb, &n, "add", &pod2, PORT));
    assert!(ruleset(&sb).contains("18080"));
    ok(&run(&sb, &n, "del", &pod2, PORT));
    assert!(!ruleset(&sb).contains(&ip2));
    assert!(reservations(&sb).is_empty());
}

#[test]
fn dead_netns_path_cli() {
    dead_netns_scenario(Via::Cli);
}

#[test]
fn dead_netns_path_drop_ins() {
    dead_netns_scenario(Via::DropIns);
}

#[test]
fn dead_netns_path_meta_plugin() {
    dead_netns_scenario(Via::Meta);
}

/// The drop-ins on their own: loopback, tuning and bridge DEL with a path that is a
/// plain file or a directory succeed.
#[test]
fn drop_in_del_of_a_non_namespace_succeeds() {
    require_root("netns, veth, bridges");
    let sb = Sandbox::new("nonns");
    let bin = install(&sb);
    let plain = sb.dir.join("plain");
    std::fs::write(&plain, "").unwrap();
    for path in [
        plain.display().to_string(),
        sb.dir.display().to_string(),
        "/gone/x".into(),
    ] {
        for (t, conf) in [
            ("loopback", json!({"cniVersion":"1.0.0","name":"x","type":"loopback"})),
            ("tuning", json!({"cniVersion":"1.0.0","name":"x","type":"tuning"})),
            (
                "bridge",
                json!({"cniVersion":"1.0.0","name":"x","type":"bridge","bridge":"cncx0","ipMasq":true,
                       "ipam":{"type":"host-local","dataDir": sb.ipam_dir(),"ranges":[[{"subnet":"10.82.0.0/24"}]]}}),
            ),
            (
                "ptp",
                json!({"cniVersion":"1.0.0","name":"x","type":"ptp","ipMasq":true,
                       "ipam":{"type":"host-local","dataDir": sb.ipam_dir(),"ranges":[[{"subnet":"10.82.0.0/24"}]]}}),
            ),
            ("portmap", json!({"cniVersion":"1.0.0","name":"x","type":"portmap"})),
            ("bandwidth", json!({"cniVersion":"1.0.0","name":"x","type":"bandwidth"})),
        ] {
            let mut c = sb.in_host(&bin.join(t));
            c.env("CNI_COMMAND", "DEL")
                .env("CNI_CONTAINERID", "c1")
                .env("CNI_NETNS", &path)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &bin);
            let o = pipe(c, &conf.to_string());
            assert!(o.status.success(), "{t} DEL {path}: {} {}", stdout(&o), stderr(&o));
        }
    }
}

/// A plugin script in `dir` named `name`: passes prevResult through on ADD; on DEL fails
/// with code 11 while `<dir>/fail` exists, and sleeps while `<dir>/hang` exists (after
/// touching `<dir>/in-del`).
fn script_plugin(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let body = format!(
        r#"#!/bin/sh
in=$(cat)
case "$CNI_COMMAND" in
ADD) printf '%s' "$in" | jq -c '.prevResult' ;;
DEL)
  touch {d}/in-del
  while [ -e {d}/hang ]; do sleep 0.05; done
  if [ -e {d}/fail ]; then
    echo '{{"cniVersion":"1.0.0","code":11,"msg":"scripted DEL failure","details":"remove the fail file"}}'
    exit 1
  fi ;;
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
esac
"#
    );
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Issue 12.4: one plugin's DEL fails; the others still run (host-local's reservation
/// released, portmap's elements gone), the error is the failing plugin's, the cache is
/// kept; with the plugin fixed, DEL again succeeds and drops the cache.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Failure {
    /// The plugin answers DEL with an error object.
    Error,
    /// The plugin's binary is gone.
    Missing,
    /// The plugin hangs and the per-plugin timeout kills it.
    Timeout,
}

fn failing_del_scenario(via: Via, failure: Failure) {
    let missing_binary = failure == Failure::Missing;
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("faildel");
    let pod = sb.pod("p");
    let sdir = sb.dir.join("scripts");
    let script = script_plugin(&sdir, "faildel");
    let n = setup(
        &sb,
        via,
        "10.83.0.0/24",
        Some(json!({"type": "faildel"})),
        &sdir.display().to_string(),
    );
    let _c = ResultsCleanup(n.name.clone());
    let ip = pod_ip(&run(&sb, &n, "add", &pod, PORT));
    assert!(ruleset(&sb).contains(&ip));
    match failure {
        Failure::Missing => std::fs::rename(&script, sdir.join("moved-away")).unwrap(),
        Failure::Error => std::fs::write(sdir.join("fail"), "").unwrap(),
        Failure::Timeout => std::fs::write(sdir.join("hang"), "").unwrap(),
    }

    let o = if failure == Failure::Timeout {
        let mut c = sb.in_host(&cnichain_bin());
        c.env("CNI_PATH", &n.cni_path)
            .args(["--plugin-timeout", "1", "--cap-args", PORT, "del", &n.name, &pod]);
        c.output().unwrap()
    } else {
        run(&sb, &n, "del", &pod, PORT)
    };
    assert_eq!(o.status.code(), Some(1), "{via:?}: {} {}", stdout(&o), stderr(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    if failure == Failure::Timeout {
        assert!(text.contains("timed out"), "{via:?}: {text}");
    } else if missing_binary {
        assert!(text.contains("faildel"), "{via:?}: {text}");
    } else {
        assert!(text.contains("scripted DEL failure"), "{via:?}: {text}");
        if matches!(via, Via::Cli) {
            // The first failure's code and msg (cnitool prints only the message).
            let e = cni_err(&o);
            assert_eq!(e["code"], 11, "{via:?}: {e}");
        }
    }
    // Everything else was released, in every mode where cnichain runs the chain.
    if matches!(via, Via::Cli | Via::Meta) {
        assert!(reservations(&sb).is_empty(), "{via:?}: {:?}", reservations(&sb));
        let rules = ruleset(&sb);
        assert!(!rules.contains("18080") && !rules.contains(&ip), "{via:?}: {rules}");
        assert_eq!(host_links(&sb, "ifb"), "", "{via:?}: ifb left");
    }
    assert_eq!(
        cache_entries(&sb, &n).len(),
        1,
        "{via:?}: the cache is kept for a retry"
    );

    match failure {
        Failure::Missing => std::fs::rename(sdir.join("moved-away"), &script).unwrap(),
        Failure::Error => std::fs::remove_file(sdir.join("fail")).unwrap(),
        Failure::Timeout => std::fs::remove_file(sdir.join("hang")).unwrap(),
    }
    ok(&run(&sb, &n, "del", &pod, PORT));
    assert!(cache_entries(&sb, &n).is_empty(), "{via:?}");
    assert!(reservations(&sb).is_empty());
    assert!(!ruleset(&sb).contains(&ip));
    assert_eq!(host_links(&sb, "veth"), "");
    assert_eq!(host_links(&sb, "ifb"), "");
}

#[test]
fn del_goes_on_past_a_failing_plugin_cli() {
    failing_del_scenario(Via::Cli, Failure::Error);
}

#[test]
fn del_goes_on_past_a_missing_plugin_cli() {
    failing_del_scenario(Via::Cli, Failure::Missing);
}

#[test]
fn del_goes_on_past_a_plugin_timeout_cli() {
    failing_del_scenario(Via::Cli, Failure::Timeout);
}

#[test]
fn del_goes_on_past_a_failing_plugin_meta() {
    failing_del_scenario(Via::Meta, Failure::Error);
}

/// cnichain killed with SIGKILL in the middle of DEL (portmap done, the script hanging,
/// bridge and host-local not yet): the next DEL leaves nothing.
#[test]
fn kill_during_del_then_del_leaves_nothing() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("killdel");
    let pod = sb.pod("p");
    let sdir = sb.dir.join("scripts");
    script_plugin(&sdir, "faildel");
    let n = setup(
        &sb,
        Via::Cli,
        "10.84.0.0/24",
        Some(json!({"type": "faildel"})),
        &sdir.display().to_string(),
    );
    let ip = pod_ip(&run(&sb, &n, "add", &pod, PORT));
    std::fs::write(sdir.join("hang"), "").unwrap();
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", &n.cni_path)
        .args(["--cap-args", PORT, "del", &n.name, &pod]);
    let mut child = c.spawn().unwrap();
    while !sdir.join("in-del").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success());
    // Part-way: the reservation is still there.
    assert_eq!(reservations(&sb).len(), 1);
    std::fs::remove_file(sdir.join("hang")).unwrap();
    ok(&run(&sb, &n, "del", &pod, PORT));
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
    assert!(!ruleset(&sb).contains(&ip));
    assert_eq!(host_links(&sb, "veth"), "");
    assert_eq!(host_links(&sb, "ifb"), "");
    assert_eq!(
        stdout(&sb.sh_in(&ns_name(&pod), "ip -o link show | grep -vc ': lo:'")).trim(),
        "0"
    );
}
