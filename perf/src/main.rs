//! `polarc-perf`: runs a workload or replays a trace against polarc (or
//! foyer, side by side) and reports what it saw. With no arguments it runs
//! the embedded default; see `--help` and docs/perf-report.md.

use polarc::{Engine, Latency, SimStore};
use polarc_perf::cli::{self, Args, EngineKind};
use polarc_perf::procfs;
use polarc_perf::report::{Latencies, Report};
use polarc_perf::trace::{self, CsvOptions};
use polarc_perf::units::parse_duration;
use polarc_perf::workload::{self, Driver, Popularity, Workload};
use polarc_perf::{hits, plot, progress::Progress};
use std::process::ExitCode;
use std::sync::Arc;

#[cfg(feature = "compare-foyer")]
mod foyer_peer;

/// Size of the embedded default's L2 file.
const AUTO_L2: u64 = 512 << 20;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = match cli::parse() {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
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
    a.check().map_err(|e| e.to_string())?;
    if a.bench_feed {
        return bench_feed(&a);
    }
    if a.engine == EngineKind::Foyer {
        return run_foyer(&a);
    }
    // The L2 devices, and what they fell back to.
    let mut notes = vec![];
    let mut temp = None;
    let mut devices = vec![];
    let mut l2_names = vec![];
    // SPDK's transport IDs (--spdk-perf-compare), and local targets that
    // must outlive the engine.
    let mut trids: Vec<String> = vec![];
    let mut guards = vec![];
    let open_opts = open_options(&a);
    for spec in a.l2.iter().filter(|s| s.as_str() != "none") {
        let spec = if spec == "auto" {
            let dir = tempfile::Builder::new()
                .prefix("polarc-perf-")
                .tempdir()
                .map_err(|e| format!("--l2 auto: cannot create a temp directory: {e}"))?;
            let s = format!("file:{}:{}", dir.path().join("l2.img").display(), AUTO_L2);
            temp = Some(dir);
            s
        } else {
            spec.clone()
        };
        for d in polarc_perf::devices::open(&spec, &open_opts).map_err(|e| e.to_string())? {
            if let Some(n) = d.note {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            let info = d.device.info();
            l2_names.push(format!("{} ({} MiB)", info.name, info.capacity >> 20));
            devices.push(d.device);
            trids.extend(d.trid);
            guards.extend(d.guard);
        }
    }
    if devices.is_empty() {
        notes.push("no L2 device (--l2 none)".into());
    }
    // Trace replay or a synthetic workload.
    let (trace, max_value) = match &a.trace {
        Some(path) => {
            let o = CsvOptions {
                key_column: a.csv_key_column,
                size_column: a.csv_size_column,
                delimiter: a.csv_delimiter,
                header: a.csv_header,
                default_size: u32::try_from(a.value_size.max).unwrap_or(u32::MAX),
            };
            eprintln!("reading {} ...", path.display());
            let t = trace::read_all_with(path, a.trace_format, &o).map_err(|e| e.to_string())?;
            if t.is_empty() {
                return Err(format!("{}: the trace has no accesses", path.display()));
            }
            let max = t.iter().map(|x| x.size).max().unwrap_or(512) as usize;
            if max > 2 << 20 {
                return Err(format!(
                    "{}: an object of {max} B is larger than the engine's 2 MiB block limit",
                    path.display()
                ));
            }
            (Some(t), max)
        }
        None => (None, a.value_size.max),
    };
    let max_block = max_value.next_power_of_two().max(512);
    let sizes: Arc<std::sync::Mutex<std::collections::HashMap<u64, u32>>> = Arc::default();
    let mut b = Engine::builder()
        .arc_capacity(a.arc)
        .max_block_size(max_block)
        .policy(a.policy.into())
        .idle(a.idle.into())
        .l2_config(polarc::L2Config {
            write_max: a.l2_write_max,
            write_boost: a.l2_write_boost,
            feed_interval: a.l2_feed_interval,
            feed_min_interval: std::time::Duration::from_millis(50).min(a.l2_feed_interval),
            compress: !a.l2_no_compress,
            mfuonly: a.l2_mfuonly,
            norw: a.l2_norw,
            write_size: usize::try_from(a.l2_write_size).unwrap_or(usize::MAX),
            ..polarc::L2Config::default()
        });
    b = match &trace {
        Some(_) => {
            let (sizes, ratio) = (sizes.clone(), a.compressibility);
            let store = polarc::FnStore::new(2, move |key: &[u8]| {
                let id = u64::from_le_bytes(
                    key.try_into()
                        .map_err(|_| polarc::BackingError::Other("not a trace key".into()))?,
                );
                let size = *sizes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .unwrap_or(&512);
                Ok(SimStore::content(key, size as usize, ratio))
            })
            .map_err(|e| e.to_string())?;
            b.backing(store)
        }
        None => with_backing(b, &a)?,
    };
    if let Some(r) = a.reactors {
        b = b.reactors(r);
    }
    if let Some(p) = pool_capacity(&a) {
        b = b.pool_capacity(p);
    }
    if let Some(c) = &a.cores {
        b = b.cores(c.0.clone());
    }
    for d in devices {
        b = b.l2_device_arc(d);
    }
    let e = b.build().map_err(|e| e.to_string())?;
    let s0 = e.stats();
    if !s0.pool.hugepages {
        notes.push("buffer pool on normal pages (no 2 MiB hugepages; see env/setup.sh)".into());
    }
    if s0.pin_failures > 0 {
        notes.push(format!("{} reactors run unpinned", s0.pin_failures));
    }
    println!(
        "note: fell back to: {}",
        if notes.is_empty() {
            "nothing".to_string()
        } else {
            notes.join("; ")
        }
    );
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
    let progress = Progress::new();
    let w = a.workload();
    let (r, stats) = match &trace {
        Some(t) => {
            println!(
                "replay: {} ({:?}), {} accesses, in order, one at a time{}",
                a.trace.as_ref().expect("trace").display(),
                a.trace_format,
                t.len(),
                if e.config().reactors > 1 {
                    format!("; the ARC is sharded over {} reactors", e.config().reactors)
                } else {
                    String::new()
                }
            );
            workload::replay(&e, t, &sizes, a.timeline_interval, &|p, d, n| {
                progress.update(p, d, n)
            })
            .map_err(|e| e.to_string())?
        }
        None => {
            println!("workload: {}", describe(&w, &a));
            let driver = if a.in_reactor {
                Driver::InReactor
            } else {
                Driver::Clients
            };
            workload::run(&e, &w, driver, &|p, d, n| progress.update(p, d, n))
                .map_err(|e| e.to_string())?
        }
    };
    progress.finish();
    e.shutdown().map_err(|e| e.to_string())?;
    drop(temp);
    print_report(&r, &stats);
    let lz4 = a
        .lz4_compare
        .then(|| lz4_compare(a.value_size.max, a.compressibility, &stats));
    let fio = if a.fio_compare {
        Some(fio_compare(&a, &r, &stats)?)
    } else {
        None
    };
    let spdk_perf = if a.spdk_perf_compare {
        Some(spdk_perf_compare(&a, &r, &stats, &trids, &open_opts)?)
    } else {
        None
    };
    // The engine detaches its devices before a local target stops.
    drop(e);
    drop(guards);
    if let Some(path) = &a.plot {
        plot::draw(path, &r, "polarc").map_err(|e| format!("--plot {}: {e}", path.display()))?;
        println!("plot: {}", path.display());
    }
    if let Some(path) = &a.json {
        let doc = report_json(&a, &w, &r, &notes, &stats, [fio, lz4, spdk_perf]);
        write_json(path, &doc)?;
    }
    Ok(())
}

fn describe(w: &Workload, a: &Args) -> String {
    let pop = match w.popularity {
        Popularity::Uniform => "uniform".to_string(),
        Popularity::Zipf(t) => format!("zipf {t}"),
        Popularity::Hotspot { keys, share } => {
            format!(
                "hotspot: {:.0}% of keys get {:.0}% of ops",
                keys * 100.0,
                share * 100.0
            )
        }
    };
    let size = if a.value_size.min == a.value_size.max {
        format!("{} B", a.value_size.min)
    } else {
        format!("{}-{} B", a.value_size.min, a.value_size.max)
    };
    let scan = if w.scan_share > 0.0 {
        format!(" + {:.0}% sequential scan", w.scan_share * 100.0)
    } else {
        String::new()
    };
    let m = &w.mix;
    let amount = match w.duration {
        Some(d) => format!("{d:?} measured"),
        None => format!("{} measured", w.ops),
    };
    format!(
        "{} keys x {size}, {pop}{scan}; mix read {} / insert {} / invalidate {} / prefetch {}; {} warm-up + {amount}; {}",
        w.keys, m.read, m.insert, m.invalidate, m.prefetch, w.warmup_ops,
        if a.in_reactor {
            format!("in-reactor jobs, QD {} per reactor", w.queue_depth)
        } else {
            format!("{} clients x QD {}", w.clients, w.queue_depth)
        }
    )
}

fn with_backing(b: polarc::EngineBuilder, a: &Args) -> Result<polarc::EngineBuilder, String> {
    let bad = |why: String| format!("--backing {}: {why}", a.backing);
    let (min, max) = (a.value_size.min, a.value_size.max);
    match a.backing.split_once(':') {
        Some(("sim", lat)) => {
            let latency = match lat.split_once('-') {
                Some((x, y)) => {
                    let (x, y) = (
                        parse_duration(x).map_err(|e| bad(e.to_string()))?,
                        parse_duration(y).map_err(|e| bad(e.to_string()))?,
                    );
                    if x > y {
                        return Err(bad("the range is backwards".into()));
                    }
                    Latency::Uniform(x, y)
                }
                None => Latency::Fixed(parse_duration(lat).map_err(|e| bad(e.to_string()))?),
            };
            let s = SimStore::with_sizes(latency, min, max, a.compressibility)
                .map_err(|e| bad(e.to_string()))?;
            Ok(b.backing(s))
        }
        Some(("file", path)) => {
            if min != max {
                return Err(bad("a file store needs a fixed --value-size".into()));
            }
            let len = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .len();
            let keys = len / min as u64;
            if keys < a.keys {
                return Err(bad(format!(
                    "{len} B holds {keys} values of {min} B, fewer than --keys {}",
                    a.keys
                )));
            }
            let map: Arc<polarc::backing::KeyMap> = Arc::new(move |k: &[u8]| {
                let i = u64::from_le_bytes(k.try_into().ok()?);
                (i < keys).then_some((i * min as u64, min))
            });
            let s = polarc::FileStore::open(std::path::Path::new(path), 4, map)
                .map_err(|e| bad(e.to_string()))?;
            Ok(b.backing(s))
        }
        _ => Err(bad("expected sim:LATENCY, sim:MIN-MAX or file:PATH".into())),
    }
}

/// The JSON report (schema: docs/perf-report.md).
fn report_json(
    a: &Args,
    w: &Workload,
    r: &Report,
    notes: &[String],
    stats: &polarc::Stats,
    [fio, lz4, spdk_perf]: [Option<serde_json::Value>; 3],
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
        "latency_us": r.latency_us,
        "device": r.device,
        "compression_ratio": if z.l2_asize == 0 { serde_json::Value::Null } else { (z.l2_size as f64 / z.l2_asize as f64).into() },
        "cpu_seconds_per_op": r.cpu_seconds_per_op,
        "peak_rss_bytes": procfs::peak_rss_bytes(),
        "hdr_bytes_per_block": stats.hdr_bytes_per_block,
        "l2_hdr_bytes_per_block": stats.l2_hdr_bytes_per_block,
        "timeline": r.timeline,
        "stats": stats,
        "fio": fio,
        "lz4": lz4,
        "spdk_nvme_perf": spdk_perf,
    })
}

