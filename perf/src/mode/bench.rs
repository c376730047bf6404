//! Benchmarks instead of a run: ARC hits (--bench-hits) and the L2 feed (--bench-feed).

use super::{compare, engine, output};
use crate::error::Error;
use polarc::{Engine, SimStore};
use polarc_perf::cli::{ArgError, Args};
use polarc_perf::{devices, hits};
use std::time::Duration;

/// The ARC-hit benchmark: polarc against a mutex-sharded HashMap.
pub fn hits(a: &Args) -> Result<(), Error> {
    let b = hits::HitBench {
        ops: a.bench_ops,
        ..hits::HitBench::default()
    };
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let threads = cores.min(2);
    println!(
        "ARC-hit benchmark: {} keys x {} B, all resident, {} ops per thread, median of {} runs",
        b.keys, b.block, b.ops, b.runs
    );
    let base_n = hits::baseline(&b, threads);
    let (jobs, remote) = hits::jobs(&b, threads)?;
    let base_1 = hits::baseline(&b, 1);
    let (client, p50, p99) = hits::client(&b)?;
    let row = |r: &hits::HitResult| {
        let runs: Vec<String> = r.runs.iter().map(|x| format!("{:.2}M", x / 1e6)).collect();
        println!(
            "  {:<46} {:>8.2}M ops/s  (runs {})",
            r.name,
            r.ops_per_sec / 1e6,
            runs.join(", ")
        );
    };
    row(&base_n);
    row(&jobs);
    println!(
        "  -> ratio {:.2} (target >= 0.8); {:.0}% of ops were remote",
        jobs.ops_per_sec / base_n.ops_per_sec,
        remote * 100.0
    );
    row(&base_1);
    row(&client);
    println!(
        "  -> ratio {:.2} (target >= 0.3); blocking hit round trip p50 {:?}, p99 {:?}",
        client.ops_per_sec / base_1.ops_per_sec,
        p50,
        p99
    );
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "baseline_threads": base_n, "jobs": jobs, "jobs_remote_share": remote,
            "baseline_1_thread": base_1, "client": client,
            "client_p50_ns": p50.as_nanos() as u64, "client_p99_ns": p99.as_nanos() as u64,
        });
        output::write_json(path, &doc)?;
    }
    Ok(())
}

/// The feed benchmark: `--keys` values inserted, then fed to the first
/// `--l2` device by one feeder running alone; its speed against raw LZ4.
pub fn feed(a: &Args) -> Result<(), Error> {
    let value = a.value_size.max;
    let spec =
        a.l2.iter()
            .find(|s| !matches!(s.as_str(), "none" | "auto"))
            .ok_or(ArgError::FeedNeedsL2)?;
    // --keys × --value-size × 1.25, checked.
    let arc = a.feed_arc()?;
    let mut opened = devices::open(spec, &engine::open_options(a)?)?;
    let dev = opened.remove(0);
    // A local target (spdk:nvmf:) lives until the benchmark is over.
    let _guard = dev.guard;
    // Feeding starts 2 s after start-up: by then every block is inserted,
    // and the feeder runs alone.
    let e = Engine::builder()
        .reactors(1)
        .arc_capacity(arc)
        .max_block_size(value.next_power_of_two().max(512))
        .l2_device_arc(dev.device)
        .l2_config(polarc::L2Config {
            write_max: 1 << 40,
            write_boost: 0,
            feed_interval: Duration::from_secs(2),
            feed_min_interval: Duration::from_millis(1),
            compress: !a.l2_no_compress,
            writes_in_flight: 8,
            ..polarc::L2Config::default()
        })
        .build()?;
    let values: Vec<Vec<u8>> = (0..256u64)
        .map(|i| SimStore::content(&i.to_le_bytes(), value, a.compressibility))
        .collect();
    for k in 0..a.keys {
        e.insert(&polarc::index_key(k), &values[k as usize % values.len()])?;
    }
    let start = std::time::Instant::now();
    while e.stats().l2_sizes.l2_blocks < a.keys {
        if start.elapsed() > Duration::from_secs(120) {
            return Err(Error::FeedStalled);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = e.stats();
    e.shutdown()?;
    println!(
        "feed benchmark: {} values of {value} B ({}:1 compressible) to {}; {} MiB stored in {} MiB",
        a.keys,
        a.compressibility,
        spec,
        s.l2_sizes.l2_size >> 20,
        s.l2_sizes.l2_asize >> 20
    );
    let j = compare::lz4_compare(value, a.compressibility, &s);
    if let Some(path) = &a.json {
        output::write_json(path, &serde_json::json!({ "feed": j, "stats": s }))?;
    }
    Ok(())
}
