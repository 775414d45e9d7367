//! Gathering what `cnichain inspect` shows, read-only: the libcni cache, cnichain's lock
//! files, the host-local stores and tuning records of the networks the node knows (the
//! conf dir's conflists and the cached ones), the host's links and qdiscs (one dump
//! each), and the records set of `table inet cnichain` (one dump). Everything is keyed by
//! (network, container ID, ifname); costs grow linearly with the number of attachments.

use super::model::{HostPort, Row, IN_PROGRESS, LIVE, ORPHAN, STALE};
use cnichain_engine::cache::{Cache, CacheEntry};
use cnichain_engine::load;
use cnichain_engine::reconcile::{entry_list, entry_netns, netns_alive};
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_stages::conf;
use cnichain_stages::kernel::netlink::{Link, Netlink, Qdisc, TC_H_ROOT};
use cnichain_stages::kernel::nft::{elements, layout, netlink as nfnl, records};
use cnichain_stages::portmap::rules::Dnat;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

type Key = (String, String, String);

/// The default host-local store (the reference's `defaultDataDir`).
const HOST_LOCAL_DEFAULT: &str = "/var/lib/cni/networks";

/// Where a network keeps files: its host-local dataDirs and tuning record dirs.
#[derive(Default)]
struct NetDirs {
    host_local: BTreeSet<PathBuf>,
    tuning: BTreeSet<PathBuf>,
}

/// Plugin objects of a list, the meta-plugin's inner ones included.
fn plugin_objects(list: &NetConfList) -> Vec<serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    let mut todo: Vec<serde_json::Map<String, Value>> = list.plugins.iter().map(|p| p.raw.clone()).collect();
    while let Some(p) = todo.pop() {
        if let Some(Value::Array(inner)) = p.get("plugins") {
            todo.extend(inner.iter().filter_map(|v| v.as_object().cloned()));
        }
        out.push(p);
    }
    out
}

fn note_dirs(dirs: &mut BTreeMap<String, NetDirs>, list: &NetConfList, state_dir: &Path) {
    let d = dirs.entry(list.name.clone()).or_default();
    for p in plugin_objects(list) {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some(ipam) = p.get("ipam").and_then(Value::as_object) {
            if ipam.get("type").and_then(Value::as_str) == Some("host-local") {
                let dir = conf::config_str(ipam, "dataDir").unwrap_or(HOST_LOCAL_DEFAULT);
                d.host_local
                    .insert(PathBuf::from(if dir.is_empty() { HOST_LOCAL_DEFAULT } else { dir }));
            }
        }
        if ty == "host-local" {
            let dir = conf::config_str(&p, "dataDir").unwrap_or(HOST_LOCAL_DEFAULT);
            d.host_local
                .insert(PathBuf::from(if dir.is_empty() { HOST_LOCAL_DEFAULT } else { dir }));
        }
        if ty == "tuning" {
            match conf::config_str(&p, "dataDir").filter(|s| !s.is_empty()) {
                Some(dir) => d.tuning.insert(PathBuf::from(dir)),
                None => d.tuning.insert(state_dir.join("tuning")),
            };
        }
    }
}

/// The conf dir's networks (files that do not load are skipped: inspect reports state,
/// `cnichain validate` reports config).
fn conf_dir_lists(conf_dir: &Path) -> Vec<NetConfList> {
    load::conf_files(conf_dir, &[".conflist", ".conf", ".json"])
        .unwrap_or_default()
        .iter()
        .filter_map(|p| load::load_file(p).ok())
        .collect()
}

/// Lock files: (network, container, ifname) for every `locks/<net>/<cid>:<ifname>.lock`.
fn lock_files(state_dir: &Path) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    let locks = cnichain_engine::lock::Locks::new(state_dir);
    let Ok(rd) = std::fs::read_dir(&locks.dir) else {
        return out;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(net) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for (cid, ifname) in locks.attachments(&net) {
            out.insert((net.clone(), cid, ifname));
        }
    }
    out
}

