//! The bandwidth drop-in against the reference binary (/usr/lib/cni/bandwidth, 1.1.1) on
//! the same input in twin sandboxes: for a table of (rate, burst) pairs from 1 kbit/s to
//! 100 Gbit/s, shaping both directions at once (ingress tbf on the host veth, egress tbf
//! on the ifb behind the veth's ingress redirect), the results, the errors and the tc
//! state (`tc -j qdisc show`, `tc -d -raw -j qdisc show`, the ingress filter) must be the
//! same to the last unit. The runtimes' bursts (containerd 2^32-1 bits, CRI-O 2^35-9)
//! are accepted at every rate; where the reference's uint32 arithmetic wraps, cnichain
//! saturates (buffer 0xffffffff ticks, limit 0xffffffff bytes) and nothing else differs.
//!
//! Also: two attachments of one network in one pod (Multus `net1`, `net2`) get an ifb
//! each; an ifb the reference ADDed is removed by cnichain's DEL.

mod common;
use common::twin::*;
use common::*;
use serde_json::{json, Value};

const CID: &str = "bwdiff-0123456789abcdef";
const NET: &str = "bwdiffnet";
const VETH: &str = "vbw0";

fn conf(net: &str, entry: Value, prev: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": net, "type": "bandwidth", "prevResult": prev});
    for (k, v) in entry.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

/// A side's state after ADD: the tbfs and the ingress qdisc of the veth and the ifb,
/// `tc -j` and `tc -d -raw -j` (refcnt dropped), and the veth's ingress filters
/// (first action only, without its index and counters: the reference's netlink
/// library adds a second, unreachable "pass" action).
fn tc_state(s: &Twin) -> Value {
    let devs: Vec<String> = std::iter::once(VETH.to_string())
        .chain(s.links_of_kind("ifb"))
        .collect();
    let qdiscs = |args: &str| -> Vec<Value> {
        let mut v: Vec<Value> = s
            .tc_json(args)
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|q| devs.iter().any(|d| q["dev"] == json!(d)) && q["kind"] != "noqueue")
            .map(|mut q| {
                q.as_object_mut().map(|o| o.remove("refcnt"));
                q
            })
            .collect();
        v.sort_by_key(|q| q.to_string());
        v
    };
    let mut filters = s.tc_json(&format!("filter show dev {VETH} ingress"));
    for f in filters.as_array_mut().into_iter().flatten() {
        if let Some(a) = f["options"]["actions"].as_array_mut() {
            a.truncate(1);
            for x in a.iter_mut().filter_map(Value::as_object_mut) {
                for k in ["index", "ref", "bind"] {
                    x.remove(k);
                }
            }
        }
    }
    json!({"plain": qdiscs("qdisc show"), "raw": qdiscs("-d -raw qdisc show"), "filters": filters})
}

/// Remove what ADD left on a side (the reference's DEL leaves the veth's qdiscs).
fn reset(s: &Twin) {
    s.host_try(&format!(
        "tc qdisc del dev {VETH} root; tc qdisc del dev {VETH} ingress; for l in $(ip -o link show type ifb | awk -F': ' '{{print $2}}'); do ip link del $l; done"
    ));
}

/// The result with what differs by nature (the pod's path, the ifb's MAC) normalized.
fn normalize(v: &Value, s: &Twin) -> Value {
    let mut v = rename_in(v, &s.pod, "<pod>");
    for i in v["interfaces"].as_array_mut().into_iter().flatten() {
        if i.get("mac").is_some() {
            i["mac"] = json!("<mac>");
        }
    }
    v.as_object_mut().map(|o| o.remove("cniVersion"));
    v
}

/// What one ADD gave: the normalized result or error, and the tc state.
fn add_on(s: &Twin, entry: &Value) -> (Value, Value) {
    let c = conf(NET, entry.clone(), s.prev_result(VETH, "eth0"));
    let o = s.run_on_pod("bandwidth", "ADD", &c, CID, "eth0");
    let out: Value = serde_json::from_slice(&o.stdout).unwrap_or(json!({"unparsable": stdout(&o)}));
    let out = if o.status.success() {
        normalize(&out, s)
    } else {
        json!({"error": {"code": out["code"], "msg": out["msg"]}})
    };
    let tc = tc_state(s);
    // DEL must remove the ifb on both sides. After a refused ADD the reference's DEL
    // refuses the config again (its DEL parses and checks it); cnichain's DEL succeeds.
    let del = s.run_on_pod("bandwidth", "DEL", &c, CID, "eth0");
    if o.status.success() || !s.reference {
        ok(&del);
        assert!(s.links_of_kind("ifb").is_empty(), "ifb left after DEL");
    }
    reset(s);
    (out, tc)
}

