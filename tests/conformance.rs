//! `cnichain conformance`: cnichain's own drop-ins pass every applicable rule, and
//! reference plugins wrapped with one injected defect each are caught by the rule meant
//! for that defect. Each defect test names every rule that fails, so a rule that starts
//! failing (or stops) for the wrong reason shows up.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temp dir removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("cnc-conf-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Report {
    code: i32,
    json: Value,
}

impl Report {
    fn with(&self, status: &str) -> BTreeSet<String> {
        self.json["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["status"] == status)
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
    fn rule(&self, id: &str) -> &Value {
        self.json["rules"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id))
            .unwrap_or_else(|| panic!("no rule {id}"))
    }
}

fn conformance(plugin: &Path, kind: &str, extra: &[&str]) -> Report {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--kind".as_ref(),
        kind.as_ref(),
        "--plugin".as_ref(),
        plugin.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_conformance(&args)
}

/// `cnichain conformance --format json ARGS` (no CNI_PATH inherited), its report.
fn run_conformance(args: &[&std::ffi::OsStr]) -> Report {
    assert!(is_root(), "conformance tests need root (network namespaces)");
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--format", "json"])
        .args(args)
        .env_remove("CNI_PATH")
        .output()
        .expect("run cnichain conformance");
    let json: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}\n{}", stdout(&o), stderr(&o)));
    Report {
        code: o.status.code().unwrap_or(-1),
        json,
    }
}

fn own(plugin: &str, kind: &str, min_pass: usize) {
    let tmp = Tmp::new(plugin);
    let bin = install_to(tmp.0.join("bin"));
    let r = conformance(&bin.join(plugin), kind, &[]);
    let failed = r.with("fail");
    let details: Vec<&Value> = failed.iter().map(|id| r.rule(id)).collect();
    assert!(failed.is_empty(), "{plugin}: failed {failed:?}: {details:#?}");
    assert_eq!(r.code, 0, "exit status with every rule passing");
    let passed = r.with("pass").len();
    assert!(passed >= min_pass, "{plugin}: only {passed} rules passed");
    // Every version the drop-in claims was tested.
    assert_eq!(r.json["testedVersions"], r.json["claimedVersions"]);
}

#[test]
fn own_bridge_passes() {
    own("bridge", "main", 55);
}
#[test]
fn own_ptp_passes() {
    own("ptp", "main", 55);
}
#[test]
fn own_host_local_passes() {
    own("host-local", "ipam", 45);
}
#[test]
fn own_static_passes() {
    own("static", "ipam", 45);
}
#[test]
fn own_tuning_passes() {
    own("tuning", "meta", 55);
}
#[test]
fn own_portmap_passes() {
    own("portmap", "meta", 55);
}
#[test]
fn own_bandwidth_passes() {
    own("bandwidth", "meta", 55);
}

/// A shell wrapper around /usr/lib/cni/`real` whose body is `script` ($REAL is the real
/// plugin, $DIR the wrapper's directory); the wrapper's stdin is the plugin's.
fn wrapper(tmp: &Tmp, real: &str, script: &str) -> PathBuf {
    let name = Path::new(real)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    wrapper_in(&tmp.0, real, &format!("defective-{name}"), script)
}

/// `wrapper`, as `dir`/`name` (a list finds its plugins by type).
fn wrapper_in(dir: &Path, real: &str, name: &str, script: &str) -> PathBuf {
    let real_path = if real.starts_with('/') {
        real.to_string()
    } else {
        format!("{REF_PLUGINS}/{real}")
    };
    let p = dir.join(name);
    let text = format!("#!/bin/sh\nREAL={real_path}\nDIR=$(dirname \"$0\")\n{WELLFORMED}\n{script}\n");
    std::fs::write(&p, text).expect("write wrapper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// `wellformed`: true for a request the real plugin would accept (every variable its
/// command needs, a valid container ID, JSON on stdin in $CONF, read once), so that a
/// defect is injected there only and not into the error paths other rules judge.
const WELLFORMED: &str = r#"CONF=$(cat)
wellformed() {
  [ -n "$CNI_CONTAINERID" ] && [ -n "$CNI_IFNAME" ] || return 1
  case "$CNI_CONTAINERID" in [a-zA-Z0-9]*) ;; *) return 1 ;; esac
  printf '%s' "$CONF" | jq -e 'type == "object"' >/dev/null 2>&1
}
real() { printf '%s' "$CONF" | "$REAL"; }"#;

