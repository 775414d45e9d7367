//! Quiet failure modes (issue 13): a stdout that is closed by the time cnichain writes a
//! result (`cnichain add ... | true`) is an error with exit status 1, never a panic; and
//! a plugin-mode request larger than the config file cap is refused without reading it
//! into memory.

mod common;
use common::*;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::process::{Command, Output, Stdio};

/// Run `cmd` with its stdout a pipe whose read end is closed before it writes anything.
fn with_closed_stdout(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The read end goes now, long before the command has a result to write.
    drop(child.stdout.take());
    let mut err = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut err);
    }
    let status = child.wait().expect("wait");
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

#[track_caller]
fn failed_cleanly(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: want exit status 1 (101 is a panic): {}",
        stderr(o)
    );
    assert!(stderr(o).contains("Broken pipe"), "{what}: {}", stderr(o));
}

const NET: &str = "closednet";

#[test]
fn a_closed_stdout_after_add_is_an_error_not_a_panic() {
    require_root("netns, veth, bridges");
    let mut sb = Sandbox::new("closed");
    let pod = sb.pod("p");
    sb.write_conflist(
        "c.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{NET}","plugins":[{{"type":"loopback"}}]}}"#),
    );
    // The CLI: ADD committed (the cache entry is there), then stdout failed.
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", "").args(["add", NET, &pod]);
    let o = with_closed_stdout(c);
    failed_cleanly(&o, "cnichain add");
    assert!(stderr(&o).contains("ADD succeeded"), "{}", stderr(&o));
    assert_eq!(sb.files_in("cache").len(), 1, "the ADD committed");
    ok(&sb.cnichain("", &["del", NET, &pod]));

    // version, and the cnitool stand-in.
    let o = with_closed_stdout({
        let mut c = Command::new(cnichain_bin());
        c.arg("version");
        c
    });
    failed_cleanly(&o, "cnichain version");
    let bin = sb.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    symlink(cnichain_bin(), bin.join("cnitool")).unwrap();
    symlink(cnichain_bin(), bin.join("loopback")).unwrap();
    let mut c = sb.in_host(&bin.join("cnitool"));
    c.env("CNI_PATH", "").args(["add", NET, &pod]);
    let o = with_closed_stdout(c);
    failed_cleanly(&o, "cnitool add");
    ok(&sb.cnichain("", &["del", NET, &pod]));

    // A drop-in: the runtime would never see the result.
    let mut c = sb.in_host(&bin.join("loopback"));
    c.env("CNI_COMMAND", "VERSION").env("CNI_PATH", "");
    let o = with_closed_stdout(c);
    failed_cleanly(&o, "loopback VERSION");
    assert!(sb.files_in("cache").is_empty());
}

/// Plugin-mode stdin beyond the config file cap (16 MiB): a clear error naming the cap.
#[test]
fn plugin_mode_stdin_is_capped() {
    let sb = Sandbox::new("bigin");
    let bin = sb.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    symlink(cnichain_bin(), bin.join("loopback")).unwrap();
    let mut c = Command::new(bin.join("loopback"));
    c.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c")
        .env("CNI_NETNS", "/run/netns/none")
        .env("CNI_IFNAME", "lo")
        .env("CNI_PATH", &bin)
        .env("CNICHAIN_STATE_DIR", sb.dir.join("state"));
    // A valid JSON object padded past the cap with white space.
    let mut big = String::from(r#"{"cniVersion":"1.0.0","name":"n","type":"loopback"}"#);
    big.push_str(&" ".repeat(17 << 20));
    let o = common::bounded::run_bounded(c, &big);
    let e = cni_err(&o);
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"].as_str().unwrap_or("").contains("larger than 16777216 bytes"),
        "{e}"
    );
}

/// A validate report nobody received is not a clean run: exit 2, no panic.
#[test]
fn a_closed_stdout_fails_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conflists");
    let mut c = Command::new(cnichain_bin());
    c.arg("validate").arg(&dir);
    let o = with_closed_stdout(c);
    assert_eq!(o.status.code(), Some(2), "want exit status 2: {}", stderr(&o));
    assert!(stderr(&o).contains("Broken pipe"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
