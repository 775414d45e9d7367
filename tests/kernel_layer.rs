//! The kernel layer (stages::netns, stages::netlink, stages::sysctl) against a real kernel.
//! Every test works in its own sandbox netns pair; every netlink socket is opened inside
//! a sandbox netns with `Netlink::new_in`, so the machine's root netns is never changed.
//! What the API reports is cross-checked with iproute2 (`ip`, `bridge`, `tc`).

mod common;
use cnichain_engine::spec::ipnet::IpNet;
use cnichain_stages::kernel::netlink::{
    errno_of, tbf, Link, Netlink, NetlinkError, RouteSpec, IFA_F_NODAD, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS,
    TC_H_ROOT,
};
use cnichain_stages::kernel::netns::{self, NetNs};
use cnichain_stages::kernel::sysctl;
use common::*;
use std::net::IpAddr;
use std::process::Command;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The sandbox's host netns, opened.
fn host_ns(sb: &Sandbox) -> NetNs {
    NetNs::open(&format!("/run/netns/{}", sb.host())).unwrap()
}

/// stdout of an iproute2 command (`ip`, `tc`, `bridge`), which must succeed.
fn run(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().expect("run iproute2");
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Ping from inside `netns` until it answers (a new bridge port or IPv6 neighbour may
/// need a moment).
fn ping_ok(sb: &Sandbox, netns: &str, args: &str) -> bool {
    for _ in 0..10 {
        if sb.sh_in(netns, &format!("ping -c1 -W1 {args}")).status.success() {
            return true;
        }
    }
    false
}

fn link(nl: &mut Netlink, name: &str) -> Link {
    nl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no link {name}"))
}

#[test]
fn bridge_veth_hairpin_addresses_routes_and_ping() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("klbr");
    let pod_path = sb.pod("p");
    let pod_name = format!("{}-p", sb.tag);
    let host = host_ns(&sb);
    let pod = NetNs::open(&pod_path).unwrap();
    let mut h = Netlink::new_in(&host).unwrap();
    let mut p = Netlink::new_in(&pod).unwrap();

    // bridge
    h.add_bridge("cbr0", Some(1400)).unwrap();
    let br = link(&mut h, "cbr0");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1400);
    assert!(br.up);
    assert_eq!(errno_of(&h.add_bridge("cbr0", None).unwrap_err()), Some(libc::EEXIST));

    // veth: host end here, peer created inside the pod with MTU and MAC
    let mac = [0x02, 0x42, 0x0a, 0x58, 0x00, 0x02];
    h.add_veth("vethk0", "eth0", &pod, Some(1400), Some(mac)).unwrap();
    let hv = link(&mut h, "vethk0");
    let cv = link(&mut p, "eth0");
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(cv.kind.as_deref(), Some("veth"));
    assert_eq!((hv.mtu, cv.mtu), (1400, 1400));
    assert_eq!(cv.mac, Some(mac));
    assert_eq!(hv.peer_index, Some(cv.index));
    assert_eq!(cv.peer_index, Some(hv.index));
    assert!(hv.link_netnsid.is_some(), "{hv:?}");
    assert!(!hv.up && !cv.up);
    assert!(
        h.link_by_name("eth0").unwrap().is_none(),
        "the peer must not appear in the host netns"
    );
    let ipl = run("ip", &["-n", &pod_name, "-d", "link", "show", "eth0"]);
    assert!(
        ipl.contains("mtu 1400") && ipl.contains("link/ether 02:42:0a:58:00:02"),
        "{ipl}"
    );
    assert!(ipl.contains("veth"), "{ipl}");

    // enslave, up, hairpin
    h.set_master(hv.index, br.index).unwrap();
    h.set_up(hv.index).unwrap();
    p.set_up(cv.index).unwrap();
    let hv2 = h.link_by_index(hv.index).unwrap().unwrap();
    assert_eq!(hv2.master, Some(br.index));
    assert!(hv2.up);
    assert!(p.link_by_index(cv.index).unwrap().unwrap().up);
    assert_eq!(h.bridge_port_hairpin(hv.index).unwrap(), Some(false));
    h.set_hairpin(hv.index, true).unwrap();
    assert_eq!(h.bridge_port_hairpin(hv.index).unwrap(), Some(true));
    assert_eq!(h.bridge_port_hairpin(br.index).unwrap(), None, "a bridge is not a port");
    let bl = run("bridge", &["-n", &sb.host(), "-d", "link", "show", "dev", "vethk0"]);
    assert!(bl.contains("hairpin on") && bl.contains("master cbr0"), "{bl}");

    // promisc, allmulti, txqueuelen, MTU, MAC, read back
    h.set_promisc(br.index, true).unwrap();
    assert!(link(&mut h, "cbr0").promisc);
    let bri = run("ip", &["-n", &sb.host(), "link", "show", "cbr0"]);
    assert!(bri.contains("PROMISC"), "{bri}");
    assert!(
        !link(&mut h, "vethk0").promisc,
        "a bridge port's promiscuity is not the user flag"
    );
    h.set_allmulti(hv.index, true).unwrap();
    h.set_txqlen(hv.index, 500).unwrap();
    let hv3 = link(&mut h, "vethk0");
    assert!(hv3.allmulti);
    assert_eq!(hv3.txqlen, 500);
    let brmac = [0x02, 0, 0, 0, 0x0b, 0x01];
    h.set_mac(br.index, brmac).unwrap();
    assert_eq!(link(&mut h, "cbr0").mac, Some(brmac));
    p.set_mtu(cv.index, 1300).unwrap();
    assert_eq!(link(&mut p, "eth0").mtu, 1300);
    p.set_mtu(cv.index, 1400).unwrap();

    // addresses, host bits kept, v4 and v6
    h.add_addr(br.index, &net("10.22.0.1/24")).unwrap();
    h.add_addr_flags(br.index, &net("fd00:22::1/64"), IFA_F_NODAD).unwrap();
    p.add_addr(cv.index, &net("10.22.0.5/24")).unwrap();
    p.add_addr_flags(cv.index, &net("fd00:22::5/64"), IFA_F_NODAD).unwrap();
    let pa = p.addrs(Some(cv.index)).unwrap();
    let v4 = pa.iter().find(|a| a.addr == net("10.22.0.5/24")).expect("v4 address");
    assert_eq!((v4.index, v4.scope), (cv.index, 0));
    let v6 = pa.iter().find(|a| a.addr == net("fd00:22::5/64")).expect("v6 address");
    assert_ne!(v6.flags & IFA_F_NODAD, 0, "{v6:?}");
    assert!(pa.iter().all(|a| a.index == cv.index));
    let ha = h.addrs(None).unwrap();
    assert!(ha.iter().any(|a| a.index == br.index && a.addr == net("10.22.0.1/24")));
    assert_eq!(
        errno_of(&p.add_addr(cv.index, &net("10.22.0.5/24")).unwrap_err()),
        Some(libc::EEXIST)
    );
    let ipa = run("ip", &["-n", &pod_name, "addr", "show", "dev", "eth0"]);
    assert!(ipa.contains("inet 10.22.0.5/24 brd 10.22.0.255"), "{ipa}");
    assert!(ipa.contains("inet6 fd00:22::5/64"), "{ipa}");
    // a second address then removed again
    p.add_addr(cv.index, &net("10.22.0.6/24")).unwrap();
    p.del_addr(cv.index, &net("10.22.0.6/24")).unwrap();
    assert!(!p
        .addrs(Some(cv.index))
        .unwrap()
        .iter()
        .any(|a| a.addr == net("10.22.0.6/24")));

    // routes: default, via gateway with metric/mtu/advmss, v6, another table
    let def4 = RouteSpec {
        gw: Some(ip("10.22.0.1")),
        oif: Some(cv.index),
        ..Default::default()
    };
    let via4 = RouteSpec {
        dst: Some(net("192.0.2.0/24")),
        gw: Some(ip("10.22.0.1")),
        oif: Some(cv.index),
        priority: Some(50),
        mtu: Some(1300),
        advmss: Some(1260),
        ..Default::default()
    };
    let def6 = RouteSpec {
        dst: Some(net("::/0")),
        gw: Some(ip("fd00:22::1")),
        oif: Some(cv.index),
        v6: true,
        ..Default::default()
    };
    let via6 = RouteSpec {
        dst: Some(net("2001:db8::/32")),
        gw: Some(ip("fd00:22::1")),
        oif: Some(cv.index),
        v6: true,
        ..Default::default()
    };
    let tbl = RouteSpec {
        dst: Some(net("198.51.100.0/24")),
        gw: Some(ip("10.22.0.1")),
        table: Some(100),
        ..Default::default()
    };
    for r in [&def4, &via4, &def6, &via6, &tbl] {
        p.add_route(r).unwrap_or_else(|e| panic!("{r}: {e:#}"));
    }
    assert_eq!(errno_of(&p.add_route(&via4).unwrap_err()), Some(libc::EEXIST));
    let r4 = p.routes(false).unwrap();
    assert!(r4.iter().all(|r| !r.v6 && r.table == Some(254)), "{r4:?}");
    let d = r4.iter().find(|r| r.dst.is_none()).expect("default route");
    assert_eq!((d.gw, d.oif), (Some(ip("10.22.0.1")), Some(cv.index)));
    let v = r4
        .iter()
        .find(|r| r.dst == Some(net("192.0.2.0/24")))
        .expect("192.0.2.0/24");
    assert_eq!(
        (v.gw, v.priority, v.mtu, v.advmss),
        (via4.gw, Some(50), Some(1300), Some(1260))
    );
    assert!(
        r4.iter().any(|r| r.dst == Some(net("10.22.0.0/24")) && r.gw.is_none()),
        "prefix route"
    );
    assert!(
        !r4.iter().any(|r| r.dst == Some(net("198.51.100.0/24"))),
        "table 100 is not main"
    );
    let t100 = p.routes_in(false, Some(100)).unwrap();
    assert!(t100
        .iter()
        .any(|r| r.dst == Some(net("198.51.100.0/24")) && r.table == Some(100)));
    let r6 = p.routes(true).unwrap();
    assert!(r6.iter().all(|r| r.v6));
    let d6 = r6.iter().find(|r| r.dst.is_none()).expect("v6 default");
    assert_eq!(d6.gw, Some(ip("fd00:22::1")));
    assert!(r6
        .iter()
        .any(|r| r.dst == Some(net("2001:db8::/32")) && r.gw == Some(ip("fd00:22::1")) && r.oif == Some(cv.index)));
    let ipr = run("ip", &["-n", &pod_name, "route", "show"]);
    assert!(ipr.contains("default via 10.22.0.1 dev eth0 \n"), "{ipr}");
    assert!(
        ipr.contains("192.0.2.0/24 via 10.22.0.1 dev eth0 metric 50 mtu 1300 advmss 1260"),
        "{ipr}"
    );
    let ipr6 = run("ip", &["-n", &pod_name, "-6", "route", "show"]);
    assert!(
        ipr6.contains("2001:db8::/32 via fd00:22::1 dev eth0 metric 1024"),
        "{ipr6}"
    );
    assert!(ipr6.contains("default via fd00:22::1 dev eth0 metric 1024"), "{ipr6}");

    p.del_route(&via4).unwrap();
    assert!(!p.routes(false).unwrap().iter().any(|r| r.dst == via4.dst));
    assert_eq!(errno_of(&p.del_route(&via4).unwrap_err()), Some(libc::ESRCH));
    p.del_route(&via6).unwrap();
    assert!(!p.routes(true).unwrap().iter().any(|r| r.dst == via6.dst));

    // traffic: the pod reaches the bridge address over the veth, v4 and v6
    assert!(
        ping_ok(&sb, &pod_name, "10.22.0.1"),
        "no IPv4 ping from the pod to the bridge"
    );
    assert!(
        ping_ok(&sb, &pod_name, "-6 fd00:22::1"),
        "no IPv6 ping from the pod to the bridge"
    );

    // deleting the host end deletes the pod end
    h.del_link(hv.index).unwrap();
    assert!(h.link_by_index(hv.index).unwrap().is_none());
    assert!(p.link_by_name("eth0").unwrap().is_none());
}

