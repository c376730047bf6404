//! `--plot`: hit ratio over time and the latency CDF per class, as SVG.

use crate::mrc::Point;
use crate::report::{Report, Tick};
use plotters::prelude::*;
use std::path::Path;

/// A plot that could not be drawn or written.
pub type Error = DrawingAreaErrorKind<std::io::Error>;

/// Draws `r` into an SVG at `path`.
pub fn draw(path: &Path, r: &Report, engine: &str) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);

    let t_max = r.timeline.last().map_or(1.0, |t| t.t).max(1e-3);
    let mut c = ChartBuilder::on(&left)
        .caption(format!("{engine}: hit ratio over time"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..t_max, 0.0..1.0)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("hit ratio")
        .draw()?;
    for (name, color, f) in [
        ("overall", BLUE, (|t: &Tick| t.hit_ratio) as fn(&_) -> f64),
        ("L2", RED, |t: &Tick| t.l2_hit_ratio),
    ] {
        c.draw_series(LineSeries::new(
            r.timeline.iter().map(|t| (t.t, f(t))),
            color,
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    c.configure_series_labels().border_style(BLACK).draw()?;

    let max_us = r
        .cdf
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let mut c = ChartBuilder::on(&right)
        .caption("latency CDF per class", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((0.1f64..max_us * 1.2).log_scale(), 0.0..1.0)?;
    c.configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("fraction of requests")
        .draw()?;
    for ((name, pts), color) in r.cdf.iter().zip([GREEN, RED, BLACK]) {
        if pts.is_empty() {
            continue;
        }
        c.draw_series(LineSeries::new(
            pts.iter().map(|&(us, q)| (us.max(0.1), q)),
            color,
        ))?
        .label(*name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    c.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Draws miss-ratio curves: hit ratio against DRAM size (log scale), one
/// line per policy and L2 size.
pub fn draw_mrc(path: &Path, points: &[Point]) -> Result<(), Error> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let lo = points
        .iter()
        .map(|p| mib(p.arc_bytes))
        .fold(f64::MAX, f64::min);
    let hi = points.iter().map(|p| mib(p.arc_bytes)).fold(0.0, f64::max);
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo / 2.0, lo.max(1e-3) * 2.0)
    };
    let mut c = ChartBuilder::on(&root)
        .caption("hit ratio against cache size", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    c.configure_mesh()
        .x_desc("ARC (DRAM) size, MiB")
        .y_desc("hit ratio")
        .draw()?;
    let mut series: Vec<(&str, u64)> = points.iter().map(|p| (p.policy, p.l2_bytes)).collect();
    series.dedup();
    series.sort_unstable();
    series.dedup();
    for (i, &(policy, l2)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let name = if l2 == 0 {
            policy.to_string()
        } else {
            format!("{policy} + L2 {:.0} MiB", mib(l2))
        };
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.policy == policy && p.l2_bytes == l2)
            .map(|p| (mib(p.arc_bytes), p.hit_ratio))
            .collect();
        c.draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        c.draw_series(
            line.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
