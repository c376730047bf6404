//! `polarc-perf`: runs a workload against polarc and reports what it saw.
//! With no arguments it runs the embedded default: a zipf read-through
//! workload over a simulated slow store, sized for a laptop.

use clap::Parser;
use polarc::{Engine, IdleStrategy, Latency, Policy, SimStore};
use polarc_perf::units::{parse_duration, parse_size};
use polarc_perf::{hits, workload};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "polarc's perf harness: run a cache workload and report throughput, hit ratio and latency"
)]
struct Args {
    /// Reactors (shards). Default: one per available core.
    #[arg(long)]
    reactors: Option<usize>,
    /// ARC capacity (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    arc: u64,
    /// L2 device: none, mem:SIZE, file:PATH[:SIZE] (io_uring) or
    /// uring:/dev/DEVICE. Repeat for several devices.
    #[arg(long, default_value = "none")]
    l2: Vec<String>,
    /// Open io_uring L2 devices buffered instead of with O_DIRECT.
    #[arg(long)]
    l2_buffered: bool,
    /// L2 write rate cap per device, per second (l2arc_write_max).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    l2_write_max: u64,
    /// Extra L2 write rate while the ARC warms up (l2arc_write_boost).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    l2_write_boost: u64,
    /// Time between L2 feeds (l2arc_feed_secs).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    l2_feed_interval: std::time::Duration,
    /// Store L2 blocks uncompressed.
    #[arg(long)]
    l2_no_compress: bool,
    /// Copy only MFU blocks to L2 (l2arc_mfuonly).
    #[arg(long)]
    l2_mfuonly: bool,
    /// No L2 reads while the feeder writes (l2arc_norw).
    #[arg(long)]
    l2_norw: bool,
    /// Backing store: sim:LATENCY (e.g. sim:5ms).
    #[arg(long, default_value = "sim:200us")]
    backing: String,
    /// Distinct keys.
    #[arg(long, default_value_t = 200_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    value_size: u64,
    /// Value compressibility: 2 means about 2:1.
    #[arg(long, default_value_t = 2.0)]
    compressibility: f64,
    /// Zipf exponent θ; 0 for uniform keys.
    #[arg(long, default_value_t = 0.99)]
    zipf: f64,
    /// Measured operations.
    #[arg(long, default_value_t = 500_000)]
    ops: u64,
    /// Operations before measuring.
    #[arg(long, default_value_t = 500_000)]
    warmup_ops: u64,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 16)]
    queue_depth: usize,
    /// Reactor idle strategy.
    #[arg(long, default_value = "adaptive", value_parser = ["busy", "adaptive"])]
    idle: String,
    /// Replacement policy.
    #[arg(long, default_value = "arc", value_parser = ["arc", "lru"])]
    policy: String,
    /// Write the report as JSON to this path (`-` for stdout).
    #[arg(long)]
    json: Option<String>,
    /// Run the measured phase as jobs on the reactors themselves (as
    /// SPDK's bdevperf does), --queue-depth per reactor, uniform keys.
    #[arg(long)]
    in_reactor: bool,
    /// After the run, measure raw LZ4 compression speed on values like the
    /// workload's and compare the L2 feed throughput with it.
    #[arg(long)]
    lz4_compare: bool,
    /// Warm up by reading every key once, in order.
    #[arg(long)]
    sequential_warmup: bool,
    /// After warm-up, wait until L2 feeding has settled.
    #[arg(long)]
    settle_l2: bool,
    /// After the run, run fio's io_uring 4K random read on the same L2
    /// file, at the same total queue depth, and compare L2-hit throughput.
    #[arg(long)]
    fio_compare: bool,
    /// Run the feed benchmark instead: insert --keys values into an ARC
    /// that holds them all, then time one uncapped feeder copying them to
    /// the --l2 device, against raw LZ4 on the same values.
    #[arg(long)]
    bench_feed: bool,
    /// Run the ARC-hit benchmark (polarc vs a mutex-sharded HashMap) instead.
    #[arg(long)]
    bench_hits: bool,
    /// Operations per thread for --bench-hits.
    #[arg(long, default_value_t = 2_000_000)]
    bench_ops: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polarc-perf: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), String> {
    if a.bench_hits {
        return bench_hits(&a);
    }
    if a.bench_feed {
        return bench_feed(&a);
    }
    let latency = match a.backing.split_once(':') {
        Some(("sim", lat)) => {
            Latency::Fixed(parse_duration(lat).map_err(|e| format!("--backing: {e}"))?)
        }
        _ => {
            return Err(format!(
                "--backing {:?}: expected sim:LATENCY, e.g. sim:5ms",
                a.backing
            ))
        }
    };
    if a.clients == 0 || a.queue_depth == 0 || a.keys == 0 {
        return Err("--clients, --queue-depth and --keys must be at least 1".into());
    }
    if a.compressibility.is_nan() || a.compressibility < 1.0 {
        return Err(format!(
            "--compressibility {} must be at least 1",
            a.compressibility
        ));
    }
    let value = usize::try_from(a.value_size).map_err(|_| "--value-size too large".to_string())?;
    let max_block = value.next_power_of_two().max(512);
    let store = SimStore::with_compressibility(latency, value, a.compressibility)
        .map_err(|e| e.to_string())?;
    let mut b = Engine::builder()
        .arc_capacity(a.arc)
        .max_block_size(max_block)
        .policy(if a.policy == "lru" {
            Policy::Lru
        } else {
            Policy::Arc
        })
        .idle(if a.idle == "busy" {
            IdleStrategy::Busy
        } else {
            IdleStrategy::Adaptive
        })
        .backing(store);
    if let Some(r) = a.reactors {
        b = b.reactors(r);
    }
    let mut notes = vec![];
    let mut l2_names = vec![];
    for spec in a.l2.iter().filter(|s| s.as_str() != "none") {
        let d = polarc_perf::devices::open(spec, !a.l2_buffered)?.expect("none was filtered out");
        notes.extend(d.note);
        let info = d.device.info();
        l2_names.push(format!("{} ({} MiB)", info.name, info.capacity >> 20));
        b = b.l2_device_arc(d.device);
    }
    let l2_feed_min = std::time::Duration::from_millis(50).min(a.l2_feed_interval);
    b = b.l2_config(polarc::L2Config {
        write_max: a.l2_write_max,
        write_boost: a.l2_write_boost,
        feed_interval: a.l2_feed_interval,
        feed_min_interval: l2_feed_min,
        compress: !a.l2_no_compress,
        mfuonly: a.l2_mfuonly,
        norw: a.l2_norw,
        ..polarc::L2Config::default()
    });
    let e = b.build().map_err(|e| e.to_string())?;
    let s0 = e.stats();
    if !s0.pool.hugepages {
        notes
            .push("buffer pool on normal pages (no 2 MiB hugepages; see env/setup.sh)".to_string());
    }
    if l2_names.is_empty() {
        notes.push("no L2 device (--l2 none)".into());
    }
    if !notes.is_empty() {
        println!("note: fell back to: {}", notes.join("; "));
    }
    println!(
        "polarc-perf: {} reactors, ARC {} MiB ({}), L2: {}, backing: {}",
        e.config().reactors,
        a.arc >> 20,
        a.policy,
        if l2_names.is_empty() {
            "none".to_string()
        } else {
            l2_names.join(", ")
        },
        e.backing_description()
    );
    println!(
        "workload: {} keys x {} B, {}, {} warm-up + {} measured read-throughs, {} clients x QD {}",
        a.keys,
        value,
        if a.zipf == 0.0 {
            "uniform".to_string()
        } else {
            format!("zipf {}", a.zipf)
        },
        a.warmup_ops,
        a.ops,
        a.clients,
        a.queue_depth
    );
    let w = workload::Workload {
        keys: a.keys,
        zipf: a.zipf,
        ops: a.ops,
        warmup_ops: a.warmup_ops,
        clients: a.clients,
        queue_depth: a.queue_depth,
        sequential_warmup: a.sequential_warmup,
        settle_l2: a.settle_l2,
    };
    let tty = std::io::stderr().is_terminal();
    let progress = |phase: &str, done: u64, total: u64| {
        let pct = 100.0 * done as f64 / total.max(1) as f64;
        if tty {
            eprint!("\r{phase}: {done}/{total} ({pct:.0}%)   ");
        } else {
            eprintln!("{phase}: {done}/{total} ({pct:.0}%)");
        }
    };
    let (r, stats) = if a.in_reactor {
        workload::run_in_reactor(&e, &w, &progress)?
    } else {
        workload::run(&e, &w, &progress)?
    };
    if tty {
        eprintln!();
    }
    e.shutdown().map_err(|e| e.to_string())?;
    print_report(&r, &stats);
    let lz4 = if a.lz4_compare {
        Some(lz4_compare(value, a.compressibility, &stats))
    } else {
        None
    };
    let fio = if a.fio_compare {
        Some(fio_compare(&a, &r, &stats)?)
    } else {
        None
    };
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "workload": w, "report": r, "stats": stats, "fio": fio, "lz4": lz4 });
        write_json(path, &doc)?;
    }
    Ok(())
}

