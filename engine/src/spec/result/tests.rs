use super::*;
use crate::spec::error::{DECODING_FAILURE, INCOMPATIBLE_VERSION};
use serde_json::json;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}
fn parse(s: &str, fallback: &str) -> CniResult {
    CniResult::from_slice(s.as_bytes(), fallback).unwrap()
}
fn parse_err(s: &str, fallback: &str) -> CniError {
    CniResult::from_slice(s.as_bytes(), fallback).unwrap_err()
}

// Printed by libcni 1.1.2's PrintTo for the same input (checked against the Go code).
const GOLDEN_040: &str = r#"{
    "cniVersion": "0.4.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "sandbox": "/var/run/netns/c1"
        },
        {
            "name": "lo"
        }
    ],
    "ips": [
        {
            "version": "4",
            "interface": 0,
            "address": "10.1.0.5/16",
            "gateway": "10.1.0.1"
        },
        {
            "version": "6",
            "interface": 1,
            "address": "2001:db8::5/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1"
        },
        {
            "dst": "::/0"
        }
    ],
    "dns": {
        "nameservers": [
            "10.1.0.1",
            "2001:db8::53"
        ],
        "domain": "example.com",
        "search": [
            "example.com",
            "svc.example.com"
        ],
        "options": [
            "ndots:5"
        ]
    }
}"#;

#[test]
fn golden_040_both_ways() {
    let input = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/c1","mtu":1500},{"name":"lo"}],
            "ips":[{"version":"4","interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"version":"6","interface":1,"address":"2001:DB8::5/64","gateway":""}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0"}],
            "dns":{"nameservers":["10.1.0.1","2001:db8::53"],"domain":"example.com","search":["example.com","svc.example.com"],"options":["ndots:5"]}}"#;
    let r = parse(input, "1.0.0");
    let want = Result040 {
        cni_version: "0.4.0".into(),
        interfaces: vec![
            // mtu is not a 0.4 field: not read
            Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:01:00:05".into(),
                sandbox: "/var/run/netns/c1".into(),
                ..Default::default()
            },
            Interface {
                name: "lo".into(),
                ..Default::default()
            },
        ],
        ips: vec![
            Ip040 {
                version: "4".into(),
                interface: Some(0),
                address: net("10.1.0.5/16"),
                gateway: ip("10.1.0.1"),
            },
            Ip040 {
                version: "6".into(),
                interface: Some(1),
                address: net("2001:db8::5/64"),
                gateway: None,
            },
        ],
        routes: vec![
            Route {
                dst: net("0.0.0.0/0"),
                gw: ip("10.1.0.1"),
                ..Default::default()
            },
            Route {
                dst: net("::/0"),
                ..Default::default()
            },
        ],
        dns: Dns {
            nameservers: vec!["10.1.0.1".into(), "2001:db8::53".into()],
            domain: "example.com".into(),
            search: vec!["example.com".into(), "svc.example.com".into()],
            options: vec!["ndots:5".into()],
        },
    };
    assert_eq!(r, CniResult::V04(want.clone()));
    assert_eq!(r.version(), "0.4.0");
    assert_eq!(r.to_json_pretty(), GOLDEN_040);
    // and the golden text reads back to the same value
    assert_eq!(parse(GOLDEN_040, "1.0.0"), CniResult::V04(want));
    // writing a 0.4 result never emits the 1.x-only interface fields
    let mut odd = match parse(GOLDEN_040, "") {
        CniResult::V04(r) => r,
        other => panic!("{other:?}"),
    };
    odd.interfaces[0].mtu = 9000;
    odd.interfaces[0].pci_id = "0000:00:01.0".into();
    assert_eq!(CniResult::V04(odd).to_json_pretty(), GOLDEN_040);
}

