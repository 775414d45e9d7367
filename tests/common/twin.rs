//! Twin sandboxes for differential tests: one side runs the reference plugin binaries
//! from /usr/lib/cni, the other cnichain's drop-ins (the cnichain binary under each
//! plugin's name, symlinks in the sandbox's `cnibin/`), each with its own host netns, a
//! pod netns, IPAM dir and state dir. A plugin is executed directly, as a runtime
//! executes it (CNI_* environment, config on stdin), inside the side's host netns; what
//! comes back and the kernel state of both namespaces are normalized only where the
//! difference is random by nature.

use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Output;

/// The stages cnichain answers for as a drop-in.
pub const DROP_INS: &[&str] = &[
    "bridge",
    "ptp",
    "loopback",
    "host-local",
    "static",
    "tuning",
    "portmap",
    "bandwidth",
];

/// The container ID of `exec` calls.
pub const EXEC_CID: &str = "cid-differential";

/// One side of a twin.
pub struct Twin {
    pub sb: Sandbox,
    pub reference: bool,
    /// A pod netns made with the side (path and name); tests may make more with `sb.pod`.
    pub pod: String,
    pub pod_ns: String,
    /// The drop-in symlinks (cnichain side only; the directory is empty otherwise).
    pub bin: PathBuf,
    /// The container ID cnitool derives from the pod's netns path.
    pub cnitool_cid: String,
}

/// The reference (`r`) and cnichain (`o`) sides, for tests that treat them apart.
pub struct Pair {
    pub r: Twin,
    pub o: Twin,
}

/// What one plugin call printed and returned, comparable across the twins.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit 0 and the parsed stdout (null when empty).
    Ok(Value),
    /// Exit status, code and msg of the error object (`details` is cnichain's help and
    /// `cniVersion` a deliberate addition, both left out).
    Err { status: i32, code: Value, msg: Value },
    /// Anything else (unparsable stdout).
    Other { status: i32, stdout: String },
}

