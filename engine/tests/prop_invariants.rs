//! The fuzz targets' invariants (fuzz/src/lib.rs, included here) as property tests on
//! generated inputs, so every `cargo test` checks them, plus a replay of every input the
//! fuzzers ever found a problem with (fuzz/regressions/<target>/*).
//!
//! The generators build inputs of the right shape (results of every layout with odd
//! addresses and routes, conflists with the keys the stages read), which random bytes
//! would almost never reach. Case counts keep the whole file to a few seconds.

#[path = "../../fuzz/src/lib.rs"]
#[allow(clippy::all)]
mod invariants;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::path::Path;

// ---------------------------------------------------------------------------------------
// Results

fn v4() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])),
        Just("10.1.0.5".to_string()),
        Just("0.0.0.0".to_string()),
    ]
}

fn v6() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u16; 8]>().prop_map(|g| g.iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(":")),
        Just("2001:db8::5".to_string()),
        Just("::".to_string()),
        v4().prop_map(|a| format!("::ffff:{a}")),
    ]
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![4 => v4(), 3 => v6()]
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (v4(), 0u8..=32).prop_map(|(a, p)| format!("{a}/{p}")),
        3 => (v6(), 0u8..=128).prop_map(|(a, p)| format!("{a}/{p}")),
        1 => Just("10.0.0.1".to_string()),
        1 => Just("x/8".to_string()),
    ]
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop_oneof![2 => s.prop_map(Some), 1 => Just(None)].boxed()
}

fn small_int() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..2000).prop_map(Value::from),
        Just(json!(i64::MAX)),
        Just(json!(0)),
        Just(json!(null)),
        Just(json!(1.5)),
    ]
}