// The planted defects used in both modes.
/// A second DEL of the same container fails.
const SECOND_DEL_FAILS: &str = r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then
  m="$DIR/deleted-$CNI_CONTAINERID"
  if [ -e "$m" ]; then echo '{"code":11,"msg":"already deleted"}'; exit 1; fi
  real; rc=$?; [ $rc -eq 0 ] && touch "$m"; exit $rc
fi
real"#;
/// Errors go to stderr only.
const ERROR_ON_STDERR: &str = r#"out=$(real); rc=$?
if [ $rc -ne 0 ]; then printf '%s\n' "$out" >&2; else printf '%s\n' "$out"; fi
exit $rc"#;
/// Every ADD leaves a link in the host netns.
const LEAKED_HOST_LINK: &str = r#"if [ "$CNI_COMMAND" = ADD ]; then
  real; rc=$?
  [ $rc -eq 0 ] && ip link add "lk$$" type bridge >&2
  exit $rc
fi
real"#;
/// A successful CHECK prints "OK".
const CHECK_PRINTS_OK: &str =
    r#"if [ "$CNI_COMMAND" = CHECK ]; then real; rc=$?; [ $rc -eq 0 ] && echo OK; exit $rc; fi; real"#;
/// ADD's result loses the dns.
const DROPS_DNS: &str = r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out" | jq -c 'del(.dns)'; else printf '%s\n' "$out"; fi; exit $rc; fi
real"#;

/// `intended` failed, and exactly `also` besides; exit status 1.
fn assert_caught(r: &Report, intended: &str, also: &[&str]) {
    let failed = r.with("fail");
    assert_eq!(r.code, 1, "a failing rule gives exit status 1");
    assert!(
        failed.contains(intended),
        "{intended} did not catch the defect; failed: {failed:?}; {intended}: {:#}",
        r.rule(intended)
    );
    let mut want: BTreeSet<String> = also.iter().map(|s| s.to_string()).collect();
    want.insert(intended.to_string());
    let extra: Vec<&Value> = failed.difference(&want).map(|id| r.rule(id)).collect();
    assert_eq!(failed, want, "rules failing besides {intended}: {extra:#?}");
    assert!(r.rule(intended)["required"].as_str().is_some_and(|s| !s.is_empty()));
}

/// Run the wrapped plugin at 1.0.0; `intended` must fail, and exactly `also` besides.
fn caught(real: &str, kind: &str, script: &str, intended: &str, also: &[&str]) {
    caught_at(real, "1.0.0", kind, script, intended, also, None)
}

/// `caught` at `version`; `tmp` when the real plugin lives in one (a drop-in).
fn caught_at(real: &str, version: &str, kind: &str, script: &str, intended: &str, also: &[&str], tmp: Option<Tmp>) {
    let tmp = tmp.unwrap_or_else(|| Tmp::new(intended));
    let plugin = wrapper(&tmp, real, script);
    let r = conformance(&plugin, kind, &["--versions", version]);
    assert_caught(&r, intended, also);
    // The failure carries the exact request and the plugin's answer.
    let f = r.rule(intended);
    assert!(f["request"]["env"].as_array().is_some_and(|e| !e.is_empty()), "{f:#}");
    assert!(f["required"].as_str().is_some_and(|s| !s.is_empty()), "{f:#}");
}

#[test]
fn del_that_does_nothing() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then exit 0; fi; real"#,
        "DEL-10",
        // The same DEL leaves the container's eth0, the reservation, and (netns gone)
        // the reservation again, and the baseline attachment's veth.
        &["DEL-09", "DEL-12", "DEL-15", "DEL-16"],
    );
}

#[test]
fn check_that_prints_ok() {
    caught("ptp", "main", CHECK_PRINTS_OK, "CHK-02", &[]);
}

#[test]
fn second_del_fails() {
    caught("host-local", "ipam", SECOND_DEL_FAILS, "DEL-03", &[]);
}

#[test]
fn error_on_stderr_only() {
    caught(
        "bridge",
        "main",
        ERROR_ON_STDERR,
        "ERR-01",
        // Every rule that expects an error object with a code on stdout.
        &[
            "ENV-01", "ENV-02", "ENV-03", "ENV-04", "ENV-05", "ENV-06", "ENV-07", "ENV-08", "ENV-09", "ENV-10",
            "ENV-11", "ENV-12", "ENV-13", "ADD-10", "CHK-04", "CHK-05", "CHK-06", "ERR-03", "ERR-05", "ROB-06",
            "ROB-07",
        ],
    );
}

