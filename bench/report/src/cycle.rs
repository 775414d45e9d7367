//! cycle: one pod ADD then DEL, every mode interleaved in every round so that they share
//! the machine's state; each round makes and removes its own pod netns (not timed).

use crate::setup::{caps, Chain, Mode, Net};
use crate::sys::{Env, Netns, Run};
use anyhow::Result;

pub struct ModeRuns {
    pub mode: Mode,
    pub adds: Vec<Run>,
    pub dels: Vec<Run>,
    pub failed: usize,
    pub first_err: Option<String>,
}

impl ModeRuns {
    pub fn new(mode: Mode) -> ModeRuns {
        ModeRuns {
            mode,
            adds: Vec::new(),
            dels: Vec::new(),
            failed: 0,
            first_err: None,
        }
    }
    pub fn note(&mut self, r: &Run) {
        if !r.ok {
            self.failed += 1;
            if self.first_err.is_none() {
                self.first_err = Some(
                    format!("{}{}", r.stdout.trim(), r.stderr.trim())
                        .chars()
                        .take(300)
                        .collect(),
                );
            }
        }
    }
}

pub struct Cycle {
    pub chain: Chain,
    pub rounds: usize,
    pub modes: Vec<ModeRuns>,
}

pub fn run(env: &Env, chain: Chain, modes: &[Mode], rounds: usize, warm: usize) -> Result<Cycle> {
    let label = match chain {
        Chain::Chain4 => "c4",
        Chain::Bridge => "br",
        Chain::Portmap => "pm",
    };
    let nets: Vec<Net> = modes
        .iter()
        .map(|m| Net::new(env, *m, chain, label))
        .collect::<Result<_>>()?;
    let mut out: Vec<ModeRuns> = modes.iter().map(|m| ModeRuns::new(*m)).collect();
    let c = caps(8080);
    for r in 0..rounds + warm {
        for (net, mr) in nets.iter().zip(out.iter_mut()) {
            let pod = Netns::new(&env.pod_name())?;
            let a = net.op(env, "add", &pod.name, &c)?;
            let d = net.op(env, "del", &pod.name, &c)?;
            drop(pod);
            if r >= warm {
                mr.note(&a);
                mr.note(&d);
                mr.adds.push(a);
                mr.dels.push(d);
            }
        }
    }
    eprintln!("cycle {}: {} rounds done", chain.label(), rounds);
    Ok(Cycle {
        chain,
        rounds,
        modes: out,
    })
}