fn bench_hits(a: &Args) -> Result<(), String> {
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
    let (jobs, remote) = hits::jobs(&b, threads).map_err(|e| e.to_string())?;
    let base_1 = hits::baseline(&b, 1);
    let (client, p50, p99) = hits::client(&b).map_err(|e| e.to_string())?;
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
        write_json(path, &doc)?;
    }
    Ok(())
}

/// Writes a report as pretty JSON to `path`, or to stdout for `-`.
fn write_json(path: &str, doc: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    if path == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text).map_err(|e| format!("--json {path}: {e}"))
    }
}

fn print_report(r: &workload::Report, s: &polarc::Stats) {
    let h = &r.hit_ratio;
    println!(
        "\nops/s {:.0}   hit ratio: overall {:.4}, ARC {:.4}, L2 {:.4}   errors {}",
        r.ops_per_sec, h.overall, h.arc, h.l2, r.errors
    );
    if let Some(c) = r.cpu_seconds_per_op {
        println!("CPU per op: {:.0} ns (user + sys, whole process)", c * 1e9);
    }
    println!(
        "{:<10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "latency", "count", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    let l = &r.latency_us;
    for (name, c) in [
        ("all", &l.all),
        ("ARC hit", &l.arc_hit),
        ("L2 hit", &l.l2_hit),
        ("miss", &l.miss),
    ] {
        println!(
            "{name:<10}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>12.1}",
            c.count, c.p50, c.p90, c.p99, c.p999, c.max
        );
    }
    println!(
        "ARC: target p {:.1} MiB, {:.1} B header/block; backing reads {}",
        s.sizes.p / (1 << 20) as f64,
        s.hdr_bytes_per_block,
        s.requests.backing_reads
    );
    if s.l2.l2_writes_sent > 0 || s.l2.l2_feeds > 0 {
        let l2 = &s.l2;
        let z = &s.l2_sizes;
        println!(
            "L2: {} MiB stored in {} MiB ({:.2}:1), {} blocks, {:.1} B DRAM per L2-only block",
            z.l2_size >> 20,
            z.l2_asize >> 20,
            z.l2_size as f64 / z.l2_asize.max(1) as f64,
            z.l2_blocks,
            s.l2_hdr_bytes_per_block
        );
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
}

/// Runs fio's io_uring 4K random read, O_DIRECT, on the L2 file at the
/// run's total queue depth, over the bytes L2 used, and compares.
fn fio_compare(
    a: &Args,
    r: &workload::Report,
    s: &polarc::Stats,
) -> Result<serde_json::Value, String> {
    let spec = a.l2.iter().find(|s| s.as_str() != "none");
    let path = match spec.and_then(|s| s.split_once(':')) {
        Some(("file", rest)) => rest
            .rsplit_once(':')
            .filter(|(_, sz)| parse_size(sz).is_ok())
            .map_or(rest, |(p, _)| p)
            .to_string(),
        Some(("uring", p)) => p.to_string(),
        _ => return Err("--fio-compare needs an --l2 file: or uring: device".into()),
    };
    let depth = if a.in_reactor {
        s.reactors.len() * a.queue_depth
    } else {
        a.clients * a.queue_depth
    };
    let size = s.l2.l2_write_bytes.max(64 << 20).next_multiple_of(1 << 20);
    let out = std::process::Command::new("fio")
        .args([
            "--name=l2",
            &format!("--filename={path}"),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            &format!("--iodepth={depth}"),
            &format!("--size={size}"),
            "--runtime=10",
            "--time_based",
            "--output-format=json",
        ])
        .output()
        .map_err(|e| {
            format!("--fio-compare: cannot run fio ({e}); install it (apt install fio)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "--fio-compare: fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("--fio-compare: fio's JSON: {e}"))?;
    let iops = v["jobs"][0]["read"]["iops"].as_f64().unwrap_or(0.0);
    let l2_ops = r.ops_per_sec * r.hit_ratio.l2;
    println!(
        "fio io_uring 4K randread, O_DIRECT, QD {depth} on {path}: {iops:.0} IOPS; polarc L2 hits {l2_ops:.0}/s (all ops {:.0}/s): ratio {:.2}",
        r.ops_per_sec,
        l2_ops / iops.max(1.0)
    );
    Ok(serde_json::json!({
        "fio_iops": iops, "depth": depth, "polarc_l2_hits_per_sec": l2_ops,
        "polarc_ops_per_sec": r.ops_per_sec, "ratio": l2_ops / iops.max(1.0),
    }))
}

/// Raw LZ4 block compression speed, one thread, on values like the
/// workload's (the feed's reference), against the measured feed speed.
fn lz4_compare(value: usize, ratio: f64, s: &polarc::Stats) -> serde_json::Value {
    let blocks: Vec<Vec<u8>> = (0..256u64)
        .map(|i| SimStore::content(&i.to_le_bytes(), value, ratio))
        .collect();
    let mut dst = vec![0u8; value + value / 255 + 16];
    let start = std::time::Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        for b in &blocks {
            let n = lz4::block::compress_to_buffer(b, None, false, &mut dst).unwrap_or(0);
            std::hint::black_box(n);
            bytes += b.len() as u64;
        }
    }
    let lz4 = bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    let feed = s.l2.l2_feed_bytes as f64 / (1 << 20) as f64 / (s.l2.l2_feed_ns.max(1) as f64 / 1e9);
    println!(
        "LZ4 raw compression on the same kind of values: {lz4:.0} MiB/s; L2 feed {feed:.0} MiB/s: ratio {:.2}",
        feed / lz4
    );
    serde_json::json!({ "lz4_mib_per_sec": lz4, "feed_mib_per_sec": feed, "ratio": feed / lz4 })
}

fn bench_feed(a: &Args) -> Result<(), String> {
    let value = usize::try_from(a.value_size).map_err(|_| "--value-size too large".to_string())?;
    let spec =
        a.l2.iter()
            .find(|s| s.as_str() != "none")
            .ok_or("--bench-feed needs an --l2 device")?;
    let dev = polarc_perf::devices::open(spec, !a.l2_buffered)?.expect("not none");
    let data = a.keys * value as u64;
    // Feeding starts 2 s after start-up: by then every block is inserted,
    // and the feeder runs alone.
    let e = Engine::builder()
        .reactors(1)
        .arc_capacity(data + data / 4)
        .max_block_size(value.next_power_of_two().max(512))
        .l2_device_arc(dev.device)
        .l2_config(polarc::L2Config {
            write_max: 1 << 40,
            write_boost: 0,
            feed_interval: std::time::Duration::from_secs(2),
            feed_min_interval: std::time::Duration::from_millis(1),
            compress: !a.l2_no_compress,
            writes_in_flight: 8,
            ..polarc::L2Config::default()
        })
        .build()
        .map_err(|e| e.to_string())?;
    let values: Vec<Vec<u8>> = (0..256u64)
        .map(|i| SimStore::content(&i.to_le_bytes(), value, a.compressibility))
        .collect();
    for k in 0..a.keys {
        e.insert(&polarc::index_key(k), &values[k as usize % values.len()])
            .map_err(|e| e.to_string())?;
    }
    let start = std::time::Instant::now();
    while e.stats().l2_sizes.l2_blocks < a.keys {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            return Err("the feeder did not copy every block within 120 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = e.stats();
    e.shutdown().map_err(|e| e.to_string())?;
    println!(
        "feed benchmark: {} values of {value} B ({}:1 compressible) to {}; {} MiB stored in {} MiB",
        a.keys,
        a.compressibility,
        spec,
        s.l2_sizes.l2_size >> 20,
        s.l2_sizes.l2_asize >> 20
    );
    let j = lz4_compare(value, a.compressibility, &s);
    if let Some(path) = &a.json {
        write_json(path, &serde_json::json!({ "feed": j, "stats": s }))?;
    }
    Ok(())
}
