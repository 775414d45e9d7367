//! The exec fallback, observed from the plugin's side: a recording plugin shows the exact
//! request JSON, environment and order cnichain sends for every verb, and the same
//! chain run through the libcni-based cnitool must receive the same requests.

mod common;
use common::*;
use serde_json::{json, Value};

/// A CNI_PATH dir in the sandbox with the recorder under several type names.
fn recorder_path(sb: &Sandbox) -> String {
    let bin = sb.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["rec-main", "rec-meta", "rec-caps", "rec-ipam"] {
        let _ = std::os::unix::fs::symlink(recorder_bin(), bin.join(name));
    }
    bin.display().to_string()
}

fn stdin_of(rec: &Value) -> Value {
    serde_json::from_str(rec["stdin"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

fn env_of(rec: &Value, k: &str) -> String {
    rec["env"][k].as_str().unwrap_or("<unset>").to_string()
}

const CHAIN: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "@NET@",
  "plugins": [
    {"type": "rec-main", "zeta": [3, 2, 1], "alpha": {"nested": true}, "ipam": {"type": "rec-ipam", "x": 1}},
    {"type": "rec-meta", "name": "ignored-local-name", "cniVersion": "0.3.1"},
    {"type": "rec-caps", "capabilities": {"portMappings": true, "bandwidth": false}, "runtimeConfig": {"keep": 1}}
  ]
}"#;

#[test]
fn add_check_del_send_libcni_requests_in_order() {
    let mut sb = Sandbox::new("rec1");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10-chain.conflist", &CHAIN.replace("@NET@", &net));
    let caps =
        r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":1}}"#;

    let out = sb.cnichain(
        &path,
        &[
            "--cap-args",
            caps,
            "--args",
            "IgnoreUnknown=1;FOO=bar",
            "add",
            &net,
            &pod,
        ],
    );
    let result: Value = serde_json::from_str(&ok(&out)).expect("ADD prints the result");
    assert_eq!(
        result,
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"dns":{}})
    );

    let recs = sb.records();
    let cmds: Vec<String> = recs.iter().map(|r| env_of(r, "CNI_COMMAND")).collect();
    let types: Vec<String> = recs
        .iter()
        .map(|r| stdin_of(r)["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(cmds, ["ADD", "ADD", "ADD"]);
    assert_eq!(types, ["rec-main", "rec-meta", "rec-caps"]);
    let cid = runtime_container_id(&pod);
    for r in &recs {
        assert_eq!(env_of(r, "CNI_CONTAINERID"), cid);
        assert_eq!(env_of(r, "CNI_NETNS"), pod);
        assert_eq!(env_of(r, "CNI_IFNAME"), "eth0");
        assert_eq!(env_of(r, "CNI_ARGS"), "IgnoreUnknown=1;FOO=bar");
        assert_eq!(env_of(r, "CNI_PATH"), path);
        // the parent environment is inherited
        assert_eq!(env_of(r, "NETCONFPATH"), sb.conf_dir().display().to_string());
    }
    let first = stdin_of(&recs[0]);
    assert_eq!(
        first,
        json!({"type":"rec-main","zeta":[3,2,1],"alpha":{"nested":true},"ipam":{"type":"rec-ipam","x":1},
               "name": net, "cniVersion":"1.0.0"})
    );
    let second = stdin_of(&recs[1]);
    assert_eq!(
        second["name"],
        json!(net),
        "the list name overrides a plugin-local name"
    );
    assert_eq!(
        second["cniVersion"],
        json!("1.0.0"),
        "the selected version overrides a plugin-local one"
    );
    assert_eq!(second["prevResult"], result);
    assert!(second.get("runtimeConfig").is_none());
    let third = stdin_of(&recs[2]);
    assert_eq!(
        third["runtimeConfig"],
        json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}),
        "only declared and enabled capabilities reach runtimeConfig, replacing a static one"
    );

    // the cache is libcni's format
    let cache_file = sb.cache_dir().join("results").join(format!("{net}-{cid}-eth0"));
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache_file).expect("cache written")).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["result"], result);
    assert_eq!(cached["cniArgs"], json!([["IgnoreUnknown", "1"], ["FOO", "bar"]]));
    assert_eq!(cached["networkName"], json!(net));
    let md = std::fs::metadata(&cache_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o600
    );

    sb.clear_records();
    ok(&sb.cnichain(&path, &["--cap-args", caps, "check", &net, &pod]));
    let recs = sb.records();
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(env_of(r, "CNI_COMMAND"), "CHECK");
        assert_eq!(stdin_of(r)["prevResult"], result, "CHECK gets the cached result");
    }

    sb.clear_records();
    ok(&sb.cnichain(&path, &["--cap-args", caps, "del", &net, &pod]));
    let recs = sb.records();
    let types: Vec<String> = recs
        .iter()
        .map(|r| stdin_of(r)["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(types, ["rec-caps", "rec-meta", "rec-main"], "DEL runs in reverse");
    for r in &recs {
        assert_eq!(env_of(r, "CNI_COMMAND"), "DEL");
        assert_eq!(stdin_of(r)["prevResult"], result);
    }
    assert!(!cache_file.exists(), "DEL removes the cache");

    // DEL again: no cache, no prevResult, still success
    sb.clear_records();
    ok(&sb.cnichain(&path, &["del", &net, &pod]));
    assert!(sb.records().iter().all(|r| stdin_of(r).get("prevResult").is_none()));
    // CHECK after DEL: no cached result, so plugins see no prevResult
    sb.clear_records();
    ok(&sb.cnichain(&path, &["check", &net, &pod]));
    assert!(sb.records().iter().all(|r| stdin_of(r).get("prevResult").is_none()));
}

/// What the recorder answers on ADD without prevResult or a configured result.
fn stdout_of_add_default() -> String {
    r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"dns":{}}"#.to_string()
}

