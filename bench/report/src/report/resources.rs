//! The resources section of the report: CPU, memory and kernel objects per pod.

use super::*;

pub(super) fn res_section(
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
