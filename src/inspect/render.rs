//! The human table of `cnichain inspect`: one line per row, columns padded to the
//! widest cell, `-` for nothing.

use super::model::Row;

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn rate(r: Option<u64>) -> String {
    match r {
        None => "-".into(),
        Some(b) if b >= 1_000_000 && b % 1_000_000 == 0 => format!("{}Mbit", b / 1_000_000),
        Some(b) if b >= 1000 && b % 1000 == 0 => format!("{}kbit", b / 1000),
        Some(b) => format!("{b}bit"),
    }
}

pub fn table(rows: &[Row]) -> String {
    let head = [
        "STATE",
        "NETWORK",
        "CONTAINER",
        "IFNAME",
        "NETNS",
        "ADDRESSES",
        "VETH",
        "IFB",
        "IN/OUT",
        "HOST-PORTS",
        "BY",
        "CACHE",
        "LOCK",
        "TUNING",
    ];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let netns = match &r.netns {
            Some(n) if r.netns_alive => n.clone(),
            Some(n) => format!("{n} (gone)"),
            None => "-".into(),
        };
        let ports: Vec<String> = r
            .host_ports
            .iter()
            .map(|p| {
                let host = if p.host_ip.is_empty() {
                    String::new()
                } else {
                    format!("{}:", p.host_ip)
                };
                format!("{}/{host}{}->{}", p.protocol, p.host_port, p.pod_port)
            })
            .collect();
        let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
        cells.push(vec![
            r.state.clone(),
            r.network.clone(),
            or_dash(r.container_id.as_deref().unwrap_or_default()),
            or_dash(r.ifname.as_deref().unwrap_or_default()),
            netns,
            or_dash(&r.addresses.join(",")),
            or_dash(r.host_veth.as_deref().unwrap_or_default()),
            or_dash(r.ifb.as_deref().unwrap_or_default()),
            format!("{}/{}", rate(r.ingress_rate), rate(r.egress_rate)),
            or_dash(&ports.join(",")),
            r.made_by.clone(),
            yes(r.cache),
            yes(r.lock),
            yes(r.tuning_record.is_some()),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| cells.iter().map(|row| row[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
