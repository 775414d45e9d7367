//! scale: one more pod's ADD and DEL against N existing pods, each with a port mapping
//! and a host-local reservation, for N in the list, cnichain in-process and the
//! reference side by side (interleaved every round, a host netns each per N).
//!
//! The N pods are written directly, not by N ADDs (that would take hours of netns work):
//! N reservation files in the store, as host-local writes them; for cnichain N pods'
//! elements in its nftables layout (stages/src/kernel/nft/layout.rs) with one nft batch; for the
//! reference N per-pod CNI-DN chains and their jumps in the nat table, in the layout
//! portmap 1.1.1 writes, with one iptables-restore. One real ADD and DEL first creates
//! the fixed tables and chains, as on any host that served a pod.

use crate::cycle::ModeRuns;
use crate::setup::{caps, Chain, Mode, Net};
use crate::sys::{Env, Netns};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub struct Point {
    pub n: usize,
    pub fill: Fill,
    pub runs: ModeRuns,
}

pub struct Scale {
    pub ns: Vec<usize>,
    pub rounds: usize,
    pub points: Vec<Point>,
    /// Where and why the reference was not measured further.
    pub ref_stopped: Option<String>,
    pub notes: Vec<String>,
}

fn fake_ip(i: usize) -> String {
    let a = 10 + i; // 10.240.0.10 and up: clear of the gateway and the warm-up pod
    format!("10.240.{}.{}", a >> 8, a & 255)
}

fn fill_store(net: &Net, n: usize) -> Result<()> {
    let dir = net.dir.join("ipam").join(&net.name);
    std::fs::create_dir_all(&dir)?;
    for i in 0..n {
        std::fs::write(dir.join(fake_ip(i)), format!("fake{i:058}\r\neth0"))?;
    }
    if n > 0 {
        std::fs::write(dir.join("last_reserved_ip.0"), fake_ip(n - 1))?;
    }
    Ok(())
}

fn fill_nft(env: &Env, net: &Net, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (mut to, mut port, mut snat, mut rec) = (String::new(), String::new(), String::new(), String::new());
    for i in 0..n {
        let a = fake_ip(i);
        let p = 20000 + i;
        let id = format!("pfake{i:010}");
        write!(to, "tcp . {p} comment \"{id} fake/eth0\" : {a}, ")?;
        write!(port, "tcp . {p} comment \"{id} fake/eth0\" : 80, ")?;
        write!(snat, "10.240.0.0 . 10.240.255.255 . tcp . {p} comment \"{id}\", 127.0.0.1 . 127.0.0.1 . tcp . {p} comment \"{id}\", ")?;
        write!(
            rec,
            "\"{id}\" . 0 comment \"net fake\", \"{id}\" . 1 comment \"port4 tcp {p} {a}/16 80 hairpin 13\", "
        )?;
    }
    let mut s = String::new();
    for (set, elems) in [
        ("pm-port4-to", to),
        ("pm-port4-port", port),
        ("pm-snat4-b13", snat),
        ("records", rec),
    ] {
        writeln!(s, "add element inet cnichain {set} {{ {elems} }}")?;
    }
    let file = env.tmp.join(format!("{}.nft", net.name));
    std::fs::write(&file, s)?;
    net.host.run_quiet(&["nft", "-f", &file.display().to_string()])?;
    Ok(())
}

fn fill_iptables(env: &Env, net: &Net, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let mut chains = String::new();
    let mut rules = String::new();
    for i in 0..n {
        let a = fake_ip(i);
        let p = 20000 + i;
        let c = format!("CNI-DN-{i:021x}");
        writeln!(chains, ":{c} - [0:0]")?;
        writeln!(
            rules,
            "-A {c} -s 10.240.0.0/16 -p tcp -m tcp --dport {p} -j CNI-HOSTPORT-SETMARK"
        )?;
        writeln!(
            rules,
            "-A {c} -s 127.0.0.1/32 -p tcp -m tcp --dport {p} -j CNI-HOSTPORT-SETMARK"
        )?;
        writeln!(
            rules,
            "-A {c} -p tcp -m tcp --dport {p} -j DNAT --to-destination {a}:80"
        )?;
        writeln!(
            rules,
            "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"{}\\\" id: \\\"fake{i}\\\"\" -m multiport --dports {p} -j {c}",
            net.name
        )?;
    }
    let file = env.tmp.join(format!("{}.ipt", net.name));
    std::fs::write(&file, format!("*nat\n{chains}{rules}COMMIT\n"))?;
    let mut c = std::process::Command::new("iptables-restore");
    c.arg("--noflush");
    let r = net.host.run(&mut c, Some(&file))?;
    if !r.ok {
        bail!("iptables-restore: {}", r.stderr.trim());
    }
    Ok(())
}

