//! host-local with big stores: cnichain's index (`<dataDir>/.cnichain-index`) must never
//! change an answer. Stores pre-filled with thousands of reservations written as the
//! reference writes them (and some made by the real reference binary): the next ADD gets
//! the address the reference gets on a copy of the same store, DEL releases only its own,
//! the stores stay byte-identical; reservations the reference makes or removes between
//! cnichain's operations (even within one clock tick) are honoured; a stale, absent or
//! damaged index is rebuilt; parallel ADDs never share an address; a full range gives
//! the reference's error. Timings are in bench/hostlocal-scale, not here.

mod common;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::stage::{Command as Verb, Invocation, Registry};
use common::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const NET: &str = "scalenet";
const INDEX: &str = ".cnichain-index";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// The first address of the result.
    Ok(String),
    Err(String),
}

fn conf(data_dir: &Path, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": NET, "type": "host-local",
           "ipam": {"type": "host-local", "dataDir": data_dir.display().to_string(),
                    "ranges": [[{"subnet": subnet}]]}})
}

/// One call of a host-local binary (the reference, or cnichain's drop-in).
fn exec(plugin: &Path, verb: &str, cid: &str, ifname: &str, netns: &str, conf: &Value) -> Out {
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", REF_PLUGINS);
    // cnichain's drop-in locks under its state dir: beside the test's store, never the
    // node's /run/cnichain.
    if let Some(d) = conf["ipam"]["dataDir"].as_str() {
        c.env("CNICHAIN_STATE_DIR", Path::new(d).with_extension("state"));
    }
    let o = pipe(c, &conf.to_string());
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let v: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{plugin:?} {verb}: not JSON ({e}): {text}"))
    };
    if o.status.success() {
        Out::Ok(v["ips"][0]["address"].as_str().unwrap_or_default().to_string())
    } else {
        Out::Err(v["msg"].as_str().unwrap_or_default().to_string())
    }
}

/// One in-process call of cnichain's host-local stage.
fn inproc(verb: Verb, cid: &str, conf: &Value) -> Out {
    let mut reg = Registry::new(vec![]);
    cnichain_stages::ipam::register(&mut reg);
    let s = reg.resolve("host-local").expect("host-local registered");
    let map: Map<String, Value> = conf.as_object().expect("object").clone();
    let rt = RuntimeConf {
        container_id: cid.to_string(),
        netns: String::new(),
        ifname: "eth0".to_string(),
        args: Vec::new(),
        capability_args: Map::new(),
    };
    let empty = Registry::new(vec![]);
    let inv = Invocation {
        command: verb,
        config: &map,
        prev_result: None,
        rt: &rt,
        version: "1.0.0",
        cni_path: &[],
        registry: &empty,
    };
    let r = match verb {
        Verb::Add => s.add(&inv).map(|r| {
            let v: Value = serde_json::from_str(&r.to_json()).expect("result JSON");
            v["ips"][0]["address"].as_str().unwrap_or_default().to_string()
        }),
        Verb::Del => s.del(&inv).map(|_| String::new()),
        Verb::Check => s.check(&inv).map(|_| String::new()),
        _ => panic!("not used here"),
    };
    match r {
        Ok(a) => Out::Ok(a),
        Err(e) => Out::Err(e.msg),
    }
}

/// Reservations as the reference writes them: `count` files from `first` on (IPv4),
/// owners `<prefix><i>` on eth0; the cursor at the last one.
fn fill(store: &Path, first: [u8; 4], count: u32, prefix: &str) {
    std::fs::create_dir_all(store).expect("store dir");
    let base = u32::from_be_bytes(first);
    let mut last = String::new();
    for i in 0..count {
        last = std::net::Ipv4Addr::from(base + i).to_string();
        std::fs::write(store.join(&last), format!("{prefix}{i}\r\neth0")).expect("write reservation");
    }
    if count > 0 {
        std::fs::write(store.join("last_reserved_ip.0"), &last).expect("cursor");
    }
    std::fs::write(store.join("lock"), "").expect("lock");
}

/// Every file of a data dir but cnichain's index: relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            if e.file_name() == INDEX && d == base {
                continue;
            }
            let p = e.path();
            let rel = p.strip_prefix(base).expect("below").display().to_string();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(st.success(), "cp -a {from:?} {to:?}");
}

fn reservations(store: &Path) -> BTreeSet<String> {
    std::fs::read_dir(store)
        .expect("store")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
        .collect()
}

struct Twin {
    ours: PathBuf,
    netns: String,
    ref_dir: PathBuf,
    our_dir: PathBuf,
    subnet: String,
}

