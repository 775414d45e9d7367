//! The in-process host-local and static IPAM stages against the reference binaries in
//! /usr/lib/cni: the same requests in two temp data dirs give the same result JSON and
//! byte-identical stores; one shared store is used by both without collisions; parallel
//! ADDs from threads and from processes (reference and ours at once) get distinct
//! addresses and DEL leaves no reservation.

mod common;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::spec::error::CniError;
use cnichain_engine::spec::result::CniResult;
use cnichain_engine::stage::{Command as Verb, Invocation, Registry, Stage};
use common::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const REF_STATIC: &str = "/usr/lib/cni/static";

/// What one call returned, in a form both sides share: the printed result, or the error
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Ok(String),
    Err(String),
}

fn ref_run(plugin: &str, verb: &str, cid: &str, ifname: &str, netns: &str, conf: &Value, args: &str) -> Out {
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", REF_PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !args.is_empty() {
        c.env("CNI_ARGS", args);
    }
    let mut child = c.spawn().expect("run reference plugin");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(conf.to_string().as_bytes()).expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait reference plugin");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    if o.status.success() {
        Out::Ok(out)
    } else {
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("reference error not JSON ({e}): {out}"));
        Out::Err(v["msg"].as_str().unwrap_or_default().to_string())
    }
}

fn stage(type_name: &str) -> Arc<dyn Stage> {
    let mut reg = Registry::new(vec![]);
    cnichain_stages::ipam::register(&mut reg);
    reg.resolve(type_name).expect("stage registered")
}

