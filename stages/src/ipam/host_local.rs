//! The host-local IPAM stage: addresses from range sets, one per set, recorded in an
//! on-disk store that the reference plugin can share (see `store`).
//!
//! Config (the full request config; keys are matched as Go matches them):
//! - `ipam.ranges`: `[[{subnet, rangeStart?, rangeEnd?, gateway?}, ...], ...]`, one
//!   address per range set; the legacy `ipam.subnet` / `rangeStart` / `rangeEnd` /
//!   `gateway` form is a first range set of one range; `runtimeConfig.ipRanges` (the
//!   `ipRanges` capability) is put before both, as the reference does; `ipam.rangeFromFile`
//!   (a file holding one range object) is used when no other range is given.
//! - `ipam.routes`, `ipam.dataDir` (default /var/lib/cni/networks), `ipam.resolvConf`.
//! - Requested addresses: CNI_ARGS `IP=` (with `IgnoreUnknown`), `args.cni.ips`,
//!   `runtimeConfig.ips` (the `ips` capability); each is matched to the range set holding it.

use super::allocator;
use super::config;
pub use super::host_local_conf::HostLocalConf;
use super::resolv;
use super::store::{Mode, Store};
use cnichain_engine::spec::error::{CniError, INTERNAL, PLUGIN_NOT_AVAILABLE};
use cnichain_engine::spec::ids;
use cnichain_engine::spec::ipnet::format_ip;
use cnichain_engine::spec::result::{CniResult, Dns, Result100};
use cnichain_engine::stage::{Invocation, Stage};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::net::IpAddr;

fn check_attachment(inv: &Invocation) -> Result<(), CniError> {
    ids::validate_container_id(&inv.rt.container_id)?;
    ids::validate_ifname(&inv.rt.ifname)
}

/// Whether the store of the network in `config` (a request config carrying host-local's
/// `ipam`) holds any reservation: pods exist that depend on the network. For a main
/// stage's STATUS (51 when what they depend on is gone). Creates nothing.
pub fn has_reservations(config: &Map<String, Value>, version: &str) -> Result<bool, CniError> {
    let conf = HostLocalConf::load(config, &[], version)?;
    Ok(
        match Store::open(&conf.data_dir, &conf.name, Mode::Existing { exclusive: false })? {
            Some(store) => !store.reserved().is_empty(),
            None => false,
        },
    )
}

fn open_store(conf: &HostLocalConf) -> Result<Store, CniError> {
    Store::open(&conf.data_dir, &conf.name, Mode::Write)?
        .ok_or_else(|| CniError::new(INTERNAL, "IPAM store was not created"))
}

pub struct HostLocal;

/// The requested addresses as ADD places them (the first one inside each range set),
/// refused as ADD refuses them when that needs no store: one that is its range's
/// gateway, or one no range set takes. Checked before the store's directory is made.
fn check_requested(conf: &HostLocalConf) -> Result<(), CniError> {
    let mut requested: Vec<IpAddr> = Vec::new();
    for ip in &conf.ip_args {
        if !requested.iter().any(|r| format_ip(r) == format_ip(ip)) {
            requested.push(*ip);
        }
    }
    for (idx, set) in conf.ranges.iter().enumerate() {
        let Some(p) = requested.iter().position(|ip| set.contains(*ip)) else {
            continue;
        };
        let ip = requested.remove(p);
        if set.range_for(ip).is_some_and(|r| r.gateway == ip) {
            return Err(
                CniError::new(INTERNAL, format!("requested ip {} is subnet's gateway", format_ip(&ip)))
                    .context(format!("failed to allocate for range {idx}")),
            );
        }
    }
    if !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(format_ip).collect();
        return Err(CniError::new(
            INTERNAL,
            format!("failed to allocate all requested IPs: {}", list.join(" ")),
        ));
    }
    Ok(())
}

/// ADD's checks before it opens the store: the attachment, the config with its
/// CNI_ARGS and runtimeConfig, resolvConf, and the requested addresses.
fn load_for_add(inv: &Invocation) -> Result<(HostLocalConf, Dns), CniError> {
    check_attachment(inv)?;
    let conf = HostLocalConf::load(inv.config, &inv.rt.args, inv.version)?;
    let dns = match &conf.resolv_conf {
        Some(p) => resolv::parse_file(p, "ipam.resolvConf")?,
        None => Default::default(),
    };
    check_requested(&conf)?;
    Ok((conf, dns))
}

