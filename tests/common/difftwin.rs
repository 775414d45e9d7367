//! Twin sandboxes for differential tests: one runs the reference plugin binary from
//! /usr/lib/cni, the other cnichain's drop-in (the cnichain binary under the plugin's
//! name, a symlink in a temp dir), each with its own host netns, pod netns and temp dir.
//! A plugin is executed directly, as a runtime executes it (CNI_* environment, config on
//! stdin), inside the twin's host netns; what comes back and the kernel state of both
//! namespaces are normalized only where the difference is random by nature.

use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

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

pub struct Twin {
    pub sb: Sandbox,
    pub reference: bool,
    /// The pod netns path and name.
    pub pod: String,
    pub pod_ns: String,
    /// The drop-in symlinks (cnichain twin only).
    pub bin: PathBuf,
    /// The container ID cnitool derives from the pod's netns path.
    pub cnitool_cid: String,
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
}

impl Twin {
    pub fn new(tag: &str, reference: bool) -> Twin {
        let mut sb = Sandbox::new(&format!("{tag}{}", if reference { "r" } else { "c" }));
        let pod = sb.pod("p");
        let pod_ns = ns_name(&pod);
        let bin = sb.dir.join("cnibin");
        if !reference {
            std::fs::create_dir_all(&bin).expect("bin dir");
            for p in DROP_INS {
                std::os::unix::fs::symlink(cnichain_bin(), bin.join(p)).expect("symlink");
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

    /// `@DIR@` is this twin's temp dir, `@NETNS@` its pod netns path.
    pub fn subst(&self, text: &str) -> String {
        text.replace("@DIR@", &self.sb.dir.display().to_string())
            .replace("@NETNS@", &self.pod)
    }

    /// Run a shell snippet in the pod netns; it must succeed.
    pub fn pod_sh(&self, script: &str) {
        if script.is_empty() {
            return;
        }
        let o = self.sb.sh_in(&self.pod_ns, script);
        assert!(o.status.success(), "pod setup {script:?}: {}", stderr(&o));
    }

    /// Execute `plugin` with `command` on `config` as a runtime does.
    pub fn exec(&self, plugin: &str, command: &str, config: &Value, ifname: &str, args: &str) -> Outcome {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.sb.host()))
            .arg("--")
            .arg(self.plugin(plugin))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "cid-differential")
            .env("CNI_NETNS", &self.pod)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.cni_path())
            .env("CNICHAIN_STATE_DIR", self.sb.dir.join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !args.is_empty() {
            c.env("CNI_ARGS", args);
        }
        let mut child = c.spawn().expect("spawn plugin");
        let input = self.subst(&config.to_string());
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("wait plugin");
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
