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
    assert!(is_root(), "conformance tests need root (network namespaces)");
    let o = Command::new(cnichain_bin())
        .args(["conformance", "--format", "json", "--kind", kind, "--plugin"])
        .arg(plugin)
        .args(extra)
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
    let bin = tmp.0.join("bin");
    ok(&Command::new(cnichain_bin())
        .args(["install", "--bin-dir"])
        .arg(&bin)
        .output()
        .expect("install"));
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
    let real_path = if real.starts_with('/') {
        real.to_string()
    } else {
        format!("{REF_PLUGINS}/{real}")
    };
    let name = Path::new(real)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = tmp.0.join(format!("defective-{name}"));
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

/// Run the wrapped plugin at 1.0.0; `intended` must fail, and exactly `also` besides.
fn caught(real: &str, kind: &str, script: &str, intended: &str, also: &[&str]) {
    caught_at(real, "1.0.0", kind, script, intended, also, None)
}

/// `caught` at `version`; `tmp` when the real plugin lives in one (a drop-in).
fn caught_at(real: &str, version: &str, kind: &str, script: &str, intended: &str, also: &[&str], tmp: Option<Tmp>) {
    let tmp = tmp.unwrap_or_else(|| Tmp::new(intended));
    let plugin = wrapper(&tmp, real, script);
    let r = conformance(&plugin, kind, &["--versions", version]);
    let failed = r.with("fail");
    assert_eq!(r.code, 1, "a failing rule gives exit status 1");
    assert!(
        failed.contains(intended),
        "{intended} did not catch the defect; failed: {failed:?}; {intended}: {:#}",
        r.rule(intended)
    );
    let mut want: BTreeSet<String> = also.iter().map(|s| s.to_string()).collect();
    want.insert(intended.to_string());
    assert_eq!(failed, want, "rules failing besides {intended}");
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
        // the reservation again.
        &["DEL-09", "DEL-12", "DEL-16"],
    );
}

#[test]
fn check_that_prints_ok() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = CHECK ]; then real; rc=$?; [ $rc -eq 0 ] && echo OK; exit $rc; fi; real"#,
        "CHK-02",
        &[],
    );
}

#[test]
fn second_del_fails() {
    caught(
        "host-local",
        "ipam",
        r#"if [ "$CNI_COMMAND" = DEL ] && wellformed; then
  m="$DIR/deleted-$CNI_CONTAINERID"
  if [ -e "$m" ]; then echo '{"code":11,"msg":"already deleted"}'; exit 1; fi
  real; rc=$?; [ $rc -eq 0 ] && touch "$m"; exit $rc
fi
real"#,
        "DEL-03",
        &[],
    );
}

#[test]
fn error_on_stderr_only() {
    caught(
        "bridge",
        "main",
        r#"out=$(real); rc=$?
if [ $rc -ne 0 ]; then printf '%s\n' "$out" >&2; else printf '%s\n' "$out"; fi
exit $rc"#,
        "ERR-01",
        // Every rule that expects an error object with a code on stdout.
        &[
            "ENV-01", "ENV-02", "ENV-03", "ENV-04", "ENV-05", "ENV-06", "ENV-07", "ENV-08", "ENV-09", "ENV-10",
            "ENV-11", "ENV-12", "ENV-13", "ADD-10", "CHK-04", "ERR-03", "ERR-05", "ROB-06", "ROB-07",
        ],
    );
}

#[test]
fn leaked_host_link() {
    caught(
        "ptp",
        "main",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
  real; rc=$?
  [ $rc -eq 0 ] && ip link add "lk$$" type bridge >&2
  exit $rc
fi
real"#,
        "DEL-10",
        // The link leaks whether or not the netns is there at DEL.
        &["DEL-15"],
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
        &[],
    );
}

#[test]
fn meta_drops_prev_dns() {
    caught(
        "tuning",
        "meta",
        r#"if [ "$CNI_COMMAND" = ADD ]; then out=$(real); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out" | jq -c 'del(.dns)'; else printf '%s\n' "$out"; fi; exit $rc; fi
real"#,
        "PREV-04",
        &[],
    );
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
    let bin = tmp.0.join("bin");
    ok(&Command::new(cnichain_bin())
        .args(["install", "--bin-dir"])
        .arg(&bin)
        .output()
        .expect("install"));
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
