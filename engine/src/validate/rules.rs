//! The plugins' value rules across keys, as their parsers apply them: options that
//! exclude each other, bandwidth's rate/burst pairs, tuning's sysctl names, host-local's
//! ranges and static's addresses (which also feed the cross-network overlap check).

use super::diag::Code;
use super::{Cx, SrcId};
use crate::spec::ipnet::{parse_ip, IpNet};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::str::FromStr;

/// A subnet an IPAM section hands out from, for the cross-network overlap check.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub net: IpNet,
    pub src: SrcId,
    pub ptr: String,
}

pub(super) fn get<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

fn truthy(m: &Map<String, Value>, key: &str) -> bool {
    matches!(get(m, key), Some(Value::Bool(true)))
}

fn key_ptr(ptr: &str, m: &Map<String, Value>, key: &str) -> String {
    let actual = if m.contains_key(key) {
        key.to_string()
    } else {
        m.keys()
            .find(|k| k.eq_ignore_ascii_case(key))
            .cloned()
            .unwrap_or_else(|| key.to_string())
    };
    super::pos::push_token(ptr, &actual)
}

/// Options that exclude each other and other value rules of the plugins' parsers.
pub(super) fn check_values(
    cx: &mut Cx,
    src: SrcId,
    ptr: &str,
    m: &Map<String, Value>,
    ptype: &str,
    ipam_type: Option<&str>,
) {
    match ptype {
        "bridge" => {
            if truthy(m, "hairpinMode") && truthy(m, "promiscMode") {
                let p = key_ptr(ptr, m, "promiscMode");
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::BadValue,
                    &p,
                    format!("{path}: cannot be set together with hairpinMode"),
                );
            }
            // vlan with vlanTrunk (the native VLAN of a trunk port) is allowed since 1.8
            if let Some(Value::Array(trunks)) = get(m, "vlanTrunk") {
                for (i, t) in trunks.iter().enumerate() {
                    let Value::Object(t) = t else { continue };
                    let tp = format!("{}/{i}", key_ptr(ptr, m, "vlanTrunk"));
                    let min = get(t, "minID").and_then(Value::as_i64);
                    let max = get(t, "maxID").and_then(Value::as_i64);
                    match (min, max) {
                        (Some(a), Some(b)) if a > b => {
                            let path = cx.path(src, &tp);
                            cx.at(
                                src,
                                Code::BadValue,
                                &tp,
                                format!("{path}: minID {a} is greater than maxID {b}"),
                            );
                        }
                        (Some(_), None) | (None, Some(_)) => {
                            let path = cx.path(src, &tp);
                            cx.at(
                                src,
                                Code::BadValue,
                                &tp,
                                format!("{path}: minID and maxID must be set together"),
                            );
                        }
                        _ => {}
                    }
                }
            }
            if truthy(m, "disableContainerInterface") && ipam_type.is_some_and(|t| !t.is_empty()) {
                let p = key_ptr(ptr, m, "disableContainerInterface");
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::BadValue,
                    &p,
                    format!("{path}: cannot be used with an ipam section"),
                );
            }
        }
        "ptp" if ipam_type.is_none_or(str::is_empty) => {
            let p = if m.contains_key("ipam") {
                format!("{ptr}/ipam")
            } else {
                format!("{ptr}/type")
            };
            let path = cx.path(src, ptr);
            cx.at(
                src,
                Code::IpamRequired,
                &p,
                format!("{path}: ptp needs an ipam section with a type"),
            );
            cx.hint("add \"ipam\": {\"type\": \"host-local\", ...}: ptp configures the addresses its IPAM returns");
        }
        "portmap" if get(m, "markMasqBit").is_some() && get(m, "externalSetMarkChain").is_some() => {
            let p = key_ptr(ptr, m, "externalSetMarkChain");
            let path = cx.path(src, &p);
            cx.at(
                src,
                Code::BadValue,
                &p,
                format!("{path}: cannot be set together with markMasqBit"),
            );
        }
        "bandwidth" => {
            check_bandwidth(cx, src, ptr, m);
            if let Some(Value::Object(rc)) = get(m, "runtimeConfig") {
                if let Some(Value::Object(bw)) = get(rc, "bandwidth") {
                    let bp = key_ptr(&key_ptr(ptr, m, "runtimeConfig"), rc, "bandwidth");
                    check_bandwidth(cx, src, &bp, bw);
                }
            }
        }
        "tuning" => {
            check_sysctls(cx, src, &key_ptr(ptr, m, "sysctl"), get(m, "sysctl"));
            if let Some(Value::Object(args)) = get(m, "args") {
                if let Some(Value::Object(a)) = get(args, "cni") {
                    let ap = key_ptr(&key_ptr(ptr, m, "args"), args, "cni");
                    check_sysctls(cx, src, &key_ptr(&ap, a, "sysctl"), get(a, "sysctl"));
                }
            }
        }
        _ => {}
    }
}