impl Outcome {
    pub fn result(&self) -> Option<&Value> {
        match self {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// A plugin's output, classified.
    pub fn of(out: &Output) -> Outcome {
        let status = out.status.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let parsed: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        match (status, parsed) {
            (0, Some(v)) => Outcome::Ok(v),
            (s, Some(v)) if s != 0 && v.get("code").is_some() => Outcome::Err {
                status: s,
                code: v["code"].clone(),
                msg: v["msg"].clone(),
            },
            (s, _) => Outcome::Other {
                status: s,
                stdout: text,
            },
        }
    }
}

impl Twin {
    /// Side `<tag>r` (reference) or `<tag>c` (cnichain), with a pod netns `pd`.
    pub fn new(tag: &str, reference: bool) -> Twin {
        let mut sb = Sandbox::new(&format!("{tag}{}", if reference { "r" } else { "c" }));
        let pod = sb.pod("pd");
        let pod_ns = ns_name(&pod);
        let bin = sb.dir.join("cnibin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        if !reference {
            // CNICHAIN_TWIN_BIN: compare another cnichain build (e.g. an older one)
            let target = std::env::var_os("CNICHAIN_TWIN_BIN").map_or_else(cnichain_bin, PathBuf::from);
            for p in DROP_INS {
                std::os::unix::fs::symlink(&target, bin.join(p)).expect("drop-in symlink");
            }
        }
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s '{pod}' | sha512sum | cut -c1-20")])
            .output()
            .expect("sha512sum");
        let cnitool_cid = format!("cnitool-{}", String::from_utf8_lossy(&out.stdout).trim());
        Twin {
            sb,
            reference,
            pod,
            pod_ns,
            bin,
            cnitool_cid,
        }
    }

    /// The reference side and cnichain's, in that order.
    pub fn pair(tag: &str) -> [Twin; 2] {
        [Twin::new(tag, true), Twin::new(tag, false)]
    }

    pub fn label(&self) -> &'static str {
        if self.reference {
            "reference"
        } else {
            "cnichain"
        }
    }

    /// The CNI_PATH a runtime would give: the drop-ins first, the reference for the rest.
    pub fn cni_path(&self) -> String {
        if self.reference {
            REF_PLUGINS.to_string()
        } else {
            format!("{}:{REF_PLUGINS}", self.bin.display())
        }
    }

    pub fn plugin(&self, name: &str) -> PathBuf {
        if self.reference {
            Path::new(REF_PLUGINS).join(name)
        } else {
            self.bin.join(name)
        }
    }

    /// `@DIR@` is this side's temp dir, `@IPAM@` its IPAM dir, `@NETNS@` its pod netns path.
    pub fn subst(&self, text: &str) -> String {
        text.replace("@DIR@", &self.sb.dir.display().to_string())
            .replace("@IPAM@", &self.sb.ipam_dir().display().to_string())
            .replace("@NETNS@", &self.pod)
    }

    /// Run plugin `typ` for `command` in the host netns, as a runtime does: a clean
    /// environment with the CNI_* variables and `extra` ones (CNI_ARGS...), the config on
    /// stdin after `subst`. `wrap` goes between nsenter and the plugin (for example
    /// `unshare -m ...`).
    #[allow(clippy::too_many_arguments)]
    pub fn call_wrapped(
        &self,
        wrap: &[&str],
        typ: &str,
        command: &str,
        netns: &str,
        ifname: &str,
        cid: &str,
        extra: &[(&str, &str)],
        conf: &Value,
    ) -> Output {
        let mut c = Command::new("nsenter");
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.cni_path())
            .env("CNICHAIN_STATE_DIR", self.sb.dir.join("state"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.arg(format!("--net=/run/netns/{}", self.sb.host()))
            .arg("--")
            .args(wrap)
            .arg(self.plugin(typ));
        pipe(c, &self.subst(&conf.to_string()))
    }

    pub fn call(&self, typ: &str, command: &str, netns: &str, ifname: &str, cid: &str, conf: &Value) -> Output {
        self.call_wrapped(&[], typ, command, netns, ifname, cid, &[], conf)
    }

    /// `call` on this side's own pod.
    pub fn run_on_pod(&self, typ: &str, command: &str, conf: &Value, cid: &str, ifname: &str) -> Output {
        self.call(typ, command, &self.pod, ifname, cid, conf)
    }

    /// `plugin` on this side's pod with container ID `EXEC_CID` and CNI_ARGS `args`
    /// (unset when empty), classified.
    pub fn exec(&self, plugin: &str, command: &str, config: &Value, ifname: &str, args: &str) -> Outcome {
        let extra: &[(&str, &str)] = if args.is_empty() { &[] } else { &[("CNI_ARGS", args)] };
        Outcome::of(&self.call_wrapped(&[], plugin, command, &self.pod, ifname, EXEC_CID, extra, config))
    }

    /// A shell snippet in the host netns; its trimmed stdout (must succeed).
    pub fn host_sh(&self, script: &str) -> String {
        sh(&self.sb, &self.sb.host(), script)
    }

    /// A shell snippet in the host netns; its trimmed stdout (failure allowed).
    pub fn host_out(&self, script: &str) -> String {
        stdout(&self.sb.sh_in(&self.sb.host(), script)).trim().to_string()
    }

    /// A shell snippet in the host netns whose failure is fine (cleanup).
    pub fn host_try(&self, script: &str) {
        let _ = self.sb.sh_in(&self.sb.host(), script);
    }

    /// A shell snippet in this side's pod netns; it must succeed.
    pub fn pod_sh(&self, script: &str) {
        if script.is_empty() {
            return;
        }
        let o = self.sb.sh_in(&self.pod_ns, script);
        assert!(o.status.success(), "pod setup {script:?}: {}", stderr(&o));
    }

    /// A shell snippet in a pod netns given by path; its trimmed stdout (failure allowed).
    pub fn pod_out(&self, pod: &str, script: &str) -> String {
        stdout(&self.sb.sh_in(&ns_name(pod), script)).trim().to_string()
    }

    /// The MAC of a link in the host netns ("" when there is none).
    pub fn host_mac(&self, link: &str) -> String {
        self.host_out(&format!("cat /sys/class/net/{link}/address 2>/dev/null || ip -o link show {link} | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2"))
    }

    /// A veth pair: `host_name` in the host netns, `pod_ifname` in this side's pod, both up.
    pub fn add_veth(&self, host_name: &str, pod_ifname: &str) {
        let host = self.sb.host();
        sh(
            &self.sb,
            &host,
            &format!(
                "ip link add {host_name} type veth peer name {pod_ifname} netns {} && ip link set {host_name} up",
                self.pod_ns
            ),
        );
        sh(&self.sb, &self.pod_ns, &format!("ip link set {pod_ifname} up"));
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

    /// Replace what is this twin's own (temp dir, netns names, host veth names, random
    /// MACs not in `keep`) by placeholders, in any text.
    pub fn normalize_text(&self, text: &str, host_veths: &[String], keep: &str) -> String {
        let mut t = text
            .replace(&self.sb.dir.display().to_string(), "<dir>")
            .replace(&self.pod_ns, "<pod>")
            .replace(&self.sb.host(), "<host>")
            .replace(&self.cnitool_cid, "<cid>");
        for v in host_veths {
            t = t.replace(v.as_str(), "<hostveth>");
        }
        normalize_macs(&normalize_veth_names(&t), keep)
    }

    /// The result with random parts replaced; returns the host veth names it saw.
    pub fn normalize_result(&self, v: &Value, keep: &str) -> (Value, Vec<String>) {
        let mut veths = Vec::new();
        if let Some(ifs) = v["interfaces"].as_array() {
            for i in ifs {
                if let Some(n) = i["name"].as_str() {
                    if n.starts_with("veth") && i.get("sandbox").is_none() {
                        veths.push(n.to_string());
                    }
                }
            }
        }
        let text = self.normalize_text(&v.to_string(), &veths, keep);
        (serde_json::from_str(&text).unwrap_or(Value::Null), veths)
    }

    pub fn normalize_outcome(&self, o: &Outcome, keep: &str) -> (Value, Vec<String>) {
        match o {
            Outcome::Ok(v) => {
                let (v, veths) = self.normalize_result(v, keep);
                (json!({"ok": v}), veths)
            }
            Outcome::Err { status, code, msg } => {
                let msg = Value::String(self.normalize_text(msg.as_str().unwrap_or_default(), &[], keep));
                (json!({"status": status, "code": code, "msg": msg}), Vec::new())
            }
            Outcome::Other { status, stdout } => (json!({"status": status, "stdout": stdout}), Vec::new()),
        }
    }

    /// The kernel state a runtime or operator can observe, normalized: one shell per
    /// namespace, its output cut into sections.
    pub fn state(&self, host_veths: &[String], sysctls: &[&str], keep: &str) -> BTreeMap<String, String> {
        let host = self.sb.host();
        // carrier state settles asynchronously after a port or peer comes or goes
        let clean = "sed -E 's/NO-CARRIER,//; s/ state (UP|DOWN|LOWERLAYERDOWN) / state <carrier> /; s/ linkdown//; s/^[0-9]+: //; s/@if[0-9]+//; s/ link-netns [^ ]+//; s/link-netnsid [0-9]+//; s/ +/ /g' | grep -v -e 'fe80' -e 'valid_lft' | sort";
        let mut script = format!(
            "echo '## links'; ip -o -d link show | sed -E 's/ (addrgenmode|numtxqueues|numrxqueues|gso_max_size|gso_max_segs|tso_max_size|tso_max_segs|gro_max_size|gso_ipv4_max_size|gro_ipv4_max_size|parentbus|parentdev|bridge_id|designated_root|root_id|designated_bridge|port_id|port_no|designated_port|designated_cost|vlan_protocol|group_address|mcast_[a-z_]+|nf_call_[a-z]+|no_linklocal_learn) [^ ]+//g; s/ (hello_timer|tcn_timer|topology_change_timer|gc_timer|message_age_timer|forward_delay_timer|hold_timer) +[0-9.]+//g; s/\\\\ +alias .*$//' | {clean}; \
             echo '## addrs'; ip -o addr show | awk '{{print $2, $3, $4, $5, $6}}' | {clean}; \
             echo '## routes'; {{ ip route show table all; ip -6 route show table all; }} | grep -v -e fe80 -e '^local' -e '^broadcast' -e '^multicast' -e anycast | sed -E 's/ pref medium//; s/ linkdown//' | sort; \
             echo '## qdiscs'; tc qdisc show | sort; \
             echo '## sysctls'; echo fwd4=$(cat /proc/sys/net/ipv4/ip_forward);"
        );
        for k in sysctls {
            let p = k.replace('.', "/");
            script.push_str(&format!("echo {k}=$(cat /proc/sys/{p} 2>/dev/null);"));
        }
        let mut out = BTreeMap::new();
        for (side, ns) in [("pod", self.pod_ns.as_str()), ("host", host.as_str())] {
            let text = self.normalize_text(&sh(&self.sb, ns, &script), host_veths, keep);
            let mut section = String::new();
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("## ") {
                    section = format!("{side} {name}");
                    out.insert(section.clone(), String::new());
                } else if let Some(s) = out.get_mut(&section) {
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        let mut files = String::new();
        for f in self.sb.files_in("") {
            if f.starts_with("cnibin/") || f.starts_with("state/") {
                continue;
            }
            let body = std::fs::read(self.sb.dir.join(&f)).unwrap_or_default();
            files.push_str(&format!("{f}: {:?}\n", String::from_utf8_lossy(&body)));
        }
        out.insert("files".into(), self.normalize_text(&files, host_veths, keep));
        out
    }
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let [r, o] = Twin::pair(tag);
        Pair { r, o }
    }

    pub fn sides(&self) -> [&Twin; 2] {
        [&self.r, &self.o]
    }

    /// The same veth pair on both sides.
    pub fn add_veth(&self, host_name: &str, pod_ifname: &str) {
        for s in self.sides() {
            s.add_veth(host_name, pod_ifname);
        }
    }
}

/// The output as JSON (a result or an error object); panics naming `what` otherwise.
pub fn json_out(o: &Output, what: &str) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}): {} / stderr: {}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Replace every occurrence of `from` in the JSON `v` (keys and strings) by `to`.
pub fn rename_in(v: &Value, from: &str, to: &str) -> Value {
    if from.is_empty() {
        return v.clone();
    }
    serde_json::from_str(&v.to_string().replace(from, to)).unwrap_or_else(|_| v.clone())
}

/// `veth` + 8 hex digits (the reference's random host veth names, cnichain's derived
/// ones) become `<hostveth>`; `bwp` + 12 hex digits (the ifb, named from the container
/// ID, which cnitool derives from the netns path) `<ifb>`.
pub fn normalize_veth_names(text: &str) -> String {
    let mut t = text.to_string();
    for (prefix, digits, to) in [("veth", 8, "<hostveth>"), ("bwp", 12, "<ifb>")] {
        let mut out = String::with_capacity(t.len());
        let mut rest = t.as_str();
        while let Some(i) = rest.find(prefix) {
            out.push_str(&rest[..i]);
            let after = &rest[i + prefix.len()..];
            let hex = after.bytes().take(digits).filter(u8::is_ascii_hexdigit).count();
            let boundary = after.as_bytes().get(digits).is_none_or(|c| !c.is_ascii_alphanumeric());
            if hex == digits && boundary {
                out.push_str(to);
                rest = &after[digits..];
            } else {
                out.push_str(prefix);
                rest = after;
            }
        }
        out.push_str(rest);
        t = out;
    }
    t
}

/// MAC addresses (xx:xx:xx:xx:xx:xx) not found in `keep` become `<mac>`; broadcast
/// ff:ff:ff:ff:ff:ff and all-zero stay.
pub fn normalize_macs(text: &str, keep: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is_mac = |s: &[u8]| {
        s.len() == 17
            && s.iter()
                .enumerate()
                .all(|(j, c)| if j % 3 == 2 { *c == b':' } else { c.is_ascii_hexdigit() })
    };
    while i < b.len() {
        let boundary_before = i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b':';
        let end = i + 17;
        if boundary_before
            && end <= b.len()
            && is_mac(&b[i..end])
            && (end == b.len() || !b[end].is_ascii_alphanumeric() && b[end] != b':')
        {
            let mac = &text[i..end];
            let lower = mac.to_ascii_lowercase();
            if lower == "ff:ff:ff:ff:ff:ff"
                || lower == "00:00:00:00:00:00"
                || keep.to_ascii_lowercase().contains(&lower)
            {
                out.push_str(mac);
            } else {
                out.push_str("<mac>");
            }
            i = end;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}