/// The tbf options of `dev` in a `tc -d -raw -j` list.
fn raw_tbf<'a>(tc: &'a Value, dev: &str) -> Option<&'a Value> {
    tc["raw"]
        .as_array()?
        .iter()
        .find(|q| q["kind"] == "tbf" && (q["dev"] == json!(dev) || (dev == "ifb" && q["dev"] != json!(VETH))))
        .map(|q| &q["options"])
}

/// The (rate, burst) table, bits/s and bits: rates from 1 kbit/s to 10 Gbit/s with
/// bursts from a few packets to many seconds, odd figures included.
fn pairs() -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    // beyond 34 Gbit/s the rate needs TCA_TBF_RATE64
    let rates: [u64; 24] = [
        1_000,
        1_500,
        8_000,
        12_345,
        56_000,
        100_000,
        128_000,
        300_000,
        777_777,
        1_000_000,
        1_234_567,
        2_000_000,
        3_000_000,
        9_999_999,
        10_000_000,
        33_333_333,
        100_000_000,
        123_456_789,
        1_000_000_000,
        2_500_000_000,
        9_999_999_999,
        10_000_000_000,
        40_000_000_000,
        100_000_000_000,
    ];
    for (i, &r) in rates.iter().enumerate() {
        // 12000 bits = one 1500-byte packet; 299992: the 37499 bytes
        let fixed = [12_000u64, 99_999, 123_456, 299_992, 800_000, 4_194_304, 80_000_000];
        v.push((r, fixed[i % fixed.len()]));
        v.push((r, fixed[(i + 3) % fixed.len()]));
        // bursts of 10 ms, 1.3 s and 100 s at the rate (at least a byte)
        v.push((r, (r / 100).max(8)));
        if i % 2 == 0 {
            v.push((r, (r * 13 / 10).max(8)));
        } else {
            v.push((r, (r * 100).min(8 * u64::from(u32::MAX) - 8)));
        }
    }
    v
}

/// A pair where the reference's uint32 arithmetic wraps: cnichain accepts it, shapes with
/// the saturated buffer (and limit), and agrees with the reference on everything else;
/// the reference's own tbf carries the wrapped figures computed here (or the kernel
/// refused it).
fn check_saturated(
    t: &cnichain_stages::kernel::netlink::tbf::ReferenceTbf,
    rate: u64,
    burst: u64,
    (r_out, r_tc): (&Value, &Value),
    (o_out, o_tc): (&Value, &Value),
) -> Result<(), String> {
    let at = format!("rate {rate} burst {burst}");
    if o_out.get("error").is_some() {
        return Err(format!("{at}: refused: {o_out}"));
    }
    for dev in [VETH, "ifb"] {
        let o = raw_tbf(o_tc, dev).ok_or_else(|| format!("{at}: no tbf on {dev}: {o_tc}"))?;
        let want = (format!("{:x}", t.buffer), u64::from(t.limit), rate / 8);
        let got = (
            o["burst_raw"].as_str().unwrap_or("").to_string(),
            o["limit"].as_u64().unwrap_or(0),
            o["rate"].as_u64().unwrap_or(0),
        );
        if got != want {
            return Err(format!("{at} {dev}: (buffer, limit, rate) {got:?}, want {want:?}"));
        }
        if let Some(r) = raw_tbf(r_tc, dev) {
            let wrapped = (format!("{:x}", t.reference_buffer), u64::from(t.reference_limit));
            let got = (
                r["burst_raw"].as_str().unwrap_or("").to_string(),
                r["limit"].as_u64().unwrap_or(0),
            );
            if got != wrapped {
                return Err(format!(
                    "{at} {dev}: the reference's (buffer, limit) {got:?}, computed {wrapped:?}"
                ));
            }
        }
    }
    if r_out.get("error").is_none() && (o_out != r_out || o_tc["filters"] != r_tc["filters"]) {
        return Err(format!("{at}: results or filters differ: {o_out} {r_out}"));
    }
    Ok(())
}

/// Bits/s and bits the runtimes pass in the bandwidth capability for a pod annotated
/// with a rate and no burst.
const CONTAINERD_BURST: u64 = 4_294_967_295;
const CRIO_BURST: u64 = 34_359_738_359;