/// `--pool`, or for trace replay ARC × 3 + 64 MiB: with objects of many
/// sizes, slabs stay with the size classes that first took them.
fn pool_capacity(a: &Args) -> Option<u64> {
    a.pool
        .or_else(|| a.trace.is_some().then_some(a.arc * 3 + (64 << 20)))
}

/// How `--l2` devices are opened: I/O mode, and for SPDK the reactors'
/// cores and the DMA memory the buffer pool needs (plus room for SPDK).
fn open_options(a: &Args) -> polarc_perf::devices::OpenOptions {
    let n = a
        .reactors
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cores = match &a.cores {
        Some(c) => c.0.clone(),
        None => (0..n).collect(),
    };
    // The pool the engine will map (SPDK must provide it as DMA memory).
    let cfg = polarc::Config {
        arc_capacity: a.arc,
        pool_capacity: pool_capacity(a),
        max_block_size: a.value_size.max.next_power_of_two().max(512),
        l2: polarc::L2Config {
            write_size: usize::try_from(a.l2_write_size).unwrap_or(usize::MAX),
            ..polarc::L2Config::default()
        },
        ..polarc::Config::default()
    };
    let pool = cfg.pool_capacity_with_l2(a.l2.len());
    polarc_perf::devices::OpenOptions {
        direct: !a.l2_buffered,
        cores,
        dma_mb: u32::try_from((pool >> 20) + 256).unwrap_or(u32::MAX),
    }
}