fn route() -> impl Strategy<Value = Value> {
    (
        cidr(),
        maybe(ip()),
        maybe(small_int()),
        maybe(small_int()),
        maybe(small_int()),
        maybe(small_int()),
    )
        .prop_map(|(dst, gw, mtu, advmss, table, scope)| {
            let mut m = Map::new();
            m.insert("dst".into(), json!(dst));
            if let Some(g) = gw {
                m.insert("gw".into(), json!(g));
            }
            for (k, v) in [("mtu", mtu), ("advmss", advmss), ("table", table), ("scope", scope)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

fn dns() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(ip(), 0..3),
        "[a-z.]{0,8}",
        proptest::collection::vec("[a-z.]{1,6}", 0..2),
    )
        .prop_map(|(ns, domain, search)| json!({"nameservers": ns, "domain": domain, "search": search}))
}

fn iface() -> impl Strategy<Value = Value> {
    (
        "[a-z0-9]{0,6}",
        maybe("[0-9a-f:]{0,17}"),
        maybe(small_int()),
        maybe("/[a-z/]{0,8}"),
        maybe("[a-z0-9:.]{0,6}"),
    )
        .prop_map(|(name, mac, mtu, sandbox, pci)| {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            if let Some(x) = mac {
                m.insert("mac".into(), json!(x));
            }
            if let Some(x) = mtu {
                m.insert("mtu".into(), x);
            }
            if let Some(x) = sandbox {
                m.insert("sandbox".into(), json!(x));
            }
            if let Some(x) = pci {
                m.insert("pciID".into(), json!(x));
            }
            Value::Object(m)
        })
}

/// An `ips` entry of the 0.3/0.4 (`with_version`) or 1.x layout.
fn ip_entry(with_version: bool) -> impl Strategy<Value = Value> {
    (
        cidr(),
        maybe(ip()),
        maybe(-1i64..3),
        prop_oneof![Just("4"), Just("6"), Just("x")],
    )
        .prop_map(move |(address, gw, iface, ver)| {
            let mut m = Map::new();
            if with_version {
                m.insert("version".into(), json!(ver));
            }
            if let Some(i) = iface {
                m.insert("interface".into(), json!(i));
            }
            m.insert("address".into(), json!(address));
            if let Some(g) = gw {
                m.insert("gateway".into(), json!(g));
            }
            Value::Object(m)
        })
}

fn ip020() -> impl Strategy<Value = Value> {
    (cidr(), maybe(ip()), proptest::collection::vec(route(), 0..3)).prop_map(|(a, gw, routes)| {
        let mut m = Map::new();
        m.insert("ip".into(), json!(a));
        if let Some(g) = gw {
            m.insert("gateway".into(), json!(g));
        }
        m.insert("routes".into(), Value::Array(routes));
        Value::Object(m)
    })
}

/// A result in one of the layouts, its version field set, missing or odd.
fn result() -> impl Strategy<Value = Value> {
    let version = prop_oneof![
        6 => proptest::sample::select(cnichain_engine::spec::version::SUPPORTED).prop_map(|v| Some(v.to_string())),
        1 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("9.9.9".to_string())),
    ];
    (
        version,
        0u8..3,
        proptest::collection::vec(iface(), 0..3),
        proptest::collection::vec(ip_entry(true), 0..4),
        proptest::collection::vec(ip_entry(false), 0..4),
        proptest::collection::vec(route(), 0..4),
        maybe(ip020()),
        maybe(ip020()),
        dns(),
    )
        .prop_map(|(ver, layout, ifaces, ips04, ips1, routes, ip4, ip6, dns)| {
            let mut m = Map::new();
            if let Some(v) = ver {
                m.insert("cniVersion".into(), json!(v));
            }
            match layout {
                0 => {
                    if let Some(x) = ip4 {
                        m.insert("ip4".into(), x);
                    }
                    if let Some(x) = ip6 {
                        m.insert("ip6".into(), x);
                    }
                }
                1 => {
                    m.insert("interfaces".into(), Value::Array(ifaces));
                    m.insert("ips".into(), Value::Array(ips04));
                    m.insert("routes".into(), Value::Array(routes));
                }
                _ => {
                    m.insert("interfaces".into(), Value::Array(ifaces));
                    m.insert("ips".into(), Value::Array(ips1));
                    m.insert("routes".into(), Value::Array(routes));
                }
            }
            m.insert("dns".into(), dns);
            Value::Object(m)
        })
}

// ---------------------------------------------------------------------------------------
// Conflists

fn json_atom() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        (-5i64..70000).prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!("true")),
        Just(json!("10.0.0.0/24")),
        Just(json!("10.0.0.1")),
        Just(json!("0a:58:0a:01:00:05")),
        Just(json!("nftables")),
        "[a-zA-Z0-9./ ]{0,8}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_atom().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((prop_oneof![key(), "[a-z]{1,4}".prop_map(|s| s)], inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys the stages and libcni read, and a few they do not.
fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "type",
        "name",
        "cniVersion",
        "capabilities",
        "ipam",
        "dns",
        "args",
        "runtimeConfig",
        "bridge",
        "isGateway",
        "isDefaultGateway",
        "ipMasq",
        "ipMasqBackend",
        "mtu",
        "hairpinMode",
        "promiscMode",
        "vlan",
        "vlanTrunk",
        "disableContainerInterface",
        "sysctl",
        "mac",
        "promisc",
        "allmulti",
        "snat",
        "markMasqBit",
        "externalSetMarkChain",
        "backend",
        "ingressRate",
        "ingressBurst",
        "egressRate",
        "egressBurst",
        "shapedSubnets",
        "unshapedSubnets",
        "subnet",
        "ranges",
        "routes",
        "rangeStart",
        "rangeEnd",
        "gateway",
        "addresses",
        "portMappings",
        "bandwidth",
        "ips",
        "IsGateway",
        "isGatway",
        "prevResult",
    ])
    .prop_map(str::to_string)
}

