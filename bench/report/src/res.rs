//! resources: peak RSS and CPU time of one ADD (from wait4 in the cycle section), the
//! processes and programs one ADD starts in steady state (strace -f of a warm ADD), and
//! binary sizes.

use crate::setup::{caps, Chain, Mode, Net};
use crate::sys::{Env, Netns};
use anyhow::Result;
use std::path::Path;
use std::process::Command;

pub struct Spawns {
    pub mode: Mode,
    /// fork/vfork/clone/clone3 without CLONE_THREAD, per ADD (all ADDs measured).
    pub procs: Vec<usize>,
    /// execve calls per ADD, the command itself included.
    pub execs: Vec<usize>,
    pub threads: Vec<usize>,
    /// Programs executed (basename -> count over all measured ADDs).
    pub programs: Vec<(String, usize)>,
}

pub struct Sizes {
    pub cnichain: u64,
    pub cnitool: u64,
    /// Reference plugins of the 4-stage chain, each and summed.
    pub reference: Vec<(String, u64)>,
}

fn count(trace: &str) -> (usize, usize, usize, Vec<String>) {
    let (mut procs, mut execs, mut threads) = (0, 0, 0);
    let mut progs = Vec::new();
    for line in trace.lines() {
        // "PID syscall(args) = ret" or "PID syscall(args <unfinished ...>"
        let rest = line.split_once(' ').map(|x| x.1).unwrap_or(line).trim_start();
        if rest.starts_with("<...") {
            continue;
        }
        let failed = rest.contains(") = -1");
        if rest.starts_with("execve(") {
            if !failed {
                execs += 1;
                if let Some(p) = rest.split('"').nth(1) {
                    progs.push(p.rsplit('/').next().unwrap_or(p).to_string());
                }
            }
        } else if ["clone(", "clone3(", "fork(", "vfork("]
            .iter()
            .any(|s| rest.starts_with(s))
            && !failed
        {
            if rest.contains("CLONE_THREAD") {
                threads += 1;
            } else {
                procs += 1;
            }
        }
    }
    (procs, execs, threads, progs)
}

pub fn spawns(env: &Env, modes: &[Mode], adds: usize) -> Result<Vec<Spawns>> {
    let mut out = Vec::new();
    for &mode in modes {
        let net = Net::new(env, mode, Chain::Chain4, "rs")?;
        let mut s = Spawns {
            mode,
            procs: vec![],
            execs: vec![],
            threads: vec![],
            programs: vec![],
        };
        let mut all = std::collections::BTreeMap::<String, usize>::new();
        // The first ADD on a host creates the fixed tables and chains: not steady state.
        for i in 0..adds + 1 {
            let pod = Netns::new(&env.pod_name())?;
            let inner = net.command(env, "add", &pod.name, &caps(8080));
            let file = env.tmp.join(format!("strace-{}-{i}", mode.short()));
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-e", "trace=execve,clone,clone3,fork,vfork", "-o"])
                .arg(&file)
                .arg("--");
            c.arg(inner.get_program()).args(inner.get_args());
            c.env_clear();
            for (k, v) in inner.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            net.host.run(&mut c, None)?;
            net.op(env, "del", &pod.name, &caps(8080))?;
            if i == 0 {
                continue;
            }
            let (p, e, t, progs) = count(&std::fs::read_to_string(&file).unwrap_or_default());
            s.procs.push(p);
            s.execs.push(e);
            s.threads.push(t);
            for pr in progs {
                *all.entry(pr).or_default() += 1;
            }
        }
        s.programs = all.into_iter().collect();
        out.push(s);
    }
    Ok(out)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn sizes(env: &Env) -> Sizes {
    let reference = ["bridge", "host-local", "tuning", "portmap", "bandwidth"]
        .iter()
        .map(|n| (n.to_string(), size(&env.ref_dir.join(n))))
        .collect();
    Sizes {
        cnichain: size(&env.cnichain),
        cnitool: size(&env.cnitool),
        reference,
    }
}
