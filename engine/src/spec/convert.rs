//! Result conversion between every pair of supported versions, following libcni's
//! registered converters (pkg/types/{020,040,100}).
//!
//! * same version: the value itself
//! * 0.1 <-> 0.2: copy
//! * 0.1/0.2 -> 0.3/0.4: `ips` from ip4 ("4") then ip6 ("6"), no interface index; routes
//!   from ip4.routes then ip6.routes; no interfaces. To 1.x: through 0.4.0.
//! * 0.3/0.4 <-> 0.3/0.4: copy
//! * 0.3/0.4 -> 1.x: drop `version`, keep the interface index; interfaces keep name,
//!   mac, sandbox.
//! * 1.x -> 0.3/0.4: `version` from the address family; the 1.1 interface fields are
//!   dropped; routes (one shared type) keep every field.
//! * 0.3/0.4 -> 0.1/0.2: the first `ips` entry whose `version` is "4" becomes ip4, the
//!   first "6" ip6; each route goes to the ip4 or ip6 object of its destination's family,
//!   if that object exists, with only dst and gw; no IP at all is an error. 1.x goes
//!   through 0.4.0 first.
//! * 1.0 <-> 1.1: copy.

use super::error::CniError;
use super::result::{
    implemented_version, CniResult, Interface, Ip020, Ip040, IpConfig, Result020, Result040, Result100, Route,
    VERSIONS_020, VERSIONS_040, VERSIONS_100,
};
use super::version::{self, Family};

/// `from` as version `to`; see the module docs. "" means 0.1.0 (libcni's `Convert`).
pub fn convert(from: &CniResult, to: &str) -> Result<CniResult, CniError> {
    let to = if to.is_empty() { "0.1.0" } else { to };
    let from_ver = from.version().to_string();
    if from_ver == to {
        // libcni's GetAsVersion first stamps an unset version, then returns the value.
        let mut same = from.clone();
        set_version(&mut same, to);
        return Ok(same);
    }
    let layout_ok = match from.family() {
        Family::V02 => VERSIONS_020.contains(&from_ver.as_str()),
        Family::V04 => VERSIONS_040.contains(&from_ver.as_str()),
        Family::V1 => VERSIONS_100.contains(&from_ver.as_str()),
    };
    if !layout_ok || !version::is_supported(to) {
        return Err(CniError::version(format!(
            "no converter for CNI result version {from_ver} to {to}"
        )));
    }
    let to_family = version::family(to)?;
    Ok(match (from, to_family) {
        (CniResult::V02(r), Family::V02) => CniResult::V02(copy_020(r, to)),
        (CniResult::V02(r), Family::V04) => CniResult::V04(from_02x(r, to)),
        (CniResult::V02(r), Family::V1) => CniResult::V1(from_04x(&from_02x(r, "0.4.0"), to)),
        (CniResult::V04(r), Family::V02) => CniResult::V02(to_02x(r, to)?),
        (CniResult::V04(r), Family::V04) => CniResult::V04(copy_040(r, to)),
        (CniResult::V04(r), Family::V1) => CniResult::V1(from_04x(r, to)),
        (CniResult::V1(r), Family::V02) => CniResult::V02(to_02x(&to_04x(r, "0.4.0"), to)?),
        (CniResult::V1(r), Family::V04) => CniResult::V04(to_04x(r, to)),
        (CniResult::V1(r), Family::V1) => CniResult::V1(copy_100(r, to)),
    })
}

fn set_version(r: &mut CniResult, v: &str) {
    match r {
        CniResult::V02(r) => r.cni_version = v.to_string(),
        CniResult::V04(r) => r.cni_version = v.to_string(),
        CniResult::V1(r) => r.cni_version = v.to_string(),
    }
}

fn copy_020(r: &Result020, to: &str) -> Result020 {
    Result020 {
        cni_version: to.to_string(),
        ..r.clone()
    }
}

fn copy_040(r: &Result040, to: &str) -> Result040 {
    Result040 {
        cni_version: to.to_string(),
        ..r.clone()
    }
}

