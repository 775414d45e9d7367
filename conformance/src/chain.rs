//! `--conflist`: the whole list under test, run as libcni runs it. The harness is the
//! runtime: ADD runs the plugins in order, each with the previous plugin's result as
//! prevResult; CHECK and DEL hand every plugin the cached ADD result (DEL in reverse
//! order); GC and STATUS call each plugin. The first failure ends the operation, and its
//! call is the operation's answer, as libcni returns the first error.
//!
//! The rules see the list as one plugin: `Ctx::conf` is the conflist itself (plus the
//! runtime's capability args under `runtimeConfig`, the cached result under
//! `prevResult`, GC's `cni.dev/valid-attachments`), and `Ctx::call` runs it here.

use super::call::{exec, lenient_json, Call};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The conflist under test.
pub struct Chain {
    pub path: PathBuf,
    /// The list as read; `Ctx::conf` moves its state paths into the sandbox.
    pub list: Value,
    /// `--plugin`: used for the entries of its file name's type.
    pub over: Option<PathBuf>,
}

/// The runtime's capability args (libcni's CapabilityArgs): each plugin gets those it
/// declares in `capabilities`, as containerd and CRI-O send them.
pub fn capability_args() -> Value {
    json!({
        "portMappings": [{ "hostPort": 18080, "containerPort": 80, "protocol": "tcp" }],
        "bandwidth": { "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 8000000, "egressBurst": 800000 }
    })
}

impl Chain {
    /// Read the conflist; every plugin's binary must be found (else a usage error).
    pub fn load(path: &Path, over: Option<PathBuf>, dirs: &[PathBuf]) -> Result<Chain, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--conflist {}: {e}", path.display()))?;
        let list: Value = serde_json::from_str(&text).map_err(|e| format!("--conflist {}: {e}", path.display()))?;
        let plugins = list["plugins"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("--conflist {}: no \"plugins\" list", path.display()))?;
        let chain = Chain {
            path: path.to_path_buf(),
            list: list.clone(),
            over,
        };
        for p in plugins {
            let t = p["type"].as_str().unwrap_or_default();
            if chain.binary(t, dirs).is_none() {
                return Err(format!(
                    "--conflist {}: no plugin binary of type {t:?} in {}",
                    path.display(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ));
            }
        }
        if let Some(o) = &chain.over {
            let name = o
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !plugins.iter().any(|p| p["type"].as_str() == Some(name.as_str())) {
                return Err(format!(
                    "--conflist {}: no plugin of type {name:?} (the --plugin binary's name)",
                    path.display()
                ));
            }
        }
        Ok(chain)
    }

    pub fn types(&self) -> Vec<String> {
        self.list["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The list's cniVersion (libcni hands it to every plugin).
    pub fn version(&self) -> Option<String> {
        self.list["cniVersion"].as_str().map(String::from)
    }

    /// The binary for a plugin type: `--plugin` for its own type, else the first in `dirs`.
    pub fn binary(&self, t: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        if t.is_empty() || t.contains('/') {
            return None;
        }
        if let Some(o) = &self.over {
            if o.file_name().is_some_and(|n| n.to_string_lossy() == t) {
                return Some(o.clone());
            }
        }
        dirs.iter().map(|d| d.join(t)).find(|p| p.is_file())
    }

    /// The list for version `v` with its state paths in the sandbox dir `sb`, and the
    /// runtime's capability args.
    pub fn conf(&self, v: &str, sb: &Path) -> Value {
        let mut l = self.list.clone();
        l["cniVersion"] = json!(v);
        if let Some(ps) = l["plugins"].as_array_mut() {
            for p in ps {
                if p.get("ipam").is_some_and(Value::is_object) {
                    p["ipam"]["dataDir"] = json!(sb.join("ipam").display().to_string());
                }
                if p.get("dataDir").is_some() {
                    p["dataDir"] = json!(sb.join("state").display().to_string());
                }
            }
        }
        l["runtimeConfig"] = capability_args();
        l
    }
}

/// libcni's buildOneConfig: the list's name and cniVersion, the capability args the plugin
/// declares, and prevResult.
pub fn plugin_conf(list: &Value, i: usize, command: &str, prev: Option<&Value>) -> Value {
    let mut p = list["plugins"][i].clone();
    if !p.is_object() {
        return p;
    }
    p["name"] = list["name"].clone();
    p["cniVersion"] = list["cniVersion"].clone();
    if !matches!(command, "GC" | "STATUS") {
        let mut rc = Map::new();
        for (cap, on) in p["capabilities"].as_object().into_iter().flatten() {
            if on.as_bool() == Some(true) {
                if let Some(arg) = list["runtimeConfig"].get(cap) {
                    rc.insert(cap.clone(), arg.clone());
                }
            }
        }
        if !rc.is_empty() {
            p["runtimeConfig"] = Value::Object(rc);
        }
    }
    if let Some(r) = prev {
        p["prevResult"] = r.clone();
    }
    if command == "GC" {
        for k in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let Some(a) = list.get(k) {
                p[k] = a.clone();
            }
        }
    }
    p
}

/// Where the list runs: the host netns, the plugin directories, the per-call deadline,
/// and the record of the last operation's plugin calls.
pub struct Site<'a> {
    pub host: String,
    pub dirs: Vec<PathBuf>,
    pub timeout: Duration,
    pub stages: &'a RefCell<Vec<Call>>,
}

/// Run one operation over the list; every plugin call is recorded in `at.stages`.
pub fn run(at: &Site, chain: &Chain, what: &str, env: Vec<(String, String)>, stdin: &[u8]) -> Call {
    let command = env
        .iter()
        .find(|(k, _)| k == "CNI_COMMAND")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let dirs = &at.dirs;
    let list: Value = match serde_json::from_slice::<Value>(stdin) {
        Ok(v) if v["plugins"].is_array() => v,
        // Not a list (a rule's garbage): the first plugin gets it, as it would the bytes.
        _ => {
            let first = chain.types().into_iter().next().unwrap_or_default();
            let bin = chain.binary(&first, dirs).unwrap_or_default();
            let call = exec(what, &bin, &at.host, env, stdin, at.timeout);
            at.stages.borrow_mut().push(call.clone());
            return call;
        }
    };
    let n = list["plugins"].as_array().map_or(0, Vec::len);
    let order: Vec<usize> = if command == "DEL" {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    };
    let cached = list.get("prevResult").filter(|r| r.is_object()).cloned();
    let mut prev: Option<Value> = None;
    let mut answer: Option<Call> = None;
    at.stages.borrow_mut().clear();
    for i in order {
        let t = list["plugins"][i]["type"].as_str().unwrap_or_default().to_string();
        let given = match command.as_str() {
            "ADD" => prev.as_ref(),
            "CHECK" | "DEL" => cached.as_ref(),
            _ => None,
        };
        let conf = plugin_conf(&list, i, &command, given);
        let label = format!("{what} (plugin {}/{n}, {t})", i + 1);
        let call = match chain.binary(&t, dirs) {
            Some(bin) => exec(
                &label,
                &bin,
                &at.host,
                env.clone(),
                conf.to_string().as_bytes(),
                at.timeout,
            ),
            None => Call {
                what: label,
                program: t.clone(),
                netns: at.host.clone(),
                env: env.clone(),
                stdin: conf.to_string(),
                stdout: String::new(),
                stderr: String::new(),
                status: None,
                note: format!("no plugin binary of type {t:?} in CNI_PATH"),
            },
        };
        at.stages.borrow_mut().push(call.clone());
        if !call.ok() {
            return call;
        }
        if command == "ADD" {
            match lenient_json(&call.stdout) {
                Some(r) => prev = Some(r),
                // libcni cannot parse the result: the list's ADD fails here.
                None => return call,
            }
            answer = Some(call);
        } else if answer.as_ref().is_none_or(|a| a.stdout.trim().is_empty()) {
            // A chatty CHECK/DEL/GC is the answer the quiet-stdout rules judge.
            answer = Some(call);
        }
    }
    answer.unwrap_or_else(|| Call {
        what: what.into(),
        program: chain.path.display().to_string(),
        netns: at.host.clone(),
        env,
        stdin: String::from_utf8_lossy(stdin).into_owned(),
        stdout: String::new(),
        stderr: String::new(),
        status: Some(0),
        note: "the list has no plugins".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [
                { "type": "bridge", "ipam": { "type": "host-local" } },
                { "type": "portmap", "capabilities": { "portMappings": true, "bandwidth": false } },
                { "type": "tuning", "runtimeConfig": { "mac": "own" } }
            ],
            "runtimeConfig": capability_args(),
            "cni.dev/valid-attachments": [{ "containerID": "c", "ifname": "eth0" }]
        })
    }

    #[test]
    fn each_plugin_gets_what_libcni_gives_it() {
        let l = list();
        let prev = json!({ "cniVersion": "1.0.0", "ips": [] });
        // Name and version of the list; only declared capabilities; prevResult.
        let p = plugin_conf(&l, 1, "ADD", Some(&prev));
        assert_eq!(p["name"], "n");
        assert_eq!(p["cniVersion"], "1.0.0");
        assert_eq!(
            p["runtimeConfig"],
            json!({ "portMappings": l["runtimeConfig"]["portMappings"] })
        );
        assert_eq!(p["prevResult"], prev);
        assert!(p.get("cni.dev/valid-attachments").is_none());
        // No capability declared: the entry's own runtimeConfig stays, none is added.
        let t = plugin_conf(&l, 2, "DEL", None);
        assert_eq!(t["runtimeConfig"], json!({ "mac": "own" }));
        assert!(t.get("prevResult").is_none());
        assert!(plugin_conf(&l, 0, "ADD", None).get("runtimeConfig").is_none());
        // GC: the valid attachments, no runtimeConfig.
        let g = plugin_conf(&l, 1, "GC", None);
        assert_eq!(g["cni.dev/valid-attachments"], l["cni.dev/valid-attachments"]);
        assert!(g.get("runtimeConfig").is_none());
    }

    #[test]
    fn conf_moves_state_paths_into_the_sandbox() {
        let ch = Chain {
            path: "x".into(),
            list: json!({ "cniVersion": "0.4.0", "plugins": [
                { "type": "bridge", "ipam": { "type": "host-local", "dataDir": "/var/lib/cni/networks" } },
                { "type": "tuning", "dataDir": "/run/cni/tuning" }
            ]}),
            over: None,
        };
        let c = ch.conf("1.0.0", Path::new("/tmp/sb"));
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/tmp/sb/ipam");
        assert_eq!(c["plugins"][1]["dataDir"], "/tmp/sb/state");
        assert_eq!(ch.binary("../x", &[]), None);
    }
}
