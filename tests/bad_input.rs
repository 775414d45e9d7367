//! Bad input: every case gets a CNI error object with the right code and a message that
//! names the field, exit status 1, no panic, and nothing created on the host.

mod common;
use common::*;

struct Case {
    what: &'static str,
    conflist: String,
    args: Vec<String>,
    code: u64,
    needle: &'static str,
}

fn conf(body: &str) -> String {
    body.to_string()
}

const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"bad-net","plugins":[{"type":"bridge","bridge":"cncbad0",
  "ipam":{"type":"host-local","dataDir":"@IPAM@","ranges":[[{"subnet":"10.79.0.0/24"}]]}}]}"#;

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let mut sb = Sandbox::new("bad");
    let pod = sb.pod("p");
    let not_ns = sb.dir.join("plain-file");
    std::fs::write(&not_ns, "x").unwrap();
    let not_ns = not_ns.display().to_string();
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let add = |extra: &[&str]| {
        let mut v = a(extra);
        v.extend(a(&["add", "bad-net", &pod]));
        v
    };
    let cases = vec![
        Case {
            what: "malformed JSON",
            conflist: conf(r#"{"name":"bad-net","plugins":[{"type":"bridge"}"#),
            args: add(&[]),
            code: 6,
            needle: "JSON",
        },
        Case {
            what: "name of wrong type",
            conflist: conf(r#"{"name":"bad-net","cniVersion":1,"plugins":[{"type":"bridge"}]}"#),
            args: add(&[]),
            code: 7,
            needle: "cniVersion",
        },
        Case {
            what: "empty plugins",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"1.0.0","plugins":[]}"#),
            args: add(&[]),
            code: 7,
            needle: "no plugins",
        },
        Case {
            what: "plugin without type",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"1.0.0","plugins":[{"bridge":"x"}]}"#),
            args: add(&[]),
            code: 7,
            needle: "type",
        },
        Case {
            what: "type traversal",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"1.0.0","plugins":[{"type":"../../../bin/true"}]}"#),
            args: add(&[]),
            code: 7,
            needle: "type",
        },
        Case {
            what: "ipam.type traversal",
            conflist: conf(
                r#"{"name":"bad-net","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"/bin/true"}}]}"#,
            ),
            args: add(&[]),
            code: 7,
            needle: "ipam.type",
        },
        Case {
            what: "type not in CNI_PATH",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"1.0.0","plugins":[{"type":"no-such-plugin"}]}"#),
            args: add(&[]),
            code: 7,
            needle: "no-such-plugin",
        },
        Case {
            what: "unsupported version",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"9.9.9","plugins":[{"type":"bridge"}]}"#),
            args: add(&[]),
            code: 1,
            needle: "cniVersion",
        },
        Case {
            what: "bad CNI_ARGS",
            conflist: GOOD.into(),
            args: add(&["--args", "NOEQUALS"]),
            code: 4,
            needle: "CNI_ARGS",
        },
        Case {
            what: "bad CAP_ARGS",
            conflist: GOOD.into(),
            args: add(&["--cap-args", "{nope"]),
            code: 6,
            needle: "CAP_ARGS",
        },
        Case {
            what: "ifname too long",
            conflist: GOOD.into(),
            args: add(&["--ifname", "abcdefghijklmnop"]),
            code: 4,
            needle: "CNI_IFNAME",
        },
        Case {
            what: "ifname with slash",
            conflist: GOOD.into(),
            args: add(&["--ifname", "a/b"]),
            code: 4,
            needle: "CNI_IFNAME",
        },
        Case {
            what: "bad container id",
            conflist: GOOD.into(),
            args: add(&["--container-id=-bad"]),
            code: 4,
            needle: "CNI_CONTAINERID",
        },
        Case {
            what: "netns missing",
            conflist: GOOD.into(),
            args: a(&["add", "bad-net", "/run/netns/does-not-exist-cnc"]),
            code: 4,
            needle: "CNI_NETNS",
        },
        Case {
            what: "netns not a namespace",
            conflist: GOOD.into(),
            args: a(&["add", "bad-net", &not_ns]),
            code: 4,
            needle: "not a network namespace",
        },
        Case {
            what: "check on 0.3.1",
            conflist: conf(r#"{"name":"bad-net","cniVersion":"0.3.1","plugins":[{"type":"bridge"}]}"#),
            args: a(&["check", "bad-net", &pod]),
            code: 1,
            needle: "CHECK",
        },
        Case {
            what: "bad network name",
            conflist: conf(r#"{"name":"bad net","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#),
            args: a(&["add", "bad net", &pod]),
            code: 7,
            needle: "network name",
        },
        Case {
            what: "bad --valid",
            conflist: GOOD.into(),
            args: a(&["gc", "bad-net", "--valid", "nocolon"]),
            code: 4,
            needle: "--valid",
        },
    ];
    let links_before = stdout(&sb.sh_in(&sb.host(), "ip -o link show"));
    for c in &cases {
        sb.write_conflist("10-bad.conflist", &c.conflist);
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = sb.cnichain(REF_PLUGINS, &args);
        assert_ne!(out.status.code(), Some(101), "{}: panicked: {}", c.what, stderr(&out));
        let e = cni_err(&out);
        assert_eq!(e["code"].as_u64(), Some(c.code), "{}: {e}", c.what);
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(c.needle),
            "{}: message {msg:?} does not name {:?}",
            c.what,
            c.needle
        );
        assert_eq!(
            stdout(&sb.sh_in(&sb.host(), "ip -o link show")),
            links_before,
            "{}: host links changed",
            c.what
        );
        assert!(sb.files_in("cache").is_empty(), "{}: cache written", c.what);
        assert!(sb.files_in("ipam").is_empty(), "{}: IPAM state written", c.what);
    }
}

#[test]
fn unknown_subcommand_and_missing_args_are_usage_errors() {
    let sb = Sandbox::new("usage");
    let o = sb.cnichain(REF_PLUGINS, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = sb.cnichain(REF_PLUGINS, &["add", "only-net"]);
    assert_eq!(o.status.code(), Some(2));
    let o = sb.cnichain(REF_PLUGINS, &["version"]);
    let text = ok(&o);
    assert!(text.contains("1.1.0") && text.contains("0.1.0"), "{text}");
}