#[test]
fn ifb_ingress_redirect_and_tbf_like_the_reference_bandwidth_plugin() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("kltc");
    let pod_path = sb.pod("p");
    let pod_name = format!("{}-p", sb.tag);
    let hname = sb.host();
    let host = host_ns(&sb);
    let pod = NetNs::open(&pod_path).unwrap();
    let mut h = Netlink::new_in(&host).unwrap();
    let mut p = Netlink::new_in(&pod).unwrap();

    h.add_veth("vethb0", "eth0", &pod, None, None).unwrap();
    let hv = link(&mut h, "vethb0");
    let cv = link(&mut p, "eth0");
    h.set_up(hv.index).unwrap();
    p.set_up(cv.index).unwrap();
    h.add_addr(hv.index, &net("10.33.0.1/24")).unwrap();
    p.add_addr(cv.index, &net("10.33.0.2/24")).unwrap();

    h.add_ifb("ifbk0").unwrap();
    let ifb = link(&mut h, "ifbk0");
    assert_eq!(ifb.kind.as_deref(), Some("ifb"));
    assert!(ifb.up);

    // egress of the pod: ingress qdisc + u32 redirect to the ifb, tbf on the ifb
    h.add_ingress_qdisc(hv.index).unwrap();
    h.add_redirect_filter(hv.index, ifb.index).unwrap();
    let (in_rate, in_burst) = (125_000u64, 32_768u32); // 1 Mbit/s, 32 KiB
    let (eg_rate, eg_burst) = (250_000u64, 65_536u32); // 2 Mbit/s, 64 KiB
    h.add_tbf(ifb.index, eg_rate, eg_burst, tbf::reference_limit(eg_rate, eg_burst))
        .unwrap();
    // ingress of the pod: tbf on the host veth
    h.add_tbf(hv.index, in_rate, in_burst, tbf::reference_limit(in_rate, in_burst))
        .unwrap();
    assert_eq!(
        errno_of(&h.add_tbf(hv.index, in_rate, in_burst, 1).unwrap_err()),
        Some(libc::EEXIST)
    );
    assert_eq!(
        errno_of(&h.add_ingress_qdisc(hv.index).unwrap_err()),
        Some(libc::EEXIST)
    );
    assert!(h.add_tbf(hv.index, 0, 1, 1).is_err());

    // read back: qdiscs of each device only
    let qv = h.qdiscs(hv.index).unwrap();
    assert!(qv.iter().all(|q| q.index == hv.index), "{qv:?}");
    assert_eq!(qv.len(), 2, "{qv:?}");
    let t = qv.iter().find(|q| q.kind == "tbf").expect("tbf on the veth");
    assert_eq!((t.handle, t.parent), (TBF_HANDLE, TC_H_ROOT));
    let tp = t.tbf.expect("tbf params");
    assert_eq!(tp.rate, in_rate);
    assert_eq!(tp.burst, in_burst);
    assert_eq!(tp.limit, 3125 + in_burst);
    let ing = qv.iter().find(|q| q.kind == "ingress").expect("ingress qdisc");
    assert_eq!((ing.handle, ing.parent), (INGRESS_HANDLE, TC_H_INGRESS));
    assert_eq!(ing.tbf, None);
    let qi = h.qdiscs(ifb.index).unwrap();
    assert_eq!(qi.len(), 1, "{qi:?}");
    let ti = qi[0].tbf.expect("tbf on the ifb");
    assert_eq!((ti.rate, ti.burst, ti.limit), (eg_rate, eg_burst, 6250 + eg_burst));

    let fl = h.filters(hv.index, INGRESS_HANDLE).unwrap();
    let f = fl.iter().find(|f| f.redirect_to().is_some()).expect("redirect filter");
    assert_eq!(f.redirect_to(), Some(ifb.index));
    assert_eq!((f.kind.as_str(), f.priority, f.protocol), ("u32", 1, 3));
    assert_eq!(f.classid, Some(0x0001_0001));
    assert_eq!(f.parent, INGRESS_HANDLE);

    // the same seen by tc
    let tq = run("tc", &["-n", &hname, "-s", "qdisc", "show", "dev", "vethb0"]);
    assert!(tq.contains("qdisc tbf 1: root"), "{tq}");
    assert!(tq.contains("rate 1Mbit burst 32Kb lat 25ms"), "{tq}");
    assert!(tq.contains("qdisc ingress ffff: parent ffff:fff1"), "{tq}");
    let tqi = run("tc", &["-n", &hname, "-s", "qdisc", "show", "dev", "ifbk0"]);
    assert!(tqi.contains("qdisc tbf 1: root"), "{tqi}");
    assert!(tqi.contains("rate 2Mbit burst 64Kb lat 25ms"), "{tqi}");
    assert!(!tqi.contains("ingress"), "{tqi}");
    let tf = run(
        "tc",
        &["-n", &hname, "filter", "show", "dev", "vethb0", "parent", "ffff:"],
    );
    assert!(tf.contains("protocol all pref 1 u32"), "{tf}");
    assert!(tf.contains("flowid 1:1"), "{tf}");
    assert!(tf.contains("match 00000000/00000000 at 0"), "{tf}");
    assert!(tf.contains("mirred (Egress Redirect to device ifbk0) stolen"), "{tf}");
    let js: serde_json::Value =
        serde_json::from_str(&run("tc", &["-n", &hname, "-j", "qdisc", "show", "dev", "vethb0"])).unwrap();
    let opts = js
        .as_array()
        .and_then(|a| a.iter().find(|q| q["kind"] == "tbf"))
        .map(|q| q["options"].clone())
        .expect("tbf in tc -j");
    assert_eq!(opts["rate"].as_u64(), Some(tp.rate));
    assert_eq!(opts["burst"].as_u64(), Some(u64::from(tp.burst)));
    assert_eq!(opts["lat"].as_u64(), Some(25_000));

    // traffic from the pod goes through the redirect and is counted by the ifb's tbf
    assert!(
        ping_ok(&sb, &pod_name, "10.33.0.1"),
        "no ping from the pod to the host veth"
    );
    let js: serde_json::Value =
        serde_json::from_str(&run("tc", &["-n", &hname, "-s", "-j", "qdisc", "show", "dev", "ifbk0"])).unwrap();
    let pkts = js[0]["packets"].as_u64().unwrap_or(0);
    assert!(pkts > 0, "nothing redirected to the ifb: {js}");

    // a rate that needs TCA_TBF_RATE64
    h.add_ifb("ifbk1").unwrap();
    let ifb1 = link(&mut h, "ifbk1");
    let big = 5_000_000_000u64; // 40 Gbit/s
    h.add_tbf(ifb1.index, big, 1_000_000, tbf::reference_limit(big, 1_000_000))
        .unwrap();
    let t1 = h.qdiscs(ifb1.index).unwrap()[0].tbf.expect("tbf");
    assert_eq!((t1.rate, t1.limit), (big, 126_000_000));
    // at 5 GB/s one 64 ns tick of the kernel's buffer is 320 bytes: the burst reads back
    // rounded down to it, as tc shows it too
    assert!(t1.burst_matches(1_000_000) && t1.burst <= 1_000_000, "{t1:?}");
    let tq1 = run("tc", &["-n", &hname, "qdisc", "show", "dev", "ifbk1"]);
    assert!(tq1.contains("rate 40Gbit"), "{tq1}");
    let js: serde_json::Value =
        serde_json::from_str(&run("tc", &["-n", &hname, "-j", "qdisc", "show", "dev", "ifbk1"])).unwrap();
    assert_eq!(js[0]["options"]["rate"].as_u64(), Some(big), "{js}");
    // tc truncates the buffer time to whole microseconds before it shows a burst
    let tc_burst = js[0]["options"]["burst"].as_u64().unwrap_or(0);
    assert!(
        tc_burst <= u64::from(t1.burst) && u64::from(t1.burst) - tc_burst <= big / 1_000_000,
        "{js}"
    );

    // the ifb goes only when deleted; the veth takes its qdiscs and its peer along
    h.del_link(ifb.index).unwrap();
    h.del_link(ifb1.index).unwrap();
    assert!(h.link_by_name("ifbk0").unwrap().is_none());
    assert!(h.qdiscs(ifb.index).unwrap().is_empty());
    h.del_link(hv.index).unwrap();
    assert!(h.qdiscs(hv.index).unwrap().is_empty());
    assert!(p.link_by_name("eth0").unwrap().is_none());
    assert_eq!(errno_of(&h.del_link(hv.index).unwrap_err()), Some(libc::ENODEV));
}

