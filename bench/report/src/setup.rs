//! The ways one pod's chain is run, each in its own host netns and temp dir.

use crate::sys::{envs, Env, Netns, Run};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// `cnichain add/del`: the whole chain in one process.
    Inproc,
    /// libcni (cnitool) running one `cnichain` meta-plugin entry.
    Meta,
    /// libcni running each plugin as a cnichain drop-in binary.
    Dropin,
    /// libcni running the reference plugins: the baseline.
    Ref,
    /// `cnichain --exec all`: cnichain executing the reference plugins.
    Exec,
}

pub const ALL_MODES: [Mode; 5] = [Mode::Inproc, Mode::Meta, Mode::Dropin, Mode::Ref, Mode::Exec];

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Inproc => "cnichain in-process",
            Mode::Meta => "cnichain meta-plugin (libcni)",
            Mode::Dropin => "cnichain drop-ins (libcni)",
            Mode::Ref => "reference (libcni)",
            Mode::Exec => "reference via cnichain exec",
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Mode::Inproc => "inproc",
            Mode::Meta => "meta",
            Mode::Dropin => "dropin",
            Mode::Ref => "ref",
            Mode::Exec => "exec",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// bridge + host-local, tuning, portmap, bandwidth.
    Chain4,
    /// bridge + host-local.
    Bridge,
    /// bridge + host-local, portmap (the scale section).
    Portmap,
}

impl Chain {
    pub fn label(self) -> &'static str {
        match self {
            Chain::Chain4 => "bridge+host-local, tuning, portmap, bandwidth",
            Chain::Bridge => "bridge+host-local",
            Chain::Portmap => "bridge+host-local, portmap",
        }
    }
    fn plugins(self, ipam_dir: &str) -> String {
        let bridge = format!(
            r#"{{ "type": "bridge", "bridge": "cnb0", "isGateway": true, "hairpinMode": true,
      "ipam": {{ "type": "host-local", "dataDir": "{ipam_dir}",
                "ranges": [[{{ "subnet": "10.240.0.0/16", "gateway": "10.240.0.1" }}]],
                "routes": [{{ "dst": "0.0.0.0/0" }}] }} }}"#
        );
        let portmap = r#"{ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }"#;
        match self {
            Chain::Bridge => bridge,
            Chain::Portmap => format!("{bridge},\n    {portmap}"),
            Chain::Chain4 => format!(
                r#"{bridge},
    {{ "type": "tuning", "sysctl": {{ "net.core.somaxconn": "512" }} }},
    {portmap},
    {{ "type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000 }}"#
            ),
        }
    }
}

/// Port mapping capability args for host port `port`.
pub fn caps(port: u16) -> String {
    format!(r#"{{"portMappings":[{{"hostPort":{port},"containerPort":80,"protocol":"tcp"}}]}}"#)
}

/// One mode's network: a host netns, a temp dir with its conflist and state.
pub struct Net {
    pub mode: Mode,
    pub host: Netns,
    pub dir: PathBuf,
    pub name: String,
}

impl Net {
    pub fn new(env: &Env, mode: Mode, chain: Chain, label: &str) -> Result<Net> {
        let name = format!("{}-{}-{}", env.tag, label, mode.short());
        let host = Netns::new(&format!("{name}-h"))?;
        let dir = env.tmp.join(&name);
        for d in ["conf", "meta", "cache", "state", "ipam"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let plugins = chain.plugins(&dir.join("ipam").display().to_string());
        std::fs::write(
            dir.join("conf/net.conflist"),
            format!("{{ \"cniVersion\": \"1.0.0\", \"name\": \"{name}\", \"plugins\": [\n    {plugins} ] }}\n"),
        )?;
        std::fs::write(
            dir.join("meta/net.conflist"),
            format!(
                "{{ \"cniVersion\": \"1.0.0\", \"name\": \"{name}\", \"plugins\": [ {{ \"type\": \"cnichain\", \
                 \"capabilities\": {{ \"portMappings\": true }}, \"plugins\": [\n    {plugins} ] }} ] }}\n"
            ),
        )?;
        Ok(Net { mode, host, dir, name })
    }

    /// The command of one VERB (add/del) for the pod netns `pod`.
    pub fn command(&self, env: &Env, verb: &str, pod: &str, caps: &str) -> Command {
        let d = |s: &str| self.dir.join(s).display().to_string();
        let podpath = format!("/run/netns/{pod}");
        let mut v: BTreeMap<&str, String> = BTreeMap::new();
        let cmd = match self.mode {
            Mode::Inproc | Mode::Exec => {
                let mut c = Command::new(&env.cnichain);
                envs(&mut c, &v);
                c.args([
                    "--conf-dir",
                    &d("conf"),
                    "--cache-dir",
                    &d("cache"),
                    "--state-dir",
                    &d("state"),
                ]);
                c.args(["--cni-path", &env.ref_dir.display().to_string(), "--cap-args", caps]);
                if self.mode == Mode::Exec {
                    c.args(["--exec", "all"]);
                }
                c.args([verb, &self.name, &podpath]);
                return c;
            }
            Mode::Ref => {
                v.insert("NETCONFPATH", d("conf"));
                v.insert("CNI_PATH", env.ref_dir.display().to_string());
                Command::new(&env.cnitool)
            }
            Mode::Dropin | Mode::Meta => {
                v.insert("NETCONFPATH", d(if self.mode == Mode::Meta { "meta" } else { "conf" }));
                v.insert(
                    "CNI_PATH",
                    format!("{}:{}", env.dropin_dir.display(), env.ref_dir.display()),
                );
                v.insert("CNICHAIN_STATE_DIR", d("state"));
                Command::new(&env.cnitool)
            }
        };
        v.insert("CAP_ARGS", caps.to_string());
        let mut cmd = cmd;
        envs(&mut cmd, &v);
        cmd.args([verb, &self.name, &podpath]);
        cmd
    }

    pub fn op(&self, env: &Env, verb: &str, pod: &str, caps: &str) -> Result<Run> {
        self.host.run(&mut self.command(env, verb, pod, caps), None)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // libcni (cnitool) keeps its result cache in /var/lib/cni: remove this network's.
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!("{}-", self.name)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
