//! `--mrc`: miss-ratio curves and sizing advice from a trace (the
//! replay itself is in the library, `polarc_perf::mrc`).

use super::replay;
use crate::error::Error;
use polarc_perf::cli::Args;
use polarc_perf::mrc::{self, Advice, Plan, Point};
use polarc_perf::plot;
use polarc_perf::units::format_size_rounded;
use std::path::Path;
use std::time::Instant;

/// Replays the trace at `path` for every size asked, prints the curve and
/// the advice, and writes the JSON and the plot where asked.
pub fn run(a: &Args, path: &Path) -> Result<(), Error> {
    let (trace, _) = replay::load(a, path)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = Plan {
        arc_sizes: a.mrc.clone().map(|l| l.0).unwrap_or_default(),
        l2_sizes: std::iter::once(0)
            .chain(a.mrc_l2.iter().flat_map(|l| l.0.iter().copied()))
            .collect(),
        policies: a.mrc_policies.iter().map(|&p| p.into()).collect(),
        shards: a.reactors.unwrap_or(threads).max(1),
        threads,
    };
    println!(
        "mrc: {} ({:?}), {} accesses; {} ARC sizes x {} L2 sizes, policies {}; {} shards (as {} reactors route keys), {} threads",
        path.display(),
        a.trace_format,
        trace.len(),
        plan.arc_sizes.len(),
        plan.l2_sizes.len(),
        a.mrc_policies.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
        plan.shards,
        plan.shards,
        threads
    );
    let t0 = Instant::now();
    let points = mrc::curve(&trace, &plan, &|done, n| {
        eprintln!(
            "mrc: {done}/{n} points, {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    });
    let seconds = t0.elapsed().as_secs_f64();
    let replayed: u64 = points.iter().map(Point::accesses).sum();
    let per_sec = replayed as f64 / seconds;
    // Each busy thread replays one point at a time.
    let per_thread_per_point = per_sec / plan.threads.min(points.len()).max(1) as f64;
    println!(
        "mrc: {} points in {seconds:.2} s: {:.1} M accesses/s in all, {:.1} M accesses/s per thread per point",
        points.len(),
        per_sec / 1e6,
        per_thread_per_point / 1e6,
    );
    println!(
        "{:<6} {:>10} {:>10} {:>9} {:>12} {:>12} {:>12}",
        "policy", "ARC", "L2", "hit ratio", "ARC hits", "L2 hits", "misses"
    );
    for p in &points {
        println!(
            "{:<6} {:>10} {:>10} {:>9.4} {:>12} {:>12} {:>12}",
            p.policy,
            format_size_rounded(p.arc_bytes),
            if p.l2_bytes == 0 {
                "-".into()
            } else {
                format_size_rounded(p.l2_bytes)
            },
            p.hit_ratio,
            p.arc_hits,
            p.l2_hits,
            p.misses
        );
    }
    let advice = a
        .target_hit_ratio
        .map(|t| mrc::advise(&points, t, a.sizing_rate));
    if let Some((arc_only, tiered)) = &advice {
        let t = a.target_hit_ratio.unwrap_or_default();
        print_advice("ARC alone", t, arc_only.as_ref());
        if a.mrc_l2.is_some() {
            print_advice("ARC + L2", t, tiered.as_ref());
        }
    }
    if let Some(path) = &a.plot {
        plot::draw_mrc(path, &points).map_err(|source| Error::Plot {
            path: path.clone(),
            source,
        })?;
        println!("plot: {}", path.display());
    }
    if let Some(json) = &a.json {
        let doc = serde_json::json!({
            "engine": "polarc",
            "version": env!("CARGO_PKG_VERSION"),
            "trace": path.display().to_string(),
            "accesses": trace.len(),
            "shards": plan.shards,
            "threads": plan.threads,
            "seconds": seconds,
            "accesses_per_sec_per_point": per_thread_per_point,
            "mrc": points,
            "advice": advice.map(|(arc_only, tiered)| serde_json::json!({
                "target_hit_ratio": a.target_hit_ratio,
                "rate": a.sizing_rate,
                "arc_only": arc_only,
                "arc_l2": tiered,
            })),
        });
        super::output::write_json(json, &doc)?;
    }
    Ok(())
}

fn print_advice(what: &str, target: f64, a: Option<&Advice>) {
    let Some(a) = a else {
        println!("sizing, {what}: no size tried reaches a hit ratio of {target}; try larger sizes");
        return;
    };
    let p = &a.point;
    print!(
        "sizing, {what}: hit ratio {:.4} >= {target} with ARC {}{}; DRAM {} ({} of data, {} of headers)",
        p.hit_ratio,
        format_size_rounded(p.arc_bytes),
        if p.l2_bytes > 0 {
            format!(" and L2 {}", format_size_rounded(p.l2_bytes))
        } else {
            String::new()
        },
        format_size_rounded(a.dram_bytes),
        format_size_rounded(p.arc_bytes),
        format_size_rounded(p.header_bytes)
    );
    if let (Some(bps), Some(dwpd)) = (a.l2_write_bytes_per_sec, a.l2_dwpd) {
        print!(
            "; L2 writes {:.1} MiB/s = {dwpd:.1} drive writes per day at the rate given",
            bps / (1 << 20) as f64
        );
    }
    println!();
}
