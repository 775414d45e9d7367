//! Plots with plotters, each drawn twice: SVG and PNG (text through ab_glyph with a
//! DejaVu font file read at run time).

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const W: u32 = 1000;
const H: u32 = 520;

trait Px<T> {
    fn px(self) -> Result<T>;
}
impl<T, E: std::fmt::Debug> Px<T> for std::result::Result<T, E> {
    fn px(self) -> Result<T> {
        self.map_err(|e| anyhow!("plot: {e:?}"))
    }
}

pub fn init_font() -> Result<()> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    let path = candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| anyhow!("no DejaVuSans.ttf (install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| anyhow!("bad font {path}"))?;
    Ok(())
}

pub const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One bar panel: groups along x, one bar per series in each group.
pub struct Bars {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    /// values[group][series]
    pub values: Vec<Vec<f64>>,
}

/// A line plot with a log y axis; x is linear, or log2 when `log2_x`.
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log2_x: bool,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, b: &Bars) -> Result<()> {
    let ymax = b
        .values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.4
        + 1e-9;
    let ng = b.groups.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&b.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..ng as f64, 0f64..ymax)
        .px()?;
    let groups = b.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(ng * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < groups.len() {
                groups[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(&b.y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .px()?;
    let ns = b.series.len().max(1) as f64;
    for (si, name) in b.series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = b
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.get(si).is_some_and(|x| x.is_finite()))
            .map(|(g, v)| {
                let x0 = g as f64 + 0.1 + 0.8 * si as f64 / ns;
                Rectangle::new([(x0, 0.0), (x0 + 0.8 / ns, v[si])], color.filled())
            })
            .collect();
        chart
            .draw_series(rects)
            .px()?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .label_font(("sans-serif", 13))
        .draw()
        .px()?;
    Ok(())
}

fn lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, l: &Lines) -> Result<()> {
    let pts = l
        .series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.1.is_finite() && p.1 > 0.0);
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        let x = if l.log2_x { x.log2() } else { x };
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 1.0, 10.0);
    }
    let pad = (xmax - xmin).max(1.0) * 0.04;
    let mut chart = ChartBuilder::on(area)
        .caption(&l.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin - pad)..(xmax + pad), (ymin / 1.5..ymax * 1.5).log_scale())
        .px()?;
    let log2 = l.log2_x;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(&l.x_label)
        .y_desc(&l.y_label)
        .x_label_formatter(&move |x| {
            if log2 {
                format!("{}", 2f64.powf(*x).round())
            } else {
                format!("{x:.0}")
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .px()?;
    for (i, (name, pts)) in l.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.1.is_finite() && p.1 > 0.0)
            .map(|&(x, y)| (if log2 { x.log2() } else { x }, y))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .px()?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .px()?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .label_font(("sans-serif", 13))
        .draw()
        .px()?;
    Ok(())
}

/// Panels side by side.
pub enum Panel {
    Bars(Bars),
    Lines(Lines),
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<()> {
    root.fill(&WHITE).px()?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (a, p) in areas.iter().zip(panels) {
        match p {
            Panel::Bars(b) => bars(a, b)?,
            Panel::Lines(l) => lines(a, l)?,
        }
    }
    root.present().px()?;
    Ok(())
}

/// Write `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
pub fn write(dir: &Path, stem: &str, panels: &[Panel]) -> Result<()> {
    let w = W * panels.len().max(1) as u32 / if panels.len() > 1 { 2 } else { 1 };
    let w = w.max(W);
    let svg = dir.join(format!("{stem}.svg"));
    draw(SVGBackend::new(&svg, (w, H)).into_drawing_area(), panels)?;
    let png = dir.join(format!("{stem}.png"));
    draw(BitMapBackend::new(&png, (w, H)).into_drawing_area(), panels)?;
    Ok(())
}