#[test]
fn sysctl_in_a_netns_leaves_the_host_alone() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("klsy");
    let pod_path = sb.pod("p");
    let pod_name = format!("{}-p", sb.tag);
    let host = host_ns(&sb);
    let pod = NetNs::open(&pod_path).unwrap();

    // read-only look at the test thread's own netns, to show it never changes
    let caller_fwd = sysctl::read("net.ipv4.ip_forward").unwrap();
    let caller_rp = sysctl::read("net.ipv4.conf.all.rp_filter").unwrap();
    let host_fwd = sysctl::read_in(&host, "net.ipv4.ip_forward").unwrap();
    let host_rp = sysctl::read_in(&host, "net/ipv4/conf/all/rp_filter").unwrap();

    let new_fwd = if host_fwd == "1" { "0" } else { "1" };
    sysctl::write_in(&pod, "net.ipv4.ip_forward", new_fwd).unwrap();
    assert_eq!(sysctl::read_in(&pod, "net.ipv4.ip_forward").unwrap(), new_fwd);
    sysctl::write_in(&pod, "net/ipv4/conf/all/rp_filter", "2").unwrap();
    assert_eq!(sysctl::read_in(&pod, "net.ipv4.conf.all.rp_filter").unwrap(), "2");
    // seen the same way from a process in the pod
    let o = sb.sh_in(
        &pod_name,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/rp_filter",
    );
    assert_eq!(ok(&o), format!("{new_fwd}\n2\n"));

    // the sandbox host and the caller are unchanged
    assert_eq!(sysctl::read_in(&host, "net.ipv4.ip_forward").unwrap(), host_fwd);
    assert_eq!(sysctl::read_in(&host, "net.ipv4.conf.all.rp_filter").unwrap(), host_rp);
    assert_eq!(sysctl::read("net.ipv4.ip_forward").unwrap(), caller_fwd);
    assert_eq!(sysctl::read("net.ipv4.conf.all.rp_filter").unwrap(), caller_rp);

    // several writes in one run_in
    netns::run_in(&pod, || {
        sysctl::write("net.ipv4.conf.default.rp_filter", "1")?;
        sysctl::write("net.ipv6.conf.all.forwarding", "1")?;
        assert_eq!(sysctl::read("net.ipv4.conf.default.rp_filter")?, "1");
        assert_eq!(sysctl::read("net.ipv6.conf.all.forwarding")?, "1");
        Ok(())
    })
    .unwrap();

    // an interface key exists only where the interface is
    let mut h = Netlink::new_in(&host).unwrap();
    h.add_veth("vethsy", "eth7", &pod, None, None).unwrap();
    let key = "net/ipv4/conf/eth7/rp_filter";
    let in_pod = netns::run_in(&pod, || sysctl::net_path(key)).unwrap();
    assert_eq!(
        in_pod,
        std::path::PathBuf::from("/proc/sys/net/ipv4/conf/eth7/rp_filter")
    );
    let e = netns::run_in(&host, || sysctl::net_path(key)).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOENT), "{e:#}");
    sysctl::write_in(&pod, "net.ipv4.conf.eth7.rp_filter", "2").unwrap();
    assert_eq!(sysctl::read_in(&pod, key).unwrap(), "2");
    assert_eq!(sysctl::read_in(&host, "net.ipv4.conf.vethsy.rp_filter").unwrap(), "0");

    // a value the kernel refuses keeps its errno
    let e = sysctl::write_in(&pod, "net.ipv4.ip_forward", "not-a-number").unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::EINVAL), "{e:#}");
}

