//! `cnichain validate` against the corpus in tests/validate-corpus:
//!
//! * good/: every file validates clean, warnings included (`--strict`);
//! * bad/: each file gives exactly the diagnostics in its `.expected` file (the human
//!   output, source lines and markers included);
//! * dirs/: the checks across the files of a directory, same way;
//! * bin/: stand-in plugins that answer VERSION (all versions; `old-plugin` up to
//!   0.4.0; `broken-plugin` fails), used as CNI_PATH so the results do not depend on
//!   what is installed or which stages are in-process yet.
//!
//! Every conflist in conflists/ must validate clean too.
//!
//! `CNICHAIN_BLESS=1 cargo test --test validate` rewrites the `.expected` files; review
//! the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate-corpus")
}

fn bless() -> bool {
    std::env::var_os("CNICHAIN_BLESS").is_some()
}

/// `cnichain validate ARGS` run in the corpus directory, with a clean environment.
fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnichain"))
        .arg("validate")
        .args(args)
        .current_dir(corpus())
        .env_remove("CNI_PATH")
        .env_remove("NETCONFPATH")
        .env_remove("CNICHAIN_EXEC")
        .env_remove("CNICHAIN_PLUGIN_TIMEOUT")
        .output()
        .expect("run cnichain validate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files of a corpus subdirectory (not the `.expected` ones), sorted.
fn entries(sub: &str, dirs: bool) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(corpus().join(sub))
        .expect("corpus dir")
        .flatten()
        .filter(|e| e.path().is_dir() == dirs)
        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy()))
        .filter(|p| !p.ends_with(".expected"))
        .collect();
    out.sort();
    out
}

fn expected_path(target: &str) -> PathBuf {
    let p = corpus().join(target);
    match p.extension() {
        Some(_) if p.is_file() => p.with_extension("expected"),
        _ => PathBuf::from(format!("{}.expected", p.display())),
    }
}