const GOLDEN_110: &str = r#"{
    "cniVersion": "1.1.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "mtu": 1400,
            "sandbox": "/var/run/netns/c1",
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:00:1f.6"
        },
        {
            "name": ""
        }
    ],
    "ips": [
        {
            "interface": 0,
            "address": "10.1.0.5/16",
            "gateway": "10.1.0.1"
        },
        {
            "address": "2001:db8::5/64"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1300,
            "advmss": 1260,
            "priority": 10,
            "table": 0,
            "scope": 253
        },
        {
            "dst": "::/0"
        }
    ],
    "dns": {}
}"#;

#[test]
fn golden_1x_both_ways() {
    let input = r#"{"cniVersion":"1.1.0",
            "interfaces":[{"name":"eth0","mac":"0a:58:0a:01:00:05","mtu":1400,"sandbox":"/var/run/netns/c1","socketPath":"/run/vhost.sock","pciID":"0000:00:1f.6"},{}],
            "ips":[{"interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"address":"2001:db8:0::5/64","interface":null}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1300,"advmss":1260,"priority":10,"table":0,"scope":253},{"dst":"::/0","gw":null,"mtu":0,"table":null}],
            "dns":{}}"#;
    let r = parse(input, "0.4.0");
    let want = Result100 {
        cni_version: "1.1.0".into(),
        interfaces: vec![
            Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:01:00:05".into(),
                mtu: 1400,
                sandbox: "/var/run/netns/c1".into(),
                socket_path: "/run/vhost.sock".into(),
                pci_id: "0000:00:1f.6".into(),
            },
            Interface::default(),
        ],
        ips: vec![
            IpConfig {
                interface: Some(0),
                address: net("10.1.0.5/16"),
                gateway: ip("10.1.0.1"),
            },
            IpConfig {
                interface: None,
                address: net("2001:db8::5/64"),
                gateway: None,
            },
        ],
        routes: vec![
            Route {
                dst: net("0.0.0.0/0"),
                gw: ip("10.1.0.1"),
                mtu: 1300,
                advmss: 1260,
                priority: 10,
                table: Some(0),
                scope: Some(253),
            },
            Route {
                dst: net("::/0"),
                ..Default::default()
            },
        ],
        dns: Dns::default(),
    };
    assert_eq!(r, CniResult::V1(want.clone()));
    assert_eq!(r.to_json_pretty(), GOLDEN_110);
    assert_eq!(parse(GOLDEN_110, ""), CniResult::V1(want.clone()));
    // 1.0.0 is the same layout
    let r10 = parse(&GOLDEN_110.replace("1.1.0", "1.0.0"), "");
    assert_eq!(
        r10,
        CniResult::V1(Result100 {
            cni_version: "1.0.0".into(),
            ..want
        })
    );
    assert_eq!(r10.to_json_pretty(), GOLDEN_110.replace("1.1.0", "1.0.0"));
}

const GOLDEN_020: &str = r#"{
    "cniVersion": "0.2.0",
    "ip4": {
        "ip": "10.1.0.5/16",
        "gateway": "10.1.0.1",
        "routes": [
            {
                "dst": "0.0.0.0/0",
                "gw": "10.1.0.1"
            },
            {
                "dst": "192.168.0.0/16"
            }
        ]
    },
    "ip6": {
        "ip": "2001:db8::5/64",
        "gateway": "2001:db8::1",
        "routes": [
            {
                "dst": "::/0",
                "gw": "2001:db8::1"
            }
        ]
    },
    "dns": {
        "nameservers": [
            "10.1.0.1"
        ],
        "search": [
            "example.com"
        ]
    }
}"#;

