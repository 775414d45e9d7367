//! Summaries: min / median / max, percentiles, ratios.

use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Mmm {
    pub min: f64,
    pub med: f64,
    pub max: f64,
}

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    s
}

pub fn mmm(v: &[f64]) -> Mmm {
    let s = sorted(v);
    if s.is_empty() {
        return Mmm {
            min: f64::NAN,
            med: f64::NAN,
            max: f64::NAN,
        };
    }
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Mmm {
        min: s[0],
        med,
        max: s[n - 1],
    }
}

/// Nearest-rank percentile.
pub fn pct(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// Per-round ratios a[i] / b[i] of paired measurements.
pub fn ratios(a: &[f64], b: &[f64]) -> Mmm {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    mmm(&r)
}

pub fn f(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `med (min-max)`.
pub fn fm(m: &Mmm) -> String {
    format!("{} ({}–{})", f(m.med), f(m.min), f(m.max))
}
