//! Calling the plugin the way a runtime does (libcni's environment and stdin), in the
//! sandbox's host netns, and the per-rule context: attachments made for the rule, the
//! meta plugin's bridge before it, before/after snapshots, and cleanup on drop.

pub use super::call::{exec, lenient_json, Call};
use super::chain;
use super::sandbox::{self, Link, RouteEntry, Sandbox};
use super::{Kind, Opts};
use cnichain_engine::spec::version;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The outcome of a rule, or a step of one (`Err` ends the check early).
#[derive(Debug)]
pub enum Verdict {
    Pass,
    Fail {
        required: String,
        found: String,
        call: Option<Box<Call>>,
    },
    Na(String),
}

pub type Step = Result<(), Verdict>;

pub fn fail(required: impl Into<String>, found: impl Into<String>, call: Option<&Call>) -> Verdict {
    Verdict::Fail {
        required: required.into(),
        found: found.into(),
        call: call.map(|c| Box::new(c.clone())),
    }
}

/// Fail unless `cond`.
pub fn require(cond: bool, required: &str, found: impl FnOnce() -> String, call: Option<&Call>) -> Step {
    if cond {
        Ok(())
    } else {
        Err(fail(required, found(), call))
    }
}

/// An attachment made for a rule (ADD succeeded).
#[derive(Debug, Clone)]
pub struct Att {
    pub cid: String,
    pub ifname: String,
    /// CNI_NETNS of the attachment.
    pub netns: String,
    /// The config the ADD got (with prevResult for a meta plugin).
    pub conf: Value,
    /// The meta plugin's bridge result (its prevResult), with the DNS the harness adds.
    pub prev: Option<Value>,
    pub result: Value,
    pub add: Call,
    /// `--conflist`: every plugin's ADD call, in order (empty for one plugin).
    pub stages: Vec<Call>,
}

pub struct Ctx<'a> {
    pub o: &'a Opts,
    pub sb: Sandbox,
    /// The spec version under test.
    pub v: String,
    seq: usize,
    live: Vec<Att>,
    /// CNI_NETNS for new attachments: the pod netns (the baseline's own one meanwhile).
    cur_pod: String,
    /// `--conflist`: the plugin calls of the list's last operation.
    pub stages: RefCell<Vec<Call>>,
    /// The host netns before any plugin ran (`baseline` takes it).
    pub pristine: Option<Host>,
    /// The plugin config in this sandbox: a default one gets the sandbox's own subnet
    /// (see Sandbox::net).
    base: Value,
}

/// Links, addresses and routes of a netns.
#[derive(Clone, Default)]
pub struct Host {
    pub links: Vec<Link>,
    pub addrs: Vec<(String, String)>,
    pub routes: Vec<RouteEntry>,
}

pub const IFNAME: &str = "eth0";
pub const POD_DNS: &str =
    r#"{"nameservers":["10.78.0.53"],"domain":"cnc.test","search":["cnc.test"],"options":["ndots:2"]}"#;

impl<'a> Ctx<'a> {
    pub fn new(o: &'a Opts, v: &str) -> Result<Ctx<'a>, String> {
        let sb = Sandbox::new()?;
        let base = if o.default_conf {
            let text = o.base.to_string().replace("10.77.0.", &format!("10.77.{}.", sb.net));
            serde_json::from_str(&text).unwrap_or_else(|_| o.base.clone())
        } else {
            o.base.clone()
        };
        Ok(Ctx {
            o,
            sb,
            base,
            v: v.into(),
            seq: 0,
            live: Vec::new(),
            cur_pod: String::new(),
            stages: RefCell::new(Vec::new()),
            pristine: None,
        })
    }

    pub fn new_cid(&mut self) -> String {
        self.seq += 1;
        format!("{}-c{}", self.sb.tag, self.seq)
    }

    pub fn at_least(&self, v: &str) -> bool {
        version::at_least(&self.v, v).unwrap_or(false)
    }

    /// Where plugins are found: the sandbox's own bin dir (harness plugins), then the
    /// search path.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.sb.dir.join("bin")];
        dirs.extend(self.o.cni_path.iter().cloned());
        dirs
    }