#[test]
fn golden_020_both_ways() {
    let r = parse(GOLDEN_020, "1.0.0");
    let want = Result020 {
        cni_version: "0.2.0".into(),
        ip4: Some(Ip020 {
            ip: net("10.1.0.5/16"),
            gateway: ip("10.1.0.1"),
            routes: vec![
                Route {
                    dst: net("0.0.0.0/0"),
                    gw: ip("10.1.0.1"),
                    ..Default::default()
                },
                Route {
                    dst: net("192.168.0.0/16"),
                    ..Default::default()
                },
            ],
        }),
        ip6: Some(Ip020 {
            ip: net("2001:db8::5/64"),
            gateway: ip("2001:db8::1"),
            routes: vec![Route {
                dst: net("::/0"),
                gw: ip("2001:db8::1"),
                ..Default::default()
            }],
        }),
        dns: Dns {
            nameservers: vec!["10.1.0.1".into()],
            search: vec!["example.com".into()],
            ..Default::default()
        },
    };
    assert_eq!(r, CniResult::V02(want.clone()));
    assert_eq!(r.to_json_pretty(), GOLDEN_020);
    // 0.1.0, only ip4, no dns content, routes omitted when empty
    let r = parse(
        r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.1.0.5/16","routes":[]},"ip6":null}"#,
        "",
    );
    assert_eq!(
            r.to_json_pretty(),
            "{\n    \"cniVersion\": \"0.1.0\",\n    \"ip4\": {\n        \"ip\": \"10.1.0.5/16\"\n    },\n    \"dns\": {}\n}"
        );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.1.0.5/16"},"dns":{}}"#
    );
}