#[test]
fn bandwidth_tbf_parameters_match_reference_to_the_unit() {
    require_root("netns, veth, tc");
    let twin = Pair::new("bwtab");
    twin.add_veth(VETH, "eth0");
    let mut compared = 0;
    let mut saturated = 0;
    let mut mismatches = Vec::new();
    let mut saturation_failures = Vec::new();
    let mut table = pairs();
    for r in [
        1_000u64,
        64_000,
        1_000_000,
        15_000_000,
        16_000_000,
        100_000_000,
        1_000_000_000,
        10_000_000_000,
    ] {
        table.push((r, CONTAINERD_BURST));
        table.push((r, CRIO_BURST));
    }
    for (rate, burst) in &table {
        let entry = json!({"ingressRate": rate, "ingressBurst": burst, "egressRate": rate, "egressBurst": burst});
        let (r_out, r_tc) = add_on(&twin.r, &entry);
        let (o_out, o_tc) = add_on(&twin.o, &entry);
        let t = cnichain_stages::kernel::netlink::tbf::ReferenceTbf::new(rate / 8, (burst / 8) as u32);
        let wraps = t.buffer_wrapped || t.limit_wrapped;
        if wraps {
            saturated += 1;
            if let Err(why) = check_saturated(&t, *rate, *burst, (&r_out, &r_tc), (&o_out, &o_tc)) {
                saturation_failures.push(why);
            }
            continue;
        }
        compared += 1;
        if o_out != r_out || o_tc != r_tc {
            mismatches.push(format!(
                "rate {rate} burst {burst}:\n  reference {r_out} {r_tc}\n  cnichain  {o_out} {o_tc}"
            ));
        }
    }
    eprintln!(
        "bandwidth: {} (rate, burst) pairs, both directions: {compared} compared to the unit, {} mismatches; {saturated} where the reference wraps (saturated), {} not as designed",
        table.len(),
        mismatches.len(),
        saturation_failures.len()
    );
    assert!(compared >= 50, "only {compared} pairs compared");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(saturation_failures.is_empty(), "{}", saturation_failures.join("\n"));
}