#[test]
fn leaked_host_link() {
    caught(
        "ptp",
        "main",
        LEAKED_HOST_LINK,
        "DEL-10",
        // The link leaks whether or not the netns is there at DEL.
        &["DEL-15"],
    );
}

/// The interface is always eth0, whatever CNI_IFNAME asks.
#[test]
fn ifname_ignored() {
    caught(
        "ptp",
        "main",
        r#"case "$CNI_IFNAME" in ""|*/*|????????????????*) ;; *) export CNI_IFNAME=eth0 ;; esac
real"#,
        "ADD-13",
        &[],
    );
}

/// CHECK only looks for the interface: an address or route gone is "fine".
#[test]
fn shallow_check() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = CHECK ] && wellformed; then out=$(real); rc=$?
  if [ $rc -ne 0 ] && nsenter --net="$CNI_NETNS" ip link show "$CNI_IFNAME" >/dev/null 2>&1; then exit 0; fi
  printf '%s\n' "$out"; exit $rc; fi
real"#,
        "CHK-05",
        &["CHK-06"],
    );
}

/// DEL of what is already gone prints a result.
#[test]
fn del_prints_when_nothing_to_delete() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then
  gone=0; { [ -z "$CNI_NETNS" ] || ! nsenter --net="$CNI_NETNS" ip link show "$CNI_IFNAME" >/dev/null 2>&1; } && gone=1
  real; rc=$?; [ $rc -eq 0 ] && [ $gone = 1 ] && echo '{"cniVersion":"1.0.0"}'; exit $rc; fi
real"#,
        "DEL-03",
        // Every DEL that finds nothing: the netns gone, no CNI_NETNS, never added.
        &["DEL-04", "DEL-05", "DEL-08"],
    );
}

/// A link of the same name left by every ADD (the baseline's ADD+DEL left it too).
#[test]
fn leaked_link_of_one_name() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then real; rc=$?; [ $rc -eq 0 ] && ip link add cncleak0 type bridge 2>/dev/null; exit $rc; fi
real"#,
        "DEL-10",
        &["DEL-15"],
    );
}

/// A host route of one destination left by every ADD.
#[test]
fn leaked_route_of_one_name() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then real; rc=$?; [ $rc -eq 0 ] && ip route add blackhole 198.51.100.7/32 2>/dev/null; exit $rc; fi
real"#,
        "DEL-11",
        &[],
    );
}

/// DEL removes the bridge every pod of the network hangs on.
#[test]
fn del_removes_the_shared_bridge() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then real; rc=$?; ip link del cni0 2>/dev/null; exit $rc; fi
real"#,
        "DEL-17",
        &[],
    );
}

/// A CHECK failure (the interface gone) with a code the spec reserves.
#[test]
fn reserved_error_code_on_a_failed_check() {
    caught(
        "bridge",
        "main",
        r#"out=$(real); rc=$?
if [ $rc -ne 0 ] && [ "$CNI_COMMAND" = CHECK ]; then printf '%s' "$out" | jq -c 'if .code == 999 then .code = 42 else . end'; else printf '%s\n' "$out"; fi
exit $rc"#,
        "ERR-04",
        &[],
    );
}

/// A real failure (ADD over an existing interface) with a code the spec reserves.
#[test]
fn reserved_error_code_on_a_real_failure() {
    caught(
        "bridge",
        "main",
        r#"out=$(real); rc=$?
if [ $rc -ne 0 ]; then printf '%s' "$out" | jq -c 'if .code == 999 then .code = 42 else . end'; else printf '%s\n' "$out"; fi
exit $rc"#,
        "ERR-04",
        &[],
    );
}

/// A chain per pod, named after nothing the pod is known by, left after DEL.
#[test]
fn leaked_firewall_chain() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
  real; rc=$?
  [ $rc -eq 0 ] && iptables -t filter -N "CNCF-LEAK-$$" >&2
  exit $rc
fi
real"#,
        "DEL-13",
        &[],
    );
}

#[test]
fn error_exit_status_two() {
    caught(
        "bridge",
        "main",
        r#"real; rc=$?; [ $rc -ne 0 ] && exit 2; exit 0"#,
        "ERR-02",
        &[],
    );
}

#[test]
fn result_without_cni_version() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out" | jq -c 'del(.cniVersion)'; else printf '%s\n' "$out"; fi; exit $rc; fi
real"#,
        "ADD-02",
        &[],
    );
}