#[test]
fn empty_results_always_print_dns() {
    for (v, text) in [
        ("0.1.0", r#"{"cniVersion":"0.1.0","dns":{}}"#),
        ("0.3.1", r#"{"cniVersion":"0.3.1","dns":{}}"#),
        ("1.1.0", r#"{"cniVersion":"1.1.0","dns":{}}"#),
    ] {
        assert_eq!(parse("{}", v).to_json(), text);
    }
    assert_eq!(
        parse("{}", "1.0.0").to_json_pretty(),
        "{\n    \"cniVersion\": \"1.0.0\",\n    \"dns\": {}\n}"
    );
}

#[test]
fn host_bits_and_canonical_ips() {
    let r = parse(
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16","gateway":"::FFFF:10.1.0.1"},{"address":"2001:0DB8:0000::0005/64"},{"address":"::ffff:10.9.8.7/120"}],
               "routes":[{"dst":"10.1.2.3/8","gw":"2001:DB8::1"}]}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1"},{"address":"2001:db8::5/64"},{"address":"10.9.8.7/24"}],"routes":[{"dst":"10.1.2.3/8","gw":"2001:db8::1"}],"dns":{}}"#
    );
}

#[test]
fn interface_index_kept() {
    for idx in [0i64, 3, -1, i64::MAX, i64::MIN] {
        let text = format!(r#"{{"cniVersion":"1.0.0","ips":[{{"interface":{idx},"address":"10.0.0.2/24"}}]}}"#);
        let r = parse(&text, "");
        let CniResult::V1(r1) = &r else { panic!() };
        assert_eq!(r1.ips[0].interface, Some(idx));
        assert!(r.to_json().contains(&format!(r#""interface":{idx},"#)));
        for v in version::SUPPORTED
            .iter()
            .filter(|v| !v.starts_with("0.1") && !v.starts_with("0.2"))
        {
            assert!(
                r.convert(v)
                    .unwrap()
                    .to_json()
                    .contains(&format!(r#""interface":{idx},"#)),
                "{v}"
            );
        }
    }
    // "-0" is an integer literal to Go
    let r = parse(
        r#"{"cniVersion":"0.4.0","ips":[{"version":"4","interface":-0,"address":"10.0.0.2/24"}]}"#,
        "",
    );
    assert!(r.to_json().contains(r#""interface":0,"#));
}

#[test]
fn missing_version_takes_the_fallback() {
    let r = parse(r#"{"ips":[{"address":"10.0.0.2/24"}]}"#, "1.0.0");
    assert_eq!(r.version(), "1.0.0");
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"dns":{}}"#
    );
    // empty or non-string: same (fixupResultVersion)
    assert_eq!(parse(r#"{"cniVersion":"","ips":[]}"#, "0.3.1").version(), "0.3.1");
    assert_eq!(parse(r#"{"cniVersion":5}"#, "0.4.0").version(), "0.4.0");
    assert_eq!(parse(r#"{"cniVersion":null}"#, "1.1.0").version(), "1.1.0");
    // plugin printed "null": an empty result of the fallback version
    assert_eq!(parse("null", "0.4.0").to_json(), r#"{"cniVersion":"0.4.0","dns":{}}"#);
    // an empty fallback is 0.1.0, as in libcni
    assert_eq!(parse(r#"{"ip4":{"ip":"10.0.0.2/24"}}"#, "").version(), "0.1.0");
    // a present version wins over the fallback
    assert_eq!(
        parse(r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}"#, "1.0.0").version(),
        "0.2.0"
    );
    // fallback used in a layout it does not fit: still read in the fallback's layout
    let r = CniResult::from_value(&json!({"ip4": {"ip": "10.0.0.2/24"}}), "1.0.0").unwrap();
    assert_eq!(r.to_json(), r#"{"cniVersion":"1.0.0","dns":{}}"#);
    // unknown fallback
    let e = CniResult::from_value(&json!({}), "9.9.9").unwrap_err();
    assert_eq!(
        (e.code, e.msg.as_str()),
        (INCOMPATIBLE_VERSION, "unsupported CNI result version \"9.9.9\"")
    );
}

#[test]
fn unknown_versions_are_code_1() {
    for v in ["9.9.9", "1.0", "0.4", "v1.0.0", "1.2.0"] {
        let e = parse_err(&format!(r#"{{"cniVersion":"{v}"}}"#), "1.0.0");
        assert_eq!(e.code, INCOMPATIBLE_VERSION, "{v}");
        assert_eq!(e.msg, format!("unsupported CNI result version {v:?}"));
    }
    // a case-variant key that Go's decoder also applies
    let e = parse_err(r#"{"cniVersion":"0.4.0","CNIVERSION":"1.0.0"}"#, "");
    assert_eq!(e.code, INCOMPATIBLE_VERSION);
    assert_eq!(
        e.msg,
        "result type supports [0.3.0 0.3.1 0.4.0] but unmarshalled CNIVersion is \"1.0.0\""
    );
}

#[test]
fn bad_inputs_are_code_6_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        ("", "failed to unmarshal raw result"),
        ("{", "failed to unmarshal raw result"),
        ("[]", "expected a JSON object, got array"),
        ("\"x\"", "expected a JSON object, got string"),
        ("5", "expected a JSON object, got number"),
        (
            r#"{"cniVersion":"1.0.0","ips":{}}"#,
            "ips: expected an array, got object",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":["x"]}"#,
            "ips[0]: expected an object, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[null]}"#,
            "ips[0]: expected an object, got null",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":5}]}"#,
            "ips[0].address: expected a string, got number",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1"}]}"#,
            "ips[0].address: invalid CIDR address: 10.0.0.1",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/33"}]}"#,
            "ips[0].address: invalid CIDR address: 10.0.0.1/33",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":null}]}"#,
            "ips[0].address: invalid CIDR address: ",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"gateway":"10.0.0.1"}]}"#,
            "ips[0].address: missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","gateway":"x"}]}"#,
            "ips[0].gateway: invalid IP address: x",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","gateway":7}]}"#,
            "ips[0].gateway: expected a string, got number",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":"0"}]}"#,
            "ips[0].interface: expected an integer, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":1.5}]}"#,
            "ips[0].interface: expected a 64-bit integer, got 1.5",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":9223372036854775808}]}"#,
            "ips[0].interface: expected a 64-bit integer",
        ),
        (
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/8","interface":1e400}]}"#,
            "failed to unmarshal raw result",
        ),
        (
            r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","mtu":"1500"}]}"#,
            "routes[0].mtu: expected an integer, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","table":true}]}"#,
            "routes[0].table: expected an integer, got bool",
        ),
        (
            r#"{"cniVersion":"1.0.0","routes":[{"gw":"10.0.0.1"}]}"#,
            "routes[0].dst: missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","routes":[{"dst":"::/0","gw":"::/0"}]}"#,
            "routes[0].gw: invalid IP address: ::/0",
        ),
        (
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":1}]}"#,
            "interfaces[0].name: expected a string, got number",
        ),
        (
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mtu":"x"}]}"#,
            "interfaces[0].mtu: expected an integer, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","interfaces":[null]}"#,
            "interfaces[0]: expected an object, got null",
        ),
        (
            r#"{"cniVersion":"1.0.0","interfaces":"eth0"}"#,
            "interfaces: expected an array, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","dns":[]}"#,
            "dns: expected an object, got array",
        ),
        (
            r#"{"cniVersion":"1.0.0","dns":{"nameservers":"1.1.1.1"}}"#,
            "dns.nameservers: expected an array, got string",
        ),
        (
            r#"{"cniVersion":"1.0.0","dns":{"search":[1]}}"#,
            "dns.search[0]: expected a string, got number",
        ),
        (
            r#"{"cniVersion":"1.0.0","dns":{"domain":{}}}"#,
            "dns.domain: expected a string, got object",
        ),
        (
            r#"{"cniVersion":"0.4.0","ips":[{"version":4,"address":"10.0.0.2/8"}]}"#,
            "ips[0].version: expected a string, got number",
        ),
        (
            r#"{"cniVersion":"0.2.0","ip4":[]}"#,
            "ip4: expected an object, got array",
        ),
        (
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2"}}"#,
            "ip4.ip: invalid CIDR address: 10.0.0.2",
        ),
        (r#"{"cniVersion":"0.2.0","ip6":{"gateway":"::1"}}"#, "ip6.ip: missing"),
        (
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/8","routes":"x"}}"#,
            "ip4.routes: expected an array, got string",
        ),
        (
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/8","routes":[{"dst":"x"}]}}"#,
            "ip4.routes[0].dst: invalid CIDR address: x",
        ),
    ];
    for (input, needle) in cases {
        let e = parse_err(input, "1.0.0");
        assert_eq!(e.code, DECODING_FAILURE, "{input}: {e:?}");
        assert!(
            e.msg.contains(needle),
            "{input}: {:?} does not contain {needle:?}",
            e.msg
        );
    }
}

#[test]
fn go_decoder_quirks() {
    // unknown keys ignored, keys case-insensitive (incl. Go's long-s folding), null
    // leaves scalars alone and empties lists
    let r = parse(
        r#"{"cniVersion":"1.0.0","extra":{"x":[1]},"IPS":[{"ADDRESS":"10.0.0.2/8","Gateway":null,"foo":1}],
                "ipſ":[{"address":"10.0.0.3/8"}],"Routes":null,"dns":{"Domain":"a","search":["x",null],"domain":null}}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/8"}],"dns":{"domain":"a","search":["x",""]}}"#
    );
    // a repeated dns object merges, as Go decodes into the same struct
    let r = parse(
        r#"{"cniVersion":"1.0.0","dns":{"domain":"a"},"DNS":{"search":["b"]}}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","dns":{"domain":"a","search":["b"]}}"#
    );
    // interfaces merge element-wise on a repeated key; ips/routes are replaced
    let r = parse(
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mac":"m"},{"name":"c"}],"Interfaces":[{"sandbox":"s"}]}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mac":"m","sandbox":"s"}],"dns":{}}"#
    );
    // a missing address only matters if it survives a later duplicate key
    let r = parse(
        r#"{"cniVersion":"1.0.0","ips":[{}],"IPs":[{"address":"10.0.0.1/8"}]}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/8"}],"dns":{}}"#
    );
    // when the fallback is used libcni re-marshals a map: keys sorted, "IP4" < "ip4"
    let r = parse(r#"{"ip4":{"ip":"10.0.0.1/8"},"IP4":{"gateway":"10.0.0.9"}}"#, "0.2.0");
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.1/8"},"dns":{}}"#
    );
}

#[test]
fn go_string_escaping() {
    let r = parse(
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"<a&b>\u2028\u2029\b\f\u0001\u007f\n\t\"\\/é😀"}]}"#,
        "",
    );
    assert_eq!(
        r.to_json(),
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"\u003ca\u0026b\u003e\u2028\u2029\u0008\u000c\u0001"#
            .to_string()
            + "\u{7f}"
            + r#"\n\t\"\\/é😀"}],"dns":{}}"#
    );
}

