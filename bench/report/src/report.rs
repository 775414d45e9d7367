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
    scale_section(&mut body, r, dir, &mut targets)?;
    conc_section(&mut body, r, dir, &mut targets)?;
    res_section(&mut body, r, dir, &mut targets)?;
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

fn scale_section(
    md: &mut String,
    r: &Results,
    dir: &std::path::Path,
    targets: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let Some(s) = &r.scale else { return Ok(()) };
    writeln!(
        md,
        "## scale: one more pod against N existing pods (bridge+host-local, portmap)\n"
    )?;
    writeln!(
        md,
        "Each of the N pods has a host-local reservation and a port mapping; {} rounds per N.\n",
        s.rounds
    )?;
    writeln!(md, "| N | cnichain ADD ms | cnichain DEL ms | ADD vs N=0 | DEL vs N=0 | reference ADD ms | reference DEL ms | reference ÷ cnichain, ADD | reference ÷ cnichain, DEL |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    let get = |n: usize, m: Mode| {
        s.points
            .iter()
            .find(|p| p.n == n && p.runs.mode == m && p.fill == Fill::Both)
    };
    let base = get(s.ns[0], Mode::Inproc).map(|p| (mmm(&walls(&p.runs.adds)), mmm(&walls(&p.runs.dels))));
    let ref_base = get(s.ns[0], Mode::Ref).map(|p| (mmm(&walls(&p.runs.adds)), mmm(&walls(&p.runs.dels))));
    let mut series: Vec<(String, Vec<(f64, f64)>)> = ["cnichain ADD", "cnichain DEL", "reference ADD", "reference DEL"]
        .iter()
        .map(|n| (n.to_string(), vec![]))
        .collect();
    let mut last = None;
    for &n in &s.ns {
        let Some(c) = get(n, Mode::Inproc) else { continue };
        let (ca, cd) = (walls(&c.runs.adds), walls(&c.runs.dels));
        let (ma, mdl) = (mmm(&ca), mmm(&cd));
        let (va, vd) = base
            .map(|(a, d)| (ma.med / a.med, mdl.med / d.med))
            .unwrap_or((f64::NAN, f64::NAN));
        series[0].1.push((n as f64, ma.med));
        series[1].1.push((n as f64, mdl.med));
        let (rs, rd, xa, xd) = match get(n, Mode::Ref) {
            Some(rp) if !rp.runs.adds.is_empty() => {
                let (ra, rdl) = (walls(&rp.runs.adds), walls(&rp.runs.dels));
                series[2].1.push((n as f64, mmm(&ra).med));
                series[3].1.push((n as f64, mmm(&rdl).med));
                (
                    fm(&mmm(&ra)),
                    fm(&mmm(&rdl)),
                    fm(&ratios(&ra, &ca)) + "x",
                    fm(&ratios(&rdl, &cd)) + "x",
                )
            }
            _ => ("not run".into(), "not run".into(), "-".into(), "-".into()),
        };
        writeln!(
            md,
            "| {n} | {} | {} | {}x | {}x | {rs} | {rd} | {xa} | {xd} |",
            fm(&ma),
            fm(&mdl),
            f(va),
            f(vd)
        )?;
        last = Some((n, va, vd));
    }
    if let Some(rb) = ref_base {
        if let Some(p) = s
            .points
            .iter()
            .filter(|p| p.runs.mode == Mode::Ref && !p.runs.adds.is_empty())
            .last()
        {
            writeln!(
                md,
                "\nThe reference at N = {}: ADD {}x, DEL {}x its N = 0 time (medians).",
                p.n,
                f(mmm(&walls(&p.runs.adds)).med / rb.0.med),
                f(mmm(&walls(&p.runs.dels)).med / rb.1.med)
            )?;
        }
    }
    if let Some(why) = &s.ref_stopped {
        writeln!(md, "\nThe reference was not measured at larger N: {why}.")?;
    }
    // Which part grows: cnichain with only one kind of state written.
    let vs0 = |fill: Fill, n: usize| -> Option<(f64, f64)> {
        let g = |n: usize| {
            s.points
                .iter()
                .find(|p| p.n == n && p.fill == fill && p.runs.mode == Mode::Inproc)
        };
        let (p0, p) = (g(s.ns[0])?, g(n)?);
        let m = |v: &[Run]| mmm(&walls(v)).med;
        Some((m(&p.runs.adds) / m(&p0.runs.adds), m(&p.runs.dels) / m(&p0.runs.dels)))
    };
    writeln!(
        md,
        "\nWhat grows: cnichain with only one kind of state written (ADD, DEL median vs its own N = 0).\n"
    )?;
    writeln!(md, "| N | port mappings only: ADD ms | ADD vs N=0 | DEL vs N=0 | reservations only: ADD ms | ADD vs N=0 | DEL vs N=0 |\n|---|---|---|---|---|---|---|")?;
    let mut split = (None, None);
    for &n in &s.ns {
        let g = |fill: Fill| {
            s.points
                .iter()
                .find(|p| p.n == n && p.fill == fill && p.runs.mode == Mode::Inproc)
        };
        let (Some(po), Some(ro)) = (g(Fill::PortsOnly), g(Fill::ReservationsOnly)) else {
            continue;
        };
        let (pv, rv) = (
            vs0(Fill::PortsOnly, n).unwrap_or((f64::NAN, f64::NAN)),
            vs0(Fill::ReservationsOnly, n).unwrap_or((f64::NAN, f64::NAN)),
        );
        writeln!(
            md,
            "| {n} | {} | {}x | {}x | {} | {}x | {}x |",
            fm(&mmm(&walls(&po.runs.adds))),
            f(pv.0),
            f(pv.1),
            fm(&mmm(&walls(&ro.runs.adds))),
            f(rv.0),
            f(rv.1)
        )?;
        split = (Some(pv), Some(rv));
    }
    for (fill, name) in [
        (Fill::PortsOnly, "cnichain ADD, port mappings only"),
        (Fill::ReservationsOnly, "cnichain ADD, reservations only"),
    ] {
        let pts = s
            .points
            .iter()
            .filter(|p| p.fill == fill)
            .map(|p| (p.n as f64, mmm(&walls(&p.runs.adds)).med))
            .collect();
        series.push((name.into(), pts));
    }
    md.push('\n');
    for n in &s.notes {
        writeln!(md, "* {n}")?;
    }
    md.push('\n');
    plot::write(
        dir,
        "scale",
        &[Panel::Lines(Lines {
            title: "one more pod against N existing pods (median ms)".into(),
            x_label: "N existing pods (port mapping + host-local reservation each)".into(),
            y_label: "ms per operation (log)".into(),
            log2_x: false,
            series,
        })],
    )?;
    writeln!(md, "![scale](scale.png) ([SVG](scale.svg))\n")?;
    if let Some((n, va, vd)) = last {
        let ok = va <= 1.2 && vd <= 1.2;
        let why = if n < 10000 {
            format!("largest N measured here is {n}, not 10,000 (quick mode)")
        } else if ok {
            "ADD/DEL touch only the pod's own state: host-local and portmap cost the same at any N".into()
        } else {
            match split {
                (Some(p), Some(r)) => format!(
                    "it grows with N: with port mappings only ADD {}x / DEL {}x, with host-local reservations only ADD {}x / DEL {}x of N = 0, so the growth is in {}",
                    f(p.0), f(p.1), f(r.0), f(r.1),
                    match (p.0.max(p.1) > 1.2, r.0.max(r.1) > 1.2) {
                        (false, true) => "host-local (the store's size)",
                        (true, false) => "the port mapping state",
                        (true, true) => "both host-local and the port mapping state",
                        (false, false) => "neither alone (their combination, or noise)",
                    }
                ),
                _ => "some per-operation work still grows with the number of pods or reservations (see the scale table)".into(),
            }
        };
        targets.push((
            "ADD and DEL at N = 10,000 within 1.2x of N = 0".into(),
            format!(
                "N = {n}: ADD {}x, DEL {}x (medians) | {}",
                f(va),
                f(vd),
                yes(ok && n >= 10000)
            ),
            why,
        ));
    }
    Ok(())
}