#[test]
fn log_line_on_stdout() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  [ $rc -eq 0 ] && echo "bridge: set up $CNI_IFNAME"; printf '%s\n' "$out"; exit $rc; fi
real"#,
        "ADD-12",
        &[],
    );
}

#[test]
fn accepts_unknown_version() {
    caught(
        "bridge",
        "main",
        r#"printf '%s' "$CONF" | sed 's/"99\.99\.99"/"1.0.0"/' | "$REAL""#,
        "ROB-06",
        &[],
    );
}

#[test]
fn check_that_always_succeeds() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = CHECK ] && [ -n "$CNI_NETNS" ] && wellformed; then exit 0; fi; real"#,
        "CHK-04",
        // Nor an address or a route gone.
        &["CHK-05", "CHK-06"],
    );
}

#[test]
fn meta_drops_prev_dns() {
    caught("tuning", "meta", DROPS_DNS, "PREV-04", &[]);
}

#[test]
fn meta_drops_prev_routes() {
    caught(
        "bandwidth",
        "meta",
        r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out" | jq -c '.routes = []'; else printf '%s\n' "$out"; fi; exit $rc; fi
real"#,
        "PREV-03",
        &[],
    );
}

#[test]
fn del_fails_when_netns_gone() {
    caught(
        "bridge",
        "main",
        r#"if [ "$CNI_COMMAND" = DEL ] && [ -n "$CNI_NETNS" ] && [ ! -e "$CNI_NETNS" ]; then
  echo '{"code":999,"msg":"netns gone"}'; exit 1
fi
real"#,
        "DEL-04",
        // A DEL that fails leaves the reservation behind.
        &["DEL-16"],
    );
}

#[test]
fn ipam_reservation_leak() {
    caught(
        "host-local",
        "ipam",
        r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then exit 0; fi; real"#,
        "DEL-12",
        // With the netns gone too.
        &["DEL-16"],
    );
}

/// GC (1.1.0) defects, planted in cnichain's host-local drop-in (the reference 1.1.1
/// plugins do not speak 1.1.0).
fn gc_defect(script: &str, intended: &str) {
    let tmp = Tmp::new(intended);
    let bin = install_to(tmp.0.join("bin"));
    let real = bin.join("host-local").display().to_string();
    caught_at(&real, "1.1.0", "ipam", script, intended, &[], Some(tmp));
}

