//! Files the node shares (issue 13): what cnichain writes under the state, cache and
//! data dirs is never written through a symlink someone planted, a dangling symlink at a
//! lock is a clear error (it used to spin every verb at 100% CPU), a directory others can
//! write to is named in a warning, a refused request creates nothing, and `install`
//! can always be undone.

mod common;
use common::bounded::run_bounded;
use common::snapshot::{assert_unchanged, Snapshot};
use common::*;
use serde_json::Value;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A CNI bin dir in the sandbox with every drop-in name linked to the binary.
fn drop_ins(sb: &Sandbox) -> PathBuf {
    let bin = sb.dir.join("cnibin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for n in common::twin::DROP_INS {
        let _ = symlink(cnichain_bin(), bin.join(n));
    }
    let _ = symlink(cnichain_bin(), bin.join("cnichain"));
    bin
}

/// The drop-in `name` run as a runtime runs it, with the sandbox's state dir.
fn drop_in(sb: &Sandbox, bin: &Path, name: &str, cmd: &str, netns: &str, conf: &str) -> Output {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", sb.host()))
        .arg("--")
        .arg(bin.join(name))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNICHAIN_STATE_DIR", sb.dir.join("state"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", "shared1")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin);
    run_bounded(c, conf)
}

fn roots(sb: &Sandbox) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("state", sb.dir.join("state")),
        ("cache", sb.cache_dir()),
        ("ipam", sb.ipam_dir()),
    ]
}

fn snap(sb: &Sandbox) -> Snapshot {
    let r = roots(sb);
    let refs: Vec<(&str, &Path)> = r.iter().map(|(l, p)| (*l, p.as_path())).collect();
    Snapshot::take(&refs)
}

#[track_caller]
fn unchanged(sb: &Sandbox, before: &Snapshot, what: &str) {
    let r = roots(sb);
    let refs: Vec<(&str, &Path)> = r.iter().map(|(l, p)| (*l, p.as_path())).collect();
    assert_unchanged(before, &refs, what);
}

fn msg(e: &Value) -> String {
    e["msg"].as_str().unwrap_or_default().to_string()
}

const NET: &str = "sharednet";

/// bridge + host-local, tuning: every kind of file cnichain writes (lock files, the
/// cache entry, the tuning record, the store's files).
fn conflist(sb: &Sandbox, bridge: &str, subnet: &str) -> PathBuf {
    let text = Conflist::new("1.0.0", NET)
        .plugin(Plugin::bridge(bridge, subnet))
        .plugin(Plugin::new("tuning").set("mtu", 1400))
        .text();
    sb.write_conflist("s.conflist", &text)
}

fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", "").args(["--container-id", "shared1"]).args(args);
    run_bounded(c, "")
}

/// A dangling symlink at `locks/gc.lock` (any user who can write the state dir can make
/// one): every verb used to spin at 100% CPU forever. Now: a clear error naming the
/// file, for the CLI and a drop-in alike, and nothing changed.
#[test]
fn a_dangling_symlink_at_the_gc_lock_is_a_clear_error() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("gclink");
    let pod = sb.pod("p");
    conflist(&sb, "cnsh0", "10.243.0.0/24");
    let locks = sb.dir.join("state/locks");
    std::fs::create_dir_all(&locks).expect("mkdir");
    let target = sb.dir.join("nowhere");
    symlink(&target, locks.join("gc.lock")).expect("symlink");
    let before = snap(&sb);
    for verb in ["add", "check", "del", "gc"] {
        let args: Vec<&str> = if verb == "gc" {
            vec![verb, NET]
        } else {
            vec![verb, NET, &pod]
        };
        let e = cni_err(&cli(&sb, &args));
        assert!(
            msg(&e).contains("locks/gc.lock") && msg(&e).contains("symbolic link"),
            "{verb}: {e}"
        );
        unchanged(&sb, &before, verb);
    }
    let bin = drop_ins(&sb);
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"loopback"}}"#);
    let e = cni_err(&drop_in(&sb, &bin, "loopback", "ADD", &pod, &conf));
    assert!(msg(&e).contains("gc.lock") && msg(&e).contains("symbolic link"), "{e}");
    unchanged(&sb, &before, "drop-in ADD");
    assert!(!target.exists(), "the symlink's target was created");
}