fn check_bandwidth(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) {
    for (rate, burst) in [("ingressRate", "ingressBurst"), ("egressRate", "egressBurst")] {
        // a value of the wrong type counts as set: it is reported on its own
        let set = |k: &str| get(m, k).is_some_and(|v| v.as_u64() != Some(0));
        let (r, b) = (set(rate), set(burst));
        if r && !b {
            let p = key_ptr(ptr, m, rate);
            let path = cx.path(src, &p);
            cx.at(src, Code::BadValue, &p, format!("{path}: a rate needs {burst} too"));
        } else if !r && b {
            let p = key_ptr(ptr, m, burst);
            let path = cx.path(src, &p);
            cx.at(src, Code::BadValue, &p, format!("{path}: a burst needs {rate} too"));
        }
        if get(m, burst).and_then(Value::as_u64).unwrap_or(0) / 8 >= u64::from(u32::MAX) {
            let p = key_ptr(ptr, m, burst);
            let path = cx.path(src, &p);
            cx.at(
                src,
                Code::BadValue,
                &p,
                format!("{path}: burst cannot be more than 4GB"),
            );
        }
    }
    let nonempty = |k: &str| matches!(get(m, k), Some(Value::Array(a)) if !a.is_empty());
    if nonempty("unshapedSubnets") && nonempty("shapedSubnets") {
        let p = key_ptr(ptr, m, "shapedSubnets");
        let path = cx.path(src, &p);
        cx.at(
            src,
            Code::BadValue,
            &p,
            format!("{path}: cannot be set together with unshapedSubnets"),
        );
    }
}

fn check_sysctls(cx: &mut Cx, src: SrcId, ptr: &str, v: Option<&Value>) {
    let Some(Value::Object(m)) = v else { return };
    for k in m.keys() {
        let parts: Vec<&str> = k.split(['.', '/']).collect();
        if parts.first() != Some(&"net") || parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "..") {
            let p = super::pos::push_token(ptr, k);
            let path = cx.path(src, &p);
            cx.at_key(src, Code::BadValue, &p, format!("{path}: not a net.* sysctl"));
            cx.hint("tuning only writes sysctls below /proc/sys/net, like net.ipv4.conf.IFNAME.arp_notify");
        }
    }
}

fn ip_of(m: &Map<String, Value>, key: &str) -> Option<IpAddr> {
    get(m, key).and_then(Value::as_str).and_then(parse_ip)
}