/// What the N existing pods hold for a cnichain variant: both (the comparison with the
/// reference), or only one of them, to show which part grows with N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Both,
    PortsOnly,
    ReservationsOnly,
}

impl Fill {
    pub fn label(self) -> &'static str {
        match self {
            Fill::Both => "port mappings and reservations",
            Fill::PortsOnly => "port mappings only",
            Fill::ReservationsOnly => "reservations only",
        }
    }
}

pub fn run(env: &Env, ns: &[usize], rounds: usize, ref_budget: Duration) -> Result<Scale> {
    let mut points = Vec::new();
    let mut notes = Vec::new();
    let mut ref_stopped = None;
    let c = caps(8080);
    for &n in ns {
        let mut variants = vec![
            (Mode::Inproc, Fill::Both),
            (Mode::Inproc, Fill::PortsOnly),
            (Mode::Inproc, Fill::ReservationsOnly),
        ];
        if ref_stopped.is_none() {
            variants.push((Mode::Ref, Fill::Both));
        }
        let nets: Vec<Net> = variants
            .iter()
            .enumerate()
            .map(|(i, (m, _))| Net::new(env, *m, Chain::Portmap, &format!("s{n}v{i}")))
            .collect::<Result<_>>()?;
        for (net, (_, fill)) in nets.iter().zip(&variants) {
            let pod = Netns::new(&env.pod_name())?;
            net.op(env, "add", &pod.name, &c)?;
            net.op(env, "del", &pod.name, &c)?;
            let t = Instant::now();
            if *fill != Fill::PortsOnly {
                fill_store(net, n)?;
            }
            match (net.mode, fill) {
                (_, Fill::ReservationsOnly) => {}
                (Mode::Ref, _) => fill_iptables(env, net, n)?,
                _ => fill_nft(env, net, n)?,
            }
            eprintln!(
                "scale N={n}: {} ({}) written for {} in {:.1}s",
                n,
                fill.label(),
                net.mode.short(),
                t.elapsed().as_secs_f64()
            );
        }
        if n > 0 {
            // The written pods are real state to cnichain: their host port must be taken.
            let pod = Netns::new(&env.pod_name())?;
            let r = nets[0].op(env, "add", &pod.name, &caps(20000))?;
            let _ = nets[0].op(env, "del", &pod.name, &caps(20000));
            notes.push(format!(
                "N={n}: an ADD asking for host port 20000 (held by a written pod) {}",
                if r.ok {
                    "SUCCEEDED: the written state does not match cnichain's layout".to_string()
                } else {
                    let e = format!("{} {}", r.stdout, r.stderr)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!(
                        "was refused, so the written pods are seen: `{}`",
                        e.chars().take(140).collect::<String>().replace('`', "'")
                    )
                }
            ));
            if let Some(rnet) = nets.iter().find(|x| x.mode == Mode::Ref) {
                let s = rnet.host.run_quiet(&["iptables-save", "-t", "nat"])?;
                notes.push(format!(
                    "N={n}: the reference's nat table holds {} CNI-DN chains",
                    s.lines().filter(|l| l.starts_with(":CNI-DN-")).count()
                ));
            }
        }
        let mut runs: Vec<ModeRuns> = variants.iter().map(|(m, _)| ModeRuns::new(*m)).collect();
        let started = Instant::now();
        for r in 0..rounds + 1 {
            for (net, mr) in nets.iter().zip(runs.iter_mut()) {
                if net.mode == Mode::Ref && r > 1 && started.elapsed() > ref_budget {
                    continue;
                }
                let pod = Netns::new(&env.pod_name())?;
                let a = net.op(env, "add", &pod.name, &c)?;
                let d = net.op(env, "del", &pod.name, &c)?;
                if r >= 1 {
                    mr.note(&a);
                    mr.note(&d);
                    mr.adds.push(a);
                    mr.dels.push(d);
                }
            }
        }
        for (mr, (_, fill)) in runs.into_iter().zip(&variants) {
            if mr.mode == Mode::Ref && mr.adds.len() < rounds {
                ref_stopped = Some(format!(
                    "at N = {n} only {} of {rounds} rounds fit the reference's budget of {} s for one N",
                    mr.adds.len(),
                    ref_budget.as_secs()
                ));
            }
            points.push(Point {
                n,
                fill: *fill,
                runs: mr,
            });
        }
        eprintln!("scale N={n}: done");
    }
    Ok(Scale {
        ns: ns.to_vec(),
        rounds,
        points,
        ref_stopped,
        notes,
    })
}