impl Twin {
    /// Both plugins, each on its own copy of `template` (a data dir).
    fn new(sb: &Sandbox, ours: &Path, template: &Path, name: &str, subnet: &str) -> Twin {
        let base = sb.dir.join("twins").join(name);
        std::fs::create_dir_all(&base).expect("twin dir");
        let (ref_dir, our_dir) = (base.join("ref"), base.join("ours"));
        copy_dir(template, &ref_dir);
        copy_dir(template, &our_dir);
        Twin {
            ours: ours.to_path_buf(),
            netns: format!("/run/netns/{}", sb.host()),
            ref_dir,
            our_dir,
            subnet: subnet.to_string(),
        }
    }

    /// The same call on both; same answer and byte-identical stores, or panic.
    fn step(&self, verb: &str, cid: &str, ifname: &str) -> Out {
        let r = exec(
            Path::new(REF_HOST_LOCAL),
            verb,
            cid,
            ifname,
            &self.netns,
            &conf(&self.ref_dir, &self.subnet),
        );
        let o = exec(
            &self.ours,
            verb,
            cid,
            ifname,
            &self.netns,
            &conf(&self.our_dir, &self.subnet),
        );
        assert_eq!(o, r, "{verb} {cid}/{ifname}: cnichain vs reference");
        let (rt, ot) = (tree(&self.ref_dir), tree(&self.our_dir));
        if rt != ot {
            let diff: Vec<_> = rt
                .keys()
                .chain(ot.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| rt.get(*k) != ot.get(*k))
                .take(10)
                .collect();
            panic!("{verb} {cid}/{ifname}: stores differ at {diff:?}");
        }
        o
    }

    fn index_in_use(&self) -> bool {
        self.our_dir.join(INDEX).join(NET).join("stamp").is_file()
    }
}

fn setup(tag: &str) -> (Sandbox, PathBuf) {
    assert!(is_root(), "needs root (netns for the plugins)");
    let sb = Sandbox::new(tag);
    let bin = install(&sb);
    (sb, bin.join("host-local"))
}

/// A /20 with 3,000 reservations written as the reference writes them and a few made by
/// the reference itself: in every position of the round-robin cursor (after the last,
/// at the range's end so the walk wraps into the dense part, holes in the dense part),
/// each ADD gives the reference's address and DEL releases only its own.
#[test]
fn prefilled_store_gives_the_reference_address() {
    let (sb, ours) = setup("hlscale");
    let subnet = "10.70.0.0/20";
    let template = sb.dir.join("template");
    let store = template.join(NET);
    fill(&store, [10, 70, 0, 2], 3000, "fill");
    let netns = format!("/run/netns/{}", sb.host());
    for i in 0..4 {
        let o = exec(
            Path::new(REF_HOST_LOCAL),
            "ADD",
            &format!("r{i}"),
            "eth0",
            &netns,
            &conf(&template, subnet),
        );
        assert!(matches!(o, Out::Ok(_)), "reference ADD r{i}: {o:?}");
    }
    let cursors = [
        ("after-last", None),
        ("wrap", Some("10.70.15.254")),
        ("mid", Some("10.70.5.0")),
    ];
    for (name, cursor) in cursors {
        let t = Twin::new(&sb, &ours, &template, name, subnet);
        for d in [&t.ref_dir, &t.our_dir] {
            if let Some(c) = cursor {
                std::fs::write(d.join(NET).join("last_reserved_ip.0"), c).expect("cursor");
            }
            if name == "wrap" {
                // holes in the dense part: the wrapped walk must stop at the first one
                for h in ["10.70.1.7", "10.70.1.9", "10.70.2.200"] {
                    std::fs::remove_file(d.join(NET).join(h)).expect("hole");
                }
            }
        }
        let first = t.step("ADD", "new0", "eth0");
        assert!(matches!(first, Out::Ok(_)), "{name}: {first:?}");
        assert!(t.index_in_use(), "{name}: cnichain made no index");
        for i in 1..4 {
            t.step("ADD", &format!("new{i}"), "eth0");
        }
        if name == "wrap" {
            // from the range's end the walk wraps to the start: the first hole
            assert_eq!(first, Out::Ok("10.70.1.7/20".into()));
            for i in 4..6 {
                t.step("ADD", &format!("new{i}"), "eth0");
            }
        }
        // duplicates, CHECK and DEL of reservations made by either side and by the fill
        let dup = t.step("ADD", "new1", "eth0");
        assert!(
            matches!(&dup, Out::Err(m) if m.contains("duplicate allocation")),
            "{dup:?}"
        );
        t.step("CHECK", "r2", "eth0");
        t.step("CHECK", "fill17", "eth0");
        t.step("CHECK", "nobody", "eth0");
        t.step("DEL", "r2", "eth0");
        t.step("DEL", "fill17", "eth0");
        t.step("DEL", "new2", "eth0");
        t.step("DEL", "new2", "eth0");
        t.step("DEL", "fill18", "eth1");
        t.step("ADD", "new9", "eth0");
    }
}