/// host-local's LoadIPAMConfig and Range.Canonicalize, statically. Returns whether any
/// range is configured.
pub(super) fn check_host_local(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) -> bool {
    // (range set pointer, ranges with their pointers)
    let mut sets: Vec<(String, Vec<(String, IpNet)>)> = Vec::new();
    let check_range = |cx: &mut Cx, rp: &str, r: &Map<String, Value>| -> Option<IpNet> {
        let subnet = match get(r, "subnet") {
            None => {
                let path = cx.path(src, rp);
                cx.at(src, Code::Missing, rp, format!("{path}: a range needs a \"subnet\""));
                return None;
            }
            Some(v) => IpNet::from_str(v.as_str()?).ok()?,
        };
        let sp = key_ptr(rp, r, "subnet");
        let too_small = if subnet.is_ipv4() {
            subnet.prefix > 30
        } else {
            subnet.prefix > 126
        };
        if too_small {
            let path = cx.path(src, &sp);
            cx.at(
                src,
                Code::BadValue,
                &sp,
                format!("{path}: network {subnet} is too small to allocate from"),
            );
        } else if subnet.network().addr != subnet.addr {
            // host-local's Range.Canonicalize, after the size check
            let net = subnet.network();
            let path = cx.path(src, &sp);
            cx.at(
                src,
                Code::BadValue,
                &sp,
                format!(
                    "{path}: network {subnet} has host bits set; for a subnet mask of length {} the network address is {}",
                    net.prefix, net.addr
                ),
            );
            cx.hint(format!("write the network address: {net}"));
        }
        let start = ip_of(r, "rangeStart");
        let end = ip_of(r, "rangeEnd");
        for (key, ip) in [
            ("rangeStart", start),
            ("rangeEnd", end),
            ("gateway", ip_of(r, "gateway")),
        ] {
            if let Some(ip) = ip {
                if !subnet.contains(ip) {
                    let kp = key_ptr(rp, r, key);
                    let path = cx.path(src, &kp);
                    cx.at(
                        src,
                        Code::BadValue,
                        &kp,
                        format!("{path}: {ip} is not in subnet {subnet}"),
                    );
                }
            }
        }
        if let (Some(a), Some(b)) = (start, end) {
            if subnet.contains(a) && subnet.contains(b) && a > b {
                let kp = key_ptr(rp, r, "rangeEnd");
                let path = cx.path(src, &kp);
                cx.at(
                    src,
                    Code::BadValue,
                    &kp,
                    format!("{path}: {b} is before rangeStart {a}"),
                );
            }
        }
        Some(subnet)
    };
    if let Some(Value::String(_)) = get(m, "subnet") {
        if let Some(n) = check_range(cx, ptr, m) {
            sets.push((key_ptr(ptr, m, "subnet"), vec![(key_ptr(ptr, m, "subnet"), n)]));
        }
    }
    if let Some(Value::Array(rs)) = get(m, "ranges") {
        let rsp = key_ptr(ptr, m, "ranges");
        for (i, set) in rs.iter().enumerate() {
            let setp = format!("{rsp}/{i}");
            let Value::Array(set) = set else { continue };
            if set.is_empty() {
                let path = cx.path(src, &setp);
                cx.at(src, Code::BadValue, &setp, format!("{path}: empty range set"));
                continue;
            }
            let mut nets = Vec::new();
            for (j, r) in set.iter().enumerate() {
                let rp = format!("{setp}/{j}");
                if let Value::Object(r) = r {
                    if let Some(n) = check_range(cx, &rp, r) {
                        nets.push((key_ptr(&rp, r, "subnet"), n));
                    }
                }
            }
            if let Some((_, first)) = nets.first().cloned() {
                if let Some((p, other)) = nets.iter().find(|(_, n)| n.is_ipv4() != first.is_ipv4()) {
                    let path = cx.path(src, p);
                    cx.at(
                        src,
                        Code::BadValue,
                        p,
                        format!("{path}: {other} mixes address families with {first} in one range set"),
                    );
                }
            }
            sets.push((setp, nets));
        }
    }
    for (i, (_, a)) in sets.iter().enumerate() {
        for (_, b) in sets.iter().skip(i + 1) {
            for (bp, bn) in b {
                if let Some((_, an)) = a.iter().find(|(_, an)| overlaps(an, bn)) {
                    let path = cx.path(src, bp);
                    cx.at(
                        src,
                        Code::BadValue,
                        bp,
                        format!("{path}: {bn} overlaps {an} of an earlier range set"),
                    );
                }
            }
        }
    }
    for (_, nets) in &sets {
        for (p, n) in nets {
            cx.subnets.push(Subnet {
                net: *n,
                src,
                ptr: p.clone(),
            });
        }
    }
    get(m, "subnet").is_some() || matches!(get(m, "ranges"), Some(Value::Array(a)) if !a.is_empty())
}

pub(super) fn check_static(cx: &mut Cx, src: SrcId, ptr: &str, m: &Map<String, Value>) {
    let Some(Value::Array(addrs)) = get(m, "addresses") else {
        return;
    };
    let ap = key_ptr(ptr, m, "addresses");
    for (i, a) in addrs.iter().enumerate() {
        let Value::Object(a) = a else { continue };
        let p = format!("{ap}/{i}");
        match get(a, "address").and_then(Value::as_str) {
            None if get(a, "address").is_none() => {
                let path = cx.path(src, &p);
                cx.at(
                    src,
                    Code::Missing,
                    &p,
                    format!("{path}: an address entry needs \"address\""),
                );
            }
            Some(s) => {
                if let Ok(n) = IpNet::from_str(s) {
                    cx.subnets.push(Subnet {
                        net: n.network(),
                        src,
                        ptr: key_ptr(&p, a, "address"),
                    });
                }
            }
            None => {}
        }
    }
}

/// Two networks share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network().addr) || b.contains(a.network().addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        let n = |s: &str| IpNet::from_str(s).unwrap();
        assert!(overlaps(&n("10.0.0.0/16"), &n("10.0.5.0/24")));
        assert!(overlaps(&n("10.0.5.0/24"), &n("10.0.0.0/16")));
        assert!(!overlaps(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
        assert!(!overlaps(&n("::/0"), &n("10.0.1.0/24")));
    }
}