fn runtime_container_id(netns: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{netns}' | sha512sum | cut -c1-20")])
        .output()
        .unwrap();
    format!("cnitool-{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// The same chain through libcni (the peer cnitool) and through cnichain: every plugin
/// gets the same request JSON and the same CNI_* environment.
#[test]
fn requests_match_libcni_cnitool() {
    let mut sb = Sandbox::new("rec2");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10-chain.conflist", &CHAIN.replace("@NET@", &net));
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
    let cnitool = peer_cnitool();
    let _cleanup = ResultsCleanup(net.clone());

    let mut runs: Vec<Vec<Value>> = Vec::new();
    for tool in ["cnitool", "cnichain"] {
        sb.clear_records();
        for verb in ["add", "check", "del"] {
            let out = if tool == "cnitool" {
                let mut c = sb.in_host(&cnitool);
                c.env("CNI_PATH", &path)
                    .env("CAP_ARGS", caps)
                    .env("CNI_ARGS", "IgnoreUnknown=1")
                    .args([verb, &net, &pod]);
                c.output().unwrap()
            } else {
                sb.cnichain(
                    &path,
                    &["--cap-args", caps, "--args", "IgnoreUnknown=1", verb, &net, &pod],
                )
            };
            ok(&out);
        }
        runs.push(sb.records());
    }
    let (lib, ours) = (&runs[0], &runs[1]);
    assert_eq!(lib.len(), 9);
    assert_eq!(lib.len(), ours.len());
    for (i, (a, b)) in lib.iter().zip(ours.iter()).enumerate() {
        assert_eq!(stdin_of(a), stdin_of(b), "request {i} differs");
        for k in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            assert_eq!(env_of(a, k), env_of(b, k), "request {i}: {k}");
        }
    }
}

#[test]
fn plugin_errors_stop_the_chain_and_keep_codes() {
    let mut sb = Sandbox::new("rec3");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
            {{"type":"rec-main"}},
            {{"type":"rec-meta","recorderError":{{"ADD":{{"code":117,"msg":"meta says no","details":"d"}},"DEL":{{"code":118,"msg":"del fails"}}}}}},
            {{"type":"rec-caps"}}]}}"#
        ),
    );
    let seen = |sb: &Sandbox| -> Vec<String> {
        sb.records()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    env_of(r, "CNI_COMMAND"),
                    stdin_of(r)["type"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    // libcni's behaviour on request: the chain stops, nothing is undone.
    let e = cni_err(&sb.cnichain(&path, &["--no-rollback", "add", &net, &pod]));
    assert_eq!(e["code"], 117);
    assert_eq!(e["msg"], r#"plugin type="rec-meta" failed (add): meta says no"#);
    assert_eq!(e["details"], "d");
    assert_eq!(
        seen(&sb),
        ["ADD rec-main", "ADD rec-meta"],
        "the chain stops at the failing plugin"
    );
    assert!(sb.files_in("cache").is_empty(), "no cache after a failed ADD");

    // By default the plugins that ran are undone in reverse, the failed one included,
    // with the last good result; the original error comes back, rollback failures
    // (rec-meta's DEL fails too) in its details.
    sb.clear_records();
    let e = cni_err(&sb.cnichain(&path, &["add", &net, &pod]));
    assert_eq!(e["code"], 117);
    assert_eq!(e["msg"], r#"plugin type="rec-meta" failed (add): meta says no"#);
    let details = e["details"].as_str().unwrap();
    assert!(
        details.starts_with("d; rollback of plugin type=\"rec-meta\": del fails"),
        "{details}"
    );
    assert_eq!(
        seen(&sb),
        ["ADD rec-main", "ADD rec-meta", "DEL rec-meta", "DEL rec-main"]
    );
    let recs = sb.records();
    let first_result = serde_json::from_str::<Value>(&stdout_of_add_default()).unwrap();
    assert_eq!(
        stdin_of(&recs[3])["prevResult"],
        first_result,
        "rollback DEL gets the last good result"
    );
    assert!(sb.files_in("cache").is_empty());

    // a failing DEL keeps the cache so the runtime can retry
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"rec-main"}},{{"type":"rec-meta","recorderError":{{"DEL":{{"code":118,"msg":"del fails"}}}}}}]}}"#),
    );
    ok(&sb.cnichain(&path, &["add", &net, &pod]));
    let e = cni_err(&sb.cnichain(&path, &["del", &net, &pod]));
    assert_eq!(e["code"], 118);
    assert!(e["msg"].as_str().unwrap().contains("failed (delete)"));
    assert_eq!(sb.files_in("cache").len(), 1, "cache kept after a failed DEL");
}