fn copy_100(r: &Result100, to: &str) -> Result100 {
    Result100 {
        cni_version: to.to_string(),
        ..r.clone()
    }
}

/// types040.convertFrom02x
fn from_02x(r: &Result020, to: &str) -> Result040 {
    let mut out = Result040 {
        cni_version: to.to_string(),
        dns: r.dns.clone(),
        ..Default::default()
    };
    for (ip, ver) in [(&r.ip4, "4"), (&r.ip6, "6")] {
        if let Some(ip) = ip {
            out.ips.push(Ip040 {
                version: ver.to_string(),
                interface: None,
                address: ip.ip,
                gateway: ip.gateway,
            });
            out.routes.extend(ip.routes.iter().cloned());
        }
    }
    out
}

fn interface_040(i: &Interface) -> Interface {
    Interface {
        name: i.name.clone(),
        mac: i.mac.clone(),
        sandbox: i.sandbox.clone(),
        ..Default::default()
    }
}

/// types100.convertFrom04x
fn from_04x(r: &Result040, to: &str) -> Result100 {
    Result100 {
        cni_version: to.to_string(),
        interfaces: r.interfaces.iter().map(interface_040).collect(),
        ips: r
            .ips
            .iter()
            .map(|ip| IpConfig {
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect(),
        routes: r.routes.clone(),
        dns: r.dns.clone(),
    }
}

/// types100.convertTo04x
fn to_04x(r: &Result100, to: &str) -> Result040 {
    Result040 {
        cni_version: to.to_string(),
        interfaces: r.interfaces.iter().map(interface_040).collect(),
        ips: r
            .ips
            .iter()
            .map(|ip| Ip040 {
                version: if ip.address.is_ipv4() { "4" } else { "6" }.to_string(),
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect(),
        routes: r.routes.clone(),
        dns: r.dns.clone(),
    }
}

/// types040.convertTo02x
fn to_02x(r: &Result040, to: &str) -> Result<Result020, CniError> {
    let mut out = Result020 {
        cni_version: to.to_string(),
        dns: r.dns.clone(),
        ..Default::default()
    };
    for ip in &r.ips {
        let slot = match ip.version.as_str() {
            "4" => &mut out.ip4,
            "6" => &mut out.ip6,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(Ip020 {
                ip: ip.address,
                gateway: ip.gateway,
                routes: Vec::new(),
            });
        }
        if out.ip4.is_some() && out.ip6.is_some() {
            break;
        }
    }
    for rt in &r.routes {
        let slot = if rt.dst.is_ipv4() { &mut out.ip4 } else { &mut out.ip6 };
        if let Some(ip) = slot {
            ip.routes.push(Route {
                dst: rt.dst,
                gw: rt.gw,
                ..Default::default()
            });
        }
    }
    if out.ip4.is_none() && out.ip6.is_none() {
        return Err(CniError::version("cannot convert: no valid IP addresses"));
    }
    Ok(out)
}

/// The version a layout's Go type would assume for an unset version; re-exported for
/// callers that build results by hand.
pub fn default_version(f: Family) -> &'static str {
    implemented_version(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::INCOMPATIBLE_VERSION;
    use crate::spec::version::SUPPORTED;

    const DNS: &str = r#""dns":{"nameservers":["10.1.0.1"],"search":["example.com"]}"#;
    const ROUTES: &str =
        r#""routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0","gw":"2001:db8::1"},{"dst":"192.168.0.0/16"}]"#;
    /// routes after a trip through 0.2: ip4's first, then ip6's
    const ROUTES_02: &str =
        r#""routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"192.168.0.0/16"},{"dst":"::/0","gw":"2001:db8::1"}]"#;

    /// The dual-stack sample as written in the layout of `v`.
    fn sample(v: &str) -> String {
        match version::family(v).unwrap() {
            Family::V1 => s1(v, true),
            Family::V04 => s04(v),
            Family::V02 => s02(v),
        }
    }

    fn s1(v: &str, with_mtu: bool) -> String {
        let mtu = if with_mtu { r#""mtu":1400,"# } else { "" };
        format!(
            r#"{{"cniVersion":"{v}","interfaces":[{{"name":"eth0","mac":"0a:58:0a:01:00:05",{mtu}"sandbox":"/var/run/netns/c1"}}],"ips":[{{"interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"}},{{"interface":0,"address":"2001:db8::5/64","gateway":"2001:db8::1"}},{{"address":"10.1.0.6/16"}}],{ROUTES},{DNS}}}"#
        )
    }

    fn s04(v: &str) -> String {
        format!(
            r#"{{"cniVersion":"{v}","interfaces":[{{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/c1"}}],"ips":[{{"version":"4","interface":0,"address":"10.1.0.5/16","gateway":"10.1.0.1"}},{{"version":"6","interface":0,"address":"2001:db8::5/64","gateway":"2001:db8::1"}},{{"version":"4","address":"10.1.0.6/16"}}],{ROUTES},{DNS}}}"#
        )
    }

    fn s02(v: &str) -> String {
        format!(
            r#"{{"cniVersion":"{v}","ip4":{{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{{"dst":"0.0.0.0/0","gw":"10.1.0.1"}},{{"dst":"192.168.0.0/16"}}]}},"ip6":{{"ip":"2001:db8::5/64","gateway":"2001:db8::1","routes":[{{"dst":"::/0","gw":"2001:db8::1"}}]}},{DNS}}}"#
        )
    }

    /// A 0.2 sample raised to the 1.x (`with_version` false) or 0.4 layout.
    fn up_from_02(v: &str, with_version: bool) -> String {
        let (v4, v6) = if with_version {
            (r#""version":"4","#, r#""version":"6","#)
        } else {
            ("", "")
        };
        format!(
            r#"{{"cniVersion":"{v}","ips":[{{{v4}"address":"10.1.0.5/16","gateway":"10.1.0.1"}},{{{v6}"address":"2001:db8::5/64","gateway":"2001:db8::1"}}],{ROUTES_02},{DNS}}}"#
        )
    }

    fn expected(from: &str, to: &str) -> String {
        let ff = version::family(from).unwrap();
        match (ff, version::family(to).unwrap()) {
            (Family::V1, Family::V1) => s1(to, true),
            (Family::V04, Family::V1) => s1(to, false),
            (Family::V02, Family::V1) => up_from_02(to, false),
            (Family::V02, Family::V04) => up_from_02(to, true),
            (_, Family::V04) => s04(to),
            (_, Family::V02) => s02(to),
        }
    }

    fn parse(s: &str) -> CniResult {
        CniResult::from_slice(s.as_bytes(), "").unwrap()
    }

    #[test]
    fn every_ordered_pair() {
        let mut checked = 0;
        for from in SUPPORTED {
            let src_text = sample(from);
            let src = parse(&src_text);
            assert_eq!(src.to_json(), src_text, "sample {from} prints as written");
            for to in SUPPORTED {
                let got = src.convert(to).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(got.version(), *to);
                assert_eq!(got.to_json(), expected(from, to), "{from} -> {to}");
                checked += 1;
            }
        }
        assert_eq!(checked, 49);
    }

    #[test]
    fn same_version_is_identity() {
        for v in SUPPORTED {
            let r = parse(&sample(v));
            assert_eq!(r.convert(v).unwrap(), r);
        }
        // even what another version would drop or rewrite
        let odd = parse(
            r#"{"cniVersion":"0.3.1","ips":[{"version":"x","address":"10.0.0.1/8"}],"routes":[{"dst":"10.0.0.0/8","mtu":9}]}"#,
        );
        assert_eq!(odd.convert("0.3.1").unwrap(), odd);
        let full = parse(r#"{"cniVersion":"1.1.0","interfaces":[{"name":"a","mtu":1,"socketPath":"/s","pciID":"p"}]}"#);
        assert_eq!(full.convert("1.1.0").unwrap(), full);
        // an unset version is stamped with the layout's own version first
        let bare = CniResult::V04(Result040::default());
        assert_eq!(
            bare.convert("0.4.0").unwrap().to_json(),
            r#"{"cniVersion":"0.4.0","dns":{}}"#
        );
    }

    #[test]
    fn one_dot_zero_and_one_dot_one_keep_everything() {
        let text = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a","mac":"m","mtu":1,"sandbox":"s","socketPath":"/s","pciID":"p"}],"ips":[{"interface":7,"address":"10.0.0.1/8"}],"routes":[{"dst":"10.0.0.0/8","mtu":9,"advmss":8,"priority":7,"table":6,"scope":5}],"dns":{"domain":"d"}}"#;
        let r = parse(text);
        let up = r.convert("1.1.0").unwrap();
        assert_eq!(up.to_json(), text.replace("1.0.0", "1.1.0"));
        assert_eq!(up.convert("1.0.0").unwrap(), r);
    }

    #[test]
    fn route_fields_of_1_1_survive_into_0_4_json() {
        let text = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":9000,"socketPath":"/s","pciID":"p"}],"ips":[{"interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"10.9.0.0/16","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":5,"table":100,"scope":0}]}"#;
        let r = parse(text);
        let r04 = r.convert("0.4.0").unwrap();
        assert_eq!(
            r04.to_json(),
            r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"10.9.0.0/16","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":5,"table":100,"scope":0}],"dns":{}}"#
        );
        // and they are read back from 0.4 JSON and carried up again; the interface
        // fields are gone
        let again = parse(&r04.to_json()).convert("1.1.0").unwrap();
        assert_eq!(
            again.to_json(),
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"10.9.0.0/16","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":5,"table":100,"scope":0}],"dns":{}}"#
        );
        // 0.2 keeps only dst and gw
        assert_eq!(
            r.convert("0.2.0").unwrap().to_json(),
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","routes":[{"dst":"10.9.0.0/16","gw":"10.0.0.1"}]},"dns":{}}"#
        );
        // ...but a 0.2 result read with them keeps them, and up-conversion copies them
        let r02 =
            parse(r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","routes":[{"dst":"10.9.0.0/16","mtu":1400}]}}"#);
        assert!(r02.to_json().contains(r#"{"dst":"10.9.0.0/16","mtu":1400}"#));
        assert!(r02.convert("0.1.0").unwrap().to_json().contains(r#""mtu":1400"#));
        assert!(r02
            .convert("1.1.0")
            .unwrap()
            .to_json()
            .contains(r#""routes":[{"dst":"10.9.0.0/16","mtu":1400}]"#));
    }

    #[test]
    fn down_to_0_2_needs_an_ip() {
        for from in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let r = parse(&format!(
                r#"{{"cniVersion":"{from}","interfaces":[{{"name":"eth0"}}],"routes":[{{"dst":"0.0.0.0/0"}}],"dns":{{"domain":"d"}}}}"#
            ));
            for to in ["0.1.0", "0.2.0", ""] {
                let e = r.convert(to).unwrap_err();
                assert_eq!(e.code, INCOMPATIBLE_VERSION);
                assert_eq!(e.msg, "cannot convert: no valid IP addresses");
            }
        }
        // a 0.4 entry whose version is neither "4" nor "6" does not count
        let r = parse(r#"{"cniVersion":"0.4.0","ips":[{"version":"","address":"10.0.0.1/8"}]}"#);
        assert_eq!(
            r.convert("0.2.0").unwrap_err().msg,
            "cannot convert: no valid IP addresses"
        );
    }

    #[test]
    fn down_to_0_2_picks_first_of_each_family() {
        // 1.x: the family comes from the address (a mapped address is IPv4); routes go to
        // the object of their family, and are dropped if it does not exist
        let r = parse(
            r#"{"cniVersion":"1.1.0","ips":[{"address":"2001:db8::5/64"},{"address":"::ffff:10.0.0.5/120","gateway":"10.0.0.1"},{"address":"10.0.0.6/24"},{"address":"2001:db8::6/64"}],
               "routes":[{"dst":"::/0","gw":"2001:db8::1"},{"dst":"0.0.0.0/0"}]}"#,
        );
        assert_eq!(
            r.convert("0.2.0").unwrap().to_json(),
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.5/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]},"ip6":{"ip":"2001:db8::5/64","routes":[{"dst":"::/0","gw":"2001:db8::1"}]},"dns":{}}"#
        );
        let r = parse(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.6/24"}],"routes":[{"dst":"::/0"},{"dst":"10.1.0.0/16"}]}"#,
        );
        assert_eq!(
            r.convert("0.1.0").unwrap().to_json(),
            r#"{"cniVersion":"0.1.0","ip4":{"ip":"10.0.0.6/24","routes":[{"dst":"10.1.0.0/16"}]},"dns":{}}"#
        );
        // 0.3/0.4: libcni trusts the "version" field, not the address
        let r = parse(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.0.0.1/8"},{"version":"4","address":"2001:db8::1/64"}]}"#,
        );
        assert_eq!(
            r.convert("0.2.0").unwrap().to_json(),
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"2001:db8::1/64"},"ip6":{"ip":"10.0.0.1/8"},"dns":{}}"#
        );
    }

    #[test]
    fn unknown_target_versions() {
        let r = parse(&sample("1.0.0"));
        for to in ["9.9.9", "1.0", "0.4", "2.0.0", "x"] {
            let e = r.convert(to).unwrap_err();
            assert_eq!(e.code, INCOMPATIBLE_VERSION, "{to}");
            assert_eq!(e.msg, format!("no converter for CNI result version 1.0.0 to {to}"));
        }
        // "" is 0.1.0, as in libcni
        assert_eq!(r.convert("").unwrap().version(), "0.1.0");
        // a hand-built result whose version does not match its layout
        let bad = CniResult::V04(Result040 {
            cni_version: "1.0.0".into(),
            ..Default::default()
        });
        assert_eq!(bad.convert("0.4.0").unwrap_err().code, INCOMPATIBLE_VERSION);
        assert!(bad.convert("1.0.0").is_ok(), "same version is returned as is");
    }

    /// Up then down gives back exactly what the lower version had.
    #[test]
    fn up_then_down_keeps_what_the_lower_version_can_hold() {
        for (i, low) in SUPPORTED.iter().enumerate() {
            let orig = parse(&sample(low));
            for high in &SUPPORTED[i + 1..] {
                let back = orig.convert(high).unwrap().convert(low).unwrap();
                assert_eq!(back, orig, "{low} -> {high} -> {low}");
            }
        }
    }

    /// Down then up: every address, gateway and route the lower version held is still there.
    #[test]
    fn down_then_up_keeps_what_the_lower_version_held() {
        fn facts(r: &CniResult) -> (Vec<String>, Vec<String>) {
            let v1 = r.to_v1().unwrap();
            let addrs = v1
                .ips
                .iter()
                .map(|i| format!("{}|{:?}", i.address, i.gateway))
                .collect();
            let routes = v1.routes.iter().map(|r| format!("{}|{:?}", r.dst, r.gw)).collect();
            (addrs, routes)
        }
        for (i, low) in SUPPORTED.iter().enumerate() {
            for high in &SUPPORTED[i + 1..] {
                let top = parse(&sample(high));
                let down = top.convert(low).unwrap();
                let up = down.convert(high).unwrap();
                let (a_down, r_down) = facts(&down);
                let (a_up, r_up) = facts(&up);
                assert!(!a_down.is_empty());
                for a in &a_down {
                    assert!(a_up.contains(a), "{high} -> {low} -> {high}: lost {a}");
                }
                for r in &r_down {
                    assert!(r_up.contains(r), "{high} -> {low} -> {high}: lost route {r}");
                }
                // and converting down again is stable
                assert_eq!(up.convert(low).unwrap(), down);
            }
        }
    }

    #[test]
    fn default_versions() {
        assert_eq!(default_version(Family::V02), "0.2.0");
        assert_eq!(default_version(Family::V04), "0.4.0");
        assert_eq!(default_version(Family::V1), "1.1.0");
    }
}