fn args_of(s: &str) -> Vec<(String, String)> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(';')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("K=V");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn ours_raw(
    type_name: &str,
    verb: Verb,
    cid: &str,
    ifname: &str,
    conf: &Value,
    args: &str,
    prev: Option<&CniResult>,
) -> Result<Option<CniResult>, CniError> {
    let s = stage(type_name);
    let reg = Registry::new(vec![]);
    let map: Map<String, Value> = conf.as_object().expect("config object").clone();
    let version = conf["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
    let rt = RuntimeConf {
        container_id: cid.to_string(),
        netns: String::new(),
        ifname: ifname.to_string(),
        args: args_of(args),
        capability_args: Map::new(),
    };
    let inv = Invocation {
        command: verb,
        config: &map,
        prev_result: prev,
        rt: &rt,
        version: &version,
        cni_path: &[],
        registry: &reg,
    };
    s.run(&inv)
}

fn ours(type_name: &str, verb: Verb, cid: &str, ifname: &str, conf: &Value, args: &str) -> Out {
    match ours_raw(type_name, verb, cid, ifname, conf, args, None) {
        Ok(Some(r)) => Out::Ok(r.to_json_pretty()),
        Ok(None) => Out::Ok(String::new()),
        Err(e) => Out::Err(e.msg),
    }
}

/// Every file below `dir`: relative path -> (mode, bytes). cnichain's index beside the
/// stores (`<dataDir>/.cnichain-index`, which the reference never reads) is left out.
fn tree(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == ".cnichain-index" && d == base {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(base).expect("below base").display().to_string();
            if md.is_dir() {
                out.insert(format!("{rel}/"), (md.permissions().mode() & 0o7777, Vec::new()));
                walk(base, &p, out);
            } else {
                out.insert(
                    rel,
                    (md.permissions().mode() & 0o7777, std::fs::read(&p).expect("read")),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn show(t: &BTreeMap<String, (u32, Vec<u8>)>) -> String {
    t.iter()
        .map(|(k, (m, b))| format!("{k} {m:o} {:?}", String::from_utf8_lossy(b)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn with_data_dir(conf: &Value, dir: &Path) -> Value {
    let mut c = conf.clone();
    c["ipam"]["dataDir"] = json!(dir.display().to_string());
    c
}

/// Runs the same steps on the reference (data dir `ref`) and in-process (`ours`) and
/// compares every output and both stores after every step.
struct Diff<'a> {
    name: &'a str,
    conf: &'a Value,
    netns: String,
    ref_dir: PathBuf,
    our_dir: PathBuf,
    steps: usize,
    /// The next step is refused before host-local opens its store.
    refused_before_store: bool,
}

impl<'a> Diff<'a> {
    fn new(sb: &Sandbox, netns: &str, name: &'a str, conf: &'a Value) -> Diff<'a> {
        let base = sb.dir.join("diff").join(name);
        Diff {
            name,
            conf,
            netns: netns.to_string(),
            ref_dir: base.join("ref"),
            our_dir: base.join("ours"),
            steps: 0,
            refused_before_store: false,
        }
    }

    fn step(&mut self, verb: Verb, cid: &str, ifname: &str, args: &str) -> Out {
        self.steps += 1;
        let r = ref_run(
            REF_HOST_LOCAL,
            verb.as_str(),
            cid,
            ifname,
            &self.netns,
            &with_data_dir(self.conf, &self.ref_dir),
            args,
        );
        let o = ours(
            "host-local",
            verb,
            cid,
            ifname,
            &with_data_dir(self.conf, &self.our_dir),
            args,
        );
        assert_eq!(
            o,
            r,
            "[{}] step {} {} {cid}/{ifname}: ours vs reference",
            self.name,
            self.steps,
            verb.as_str()
        );
        let (rt, ot) = (tree(&self.ref_dir), tree(&self.our_dir));
        if self.refused_before_store {
            // Deliberate difference: a requested address refused without the store
            // (outside every range, or the gateway) makes nothing; the reference has
            // made the network's directory and lock file by then, and may have moved
            // its round-robin cursor (it allocates, then releases).
            self.refused_before_store = false;
            assert!(
                matches!(r, Out::Err(_)),
                "[{}] step {}: not refused",
                self.name,
                self.steps
            );
            assert!(
                ot.is_empty(),
                "[{}] step {}: ours made {}",
                self.name,
                self.steps,
                show(&ot)
            );
            assert!(
                rt.keys()
                    .all(|k| k.ends_with('/') || k.ends_with("/lock") || k.contains("/last_reserved_ip.")),
                "[{}] step {}: the reference stored {}",
                self.name,
                self.steps,
                show(&rt)
            );
            return r;
        }
        assert_eq!(
            show(&ot),
            show(&rt),
            "[{}] step {} {} {cid}: stores differ",
            self.name,
            self.steps,
            verb.as_str()
        );
        r
    }
}

/// The sequence of the brief plus a duplicate ADD, a repeated DEL and CHECKs.
fn run_sequence(sb: &Sandbox, netns: &str, name: &str, conf: &Value, args: &str) -> Vec<Out> {
    let mut d = Diff::new(sb, netns, name, conf);
    let mut outs = vec![
        d.step(Verb::Add, "c1", "eth0", args),
        d.step(Verb::Add, "c2", "eth0", args),
        d.step(Verb::Add, "c2", "eth0", args), // duplicate
        d.step(Verb::Check, "c2", "eth0", args),
        d.step(Verb::Del, "c1", "eth0", args),
        d.step(Verb::Check, "c1", "eth0", args),
        d.step(Verb::Add, "c3", "eth0", args),
        d.step(Verb::Add, "c3", "eth1", args),
    ];
    for (cid, ifname) in [
        ("c1", "eth0"),
        ("c2", "eth0"),
        ("c3", "eth0"),
        ("c3", "eth1"),
        ("c3", "eth1"),
    ] {
        outs.push(d.step(Verb::Del, cid, ifname, args));
    }
    outs.push(d.step(Verb::Add, "c1", "eth0", args));
    outs.push(d.step(Verb::Add, "c4", "eth0", args));
    outs
}

fn sandbox(tag: &str) -> (Sandbox, String) {
    require_root("netns for the bridge pod");
    let mut sb = Sandbox::new(tag);
    let ns = sb.pod("p");
    (sb, ns)
}

fn hl(ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    json!({"cniVersion": "1.0.0", "name": "ipamnet", "type": "bridge", "ipam": ipam})
}

#[test]
fn host_local_matches_reference() {
    let (sb, ns) = sandbox("hl");
    let resolv = sb.dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "# test\nnameserver 10.0.0.53\nnameserver fd00::53\nsearch a.example b.example\noptions ndots:2\ndomain x.example\n",
    )
    .expect("write resolv.conf");
    let with_version = |v: &str, c: Value| {
        let mut c = c;
        c["cniVersion"] = json!(v);
        c
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("single-v4", hl(json!({"ranges": [[{"subnet": "10.10.0.0/24"}]]})), ""),
        (
            "legacy-subnet",
            hl(json!({"subnet": "10.11.0.0/24", "gateway": "10.11.0.254", "routes": [{"dst": "0.0.0.0/0"}]})),
            "",
        ),
        (
            "dual-stack",
            hl(json!({"ranges": [[{"subnet": "10.12.0.0/24"}], [{"subnet": "fd12::/64"}]]})),
            "",
        ),
        (
            "start-end",
            hl(
                json!({"ranges": [[{"subnet": "10.13.0.0/24", "rangeStart": "10.13.0.100", "rangeEnd": "10.13.0.102"}]]}),
            ),
            "",
        ),
        (
            "several-ranges-one-set",
            hl(json!({"ranges": [[
                {"subnet": "10.14.0.0/30"},
                {"subnet": "10.14.1.0/24", "rangeStart": "10.14.1.10", "rangeEnd": "10.14.1.12", "gateway": "10.14.1.11"}
            ]]})),
            "",
        ),
        (
            "requested-runtime-ips",
            {
                let mut c = hl(json!({"ranges": [[{"subnet": "10.15.0.0/24"}], [{"subnet": "fd15::/64"}]]}));
                c["runtimeConfig"] = json!({"ips": ["10.15.0.77/24", "fd15::77"]});
                c
            },
            "",
        ),
        (
            "requested-args-cni-ips",
            {
                let mut c = hl(json!({"ranges": [[{"subnet": "10.16.0.0/24"}]]}));
                c["args"] = json!({"cni": {"ips": ["10.16.0.9"]}});
                c
            },
            "",
        ),
        (
            "requested-cni-args",
            hl(json!({"ranges": [[{"subnet": "10.17.0.0/24"}]]})),
            "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.17.0.33",
        ),
        (
            "routes-dns",
            hl(
                json!({"ranges": [[{"subnet": "10.18.0.0/24"}], [{"subnet": "fd18::/120"}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.18.0.254"}, {"dst": "::/0"}],
                      "resolvConf": resolv.display().to_string()}),
            ),
            "",
        ),
        (
            "ip-ranges-capability",
            {
                let mut c = hl(json!({"ranges": [[{"subnet": "10.19.0.0/24"}]]}));
                c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.20.0.0/24", "rangeStart": "10.20.0.50"}]]});
                c
            },
            "",
        ),
        (
            "gateway-in-the-middle",
            hl(json!({"ranges": [[{"subnet": "10.21.0.0/29", "gateway": "10.21.0.3"}]]})),
            "",
        ),
        (
            "v0.4.0",
            with_version(
                "0.4.0",
                hl(
                    json!({"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd22::/64"}]], "routes": [{"dst": "0.0.0.0/0"}]}),
                ),
            ),
            "",
        ),
        (
            "v0.2.0",
            with_version(
                "0.2.0",
                hl(json!({"subnet": "10.23.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]})),
            ),
            "",
        ),
        (
            "go-style-keys",
            json!({"cniVersion": "0.3.1", "Name": "ipamnet", "type": "bridge", "ipam": {"type": "host-local",
                   "Ranges": [[{"SUBNET": "10.26.0.0/24", "rangestart": "10.26.0.10", "Gateway": "10.26.0.10"}]],
                   "ROUTES": [{"Dst": "10.0.0.0/8", "GW": "10.26.0.1"}]}}),
            "",
        ),
        ("exhaustion", hl(json!({"ranges": [[{"subnet": "10.24.0.0/30"}]]})), ""),
    ];
    for (name, conf, args) in &cases {
        let outs = run_sequence(&sb, &ns, name, conf, args);
        // the first ADD of every case succeeds
        assert!(matches!(outs[0], Out::Ok(_)), "[{name}] {:?}", outs[0]);
    }
    // a legacy file (container ID only) is released by DEL on both sides
    let conf = hl(json!({"ranges": [[{"subnet": "10.25.0.0/24"}], [{"subnet": "fd25::/64"}]]}));
    let mut d = Diff::new(&sb, &ns, "legacy-file", &conf);
    d.step(Verb::Add, "c1", "eth0", "");
    for dir in [&d.ref_dir, &d.our_dir] {
        std::fs::write(dir.join("ipamnet").join("10.25.0.200"), "old-container").expect("legacy file");
    }
    d.step(Verb::Check, "old-container", "eth0", "");
    d.step(Verb::Add, "old-container", "eth0", ""); // duplicate through the legacy file
    d.step(Verb::Del, "c1", "eth0", "");
    d.step(Verb::Del, "old-container", "eth0", "");
    assert!(!d.our_dir.join("ipamnet").join("10.25.0.200").exists());
}

#[test]
fn host_local_runtime_errors_match_reference() {
    let (sb, ns) = sandbox("hlerr");
    // errors that depend on the store, not on the config text: same message
    let conf = hl(json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "10.31.0.0/30"}]]}));
    let mut d = Diff::new(&sb, &ns, "two-sets-second-exhausted", &conf);
    d.step(Verb::Add, "c1", "eth0", "");
    let e = d.step(Verb::Add, "c2", "eth0", "");
    assert_eq!(
        e,
        Out::Err("failed to allocate for range 1: no IP addresses available in range set: 10.31.0.1-10.31.0.2".into())
    );
    d.step(Verb::Del, "c1", "eth0", "");
    d.step(Verb::Add, "c2", "eth0", "IgnoreUnknown=true;FOO=bar");
    let conf = hl(json!({"ranges": [[{"subnet": "10.32.0.0/24"}], [{"subnet": "fd32::/64"}]]}));
    // Each refusal in a store of its own: the reference's refused ADD may have moved
    // its round-robin cursor (last_reserved_ip), ours changes nothing.
    let mut d = Diff::new(&sb, &ns, "requested-gateway", &conf);
    d.refused_before_store = true;
    let e = d.step(Verb::Add, "c3", "eth0", "IP=10.32.0.1");
    assert_eq!(
        e,
        Out::Err("failed to allocate for range 0: requested ip 10.32.0.1 is subnet's gateway".into())
    );
    let mut d = Diff::new(&sb, &ns, "requested-outside", &conf);
    d.refused_before_store = true;
    let e = d.step(Verb::Add, "c3", "eth0", "IP=10.99.0.1");
    let mut d = Diff::new(&sb, &ns, "requested", &conf);
    assert_eq!(e, Out::Err("failed to allocate all requested IPs: 10.99.0.1".into()));
    d.step(Verb::Add, "c3", "eth0", "IP=fd32::1:2");
    let e = d.step(Verb::Add, "c4", "eth0", "IP=fd32::1:2");
    assert_eq!(
        e,
        Out::Err(
            "failed to allocate for range 1: requested IP address fd32::1:2 is not available in range set fd32::1-fd32::ffff:ffff:ffff:ffff"
                .into()
        )
    );
    // DEL and CHECK on a node that never allocated create the same empty store
    let conf = hl(json!({"ranges": [[{"subnet": "10.33.0.0/24"}]]}));
    let mut d = Diff::new(&sb, &ns, "del-first", &conf);
    d.step(Verb::Del, "c1", "eth0", "");
    let mut d = Diff::new(&sb, &ns, "check-first", &conf);
    d.step(Verb::Check, "c1", "eth0", "");
    // config errors: both refuse, ours names the field with code 7 / 4
    let bad: Vec<(Value, &str, u32, &str)> = vec![
        (
            hl(json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]})),
            "",
            7,
            "ipam.ranges[0][0].subnet",
        ),
        (
            hl(json!({"ranges": [[{"subnet": "10.1.0.5/24"}]]})),
            "",
            7,
            "ipam.ranges[0][0].subnet",
        ),
        (
            hl(json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]})),
            "",
            7,
            "ipam.ranges[0][0].rangeStart",
        ),
        (
            hl(json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]})),
            "",
            7,
            "range set 0 overlaps with 1",
        ),
        (hl(json!({})), "", 7, "no IP ranges specified"),
        (hl(json!({"subnet": "10.1.0.0/24"})), "FOO=1", 4, "ARGS: unknown args"),
        (
            hl(json!({"subnet": "10.1.0.0/24"})),
            "IP=nope",
            4,
            "ARGS: error parsing value",
        ),
    ];
    for (i, (conf, args, code, needle)) in bad.iter().enumerate() {
        let dir = sb.dir.join(format!("bad{i}"));
        let r = ref_run(
            REF_HOST_LOCAL,
            "ADD",
            "c1",
            "eth0",
            &ns,
            &with_data_dir(conf, &dir.join("ref")),
            args,
        );
        assert!(matches!(r, Out::Err(_)), "reference accepted {conf}");
        let e = ours_raw(
            "host-local",
            Verb::Add,
            "c1",
            "eth0",
            &with_data_dir(conf, &dir.join("ours")),
            args,
            None,
        )
        .expect_err("accepted a bad config");
        assert_eq!(e.code, *code, "{conf}: {e:?}");
        // the reference's text in msg, the field in details
        let shown = format!("{} ({})", e.msg, e.details);
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        // nothing written on either side
        assert!(!dir.exists(), "{conf}: something was written");
    }
}