#[test]
fn empty_stdout_failure_carries_stderr_and_timeouts_kill() {
    let mut sb = Sandbox::new("rec4");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"rec-main","recorderEmptyFail":"ADD","recorderStderr":"kaboom on stderr"}}]}}"#),
    );
    let e = cni_err(&sb.cnichain(&path, &["add", &net, &pod]));
    assert!(e["msg"].as_str().unwrap().contains("kaboom on stderr"), "{e}");

    sb.write_conflist(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"rec-main","recorderSleepMs":20000}}]}}"#
        ),
    );
    let t = std::time::Instant::now();
    let e = cni_err(&sb.cnichain(&path, &["--plugin-timeout", "1", "add", &net, &pod]));
    assert_eq!(e["code"], 11);
    assert!(e["msg"].as_str().unwrap().contains("timed out"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "the plugin was killed, not waited for"
    );
}

#[test]
fn gc_deletes_stale_cached_attachments_and_sends_both_keys() {
    let mut sb = Sandbox::new("rec5");
    let pod1 = sb.pod("p1");
    let pod2 = sb.pod("p2");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.1.0","name":"{net}","plugins":[{{"type":"rec-main"}},{{"type":"rec-meta"}}]}}"#),
    );
    ok(&sb.cnichain(&path, &["--container-id", "c1", "add", &net, &pod1]));
    ok(&sb.cnichain(&path, &["--container-id", "c2", "add", &net, &pod2]));
    sb.clear_records();
    ok(&sb.cnichain(&path, &["gc", &net, "--valid", "c1/eth0"]));
    let recs = sb.records();
    let seen: Vec<(String, String)> = recs
        .iter()
        .map(|r| (env_of(r, "CNI_COMMAND"), env_of(r, "CNI_CONTAINERID")))
        .collect();
    assert_eq!(
        seen,
        [
            ("DEL".to_string(), "c2".to_string()),
            ("DEL".into(), "c2".into()),
            ("GC".into(), "".into()),
            ("GC".into(), "".into())
        ]
    );
    let gc = stdin_of(&recs[2]);
    let want = json!([{"containerID":"c1","ifname":"eth0"}]);
    assert_eq!(gc["cni.dev/valid-attachments"], want);
    assert_eq!(gc["cni.dev/attachments"], want);
    let left = sb.files_in("cache");
    assert_eq!(left, [format!("results/{net}-c1-eth0")]);

    // default valid set: every cached attachment; nothing is DELeted
    sb.clear_records();
    ok(&sb.cnichain(&path, &["gc", &net]));
    assert!(sb.records().iter().all(|r| env_of(r, "CNI_COMMAND") == "GC"));
    assert_eq!(sb.files_in("cache").len(), 1);

    // STATUS on 1.1.0 calls every plugin
    sb.clear_records();
    ok(&sb.cnichain(&path, &["status", &net]));
    assert_eq!(sb.records().len(), 2);
    assert!(sb.records().iter().all(|r| env_of(r, "CNI_COMMAND") == "STATUS"));
}