/// Symlinks planted where cnichain writes, pointing at files that must not change:
/// the temporary names of the cache entry and the tuning record (fixed names before),
/// the cache entry itself (replaced by the rename, never written through).
#[test]
fn planted_symlinks_are_never_written_through() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("plant");
    let pod = sb.pod("p");
    conflist(&sb, "cnsh1", "10.243.1.0/24");
    let cid = "shared1";
    let victims = sb.dir.join("victims");
    std::fs::create_dir_all(&victims).expect("mkdir");
    let results = sb.cache_dir().join("results");
    let tuning = sb.dir.join("state/tuning");
    std::fs::create_dir_all(&results).expect("mkdir");
    std::fs::create_dir_all(&tuning).expect("mkdir");
    let plants = [
        results.join(format!(".{NET}-{cid}-eth0.tmp")),
        results.join(format!("{NET}-{cid}-eth0")),
        tuning.join(format!(".{cid}_eth0.json.tmp")),
    ];
    for (i, p) in plants.iter().enumerate() {
        let v = victims.join(format!("v{i}"));
        std::fs::write(&v, "precious").expect("victim");
        symlink(&v, p).expect("plant");
    }
    let o = cli(&sb, &["add", NET, &pod]);
    ok(&o);
    for i in 0..plants.len() {
        let v = victims.join(format!("v{i}"));
        assert_eq!(
            std::fs::read_to_string(&v).expect("victim"),
            "precious",
            "written through {}",
            plants[i].display()
        );
    }
    let entry = &plants[1];
    assert!(
        std::fs::symlink_metadata(entry).expect("entry").is_file(),
        "the cache entry is a regular file again"
    );
    ok(&cli(&sb, &["del", NET, &pod]));
    assert!(
        !plants[0].exists() && !plants[2].exists(),
        "DEL removes the old temporary names"
    );
    let left = leftover_files(&sb);
    assert!(left.is_empty(), "{left:?}");
}