/// Runs SPDK's spdk_nvme_perf on the run's SPDK device at its total queue
/// depth, on the first reactor's core, and compares L2-hit throughput.
#[cfg(feature = "spdk")]
fn spdk_perf_compare(
    a: &Args,
    r: &Report,
    s: &polarc::Stats,
    trids: &[String],
    o: &polarc_perf::devices::OpenOptions,
) -> Result<serde_json::Value, String> {
    let trid = trids
        .first()
        .ok_or("--spdk-perf-compare needs an --l2 spdk: device")?;
    let depth = total_depth(a, s);
    let core = o.cores[0];
    let iops = polarc_perf::spdk::nvme_perf(trid, depth, core).map_err(|e| e.to_string())?;
    let what = format!("spdk_nvme_perf 4K randread, QD {depth}, core {core}");
    let mut v = compare_l2_hits(&what, "spdk_nvme_perf_iops", iops, depth, r);
    v["core"] = core.into();
    Ok(v)
}

#[cfg(not(feature = "spdk"))]
fn spdk_perf_compare(
    _: &Args,
    _: &Report,
    _: &polarc::Stats,
    _: &[String],
    _: &polarc_perf::devices::OpenOptions,
) -> Result<serde_json::Value, String> {
    Err("--spdk-perf-compare: unsupported: this polarc-perf was built without SPDK (--features spdk)".into())
}

