//! Twin sandboxes for differential tests of a chained plugin: two sandboxes made alike
//! (a host netns, a pod netns, veth pairs between them with the same names), so that
//! the reference plugin runs in one and cnichain's drop-in in the other on the same
//! config, prevResult, container ID and ifname, and their results, errors and kernel
//! state can be compared field by field.

use super::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// One side of a twin: a sandbox with a pod and veth pairs, and the plugin binary that
/// runs there.
pub struct Side {
    pub sb: Sandbox,
    /// The pod netns path.
    pub pod: String,
    /// The plugin binary (the reference's, or a `<type>` symlink to cnichain).
    pub plugin: PathBuf,
}

/// The reference (`r`) and cnichain (`o`) sides.
pub struct Twin {
    pub r: Side,
    pub o: Side,
}

impl Side {
    fn new(tag: &str, plugin: PathBuf) -> Side {
        let mut sb = Sandbox::new(tag);
        let pod = sb.pod("p");
        Side { sb, pod, plugin }
    }

    /// A veth pair: `host_name` in the host netns, `pod_ifname` in the pod, both up.
    pub fn add_veth(&self, host_name: &str, pod_ifname: &str) {
        let host = self.sb.host();
        let podn = ns_name(&self.pod);
        sh(
            &self.sb,
            &host,
            &format!(
                "ip link add {host_name} type veth peer name {pod_ifname} netns {podn} && ip link set {host_name} up"
            ),
        );
        sh(&self.sb, &podn, &format!("ip link set {pod_ifname} up"));
    }

    /// A prevResult naming the host veth and the pod interface, as a main plugin's.
    pub fn prev_result(&self, host_name: &str, pod_ifname: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": host_name},
                {"name": pod_ifname, "sandbox": self.pod},
            ],
        })
    }

    /// Run the plugin as a runtime does: `CNI_COMMAND` etc. in the environment, the
    /// config on stdin, in the host netns.
    pub fn run(&self, command: &str, config: &Value, container_id: &str, ifname: &str) -> Output {
        let mut c = self.sb.in_host(&self.plugin);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", &self.pod)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", REF_PLUGINS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn plugin");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(config.to_string().as_bytes());
        }
        child.wait_with_output().expect("wait for plugin")
    }

    /// A shell snippet in the host netns; its trimmed stdout (must succeed).
    pub fn host_sh(&self, script: &str) -> String {
        sh(&self.sb, &self.sb.host(), script)
    }

    /// A shell snippet in the host netns whose failure is fine (cleanup).
    pub fn host_try(&self, script: &str) {
        let _ = self.sb.sh_in(&self.sb.host(), script);
    }

    /// `tc -j ARGS` in the host netns, parsed.
    pub fn tc_json(&self, args: &str) -> Value {
        let out = self.host_sh(&format!("tc -j {args}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tc -j {args}: {e}: {out}"))
    }

    /// The names of the host netns's links of a kind (e.g. "ifb").
    pub fn links_of_kind(&self, kind: &str) -> Vec<String> {
        let out = self.host_sh(&format!(
            "ip -o link show type {kind} | awk -F': ' '{{print $2}}' | cut -d@ -f1"
        ));
        out.lines().map(String::from).filter(|l| !l.is_empty()).collect()
    }
}

impl Twin {
    /// Twin sandboxes `<tag>r` (running `/usr/lib/cni/<plugin_type>`) and `<tag>o`
    /// (running cnichain's drop-in of that name).
    pub fn new(tag: &str, plugin_type: &str) -> Twin {
        let r = Side::new(&format!("{tag}r"), Path::new(REF_PLUGINS).join(plugin_type));
        let o = Side::new(&format!("{tag}o"), PathBuf::new());
        let dir = o.sb.dir.join("bin");
        std::fs::create_dir_all(&dir).expect("bin dir");
        let bin = dir.join(plugin_type);
        // CNICHAIN_TWIN_BIN: compare another cnichain build (e.g. an older one)
        let target = std::env::var_os("CNICHAIN_TWIN_BIN").map_or_else(cnichain_bin, PathBuf::from);
        std::os::unix::fs::symlink(target, &bin).expect("drop-in symlink");
        Twin {
            r,
            o: Side { plugin: bin, ..o },
        }
    }

    pub fn sides(&self) -> [&Side; 2] {
        [&self.r, &self.o]
    }

    /// The same veth pair on both sides.
    pub fn add_veth(&self, host_name: &str, pod_ifname: &str) {
        for s in self.sides() {
            s.add_veth(host_name, pod_ifname);
        }
    }
}

/// Replace every occurrence of `from` in the JSON `v` (keys and strings) by `to`.
pub fn rename_in(v: &Value, from: &str, to: &str) -> Value {
    if from.is_empty() {
        return v.clone();
    }
    serde_json::from_str(&v.to_string().replace(from, to)).unwrap_or_else(|_| v.clone())
}

/// Run `cmd` and return its output, for commands that may fail.
pub fn run_cmd(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}
