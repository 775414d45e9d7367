//! scripts/bench's driver: measures cnichain and the reference plugins side by side in
//! throwaway namespaces, then writes report.md and the plots. Report only: it asserts
//! nothing and its exit status says only whether it could measure.
//!
//! usage: cnichain-bench --out DIR --tag TAG --tmp DIR --cnichain BIN --cnitool BIN
//!        --dropin-dir DIR [--criterion DIR] [--quick] [--sections cycle,scale,...]

mod conc;
mod cycle;
mod micro;
mod plot;
mod report;
mod res;
mod scale;
mod setup;
mod stats;
mod sys;

use anyhow::{bail, Context, Result};
use setup::{Chain, Mode, ALL_MODES};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Opts {
    pub out: PathBuf,
    pub criterion: Option<PathBuf>,
    pub sections: Vec<String>,
}

pub struct Results {
    pub quick: bool,
    pub started: String,
    /// /proc/loadavg at the start and the end: the machine may be shared.
    pub load: (String, String),
    pub took: Duration,
    pub cycles: Vec<cycle::Cycle>,
    pub scale: Option<scale::Scale>,
    pub conc: Option<conc::Conc>,
    pub spawns: Vec<res::Spawns>,
    pub sizes: Option<res::Sizes>,
    pub micro: Vec<micro::Bench>,
}

fn parse() -> Result<(sys::Env, Opts)> {
    let mut a = std::env::args().skip(1);
    let (mut out, mut tag, mut tmp, mut cnichain, mut cnitool, mut dropin, mut crit) =
        (None, None, None, None, None, None, None);
    let mut quick = false;
    let mut sections = "cycle,scale,concurrency,resources,micro".to_string();
    while let Some(k) = a.next() {
        let mut v = || a.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--out" => out = Some(PathBuf::from(v()?)),
            "--tag" => tag = Some(v()?),
            "--tmp" => tmp = Some(PathBuf::from(v()?)),
            "--cnichain" => cnichain = Some(PathBuf::from(v()?)),
            "--cnitool" => cnitool = Some(PathBuf::from(v()?)),
            "--dropin-dir" => dropin = Some(PathBuf::from(v()?)),
            "--criterion" => crit = Some(PathBuf::from(v()?)),
            "--sections" => sections = v()?,
            "--quick" => quick = true,
            _ => bail!("unknown argument {k}"),
        }
    }
    let env = sys::Env {
        tag: tag.context("--tag")?,
        tmp: tmp.context("--tmp")?,
        cnichain: cnichain.context("--cnichain")?,
        cnitool: cnitool.context("--cnitool")?,
        ref_dir: PathBuf::from("/usr/lib/cni"),
        dropin_dir: dropin.context("--dropin-dir")?,
        quick,
    };
    let opts = Opts {
        out: out.context("--out")?,
        criterion: crit,
        sections: sections.split(',').map(String::from).collect(),
    };
    Ok((env, opts))
}

fn measure(env: &sys::Env, opts: &Opts) -> Result<Results> {
    let t0 = Instant::now();
    let on = |s: &str| opts.sections.iter().any(|x| x == s);
    let q = env.quick;
    let mut r = Results {
        quick: q,
        started: report::now_utc(),
        load: (report::loadavg(), String::new()),
        took: Duration::ZERO,
        cycles: vec![],
        scale: None,
        conc: None,
        spawns: vec![],
        sizes: None,
        micro: vec![],
    };
    if on("cycle") || on("resources") {
        let (rounds, warm) = if q { (5, 1) } else { (20, 2) };
        r.cycles.push(cycle::run(env, Chain::Chain4, &ALL_MODES, rounds, warm)?);
        if on("cycle") {
            r.cycles.push(cycle::run(env, Chain::Bridge, &ALL_MODES, rounds, warm)?);
        }
    }
    if on("scale") {
        let (ns, rounds, budget): (&[usize], usize, u64) = if q {
            (&[0, 200, 1000], 3, 20)
        } else {
            (&[0, 1000, 5000, 10000], 10, 120)
        };
        r.scale = Some(scale::run(env, ns, rounds, Duration::from_secs(budget))?);
    }
    if on("concurrency") {
        let levels: &[(usize, usize)] = if q {
            &[(1, 3), (4, 2), (16, 1), (64, 1)]
        } else {
            &[(1, 10), (4, 5), (16, 3), (64, 2)]
        };
        r.conc = Some(conc::run(
            env,
            Chain::Chain4,
            &[Mode::Inproc, Mode::Meta, Mode::Ref],
            levels,
        )?);
    }
    if on("resources") {
        r.spawns = res::spawns(env, &ALL_MODES, if q { 2 } else { 3 })?;
        r.sizes = Some(res::sizes(env));
    }
    if on("micro") {
        if let Some(d) = &opts.criterion {
            r.micro = micro::read(d);
        }
    }
    r.took = t0.elapsed();
    r.load.1 = report::loadavg();
    Ok(r)
}

fn main() {
    let res = (|| -> Result<()> {
        let (env, opts) = parse()?;
        if unsafe { libc::geteuid() } != 0 {
            bail!("needs root (network namespaces)");
        }
        plot::init_font()?;
        std::fs::create_dir_all(&opts.out)?;
        let r = measure(&env, &opts);
        sys::remove_all();
        let r = r?;
        report::write(&env, &opts, &r)?;
        eprintln!("wrote {}", opts.out.join("report.md").display());
        Ok(())
    })();
    if let Err(e) = res {
        sys::remove_all();
        eprintln!("cnichain-bench: {e:#}");
        std::process::exit(1);
    }
}