    fn cni_path(&self) -> String {
        self.plugin_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The environment libcni gives a plugin (all six CNI_* set, empty ones included),
    /// plus PATH and cnichain's own state-path variables pointed into the sandbox.
    pub fn env(&self, command: &str, cid: &str, ifname: &str) -> Vec<(String, String)> {
        self.env_in(command, cid, ifname, &self.pod())
    }

    /// CNI_NETNS of new attachments.
    pub fn pod(&self) -> String {
        if self.cur_pod.is_empty() {
            self.sb.pod_path()
        } else {
            self.cur_pod.clone()
        }
    }

    pub fn env_in(&self, command: &str, cid: &str, ifname: &str, netns: &str) -> Vec<(String, String)> {
        let (cid, netns, ifname) = match command {
            "GC" | "STATUS" => ("", String::new(), ""),
            _ => (cid, netns.to_string(), ifname),
        };
        let mut e: Vec<(String, String)> = vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), netns),
            ("CNI_ARGS".into(), String::new()),
            ("CNI_IFNAME".into(), ifname.into()),
            ("CNI_PATH".into(), self.cni_path()),
        ];
        e.extend(self.base_env());
        e
    }

    pub fn base_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            (
                "CNICHAIN_STATE_DIR".into(),
                self.sb.dir.join("state").display().to_string(),
            ),
            (
                "CNICHAIN_CACHE_DIR".into(),
                self.sb.dir.join("cache").display().to_string(),
            ),
        ]
    }

    /// The plugin's config for the version under test, state paths in the sandbox.
    pub fn conf(&self) -> Value {
        if let Some(ch) = &self.o.chain {
            return ch.conf(&self.v, &self.sb.dir);
        }
        let mut c = self.base.clone();
        c["cniVersion"] = json!(self.v);
        if c.get("name").is_none() {
            c["name"] = json!(format!("cncf-{}", self.o.kind.as_str()));
        }
        if c.get("ipam").is_some_and(Value::is_object) {
            c["ipam"]["dataDir"] = json!(self.sb.dir.join("ipam").display().to_string());
        }
        if c.get("dataDir").is_some() {
            c["dataDir"] = json!(self.sb.dir.join("state").display().to_string());
        }
        c
    }

    /// Run the plugin under test (`--conflist`: the list, as libcni runs it).
    pub fn call(&self, what: &str, env: Vec<(String, String)>, stdin: &[u8]) -> Call {
        if let Some(ch) = &self.o.chain {
            let at = chain::Site {
                host: self.sb.host_path(),
                dirs: self.plugin_dirs(),
                timeout: self.o.timeout,
                stages: &self.stages,
            };
            return chain::run(&at, ch, what, env, stdin);
        }
        exec(what, &self.o.plugin, &self.sb.host_path(), env, stdin, self.o.timeout)
    }

    pub fn call_json(&self, what: &str, env: Vec<(String, String)>, conf: &Value) -> Call {
        self.call(what, env, conf.to_string().as_bytes())
    }

    /// The meta plugin's bridge before it: its ADD result (plus DNS) is the prevResult.
    fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": self.v, "name": self.conf()["name"], "type": "bridge",
            "bridge": "cncfbr0", "isGateway": true,
            "ipam": { "type": "host-local", "dataDir": self.sb.dir.join("ipam-bridge").display().to_string(),
                      "ranges": [[{ "subnet": format!("10.78.{}.0/24", self.sb.net) }]], "routes": [{ "dst": "0.0.0.0/0" }] }
        })
    }

    fn bridge(
        &self,
        command: &str,
        cid: &str,
        ifname: &str,
        netns: &str,
        prev: Option<&Value>,
    ) -> Result<Call, Verdict> {
        let Some(b) = &self.o.bridge else {
            return Err(Verdict::Na(
                "no bridge plugin found in CNI_PATH to make the meta plugin's prevResult".into(),
            ));
        };
        let mut conf = self.bridge_conf();
        if let Some(p) = prev.filter(|_| self.at_least("0.4.0")) {
            conf["prevResult"] = p.clone();
        }
        let env = self.env_in(command, cid, ifname, netns);
        Ok(exec(
            &format!("{command} (bridge before the meta plugin)"),
            b,
            &self.sb.host_path(),
            env,
            conf.to_string().as_bytes(),
            self.o.timeout,
        ))
    }

    /// The ADD config for a new attachment; for a meta plugin runs its bridge first.
    pub fn add_conf(&mut self, cid: &str, ifname: &str) -> Result<(Value, Option<Value>), Verdict> {
        let mut conf = self.conf();
        if self.o.kind != Kind::Meta {
            return Ok((conf, None));
        }
        let c = self.bridge("ADD", cid, ifname, &self.pod(), None)?;
        let mut prev = match c.json() {
            Ok(v) if c.ok() => v,
            _ => {
                return Err(fail(
                    "the bridge before the meta plugin succeeds (harness prerequisite)",
                    "it failed",
                    Some(&c),
                ))
            }
        };
        // The runtime's pod DNS, as an IPAM would have returned it: must be passed through.
        if version::family(&self.v).is_ok_and(|f| f != version::Family::V02) {
            prev["dns"] = serde_json::from_str(POD_DNS).unwrap_or_default();
        }
        conf["prevResult"] = prev.clone();
        // Cleaned up with the attachment, even if the plugin's ADD fails.
        self.live.push(Att {
            cid: cid.into(),
            ifname: ifname.into(),
            netns: self.pod(),
            conf: Value::Null,
            prev: Some(prev.clone()),
            result: Value::Null,
            add: c,
            stages: Vec::new(),
        });
        Ok((conf, Some(prev)))
    }

    /// ADD a new attachment; Err(Fail) when the ADD does not succeed with a JSON result.
    pub fn attach(&mut self) -> Result<Att, Verdict> {
        let cid = self.new_cid();
        self.attach_as(&cid, IFNAME, |_| {})
    }

    pub fn attach_as(&mut self, cid: &str, ifname: &str, edit: impl FnOnce(&mut Value)) -> Result<Att, Verdict> {
        let (mut conf, prev) = self.add_conf(cid, ifname)?;
        edit(&mut conf);
        let c = self.call_json("ADD", self.env("ADD", cid, ifname), &conf);
        let netns = self.pod();
        // Lenient here (a log line before the result): ERR-03 and ADD-02 judge the
        // output's form, the other rules go on with the result libcni-like readers find.
        let result = lenient_json(&c.stdout).filter(|_| c.ok());
        let att = Att {
            cid: cid.into(),
            ifname: ifname.into(),
            netns,
            conf,
            prev,
            result: result.clone().unwrap_or(Value::Null),
            add: c.clone(),
            stages: if self.o.chain.is_some() {
                self.stages.borrow().clone()
            } else {
                Vec::new()
            },
        };
        // Torn down at the end of the rule whatever happened (a failed ADD is DELed too).
        self.live.retain(|a| a.cid != cid || a.ifname != ifname);
        self.live.push(att.clone());
        match result {
            Some(_) => Ok(att),
            None => Err(fail(
                "ADD exits 0 with a JSON result on stdout (§2 ADD)",
                "ADD did not succeed",
                Some(&c),
            )),
        }
    }

    /// The attachment `cid`/`ifname` made in this rule and not yet torn down.
    pub fn live_att(&self, cid: &str, ifname: &str) -> Option<Att> {
        self.live.iter().find(|a| a.cid == cid && a.ifname == ifname).cloned()
    }

    /// The DEL/CHECK config of `att`: its ADD config with prevResult = the ADD result
    /// (from 0.4.0, as libcni passes the cached result).
    pub fn later_conf(&self, att: &Att) -> Value {
        let mut c = att.conf.clone();
        if c.is_null() {
            c = self.conf();
        }
        if let Some(o) = c.as_object_mut() {
            o.remove("prevResult");
        }
        if self.at_least("0.4.0") && !att.result.is_null() {
            c["prevResult"] = att.result.clone();
        }
        c
    }

    pub fn del(&self, att: &Att) -> Call {
        self.call_json(
            "DEL",
            self.env_in("DEL", &att.cid, &att.ifname, &att.netns),
            &self.later_conf(att),
        )
    }

    pub fn check(&self, att: &Att) -> Call {
        self.call_json(
            "CHECK",
            self.env_in("CHECK", &att.cid, &att.ifname, &att.netns),
            &self.later_conf(att),
        )
    }

    /// DEL the plugin, then (meta) its bridge; the plugin's DEL call.
    pub fn teardown(&mut self, att: &Att) -> Call {
        let c = self.del(att);
        if let Some(p) = &att.prev {
            let _ = self.bridge("DEL", &att.cid, &att.ifname, &att.netns, Some(p));
        }
        self.live.retain(|a| a.cid != att.cid || a.ifname != att.ifname);
        c
    }

    /// GC with the given valid attachments (libcni injects both keys).
    pub fn gc(&self, valid: &[&Att]) -> Call {
        let list: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.cid, "ifname": a.ifname}))
            .collect();
        let mut c = self.conf();
        c["cni.dev/valid-attachments"] = json!(list);
        c["cni.dev/attachments"] = json!(list);
        self.call_json("GC", self.env("GC", "", ""), &c)
    }

    pub fn snapshot(&self) -> Result<Snap, Verdict> {
        let host = self.sb.host_path();
        let na = |e: String| fail("the harness can read the sandbox's kernel state", e, None);
        let mut shared = BTreeMap::new();
        for d in sandbox::SHARED_STATE_DIRS {
            shared.extend(sandbox::files(std::path::Path::new(d)));
        }
        Ok(Snap {
            links: sandbox::links(&host).map_err(na)?,
            addrs: sandbox::addrs(&host).map_err(na)?,
            routes: sandbox::routes(&host).map_err(na)?,
            fw: sandbox::firewall(&host),
            data: sandbox::files(&self.sb.dir),
            shared,
        })
    }

    /// ADD a new attachment in a second pod (the sandbox's other pod netns), with `edit`.
    pub fn attach_other_pod(&mut self, edit: impl FnOnce(&mut Value)) -> Result<Att, Verdict> {
        let cid = self.new_cid();
        self.cur_pod = self.sb.base_path();
        let a = self.attach_as(&cid, IFNAME, edit);
        self.cur_pod.clear();
        a
    }

    /// A first attachment made and torn down, then a snapshot: what the plugin keeps for
    /// all attachments (a bridge, a masquerade chain) is in it; per-attachment state is not.
    pub fn baseline(&mut self) -> Result<Snap, Verdict> {
        let host = self.sb.host_path();
        let na = |e: String| fail("the harness can read the sandbox's kernel state", e, None);
        self.pristine = Some(Host {
            links: sandbox::links(&host).map_err(na)?,
            addrs: sandbox::addrs(&host).map_err(na)?,
            routes: sandbox::routes(&host).map_err(na)?,
        });
        // In its own netns: a plugin that leaks the container interface must not make the
        // rule's own ADD fail (that rule judges the leak, not a refused ADD).
        self.cur_pod = self.sb.base_path();
        let a = self.attach();
        self.cur_pod.clear();
        let a = a?;
        self.teardown(&a);
        self.snapshot()
    }

    /// Names an attachment is known by in files and firewall rules.
    pub fn needles(att: &Att) -> Vec<String> {
        let mut n = vec![att.cid.clone()];
        for ip in att.result["ips"].as_array().into_iter().flatten() {
            if let Some(a) = ip["address"].as_str().and_then(|a| a.split('/').next()) {
                n.push(a.to_string());
            }
        }
        for k in ["ip4", "ip6"] {
            if let Some(a) = att.result[k]["ip"].as_str().and_then(|a| a.split('/').next()) {
                n.push(a.to_string());
            }
        }
        n
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        for a in std::mem::take(&mut self.live).into_iter().rev() {
            if !a.conf.is_null() {
                let _ = self.del(&a);
            }
            if let Some(p) = &a.prev {
                let _ = self.bridge("DEL", &a.cid, &a.ifname, &a.netns, Some(p));
            }
        }
    }
}

/// Host-side state: what "DEL leaves nothing" compares.
pub struct Snap {
    pub links: Vec<Link>,
    pub addrs: Vec<(String, String)>,
    pub routes: Vec<RouteEntry>,
    pub fw: Vec<String>,
    /// Files in the sandbox's temp dir (dataDirs, state dirs).
    pub data: BTreeMap<PathBuf, u64>,
    /// Files under /var/lib/cni and /run.
    pub shared: BTreeMap<PathBuf, u64>,
}

/// Items of `after` not in `before`.
pub fn added<T: PartialEq + Clone>(before: &[T], after: &[T]) -> Vec<T> {
    after.iter().filter(|x| !before.contains(x)).cloned().collect()
}