/// The reference's ADD and DEL between two of cnichain's operations are seen, even when
/// they fall within the same clock tick (the index is checked against the store
/// directory's mtime, which a change within one tick would leave as it was).
#[test]
fn changes_behind_the_index_are_seen_at_once() {
    let (sb, _ours) = setup("hltick");
    let c = conf(&sb.dir.join("tick"), "10.71.0.0/29"); // .2 - .6: five addresses
    let store = sb.dir.join("tick").join(NET);
    for i in 0..5 {
        assert!(matches!(inproc(Verb::Add, &format!("c{i}"), &c), Out::Ok(_)));
    }
    let addrs: Vec<String> = (2..=6).map(|i| format!("10.71.0.{i}")).collect();
    for round in 0..60 {
        // "the reference" releases one address: the only free one, so the next ADD must
        // take it although the index last saw it taken.
        let a = &addrs[round % 5];
        let owner = std::fs::read(store.join(a)).expect("owner");
        std::fs::remove_file(store.join(a)).expect("release behind the index");
        assert_eq!(
            inproc(Verb::Add, &format!("n{round}"), &c),
            Out::Ok(format!("{a}/29")),
            "round {round}: {owner:?} released"
        );
        // cnichain releases it, "the reference" takes it at once: the range is full.
        assert_eq!(inproc(Verb::Del, &format!("n{round}"), &c), Out::Ok(String::new()));
        std::fs::write(store.join(a), format!("ref{round}\r\neth0")).expect("reserve behind the index");
        assert_eq!(
            inproc(Verb::Add, "x", &c),
            Out::Err(
                "failed to allocate for range 0: no IP addresses available in range set: 10.71.0.1-10.71.0.6".into()
            ),
            "round {round}"
        );
        assert_eq!(inproc(Verb::Check, &format!("ref{round}"), &c), Out::Ok(String::new()));
        assert_eq!(inproc(Verb::Del, &format!("ref{round}"), &c), Out::Ok(String::new()));
        assert!(
            !store.join(a).exists(),
            "round {round}: a reference-made reservation was not released"
        );
        std::fs::write(store.join(a), owner).expect("restore");
    }
}

/// A stale, absent, damaged or unusable index never changes an answer: it is rebuilt
/// (or, where it cannot be used, the files are read as the reference reads them).
#[test]
fn damaged_index_is_rebuilt() {
    let (sb, ours) = setup("hlidx");
    let subnet = "10.72.0.0/22";
    let template = sb.dir.join("template");
    fill(&template.join(NET), [10, 72, 0, 2], 600, "fill");
    type Damage = fn(&Path);
    let damages: Vec<(&str, Damage)> = vec![
        ("no-stamp", |ix| {
            std::fs::remove_file(ix.join("stamp")).expect("rm stamp")
        }),
        ("garbage", |ix| {
            for e in std::fs::read_dir(ix).expect("index").flatten() {
                std::fs::write(e.path(), "garbage").expect("garbage");
            }
        }),
        ("owners-cut", |ix| {
            for e in std::fs::read_dir(ix).expect("index").flatten() {
                if e.file_name().to_string_lossy().starts_with('o') {
                    let t = std::fs::read_to_string(e.path()).expect("owners");
                    let cut: Vec<&str> = t.lines().take(1).collect();
                    std::fs::write(e.path(), cut.join("\n") + "\n").expect("cut");
                }
            }
        }),
        ("owners-gone", |ix| {
            for e in std::fs::read_dir(ix).expect("index").flatten() {
                if e.file_name() != "stamp" {
                    std::fs::remove_file(e.path()).expect("rm");
                }
            }
        }),
        ("bitmap-zeroed", |ix| {
            for e in std::fs::read_dir(ix).expect("index").flatten() {
                if e.file_name().to_string_lossy().starts_with('c') {
                    std::fs::write(e.path(), vec![0u8; 512]).expect("zero");
                }
            }
        }),
        ("not-a-dir", |ix| {
            std::fs::remove_dir_all(ix).expect("rm index");
            std::fs::write(ix, "x").expect("file in its place");
        }),
    ];
    for (name, damage) in damages {
        let t = Twin::new(&sb, &ours, &template, name, subnet);
        t.step("ADD", "a", "eth0");
        t.step("ADD", "b", "eth0");
        assert!(t.index_in_use(), "{name}: no index to damage");
        damage(&t.our_dir.join(INDEX).join(NET));
        t.step("CHECK", "a", "eth0");
        t.step("ADD", "a", "eth0");
        t.step("DEL", "fill5", "eth0");
        t.step("DEL", "a", "eth0");
        t.step("ADD", "c", "eth0");
        t.step("DEL", "b", "eth0");
        // the reference's cursor points into the fill: the walk must skip what is taken
        for d in [&t.ref_dir, &t.our_dir] {
            std::fs::write(d.join(NET).join("last_reserved_ip.0"), "10.72.0.2").expect("cursor");
        }
        t.step("ADD", "d", "eth0");
        t.step("ADD", "e", "eth0");
        if name == "bitmap-zeroed" {
            // all-zero bitmaps say "free" where files exist: creating the file is what
            // decides, so nothing is handed out twice
            let ips: BTreeSet<String> = reservations(&t.our_dir.join(NET));
            assert_eq!(ips.len(), 600 + 3 - 1, "{name}");
        }
    }
}

