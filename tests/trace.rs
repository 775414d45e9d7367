//! Trace context (issue 17, cni#1173): with TRACEPARENT in the environment and a trace
//! file named, cnichain appends one OTLP/JSON line per verb whose spans carry the
//! incoming trace ID, the verb's span parented on the incoming span and one span per
//! plugin call in call order (a delegated IPAM nested under its main plugin); exec'd
//! plugins receive TRACEPARENT, TRACESTATE and BAGGAGE unchanged; without a file,
//! nothing is written.

mod common;
use common::*;
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
const BAGGAGE: &str = "userId=alice,serverNode=DF%2028";

/// A CNI_PATH dir holding the recording plugin as `rec-meta`.
fn recorder_path(sb: &Sandbox) -> String {
    let bin = sb.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(recorder_bin(), bin.join("rec-meta")).unwrap();
    bin.display().to_string()
}

/// Every line of the trace file, parsed; each line's spans.
fn lines(file: &std::path::Path) -> Vec<Vec<Value>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("trace line is not JSON ({e}): {l}"));
            assert_eq!(
                v["resourceSpans"][0]["resource"]["attributes"][0],
                json!({"key": "service.name", "value": {"stringValue": "cnichain"}})
            );
            v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .expect("spans")
                .clone()
        })
        .collect()
}

fn names(spans: &[Value]) -> Vec<&str> {
    spans.iter().map(|s| s["name"].as_str().unwrap_or("?")).collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or(&Value::Null)
}

/// The span named `name`.
fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {:?}", names(spans)))
}

fn chain(net: &str, bridge: &str, subnet: &str) -> String {
    Conflist::new("1.1.0", net)
        .plugin(Plugin::bridge(bridge, subnet))
        .plugin(Plugin::tuning(json!({"net.ipv4.conf.eth0.arp_notify": "1"})))
        .plugin(Plugin::new("rec-meta"))
        .text()
}