#[test]
fn v1_helpers() {
    let r = parse(GOLDEN_040, "");
    let v1 = r.to_v1().unwrap();
    assert_eq!(v1.cni_version, "1.1.0");
    assert_eq!(v1.ips[1].interface, Some(1));
    assert_eq!(v1.interfaces.len(), 2);
    let back = CniResult::from_v1(v1.clone(), "0.4.0").unwrap();
    assert_eq!(back, r);
    assert_eq!(
        CniResult::from_v1(v1.clone(), "1.1.0").unwrap(),
        CniResult::V1(v1.clone())
    );
    // a hand-built struct without a version is taken as 1.1.0
    let bare = Result100 {
        cni_version: String::new(),
        ..v1.clone()
    };
    assert_eq!(
        CniResult::from_v1(bare.clone(), "1.1.0").unwrap(),
        CniResult::V1(v1.clone())
    );
    assert_eq!(CniResult::V1(bare).version(), "1.1.0");
    let e = CniResult::from_v1(v1, "2.0.0").unwrap_err();
    assert_eq!(e.code, INCOMPATIBLE_VERSION);
    let e = CniResult::from_v1(Result100::default(), "0.2.0").unwrap_err();
    assert_eq!(e.msg, "cannot convert: no valid IP addresses");
    assert_eq!(CniResult::default().version(), version::CURRENT);
    // Serialize matches to_value
    assert_eq!(serde_json::to_value(&r).unwrap(), r.to_value());
}

