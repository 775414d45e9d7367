//! GC for real (issue 7): `cnichain gc NET --valid ...` and a runtime's GC through
//! libcni remove every trace of the attachments the valid set does not list, also when
//! their cached result is gone (a crash, a wiped cache) and whether their pod netns is
//! gone or still there: host veth, IP reservation, masquerade and MAC spoof elements,
//! port mappings, ifb, tuning record, lock file. Valid attachments and another
//! network's attachments on the same node keep everything, cached or not.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Output;

const NET: &str = "gcnet";
const OTHER: &str = "gcother";

/// The 4-stage chain with every per-attachment object cnichain makes.
fn chain(name: &str, bridge: &str, subnet: &str) -> String {
    Conflist::new("1.1.0", name)
        .plugin(
            Plugin::bridge(bridge, subnet)
                .set("ipMasq", true)
                .set("macspoofchk", true),
        )
        .plugin(Plugin::tuning(json!({ "net.core.somaxconn": "511" })))
        .plugin(Plugin::portmap())
        .plugin(Plugin::bandwidth(Some((8000000, 80000)), Some((8000000, 80000))))
        .text()
}

fn cnichain(sb: &Sandbox, args: &[&str], caps: &str) -> Output {
    let o = sb
        .in_host(&cnichain_bin())
        .env("CNI_PATH", "")
        .env("CAP_ARGS", caps)
        .args(args)
        .output()
        .expect("run cnichain");
    assert_ne!(o.status.code(), Some(101), "panicked: {}", stderr(&o));
    o
}

fn ports(port: u16) -> String {
    format!(r#"{{"portMappings":[{{"hostPort":{port},"containerPort":80,"protocol":"tcp"}}]}}"#)
}

fn add(sb: &Sandbox, net: &str, cid: &str, pod: &str, port: u16, ifname: &str) {
    ok(&cnichain(
        sb,
        &["add", net, pod, "--container-id", cid, "-i", ifname],
        &ports(port),
    ));
}

/// Everything on the node that an attachment can leave: host links (name, kind,
/// alias), nft elements of both cnichain tables, IPAM reservations, state-dir and cache
/// files. Sorted, comparable.
fn traces(sb: &Sandbox) -> BTreeSet<String> {
    let host = sb.host();
    let mut out = BTreeSet::new();
    let links: Value = serde_json::from_str(&sh(sb, &host, "ip -j -d link show")).expect("ip -j");
    for l in links.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or_default();
        let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or_default();
        let alias = l["ifalias"].as_str().unwrap_or_default();
        out.insert(format!("link {name} {kind} {alias}"));
    }
    for family in ["inet", "bridge"] {
        let o = sb.sh_in(&host, &format!("nft -j list table {family} cnichain"));
        if !o.status.success() {
            continue;
        }
        let v: Value = serde_json::from_slice(&o.stdout).expect("nft -j");
        for item in v["nftables"].as_array().into_iter().flatten() {
            let Some(set) = item.get("set").or_else(|| item.get("map")) else {
                continue;
            };
            for e in set["elem"].as_array().into_iter().flatten() {
                out.insert(format!("nft {family} {} {e}", set["name"]));
            }
        }
    }
    // (the store's lock and last_reserved_ip files stay by design)
    for f in leftover_files(sb)
        .into_iter()
        .filter_map(|f| f.strip_prefix("ipam ").map(String::from))
    {
        let content = std::fs::read_to_string(sb.ipam_dir().join(&f)).unwrap_or_default();
        out.insert(format!("ipam {f} {}", content.replace(['\r', '\n'], " ")));
    }
    for f in sb.files_in("state") {
        out.insert(format!("state {f}"));
    }
    for f in sb.files_in("cache") {
        out.insert(format!("cache {f}"));
    }
    out
}

/// The traces in `after` that are not in `before`.
fn new_in(after: &BTreeSet<String>, before: &BTreeSet<String>) -> Vec<String> {
    after.difference(before).cloned().collect()
}

/// Remove the cached result of `cid` on `net` (as a crash before caching, or a wiped
/// cache).
fn drop_cache(sb: &Sandbox, net: &str, cid: &str) {
    let f = sb.cache_dir().join(format!("results/{net}-{cid}-eth0"));
    std::fs::remove_file(&f).unwrap_or_else(|e| panic!("rm {}: {e}", f.display()));
}