#[test]
fn results_are_fixed_up_and_converted_between_stages() {
    let mut sb = Sandbox::new("rec6");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    // plugin 1 answers without cniVersion (libcni assumes the config's), plugin 2 answers
    // in the 0.4.0 layout: the next plugin must get it as 1.0.0.
    sb.write_conflist(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
              {{"type":"rec-main","recorderResult":{{"ips":[{{"address":"10.9.0.5/16","gateway":"10.9.0.1"}}]}}}},
              {{"type":"rec-meta","recorderResult":{{"cniVersion":"0.4.0","interfaces":[{{"name":"eth0","sandbox":"/x"}}],
                 "ips":[{{"version":"4","interface":0,"address":"10.9.0.5/16"}}]}}}},
              {{"type":"rec-caps"}}]}}"#
        ),
    );
    let res: Value = serde_json::from_str(&ok(&sb.cnichain(&path, &["add", &net, &pod]))).unwrap();
    let recs = sb.records();
    assert_eq!(
        stdin_of(&recs[1])["prevResult"],
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/16","gateway":"10.9.0.1"}],"dns":{}})
    );
    let want = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
                      "ips":[{"interface":0,"address":"10.9.0.5/16"}],"dns":{}});
    assert_eq!(
        stdin_of(&recs[2])["prevResult"],
        want,
        "0.4.0 result converted to the list's 1.0.0"
    );
    assert_eq!(res, want);
}

#[test]
fn a_damaged_cache_never_blocks_del_but_fails_check() {
    let mut sb = Sandbox::new("rec7");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"rec-main"}}]}}"#),
    );
    let cid = runtime_container_id(&pod);
    let cache_file = sb.cache_dir().join("results").join(format!("{net}-{cid}-eth0"));
    for damage in [
        &b""[..],
        b"{\"kind\":\"cniCacheV1\",\"res",
        b"garbage\x00\xff",
        b"{\"kind\":\"cniCacheV1\",\"result\":{\"cniVersion\":\"7.7.7\"}}",
    ] {
        ok(&sb.cnichain(&path, &["add", &net, &pod]));
        std::fs::write(&cache_file, damage).unwrap();
        if damage.starts_with(b"{\"kind\":\"cniCacheV1\",\"result") {
            // unconvertible but readable: CHECK refuses it
            assert_eq!(sb.cnichain(&path, &["check", &net, &pod]).status.code(), Some(1));
        } else {
            let e = cni_err(&sb.cnichain(&path, &["check", &net, &pod]));
            assert!(e["msg"].as_str().unwrap().contains("cached result"), "{e}");
        }
        sb.clear_records();
        ok(&sb.cnichain(&path, &["del", &net, &pod]));
        let recs = sb.records();
        assert_eq!(recs.len(), 1, "DEL ran the plugin");
        assert!(
            stdin_of(&recs[0]).get("prevResult").is_none(),
            "no prevResult from a damaged cache"
        );
        assert!(!cache_file.exists(), "the damaged cache is gone after DEL");
    }
}

/// A plugin binary still open for writing gives ETXTBSY on exec: cnichain retries with a
/// new process each time (libcni's retry reused the command and never worked: cni#855).
#[test]
fn text_file_busy_is_retried_with_a_new_process() {
    let mut sb = Sandbox::new("rec8");
    let pod = sb.pod("p");
    let bin = sb.dir.join("busybin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("rec-late");
    std::fs::copy(recorder_bin(), &plugin).unwrap();
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"rec-late"}}]}}"#),
    );
    // hold it open for writing, as an installer still copying it would
    let writer = std::fs::OpenOptions::new().write(true).open(&plugin).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(writer);
    });
    let t = std::time::Instant::now();
    let out = sb.cnichain(&bin.display().to_string(), &["add", &net, &pod]);
    release.join().unwrap();
    ok(&out);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1000),
        "it had to wait for the writer"
    );
    assert_eq!(sb.records().len(), 1);
}