/// A symlink in the host-local store or as a lock directory: a clear error, the target
/// untouched (the reference would create or overwrite it).
#[test]
fn symlinks_in_the_store_and_lock_dirs_are_refused() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("storelink");
    let pod = sb.pod("p");
    conflist(&sb, "cnsh2", "10.243.2.0/24");
    let victims = sb.dir.join("victims");
    std::fs::create_dir_all(&victims).expect("mkdir");
    let store = sb.ipam_dir().join(NET);
    std::fs::create_dir_all(&store).expect("mkdir");

    // last_reserved_ip.0 -> a file that must keep its content.
    std::fs::write(victims.join("last"), "precious").expect("victim");
    symlink(victims.join("last"), store.join("last_reserved_ip.0")).expect("plant");
    let e = cni_err(&cli(&sb, &["add", NET, &pod]));
    assert!(
        msg(&e).contains("last_reserved_ip.0") && msg(&e).contains("symbolic link"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(victims.join("last")).unwrap(), "precious");
    std::fs::remove_file(store.join("last_reserved_ip.0")).expect("rm");

    // The store's lock (made by the ADD above, as the reference makes it) -> a path
    // that must not be created.
    std::fs::remove_file(store.join("lock")).expect("rm lock");
    symlink(victims.join("lock-target"), store.join("lock")).expect("plant");
    let e = cni_err(&cli(&sb, &["add", NET, &pod]));
    assert!(msg(&e).contains("lock") && msg(&e).contains("symbolic link"), "{e}");
    assert!(!victims.join("lock-target").exists(), "the lock's target was created");
    std::fs::remove_file(store.join("lock")).expect("rm");

    // locks/<net> -> a directory elsewhere: nothing is made in it.
    let elsewhere = victims.join("dir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::create_dir_all(sb.dir.join("state/locks")).expect("mkdir");
    symlink(&elsewhere, sb.dir.join(format!("state/locks/{NET}"))).expect("plant");
    let e = cni_err(&cli(&sb, &["add", NET, &pod]));
    assert!(msg(&e).contains("symbolic link"), "{e}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written into the symlinked dir"
    );
    std::fs::remove_file(sb.dir.join(format!("state/locks/{NET}"))).expect("rm");

    // results -> a directory elsewhere: the ADD fails (and is undone), nothing there.
    std::fs::create_dir_all(sb.cache_dir()).expect("mkdir");
    symlink(&elsewhere, sb.cache_dir().join("results")).expect("plant");
    let e = cni_err(&cli(&sb, &["add", NET, &pod]));
    assert!(msg(&e).contains("symbolic link"), "{e}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written into the symlinked dir"
    );
    std::fs::remove_file(sb.cache_dir().join("results")).expect("rm");

    ok(&cli(&sb, &["add", NET, &pod]));
    ok(&cli(&sb, &["del", NET, &pod]));
}

/// A state dir any user can write to is named in a warning on stderr; a sticky,
/// root-owned one (like /tmp) is not.
#[test]
fn a_state_dir_others_can_write_is_named_in_a_warning() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("shared");
    let pod = sb.pod("p");
    conflist(&sb, "cnsh3", "10.243.3.0/24");
    let state = sb.dir.join("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let o = cli(&sb, &["add", NET, &pod]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("writable by users other than root") && err.contains(&state.display().to_string()),
        "no warning: {err}"
    );
    ok(&cli(&sb, &["del", NET, &pod]));
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let o = cli(&sb, &["add", NET, &pod]);
    ok(&o);
    assert!(
        !stderr(&o).contains("writable by users other than root"),
        "{}",
        stderr(&o)
    );
    ok(&cli(&sb, &["del", NET, &pod]));
}

/// Requests refused for their input (drop-ins, the meta-plugin, the CLI) change nothing
/// in the state, cache and data dirs: no lock dir, no lock file, no record dir.
#[test]
fn refused_requests_create_nothing() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("refused");
    let pod = sb.pod("p");
    let bin = drop_ins(&sb);
    let ipam = sb.ipam_dir().display().to_string();
    let hl = format!(r#""ipam":{{"type":"host-local","dataDir":"{ipam}","subnet":"10.243.4.0/24"}}"#);
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "bridge",
            "ADD",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","ipam":{{"type":"host-local","dataDir":"{ipam}","subnet":"bogus"}}}}"#
            ),
        ),
        (
            "bridge",
            "ADD",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","mtu":"x",{hl}}}"#),
        ),
        (
            "ptp",
            "ADD",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"ptp","ipMasq":"yes",{hl}}}"#),
        ),
        (
            "host-local",
            "ADD",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","ipam":{{"type":"host-local","dataDir":"{ipam}","ranges":"x"}}}}"#
            ),
        ),
        (
            "static",
            "ADD",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","ipam":{{"type":"static","addresses":[{{"address":"nope"}}]}}}}"#
            ),
        ),
        (
            "tuning",
            "ADD",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"tuning","mtu":"big"}}"#),
        ),
        (
            "portmap",
            "ADD",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"portmap","capabilities":{{"portMappings":true}},"runtimeConfig":{{"portMappings":[{{"hostPort":"x"}}]}}}}"#
            ),
        ),
        (
            "bandwidth",
            "ADD",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bandwidth","ingressRate":"fast"}}"#),
        ),
        (
            "bridge",
            "DEL",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","mtu":"x",{hl}}}"#),
        ),
        (
            "bridge",
            "CHECK",
            format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"bridge","mtu":"x",{hl}}}"#),
        ),
        (
            "cnichain",
            "ADD",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"{NET}","type":"cnichain","plugins":[{{"type":"bridge","mtu":"x",{hl}}}]}}"#
            ),
        ),
    ];
    let before = snap(&sb);
    for (name, cmd, conf) in &cases {
        let o = drop_in(&sb, &bin, name, cmd, &pod, conf);
        cni_err(&o);
        unchanged(&sb, &before, &format!("refused {name} {cmd} ({conf})"));
    }
    // The CLI: a chain whose bridge is refused.
    sb.write_conflist(
        "r.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{NET}","plugins":[{{"type":"bridge","mtu":"x",{hl}}},{{"type":"tuning"}}]}}"#
        ),
    );
    for verb in ["add", "check", "del"] {
        let o = cli(&sb, &[verb, NET, &pod]);
        cni_err(&o);
        unchanged(&sb, &before, &format!("refused CLI {verb}"));
    }
    // The cnitool stand-in (libcni's no-rollback behaviour): a refused ADD too.
    let _ = symlink(cnichain_bin(), bin.join("cnitool"));
    let mut c = sb.in_host(&bin.join("cnitool"));
    c.env("CNI_PATH", "").args(["add", NET, &pod]);
    let o = run_bounded(c, "");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    unchanged(&sb, &before, "refused cnitool add");
    // A CLI DEL of an attachment that was never added succeeds and leaves nothing.
    sb.write_conflist(
        "r.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","plugins":[{{"type":"loopback"}}]}}"#),
    );
    ok(&cli(&sb, &["del", NET, &pod]));
    unchanged(&sb, &before, "DEL of nothing");
}

