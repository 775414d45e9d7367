//! The scaling sections of the report: cost per pod as the node fills up, and under
//! concurrent calls.

use super::*;

pub(super) fn scale_section(
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

pub(super) fn conc_section(
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
