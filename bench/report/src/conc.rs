//! concurrency: P pods ADDed at once, then DELed at once, as a node runtime does when
//! many pods start together. Pods per second = P / (first start .. last finish); the
//! latency of every single operation is kept for p99. Every ADD's addresses are
//! collected: among pods that exist at the same time, a duplicate is a double allocation.

use crate::setup::{caps, Chain, Mode, Net};
use crate::sys::{Env, Netns, Run};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Instant;

pub struct Level {
    pub p: usize,
    pub mode: Mode,
    pub add_ms: Vec<f64>,
    pub del_ms: Vec<f64>,
    /// Pods per second of each round.
    pub add_rate: Vec<f64>,
    pub del_rate: Vec<f64>,
    pub failed: usize,
    pub dup: usize,
    pub first_err: Option<String>,
}

pub struct Conc {
    pub chain: Chain,
    pub levels: Vec<Level>,
}

fn addresses(out: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(out) else {
        return Vec::new();
    };
    v.get("ips")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("address")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Run `verb` for every pod at once; (per-op runs, pods per second).
fn burst(env: &Env, net: &Net, pods: &[Netns], verb: &str) -> Result<(Vec<Run>, f64)> {
    let t0 = Instant::now();
    let runs: Vec<Result<Run>> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| s.spawn(move || net.op(env, verb, &pod.name, &caps(10000 + i as u16))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| anyhow::bail!("thread panicked")))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let runs: Vec<Run> = runs.into_iter().collect::<Result<_>>()?;
    Ok((runs, pods.len() as f64 / wall))
}

pub fn run(env: &Env, chain: Chain, modes: &[Mode], levels: &[(usize, usize)]) -> Result<Conc> {
    let nets: Vec<Net> = modes
        .iter()
        .map(|m| Net::new(env, *m, chain, "cc"))
        .collect::<Result<_>>()?;
    // One untimed pod first: fixed tables, chains and the bridge exist from then on.
    for net in &nets {
        let pod = Netns::new(&env.pod_name())?;
        net.op(env, "add", &pod.name, &caps(9999))?;
        net.op(env, "del", &pod.name, &caps(9999))?;
    }
    let mut out = Vec::new();
    for &(p, rounds) in levels {
        let mut ls: Vec<Level> = modes
            .iter()
            .map(|m| Level {
                p,
                mode: *m,
                add_ms: vec![],
                del_ms: vec![],
                add_rate: vec![],
                del_rate: vec![],
                failed: 0,
                dup: 0,
                first_err: None,
            })
            .collect();
        for _ in 0..rounds {
            for (net, l) in nets.iter().zip(ls.iter_mut()) {
                let pods: Vec<Netns> = (0..p).map(|_| Netns::new(&env.pod_name())).collect::<Result<_>>()?;
                let (adds, ar) = burst(env, net, &pods, "add")?;
                let (dels, dr) = burst(env, net, &pods, "del")?;
                let mut seen: HashMap<String, usize> = HashMap::new();
                for r in adds.iter() {
                    let a = addresses(&r.stdout);
                    if r.ok && a.is_empty() {
                        // A success without an address is a failed allocation too.
                        l.failed += 1;
                    }
                    for a in a {
                        *seen.entry(a).or_default() += 1;
                    }
                }
                l.dup += seen.values().filter(|c| **c > 1).map(|c| c - 1).sum::<usize>();
                for r in adds.iter().chain(dels.iter()) {
                    if !r.ok {
                        l.failed += 1;
                        if l.first_err.is_none() {
                            l.first_err = Some(
                                format!("{}{}", r.stdout.trim(), r.stderr.trim())
                                    .chars()
                                    .take(300)
                                    .collect(),
                            );
                        }
                    }
                }
                l.add_ms.extend(adds.iter().map(|r| crate::stats::ms(r.wall)));
                l.del_ms.extend(dels.iter().map(|r| crate::stats::ms(r.wall)));
                l.add_rate.push(ar);
                l.del_rate.push(dr);
            }
        }
        eprintln!("concurrency P={p}: done");
        out.extend(ls);
    }
    Ok(Conc { chain, levels: out })
}