#[test]
fn gc_removes_every_trace_of_stale_attachments_without_their_cache() {
    require_root("netns, veth, bridges, nftables");
    let mut sb = Sandbox::new("gc");
    sb.write_conflist("10-gc.conflist", &chain(NET, "cngc0", "10.251.0.0/24"));
    sb.write_conflist("20-other.conflist", &chain(OTHER, "cngc1", "10.252.0.0/24"));
    let keep = sb.pod("keep");
    let other = sb.pod("other");
    let gone = sb.pod("gone");
    let orphan = sb.pod("orphan");
    let cached = sb.pod("cached");

    // Valid: "keep" (its cache wiped too: the valid set is authoritative) and, on
    // another network, a second interface of a container that is stale on this one.
    add(&sb, NET, "keep", &keep, 18081, "eth0");
    add(&sb, OTHER, "gone", &other, 18082, "net1");
    drop_cache(&sb, NET, "keep");
    let before = traces(&sb);

    // Stale: one whose netns is gone, one whose netns is still there (an orphan), both
    // without a cache entry; one with its cache entry (libcni's DEL path).
    add(&sb, NET, "gone", &gone, 18083, "eth0");
    add(&sb, NET, "orphan", &orphan, 18084, "eth0");
    add(&sb, NET, "cached", &cached, 18085, "eth0");
    drop_cache(&sb, NET, "gone");
    drop_cache(&sb, NET, "orphan");
    let added = new_in(&traces(&sb), &before);
    for what in [
        " veth cnichain",
        " ifb cnichain",
        "nft inet",
        "nft bridge",
        "ipam ",
        "state tuning/",
    ] {
        assert!(
            added.iter().filter(|t| t.contains(what)).count() >= 3,
            "{what}: the stale attachments should have made some: {added:#?}"
        );
    }
    // The "gone" pod's netns goes without DEL: its veth goes with it, the rest stays.
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns_name(&gone)])
        .output();
    sb.netns.retain(|n| *n != ns_name(&gone));

    ok(&cnichain(&sb, &["gc", NET, "--valid", "keep/eth0"], ""));
    let left = new_in(&traces(&sb), &before);
    assert!(left.is_empty(), "GC left traces of stale attachments: {left:#?}");
    let lost: Vec<String> = before.difference(&traces(&sb)).cloned().collect();
    assert!(lost.is_empty(), "GC removed traces of valid attachments: {lost:#?}");
    // The orphan netns lost its interface: its attachment is gone from the node.
    assert_eq!(
        sh(&sb, &ns_name(&orphan), "ip -o link show | grep -vc ': lo:' || true"),
        "0"
    );

    // The other network's attachment is intact: CHECK passes.
    ok(&cnichain(
        &sb,
        &["check", OTHER, &other, "--container-id", "gone", "-i", "net1"],
        "",
    ));
    // A second GC changes nothing.
    ok(&cnichain(&sb, &["gc", NET, "--valid", "keep/eth0"], ""));
    assert!(new_in(&traces(&sb), &before).is_empty() && before.difference(&traces(&sb)).next().is_none());

    // DEL of the valid ones leaves nothing of either network.
    ok(&cnichain(
        &sb,
        &["del", NET, &keep, "--container-id", "keep"],
        &ports(18081),
    ));
    ok(&cnichain(
        &sb,
        &["del", OTHER, &other, "--container-id", "gone", "-i", "net1"],
        &ports(18082),
    ));
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
    let objects: Vec<String> = traces(&sb)
        .into_iter()
        .filter(|t| t.starts_with("link veth") || t.starts_with("link ifb") || t.starts_with("nft "))
        .collect();
    assert!(objects.is_empty(), "left after DEL: {objects:#?}");
}