/// host-local reservations of `net` in `dir`: files named by an address holding
/// `<cid>\r\n<ifname>` (older stores: the container ID alone, any interface).
fn reservations(dir: &Path, net: &str, out: &mut BTreeMap<Key, BTreeSet<String>>) {
    let Ok(rd) = std::fs::read_dir(dir.join(net)) else {
        return;
    };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines().map(|l| l.trim());
        let cid = lines.next().unwrap_or_default().to_string();
        let ifname = lines.next().unwrap_or_default().to_string();
        if cid.is_empty() {
            continue;
        }
        out.entry((net.to_string(), cid, ifname)).or_default().insert(name);
    }
}

/// Tuning records in `dir`: key -> path.
fn tuning_records(dir: &Path, out: &mut BTreeMap<Key, PathBuf>, partial: &mut Vec<(String, String, PathBuf)>) {
    for p in cnichain_stages::tuning::record::list(dir) {
        let Ok(Some(r)) = cnichain_stages::tuning::record::read(&p) else {
            continue;
        };
        if r.network.is_empty() {
            // Records written before they named their network: matched by cid/ifname.
            partial.push((r.container_id, r.ifname, p));
        } else {
            out.insert((r.network, r.container_id, r.ifname), p);
        }
    }
}

/// The records set: owner id -> its records in index order.
fn nft_records() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, BTreeMap<u16, String>> = BTreeMap::new();
    let Ok(mut nl) = nfnl::Nfnl::open() else {
        return BTreeMap::new();
    };
    for (key, info) in elements::dump_elems(&mut nl, layout::TABLE, layout::SET_RECORDS).unwrap_or_default() {
        let name = key.get(..16).unwrap_or_default();
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let Ok(id) = std::str::from_utf8(&name[..end]) else {
            continue;
        };
        let idx = key.get(16..18).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
        out.entry(id.to_string()).or_default().insert(idx, info.comment);
    }
    out.into_iter().map(|(k, v)| (k, v.into_values().collect())).collect()
}

/// What is known of one key while collecting.
#[derive(Default)]
struct Acc {
    entry: Option<CacheEntry>,
    lock: bool,
    addresses: BTreeSet<String>,
    host_veth: Option<String>,
    ifb: Option<String>,
    tuning: Option<PathBuf>,
    nft: Vec<String>,
    host_ports: Vec<HostPort>,
    masquerade: Vec<String>,
    marked: bool,
}

fn host_port_of(d: &Dnat) -> HostPort {
    use cnichain_stages::kernel::nft::hostport::HostPort as H;
    let (proto, host_ip, port) = match d.host {
        H::Any { proto, port, .. } => (proto, String::new(), port),
        H::Addr { addr, proto, port } => (proto, cnichain_engine::spec::ipnet::format_ip(&addr), port),
    };
    HostPort {
        protocol: proto.name().to_string(),
        host_ip,
        host_port: port,
        pod_ip: cnichain_engine::spec::ipnet::format_ip(&d.to.addr),
        pod_port: d.to_port,
        source: "nftables".into(),
    }
}

