//! ADD: the result's validity for the requested version, the kernel agreeing with it,
//! and (meta plugins) the prevResult carried through.

use super::checks_env::expect_error;
use super::runner::{require, Att, Ctx, Step, Verdict, IFNAME};
use super::sandbox;
use super::schema;
use super::Kind;
use cnichain_engine::spec::ipnet::IpNet;
use serde_json::Value;
use std::str::FromStr;

pub fn add_succeeds(c: &mut Ctx) -> Step {
    c.attach().map(|_| ())
}

pub fn result_version(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let got = att.result.get("cniVersion").cloned();
    require(
        got.as_ref().and_then(Value::as_str) == Some(c.v.as_str()),
        &format!(
            "the result carries cniVersion {:?}, the config's version (§5 Result)",
            c.v
        ),
        || format!("cniVersion is {}", got.map_or("missing".to_string(), |g| g.to_string())),
        Some(&att.add),
    )
}

fn problems(att: &Att, v: &str) -> Vec<String> {
    schema::result_problems(&att.result, v)
}

pub fn result_schema(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let p: Vec<String> = problems(&att, &c.v)
        .into_iter()
        .filter(|p| !p.starts_with("cniVersion") && !p.contains("out of range"))
        .collect();
    require(
        p.is_empty(),
        &format!("the result has the {} result's keys and types (§5 Result)", c.v),
        || p.join("; "),
        Some(&att.add),
    )
}

pub fn interface_indexes(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let p: Vec<String> = problems(&att, &c.v)
        .into_iter()
        .filter(|p| p.contains("out of range"))
        .collect();
    require(
        p.is_empty(),
        "every ips[].interface is an index into the result's interfaces (§5 Result)",
        || p.join("; "),
        Some(&att.add),
    )
}

fn interfaces(v: &Value) -> Vec<(String, String, String)> {
    v["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("mac").to_lowercase(), s("sandbox"))
        })
        .collect()
}

pub fn pod_interface_listed(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let pod = c.sb.pod_path();
    let ifs = interfaces(&att.result);
    require(
        ifs.iter().any(|(n, _, s)| n == IFNAME && s == &pod),
        &format!("the result lists the container interface {IFNAME:?} with sandbox {pod:?} (CNI_NETNS)"),
        || format!("interfaces: {}", att.result["interfaces"]),
        Some(&att.add),
    )
}

fn kernel_err(e: String) -> Verdict {
    super::runner::fail("the harness can read the netns the result names", e, None)
}

pub fn sandbox_set(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let pod = c.sb.pod_path();
    let pod_links = sandbox::links(&pod).map_err(kernel_err)?;
    let host_links = sandbox::links(&c.sb.host_path()).map_err(kernel_err)?;
    for (name, _, sb) in interfaces(&att.result) {
        let in_pod = pod_links.iter().any(|l| l.name == name);
        let in_host = host_links.iter().any(|l| l.name == name);
        require(
            sb.is_empty() || sb == pod,
            "an interface's sandbox is the CNI_NETNS it was created in",
            || format!("interface {name:?} names sandbox {sb:?}, CNI_NETNS is {pod:?}"),
            Some(&att.add),
        )?;
        require(
            !(in_pod && !in_host && sb.is_empty()),
            "an interface in the container's netns has `sandbox` set (§5 Result)",
            || format!("interface {name:?} is in {pod} but its sandbox is empty"),
            Some(&att.add),
        )?;
    }
    Ok(())
}

/// The netns file an interface of the result lives in.
fn ns_of(c: &Ctx, sandbox: &str) -> String {
    if sandbox.is_empty() {
        c.sb.host_path()
    } else {
        sandbox.to_string()
    }
}

pub fn kernel_links(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let ifs = interfaces(&att.result);
    if ifs.is_empty() {
        return Err(Verdict::Na("the result lists no interfaces".into()));
    }
    for (name, mac, sb) in ifs {
        let ns = ns_of(c, &sb);
        let links = sandbox::links(&ns).map_err(kernel_err)?;
        let found = links.iter().find(|l| l.name == name);
        require(
            found.is_some(),
            "every interface of the result exists in the netns it names (its sandbox, else the host's)",
            || format!("no link {name:?} in {ns}"),
            Some(&att.add),
        )?;
        let kmac = found.map(|l| l.mac.clone()).unwrap_or_default();
        require(
            mac.is_empty() || kmac == mac,
            "an interface's mac in the result is the link's address",
            || format!("{name:?}: result says {mac}, the kernel has {kmac}"),
            Some(&att.add),
        )?;
    }
    Ok(())
}