#[test]
fn net_path_refuses_escapes() {
    require_root("network namespaces");
    let sb = Sandbox::new("klnp");
    let host = host_ns(&sb);
    netns::run_in(&host, || {
        for bad in [
            "net.ipv4/../../kernel",
            "net..x",
            "kernel.hostname",
            "net/../../etc",
            "net/ipv4/../../../etc/passwd",
            "net",
            "",
            "net.ipv4.ip_forward\0",
            "/proc/sys/kernel/hostname",
            "net/./ipv4/ip_forward",
            "fs.file-max",
        ] {
            let e = sysctl::net_path(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid net sysctl key"), "{bad:?}: {e}");
            assert!(sysctl::write(bad, "1").is_err(), "{bad:?} written");
        }
        assert_eq!(
            sysctl::net_path("net.ipv4.ip_forward")?,
            std::path::PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl::net_path("net/ipv4/conf/lo/rp_filter")?,
            std::path::PathBuf::from("/proc/sys/net/ipv4/conf/lo/rp_filter")
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn errors_keep_errno_and_name_the_object() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("kler");
    let pod_path = sb.pod("p");
    let host = host_ns(&sb);
    let mut h = Netlink::new_in(&host).unwrap();

    let e = h.del_link(987_654).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENODEV));
    let msg = format!("{e:#}");
    assert!(msg.contains("delete link 987654") && msg.contains(&sb.host()), "{msg}");
    let e = e.context("failed to delete eth0");
    assert_eq!(errno_of(&e), Some(libc::ENODEV), "context must not hide the errno");
    assert_eq!(errno_of(&h.set_up(987_654).unwrap_err()), Some(libc::ENODEV));
    assert!(h.link_by_index(987_654).unwrap().is_none());
    assert!(h.link_by_name("nope0").unwrap().is_none());
    assert!(h.link_by_name("a-name-far-too-long-for-linux").unwrap().is_none());
    assert!(h.link_by_name("").unwrap().is_none());
    assert_eq!(h.bridge_port_hairpin(987_654).unwrap(), None);
    assert_eq!(
        errno_of(&h.del_addr(1, &net("10.99.0.1/24")).unwrap_err()),
        Some(libc::EADDRNOTAVAIL)
    );
    let absent = RouteSpec {
        dst: Some(net("10.99.0.0/24")),
        ..Default::default()
    };
    assert_eq!(errno_of(&h.del_route(&absent).unwrap_err()), Some(libc::ESRCH));
    // the kernel answers a filter dump for a missing device with nothing
    assert!(h.filters(987_654, INGRESS_HANDLE).unwrap().is_empty());
    assert!(h.qdiscs(987_654).unwrap().is_empty());

    // the kernel's extended ack text is kept when it sends one
    h.add_bridge("cbrx", None).unwrap();
    let br = link(&mut h, "cbrx");
    let e = h.set_mtu(br.index, 10).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::EINVAL));
    let kmsg = e.downcast_ref::<NetlinkError>().and_then(|n| n.kernel_msg.clone());
    assert!(kmsg.is_some_and(|m| format!("{e:#}").ends_with(&m)), "{e:#}");
    assert!(
        format!("{e:#}").contains(&format!("set mtu 10 on link {}", br.index)),
        "{e:#}"
    );
    let e = h.add_veth("vethx", "eth0", &NetNs::open(&pod_path).unwrap(), None, None);
    assert!(e.is_ok());
    let e = h
        .add_veth("vethy", "eth0", &NetNs::open(&pod_path).unwrap(), None, None)
        .unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::EEXIST), "{e:#}");
    assert!(format!("{e:#}").contains("add veth \"vethy\" (peer \"eth0\""), "{e:#}");
    assert!(
        h.link_by_name("vethy").unwrap().is_none(),
        "a failed pair leaves nothing behind"
    );

    // netns paths
    let e = NetNs::open("/run/netns/cnichain-no-such-netns").unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOENT));
    let e = NetNs::open("/etc/hostname").unwrap_err();
    assert!(e.to_string().contains("not a network namespace"), "{e}");
    let e = NetNs::open("/proc/self/ns/mnt").unwrap_err();
    assert!(e.to_string().contains("not a network namespace"), "{e}");
}