#[test]
fn host_local_shared_store_both_ways() {
    let (sb, ns) = sandbox("hlmix");
    let conf = with_data_dir(
        &hl(json!({"ranges": [[{"subnet": "10.40.0.0/28"}], [{"subnet": "fd40::/124"}]]})),
        &sb.dir.join("shared"),
    );
    let mut got: Vec<String> = Vec::new();
    let add = |by_ref: bool, cid: &str| -> Vec<String> {
        let out = if by_ref {
            ref_run(REF_HOST_LOCAL, "ADD", cid, "eth0", &ns, &conf, "")
        } else {
            ours("host-local", Verb::Add, cid, "eth0", &conf, "")
        };
        let Out::Ok(text) = out else {
            panic!("ADD {cid} failed: {out:?}")
        };
        let v: Value = serde_json::from_str(&text).expect("result JSON");
        v["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| ip["address"].as_str().expect("address").to_string())
            .collect()
    };
    // the reference first, then ours continuing, then the reverse
    got.extend(add(true, "r1"));
    got.extend(add(true, "r2"));
    got.extend(add(false, "o1"));
    got.extend(add(false, "o2"));
    got.extend(add(true, "r3"));
    got.extend(add(false, "o3"));
    let want: Vec<String> = (2..=7)
        .flat_map(|i| [format!("10.40.0.{i}/28"), format!("fd40::{i:x}/124")])
        .collect();
    assert_eq!(
        got, want,
        "round robin continued across implementations without collision"
    );
    // each one releases the other's reservations
    assert_eq!(
        ref_run(REF_HOST_LOCAL, "DEL", "o1", "eth0", &ns, &conf, ""),
        Out::Ok(String::new())
    );
    assert_eq!(
        ours("host-local", Verb::Del, "r1", "eth0", &conf, ""),
        Out::Ok(String::new())
    );
    assert_eq!(
        ref_run(REF_HOST_LOCAL, "CHECK", "o2", "eth0", &ns, &conf, ""),
        Out::Ok(String::new())
    );
    assert_eq!(
        ours("host-local", Verb::Check, "r2", "eth0", &conf, ""),
        Out::Ok(String::new())
    );
    // duplicates are seen across implementations
    let Out::Err(e) = ours("host-local", Verb::Add, "r2", "eth0", &conf, "") else {
        panic!("duplicate accepted")
    };
    assert!(e.contains("duplicate allocation is not allowed"), "{e}");
    let Out::Err(e) = ref_run(REF_HOST_LOCAL, "ADD", "o2", "eth0", &ns, &conf, "") else {
        panic!("duplicate accepted")
    };
    assert!(e.contains("duplicate allocation is not allowed"), "{e}");
    // the next one continues after 10.40.0.7, whoever allocates
    got.extend(add(false, "o4"));
    got.extend(add(true, "r4"));
    assert_eq!(
        &got[12..],
        ["10.40.0.8/28", "fd40::8/124", "10.40.0.9/28", "fd40::9/124"]
    );
    let store = sb.dir.join("shared").join("ipamnet");
    let files: BTreeSet<String> = std::fs::read_dir(&store)
        .expect("store")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.contains("10.40.0.2") && !files.contains("10.40.0.4"),
        "{files:?}"
    );
    assert_eq!(std::fs::read(store.join("10.40.0.8")).expect("o4"), b"o4\r\neth0");
    assert_eq!(
        std::fs::read(store.join("last_reserved_ip.1")).expect("last"),
        b"fd40::9"
    );
}