/// The cached `portMappings` (for attachments cnichain keeps no records of).
fn cached_ports(e: &CacheEntry) -> Vec<HostPort> {
    let pod_ip = e
        .result
        .as_ref()
        .and_then(|r| r.get("ips"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|i| i.get("address"))
        .and_then(Value::as_str)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string();
    let Some(Value::Array(pm)) = e.capability_args.get("portMappings") else {
        return Vec::new();
    };
    pm.iter()
        .filter_map(|m| {
            let port = |k: &str| {
                conf::go_get(m, k)
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
            };
            Some(HostPort {
                protocol: conf::go_str(m, "protocol").unwrap_or("tcp").to_lowercase(),
                host_ip: conf::go_str(m, "hostIP").unwrap_or_default().to_string(),
                host_port: port("hostPort")?,
                pod_ip: pod_ip.clone(),
                pod_port: port("containerPort")?,
                source: "cache".into(),
            })
        })
        .collect()
}

fn tbf_rate(qdiscs: &HashMap<u32, Vec<Qdisc>>, index: u32) -> Option<u64> {
    qdiscs
        .get(&index)?
        .iter()
        .find(|q| q.parent == TC_H_ROOT && q.kind == "tbf")
        .and_then(|q| q.tbf)
        .map(|t| t.rate.saturating_mul(8))
}

/// Every row, sorted by network, container ID and ifname; only `net` when given.
pub fn collect(conf_dir: &Path, state_dir: &Path, cache: &Cache, net: Option<&str>) -> Vec<Row> {
    let entries = cache.entries();
    let locks = lock_files(state_dir);
    let mut dirs: BTreeMap<String, NetDirs> = BTreeMap::new();
    for l in conf_dir_lists(conf_dir) {
        note_dirs(&mut dirs, &l, state_dir);
    }
    // Most entries share a conflist: parse each distinct one once.
    let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
    for e in &entries {
        if !seen.insert(&e.config) {
            continue;
        }
        if let Ok(l) = entry_list(e) {
            note_dirs(&mut dirs, &l, state_dir);
        }
    }
    for (n, _, _) in &locks {
        dirs.entry(n.clone()).or_default();
    }
    // Networks by the hashes cnichain's objects carry.
    let by_word: HashMap<String, String> = dirs
        .keys()
        .map(|n| (cnichain_stages::kernel::names::network_word(n), n.clone()))
        .collect();
    let by_record: HashMap<String, String> = dirs.keys().map(|n| (records::network_record(n), n.clone())).collect();

    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();
    for e in entries {
        let key = (e.network_name.clone(), e.container_id.clone(), e.ifname.clone());
        acc.entry(key).or_default().entry = Some(e);
    }
    for k in locks {
        acc.entry(k).or_default().lock = true;
    }
    let mut reserved = BTreeMap::new();
    let mut tuning = BTreeMap::new();
    let mut tuning_partial = Vec::new();
    let tuning_dirs: BTreeSet<PathBuf> = dirs
        .values()
        .flat_map(|d| d.tuning.iter().cloned())
        .chain([state_dir.join("tuning")])
        .collect();
    for (n, d) in &dirs {
        for dir in &d.host_local {
            reservations(dir, n, &mut reserved);
        }
    }
    for dir in &tuning_dirs {
        tuning_records(dir, &mut tuning, &mut tuning_partial);
    }
    for (k, a) in reserved {
        acc.entry(k).or_default().addresses = a;
    }
    for (k, p) in tuning {
        acc.entry(k).or_default().tuning = Some(p);
    }
    for (cid, ifname, p) in tuning_partial {
        if let Some((_, a)) = acc.iter_mut().find(|(k, _)| k.1 == cid && k.2 == ifname) {
            a.tuning.get_or_insert(p);
        }
    }

    // Links: cnichain's by their owner alias.
    let mut host = Netlink::new().ok();
    let links: Vec<Link> = host.as_mut().and_then(|h| h.links().ok()).unwrap_or_default();
    let qdiscs: HashMap<u32, Vec<Qdisc>> = host
        .as_mut()
        .and_then(|h| h.all_qdiscs().ok())
        .unwrap_or_default()
        .into_iter()
        .fold(HashMap::new(), |mut m, q| {
            m.entry(q.index).or_insert_with(Vec::new).push(q);
            m
        });
    let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    for l in &links {
        let w: Vec<&str> = l.alias.split(' ').collect();
        let ["cnichain", kind, word, cid, ifname] = w.as_slice() else {
            continue;
        };
        let net = by_word.get(*word).cloned().unwrap_or_else(|| word.to_string());
        let a = acc.entry((net, cid.to_string(), ifname.to_string())).or_default();
        a.marked = true;
        match *kind {
            "bandwidth" => a.ifb = Some(l.name.clone()),
            _ => a.host_veth = Some(l.name.clone()),
        }
    }
    // Interfaces the cached results list (the reference's attachments have no alias).
    for (_, a) in acc.iter_mut() {
        let Some(e) = &a.entry else { continue };
        let Some(Value::Array(ifs)) = e.result.as_ref().and_then(|r| r.get("interfaces")) else {
            continue;
        };
        for i in ifs {
            if i.get("sandbox").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                continue;
            }
            let Some(l) = i.get("name").and_then(Value::as_str).and_then(|n| by_name.get(n)) else {
                continue;
            };
            match l.kind.as_deref() {
                Some("veth") if a.host_veth.is_none() => a.host_veth = Some(l.name.clone()),
                Some("ifb") if a.ifb.is_none() => a.ifb = Some(l.name.clone()),
                _ => {}
            }
        }
    }

    // nftables records, by owner id.
    let mut ids: HashMap<String, Key> = HashMap::new();
    for (n, c, i) in acc.keys() {
        ids.insert(
            cnichain_stages::portmap::rules::owner_id(n, c, i),
            (n.clone(), c.clone(), i.clone()),
        );
        ids.insert(
            cnichain_stages::shared::ipmasq::owner_id(n, c, i),
            (n.clone(), c.clone(), i.clone()),
        );
    }
    let mut unnamed: Vec<Row> = Vec::new();
    for (id, recs) in nft_records() {
        let net_of = || {
            recs.first()
                .and_then(|r| by_record.get(r).cloned())
                .unwrap_or_else(|| recs.first().cloned().unwrap_or_default())
        };
        let (ports, masq): (Vec<HostPort>, Vec<String>) = if id.starts_with('p') {
            (
                recs.iter()
                    .skip(1)
                    .filter_map(|r| Dnat::parse(r))
                    .map(|d| host_port_of(&d))
                    .collect(),
                Vec::new(),
            )
        } else {
            let m = recs
                .iter()
                .filter_map(|r| r.strip_prefix("ipmasq "))
                .map(str::to_string)
                .collect();
            (Vec::new(), m)
        };
        match ids.get(&id) {
            Some(k) => {
                let a = acc.get_mut(k).expect("ids are made from acc's keys");
                a.nft.push(id);
                a.host_ports.extend(ports);
                a.masquerade.extend(masq);
                a.marked = true;
            }
            None => unnamed.push(Row {
                network: net_of(),
                state: ORPHAN.into(),
                made_by: "cnichain".into(),
                host_ports: ports,
                masquerade: masq,
                nft_owners: vec![id],
                ..Default::default()
            }),
        }
    }

    let mut rows: Vec<Row> = acc
        .into_iter()
        .map(|((network, cid, ifname), mut a)| {
            let cache = a.entry.is_some();
            let netns = match &a.entry {
                Some(e) => entry_netns(e),
                None => a
                    .tuning
                    .as_ref()
                    .and_then(|p| cnichain_stages::tuning::record::read(p).ok().flatten())
                    .map(|r| r.netns)
                    .filter(|n| !n.is_empty()),
            };
            let alive = netns.as_deref().is_some_and(netns_alive);
            let state = match (cache, alive, a.lock) {
                (true, true, _) => LIVE,
                (true, false, _) => STALE,
                (false, _, true) => IN_PROGRESS,
                (false, _, false) => ORPHAN,
            };
            if a.host_ports.is_empty() {
                if let Some(e) = &a.entry {
                    a.host_ports = cached_ports(e);
                }
            }
            let index = |n: &Option<String>| n.as_deref().and_then(|n| by_name.get(n)).map(|l| l.index);
            let cnichain = a.lock || a.marked || a.tuning.is_some();
            Row {
                network,
                container_id: Some(cid),
                ifname: Some(ifname),
                state: state.into(),
                made_by: if cnichain { "cnichain" } else { "other" }.into(),
                netns,
                netns_alive: alive,
                cache,
                lock: a.lock,
                addresses: a.addresses.into_iter().collect(),
                ingress_rate: index(&a.host_veth).and_then(|i| tbf_rate(&qdiscs, i)),
                egress_rate: index(&a.ifb).and_then(|i| tbf_rate(&qdiscs, i)),
                host_veth: a.host_veth,
                ifb: a.ifb,
                host_ports: a.host_ports,
                masquerade: a.masquerade,
                tuning_record: a.tuning.map(|p| p.display().to_string()),
                nft_owners: a.nft,
            }
        })
        .collect();
    rows.extend(unnamed);
    rows.retain(|r| net.is_none_or(|n| r.network == n));
    rows
}