#[test]
fn run_in_does_not_leak_the_netns() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("klrn");
    let pod_path = sb.pod("p");
    let host = host_ns(&sb);
    let pod = NetNs::open(&pod_path).unwrap();
    let caller = NetNs::current().unwrap().id().unwrap();
    let pod_id = pod.id().unwrap();
    assert_ne!(caller, pod_id);

    for _ in 0..20 {
        let inside = netns::run_in(&pod, || NetNs::current()?.id()).unwrap();
        assert_eq!(inside, pod_id);
        assert_eq!(NetNs::current().unwrap().id().unwrap(), caller);
    }
    assert!(NetNs::open(&pod_path).unwrap().same_as(&pod).unwrap());
    let procfs = netns::run_in(&pod, || NetNs::open("/proc/thread-self/ns/net")).unwrap();
    assert!(procfs.same_as(&pod).unwrap());

    // borrowing, errors and panics come back to the caller
    let mut seen = Vec::new();
    netns::run_in(&pod, || {
        seen.push(NetNs::current()?.id()?);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![pod_id]);
    let e = netns::run_in(&pod, || -> anyhow::Result<()> { anyhow::bail!("stage failed") }).unwrap_err();
    assert_eq!(e.to_string(), "stage failed");
    let e = netns::run_in(&pod, || -> anyhow::Result<()> { panic!("oops") }).unwrap_err();
    assert!(
        e.to_string().contains("oops") && e.to_string().contains(&pod_path),
        "{e}"
    );
    assert_eq!(NetNs::current().unwrap().id().unwrap(), caller);

    // a socket made in a netns stays there, whatever thread uses it
    let mut p = Netlink::new_in(&pod).unwrap();
    let mut h = Netlink::new_in(&host).unwrap();
    h.add_bridge("cbrn", None).unwrap();
    let pod_links: Vec<String> = p.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(pod_links, vec!["lo".to_string()]);
    let host_links: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(host_links.contains(&"cbrn".to_string()) && host_links.contains(&"lo".to_string()));
    let from_thread = std::thread::spawn(move || p.links().map(|l| l.len()))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(from_thread, 1);
    assert_eq!(NetNs::current().unwrap().id().unwrap(), caller);
}

