//! Running the programs under test the way their callers do: the cnichain CLI, libcni's
//! cnitool (the peer), and a plugin exec'd by a runtime (CNI_* environment, config on
//! stdin). Every runner asserts the program neither panicked nor was killed: whatever
//! the input, cnichain answers with an exit status.

use super::*;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

/// Asserts `o` came from a process that exited by itself and did not panic.
#[track_caller]
pub fn exited(what: &str, o: Output) -> Output {
    assert_ne!(o.status.code(), Some(101), "{what} panicked: {}", stderr(&o));
    assert!(o.status.code().is_some(), "{what} killed by a signal: {}", stderr(&o));
    o
}

/// `cnichain ARGS` in the sandbox's host netns with its state paths and `CNI_PATH`.
#[track_caller]
pub fn cli(sb: &Sandbox, cni_path: &str, args: &[&str]) -> Output {
    exited(&format!("cnichain {args:?}"), cli_with(sb, cni_path, &[], args))
}

/// `cli` with extra environment, and no check of how it ended: CNICHAIN_FAULT's `abort`
/// mode kills the process on purpose.
pub fn cli_with(sb: &Sandbox, cni_path: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", cni_path).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run cnichain")
}

/// libcni's `cnitool VERB NET NETNS` in the sandbox's host netns; `caps` is CAP_ARGS
/// (unset when empty, as cnitool reads it).
#[track_caller]
pub fn cnitool(sb: &Sandbox, cni_path: &str, verb: &str, net: &str, pod: &str, caps: &str) -> Output {
    let mut c = sb.in_host(&peer_cnitool());
    c.env("CNI_PATH", cni_path).args([verb, net, pod]);
    if !caps.is_empty() {
        c.env("CAP_ARGS", caps);
    }
    c.output().expect("run cnitool")
}

/// A plugin as a runtime starts it: only `env`, PATH and the sandbox's state dir in its
/// environment. `host`: in the sandbox's host netns (else in the test's own).
pub fn plugin_cmd(sb: &Sandbox, program: &Path, env: &[(&str, &str)], host: bool) -> Command {
    let mut c = if host {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", sb.host())).arg("--").arg(program);
        c
    } else {
        Command::new(program)
    };
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNICHAIN_STATE_DIR", sb.dir.join("state"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Starts `c` with `stdin` written to it (and closed).
pub fn spawn_piped(mut c: Command, stdin: &str) -> Child {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {c:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child
}

/// A plugin run to the end in the test's own netns (`plugin_cmd`), `stdin` written.
#[track_caller]
pub fn plugin(sb: &Sandbox, program: &Path, env: &[(&str, &str)], stdin: &str) -> Output {
    let out = spawn_piped(plugin_cmd(sb, program, env, false), stdin).wait_with_output();
    exited(&program.display().to_string(), out.expect("wait for the plugin"))
}

/// A plugin run to the end in the sandbox's host netns, `stdin` written.
#[track_caller]
pub fn plugin_in_host(sb: &Sandbox, program: &Path, env: &[(&str, &str)], stdin: &str) -> Output {
    let out = spawn_piped(plugin_cmd(sb, program, env, true), stdin).wait_with_output();
    exited(&program.display().to_string(), out.expect("wait for the plugin"))
}
