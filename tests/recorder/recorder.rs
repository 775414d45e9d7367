//! Test-only recording CNI plugin (built with `--features test-plugins`). Every call
//! writes {argv, env, stdin} to `$CNICHAIN_RECORD_DIR/<nanos>-<pid>-<COMMAND>.json`, so a
//! test can compare what cnichain and libcni send, byte for byte.
//!
//! Behaviour, driven by keys in the plugin's own config:
//! - `recorderError`: {"COMMAND": {"code": N, "msg": "..."}} fails that command
//! - `recorderResult`: a result to print on ADD (default: prevResult, or one address)
//! - `recorderSleepMs`: sleep before answering
//! - `recorderStderr`: a line to write on stderr
//! - `recorderEmptyFail`: exit 1 with nothing on stdout for that command

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let record = serde_json::json!({
        "argv": std::env::args().collect::<Vec<_>>(),
        "env": env,
        "stdin": String::from_utf8_lossy(&stdin),
    });
    if let Ok(dir) = std::env::var("CNICHAIN_RECORD_DIR") {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = format!("{dir}/{nanos:020}-{}-{command}.json", std::process::id());
        let _ = std::fs::write(path, serde_json::to_vec_pretty(&record).unwrap_or_default());
    }
    let conf: serde_json::Value = serde_json::from_slice(&stdin).unwrap_or(serde_json::Value::Null);
    let version = conf
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("1.0.0")
        .to_string();
    if let Some(ms) = conf.get("recorderSleepMs").and_then(|v| v.as_u64()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Some(s) = conf.get("recorderStderr").and_then(|v| v.as_str()) {
        eprintln!("{s}");
    }
    if conf.get("recorderEmptyFail").and_then(|v| v.as_str()) == Some(command.as_str()) {
        std::process::exit(1);
    }
    if let Some(err) = conf.get("recorderError").and_then(|e| e.get(&command)) {
        let mut e = err.clone();
        if let Some(m) = e.as_object_mut() {
            m.insert("cniVersion".into(), version.clone().into());
        }
        print!("{e}");
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    let out = match command.as_str() {
        "VERSION" => serde_json::json!({
            "cniVersion": version,
            "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        }),
        "ADD" => {
            if let Some(r) = conf.get("recorderResult") {
                r.clone()
            } else if let Some(p) = conf.get("prevResult") {
                p.clone()
            } else {
                serde_json::json!({
                    "cniVersion": version,
                    "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
                    "dns": {},
                })
            }
        }
        _ => return,
    };
    print!("{out}");
    let _ = std::io::stdout().flush();
}