#[test]
fn links_move_rename_and_list() {
    require_root("network namespaces");
    let mut sb = Sandbox::new("klmv");
    let pod_path = sb.pod("p");
    let host = host_ns(&sb);
    let pod = NetNs::open(&pod_path).unwrap();
    let mut h = Netlink::new_in(&host).unwrap();
    let mut p = Netlink::new_in(&pod).unwrap();

    // both ends in the host, then one moved and renamed
    h.add_veth("vma", "vmb", &host, Some(1500), None).unwrap();
    let b = link(&mut h, "vmb");
    assert_eq!(b.link_netnsid, None, "same netns: no link netnsid");
    h.set_name(b.index, "vmc").unwrap();
    assert!(h.link_by_name("vmb").unwrap().is_none());
    let c = link(&mut h, "vmc");
    assert_eq!(c.index, b.index);
    h.set_netns(c.index, &pod).unwrap();
    assert!(h.link_by_name("vmc").unwrap().is_none());
    let moved = link(&mut p, "vmc");
    assert_eq!(moved.kind.as_deref(), Some("veth"));
    p.set_up(moved.index).unwrap();
    p.set_down(moved.index).unwrap();
    assert!(!link(&mut p, "vmc").up);
    let names: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(
        names.contains(&"vma".to_string()) && !names.contains(&"vmc".to_string()),
        "{names:?}"
    );
    // master release
    h.add_bridge("cbrm", None).unwrap();
    let br = link(&mut h, "cbrm");
    let a = link(&mut h, "vma");
    h.set_master(a.index, br.index).unwrap();
    assert_eq!(link(&mut h, "vma").master, Some(br.index));
    h.set_master(a.index, 0).unwrap();
    assert_eq!(link(&mut h, "vma").master, None);
    assert_eq!(h.bridge_port_hairpin(a.index).unwrap(), None);
}