#[test]
fn spans_follow_the_incoming_traceparent_one_per_plugin_in_order() {
    require_root("trace spans of a bridge chain");
    let mut sb = Sandbox::new("trc1");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    sb.write_conflist("10-t.conflist", &chain(&net, "trcbr0", "10.231.0.0/24"));
    let file = sb.dir.join("trace.jsonl");
    let f = file.display().to_string();
    let env = [
        ("TRACEPARENT", TRACEPARENT),
        ("TRACESTATE", TRACESTATE),
        ("BAGGAGE", BAGGAGE),
        ("CNICHAIN_TRACE_FILE", f.as_str()),
    ];

    ok(&run::cli_with(&sb, &path, &env, &["add", &net, &pod]));
    let got = lines(&file);
    assert_eq!(got.len(), 1, "one line per verb");
    let spans = &got[0];
    assert_eq!(
        names(spans),
        [
            "cnichain ADD",
            "ADD bridge",
            "ADD host-local",
            "ADD tuning",
            "ADD rec-meta"
        ]
    );
    for s in spans {
        assert_eq!(s["traceId"], TRACE_ID, "{s}");
        assert_eq!(s["traceState"], TRACESTATE, "{s}");
        assert_eq!(s["status"]["code"], 1, "{s}");
        assert_eq!(s["kind"], 1);
        let (start, end): (u64, u64) = (
            s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        assert!(start > 0 && end >= start, "{s}");
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
    }
    let verb = &spans[0];
    assert_eq!(verb["parentSpanId"], PARENT);
    assert_eq!(attr(verb, "cni.network")["stringValue"], net.as_str());
    assert_eq!(attr(verb, "cni.netns")["stringValue"], pod.as_str());
    let bridge = named(spans, "ADD bridge");
    assert_eq!(bridge["parentSpanId"], verb["spanId"]);
    assert_eq!(named(spans, "ADD host-local")["parentSpanId"], bridge["spanId"]);
    assert_eq!(named(spans, "ADD tuning")["parentSpanId"], verb["spanId"]);
    let rec = named(spans, "ADD rec-meta");
    assert_eq!(rec["parentSpanId"], verb["spanId"]);
    assert_eq!(attr(rec, "cni.plugin.type")["stringValue"], "rec-meta");
    assert_eq!(
        attr(rec, "cni.plugin.exec")["boolValue"],
        true,
        "an exec'd plugin says so: {rec}"
    );
    assert!(attr(rec, "cni.plugin.how")["stringValue"]
        .as_str()
        .unwrap_or("")
        .ends_with("/rec-meta"));
    assert_eq!(attr(bridge, "cni.plugin.exec")["boolValue"], false);
    // The exec'd plugin got the context exactly as the runtime passed it.
    let records = sb.records();
    assert_eq!(records.len(), 1);
    for (k, v) in [
        ("TRACEPARENT", TRACEPARENT),
        ("TRACESTATE", TRACESTATE),
        ("BAGGAGE", BAGGAGE),
    ] {
        assert_eq!(records[0]["env"][k], v, "{k} reaches the exec'd plugin unchanged");
    }

    // DEL: a second line, the plugins in reverse.
    ok(&run::cli_with(&sb, &path, &env, &["del", &net, &pod]));
    let got = lines(&file);
    assert_eq!(got.len(), 2);
    assert_eq!(
        names(&got[1]),
        [
            "cnichain DEL",
            "DEL rec-meta",
            "DEL tuning",
            "DEL bridge",
            "DEL host-local"
        ]
    );
    assert!(got[1].iter().all(|s| s["traceId"] == TRACE_ID));

    // No trace file named: nothing is written anywhere.
    let before = std::fs::read(&file).unwrap();
    ok(&run::cli_with(
        &sb,
        &path,
        &[("TRACEPARENT", TRACEPARENT)],
        &["add", &net, &pod],
    ));
    ok(&run::cli_with(
        &sb,
        &path,
        &[("TRACEPARENT", TRACEPARENT)],
        &["del", &net, &pod],
    ));
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_failing_plugin_and_a_bad_traceparent() {
    require_root("trace spans of a failing chain");
    let mut sb = Sandbox::new("trc2");
    let pod = sb.pod("p");
    let path = recorder_path(&sb);
    let net = format!("{}-n", sb.tag);
    let text = Conflist::new("1.0.0", &net)
        .plugin(Plugin::bridge("trcbr0", "10.232.0.0/24"))
        .plugin(Plugin(
            json!({"type": "rec-meta", "recorderError": {"ADD": {"code": 117, "msg": "meta says no"}}}),
        ))
        .text();
    sb.write_conflist("10-t.conflist", &text);
    let file = sb.dir.join("trace.jsonl");
    let f = file.display().to_string();
    // Upper-case hex is not a valid traceparent: a new trace, no parent.
    let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    let out = run::cli_with(
        &sb,
        &path,
        &[("TRACEPARENT", bad), ("CNICHAIN_TRACE_FILE", &f)],
        &["add", &net, &pod],
    );
    assert_eq!(out.status.code(), Some(1), "the ADD fails: {}", stderr(&out));
    let got = lines(&file);
    // The failed ADD is rolled back: its DELs run inside the ADD's span, one line.
    assert_eq!(got.len(), 1);
    let spans = &got[0];
    let verb = &spans[0];
    assert_eq!(verb["name"], "cnichain ADD");
    assert!(
        verb.get("parentSpanId").is_none(),
        "a bad traceparent starts a new trace: {verb}"
    );
    assert_ne!(verb["traceId"], TRACE_ID, "a bad traceparent is not half-adopted");
    assert_eq!(verb["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(verb["status"]["code"], 2);
    let rec = named(spans, "ADD rec-meta");
    assert_eq!(rec["status"]["code"], 2);
    assert_eq!(rec["status"]["message"], "meta says no");
    assert_eq!(attr(rec, "cni.error.code")["intValue"], "117");
    assert_eq!(named(spans, "ADD bridge")["status"]["code"], 1);
    let tid = &verb["traceId"];
    assert!(spans.iter().all(|s| &s["traceId"] == tid));
}

#[test]
fn a_drop_in_records_its_call() {
    require_root("trace spans of a drop-in");
    let mut sb = Sandbox::new("trc3");
    let pod = sb.pod("p");
    let bin = install(&sb);
    let file = sb.dir.join("trace.jsonl");
    let f = file.display().to_string();
    let conf = json!({
        "cniVersion": "1.0.0", "name": format!("{}-n", sb.tag), "type": "bridge",
        "bridge": "trcbr0", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.233.0.0/24", "dataDir": sb.ipam_dir()},
    })
    .to_string();
    let cni_path = bin.display().to_string();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "trace-ctr"),
            ("CNI_NETNS", pod.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path.as_str()),
            ("TRACEPARENT", TRACEPARENT),
            ("CNICHAIN_TRACE_FILE", f.as_str()),
        ]
    };
    ok(&run::plugin_in_host(&sb, &bin.join("bridge"), &env("ADD"), &conf));
    ok(&run::plugin_in_host(&sb, &bin.join("bridge"), &env("DEL"), &conf));
    let got = lines(&file);
    assert_eq!(got.len(), 2);
    assert_eq!(names(&got[0]), ["cnichain ADD", "ADD bridge", "ADD host-local"]);
    assert_eq!(names(&got[1]), ["cnichain DEL", "DEL bridge", "DEL host-local"]);
    for spans in &got {
        assert_eq!(spans[0]["parentSpanId"], PARENT);
        assert_eq!(attr(&spans[0], "cni.mode")["stringValue"], "bridge");
        assert_eq!(spans[1]["parentSpanId"], spans[0]["spanId"]);
        assert_eq!(spans[2]["parentSpanId"], spans[1]["spanId"]);
        assert!(spans
            .iter()
            .all(|s| s["traceId"] == TRACE_ID && s["status"]["code"] == 1));
    }
}
