//! report.md and the plots, from one run's measurements.

use crate::plot::{self, Bars, Lines, Panel};
use crate::scale::Fill;
use crate::setup::Mode;
use crate::stats::{f, fm, mmm, ms, pct, ratios, Mmm};
use crate::sys::{Env, Run};
use crate::{Opts, Results};
use anyhow::Result;
use std::fmt::Write as _;
use std::process::Command;

mod resources;
mod scaling;

fn sh(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn now_utc() -> String {
    sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn walls(v: &[Run]) -> Vec<f64> {
    v.iter().map(|r| ms(r.wall)).collect()
}

fn cycles(adds: &[Run], dels: &[Run]) -> Vec<f64> {
    adds.iter().zip(dels).map(|(a, d)| ms(a.wall) + ms(d.wall)).collect()
}

fn short(m: Mode) -> &'static str {
    match m {
        Mode::Inproc => "in-process",
        Mode::Meta => "meta-plugin",
        Mode::Dropin => "drop-ins",
        Mode::Ref => "reference",
        Mode::Exec => "ref via exec",
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "**met**"
    } else {
        "**not met**"
    }
}

pub fn write(env: &Env, opts: &Opts, r: &Results) -> Result<()> {
    let mut md = String::new();
    let mut targets: Vec<(String, String, String)> = Vec::new();
    let dir = &opts.out;

    writeln!(md, "# cnichain benchmark report\n")?;
    writeln!(
        md,
        "Made by `scripts/bench{}` on {} in {:.0} s. Report only: nothing here is a test. Every \
         comparison was measured side by side in this run (modes interleaved round by round); a \
         figure is the median with (min–max) over the rounds; a ratio \"a ÷ b\" is computed per \
         round (paired measurements) and given as median (min–max) of those ratios. Times are the \
         wall time of one whole process as a runtime sees it (spawn to exit, reaped with wait4).\n",
        if r.quick { " --quick" } else { "" },
        r.started,
        r.took.as_secs_f64()
    )?;
    if r.quick {
        writeln!(
            md,
            "**Quick mode**: few rounds and small N; the figures are indicative only.\n"
        )?;
    }
    writeln!(md, "## Machine and versions\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| CPU | {} ({} online CPUs) |", cpu_model(), sh(&["nproc"]))?;
    writeln!(md, "| kernel | {} |", sh(&["uname", "-r"]))?;
    writeln!(
        md,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |",
        r.load.0, r.load.1
    )?;
    let rev = sh(&["git", "rev-parse", "--short=12", "HEAD"]);
    let dirty = if sh(&["git", "status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    writeln!(md, "| cnichain | git {rev}{dirty}, release build |")?;
    writeln!(
        md,
        "| reference plugins | Debian containernetworking-plugins {} ({}) |",
        sh(&["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"]),
        env.ref_dir.display()
    )?;
    writeln!(md, "| libcni peer (cnitool) | {} |", env.cnitool.display())?;
    writeln!(md, "| rustc | {} |", sh(&["rustc", "--version"]))?;
    writeln!(
        md,
        "| nft / iptables | {} / {} |\n",
        sh(&["nft", "--version"]),
        sh(&["iptables", "--version"])
    )?;

    let mut body = String::new();
    cycle_section(&mut body, r, dir)?;
    scaling::scale_section(&mut body, r, dir, &mut targets)?;
    scaling::conc_section(&mut body, r, dir, &mut targets)?;
    resources::res_section(&mut body, r, dir, &mut targets)?;
    micro_section(&mut body, r)?;

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | | why |\n|---|---|---|---|")?;
    for (t, m, why) in &targets {
        writeln!(md, "| {t} | {m} | {why} |")?;
    }
    if targets.is_empty() {
        writeln!(md, "| (no section with a target ran) | | | |")?;
    }
    md.push('\n');
    md.push_str(&body);
    writeln!(md, "## Method\n")?;
    writeln!(
        md,
        "* Every mode runs in its own throwaway host network namespace (the plugins' host side: \
         bridge, veths, nftables/iptables, tc) with its own temp dir for conflists, host-local \
         dataDir, result cache and state; each pod is a fresh netns; all are removed at the end. \
         The machine's root netns is never changed.\n\
         * Modes: **in-process** `cnichain add/del`; **meta-plugin** libcni (the cnitool peer built \
         from Debian's libcni 1.1.2) running one `cnichain` conflist entry; **drop-ins** libcni \
         running cnichain installed under the reference plugins' names; **reference** libcni \
         running /usr/lib/cni; **ref via exec** `cnichain --exec all` running /usr/lib/cni.\n\
         * Chains: 4-stage = bridge (+host-local, /16, hairpin) , tuning (one sysctl), portmap \
         (one tcp mapping, snat), bandwidth (ingress+egress); bridge+host-local alone.\n\
         * Peak RSS and CPU time come from wait4's rusage of the timed child (ru_maxrss is the \
         largest of the child and the descendants it reaped). Processes per ADD are counted with \
         `strace -f` on warm ADDs (fork/vfork/clone/clone3 without CLONE_THREAD; execve separately).\n\
         * scale writes the N existing pods directly (reservation files; cnichain's nftables \
         elements with one nft batch; the reference's per-pod iptables chains with one \
         iptables-restore), after one real ADD/DEL created the fixed tables."
    )?;
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

fn cycle_section(md: &mut String, r: &Results, dir: &std::path::Path) -> Result<()> {
    let cs: Vec<_> = r.cycles.iter().collect();
    if cs.is_empty() {
        return Ok(());
    }
    writeln!(md, "## cycle: one pod ADD then DEL\n")?;
    let mut panels = Vec::new();
    for c in &cs {
        writeln!(md, "### {} ({} rounds)\n", c.chain.label(), c.rounds)?;
        writeln!(
            md,
            "| mode | ADD ms | DEL ms | ADD+DEL ms | reference ÷ this, ADD | reference ÷ this, ADD+DEL | failed |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        let refm = c.modes.iter().find(|m| m.mode == Mode::Ref);
        let mut groups = Vec::new();
        let mut values = Vec::new();
        for m in &c.modes {
            let (a, d, cy) = (walls(&m.adds), walls(&m.dels), cycles(&m.adds, &m.dels));
            let (ra, rc) = match refm {
                Some(rm) if rm.mode != m.mode => (
                    fm(&ratios(&walls(&rm.adds), &a)) + "x",
                    fm(&ratios(&cycles(&rm.adds, &rm.dels), &cy)) + "x",
                ),
                _ => ("1".into(), "1".into()),
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {ra} | {rc} | {} |",
                m.mode.label(),
                fm(&mmm(&a)),
                fm(&mmm(&d)),
                fm(&mmm(&cy)),
                m.failed
            )?;
            groups.push(short(m.mode).to_string());
            values.push(vec![mmm(&a).med, mmm(&d).med]);
        }
        for m in &c.modes {
            if let Some(e) = &m.first_err {
                writeln!(
                    md,
                    "\n{} failed {} times, first: `{}`",
                    m.mode.label(),
                    m.failed,
                    e.replace('`', "'").replace('\n', " ")
                )?;
            }
        }
        md.push('\n');
        panels.push(Panel::Bars(Bars {
            title: format!("{} (median ms)", c.chain.label()),
            y_label: "ms per operation".into(),
            groups,
            series: vec!["ADD".into(), "DEL".into()],
            values,
        }));
    }
    plot::write(dir, "cycle", &panels)?;
    writeln!(md, "![cycle](cycle.png) ([SVG](cycle.svg))\n")?;
    Ok(())
}

/// Median CPU time of one 4-stage ADD: (reference, cnichain in-process).
fn cpu_ratio(r: &Results) -> Option<(f64, f64)> {
    let c4 = r.cycles.iter().find(|c| c.chain == crate::setup::Chain::Chain4)?;
    let cpu = |m: Mode| {
        c4.modes
            .iter()
            .find(|x| x.mode == m)
            .map(|x| mmm(&x.adds.iter().map(|a| ms(a.cpu)).collect::<Vec<_>>()).med)
    };
    Some((cpu(Mode::Ref)?, cpu(Mode::Inproc)?))
}

fn micro_section(md: &mut String, r: &Results) -> Result<()> {
    if r.micro.is_empty() {
        return Ok(());
    }
    writeln!(md, "## micro: engine functions (criterion)\n")?;
    writeln!(
        md,
        "No kernel work: what cnichain's engine spends per call. Median with criterion's 95% confidence bounds.\n"
    )?;
    writeln!(md, "| bench | median µs | 95% bounds µs |\n|---|---|---|")?;
    for b in &r.micro {
        writeln!(
            md,
            "| {} | {} | {}–{} |",
            b.name,
            f(b.median / 1000.0),
            f(b.lo / 1000.0),
            f(b.hi / 1000.0)
        )?;
    }
    md.push('\n');
    Ok(())
}