/// Delegation: the in-process bridge hands its IPAM to an exec'd plugin with delegate
/// semantics (the whole request config on stdin, the same environment, CNI_COMMAND set
/// per verb), applies the addresses it returns, and delegates DEL too.
#[test]
fn an_in_process_main_stage_delegates_to_an_exec_ipam() {
    let mut sb = Sandbox::new("deleg");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"bridge","bridge":"cncdl0","isGateway":true,
              "recorderResult":{{"cniVersion":"1.0.0","ips":[{{"address":"10.71.0.9/24","gateway":"10.71.0.1"}}],
                                 "routes":[{{"dst":"0.0.0.0/0"}}]}},
              "ipam":{{"type":"rec-ipam"}}}}]}}"#
        ),
    );
    let res: Value = serde_json::from_str(&ok(&sb.cnichain(&path, &["add", &net, &pod]))).unwrap();
    assert_eq!(res["ips"][0]["address"], "10.71.0.9/24");
    assert_eq!(res["ips"][0]["interface"], 2);
    let recs = sb.records();
    assert_eq!(recs.len(), 1, "only the IPAM is exec'd");
    let req = stdin_of(&recs[0]);
    assert_eq!(
        req["type"], "bridge",
        "the delegate gets the main plugin's whole config"
    );
    assert_eq!(req["name"], json!(net));
    assert_eq!(req["ipam"]["type"], "rec-ipam");
    assert_eq!(env_of(&recs[0], "CNI_COMMAND"), "ADD");
    assert_eq!(env_of(&recs[0], "CNI_IFNAME"), "eth0");
    assert_eq!(env_of(&recs[0], "CNI_NETNS"), pod);
    let addrs = stdout(&sb.sh_in(pod.trim_start_matches("/run/netns/"), "ip -o -4 addr show dev eth0"));
    assert!(addrs.contains("10.71.0.9/24"), "{addrs}");
    sb.clear_records();
    ok(&sb.cnichain(&path, &["del", &net, &pod]));
    let cmds: Vec<String> = sb.records().iter().map(|r| env_of(r, "CNI_COMMAND")).collect();
    assert_eq!(cmds, ["DEL"]);
}

/// A CNI_PATH dir holding one shell-script plugin named `name`.
fn script_plugin(sb: &Sandbox, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = sb.dir.join("scripts");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin.display().to_string()
}

/// Whether `pid` is still a live process whose command line contains `marker`.
fn alive(pid: &str, marker: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !stat.is_empty() && !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
}

/// A plugin that starts a child of its own and hangs: at the timeout both are killed
/// (the plugin's whole process group), and cnichain returns the timeout error.
#[test]
fn a_timed_out_plugin_is_killed_with_its_children() {
    let mut sb = Sandbox::new("pgkill");
    let pod = sb.pod("p");
    let pids = sb.dir.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let path = script_plugin(
        &sb,
        "hangs",
        &format!(
            "echo $$ > {d}/plugin\nsleep 98765 &\necho $! > {d}/grandchild\nwait",
            d = pids.display()
        ),
    );
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"hangs"}}]}}"#),
    );
    let mut c = sb.in_host(&cnichain_bin());
    c.env("CNI_PATH", &path)
        .args(["--plugin-timeout", "1", "add", &net, &pod]);
    let o = common::bounded::run_bounded(c, "");
    let e = cni_err(&o);
    assert_eq!(e["code"], 11, "{e}");
    assert!(e["msg"].as_str().unwrap_or("").contains("timed out"), "{e}");
    let plugin = std::fs::read_to_string(pids.join("plugin")).unwrap().trim().to_string();
    let grandchild = std::fs::read_to_string(pids.join("grandchild"))
        .unwrap()
        .trim()
        .to_string();
    // The orphaned grandchild is reaped by init a moment after it dies.
    let start = std::time::Instant::now();
    while (alive(&plugin, "hangs") || alive(&grandchild, "98765")) && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = [(&plugin, "hangs"), (&grandchild, "98765")]
        .iter()
        .filter(|(p, m)| alive(p, m))
        .map(|(p, _)| p.to_string())
        .collect::<Vec<_>>();
    for p in &left {
        let _ = std::process::Command::new("kill").args(["-9", p]).status();
    }
    assert!(left.is_empty(), "still running after the timeout: {left:?}");
}

/// A plugin writing 20 MiB to stdout (or stderr), or without end: a clear error at the
/// 16 MiB cap, the plugin killed, nothing read beyond it.
#[test]
fn a_plugin_flooding_its_output_is_stopped_at_the_cap() {
    let mut sb = Sandbox::new("flood");
    let pod = sb.pod("p");
    let net = format!("{}-n", sb.tag);
    sb.write_conflist(
        "10.conflist",
        &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"floods"}}]}}"#),
    );
    for (body, stream) in [
        ("head -c 20971520 /dev/zero", "stdout"),
        ("head -c 20971520 /dev/zero >&2", "stderr"),
        ("exec yes", "stdout"),
    ] {
        let path = script_plugin(&sb, "floods", body);
        let mut c = sb.in_host(&cnichain_bin());
        // No timeout: only the cap stops an endless writer.
        c.env("CNI_PATH", &path)
            .args(["--plugin-timeout", "0", "add", &net, &pod]);
        let o = common::bounded::run_bounded(c, "");
        let e = cni_err(&o);
        let msg = e["msg"].as_str().unwrap_or("");
        assert!(
            msg.contains(&format!("more than 16777216 bytes to {stream}")),
            "{body}: {e}"
        );
        assert!(o.stdout.len() < 4096, "{body}: the output was passed on");
    }
}