/// The latency table: one row per class, named by `names` (all, memory
/// tier hits, disk tier hits, misses). Both engines print it.
fn print_latencies(l: &Latencies, names: [&str; 4]) {
    println!(
        "{:<11}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
        "latency", "count", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    for (name, c) in names
        .into_iter()
        .zip([&l.all, &l.arc_hit, &l.l2_hit, &l.miss])
    {
        println!(
            "{name:<11}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>12.1}",
            c.count, c.p50, c.p90, c.p99, c.p999, c.max
        );
    }
}

fn print_report(r: &Report, s: &polarc::Stats) {
    let h = &r.hit_ratio;
    println!(
        "\nops/s {:.0}   hit ratio: overall {:.4}, ARC {:.4}, L2 {:.4}   errors {}",
        r.ops_per_sec, h.overall, h.arc, h.l2, r.errors
    );
    if let Some(c) = r.cpu_seconds_per_op {
        print!("CPU per op: {:.0} ns (user + sys, whole process)", c * 1e9);
    }
    if let Some(rss) = procfs::peak_rss_bytes() {
        print!("   peak RSS: {} MiB", rss >> 20);
    }
    println!();
    print_latencies(&r.latency_us, ["all", "ARC hit", "L2 hit", "miss"]);
    println!(
        "ARC: target p {:.1} MiB, {:.1} B header/block; backing reads {}",
        s.sizes.p / (1 << 20) as f64,
        s.hdr_bytes_per_block,
        s.requests.backing_reads
    );
    if s.l2.l2_writes_sent > 0 || s.l2.l2_feeds > 0 {
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

#[cfg(feature = "compare-foyer")]
fn run_foyer(a: &Args) -> Result<(), String> {
    foyer_peer::run(a)
}

#[cfg(not(feature = "compare-foyer"))]
fn run_foyer(_: &Args) -> Result<(), String> {
    Err("--engine foyer: unsupported in this build; rebuild with the cargo feature: cargo run --release -p polarc-perf --features compare-foyer -- --engine foyer".into())
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

/// Runs fio's io_uring 4K random read, O_DIRECT, on the L2 file at the
/// run's total queue depth, over the bytes L2 used, and compares.
fn fio_compare(a: &Args, r: &Report, s: &polarc::Stats) -> Result<serde_json::Value, String> {
    let spec = a.l2.iter().find(|s| s.as_str() != "none");
    let path = match spec.and_then(|s| s.split_once(':')) {
        Some(("file", rest)) => polarc_perf::devices::file_spec(rest).0.to_string(),
        Some(("uring", p)) => p.to_string(),
        _ => return Err("--fio-compare needs an --l2 file: or uring: device".into()),
    };
    let depth = total_depth(a, s);
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
    let what = format!("fio io_uring 4K randread, O_DIRECT, QD {depth} on {path}");
    Ok(compare_l2_hits(&what, "fio_iops", iops, depth, r))
}

/// Requests in flight over the whole run: jobs × depth, or clients × depth.
fn total_depth(a: &Args, s: &polarc::Stats) -> usize {
    if a.in_reactor {
        s.reactors.len() * a.queue_depth
    } else {
        a.clients * a.queue_depth
    }
}

/// Prints and returns polarc's L2 hits per second against a raw device
/// benchmark's IOPS (`what` names it; `key` is its JSON field).
fn compare_l2_hits(
    what: &str,
    key: &str,
    iops: f64,
    depth: usize,
    r: &Report,
) -> serde_json::Value {
    let l2_ops = r.ops_per_sec * r.hit_ratio.l2;
    let ratio = l2_ops / iops.max(1.0);
    println!(
        "{what}: {iops:.0} IOPS; polarc L2 hits {l2_ops:.0}/s (all ops {:.0}/s): ratio {ratio:.2}",
        r.ops_per_sec
    );
    let mut v = serde_json::json!({
        "depth": depth, "polarc_l2_hits_per_sec": l2_ops,
        "polarc_ops_per_sec": r.ops_per_sec, "ratio": ratio,
    });
    v[key] = iops.into();
    v
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
    let value = a.value_size.max;
    let spec =
        a.l2.iter()
            .find(|s| !matches!(s.as_str(), "none" | "auto"))
            .ok_or("--bench-feed needs an --l2 device, e.g. --l2 file:/var/tmp/f.img:2GiB")?;
    let mut opened =
        polarc_perf::devices::open(spec, &open_options(a)).map_err(|e| e.to_string())?;
    let dev = opened.remove(0);
    // A local target (spdk:nvmf:) lives until the benchmark is over.
    let _guard = dev.guard;
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