/// Without a valid set (libcni's GC with no arguments: every cached attachment is
/// stale) the stages cannot know what is valid and remove nothing that has no cache.
/// `cnichain gc NET` (the cached attachments are the valid set) keeps an uncached
/// attachment that has its lock file: a runtime's chain of drop-ins is cached only
/// after its last plugin, and GC must not take it apart half-way.
#[test]
fn gc_without_a_valid_set_leaves_uncached_attachments_alone() {
    require_root("netns, veth, bridges, nftables");
    let mut sb = Sandbox::new("gcnil");
    sb.write_conflist("10-gc.conflist", &chain(NET, "cngc2", "10.253.0.0/24"));
    let pod = sb.pod("p");
    add(&sb, NET, "p", &pod, 18086, "eth0");
    drop_cache(&sb, NET, "p");
    let before = traces(&sb);
    ok(&cnichain(&sb, &["gc", NET, "--all-stale"], ""));
    assert_eq!(traces(&sb), before);
    assert!(
        before.contains(&format!("state locks/{NET}/p:eth0.lock")),
        "{before:#?}"
    );
    ok(&cnichain(&sb, &["gc", NET], ""));
    assert_eq!(traces(&sb), before);
    ok(&cnichain(
        &sb,
        &["del", NET, &pod, "--container-id", "p"],
        &ports(18086),
    ));
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}

/// A runtime's GC through libcni with cnichain's drop-ins: each plugin of the list gets
/// CNI_COMMAND=GC with the network's name and the valid set (libcni's GCNetworkList,
/// step 2). An attachment made through libcni whose cached result is gone is removed
/// by the plugins alone.
#[test]
fn drop_ins_gc_what_the_valid_set_does_not_list() {
    require_root("netns, veth, bridges, nftables");
    let mut sb = Sandbox::new("gcdrop");
    let net = format!("{}-n", sb.tag);
    let _results = ResultsCleanup(net.clone());
    let bin = sb.dir.join("cnibin");
    ok(&std::process::Command::new(cnichain_bin())
        .args(["install", "--bin-dir"])
        .arg(&bin)
        .output()
        .expect("install"));
    // The peer's libcni (1.1.2) runs lists up to 1.0.0; GC comes with 1.1.0, so the
    // GC requests below say 1.1.0 (as after a runtime upgrade).
    let list = chain(&net, "cngc3", "10.254.0.0/24").replace("\"1.1.0\"", "\"1.0.0\"");
    sb.write_conflist("10-gc.conflist", &list);
    let keep = sb.pod("keep");
    let stale = sb.pod("stale");
    let cnitool =
        |verb: &str, pod: &str, port: u16| run::cnitool(&sb, &bin.display().to_string(), verb, &net, pod, &ports(port));
    ok(&cnitool("add", &keep, 18087));
    let before = traces(&sb);
    ok(&cnitool("add", &stale, 18088));
    assert!(
        new_in(&traces(&sb), &before).len() > 10,
        "the stale pod made its objects"
    );
    // The stale pod's libcni cache is lost; its netns stays (an orphan).
    // cnitool's container ID: "cnitool-" and 20 hex digits of sha512(netns path).
    let cid = |pod: &str| {
        format!(
            "cnitool-{}",
            sh(&sb, &sb.host(), &format!("printf %s {pod} | sha512sum | cut -c1-20"))
        )
    };
    let keep_cid = cid(&keep);
    let cache = format!("/var/lib/cni/results/{net}-{}-eth0", cid(&stale));
    std::fs::remove_file(&cache).unwrap_or_else(|e| panic!("rm {cache}: {e}"));

    let list: Value = serde_json::from_str(&list).expect("conflist");
    for plugin in list["plugins"].as_array().expect("plugins") {
        let mut conf = plugin.clone();
        conf["name"] = Value::String(net.clone());
        conf["cniVersion"] = Value::String("1.1.0".into());
        if let Some(ipam) = conf.get_mut("ipam") {
            ipam["dataDir"] = Value::String(sb.ipam_dir().display().to_string());
        }
        let valid = serde_json::json!([{ "containerID": keep_cid, "ifname": "eth0" }]);
        conf["cni.dev/valid-attachments"] = valid.clone();
        conf["cni.dev/attachments"] = valid;
        let mut child = sb
            .in_host(&bin.join(plugin["type"].as_str().expect("type")))
            .env("CNI_COMMAND", "GC")
            .env("CNI_PATH", &bin)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("plugin");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write");
        ok(&child.wait_with_output().expect("wait"));
    }
    let left = new_in(&traces(&sb), &before);
    assert!(left.is_empty(), "GC left traces of the stale attachment: {left:#?}");
    assert!(
        before.difference(&traces(&sb)).next().is_none(),
        "GC touched the valid attachment"
    );
    ok(&cnitool("check", &keep, 18087));
    ok(&cnitool("del", &keep, 18087));
    assert_eq!(leftover_files(&sb), Vec::<String>::new());
}