fn reservations(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn first_ip(text: &str) -> String {
    let v: Value = serde_json::from_str(text).expect("result JSON");
    v["ips"][0]["address"].as_str().expect("address").to_string()
}

#[test]
fn host_local_parallel_threads() {
    let (sb, _ns) = sandbox("hlthr");
    let conf = with_data_dir(
        &hl(json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]})),
        &sb.dir.join("thr"),
    );
    let barrier = Barrier::new(32);
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (conf, barrier) = (&conf, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    match ours("host-local", Verb::Add, &format!("t{i}"), "eth0", conf, "") {
                        Out::Ok(t) => first_ip(&t),
                        other => panic!("ADD t{i}: {other:?}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 32, "{ips:?}");
    let store = sb.dir.join("thr").join("ipamnet");
    assert_eq!(reservations(&store).len(), 32);
    std::thread::scope(|s| {
        for i in 0..32 {
            let (conf, barrier) = (&conf, &barrier);
            s.spawn(move || {
                barrier.wait();
                assert_eq!(
                    ours("host-local", Verb::Del, &format!("t{i}"), "eth0", conf, ""),
                    Out::Ok(String::new())
                );
            });
        }
    });
    assert!(reservations(&store).is_empty(), "{:?}", reservations(&store));
}

/// Child mode of this test binary: one in-process host-local call, for the
/// multi-process test, which runs it with --ignored; it is no test of its own.
#[test]
#[ignore = "child mode of host_local_parallel_processes_mixed, which runs it"]
fn ipam_child_process_helper() {
    let spec = std::env::var("CNICHAIN_IPAM_CHILD").expect("CNICHAIN_IPAM_CHILD: run only as a child");
    let v: Value = serde_json::from_str(&spec).expect("child spec");
    let verb = Verb::parse(v["verb"].as_str().expect("verb")).expect("known verb");
    let out = ours(
        "host-local",
        verb,
        v["cid"].as_str().expect("cid"),
        "eth0",
        &v["conf"],
        "",
    );
    let text = match out {
        Out::Ok(t) => format!("OK {t}"),
        Out::Err(e) => format!("ERR {e}"),
    };
    std::fs::write(v["out"].as_str().expect("out"), text).expect("write child output");
}

#[test]
fn host_local_parallel_processes_mixed() {
    let (sb, ns) = sandbox("hlproc");
    let conf = with_data_dir(
        &hl(json!({"ranges": [[{"subnet": "10.60.0.0/24"}]]})),
        &sb.dir.join("proc"),
    );
    let store = sb.dir.join("proc").join("ipamnet");
    let outdir = sb.dir.join("child-out");
    std::fs::create_dir_all(&outdir).expect("out dir");
    let exe = std::env::current_exe().expect("test binary");
    let run_all = |verb: &str| -> Vec<String> {
        let mut children = Vec::new();
        for i in 0..32 {
            let cid = format!("p{i}");
            let out = outdir.join(format!("{verb}-{cid}"));
            let child = if i % 2 == 0 {
                // reference
                let mut c = Command::new(REF_HOST_LOCAL);
                c.env("CNI_COMMAND", verb)
                    .env("CNI_CONTAINERID", &cid)
                    .env("CNI_NETNS", &ns)
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", REF_PLUGINS)
                    .env_remove("CNI_ARGS")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                let mut ch = c.spawn().expect("spawn reference");
                {
                    use std::io::Write;
                    let mut stdin = ch.stdin.take().expect("stdin");
                    stdin.write_all(conf.to_string().as_bytes()).expect("stdin");
                }
                (ch, None)
            } else {
                let spec = json!({"verb": verb, "cid": cid, "conf": conf, "out": out.display().to_string()});
                let ch = Command::new(&exe)
                    .args([
                        "--exact",
                        "ipam_child_process_helper",
                        "--ignored",
                        "--test-threads=1",
                        "-q",
                    ])
                    .env("CNICHAIN_IPAM_CHILD", spec.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn child");
                (ch, Some(out))
            };
            children.push(child);
        }
        children
            .into_iter()
            .enumerate()
            .map(|(i, (ch, out))| {
                let o = ch.wait_with_output().expect("wait");
                match out {
                    None => {
                        let text = String::from_utf8_lossy(&o.stdout).to_string();
                        assert!(o.status.success(), "reference {verb} p{i}: {text}");
                        text
                    }
                    Some(path) => {
                        assert!(o.status.success(), "child {verb} p{i} failed");
                        let text = std::fs::read_to_string(&path).expect("child output");
                        let body = text
                            .strip_prefix("OK ")
                            .unwrap_or_else(|| panic!("child {verb} p{i}: {text}"));
                        body.to_string()
                    }
                }
            })
            .collect()
    };
    let ips: Vec<String> = run_all("ADD").iter().map(|t| first_ip(t)).collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 32, "{ips:?}");
    let res = reservations(&store);
    assert_eq!(res.len(), 32, "{res:?}");
    // every file holds its owner in the reference format
    for (i, addr) in ips.iter().enumerate() {
        let ip = addr.split('/').next().expect("ip").to_string();
        assert_eq!(
            std::fs::read(store.join(&ip)).expect("reservation"),
            format!("p{i}\r\neth0").into_bytes()
        );
    }
    run_all("DEL");
    assert!(reservations(&store).is_empty(), "{:?}", reservations(&store));
}

#[test]
fn host_local_gc_and_status() {
    let (sb, _ns) = sandbox("hlgc");
    let mut conf = with_data_dir(
        &hl(json!({"ranges": [[{"subnet": "10.70.0.0/30"}]]})),
        &sb.dir.join("gc"),
    );
    conf["cniVersion"] = json!("1.1.0");
    let store = sb.dir.join("gc").join("ipamnet");
    // STATUS on a node that never allocated: available, nothing created
    assert_eq!(
        ours("host-local", Verb::Status, "", "", &conf, ""),
        Out::Ok(String::new())
    );
    assert!(!store.exists());
    assert!(matches!(
        ours("host-local", Verb::Add, "a", "eth0", &conf, ""),
        Out::Ok(_)
    ));
    let e = ours_raw("host-local", Verb::Status, "", "", &conf, "", None).expect_err("range set is full");
    assert_eq!(e.code, 50);
    assert_eq!(e.msg, "no IP addresses available in range set: 10.70.0.1-10.70.0.2");
    // GC without a valid list does nothing; with one, it releases the rest
    assert_eq!(ours("host-local", Verb::Gc, "", "", &conf, ""), Out::Ok(String::new()));
    assert_eq!(reservations(&store), ["10.70.0.2"]);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    assert_eq!(ours("host-local", Verb::Gc, "", "", &conf, ""), Out::Ok(String::new()));
    assert!(reservations(&store).is_empty());
    assert!(store.join("lock").exists() && store.join("last_reserved_ip.0").exists());
    conf.as_object_mut()
        .expect("object")
        .remove("cni.dev/valid-attachments");
    assert_eq!(
        ours("host-local", Verb::Status, "", "", &conf, ""),
        Out::Ok(String::new())
    );
}

fn st(ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("static");
    json!({"cniVersion": "1.0.0", "name": "staticnet", "type": "bridge", "ipam": ipam})
}

#[test]
fn static_matches_reference() {
    let (_sb, ns) = sandbox("st");
    let full = json!({
        "addresses": [{"address": "10.80.0.5/24", "gateway": "10.80.0.1"}, {"address": "fd80::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd80::1"}],
        "dns": {"nameservers": ["10.80.0.53"], "domain": "d.example", "search": ["s.example"], "options": ["ndots:3"]}
    });
    let with = |v: &str, extra: Value| {
        let mut c = st(full.clone());
        c["cniVersion"] = json!(v);
        if let Value::Object(m) = extra {
            for (k, x) in m {
                c[k] = x;
            }
        }
        c
    };
    let cases: Vec<(Value, &str)> = vec![
        (with("1.0.0", json!({})), ""),
        (with("0.4.0", json!({})), ""),
        (with("0.3.1", json!({})), ""),
        (with("0.2.0", json!({})), ""),
        (
            with("1.0.0", json!({})),
            "IP=10.80.0.9/24,fd80::9/64;GATEWAY=10.80.0.254",
        ),
        (with("1.0.0", json!({})), "IgnoreUnknown=1;FOO=bar"),
        (with("1.0.0", json!({"args": {"cni": {"ips": ["10.80.0.7/24"]}}})), ""),
        (
            with(
                "1.0.0",
                json!({"runtimeConfig": {"ips": ["10.80.0.8/24", "fd80::8/64"]}}),
            ),
            "IP=10.80.0.9/24",
        ),
        (st(json!({})), ""),
        (st(json!({"addresses": [{"address": "10.80.0.5/24"}]})), ""),
    ];
    for (conf, args) in &cases {
        let r = ref_run(REF_STATIC, "ADD", "c1", "eth0", &ns, conf, args);
        let o = ours("static", Verb::Add, "c1", "eth0", conf, args);
        assert_eq!(o, r, "{conf} {args}");
        assert!(matches!(r, Out::Ok(_)), "{r:?}");
    }
    // errors: both refuse, with the reference's text after our field name
    let bad: Vec<(Value, &str, u32)> = vec![
        (st(json!({"addresses": [{"address": "10.80.0.5"}]})), "", 7),
        (with("1.0.0", json!({"runtimeConfig": {"ips": ["10.80.0.8"]}})), "", 7),
        (with("1.0.0", json!({"args": {"cni": {"ips": ["x"]}}})), "", 7),
        (with("1.0.0", json!({})), "IP=10.80.0.9", 4),
        (with("1.0.0", json!({})), "GATEWAY=nope", 4),
        (with("1.0.0", json!({})), "FOO=bar", 4),
        (
            {
                let mut c = st(json!({"addresses": [{"address": "10.80.0.5/24"}, {"address": "10.80.0.6/24"}]}));
                c["cniVersion"] = json!("0.2.0");
                c
            },
            "",
            7,
        ),
    ];
    for (conf, args, code) in &bad {
        let Out::Err(r) = ref_run(REF_STATIC, "ADD", "c1", "eth0", &ns, conf, args) else {
            panic!("reference accepted {conf} {args}")
        };
        let e = ours_raw("static", Verb::Add, "c1", "eth0", conf, args, None).expect_err("accepted");
        assert_eq!(e.code, *code, "{conf}: {e:?}");
        assert!(
            e.msg.ends_with(&r),
            "{:?} does not end with the reference's {r:?}",
            e.msg
        );
    }
    // CHECK against a prevResult, and DEL
    for (gw, ok) in [("10.80.0.1", true), ("10.80.0.2", false)] {
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.80.0.5/24", "gateway": gw}]});
        let mut conf = with("1.0.0", json!({}));
        conf["prevResult"] = prev.clone();
        let r = ref_run(REF_STATIC, "CHECK", "c1", "eth0", &ns, &conf, "");
        let p = CniResult::from_value(&prev, "1.0.0").expect("prev");
        let o = match ours_raw("static", Verb::Check, "c1", "eth0", &conf, "", Some(&p)) {
            Ok(_) => Out::Ok(String::new()),
            Err(e) => Out::Err(e.msg),
        };
        assert_eq!(o, r);
        assert_eq!(matches!(o, Out::Ok(_)), ok);
    }
    let conf = with("1.0.0", json!({}));
    assert_eq!(
        ref_run(REF_STATIC, "DEL", "c1", "eth0", &ns, &conf, ""),
        Out::Ok(String::new())
    );
    assert_eq!(
        ours("static", Verb::Del, "c1", "eth0", &conf, ""),
        Out::Ok(String::new())
    );
}