/// Runs the validator on each target and compares with its `.expected` file.
fn check_expected(targets: &[String]) {
    let mut failures = Vec::new();
    for t in targets {
        let o = validate(&["--cni-path", "bin", t]);
        let got = stdout(&o);
        let exp_path = expected_path(t);
        if bless() {
            std::fs::write(&exp_path, &got).expect("write expected");
            continue;
        }
        let want = std::fs::read_to_string(&exp_path).unwrap_or_else(|_| panic!("{} is missing", exp_path.display()));
        if got != want {
            failures.push(format!("--- {t}: expected\n{want}\n--- got\n{got}"));
            continue;
        }
        assert!(!want.is_empty(), "{t}: a bad case must give a diagnostic");
        let has_error = want.lines().any(|l| l.contains(": error["));
        let code = o.status.code();
        if code != Some(if has_error { 1 } else { 0 }) {
            failures.push(format!("{t}: exit {code:?}, stderr {}", stderr(&o)));
        }
        if !has_error {
            let strict = validate(&["--strict", "--cni-path", "bin", t]);
            if strict.status.code() != Some(1) {
                failures.push(format!("{t}: --strict must fail on warnings"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const CLEAN: &str = "1 file checked: 0 errors, 0 warnings\n";

/// good/: configs that work. Each validates without an error (exit 0, no `--strict`);
/// one with a `.expected` file gives exactly those warnings, every other one is clean
/// under `--strict` too.
#[test]
fn good_corpus_validates_clean() {
    let files = entries("good", false);
    assert!(files.len() >= 30, "{}", files.len());
    let mut failures = Vec::new();
    for f in files {
        let o = validate(&["--cni-path", "bin", &f]);
        let out = stdout(&o);
        if o.status.code() != Some(0) || out.contains(": error[") || !stderr(&o).is_empty() {
            failures.push(format!("{f}: exit {:?}\n{out}{}", o.status.code(), stderr(&o)));
            continue;
        }
        let exp = expected_path(&f);
        if exp.exists() {
            if bless() {
                std::fs::write(&exp, &out).expect("write expected");
                continue;
            }
            let want = std::fs::read_to_string(&exp).unwrap();
            assert!(
                want.contains(": warning["),
                "{}: only warnings belong there",
                exp.display()
            );
            if out != want {
                failures.push(format!("--- {f}: expected\n{want}\n--- got\n{out}"));
            }
        } else {
            if out != CLEAN {
                failures.push(format!("{f}: not clean\n{out}"));
            }
            let strict = validate(&["--strict", "--cni-path", "bin", &f]);
            if strict.status.code() != Some(0) {
                failures.push(format!("{f}: --strict fails\n{}", stdout(&strict)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Away from the node (an operator's CI, no CNI_PATH given) the published configs still
/// validate without an error: an external type that cannot be looked up is a warning
/// (W0304), never E0302.
#[test]
fn good_corpus_without_cni_path_has_no_errors() {
    let mut failures = Vec::new();
    let mut unchecked = 0;
    for f in entries("good", false) {
        let o = validate(&[&f]);
        let out = stdout(&o);
        if o.status.code() != Some(0) || out.contains(": error[") {
            failures.push(format!("{f}: exit {:?}\n{out}{}", o.status.code(), stderr(&o)));
        }
        unchecked += out.matches("warning[W0304]").count();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // calico, flannel, cilium, multus ... are not in-process: each is reported unchecked.
    assert!(unchecked >= 10, "only {unchecked} W0304 warnings");
    let o = validate(&["good/calico-ipam.conflist"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("warning[W0304]: plugins[0].type: \"calico\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_corpus_gives_the_expected_diagnostics() {
    let files = entries("bad", false);
    assert!(files.len() >= 30);
    check_expected(&files);
}

#[test]
fn directories_give_the_expected_diagnostics() {
    check_expected(&entries("dirs", true));
}

/// Every code the validator has is exercised by the corpus (E0100 and E0107 below, W0304
/// in good_corpus_without_cni_path_has_no_errors, W0109 in
/// a_data_dir_others_can_write_is_named: git keeps no directory modes).
#[test]
fn the_corpus_covers_every_code() {
    let mut text = String::new();
    for dir in ["bad", "dirs"] {
        for e in std::fs::read_dir(corpus().join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "expected") {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    let o = validate(&["--list-codes"]);
    assert_eq!(o.status.code(), Some(0));
    let codes: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(codes.len() >= 25, "{codes:?}");
    for c in codes {
        if c == "E0100" || c == "E0107" || c == "W0304" || c == "W0109" {
            continue;
        }
        assert!(text.contains(&format!("[{c}]")), "no corpus case shows {c}");
    }
}

#[test]
fn json_output_for_machines() {
    let o = validate(&["--format", "json", "--cni-path", "bin", "bad/wrong-type.conflist"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "bad/wrong-type.conflist");
    assert_eq!(d["line"], 5);
    assert_eq!(d["column"], 37);
    assert_eq!(d["pointer"], "/plugins/0/isGateway");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "E0102");
    assert_eq!(d["message"], "plugins[0].isGateway: expected a boolean, got a string");
    assert!(d["hint"].as_str().unwrap().contains("without quotes"));
    assert_eq!(
        v["summary"],
        serde_json::json!({"files": 1, "errors": 2, "warnings": 0})
    );
    // nothing else on stdout or stderr
    assert_eq!(stderr(&o), "");
    let clean = validate(&["--format", "json", "--cni-path", "bin", "good/loopback.conflist"]);
    assert_eq!(clean.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(v["diagnostics"], serde_json::json!([]));
}

#[test]
fn graph_dot_prints_the_dataflow() {
    let o = validate(&["--graph", "dot", "--cni-path", "bin", "good/bridge-chain.conflist"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dot = stdout(&o);
    assert!(
        dot.starts_with("// good/bridge-chain.conflist\ndigraph \"podnet\" {\n"),
        "{dot}"
    );
    for line in [
        "0 [ label = \"plugins[0]: bridge\\lipam: host-local\"",
        "1 [ label = \"plugins[1]: tuning\"",
        "0 -> 1 [ label = \"pod interface\" ]",
        "0 -> 2 [ label = \"addresses\" ]",
        "0 -> 3 [ label = \"host veth\" ]",
    ] {
        assert!(dot.contains(line), "{line} not in\n{dot}");
    }
    // conflicts are drawn, and diagnostics go to stderr so stdout stays Graphviz
    let o = validate(&["--graph", "dot", "--cni-path", "bin", "bad/two-interfaces.conflist"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("0 -> 1 [ label = \"creates pod interface again\" color = red style = bold]"));
    assert!(stderr(&o).contains("error[E0402]"));
    assert!(!stdout(&o).contains("error["));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["no-such-file.conflist"][..],
        &["--format", "xml", "good"][..],
        &["--graph", "svg", "good"][..],
        &["--no-such-flag"][..],
    ] {
        let o = validate(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn no_exec_skips_the_version_query() {
    let o = validate(&["--no-exec", "--cni-path", "bin", "bad/old-plugin.conflist"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // types are still looked up
    let o = validate(&["--no-exec", "--cni-path", "bin", "bad/type-not-found.conflist"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn without_paths_the_conf_dir_is_validated() {
    let o = validate(&["--conf-dir", "dirs/duplicates", "--cni-path", "bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(corpus().join("dirs/duplicates.expected")).unwrap()
    );
    let out = stdout(&o);
    assert!(out.ends_with("\n4 files checked: 2 errors, 0 warnings\n"), "{out}");
    assert_eq!(stderr(&o), "");
}

/// Files named on the command line are checked against each other like a directory's.
#[test]
fn explicit_files_with_one_network_name() {
    let o = validate(&[
        "--cni-path",
        "bin",
        "dirs/duplicates/20-a.conflist",
        "dirs/duplicates/10-a.conflist",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.starts_with("dirs/duplicates/20-a.conflist:1:33: error[E0501]: network \"a\" is also defined in dirs/duplicates/10-a.conflist, which shadows this file (libcni takes the first file by name)\n"),
        "{out}"
    );
    assert!(out.ends_with("\n2 files checked: 1 error, 0 warnings\n"), "{out}");
    // the same file twice is not a duplicate
    let o = validate(&[
        "--cni-path",
        "bin",
        "good/crio-bridge.conflist",
        "./good/crio-bridge.conflist",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // one network name in two directories
    let o = validate(&[
        "--cni-path",
        "bin",
        "dirs/duplicates/10-a.conflist",
        "good/podman-default.conflist",
        "dirs/overlap/10-a.conflist",
    ]);
    let out = stdout(&o);
    assert!(out.contains("dirs/overlap/10-a.conflist:"), "{out}");
    assert!(out.contains("error[E0501]: network \"a\" is also defined in dirs/duplicates/10-a.conflist, which shadows this file (it comes first on the command line, and a runtime loads one network per name)"), "{out}");
    // across directories the order given decides, within one libcni's
    let o = validate(&[
        "--cni-path",
        "bin",
        "dirs/overlap/10-a.conflist",
        "dirs/duplicates/20-a.conflist",
        "dirs/duplicates/10-a.conflist",
    ]);
    let out = stdout(&o);
    assert_eq!(out.matches("error[E0501]").count(), 2, "{out}");
    assert!(out.contains("dirs/duplicates/10-a.conflist:1:33: error[E0501]: network \"a\" is also defined in dirs/overlap/10-a.conflist"), "{out}");
    assert!(out.contains("dirs/duplicates/20-a.conflist:1:33: error[E0501]: network \"a\" is also defined in dirs/overlap/10-a.conflist"), "{out}");
}

/// Human output is one stream: diagnostics and the summary on stdout.
#[test]
fn human_output_is_one_stream() {
    let o = validate(&["--cni-path", "bin", "bad/wrong-type.conflist"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    assert!(out.starts_with("bad/wrong-type.conflist:5:37: error[E0102]"), "{out}");
    assert!(out.ends_with("\n\n1 file checked: 2 errors, 0 warnings\n"), "{out}");
}

#[test]
fn an_unreadable_file_is_a_diagnostic() {
    let dir = std::env::temp_dir().join(format!("cnichain-validate-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.conflist");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len((16 << 20) + 1).unwrap();
    let o = validate(&["--cni-path", "bin", big.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("big.conflist: error[E0100]: "), "{}", stdout(&o));
    assert!(stdout(&o).contains("is larger than 16777216 bytes"));
}

/// The example conflists shipped in conflists/ are clean, each on its own (examples may
/// share subnets, so the cross-file checks are not applied to them).
#[test]
fn every_conflist_in_conflists_validates_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conflists");
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    let cni_path = format!("{}:/usr/lib/cni", corpus().join("bin").display());
    for f in files {
        let o = validate(&["--strict", "--cni-path", &cni_path, f.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}:\n{}{}",
            f.display(),
            stdout(&o),
            stderr(&o)
        );
    }
}

/// A host-local store or tuning record directory that users other than root can write
/// to is named (W0109): they could plant reservations or restore records there.
#[test]
fn a_data_dir_others_can_write_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir().join(format!("cnichain-validate-shared-{}", std::process::id()));
    let open = tmp.join("open");
    std::fs::create_dir_all(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let closed = tmp.join("closed");
    std::fs::create_dir_all(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let conf = |dir: &std::path::Path| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"sh","plugins":[
  {{"type":"bridge","ipam":{{"type":"host-local","dataDir":"{}/ipam","subnet":"10.86.0.0/24"}}}},
  {{"type":"tuning","dataDir":"{}/tuning"}}]}}"#,
            dir.display(),
            dir.display()
        )
    };
    std::fs::write(tmp.join("open.conflist"), conf(&open)).expect("write");
    std::fs::write(tmp.join("closed.conflist"), conf(&closed)).expect("write");
    let o = validate(&["--cni-path", "bin", &tmp.join("open.conflist").display().to_string()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(out.matches("warning[W0109]").count(), 2, "{out}");
    assert!(
        out.contains("plugins[0].ipam.dataDir") && out.contains("plugins[1].dataDir"),
        "{out}"
    );
    assert!(out.contains("writable by users other than root"), "{out}");
    let o = validate(&["--cni-path", "bin", &tmp.join("closed.conflist").display().to_string()]);
    let out = stdout(&o);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!out.contains("W0109"), "{out}");
}

/// tuning reads and applies `txQLen` (top level and `args.cni`): validate knows the key
/// (no W0105) and checks it as the loader does (a negative length is refused there).
#[test]
fn tuning_tx_queue_length_is_a_known_key() {
    let f = corpus().join("good/tuning-txqlen.conflist");
    let o = validate(&["--strict", "--cni-path", "bin", &f.display().to_string()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("W0105"), "{out}");
    assert_eq!(out, CLEAN);
    let tmp = std::env::temp_dir().join(format!("cnichain-validate-txq-{}.conflist", std::process::id()));
    let bad = std::fs::read_to_string(&f).expect("read").replace("2000", "-1");
    std::fs::write(&tmp, bad).expect("write");
    let o = validate(&["--cni-path", "bin", &tmp.display().to_string()]);
    let out = stdout(&o);
    let _ = std::fs::remove_file(&tmp);
    assert!(out.contains("plugins[1].txQLen"), "{out}");
    assert!(!out.contains("W0105"), "{out}");
}
