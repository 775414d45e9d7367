//! GC at scale (issue 16): a network with 5,000 attachments of which 1,000 are stale.
//! GC removes exactly the stale ones (reservation, cached result, lock file) and keeps
//! the 4,000 valid ones whole; ADDs running while GC runs are never half collected (GC
//! takes the node-wide lock only a slice at a time, see engine/src/gc_slices.rs).
//! How long it takes is for bench/, not asserted here.

mod common;
use cnichain_engine::cache::Cache;
use cnichain_engine::chain::Engine;
use cnichain_engine::lock::Locks;
use cnichain_engine::request::Attachment;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_engine::stage::Registry;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

const NET: &str = "gcscale";
const N: usize = 5000;

fn engine(sb: &Sandbox) -> Engine {
    let mut reg = Registry::new(Vec::new());
    cnichain_stages::register_all(&mut reg);
    let mut engine = Engine::new(reg, Cache::new(sb.cache_dir()));
    engine.locks = Some(Locks::new(&sb.dir.join("state")));
    engine.rollback = true;
    engine
}

fn rt(sb: &Sandbox, cid: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: cid.to_string(),
        netns: format!("/run/netns/{}", sb.host()),
        ifname: "eth0".to_string(),
        ..Default::default()
    }
}

/// Owners of the reservations in the store.
fn owners(store: &Path) -> BTreeSet<String> {
    std::fs::read_dir(store)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n != "lock" && !n.starts_with("last_reserved_ip.")
                })
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|c| c.split("\r\n").next().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn cached(engine: &Engine) -> BTreeSet<String> {
    engine
        .cache
        .entries()
        .into_iter()
        .filter(|e| e.network_name == NET)
        .map(|e| e.container_id)
        .collect()
}

fn locked(sb: &Sandbox) -> BTreeSet<String> {
    Locks::new(&sb.dir.join("state"))
        .attachments(NET)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

#[test]
fn gc_of_5000_attachments_removes_exactly_the_1000_stale() {
    assert!(is_root(), "needs root (netns)");
    let sb = Sandbox::new("gcscale");
    let data = sb.dir.join("ipam");
    let text = format!(
        r#"{{"cniVersion": "1.1.0", "name": "{NET}", "plugins": [
            {{"type": "host-local", "ipam": {{"type": "host-local", "dataDir": "{}",
              "ranges": [[{{"subnet": "10.76.0.0/18"}}]]}}}}]}}"#,
        data.display()
    );
    let list = NetConfList::from_bytes(text.as_bytes()).expect("conflist");
    let e = engine(&sb);
    let all: Vec<String> = (0..N).map(|i| format!("c{i:05}")).collect();
    for cid in &all {
        e.add(&list, &rt(&sb, cid))
            .unwrap_or_else(|err| panic!("ADD {cid}: {err:?}"));
    }
    let store = data.join(NET);
    assert_eq!(owners(&store).len(), N);
    let (stale, valid): (Vec<&String>, Vec<&String>) = all.iter().enumerate().map(|(i, c)| (i % 5 == 0, c)).fold(
        (Vec::new(), Vec::new()),
        |(mut s, mut v), (is_stale, c)| {
            if is_stale {
                s.push(c)
            } else {
                v.push(c)
            }
            (s, v)
        },
    );
    assert_eq!((stale.len(), valid.len()), (1000, 4000));
    let valid_set: Vec<Attachment> = valid
        .iter()
        .map(|c| Attachment {
            container_id: c.to_string(),
            ifname: "eth0".to_string(),
        })
        .collect();

    // GC, and meanwhile another "process" (its own engine on the same dirs) adds and
    // deletes attachments the valid set does not know.
    let other = engine(&sb);
    let extra: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    std::thread::scope(|s| {
        let gc = s.spawn(|| e.gc(&list, Some(&valid_set)));
        s.spawn(|| {
            for (i, cid) in extra.iter().enumerate() {
                other
                    .add(&list, &rt(&sb, cid))
                    .unwrap_or_else(|err| panic!("ADD {cid}: {err:?}"));
                if i % 4 == 3 {
                    other.del(&list, &rt(&sb, cid)).expect("DEL");
                }
            }
        });
        gc.join().expect("gc thread").expect("GC");
    });

    let (own, cache, locks) = (owners(&store), cached(&e), locked(&sb));
    for c in &stale {
        assert!(!own.contains(*c), "stale {c} keeps its reservation");
        assert!(!cache.contains(*c), "stale {c} keeps its cached result");
        assert!(!locks.contains(*c), "stale {c} keeps its lock file");
    }
    for c in &valid {
        assert!(own.contains(*c), "valid {c} lost its reservation");
        assert!(cache.contains(*c), "valid {c} lost its cached result");
        assert!(locks.contains(*c), "valid {c} lost its lock file");
    }
    // Each attachment added during GC is whole or wholly gone (collected as stale when
    // it was there before GC began), never half.
    for (i, c) in extra.iter().enumerate() {
        let parts = (own.contains(c), cache.contains(c), locks.contains(c));
        if i % 4 == 3 {
            assert_eq!(parts, (false, false, false), "{c} was deleted");
        } else {
            assert!(
                parts == (true, true, true) || parts == (false, false, false),
                "{c}: {parts:?}"
            );
        }
    }
    let survivors = extra.iter().filter(|c| own.contains(*c)).count();
    assert_eq!(own.len(), 4000 + survivors);
    // The store still allocates as the reference would: after GC the next address
    // follows the last reserved one.
    let last = std::fs::read_to_string(store.join("last_reserved_ip.0")).expect("cursor");
    let r = e.add(&list, &rt(&sb, "after")).expect("ADD after GC");
    let next = cnichain_stages::ipam::range::next_ip(last.trim().parse().expect("ip")).expect("next");
    let got = r.to_v1().expect("v1").ips[0].address.addr;
    if !own.contains(&format!("{next}")) {
        assert_eq!(got, next, "the address after {last}");
    }
}