impl Stage for HostLocal {
    fn schema(&self) -> Option<&'static cnichain_engine::validate::schema::Schema> {
        Some(&super::config::HOST_LOCAL_SCHEMA)
    }

    fn preflight(&self, inv: &Invocation) -> Result<(), CniError> {
        load_for_add(inv).map(|_| ())
    }

    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let (conf, dns) = load_for_add(inv)?;
        let (cid, ifname) = (inv.rt.container_id.as_str(), inv.rt.ifname.as_str());
        let store = open_store(&conf)?;

        // Requested addresses, each used once (keyed by text, as the reference's map).
        let mut requested: Vec<IpAddr> = Vec::new();
        for ip in &conf.ip_args {
            if !requested.iter().any(|r| format_ip(r) == format_ip(ip)) {
                requested.push(*ip);
            }
        }
        let mut ips = Vec::with_capacity(conf.ranges.len());
        for (idx, set) in conf.ranges.iter().enumerate() {
            let wanted = requested
                .iter()
                .position(|ip| set.contains(*ip))
                .map(|p| requested.remove(p));
            match allocator::get(&store, set, idx, cid, ifname, wanted) {
                Ok(ipc) => ips.push(ipc),
                Err(e) => {
                    for _ in 0..ips.len() {
                        store.release_by_id(cid, ifname);
                    }
                    return Err(e.context(format!("failed to allocate for range {idx}")));
                }
            }
        }
        if !requested.is_empty() {
            for _ in 0..ips.len() {
                store.release_by_id(cid, ifname);
            }
            let list: Vec<String> = requested.iter().map(format_ip).collect();
            return Err(CniError::new(
                INTERNAL,
                format!("failed to allocate all requested IPs: {}", list.join(" ")),
            ));
        }
        drop(store);
        let result = Result100 {
            cni_version: String::new(),
            interfaces: Vec::new(),
            ips,
            routes: conf.routes,
            dns,
        };
        CniResult::from_v1(result, inv.version)
    }

    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        check_attachment(inv)?;
        let conf = HostLocalConf::load(inv.config, &inv.rt.args, inv.version)?;
        let store = open_store(&conf)?;
        // The reference releases once per range set; from the second call on, only
        // files of the old format (bare container ID) can still match.
        for _ in &conf.ranges {
            store.release_by_id(&inv.rt.container_id, &inv.rt.ifname);
        }
        Ok(())
    }

    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        check_attachment(inv)?;
        config::check_allowed(inv.config, inv.version)?;
        let conf = HostLocalConf::load(inv.config, &inv.rt.args, inv.version)?;
        let (cid, ifname) = (inv.rt.container_id.as_str(), inv.rt.ifname.as_str());
        let store = open_store(&conf)?;
        if !store.find_by_id(cid, ifname) {
            return Err(CniError::new(
                INTERNAL,
                format!("host-local: Failed to find address added by container {cid}"),
            ));
        }
        // Beyond the reference: every address of the previous result that lies in one of
        // our range sets must be reserved by this attachment.
        if let Some(prev) = inv.prev_result {
            let owned: HashSet<IpAddr> = store.get_by_id(cid, ifname).into_iter().collect();
            for ipc in prev.to_v1()?.ips {
                let ip = ipc.address.addr;
                if conf.ranges.iter().any(|s| s.contains(ip)) && !owned.contains(&ip) {
                    return Err(CniError::new(
                        INTERNAL,
                        format!(
                            "host-local: address {} is not reserved for container {cid} interface {ifname}",
                            format_ip(&ip)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        let Some(valid) = crate::shared::gc::valid_attachments(inv.config)? else {
            return Ok(());
        };
        let conf = HostLocalConf::load(inv.config, &[], inv.version)?;
        if let Some(store) = Store::open(&conf.data_dir, &conf.name, Mode::Existing { exclusive: true })? {
            let released = store.gc(&valid);
            if !released.is_empty() {
                tracing::debug!(network = %conf.name, count = released.len(), "host-local gc released addresses");
            }
        }
        Ok(())
    }

    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        let conf = HostLocalConf::load(inv.config, &[], inv.version)?;
        let reserved: HashSet<IpAddr> =
            match Store::open(&conf.data_dir, &conf.name, Mode::Existing { exclusive: false })? {
                Some(store) => store.reserved().into_iter().collect(),
                None => HashSet::new(),
            };
        for set in &conf.ranges {
            if !allocator::has_free(set, &reserved) {
                return Err(CniError::new(
                    PLUGIN_NOT_AVAILABLE,
                    format!("no IP addresses available in range set: {set}"),
                ));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnichain_engine::spec::args::RuntimeConf;
    use cnichain_engine::stage::{Command, Registry};
    use serde_json::json;
    use std::path::PathBuf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("cnichain-ipam-hl-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
        fn s(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // The config helpers of the loader's own tests.
    use super::super::host_local_conf::tests::{conf, load};

    /// Requested addresses ADD would refuse without its store are refused by the
    /// preflight check, with ADD's code and text; ones ADD may grant pass.
    #[test]
    fn ipam_requested_addresses_checked_before_the_store() {
        let c = |ips: Value| {
            conf(
                json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}], [{"subnet": "fd00::/64"}]]}),
                json!({"runtimeConfig": {"ips": ips}}),
            )
        };
        let check = |ips: Value| check_requested(&load(&c(ips), &[]).unwrap());
        assert!(check(json!(["10.1.0.7/24", "fd00::7/64"])).is_ok());
        assert!(
            check(json!(["10.1.0.7", "10.1.0.7"])).is_ok(),
            "the same address twice is one request"
        );
        let e = check(json!(["10.2.0.7/24"])).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (INTERNAL, "failed to allocate all requested IPs: 10.2.0.7")
        );
        let e = check(json!(["10.1.0.7", "10.1.0.8"])).unwrap_err();
        assert_eq!(
            e.msg, "failed to allocate all requested IPs: 10.1.0.8",
            "one address per range set"
        );
        let e = check(json!(["fd00::9", "10.1.0.1"])).unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway"
        );
    }

    fn rt(cid: &str, ifname: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: cid.to_string(),
            netns: "/proc/self/ns/net".to_string(),
            ifname: ifname.to_string(),
            ..Default::default()
        }
    }

    fn run(c: &Map<String, Value>, cmd: Command, r: &RuntimeConf) -> Result<Option<CniResult>, CniError> {
        let reg = Registry::new(vec![]);
        let inv = Invocation {
            command: cmd,
            config: c,
            prev_result: None,
            rt: r,
            version: "1.0.0",
            cni_path: &[],
            registry: &reg,
        };
        let s = HostLocal;
        s.run(&inv)
    }

    fn add_ip(c: &Map<String, Value>, cid: &str) -> Result<String, CniError> {
        let r = run(c, Command::Add, &rt(cid, "eth0"))?.unwrap().to_v1()?;
        Ok(r.ips
            .iter()
            .map(|i| i.address.to_string())
            .collect::<Vec<_>>()
            .join(","))
    }

    #[test]
    fn ipam_round_robin_exhaustion_and_status() {
        let t = TempDir::new("rr");
        let c = conf(
            json!({"subnet": "10.1.0.0/29", "dataDir": t.s()}),
            json!({"cniVersion": "1.1.0"}),
        );
        assert_eq!(add_ip(&c, "c1").unwrap(), "10.1.0.2/29");
        assert_eq!(add_ip(&c, "c2").unwrap(), "10.1.0.3/29");
        run(&c, Command::Del, &rt("c1", "eth0")).unwrap();
        // not lowest-free: continue after the last reserved
        assert_eq!(add_ip(&c, "c3").unwrap(), "10.1.0.4/29");
        assert_eq!(add_ip(&c, "c4").unwrap(), "10.1.0.5/29");
        assert!(run(&c, Command::Status, &RuntimeConf::default()).is_ok());
        assert_eq!(add_ip(&c, "c5").unwrap(), "10.1.0.6/29");
        assert_eq!(add_ip(&c, "c6").unwrap(), "10.1.0.2/29");
        let e = add_ip(&c, "c7").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.1-10.1.0.6"
        );
        let e = run(&c, Command::Status, &RuntimeConf::default()).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (50, "no IP addresses available in range set: 10.1.0.1-10.1.0.6")
        );
        // duplicate allocation
        let e = add_ip(&c, "c2").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: 10.1.0.3 has been allocated to c2, duplicate allocation is not allowed"
        );
        // CHECK
        assert!(run(&c, Command::Check, &rt("c2", "eth0")).is_ok());
        let e = run(&c, Command::Check, &rt("c1", "eth0")).unwrap_err();
        assert_eq!(e.msg, "host-local: Failed to find address added by container c1");
        // DEL is idempotent
        run(&c, Command::Del, &rt("c2", "eth0")).unwrap();
        run(&c, Command::Del, &rt("c2", "eth0")).unwrap();
        assert!(run(&c, Command::Status, &RuntimeConf::default()).is_ok());
    }

    #[test]
    fn ipam_requested_ips_paths() {
        let t = TempDir::new("req");
        let c = conf(
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]], "dataDir": t.s()}),
            json!({"runtimeConfig": {"ips": ["10.1.0.50/24", "fd00::50"]}}),
        );
        assert_eq!(add_ip(&c, "c1").unwrap(), "10.1.0.50/24,fd00::50/64");
        let e = add_ip(&c, "c2").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: requested IP address 10.1.0.50 is not available in range set 10.1.0.1-10.1.0.254"
        );
        // nothing of c2 is left behind
        let store = std::fs::read_dir(t.0.join("net1")).unwrap().count();
        assert_eq!(store, 5); // two addresses, two last_reserved_ip, lock
        let c = conf(
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": t.s()}),
            json!({"args": {"cni": {"ips": ["10.1.0.1"]}}}),
        );
        assert_eq!(
            add_ip(&c, "c3").unwrap_err().msg,
            "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway"
        );
        let c = conf(
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": t.s()}),
            json!({}),
        );
        let mut r = rt("c4", "eth0");
        r.args = vec![("IP".into(), "10.2.0.1".into())];
        let e = run(&c, Command::Add, &r).unwrap_err();
        assert_eq!(e.msg, "failed to allocate all requested IPs: 10.2.0.1");
        assert!(
            !t.0.join("net1").join("10.1.0.2").exists(),
            "released after the failure"
        );
        r.args = vec![("IP".into(), "10.1.0.77".into())];
        let res = run(&c, Command::Add, &r).unwrap().unwrap().to_v1().unwrap();
        assert_eq!(res.ips[0].address.to_string(), "10.1.0.77/24");
        // the last reserved address moves to the requested one
        assert_eq!(
            std::fs::read(t.0.join("net1").join("last_reserved_ip.0")).unwrap(),
            b"10.1.0.77"
        );
    }

    #[test]
    fn ipam_invalid_config_writes_nothing() {
        let t = TempDir::new("inv");
        let c = conf(json!({"subnet": "10.1.0.0/31", "dataDir": t.s()}), json!({}));
        for cmd in [Command::Add, Command::Del, Command::Check, Command::Status] {
            assert_eq!(run(&c, cmd, &rt("c1", "eth0")).unwrap_err().code, 7);
        }
        let c = conf(
            json!({"subnet": "10.1.0.0/24", "dataDir": t.s(), "resolvConf": "/nonexistent"}),
            json!({}),
        );
        assert_eq!(run(&c, Command::Add, &rt("c1", "eth0")).unwrap_err().code, 5);
        assert!(!t.0.exists());
    }

    #[test]
    fn ipam_gc_releases_stale() {
        let t = TempDir::new("gc");
        let mut c = conf(
            json!({"subnet": "10.1.0.0/24", "dataDir": t.s()}),
            json!({"cniVersion": "1.1.0"}),
        );
        add_ip(&c, "a").unwrap();
        add_ip(&c, "b").unwrap();
        // no key: nothing happens
        run(&c, Command::Gc, &RuntimeConf::default()).unwrap();
        assert!(t.0.join("net1").join("10.1.0.3").exists());
        c.insert(
            "cni.dev/valid-attachments".into(),
            json!([{"containerID": "a", "ifname": "eth0"}]),
        );
        run(&c, Command::Gc, &RuntimeConf::default()).unwrap();
        assert!(t.0.join("net1").join("10.1.0.2").exists());
        assert!(!t.0.join("net1").join("10.1.0.3").exists());
        c.insert("cni.dev/valid-attachments".into(), json!([{"containerID": 5}]));
        assert_eq!(run(&c, Command::Gc, &RuntimeConf::default()).unwrap_err().code, 7);
        c.insert("cni.dev/valid-attachments".into(), json!([]));
        run(&c, Command::Gc, &RuntimeConf::default()).unwrap();
        assert!(!t.0.join("net1").join("10.1.0.2").exists());
        assert!(t.0.join("net1").join("lock").exists());
    }

    #[test]
    fn ipam_result_shape_and_versions() {
        let t = TempDir::new("res");
        let rc = t.0.join("resolv.conf");
        std::fs::create_dir_all(&t.0).unwrap();
        std::fs::write(&rc, "nameserver 1.1.1.1\nsearch a b\n").unwrap();
        let c = conf(
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]], "dataDir": t.s(),
                   "routes": [{"dst": "0.0.0.0/0"}], "resolvConf": rc.display().to_string()}),
            json!({}),
        );
        let res = run(&c, Command::Add, &rt("c1", "eth0")).unwrap().unwrap();
        assert_eq!(
            res.to_json(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"},{"address":"fd00::2/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["1.1.1.1"],"search":["a","b"]}}"#
        );
    }
}
