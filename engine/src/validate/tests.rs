//! The validator's own checks: paths, syntax errors, odd shapes. The checks against the
//! stages' schemas are tested in the stages crate, which has them.

use super::*;

fn run_bytes(src: &str) -> Vec<Diagnostic> {
    let reg = Registry::new(Vec::new());
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

/// The codes found, less W0304: this registry has no in-process stages and no
/// CNI_PATH, so every type is "unchecked" here.
fn codes(d: &[Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.code.id()).filter(|c| *c != "W0304").collect()
}

#[test]
fn display_paths() {
    let v: Value = serde_json::from_str(r#"{"plugins":[{"ipam":{"ranges":[[{"subnet":"x"}]]},"a/b":1}]}"#).unwrap();
    assert_eq!(
        display_path(&v, "/plugins/0/ipam/ranges/0/0/subnet"),
        "plugins[0].ipam.ranges[0][0].subnet"
    );
    assert_eq!(display_path(&v, "/plugins/0/a~1b"), "plugins[0][\"a/b\"]");
    assert_eq!(display_path(&v, ""), "(root)");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let d = run_bytes("{\n  \"name\": \"n\",\n  \"x\": é,\n}");
    assert_eq!(codes(&d), ["E0101"]);
    assert_eq!((d[0].line, d[0].col), (3, 8));
    assert_eq!(d[0].message, "invalid JSON: expected value");
}

#[test]
fn a_byte_order_mark_is_named() {
    let d = run_bytes("\u{feff}{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"loopback\"}]}");
    assert_eq!(codes(&d), ["E0101"]);
    assert!(d[0].message.contains("byte order mark"));
    assert!(d[0].hint.as_deref().unwrap().contains("without BOM"));
}

#[test]
fn never_panics_on_odd_shapes() {
    for src in [
        "", "[]", "1", "null", "{}", "{\"plugins\":null}", "{\"plugins\":[null,1,\"x\",[]]}",
        "{\"name\":1,\"cniVersion\":[],\"cniVersions\":{}}", "{\"cniVersions\":[1,\"x\",\"9.9.9\"]}",
        "{\"name\":\"n\",\"plugins\":[{\"type\":\"bridge\",\"ipam\":{\"type\":\"host-local\",\"ranges\":[[],[{}],[{\"subnet\":\"10.0.0.0/31\"}],1]}}]}",
        "{\"name\":\"n\",\"plugins\":[{\"type\":\"bandwidth\",\"runtimeConfig\":{\"bandwidth\":{\"ingressRate\":-1}}}]}",
    ] {
        let _ = run_bytes(src);
    }
}