/// Deterministic mutations of valid results: never a panic, and whatever parses
/// converts or fails cleanly.
#[test]
fn no_panics_on_mangled_input() {
    let seeds = [GOLDEN_020, GOLDEN_040, GOLDEN_110];
    let atoms = [
        json!(null),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("x"),
        json!("10.0.0.1"),
        json!("::ffff:1.2.3.4/100"),
        json!(true),
        json!([]),
        json!({}),
        json!([null]),
        json!(["a"]),
        json!([{"dst": "1.0.0.0/8"}]),
        json!(u64::MAX),
        json!(i64::MIN),
    ];
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    fn mutate(v: &mut Value, next: &mut dyn FnMut(usize) -> usize, atoms: &[Value]) {
        match v {
            Value::Object(m) => {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    match next(8) {
                        0 => {
                            m.remove(&k);
                        }
                        1 => {
                            m.insert(k, atoms[next(atoms.len())].clone());
                        }
                        2 => {
                            if let Some(x) = m.remove(&k) {
                                m.insert(k.to_uppercase(), x);
                            }
                        }
                        _ => {
                            if let Some(x) = m.get_mut(&k) {
                                mutate(x, next, atoms);
                            }
                        }
                    }
                }
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    if next(3) == 0 {
                        mutate(x, next, atoms);
                    }
                }
            }
            _ => {
                if next(4) == 0 {
                    *v = atoms[next(atoms.len())].clone();
                }
            }
        }
    }
    let mut parsed = 0;
    for round in 0..3000 {
        let mut v: Value = serde_json::from_str(seeds[round % seeds.len()]).unwrap();
        mutate(&mut v, &mut next, &atoms);
        let fallback = version::SUPPORTED[next(version::SUPPORTED.len())];
        if let Ok(r) = CniResult::from_value(&v, fallback) {
            parsed += 1;
            let _ = r.to_json_pretty();
            for to in version::SUPPORTED {
                if let Ok(c) = r.convert(to) {
                    // what we print, we read back to the same value
                    assert_eq!(CniResult::from_slice(c.to_json().as_bytes(), "").unwrap(), c);
                }
            }
        }
    }
    assert!(parsed > 100, "{parsed}");
}