/// An emptied store leaves no index behind, and a store filled by cnichain alone is
/// indexed from its first operation.
#[test]
fn index_comes_and_goes_with_the_reservations() {
    let (sb, _ours) = setup("hlempty");
    let data = sb.dir.join("empty");
    let c = conf(&data, "10.75.0.0/24");
    for i in 0..3 {
        assert!(matches!(inproc(Verb::Add, &format!("e{i}"), &c), Out::Ok(_)));
    }
    let ix = data.join(INDEX).join(NET);
    assert!(ix.join("stamp").is_file(), "no index");
    let listed: Vec<String> = std::fs::read_dir(&ix)
        .expect("index")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(listed.iter().any(|n| n.starts_with("c4-")), "{listed:?}");
    for i in 0..3 {
        assert_eq!(inproc(Verb::Del, &format!("e{i}"), &c), Out::Ok(String::new()));
    }
    assert!(!data.join(INDEX).exists(), "index left behind an empty store");
    assert_eq!(reservations(&data.join(NET)), BTreeSet::new());
}

/// A full range answers with the reference's error, through a big store.
#[test]
fn full_range_error_is_the_reference_one() {
    let (sb, ours) = setup("hlfull");
    let subnet = "10.73.0.0/22";
    let template = sb.dir.join("template");
    fill(&template.join(NET), [10, 73, 0, 2], 1021, "fill"); // .0.2 - .3.254 minus none
    let t = Twin::new(&sb, &ours, &template, "full", subnet);
    let e = t.step("ADD", "x", "eth0");
    assert_eq!(
        e,
        Out::Err(
            "failed to allocate for range 0: no IP addresses available in range set: 10.73.0.1-10.73.3.254".into()
        )
    );
    t.step("ADD", "x", "eth0");
    t.step("DEL", "fill500", "eth0");
    assert_eq!(t.step("ADD", "x", "eth0"), Out::Ok("10.73.1.246/22".into()));
    t.step("ADD", "y", "eth0");
}

/// 16 processes at once (cnichain's drop-in and the reference, half each) on a store of
/// 2,000 reservations: 16 distinct new addresses, each file its owner's; DEL of all 16
/// leaves the 2,000.
#[test]
fn parallel_adds_on_a_big_store_never_share_an_address() {
    let (sb, ours) = setup("hlpar");
    let data = sb.dir.join("par");
    fill(&data.join(NET), [10, 74, 0, 2], 2000, "fill");
    let c = conf(&data, "10.74.0.0/20");
    let netns = format!("/run/netns/{}", sb.host());
    let run_all = |verb: &str| -> Vec<Out> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let plugin = if i % 2 == 0 {
                        ours.clone()
                    } else {
                        PathBuf::from(REF_HOST_LOCAL)
                    };
                    let (c, netns) = (&c, &netns);
                    s.spawn(move || exec(&plugin, verb, &format!("p{i}"), "eth0", netns, c))
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        })
    };
    let got = run_all("ADD");
    let ips: BTreeSet<String> = got
        .iter()
        .map(|o| match o {
            Out::Ok(a) => a.split('/').next().unwrap_or_default().to_string(),
            e => panic!("ADD failed: {e:?}"),
        })
        .collect();
    assert_eq!(ips.len(), 16, "{got:?}");
    for (i, o) in got.iter().enumerate() {
        let Out::Ok(a) = o else { unreachable!() };
        let ip = a.split('/').next().unwrap_or_default();
        assert_eq!(
            std::fs::read(data.join(NET).join(ip)).expect("file"),
            format!("p{i}\r\neth0").into_bytes()
        );
    }
    assert_eq!(reservations(&data.join(NET)).len(), 2016);
    for o in run_all("DEL") {
        assert_eq!(o, Out::Ok(String::new()));
    }
    let left = reservations(&data.join(NET));
    assert_eq!(left.len(), 2000);
    assert!(left.iter().all(|ip| std::fs::read_to_string(data.join(NET).join(ip))
        .expect("file")
        .starts_with("fill")));
}