/// What the reference refuses, cnichain refuses with the same msg and code, and makes
/// nothing; what it accepts at the edges, cnichain accepts alike.
#[test]
fn bandwidth_errors_match_reference() {
    require_root("netns, veth, tc");
    let twin = Pair::new("bwerr");
    twin.add_veth(VETH, "eth0");
    let cases = [
        json!({"ingressRate": 1_000_000}),
        json!({"egressBurst": 100_000}),
        json!({"ingressRate": 0, "ingressBurst": 8 * u64::from(u32::MAX)}),
        json!({"ingressRate": 1_000_000, "ingressBurst": 8 * u64::from(u32::MAX)}),
        json!({"egressRate": 1_000_000, "egressBurst": 40_000_000_000u64}),
        json!({"ingressRate": 1_000_000, "ingressBurst": 4}),
        json!({"ingressRate": 7, "ingressBurst": 8000}),
        json!({"ingressRate": 3, "ingressBurst": 8}),
        json!({"ingressRate": 1, "ingressBurst": 8}),
        json!({"ingressRate": 8, "ingressBurst": 8}),
        json!({"egressRate": 1_000_000, "egressBurst": 4}),
        json!({"egressRate": 10_000_000_000u64, "egressBurst": 8}),
        json!({"ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 5, "egressBurst": 100}),
        json!({"ingressRate": 0, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0}),
        json!({"ingressRate": null, "egressRate": 1_000_000, "egressBurst": 100_000}),
    ];
    for entry in &cases {
        let (r_out, r_tc) = add_on(&twin.r, entry);
        let (o_out, o_tc) = add_on(&twin.o, entry);
        assert_eq!(o_out, r_out, "{entry}: outcome differs");
        if r_out.get("error").is_some() {
            // the reference leaves its partial work (the ifb, the ingress redirect);
            // cnichain rolls back and leaves nothing
            assert_eq!(o_tc["plain"], json!([]), "{entry}: cnichain left {o_tc}");
        } else {
            assert_eq!(o_tc, r_tc, "{entry}: tc state differs");
        }
    }
    // the host veth not found, for each of the reference's reasons
    let entry = json!({"ingressRate": 1_000_000, "ingressBurst": 100_000});
    let outcomes = |s: &Twin| -> Vec<Value> {
        let prevs = [
            (json!({"cniVersion": "1.0.0", "interfaces": []}), "eth0"),
            (s.prev_result(VETH, "eth0"), "eth9"),
            (s.prev_result(VETH, "eth0"), "lo"),
            (s.prev_result("other0", "eth0"), "eth0"),
        ];
        prevs
            .iter()
            .map(|(prev, ifname)| {
                let e =
                    cni_err(&s.run_on_pod("bandwidth", "ADD", &conf(NET, entry.clone(), prev.clone()), CID, ifname));
                assert_eq!(tc_state(s)["plain"], json!([]), "{prev} {ifname}");
                json!([e["code"], e["msg"]])
            })
            .collect()
    };
    assert_eq!(outcomes(&twin.o), outcomes(&twin.r));
    // ADD again without DEL: the kernel's "file exists" in the reference's words
    for entry in [
        json!({"egressRate": 1_000_000, "egressBurst": 100_000}),
        json!({"ingressRate": 1_000_000, "ingressBurst": 100_000}),
    ] {
        let again = |s: &Twin| {
            let c = conf(NET, entry.clone(), s.prev_result(VETH, "eth0"));
            ok(&s.run_on_pod("bandwidth", "ADD", &c, CID, "eth0"));
            let e = cni_err(&s.run_on_pod("bandwidth", "ADD", &c, CID, "eth0"));
            let _ = s.run_on_pod("bandwidth", "DEL", &c, CID, "eth0");
            reset(s);
            json!([e["code"], e["msg"]])
        };
        assert_eq!(again(&twin.o), again(&twin.r), "{entry}");
    }
    // no prevResult
    for s in twin.sides() {
        let c =
            json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth", "ingressRate": 1000, "ingressBurst": 1000});
        let e = cni_err(&s.run_on_pod("bandwidth", "ADD", &c, CID, "eth0"));
        assert_eq!(
            (e["code"].clone(), e["msg"].clone()),
            (json!(999), json!("must be called as chained plugin"))
        );
    }
}

/// Multus attaches one network twice (net1, net2): each attachment gets its own ifb and
/// egress shaping; DEL of net1 leaves net2's ifb and qdiscs and CHECK of net2 passes;
/// DEL of net2 leaves nothing. And an ifb the reference ADDed is removed by cnichain's
/// DEL of that attachment (an operator swapping the binaries between ADD and DEL).
#[test]
fn bandwidth_two_attachments_of_one_network() {
    require_root("netns, veth, tc");
    let twin = Pair::new("bwtwo");
    let o = &twin.o;
    o.add_veth("vbw1", "net1");
    o.add_veth("vbw2", "net2");
    let entry =
        json!({"egressRate": 1_000_000, "egressBurst": 100_000, "ingressRate": 2_000_000, "ingressBurst": 200_000});
    let c1 = conf(NET, entry.clone(), o.prev_result("vbw1", "net1"));
    let c2 = conf(NET, entry.clone(), o.prev_result("vbw2", "net2"));
    let res1: Value = serde_json::from_str(&ok(&o.run_on_pod("bandwidth", "ADD", &c1, CID, "net1"))).unwrap();
    let res2: Value = serde_json::from_str(&ok(&o.run_on_pod("bandwidth", "ADD", &c2, CID, "net2"))).unwrap();
    let ifb_of = |r: &Value| r["interfaces"][2]["name"].as_str().unwrap_or_default().to_string();
    let (ifb1, ifb2) = (ifb_of(&res1), ifb_of(&res2));
    assert!(
        ifb1.starts_with("bwp") && ifb2.starts_with("bwp") && ifb1 != ifb2,
        "{ifb1} {ifb2}"
    );
    let mut ifbs = o.links_of_kind("ifb");
    ifbs.sort();
    let mut want = vec![ifb1.clone(), ifb2.clone()];
    want.sort();
    assert_eq!(ifbs, want);
    let with_prev = |c: &Value, r: &Value| {
        let mut c = c.clone();
        c["prevResult"] = r.clone();
        c
    };
    let (c1, c2) = (with_prev(&c1, &res1), with_prev(&c2, &res2));
    ok(&o.run_on_pod("bandwidth", "CHECK", &c1, CID, "net1"));
    ok(&o.run_on_pod("bandwidth", "CHECK", &c2, CID, "net2"));
    let tbf_on = |dev: &str| o.tc_json(&format!("qdisc show dev {dev}")).to_string();
    let redirect_to = |veth: &str, ifb: &str| {
        o.tc_json(&format!("filter show dev {veth} ingress"))
            .to_string()
            .contains(&format!("\"to_dev\":\"{ifb}\""))
    };
    assert!(redirect_to("vbw1", &ifb1) && redirect_to("vbw2", &ifb2));
    let ifb2_before = tbf_on(&ifb2);
    let veth2_before = tbf_on("vbw2");
    let filters2_before = o.tc_json("filter show dev vbw2 ingress");

    ok(&o.run_on_pod("bandwidth", "DEL", &c1, CID, "net1"));
    assert_eq!(
        o.links_of_kind("ifb"),
        vec![ifb2.clone()],
        "DEL net1 took the wrong ifb"
    );
    assert_eq!(tbf_on(&ifb2), ifb2_before);
    assert_eq!(tbf_on("vbw2"), veth2_before);
    assert_eq!(o.tc_json("filter show dev vbw2 ingress"), filters2_before);
    ok(&o.run_on_pod("bandwidth", "CHECK", &c2, CID, "net2"));
    // DEL again is fine and still leaves net2 alone
    ok(&o.run_on_pod("bandwidth", "DEL", &c1, CID, "net1"));
    assert_eq!(o.links_of_kind("ifb"), vec![ifb2.clone()]);
    ok(&o.run_on_pod("bandwidth", "DEL", &c2, CID, "net2"));
    assert!(o.links_of_kind("ifb").is_empty());
    for v in ["vbw1", "vbw2"] {
        let q = tbf_on(v);
        assert!(!q.contains("tbf") && !q.contains("ingress"), "{v}: {q}");
    }

    // ADD by the reference, DEL by cnichain: the reference's ifb goes. Both sides run on
    // the reference sandbox here; the drop-in binary is the o side's.
    let r = &twin.r;
    r.add_veth("vbw1", "net1");
    r.add_veth("vbw2", "net2");
    let rc1 = conf(NET, entry.clone(), r.prev_result("vbw1", "net1"));
    let rres1: Value = serde_json::from_str(&ok(&r.run_on_pod("bandwidth", "ADD", &rc1, CID, "net1"))).unwrap();
    let rifb = ifb_of(&rres1);
    assert_eq!(r.links_of_kind("ifb"), vec![rifb.clone()]);
    let run_dropin = |cmd: &str, c: &Value, ifname: &str| {
        let mut k = r.sb.in_host(&o.plugin("bandwidth"));
        k.env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", CID)
            .env("CNI_NETNS", &r.pod)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", REF_PLUGINS);
        pipe(k, &c.to_string())
    };
    let rc1 = with_prev(&rc1, &rres1);
    // cnichain's CHECK passes on what the reference made
    ok(&run_dropin("CHECK", &rc1, "net1"));
    // a second attachment ADDed by cnichain beside it gets its own ifb
    let rc2 = conf(NET, entry.clone(), r.prev_result("vbw2", "net2"));
    let rres2: Value = serde_json::from_str(&ok(&run_dropin("ADD", &rc2, "net2"))).unwrap();
    let oifb = ifb_of(&rres2);
    assert_ne!(oifb, rifb);
    let rc2 = with_prev(&rc2, &rres2);
    // DEL of net2 by cnichain leaves the reference's ifb of net1
    ok(&run_dropin("DEL", &rc2, "net2"));
    assert_eq!(r.links_of_kind("ifb"), vec![rifb.clone()]);
    // DEL of net1 by cnichain removes the reference's ifb
    ok(&run_dropin("DEL", &rc1, "net1"));
    assert!(r.links_of_kind("ifb").is_empty(), "the reference's ifb was left");
    // and without prevResult too
    ok(&r.run_on_pod(
        "bandwidth",
        "ADD",
        &conf(NET, entry.clone(), r.prev_result("vbw1", "net1")),
        CID,
        "net1",
    ));
    reset_veth(r, "vbw1");
    let no_prev = json!({"cniVersion": "1.0.0", "name": NET, "type": "bandwidth", "egressRate": 1_000_000, "egressBurst": 100_000});
    ok(&run_dropin("DEL", &no_prev, "net1"));
    assert!(
        r.links_of_kind("ifb").is_empty(),
        "the reference's ifb was left (DEL without prevResult)"
    );
}

fn reset_veth(s: &Twin, veth: &str) {
    s.host_try(&format!(
        "tc qdisc del dev {veth} root; tc qdisc del dev {veth} ingress"
    ));
}
