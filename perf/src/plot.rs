//! `--plot`: hit ratio over time and the latency CDF per class, as SVG.

use crate::workload::Report;
use plotters::prelude::*;
use std::path::Path;

/// Draws `r` into an SVG at `path`.
pub fn draw(path: &Path, r: &Report, engine: &str) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(600);

    let t_max = r.timeline.last().map_or(1.0, |t| t.t).max(1e-3);
    let mut c = ChartBuilder::on(&left)
        .caption(format!("{engine}: hit ratio over time"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..t_max, 0.0..1.0)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("hit ratio")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, color, f) in [
        (
            "overall",
            BLUE,
            (|t: &crate::workload::Tick| t.hit_ratio) as fn(&_) -> f64,
        ),
        ("L2", RED, |t: &crate::workload::Tick| t.l2_hit_ratio),
    ] {
        c.draw_series(LineSeries::new(
            r.timeline.iter().map(|t| (t.t, f(t))),
            color,
        ))
        .map_err(|e| err(&e))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

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
        .build_cartesian_2d((0.1f64..max_us * 1.2).log_scale(), 0.0..1.0)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(|e| err(&e))?;
    for ((name, pts), color) in r.cdf.iter().zip([GREEN, RED, BLACK]) {
        if pts.is_empty() {
            continue;
        }
        c.draw_series(LineSeries::new(
            pts.iter().map(|&(us, q)| (us.max(0.1), q)),
            color,
        ))
        .map_err(|e| err(&e))?
        .label(*name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
