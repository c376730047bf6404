//! What a run prints, and its JSON report (schema: docs/perf-report.md).

use super::compare::Comparisons;
use crate::error::Error;
use polarc::backing::SimFaultCounters;
use polarc::device::faulty::FaultCounters;
use polarc::Stats;
use polarc_perf::cli::Args;
use polarc_perf::procfs;
use polarc_perf::report::{Latencies, Rebuild, Report};
use polarc_perf::soak::Soak;
use polarc_perf::verify;
use polarc_perf::workload::Workload;
use std::sync::Arc;

/// The latency table: one row per class, named by `names` (all, memory
/// tier hits, disk tier hits, misses). Both engines print it.
pub fn print_latencies(l: &Latencies, names: [&str; 5]) {
    println!(
        "{:<11}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "latency", "count", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    for (name, c) in names
        .into_iter()
        .zip([&l.all, &l.arc_hit, &l.l2_hit, &l.miss, &l.other])
        // The other operations only where the mix has some.
        .filter(|(_, c)| c.count > 0 || !std::ptr::eq(*c, &l.other))
    {
        println!(
            "{name:<11}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>12.1}",
            c.count, c.p50, c.p90, c.p99, c.p999, c.max
        );
    }
}

/// polarc's report: throughput, hit ratios, latency, and the ARC's and
/// L2's counters.
pub fn print_report(r: &Report, s: &Stats) {
    let h = &r.hit_ratio;
    println!(
        "\nops/s {:.0}   hit ratio: overall {:.4}, ARC {:.4}, L2 {:.4}   errors {}",
        r.ops_per_sec, h.overall, h.arc, h.l2, r.errors
    );
    if let Some(f) = h.first_10pct {
        println!("hit ratio of the first 10% of measured operations: {f:.4}");
    }
    match &r.rate {
        Some(rate) => println!(
            "open loop: {:.0} ops/s asked, {:.0} done, {}; {} issued late; latency from each operation's intended start",
            rate.target,
            rate.achieved,
            if rate.kept_up { "kept up" } else { "fell behind" },
            rate.issued_late
        ),
        None => println!(
            "closed loop: latency is mostly queueing behind the requests in flight (--rate for open loop)"
        ),
    }
    if let Some(c) = r.cpu_seconds_per_op {
        print!("CPU per op: {:.0} ns (user + sys, whole process)", c * 1e9);
    }
    if let Some(rss) = procfs::peak_rss_bytes() {
        print!("   peak RSS: {} MiB", rss >> 20);
    }
    println!();
    print_latencies(
        &r.latency_us,
        ["all", "ARC hit", "L2 hit", "miss", "other ops"],
    );
    if let Some(b) = &r.breakdown {
        print_breakdown(b);
    }
    println!(
        "ARC: target p {:.1} MiB, {:.1} B header/block; backing reads {}",
        s.sizes.p / (1 << 20) as f64,
        s.hdr_bytes_per_block,
        s.requests.backing_reads
    );
    if s.l2.l2_writes_sent > 0 || s.l2.l2_feeds > 0 {
        print_l2(r, s);
    }
}

fn print_l2(r: &Report, s: &Stats) {
    let l2 = &s.l2;
    let z = &s.l2_sizes;
    let d = &r.device;
    println!(
        "L2: {} MiB stored in {} MiB ({:.2}:1), {} blocks, {:.1} B DRAM per L2-only block",
        z.l2_size >> 20,
        z.l2_asize >> 20,
        z.l2_size as f64 / z.l2_asize.max(1) as f64,
        z.l2_blocks,
        s.l2_hdr_bytes_per_block
    );
    println!(
        "L2 device while measuring: {:.0} reads/s ({} MiB), {:.1} writes/s ({} MiB)",
        d.read_iops,
        d.read_bytes >> 20,
        d.write_iops,
        d.write_bytes >> 20
    );
    println!(
        "L2 wear while measuring: {:.1} MiB/s to the devices (data, padding, log, headers), write amplification {:.3}{}",
        d.device_write_bytes_per_sec / (1 << 20) as f64,
        d.write_amplification,
        match (d.dwpd_budget_bytes_per_sec, d.of_dwpd_budget) {
            (Some(b), Some(of)) => format!(
                "; dwpd budget {:.2} MiB/s, {:.1}% of it used",
                b / (1 << 20) as f64,
                of * 100.0
            ),
            _ => String::new(),
        }
    );
    if l2.l2_trims + l2.l2_trim_errors > 0 {
        println!(
            "L2 trim ahead of the hand: {} discards, {} MiB, {} failed",
            l2.l2_trims,
            l2.l2_trim_bytes >> 20,
            l2.l2_trim_errors
        );
    }
    if l2.l2_feed_ns > 0 {
        println!(
            "L2 feed: {} MiB packed in {:.3} s of feeder time: {:.0} MiB/s",
            l2.l2_feed_bytes >> 20,
            l2.l2_feed_ns as f64 / 1e9,
            l2.l2_feed_bytes as f64 / (1 << 20) as f64 / (l2.l2_feed_ns as f64 / 1e9)
        );
    }
    println!(
        "L2: feeds {}, writes {} ({} MiB, {} failed), hits {}, misses {}, rw_clash {}, cksum_bad {}, io_error {}, evicted {}",
        l2.l2_feeds,
        l2.l2_writes_done,
        l2.l2_write_bytes >> 20,
        l2.l2_writes_error,
        l2.l2_hits,
        l2.l2_misses,
        l2.l2_rw_clash,
        l2.l2_cksum_bad,
        l2.l2_io_error,
        l2.l2_evicted
    );
}

/// What `--faults` and `--backing-faults` injected: `{"l2": {eio, torn,
/// flip, hang, slow}, "backing": {fail, slow, hang}}`, each `null` when
/// not asked for; `null` when neither was.
pub fn faults_json(
    a: &Args,
    l2: &[Arc<FaultCounters>],
    backing: Option<&SimFaultCounters>,
) -> serde_json::Value {
    if a.faults.is_none() && a.backing_faults.is_none() {
        return serde_json::Value::Null;
    }
    let none = SimFaultCounters::default();
    serde_json::json!({
        "l2": a.faults.as_ref().map(|f| f.injected(l2)),
        "backing": a.backing_faults.as_ref().map(|f| f.injected(backing.unwrap_or(&none))),
    })
}

/// The soak block: faults injected, timeouts, `--verify`'s findings, hung
/// callers, the pool after shutdown and memory.
pub fn print_soak(s: &Soak, v: Option<&verify::Summary>, faults: &serde_json::Value) {
    let kinds = |o: &serde_json::Value| -> String {
        match o.as_object() {
            Some(m) => m
                .iter()
                .filter(|(_, n)| !n.is_null())
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => "none".into(),
        }
    };
    println!(
        "\nsoak: {} operations, {} failed; faults injected: L2 {}; backing {}",
        s.ops,
        s.errors,
        kinds(&faults["l2"]),
        kinds(&faults["backing"])
    );
    let t = &s.timeouts;
    println!(
        "soak: timeouts: L2 read {}, L2 write {} ({} completed late), backing {} ({} late); \
         L2 degraded {} times, recovered {}, {} degraded at the end",
        t.l2_read,
        t.l2_write,
        t.l2_late,
        t.backing,
        t.backing_late,
        s.degraded.episodes,
        s.degraded.recoveries,
        s.degraded.at_end
    );
    if let Some(v) = v {
        print_verify(v);
    }
    let mib = |b: Option<u64>| b.map_or("?".into(), |b| format!("{} MiB", b >> 20));
    println!(
        "soak: hung operations {}; pool buffers outstanding after shutdown {}; \
         peak RSS {}, RSS over the timeline {} -> {}",
        s.hung_ops,
        s.pool_outstanding_after_shutdown,
        mib(s.peak_rss_bytes),
        mib(s.rss_first_tick_bytes),
        mib(s.rss_last_tick_bytes)
    );
}

/// `--verify`'s line, and the first wrong reads.
fn print_verify(v: &verify::Summary) {
    println!(
        "verify: {} reads checked, {} wrong ({} stale), {} failed",
        v.reads_checked, v.wrong, v.stale, v.errors
    );
    for e in &v.examples {
        println!("verify: wrong read: {e}");
    }
}

/// polarc's JSON report.
pub fn report_json(
    a: &Args,
    w: &Workload,
    r: &Report,
    notes: &[String],
    stats: &Stats,
    c: Comparisons,
    rebuild: Option<&Rebuild>,
) -> serde_json::Value {
    let z = &stats.l2_sizes;
    serde_json::json!({
        "engine": "polarc",
        "version": env!("CARGO_PKG_VERSION"),
        "trace": a.trace.as_ref().map(|p| p.display().to_string()),
        "workload": w,
        "notes": notes,
        "ops": r.ops,
        "seconds": r.seconds,
        "ops_per_sec": r.ops_per_sec,
        "errors": r.errors,
        "hit_ratio": r.hit_ratio,
        "rebuild": rebuild,
        "rate": r.rate,
        "sweep": r.sweep,
        "latency_us": r.latency_us,
        "breakdown_us": r.breakdown,
        "device": r.device,
        "compression_ratio": if z.l2_asize == 0 { serde_json::Value::Null } else { (z.l2_size as f64 / z.l2_asize as f64).into() },
        "cpu_seconds_per_op": r.cpu_seconds_per_op,
        "peak_rss_bytes": procfs::peak_rss_bytes(),
        "hdr_bytes_per_block": stats.hdr_bytes_per_block,
        "l2_hdr_bytes_per_block": stats.l2_hdr_bytes_per_block,
        "timeline": r.timeline,
        "stats": stats,
        "fio": c.fio,
        "lz4": c.lz4,
        "spdk_nvme_perf": c.spdk_nvme_perf,
    })
}

/// Writes a report as pretty JSON to `path`, or to stdout for `-`.
pub fn write_json(path: &str, doc: &serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(doc)?;
    if path == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text).map_err(|source| Error::WriteJson {
            path: path.into(),
            source,
        })
    }
}

/// `--breakdown`: where client reads' time went, per class, p50 / p99.
fn print_breakdown(b: &polarc_perf::report::Breakdown) {
    println!("breakdown (us, p50 / p99)   late issue    to reactor       service     to client");
    for (name, p) in [
        ("ARC hit", &b.arc_hit),
        ("L2 hit", &b.l2_hit),
        ("miss", &b.miss),
    ] {
        if p.service.count == 0 {
            continue;
        }
        let f = |l: &polarc_perf::report::Latency| format!("{:>6.1} /{:>7.1}", l.p50, l.p99);
        println!(
            "{name:<27} {} {} {} {}",
            f(&p.late),
            f(&p.to_reactor),
            f(&p.service),
            f(&p.to_client)
        );
    }
}