fn same_net(a: &str, b: &str, host_bits: bool) -> bool {
    match (IpNet::from_str(a), IpNet::from_str(b)) {
        (Ok(x), Ok(y)) if host_bits => x.addr == y.addr && x.mask_len() == y.mask_len(),
        (Ok(x), Ok(y)) => x.network() == y.network(),
        _ => false,
    }
}

pub fn kernel_addrs(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let Some(r) = schema::as_v1(&att.result, &c.v) else {
        return Err(Verdict::Na("the result does not decode (see ADD-03)".into()));
    };
    let ifs = interfaces(&r);
    let mut checked = 0;
    for ip in r["ips"].as_array().into_iter().flatten() {
        let addr = ip["address"].as_str().unwrap_or_default();
        let (name, ns) = match ip["interface"].as_u64().and_then(|i| ifs.get(i as usize)) {
            Some((n, _, sb)) => (n.clone(), ns_of(c, sb)),
            None if c.o.kind == Kind::Main => (IFNAME.to_string(), c.sb.pod_path()),
            None => continue,
        };
        checked += 1;
        let have = sandbox::addrs(&ns).map_err(kernel_err)?;
        require(
            have.iter().any(|(d, a)| d == &name && same_net(a, addr, true)),
            "every address of the result is on the interface it names, in that interface's netns",
            || {
                let on: Vec<&String> = have.iter().filter(|(d, _)| d == &name).map(|(_, a)| a).collect();
                format!("{addr} not on {name:?} in {ns} (it has {on:?})")
            },
            Some(&att.add),
        )?;
    }
    if checked == 0 {
        return Err(Verdict::Na("the result assigns no address to an interface".into()));
    }
    Ok(())
}

pub fn kernel_routes(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let Some(r) = schema::as_v1(&att.result, &c.v) else {
        return Err(Verdict::Na("the result does not decode (see ADD-03)".into()));
    };
    let routes = r["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        return Err(Verdict::Na("the result has no routes".into()));
    }
    let pod = c.sb.pod_path();
    let have = sandbox::routes(&pod).map_err(kernel_err)?;
    for rt in routes {
        let dst = rt["dst"].as_str().unwrap_or_default();
        let gw = rt["gw"].as_str().unwrap_or_default();
        require(
            have.iter().any(|k| {
                same_net(&k.dst, dst, false)
                    && (gw.is_empty()
                        || IpNet::from_str(&format!("{gw}/32")).is_ok() && k.gw == gw
                        || gw.contains(':') && k.gw == gw)
            }),
            "every route of the result is in the container's netns (dst, and gw when given)",
            || {
                let list: Vec<String> = have.iter().map(|k| k.to_string()).collect();
                format!("route {rt} missing; {pod} has: {}", list.join(", "))
            },
            Some(&att.add),
        )?;
    }
    Ok(())
}

pub fn existing_ifname_errors(c: &mut Ctx) -> Step {
    c.attach()?;
    let cid = c.new_cid();
    let (conf, _) = c.add_conf(&cid, IFNAME)?;
    let call = c.call_json("ADD", c.env("ADD", &cid, IFNAME), &conf);
    // Undo whatever a wrongly successful ADD did (the sandbox goes anyway).
    let _ = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &conf);
    expect_error(
        &call,
        &format!("ADD of a second container whose CNI_IFNAME {IFNAME:?} already exists in CNI_NETNS"),
        None,
    )
}

pub fn ipam_has_ips(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let n = schema::as_v1(&att.result, &c.v)
        .and_then(|r| r["ips"].as_array().map(Vec::len))
        .unwrap_or(0);
    require(
        n > 0,
        "an IPAM plugin's ADD result holds the IP configuration it allocated (ips)",
        || "no ips".into(),
        Some(&att.add),
    )
}

/// Meta plugins: what of the prevResult the output still has.
fn prev_kept(c: &mut Ctx, part: &str) -> Step {
    let att = c.attach()?;
    let prev = att.prev.clone().unwrap_or_default();
    let missing = prev_lost(&prev, &att.result, part);
    require(
        missing.is_empty(),
        &format!("a chained plugin passes the prevResult's {part} through (§2 ADD: \"passed through or modified\"; a meta plugin does not own them)"),
        || format!("lost: {}", missing.join(", ")),
        Some(&att.add),
    )
}

