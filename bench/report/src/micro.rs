//! micro: criterion's estimates (target/criterion/<bench>/new/estimates.json).

use std::path::Path;

pub struct Bench {
    pub name: String,
    /// Median time and its 95% confidence bounds, in ns.
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

pub fn read(criterion_dir: &Path) -> Vec<Bench> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(criterion_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let est = e.path().join("new/estimates.json");
        let meta = e.path().join("new/benchmark.json");
        let (Ok(est), Ok(meta)) = (std::fs::read_to_string(est), std::fs::read_to_string(meta)) else {
            continue;
        };
        let (Ok(est), Ok(meta)) = (
            serde_json::from_str::<serde_json::Value>(&est),
            serde_json::from_str::<serde_json::Value>(&meta),
        ) else {
            continue;
        };
        let g = |k: &str| {
            est["median"][k]
                .as_f64()
                .or_else(|| est["median"]["confidence_interval"][k].as_f64())
                .unwrap_or(f64::NAN)
        };
        out.push(Bench {
            name: meta["full_id"].as_str().unwrap_or("?").to_string(),
            median: g("point_estimate"),
            lo: g("lower_bound"),
            hi: g("upper_bound"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