fn conc_section(
    md: &mut String,
    r: &Results,
    dir: &std::path::Path,
    targets: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let Some(c) = &r.conc else { return Ok(()) };
    writeln!(
        md,
        "## concurrency: P parallel ADDs, then P parallel DELs ({})\n",
        c.chain.label()
    )?;
    writeln!(
        md,
        "Pods per second = P ÷ (first start to last exit) of one burst; p99 over every single operation.\n"
    )?;
    writeln!(md, "| P | mode | rounds | ADD pods/s | DEL pods/s | ADD p99 ms | DEL p99 ms | failed | duplicate addresses | ADD pods/s ÷ reference |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut ps: Vec<usize> = c.levels.iter().map(|l| l.p).collect();
    ps.dedup();
    let modes: Vec<Mode> = {
        let mut m: Vec<Mode> = c.levels.iter().map(|l| l.mode).collect();
        m.sort();
        m.dedup();
        m
    };
    let mut rate_series: Vec<(String, Vec<(f64, f64)>)> =
        modes.iter().map(|m| (format!("{} ADD", short(*m)), vec![])).collect();
    let mut p99_series: Vec<(String, Vec<(f64, f64)>)> =
        modes.iter().map(|m| (format!("{} ADD", short(*m)), vec![])).collect();
    let mut bad = 0;
    let mut speed: Vec<(usize, Mmm)> = Vec::new();
    for &p in &ps {
        let refl = c.levels.iter().find(|l| l.p == p && l.mode == Mode::Ref);
        for l in c.levels.iter().filter(|l| l.p == p) {
            let ratio = match refl {
                Some(rl) if rl.mode != l.mode => {
                    let m = ratios(&l.add_rate, &rl.add_rate);
                    if l.mode == Mode::Inproc {
                        speed.push((p, m));
                    }
                    fm(&m) + "x"
                }
                _ => "1".into(),
            };
            if l.mode != Mode::Ref {
                bad += l.failed + l.dup;
            }
            writeln!(
                md,
                "| {p} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
                l.mode.label(),
                l.add_rate.len(),
                fm(&mmm(&l.add_rate)),
                fm(&mmm(&l.del_rate)),
                f(pct(&l.add_ms, 99.0)),
                f(pct(&l.del_ms, 99.0)),
                l.failed,
                l.dup
            )?;
            let i = modes.iter().position(|m| *m == l.mode).unwrap_or(0);
            rate_series[i].1.push((p as f64, mmm(&l.add_rate).med));
            p99_series[i].1.push((p as f64, pct(&l.add_ms, 99.0)));
        }
    }
    for l in &c.levels {
        if let Some(e) = &l.first_err {
            writeln!(
                md,
                "\nP={} {}: first failure `{}`",
                l.p,
                l.mode.label(),
                e.replace('`', "'").replace('\n', " ")
            )?;
        }
    }
    md.push('\n');
    plot::write(
        dir,
        "concurrency",
        &[
            Panel::Lines(Lines {
                title: "pods per second (median of rounds)".into(),
                x_label: "parallel ADDs".into(),
                y_label: "pods/s (log)".into(),
                log2_x: true,
                series: rate_series,
            }),
            Panel::Lines(Lines {
                title: "p99 latency of one ADD".into(),
                x_label: "parallel ADDs".into(),
                y_label: "ms (log)".into(),
                log2_x: true,
                series: p99_series,
            }),
        ],
    )?;
    writeln!(md, "![concurrency](concurrency.png) ([SVG](concurrency.svg))\n")?;
    for want in [16, 64] {
        if let Some((_, m)) = speed.iter().find(|(p, _)| *p == want) {
            let ok = m.med >= 10.0;
            targets.push((
                format!("{want} parallel ADDs at least 10x the reference's pods/s"),
                format!("{}x (per-round ratios, median (min–max)) | {}", fm(m), yes(ok)),
                if ok {
                    "one process per pod and no iptables or helper execs".into()
                } else {
                    format!(
                        "on {} CPUs a burst is bound by CPU time per ADD{}, and by kernel work neither process is charged for (netns, veth, RCU grace periods); other load on the machine (load average above) takes its share",
                        sh(&["nproc"]),
                        cpu_ratio(r).map(|(a, b)| format!(": reference {} ms, cnichain {} ms (ratio {}x)", f(a), f(b), f(a / b))).unwrap_or_default()
                    )
                },
            ));
        }
    }
    targets.push((
        "no failed or duplicate allocation (cnichain, all levels)".into(),
        format!("{bad} failed or duplicate | {}", yes(bad == 0)),
        "host-local serialises allocation under its store lock; every ADD's addresses are compared".into(),
    ));
    Ok(())
}

fn res_section(
    md: &mut String,
    r: &Results,
    dir: &std::path::Path,
    targets: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let Some(c4) = r.cycles.iter().find(|c| c.chain == crate::setup::Chain::Chain4) else {
        return Ok(());
    };
    if r.spawns.is_empty() && r.sizes.is_none() {
        return Ok(());
    }
    writeln!(md, "## resources: one ADD of the 4-stage chain\n")?;
    writeln!(
        md,
        "Peak RSS and CPU from the {} cycle ADDs of each mode; processes from `strace -f` of {} warm ADDs each.\n",
        c4.rounds,
        r.spawns.first().map(|s| s.procs.len()).unwrap_or(0)
    )?;
    writeln!(md, "| mode | peak RSS MB (max) | RSS MB median | CPU ms per ADD (user+sys) | processes spawned per ADD | execve per ADD | threads per ADD | programs run per ADD |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let (mut groups, mut rss, mut cpu) = (vec![], vec![], vec![]);
    let mut inproc_rss = f64::NAN;
    let mut inproc_procs = None;
    let mut meta_procs = None;
    for m in &c4.modes {
        let r_kb: Vec<f64> = m.adds.iter().map(|a| a.maxrss_kb as f64 / 1024.0).collect();
        let c_ms: Vec<f64> = m.adds.iter().map(|a| ms(a.cpu)).collect();
        let rm = mmm(&r_kb);
        let sp = r.spawns.iter().find(|s| s.mode == m.mode);
        let n = sp.map(|s| s.procs.len().max(1)).unwrap_or(1);
        let per = |v: Option<&Vec<usize>>| {
            v.map(|v| fm(&mmm(&v.iter().map(|x| *x as f64).collect::<Vec<_>>())))
                .unwrap_or("-".into())
        };
        let progs = sp
            .map(|s| {
                s.programs
                    .iter()
                    .map(|(p, k)| format!("{p} {}", f(*k as f64 / n as f64)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.mode.label(),
            f(rm.max),
            f(rm.med),
            fm(&mmm(&c_ms)),
            per(sp.map(|s| &s.procs)),
            per(sp.map(|s| &s.execs)),
            per(sp.map(|s| &s.threads)),
            progs
        )?;
        if m.mode == Mode::Inproc {
            inproc_rss = rm.max;
            inproc_procs = sp.map(|s| s.procs.iter().copied().max().unwrap_or(0));
        }
        if m.mode == Mode::Meta {
            meta_procs = sp.map(|s| s.procs.iter().copied().max().unwrap_or(0));
        }
        groups.push(short(m.mode).to_string());
        rss.push(vec![rm.max, rm.med]);
        cpu.push(vec![mmm(&c_ms).med]);
    }
    writeln!(
        md,
        "\nThe libcni modes' RSS is the largest process of the tree: cnitool (Go) itself or a plugin.\n"
    )?;
    if let Some(s) = &r.sizes {
        let total: u64 = s.reference.iter().map(|x| x.1).sum();
        writeln!(md, "| binary | size MB |\n|---|---|")?;
        writeln!(
            md,
            "| cnichain (release; every stage, the meta-plugin and the drop-ins are this one file) | {:.2} |",
            s.cnichain as f64 / 1e6
        )?;
        for (n, b) in &s.reference {
            writeln!(md, "| reference {n} | {:.2} |", *b as f64 / 1e6)?;
        }
        writeln!(
            md,
            "| reference, the 5 plugins of the 4-stage chain together | {:.2} |",
            total as f64 / 1e6
        )?;
        writeln!(md, "| cnitool (libcni peer) | {:.2} |\n", s.cnitool as f64 / 1e6)?;
    }
    plot::write(
        dir,
        "resources",
        &[
            Panel::Bars(Bars {
                title: "RSS of one ADD (MB)".into(),
                y_label: "MB".into(),
                groups: groups.clone(),
                series: vec!["peak".into(), "median".into()],
                values: rss,
            }),
            Panel::Bars(Bars {
                title: "CPU time of one ADD (ms, median)".into(),
                y_label: "ms".into(),
                groups,
                series: vec!["user+sys".into()],
                values: cpu,
            }),
        ],
    )?;
    writeln!(md, "![resources](resources.png) ([SVG](resources.svg))\n")?;
    let ok = inproc_rss < 10.0;
    targets.push((
        "peak RSS of an ADD under 10 MB".into(),
        format!(
            "cnichain in-process: {} MB (max over {} ADDs) | {}",
            f(inproc_rss),
            c4.rounds,
            yes(ok)
        ),
        if ok {
            "one static process, no runtime or helper processes".into()
        } else {
            "see the resources table".into()
        },
    ));
    if let Some(p) = inproc_procs {
        let ok = p == 0 && meta_procs.is_none_or(|m| m <= 1);
        targets.push((
            "no helper process per ADD in steady state".into(),
            format!(
                "in-process: {p} processes spawned; meta-plugin under libcni: {} (libcni's exec of the plugin itself) | {}",
                meta_procs.map(|m| m.to_string()).unwrap_or("-".into()),
                yes(ok)
            ),
            if ok {
                "netlink, nfnetlink and tc are spoken directly; nothing is exec'd once the host's tables exist".into()
            } else {
                "something is exec'd per ADD: see programs in the resources table".into()
            },
        ));
    }
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