/// What of `prev`'s `part` (interfaces, ips, routes, dns) the result `out` lost.
pub fn prev_lost(prev: &Value, out: &Value, part: &str) -> Vec<String> {
    match part {
        "interfaces" => interfaces(prev)
            .into_iter()
            .filter(|i| !interfaces(out).contains(i))
            .map(|i| format!("{i:?}"))
            .collect(),
        "ips" | "routes" => {
            let key = |x: &Value| match part {
                "ips" => {
                    // The index must still point at the same interface.
                    let idx = x["interface"].as_u64();
                    let name =
                        |r: &Value| idx.and_then(|i| r["interfaces"][i as usize]["name"].as_str().map(String::from));
                    (x["address"].to_string(), x["gateway"].to_string(), name(prev))
                }
                _ => (x["dst"].to_string(), x["gw"].to_string(), None),
            };
            let outs: Vec<_> = out[part]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    let (a, g, _) = key(x);
                    let idx = x["interface"].as_u64();
                    let name = idx.and_then(|i| out["interfaces"][i as usize]["name"].as_str().map(String::from));
                    (a, g, if part == "ips" { name } else { None })
                })
                .collect();
            prev[part]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| !outs.contains(&key(x)))
                .map(|x| x.to_string())
                .collect()
        }
        _ => {
            let norm = |d: &Value| -> Value {
                let mut m = serde_json::Map::new();
                for (k, v) in d.as_object().into_iter().flatten() {
                    if !v.is_null() && v != &Value::Array(vec![]) && v != &Value::String(String::new()) {
                        m.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(m)
            };
            if norm(&prev["dns"]) == norm(&out["dns"]) {
                Vec::new()
            } else {
                vec![format!("dns {} became {}", prev["dns"], out["dns"])]
            }
        }
    }
}

pub fn prev_interfaces(c: &mut Ctx) -> Step {
    prev_kept(c, "interfaces")
}
pub fn prev_ips(c: &mut Ctx) -> Step {
    prev_kept(c, "ips")
}
pub fn prev_routes(c: &mut Ctx) -> Step {
    prev_kept(c, "routes")
}
pub fn prev_dns(c: &mut Ctx) -> Step {
    prev_kept(c, "dns")
}

/// The name a second attachment asks for, not the usual eth0.
pub const OTHER_IFNAME: &str = "net1";

pub fn ifname_honored(c: &mut Ctx) -> Step {
    let cid = c.new_cid();
    let att = c.attach_as(&cid, OTHER_IFNAME, |_| {})?;
    let links = sandbox::links(&att.netns).map_err(kernel_err)?;
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    require(
        names.contains(&OTHER_IFNAME) && !names.contains(&IFNAME),
        &format!("ADD with CNI_IFNAME={OTHER_IFNAME} names the container interface {OTHER_IFNAME} (§2 Parameters)"),
        || format!("the container netns has {names:?}"),
        Some(&att.add),
    )?;
    if !c.at_least("0.3.0") {
        return Ok(());
    }
    require(
        interfaces(&att.result)
            .iter()
            .any(|(n, _, s)| n == OTHER_IFNAME && s == &att.netns),
        &format!("the result lists {OTHER_IFNAME} with sandbox = CNI_NETNS"),
        || format!("interfaces: {}", att.result["interfaces"]),
        Some(&att.add),
    )
}

/// The first address (and route) the result gives the container interface.
fn pod_ip_and_route(c: &Ctx, result: &Value) -> (Option<String>, Option<String>) {
    let Some(r) = schema::as_v1(result, &c.v) else {
        return (None, None);
    };
    let ifs = interfaces(&r);
    let addr = r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ip| match ip["interface"].as_u64().and_then(|i| ifs.get(i as usize)) {
            Some((n, _, sb)) => n == IFNAME && !sb.is_empty(),
            None => true,
        })
        .and_then(|ip| ip["address"].as_str().map(String::from));
    let route = r["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|rt| rt["dst"].as_str().map(String::from));
    (addr, route)
}

/// CHECK after the harness took `what` (an address or a route of the result) away.
fn check_after_removing(c: &mut Ctx, what: &str) -> Step {
    let att = c.attach()?;
    let (addr, route) = pod_ip_and_route(c, &att.result);
    let (thing, script) = match (what, addr, route) {
        ("address", Some(a), _) => (format!("address {a}"), format!("ip addr del {a} dev {IFNAME}")),
        ("route", _, Some(d)) => (format!("route to {d}"), format!("ip route del {d}")),
        _ => return Err(Verdict::Na(format!("the result gives the container no {what}"))),
    };
    c.sb.sh_pod(&script)
        .map_err(|e| super::runner::fail("the harness can change the container netns", e, None))?;
    let call = c.check(&att);
    expect_error(
        &call,
        &format!("CHECK after the result's {thing} was removed from the container"),
        None,
    )
}

pub fn check_after_addr_gone(c: &mut Ctx) -> Step {
    check_after_removing(c, "address")
}

pub fn check_after_route_gone(c: &mut Ctx) -> Step {
    check_after_removing(c, "route")
}
