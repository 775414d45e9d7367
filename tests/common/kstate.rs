//! A snapshot of a network namespace's kernel state: links, addresses, routes (every
//! table), the nftables ruleset, qdiscs, and the sysctls cnichain's stages write, so
//! that a test can say "this request changed nothing in the kernel".

use std::collections::BTreeMap;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KState(pub BTreeMap<String, String>);

/// The per-netns sysctls the stages touch (bridge: forwarding; portmap:
/// route_localnet; tuning and bridge: per-interface ipv4/ipv6 keys; the demo chain's
/// somaxconn).
const SYSCTL_GLOBS: &[&str] = &[
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/core/somaxconn",
    "/proc/sys/net/ipv4/conf/*/route_localnet",
    "/proc/sys/net/ipv4/conf/*/arp_notify",
    "/proc/sys/net/ipv4/conf/*/forwarding",
    "/proc/sys/net/ipv6/conf/*/accept_dad",
];

fn run(netns: &str, argv: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {netns} {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "ip netns exec {netns} {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to 10 s) until no IPv6 address in `netns` is tentative: duplicate address
/// detection finishes on the kernel's own timeline, and a snapshot taken while it runs
/// differs from a later one for no fault of the request under test.
pub fn settle_dad(netns: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !run(netns, &["ip", "-6", "addr", "show", "tentative"]).trim().is_empty() && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A snapshot of `netns` once IPv6 duplicate address detection has settled (see
/// [`settle_dad`]): what the kernel finishes on its own after links appear is no change
/// of the command under test.
pub fn settled(netns: &str) -> KState {
    settle_dad(netns);
    KState::take(netns)
}

impl KState {
    /// Snapshot the netns `netns` (a name under /run/netns).
    pub fn take(netns: &str) -> KState {
        let mut m = BTreeMap::new();
        let views: &[(&str, &[&str])] = &[
            ("link", &["ip", "-j", "link", "show"]),
            ("addr", &["ip", "-j", "addr", "show"]),
            ("route4", &["ip", "-j", "-4", "route", "show", "table", "all"]),
            ("route6", &["ip", "-j", "-6", "route", "show", "table", "all"]),
            ("rule", &["ip", "-j", "rule", "show"]),
            ("nft", &["nft", "-j", "list", "ruleset"]),
            ("qdisc", &["tc", "-j", "qdisc", "show"]),
        ];
        for (k, argv) in views {
            m.insert(k.to_string(), run(netns, argv));
        }
        let script = format!(
            "for f in {}; do [ -e \"$f\" ] && echo \"$f=$(cat \"$f\")\"; done; true",
            SYSCTL_GLOBS.join(" ")
        );
        m.insert("sysctl".into(), run(netns, &["sh", "-c", &script]));
        KState(m)
    }

    /// Differences per view, empty when equal.
    pub fn diff(&self, after: &KState) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            let w = after.0.get(k).map(String::as_str).unwrap_or("");
            if v != w {
                // The JSON arrays' elements that differ, not the whole views.
                let split = |s: &str| -> Vec<String> { s.split("},{").map(str::to_string).collect() };
                let (a, b) = (split(v), split(w));
                let gone: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
                let new: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
                out.push(format!("{k}: before {gone:?} after {new:?}"));
            }
        }
        out
    }
}

/// Assert that the kernel state of each netns is what `before` recorded.
#[track_caller]
pub fn assert_kernel_unchanged(before: &[(String, KState)], what: &str) {
    for (ns, b) in before {
        let d = b.diff(&KState::take(ns));
        assert!(
            d.is_empty(),
            "{what} changed the kernel state of {ns}:\n  {}",
            d.join("\n  ")
        );
    }
}
