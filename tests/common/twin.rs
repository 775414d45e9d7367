//! Twin sandboxes for differential tests of single plugins: the same plugin call made
//! once on the reference binary in /usr/lib/cni and once on cnichain's drop-in of the
//! same name, each in its own sandbox (host netns, pods, IPAM dir, state dir).

use super::{cnichain_bin, ns_name, stdout, Sandbox, REF_PLUGINS};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The types cnichain's drop-in directory links to the binary.
const DROP_INS: &[&str] = &["bridge", "ptp", "loopback", "host-local", "static"];

pub struct Twin {
    pub sb: Sandbox,
    /// Where the plugins are: /usr/lib/cni, or the sandbox's directory of drop-in links.
    pub bin: PathBuf,
    pub reference: bool,
}

impl Twin {
    pub fn new(tag: &str, reference: bool) -> Twin {
        let sb = Sandbox::new(&format!("{tag}{}", if reference { "r" } else { "c" }));
        let bin = if reference {
            PathBuf::from(REF_PLUGINS)
        } else {
            let dir = sb.dir.join("cnibin");
            std::fs::create_dir_all(&dir).expect("drop-in dir");
            for t in DROP_INS {
                std::os::unix::fs::symlink(cnichain_bin(), dir.join(t)).expect("drop-in link");
            }
            dir
        };
        Twin { sb, bin, reference }
    }

    /// The reference twin and cnichain's, in that order.
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

    /// Run plugin `typ` for `command` in the host netns, as a runtime does: the CNI_*
    /// variables, `extra` ones (CNI_ARGS...), the config on stdin with `@IPAM@` replaced
    /// by this sandbox's IPAM dir. `wrap` goes between nsenter and the plugin (for
    /// example `unshare -m ...`).
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
        let text = conf
            .to_string()
            .replace("@IPAM@", &self.sb.ipam_dir().display().to_string());
        let mut c = Command::new("nsenter");
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin)
            .env("CNICHAIN_STATE_DIR", self.sb.dir.join("state"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.arg(format!("--net=/run/netns/{}", self.sb.host()))
            .arg("--")
            .args(wrap)
            .arg(self.bin.join(typ));
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run plugin");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write config");
        child.wait_with_output().expect("plugin output")
    }

    pub fn call(&self, typ: &str, command: &str, netns: &str, ifname: &str, cid: &str, conf: &Value) -> Output {
        self.call_wrapped(&[], typ, command, netns, ifname, cid, &[], conf)
    }

    /// A shell snippet in the host netns; its trimmed stdout (failure allowed).
    pub fn host_sh(&self, script: &str) -> String {
        stdout(&self.sb.sh_in(&self.sb.host(), script)).trim().to_string()
    }

    /// A shell snippet in a pod netns given by path; its trimmed stdout.
    pub fn pod_sh(&self, pod: &str, script: &str) -> String {
        stdout(&self.sb.sh_in(&ns_name(pod), script)).trim().to_string()
    }

    /// The MAC of a link in the host netns ("" when there is none).
    pub fn host_mac(&self, link: &str) -> String {
        self.host_sh(&format!("cat /sys/class/net/{link}/address 2>/dev/null || ip -o link show {link} | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2"))
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
