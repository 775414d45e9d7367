//! `cnichain validate` against the stages' own schemas (the engine has none): type errors,
//! unknown keys and the value rules of bridge, host-local and the chain shapes.

use cnichain_engine::stage::{ExecPolicy, Registry};
use cnichain_engine::validate::{validate_bytes, Code, Diagnostic, Kind, Options, Severity};

/// Every stage's schema, but no stage runs in-process and there is no CNI_PATH: every
/// type is "unchecked" (W0304) or unresolved (E030x), which the helpers leave out.
fn run_bytes(src: &str) -> Vec<Diagnostic> {
    let mut reg = Registry::new(Vec::new());
    crate::register_all(&mut reg);
    reg.settings.exec = ExecPolicy::All;
    validate_bytes(
        "t.conflist",
        src.as_bytes(),
        Kind::List,
        Options {
            registry: &reg,
            resolve: true,
            exec_versions: false,
            version_timeout: None,
        },
    )
}

fn codes(d: &[Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.code.id()).filter(|c| *c != "W0304").collect()
}

#[test]
fn type_errors_and_unknown_keys_are_positioned() {
    let d = run_bytes(
        "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[\n {\"type\":\"bridge\",\"isGateway\":\"yes\",\"isGatway\":true}]}",
    );
    // the type does not resolve (no CNI_PATH), then the two key findings
    assert_eq!(codes(&d), ["E0102", "W0105"]);
    assert_eq!(
        d[0].code.id(),
        "W0304",
        "no CNI_PATH: the unknown type is unchecked, not an error"
    );
    assert_eq!((d[1].line, d[1].col), (2, 31));
    assert_eq!(d[1].message, "plugins[0].isGateway: expected a boolean, got a string");
    assert_eq!(d[2].hint.as_deref(), Some("did you mean `isGateway`?"));
    assert_eq!((d[2].line, d[2].col), (2, 37));
}

fn list(plugins: &str) -> String {
    format!("{{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{plugins}]}}")
}

/// Without CNI_PATH nothing external resolves: leave the E030x findings out.
fn findings(src: &str) -> Vec<&'static str> {
    let d = run_bytes(src);
    let mut c: Vec<&'static str> = codes(&d).into_iter().filter(|c| !c.starts_with("E030")).collect();
    c.sort_unstable();
    c
}

#[test]
fn host_bits_like_host_local() {
    for (subnet, net) in [
        ("10.85.0.1/16", "10.85.0.0"),
        ("fd00::1/64", "fd00::"),
        ("10.0.0.129/25", "10.0.0.128"),
    ] {
        for ipam in [
            format!("{{\"type\":\"host-local\",\"subnet\":\"{subnet}\"}}"),
            format!("{{\"type\":\"host-local\",\"ranges\":[[{{\"subnet\":\"{subnet}\"}}]]}}"),
        ] {
            let d = run_bytes(&list(&format!("{{\"type\":\"bridge\",\"ipam\":{ipam}}}")));
            let hb: Vec<_> = d.iter().filter(|d| d.message.contains("host bits")).collect();
            assert_eq!(hb.len(), 1, "{ipam}: {d:?}");
            assert_eq!(hb[0].code, Code::BadValue);
            assert!(
                hb[0].message.ends_with(&format!("the network address is {net}")),
                "{}",
                hb[0].message
            );
        }
    }
    // the network address itself, and a too-small network (reported as that only)
    assert_eq!(
        findings(&list(
            r#"{"type":"bridge","ipam":{"type":"host-local","subnet":"10.85.0.0/16"}}"#
        )),
        Vec::<&str>::new()
    );
    let d = run_bytes(&list(
        r#"{"type":"bridge","ipam":{"type":"host-local","subnet":"10.85.0.1/31"}}"#,
    ));
    assert!(d.iter().any(|d| d.message.contains("too small")) && !d.iter().any(|d| d.message.contains("host bits")));
}

#[test]
fn working_shapes_are_not_errors() {
    // L2 bridge (no ipam, empty ipam) before portmap and firewall: warnings
    for ipam in ["", r#","ipam":{}"#, r#","ipam":{"type":""}"#] {
        let src = list(&format!(
            r#"{{"type":"bridge"{ipam}}},{{"type":"portmap","capabilities":{{"portMappings":true}}}},{{"type":"firewall"}},{{"type":"tuning"}}"#
        ));
        assert_eq!(findings(&src), ["W0408", "W0408"], "{src}");
    }
    // sbr really fails without addresses
    assert_eq!(
        findings(&list(r#"{"type":"macvlan","master":"eth0"},{"type":"sbr"}"#)),
        ["E0404"]
    );
    // with an external IPAM there are addresses
    assert_eq!(
        findings(&list(
            r#"{"type":"macvlan","master":"eth0","ipam":{"type":"dhcp"}},{"type":"portmap","capabilities":{"portMappings":true}},{"type":"sbr"}"#
        )),
        Vec::<&str>::new()
    );
    // native VLAN on a trunk port (plugins >= 1.8)
    assert_eq!(
        findings(&list(r#"{"type":"bridge","vlan":5,"vlanTrunk":[{"id":6}]}"#)),
        Vec::<&str>::new()
    );
    // top-level args is the runtime's
    let src = r#"{"args":{"podman_labels":{"a":"b"}},"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"}]}"#;
    assert_eq!(findings(src), Vec::<&str>::new());
    // an external main plugin's ipam: warnings; a reference one's: errors
    let ext = list(
        r#"{"type":"calico","ipam":{"type":"host-local","subnet":"usePodCidr"}},{"type":"antrea","ipam":{"type":"host-local"}}"#,
    );
    let d = run_bytes(&ext);
    let w: Vec<_> = d.iter().filter(|d| d.code == Code::ForeignIpam).collect();
    assert_eq!(w.len(), 2, "{d:?}");
    assert!(w[0].hint.as_deref().unwrap().contains("calico's own input"));
    assert!(
        !d.iter()
            .any(|d| d.severity() == Severity::Error && !d.code.id().starts_with("E030")),
        "{d:?}"
    );
    let d = findings(&list(
        r#"{"type":"macvlan","master":"eth0","ipam":{"type":"host-local","subnet":"usePodCidr"}}"#,
    ));
    assert_eq!(d, ["E0104"]);
}

/// The fuzz harness runs the validator without stages (the engine has no schemas), so the
/// schema checks get its invariant here: on the seeds, the regressions and the corpus, and
/// on every prefix of each (cut JSON), no panic and no engine refusal left unexplained.
#[test]
fn every_engine_refusal_is_explained_with_the_schemas() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "fuzz/seeds/conflist",
        "fuzz/regressions/conflist",
        "tests/validate-corpus/good",
        "tests/validate-corpus/bad",
    ] {
        let entries = std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x != "expected") {
                files.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    assert!(files.len() > 20, "only {} inputs", files.len());
    for f in &files {
        for end in (0..=f.len()).step_by(7).chain([f.len()]) {
            let text = String::from_utf8_lossy(&f[..end]);
            for d in run_bytes(&text) {
                assert_ne!(d.code, Code::EngineRejects, "{text}: {}", d.message);
            }
        }
    }
}