/// A VLAN-style name (`br.9`) has its own sysctl directory, reached by the slashed key
/// `iface_key` builds (the dotted form would split the name); `disable_accept_ra` sets it,
/// and fails for a link that is not there instead of passing silently.
#[test]
fn dotted_link_names_and_accept_ra() {
    require_root("network namespaces");
    let sb = Sandbox::new("kldot");
    let host = host_ns(&sb);
    let mut h = Netlink::new_in(&host).unwrap();
    h.add_bridge("br.9", None).unwrap();
    let key = sysctl::iface_key("ipv6", "br.9", "accept_ra").unwrap();
    assert_eq!(key, "net/ipv6/conf/br.9/accept_ra");
    sysctl::write_in(&host, &key, "1").unwrap();
    // The dotted form names net/ipv6/conf/br/9/accept_ra, which does not exist.
    let e = sysctl::read_in(&host, "net.ipv6.conf.br.9.accept_ra").unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::ENOENT), "{e:#}");
    netns::run_in(&host, || sysctl::disable_accept_ra("br.9")).unwrap();
    let o = sb.sh_in(&sb.host(), "cat /proc/sys/net/ipv6/conf/br.9/accept_ra");
    assert_eq!(ok(&o), "0\n");
    let e = netns::run_in(&host, || sysctl::disable_accept_ra("br.10")).unwrap_err();
    assert!(format!("{e:#}").contains("accept_ra"), "{e:#}");
    assert_eq!(errno_of(&e), Some(libc::ENOENT), "{e:#}");
}