fn install_cmd(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(cnichain_bin());
    c.args(args).arg("--bin-dir").arg(dir);
    run_bounded(c, "")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `install --force` over a foreign `cnichain` binary keeps it as a backup, and
/// `uninstall` puts it back.
#[test]
fn install_force_keeps_a_backup_of_a_foreign_binary() {
    let sb = Sandbox::new("instbin");
    let dir = sb.dir.join("optcnibin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("cnichain"), "someone else's cnichain").expect("write");
    std::fs::write(dir.join("bridge"), "reference bridge").expect("write");
    let e = cni_err(&install_cmd(&dir, &["install"]));
    assert!(msg(&e).contains("cnichain"), "{e}");
    ok(&install_cmd(&dir, &["install", "--force"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("cnichain.cnichain-orig")).expect("backup of the binary"),
        "someone else's cnichain"
    );
    assert_ne!(std::fs::read(dir.join("cnichain")).unwrap(), b"someone else's cnichain");
    ok(&install_cmd(&dir, &["install"]));
    ok(&install_cmd(&dir, &["uninstall"]));
    assert_eq!(names_in(&dir), ["bridge", "cnichain"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("cnichain")).unwrap(),
        "someone else's cnichain"
    );
    assert_eq!(std::fs::read_to_string(dir.join("bridge")).unwrap(), "reference bridge");
}

/// An install that stops half-way (a file it must move aside cannot be moved: here
/// immutable) can be undone: the manifest was written before anything was moved.
#[test]
fn an_interrupted_install_can_be_undone() {
    require_root("chattr +i");
    let sb = Sandbox::new("instint");
    let dir = sb.dir.join("optcnibin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("bridge"), "reference bridge").expect("write");
    std::fs::write(dir.join("tuning"), "reference tuning").expect("write");
    struct Immutable(PathBuf);
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let st = Command::new("chattr")
        .arg("+i")
        .arg(dir.join("tuning"))
        .status()
        .expect("chattr");
    assert!(st.success(), "chattr +i");
    let guard = Immutable(dir.join("tuning"));
    let o = install_cmd(&dir, &["install", "--force"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("moving") && stderr(&o).contains("tuning"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("bridge.cnichain-orig")).expect("bridge moved aside before the failure"),
        "reference bridge"
    );
    drop(guard);
    ok(&install_cmd(&dir, &["uninstall"]));
    assert_eq!(names_in(&dir), ["bridge", "tuning"]);
    assert_eq!(std::fs::read_to_string(dir.join("bridge")).unwrap(), "reference bridge");
    assert_eq!(std::fs::read_to_string(dir.join("tuning")).unwrap(), "reference tuning");
}