fn plugin() -> impl Strategy<Value = Value> {
    let ptype = proptest::sample::select(vec![
        "bridge",
        "ptp",
        "loopback",
        "tuning",
        "portmap",
        "bandwidth",
        "macvlan",
        "firewall",
        "x",
        "",
        "a/b",
        "..",
    ]);
    let ipam_type = proptest::sample::select(vec!["host-local", "static", "dhcp", "", "a/b"]);
    (
        prop_oneof![8 => ptype.prop_map(Some), 1 => Just(None)],
        maybe((ipam_type, proptest::collection::vec((key(), json_value()), 0..4))),
        proptest::collection::vec((key(), json_value()), 0..5),
        proptest::collection::vec(
            (
                proptest::sample::select(vec!["portMappings", "bandwidth", "ips", "mac", "ipRanges", "dns", "x"]),
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(t, ipam, extra, caps)| {
            let mut m = Map::new();
            for (k, v) in extra {
                m.insert(k, v);
            }
            if let Some(t) = t {
                m.insert("type".into(), json!(t));
            }
            if let Some((it, keys)) = ipam {
                let mut i: Map<String, Value> = keys.into_iter().collect();
                i.insert("type".into(), json!(it));
                m.insert("ipam".into(), Value::Object(i));
            }
            if !caps.is_empty() {
                let c: Map<String, Value> = caps.into_iter().map(|(k, b)| (k.to_string(), json!(b))).collect();
                m.insert("capabilities".into(), Value::Object(c));
            }
            Value::Object(m)
        })
}

fn conflist() -> impl Strategy<Value = Value> {
    let ver = prop_oneof![
        8 => proptest::sample::select(vec!["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.2.0"]),
        1 => proptest::sample::select(vec!["", "1.0", "2.0.0", "x.y"]),
    ];
    (
        prop_oneof![8 => Just(Some(json!("net1"))), 1 => Just(Some(json!("bad name"))), 1 => maybe(json_atom())],
        prop_oneof![6 => ver.clone().prop_map(|v| Some(Value::from(v))), 1 => Just(None)],
        prop_oneof![
            4 => Just(None),
            2 => proptest::collection::vec(ver.clone().prop_map(Value::from), 0..3).prop_map(Some),
            1 => proptest::collection::vec(json_atom(), 0..2).prop_map(Some),
        ],
        prop_oneof![
            8 => proptest::collection::vec(plugin(), 1..5).prop_map(Some),
            1 => proptest::collection::vec(prop_oneof![3 => plugin(), 1 => json_atom()], 0..3).prop_map(Some),
            1 => Just(None),
        ],
        prop_oneof![6 => Just(None), 1 => json_atom().prop_map(Some)],
        proptest::collection::vec((key(), json_value()), 0..2),
    )
        .prop_map(|(name, v, vs, plugins, only_inlined, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            if let Some(n) = name {
                m.insert("name".into(), n);
            }
            if let Some(v) = v {
                m.insert("cniVersion".into(), v);
            }
            if let Some(vs) = vs {
                m.insert("cniVersions".into(), Value::Array(vs));
            }
            if let Some(p) = plugins {
                m.insert("plugins".into(), Value::Array(p));
            }
            if let Some(o) = only_inlined {
                m.insert("loadOnlyInlinedPlugins".into(), o);
            }
            Value::Object(m)
        })
}

// ---------------------------------------------------------------------------------------
// Cache entries

fn cache_entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("cniCacheV1")), Just(json!("other")), Just(Value::Null)],
        prop_oneof![
            Just(json!("eyJuYW1lIjoibiJ9")),
            Just(json!("%%")),
            Just(json!(5)),
            Just(Value::Null)
        ],
        prop_oneof![
            Just(json!([["IgnoreUnknown", "1"]])),
            Just(json!([["a"]])),
            Just(json!("x")),
            Just(Value::Null)
        ],
        prop_oneof![
            Just(json!({"portMappings": [{"hostPort": 80}]})),
            Just(json!([])),
            Just(Value::Null)
        ],
        prop_oneof![3 => result(), 1 => json_atom()],
        maybe("/run/netns/[a-z]{1,4}"),
    )
        .prop_map(|(kind, config, args, caps, result, netns)| {
            let mut m = Map::new();
            if !kind.is_null() {
                m.insert("kind".into(), kind);
            }
            m.insert("containerId".into(), json!("c1"));
            m.insert("ifName".into(), json!("eth0"));
            m.insert("networkName".into(), json!("n"));
            for (k, v) in [
                ("config", config),
                ("cniArgs", args),
                ("capabilityArgs", caps),
                ("result", result),
            ] {
                if !v.is_null() {
                    m.insert(k.into(), v);
                }
            }
            if let Some(n) = netns {
                m.insert("netns".into(), json!(n));
            }
            Value::Object(m)
        })
}

// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn result_passing_structured(v in result(), fb in any::<u8>()) {
        let mut data = vec![fb];
        data.extend(serde_json::to_vec(&v).unwrap());
        invariants::result_passing(&data);
    }

    #[test]
    fn result_passing_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        invariants::result_passing(&data);
    }

    #[test]
    fn conflist_structured(v in conflist()) {
        invariants::conflist(&serde_json::to_vec_pretty(&v).unwrap());
    }

    #[test]
    fn cache_entries(v in cache_entry()) {
        invariants::cache(&serde_json::to_vec(&v).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cni_args_strings(s in "[a-zA-Z0-9=;./ _:\\-\u{0}é{}\"\\[\\]]{0,24}") {
        invariants::cni_args(s.as_bytes());
    }
}

/// Found by the `cache` fuzz target (fuzz/regressions/cache/float-capability-arg):
/// serde_json is built without its `float_roundtrip` feature, and its fast float parser
/// misreads some decimal floats by one ulp ("8e-39" reads as 8.000000000000001e-39).
/// So a float in a plugin's config reaches the plugin changed, and capability args come
/// back from the result cache changed; libcni (Go's strconv) keeps them exactly.
/// Fix: `serde_json = { version = "1", features = ["preserve_order", "float_roundtrip"] }`.
#[test]

fn floats_pass_through_unchanged() {
    use cnichain_engine::cache::{Cache, Lookup};
    use cnichain_engine::request;
    use cnichain_engine::spec::args::RuntimeConf;
    use cnichain_engine::spec::conflist::NetConfList;
    use cnichain_engine::spec::result::CniResult;
    // a float in a plugin's config, into the request
    let list =
        NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x","k":8e-39}]}"#).unwrap();
    let conf = request::build(&list, &list.plugins[0], None, &RuntimeConf::default());
    let text = serde_json::to_string(&conf).unwrap();
    assert!(text.contains(r#""k":8e-39"#), "the request carries {text}");
    // a float in the capability args, through the result cache
    let dir = std::env::temp_dir().join(format!("cnichain-prop-float-{}", std::process::id()));
    let cache = Cache::new(&dir);
    let mut rt = RuntimeConf {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    rt.capability_args.insert("x".into(), json!(8e-39));
    cache.write("n", &rt, b"{}", &CniResult::default()).unwrap();
    let back = cache.read("n", "c1", "eth0");
    let _ = std::fs::remove_dir_all(&dir);
    match back {
        Lookup::Found(e) => assert_eq!(e.capability_args.get("x"), Some(&json!(8e-39))),
        other => panic!("{other:?}"),
    }
}

/// A fuzz target: its name and its invariants.
type Target = (&'static str, fn(&[u8]));

/// Every input a fuzzer reported (fuzz/regressions/<target>/*) stays fixed.
#[test]
fn fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let targets: [Target; 4] = [
        ("result_passing", invariants::result_passing),
        ("conflist", invariants::conflist),
        ("cni_args", invariants::cni_args),
        ("cache", invariants::cache),
    ];
    for (name, check) in targets {
        let Ok(rd) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "md") {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            check(&data);
        }
    }
}

/// The fuzzers' seeds pass too (they are the golden results and corpus conflists).
#[test]
fn fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let targets: [Target; 4] = [
        ("result_passing", invariants::result_passing),
        ("conflist", invariants::conflist),
        ("cni_args", invariants::cni_args),
        ("cache", invariants::cache),
    ];
    let mut n = 0;
    for (name, check) in targets {
        for e in std::fs::read_dir(root.join(name)).unwrap().flatten() {
            check(&std::fs::read(e.path()).unwrap());
            n += 1;
        }
    }
    assert!(n > 30, "{n}");
}