#[test]
fn gc_that_removes_valid_reservations() {
    gc_defect(
        r#"if [ "$CNI_COMMAND" = GC ]; then
  real; rc=$?; dd=$(printf '%s' "$CONF" | jq -r .ipam.dataDir); rm -f "$dd"/*/1*; exit $rc
fi
real"#,
        "GC-02",
    );
}

#[test]
fn gc_that_does_nothing() {
    gc_defect(r#"if [ "$CNI_COMMAND" = GC ]; then exit 0; fi; real"#, "GC-03");
}

#[test]
fn usage_errors_exit_two() {
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--plugin", "/nonexistent/plugin"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--list"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0));
    let rows = stdout(&o).lines().count() - 1;
    assert!(rows >= 40, "only {rows} rules");
}

// --conflist: the chain-level rules over a whole list.

/// The list of a node with pods on a bridge: bridge with host-local (and its own dns),
/// portmap, tuning, bandwidth, as containerd's and CRI-O's default conflists chain them.
fn node_list(tmp: &Tmp) -> PathBuf {
    let list = serde_json::json!({
        "cniVersion": "1.0.0", "name": "cncf-list",
        "plugins": [
            { "type": "bridge", "bridge": "cncfbr1", "isGateway": true, "ipMasq": true,
              "dns": { "nameservers": ["10.79.0.53"], "search": ["cluster.local"] },
              "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.79.0.0/24" }]],
                        "routes": [{ "dst": "0.0.0.0/0" }] } },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
            { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.arp_notify": "1" } },
            { "type": "bandwidth", "capabilities": { "bandwidth": true } }
        ]
    });
    let p = tmp.0.join("node.conflist");
    std::fs::write(&p, list.to_string()).expect("write conflist");
    p
}

fn conformance_list(list: &Path, extra: &[&str]) -> Report {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--conflist".as_ref(), list.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_conformance(&args)
}

const CHAIN_RULES: &[&str] = &[
    "CHN-01", "CHN-02", "CHN-03", "CHN-04", "CHN-05", "CHN-06", "CHN-07", "DEL-17",
];

#[test]
fn own_list_passes() {
    let tmp = Tmp::new("own-list");
    let bin = install_to(tmp.0.join("bin"));
    let list = node_list(&tmp);
    let r = conformance_list(&list, &["--search-path", &bin.display().to_string()]);
    let failed = r.with("fail");
    let details: Vec<&Value> = failed.iter().map(|id| r.rule(id)).collect();
    assert!(failed.is_empty(), "failed {failed:?}: {details:#?}");
    assert_eq!(r.code, 0);
    let passed = r.with("pass");
    for id in CHAIN_RULES {
        assert!(passed.contains(*id), "{id} did not pass: {:#}", r.rule(id));
    }
    // ADD, CHECK and DEL rules run over the list as one.
    for id in ["ADD-03", "ADD-07", "CHK-01", "CHK-02", "DEL-03", "DEL-13", "DEL-15"] {
        assert!(passed.contains(id), "{id} did not pass: {:#}", r.rule(id));
    }
    assert_eq!(r.json["kind"], "chain");
    assert_eq!(
        r.json["testedVersions"],
        serde_json::json!(["1.0.0"]),
        "the list's own version"
    );
}

/// The reference plugins over the same list: the README's findings, and no others.
#[test]
fn reference_list_findings() {
    let tmp = Tmp::new("ref-list");
    let list = node_list(&tmp);
    let r = conformance_list(&list, &["--search-path", REF_PLUGINS]);
    // portmap 1.1.1's CHECK looks for an IPv6 chain it never made (README, findings).
    let want: BTreeSet<String> = ["CHK-01"].iter().map(|s| s.to_string()).collect();
    assert_eq!(r.with("fail"), want, "{:#}", r.json);
    assert!(r.rule("CHK-01")["request"]["what"]
        .as_str()
        .unwrap_or("")
        .contains("portmap"));
    assert_eq!(r.code, 1);
}

/// The reference firewall plugin finds a pod's addresses only in prevResult: the runtime's
/// DEL after an ADD that failed later in the list (no result cached) leaves its rules.
#[test]
fn reference_firewall_list_finding() {
    let tmp = Tmp::new("fw-list");
    let list = serde_json::json!({
        "cniVersion": "0.4.0", "name": "cncf-fw",
        "plugins": [
            { "type": "ptp", "ipMasq": true,
              "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.81.0.0/24" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
            { "type": "firewall" }
        ]
    });
    let path = tmp.0.join("fw.conflist");
    std::fs::write(&path, list.to_string()).expect("write");
    let r = conformance_list(&path, &["--search-path", REF_PLUGINS]);
    let want: BTreeSet<String> = ["CHN-06"].iter().map(|s| s.to_string()).collect();
    assert_eq!(r.with("fail"), want, "{:#}", r.json);
    let found = r.rule("CHN-06")["found"].as_str().unwrap_or("").to_string();
    assert!(found.contains("CNI-FORWARD"), "{found}");
}

/// One plugin of the list (`typ`) wrapped with a defect, the others cnichain's drop-ins:
/// `intended` must fail, and exactly `also` besides.
fn caught_in_list(typ: &str, script: &str, intended: &str, also: &[&str]) {
    let tmp = Tmp::new(intended);
    let bin = install_to(tmp.0.join("bin"));
    let wrapped = tmp.0.join("wrapped");
    std::fs::create_dir_all(&wrapped).expect("dir");
    wrapper_in(&wrapped, typ, typ, script);
    let list = node_list(&tmp);
    let path = format!("{}:{}", wrapped.display(), bin.display());
    let r = conformance_list(&list, &["--search-path", &path]);
    assert_caught(&r, intended, also);
}

#[test]
fn list_meta_drops_dns() {
    caught_in_list("tuning", DROPS_DNS, "CHN-05", &[]);
}

#[test]
fn list_meta_drops_interfaces() {
    // The last plugin keeps only the container's interface (re-indexing ips).
    caught_in_list(
        "bandwidth",
        r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out" | jq -c '.interfaces |= map(select((.sandbox // "") != "")) | .ips |= map(.interface = 0)'; else printf '%s\n' "$out"; fi; exit $rc; fi
real"#,
        "CHN-02",
        // The bridge's CHECK, given that cached result, misses its bridge interface.
        &["CHK-01"],
    );
}

#[test]
fn list_plugin_not_claiming_the_version() {
    caught_in_list(
        "bandwidth",
        r#"if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.1","0.4.0"]}'; exit 0; fi
real"#,
        "CHN-01",
        &[],
    );
}

#[test]
fn list_error_on_stderr_only() {
    caught_in_list("tuning", ERROR_ON_STDERR, "CHN-07", &[]);
}

#[test]
fn list_del_without_prev_result_does_nothing() {
    // Real runtimes DEL a failed ADD with no cached result: this portmap forgets its rules.
    caught_in_list(
        "portmap",
        r#"if [ "$CNI_COMMAND" = DEL ] && ! printf '%s' "$CONF" | jq -e .prevResult >/dev/null; then exit 0; fi
real"#,
        "CHN-06",
        // The reference portmap's own CHECK finding (reference_list_findings).
        &["CHK-01"],
    );
}

#[test]
fn list_del_wipes_other_attachments() {
    // portmap's DEL flushes the whole DNAT chain: every other pod's host ports go too.
    caught_in_list(
        "portmap",
        r#"if [ "$CNI_COMMAND" = DEL ]; then real; rc=$?; iptables -t nat -F CNI-HOSTPORT-DNAT >&2; exit $rc; fi
real"#,
        "DEL-17",
        // The reference portmap's own CHECK finding (reference_list_findings).
        &["CHK-01"],
    );
}

#[test]
fn list_check_that_prints_ok() {
    caught_in_list("bandwidth", CHECK_PRINTS_OK, "CHK-02", &[]);
}

#[test]
fn list_second_del_fails() {
    caught_in_list("tuning", SECOND_DEL_FAILS, "DEL-03", &[]);
}

#[test]
fn list_leaked_host_link() {
    caught_in_list(
        "portmap",
        LEAKED_HOST_LINK,
        "DEL-10",
        // The link leaks after a failed ADD too; CHK-01 is the reference portmap's own.
        &["DEL-15", "CHN-06", "CHK-01"],
    );
}

#[test]
fn list_usage() {
    let tmp = Tmp::new("list-usage");
    let list = node_list(&tmp);
    // A type with no binary in the search path: usage error, nothing run.
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--conflist"])
        .arg(&list)
        .args(["--search-path", "/nonexistent"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no plugin binary of type \"bridge\""),
        "{}",
        stderr(&o)
    );
    // --plugin names a type the list does not have.
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--conflist"])
        .arg(&list)
        .args(["--plugin", &format!("{REF_PLUGINS}/ptp")])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"ptp\""), "{}", stderr(&o));
}

/// `--plugin` with `--conflist`: that build of one plugin in its list.
#[test]
fn list_with_one_plugin_swapped_in() {
    let tmp = Tmp::new("list-swap");
    let bin = install_to(tmp.0.join("bin"));
    let list = node_list(&tmp);
    let r = conformance_list(
        &list,
        &[
            "--plugin",
            &bin.join("portmap").display().to_string(),
            "--rules",
            "CHK,CHN-08",
        ],
    );
    // The reference portmap's CHECK finding is gone with cnichain's portmap in its place.
    assert_eq!(r.with("fail"), BTreeSet::new(), "{:#}", r.json);
    assert!(r.with("pass").contains("CHK-01"));
    let chk = r.json["rules"].as_array().unwrap().iter().any(|x| x["id"] == "CHK-01");
    assert!(chk);
}

/// A harness killed mid-run (SIGKILL runs no Drop) leaves its namespaces and temp dir;
/// the next run removes them, and only those whose pid is gone.
#[test]
fn a_killed_runs_leftovers_are_swept() {
    assert!(is_root(), "conformance tests need root (network namespaces)");
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let live = std::process::id();
    let stale = format!("cncf{dead}x0-h");
    let kept = format!("cncf{live}x9999-h");
    for n in [&stale, &kept] {
        ok(&Command::new("ip").args(["netns", "add", n]).output().expect("ip"));
    }
    let dir = std::env::temp_dir().join(format!("cnichain-conformance-cncf{dead}x0"));
    std::fs::create_dir_all(dir.join("ipam")).expect("dir");
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--rules", "VER-01", "--plugin"])
        .arg(format!("{REF_PLUGINS}/bridge"))
        .output()
        .expect("run");
    let list = stdout(&Command::new("ip").args(["netns", "list"]).output().expect("ip"));
    let _ = Command::new("ip").args(["netns", "del", &kept]).output();
    let _ = Command::new("ip").args(["netns", "del", &stale]).output();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        !list.lines().any(|l| l.starts_with(&format!("{stale} ")) || l == stale),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with(&kept)),
        "a live pid's netns was removed: {list}"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}
