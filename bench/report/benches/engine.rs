//! The engine's own work per ADD, without a kernel: conflist loading, request derivation
//! (libcni buildOneConfig) and result conversion. scripts/bench reads criterion's
//! estimates from target/criterion and puts them in the report.

use cnichain_engine::load;
use cnichain_engine::request;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::spec::conflist::NetConfList;
use cnichain_engine::spec::result::CniResult;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;

const CHAIN4: &str = r#"{ "cniVersion": "1.0.0", "name": "bench", "plugins": [
  { "type": "bridge", "bridge": "cnb0", "isGateway": true, "hairpinMode": true,
    "ipam": { "type": "host-local", "dataDir": "/tmp/ipam",
              "ranges": [[{ "subnet": "10.240.0.0/16", "gateway": "10.240.0.1" }]],
              "routes": [{ "dst": "0.0.0.0/0" }] } },
  { "type": "tuning", "sysctl": { "net.core.somaxconn": "512" } },
  { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
  { "type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000 } ] }"#;

/// A 1.0.0 result as the bridge plugin returns it.
fn result_json() -> String {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            { "name": "cnb0", "mac": "a2:6f:12:34:56:78" },
            { "name": "veth1a2b3c4d", "mac": "de:ad:be:ef:00:01" },
            { "name": "eth0", "mac": "0a:58:0a:f0:00:05", "sandbox": "/run/netns/pod" }
        ],
        "ips": [ { "interface": 2, "address": "10.240.0.5/16", "gateway": "10.240.0.1" } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": {}
    })
    .to_string()
}

fn benches(c: &mut Criterion) {
    c.bench_function("conflist_parse", |b| {
        b.iter(|| NetConfList::from_bytes(black_box(CHAIN4.as_bytes())).unwrap())
    });

    let dir = std::env::temp_dir().join(format!("cnichain-bench-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..20 {
        // A conf dir as on a node: the wanted network among others.
        std::fs::write(
            dir.join(format!("{i:02}-other.conflist")),
            CHAIN4.replace("\"bench\"", &format!("\"other{i}\"")),
        )
        .unwrap();
    }
    std::fs::write(dir.join("99-bench.conflist"), CHAIN4).unwrap();
    c.bench_function("conflist_load_by_name_21_files", |b| {
        b.iter(|| load::load(black_box("bench"), &dir).unwrap())
    });

    let list = NetConfList::from_bytes(CHAIN4.as_bytes()).unwrap();
    let prev = CniResult::from_slice(result_json().as_bytes(), "1.0.0").unwrap();
    let rt = RuntimeConf {
        container_id: "cnitool-0123456789abcdef0123".into(),
        netns: "/run/netns/pod".into(),
        ifname: "eth0".into(),
        args: vec![],
        capability_args: serde_json::from_str(
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#,
        )
        .unwrap(),
    };
    c.bench_function("request_derive_chain4", |b| {
        b.iter(|| {
            for (i, p) in list.plugins.iter().enumerate() {
                black_box(request::build(&list, p, if i == 0 { None } else { Some(&prev) }, &rt));
            }
        })
    });

    let raw = result_json();
    c.bench_function("result_parse_1.0.0", |b| {
        b.iter(|| CniResult::from_slice(black_box(raw.as_bytes()), "1.0.0").unwrap())
    });
    c.bench_function("result_convert_1.0.0_to_0.4.0_json", |b| {
        b.iter(|| black_box(&prev).convert("0.4.0").unwrap().to_json())
    });
    c.bench_function("result_convert_1.0.0_to_0.3.1_json", |b| {
        b.iter(|| black_box(&prev).convert("0.3.1").unwrap().to_json())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(engine, benches);
criterion_main!(engine);
