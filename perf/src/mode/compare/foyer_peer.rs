//! foyer side by side (`--engine foyer`, cargo feature `compare-foyer`).

use crate::error::Error;
use crate::mode::{engine::AUTO_L2, output};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FileDeviceBuilder, HybridCache, HybridCacheBuilder,
    IoEngineConfig, PsyncIoEngineConfig, Source, UringIoEngineConfig,
};
use hdrhistogram::errors::AdditionError;
use polarc::{BackingStore, Latency, ReadDone, SimStore};
use polarc_perf::cli::{ArgError, Args};
use polarc_perf::report::{histograms, Histograms, Report, Tick};
use polarc_perf::units::{parse_duration, UnitError};
use polarc_perf::workload::KeySampler;
use polarc_perf::{devices, plot, procfs};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// foyer could not run the workload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The `--backing sim:` latency does not parse.
    #[error(transparent)]
    Latency(#[from] UnitError),
    /// The temp directory, the store or the runtime could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// foyer failed.
    #[error(transparent)]
    Foyer(#[from] foyer::Error),
    /// A task panicked.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// Latency histograms could not be merged.
    #[error(transparent)]
    Histogram(#[from] AdditionError),
    /// `--plot` failed.
    #[error("--plot: {0}")]
    Plot(#[source] plot::Error),
}

/// Runs the workload of `a` through foyer's `HybridCache` with a
/// file-backed block engine, with the same key stream, the same simulated
/// backing store (the engine's `SimStore`) and the same memory and disk
/// capacities, and prints and writes the report.
///
/// foyer 0.22's `with_compression` has no effect, so foyer runs without
/// compression; the report says so. Each read copies the value out, as
/// polarc's in-reactor jobs do.
pub fn run(a: &Args) -> Result<(), Error> {
    if a.trace.is_some() || a.in_reactor {
        return Err(ArgError::FoyerSyntheticOnly.into());
    }
    let spec =
        a.l2.iter()
            .find(|s| s.as_str() != "none")
            .ok_or(ArgError::FoyerNeedsDisk)?;
    let mut temp = None;
    let (path, cap) = match spec.split_once(':') {
        _ if spec == "auto" => {
            let dir = tempfile::tempdir().map_err(PeerError::from)?;
            let p = dir.path().join("foyer.img");
            temp = Some(dir);
            (p, AUTO_L2)
        }
        Some(("file", rest)) => match devices::file_spec(rest) {
            (p, Some(size)) => (p.into(), size),
            (_, None) => return Err(ArgError::FoyerNeedsSize(spec.clone()).into()),
        },
        _ => return Err(ArgError::FoyerDevice(spec.clone()).into()),
    };
    let latency = match a.backing.split_once(':') {
        Some(("sim", lat)) => Latency::Fixed(parse_duration(lat).map_err(PeerError::from)?),
        _ => return Err(ArgError::FoyerBacking.into()),
    };
    let (min, max) = (a.value_size.min, a.value_size.max);
    let store = Arc::new(
        SimStore::with_sizes(latency, min, max, a.compressibility).map_err(PeerError::from)?,
    );
    let threads = a
        .reactors
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(PeerError::from)?;
    let direct = !a.l2_buffered;
    let depth = a.client_depth()?;
    let w = a.workload();
    let sampler = Arc::new(KeySampler::new(&w)?);
    let io = std::env::var("POLARC_FOYER_IO").unwrap_or_else(|_| "uring".into());
    println!(
        "foyer 0.22 HybridCache: memory {} MiB, disk {} MiB on {} ({}, {} I/O engine, no compression: foyer 0.22's with_compression has no effect), {threads} runtime threads",
        a.arc >> 20,
        cap >> 20,
        path.display(),
        if direct { "O_DIRECT" } else { "buffered" },
        io
    );
    let (report, disk) = rt.block_on(async {
        let device = FileDeviceBuilder::new(&path)
            .with_capacity(cap as usize)
            .with_direct(direct)
            .build()?;
        let io_config: Box<dyn IoEngineConfig> = if io == "psync" {
            Box::new(PsyncIoEngineConfig::new())
        } else {
            Box::new(UringIoEngineConfig::new())
        };
        let cache: HybridCache<u64, Vec<u8>> = HybridCacheBuilder::new()
            .memory(a.arc as usize)
            .with_weighter(|_k: &u64, v: &Vec<u8>| v.len() + 8)
            .storage()
            .with_io_engine_config(io_config)
            .with_engine_config(BlockEngineConfig::new(device))
            .build()
            .await?;
        let cache = Arc::new(cache);
        phase(&cache, &store, &sampler, depth, w.warmup_ops, 1, "warm-up").await?;
        let cpu0 = procfs::cpu_seconds();
        let start = Instant::now();
        let (hist, errors, timeline) =
            phase(&cache, &store, &sampler, depth, w.ops, 1_000_003, "measure").await?;
        let seconds = start.elapsed().as_secs_f64();
        let cpu = procfs::cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
        let st = cache.statistics();
        let disk = serde_json::json!({
            "disk_read_ios": st.disk_read_ios(), "disk_read_bytes": st.disk_read_bytes(),
            "disk_write_ios": st.disk_write_ios(), "disk_write_bytes": st.disk_write_bytes(),
        });
        let r = Report::from_histograms(&hist, errors, seconds, cpu, timeline, None)?;
        cache.close().await?;
        Ok::<_, PeerError>((r, disk))
    })?;
    drop(temp);
    let h = &report.hit_ratio;
    println!(
        "\nfoyer: ops/s {:.0}   hit ratio: overall {:.4}, memory {:.4}, disk {:.4}   errors {}",
        report.ops_per_sec, h.overall, h.arc, h.l2, report.errors
    );
    output::print_latencies(
        &report.latency_us,
        ["all", "memory hit", "disk hit", "miss", "other ops"],
    );
    if let Some(p) = &a.plot {
        plot::draw(p, &report, "foyer").map_err(PeerError::Plot)?;
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "engine": "foyer 0.22",
            "notes": ["foyer runs without compression: its 0.22 with_compression has no effect"],
            "workload": w, "ops": report.ops, "seconds": report.seconds,
            "ops_per_sec": report.ops_per_sec, "errors": report.errors,
            "hit_ratio": report.hit_ratio, "latency_us": report.latency_us,
            "device": disk, "cpu_seconds_per_op": report.cpu_seconds_per_op,
            "peak_rss_bytes": procfs::peak_rss_bytes(), "timeline": report.timeline,
        });
        output::write_json(path, &doc)?;
    }
    Ok(())
}

/// `ops` read-throughs from `depth` tasks; histograms per source.
async fn phase(
    cache: &Arc<HybridCache<u64, Vec<u8>>>,
    store: &Arc<SimStore>,
    sampler: &Arc<KeySampler>,
    depth: usize,
    ops: u64,
    seed: u64,
    name: &str,
) -> Result<(Histograms, u64, Vec<Tick>), PeerError> {
    let done = Arc::new(AtomicU64::new(0));
    let per_task = ops.div_ceil(depth as u64);
    let mut tasks = vec![];
    for t in 0..depth {
        let (cache, store, sampler, done) =
            (cache.clone(), store.clone(), sampler.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed * 7919 + t as u64);
            let mut hist = histograms();
            let mut errors = 0u64;
            let mut scratch = vec![0u8; 2 << 20];
            for _ in 0..per_task {
                let k = sampler.sample(&mut rng);
                let start = Instant::now();
                let store = store.clone();
                let r = cache
                    .get_or_fetch(&k, move || async move {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        store.read(
                            &polarc::index_key(k),
                            ReadDone::new(move |r| {
                                let _ = tx.send(r);
                            }),
                        );
                        match rx.await {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                            Err(_) => Err(std::io::Error::other("store dropped the read")),
                        }
                    })
                    .await;
                match r {
                    Ok(e) => {
                        // Consume the value, as polarc's jobs do.
                        let v = e.value();
                        scratch[..v.len()].copy_from_slice(v);
                        std::hint::black_box(&scratch);
                        let class = match e.source() {
                            Source::Memory => 0,
                            Source::Disk => 1,
                            Source::Outer => 2,
                        };
                        let _ = hist[class].record(start.elapsed().as_nanos() as u64);
                    }
                    Err(_) => errors += 1,
                }
                done.fetch_add(1, Relaxed);
            }
            (hist, errors)
        }));
    }
    let start = Instant::now();
    let mut timeline = vec![];
    let mut last = 0u64;
    let mut last_t = start;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = done.load(Relaxed);
        if last_t.elapsed() >= Duration::from_secs(1) {
            eprintln!("foyer {name}: {n}/{ops}");
            timeline.push(Tick {
                t: start.elapsed().as_secs_f64(),
                ops_per_sec: (n - last) as f64 / last_t.elapsed().as_secs_f64(),
                hit_ratio: 0.0,
                l2_hit_ratio: 0.0,
                rss_bytes: procfs::rss_bytes(),
            });
            last = n;
            last_t = Instant::now();
        }
    }
    let mut total = histograms();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        errors += e;
        for (a, b) in total.iter_mut().zip(h) {
            a.add(b)?;
        }
    }
    Ok((total, errors, timeline))
}
