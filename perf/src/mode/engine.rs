//! What run and replay share: the L2 devices, the engine, and what follows the measured run.

use super::{compare, output};
use crate::error::Error;
use polarc::backing::SimFaultCounters;
use polarc::device::faulty::{FaultCounters, FaultyDevice};
use polarc::device::BlockDevice;
use polarc::{Engine, EngineBuilder, Stats};
use polarc_perf::cli::Args;
use polarc_perf::devices::{self, OpenError, OpenOptions, SpecError};
use polarc_perf::plot;
use polarc_perf::report::{Rebuild, Report};
use polarc_perf::soak::Soak;
use polarc_perf::verify::Verifier;
use polarc_perf::workload::{Totals, Workload};
use std::sync::Arc;
use std::time::Duration;

/// Size of the embedded default's L2 file.
pub const AUTO_L2: u64 = 512 << 20;

/// A run's L2 devices, what they fell back to, and what must outlive them.
pub struct L2 {
    /// How they were opened.
    open: OpenOptions,
    /// The devices, until the engine takes them.
    devices: Vec<Arc<dyn BlockDevice>>,
    /// Their names and sizes, for the header.
    names: Vec<String>,
    /// What the run fell back to.
    notes: Vec<String>,
    /// SPDK's transport IDs (--spdk-perf-compare).
    trids: Vec<String>,
    /// Local targets, which must outlive the engine.
    guards: Vec<Box<dyn std::any::Any + Send>>,
    /// `--l2 auto`'s directory.
    temp: Option<tempfile::TempDir>,
    /// What the devices' rebuild brought back at start-up.
    pub rebuild: Option<Rebuild>,
    /// What `--faults` injected, per device.
    faults: Vec<Arc<FaultCounters>>,
}

impl L2 {
    /// Opens `--l2`'s devices; `auto` is an io_uring file in a new temp
    /// directory.
    pub fn open(a: &Args) -> Result<L2, Error> {
        let mut l2 = L2 {
            open: open_options(a)?,
            devices: vec![],
            names: vec![],
            notes: vec![],
            trids: vec![],
            guards: vec![],
            temp: None,
            rebuild: None,
            faults: vec![],
        };
        for spec in a.l2.iter().filter(|s| s.as_str() != "none") {
            let spec = if spec == "auto" {
                let dir = tempfile::Builder::new()
                    .prefix("polarc-perf-")
                    .tempdir()
                    .map_err(Error::TempDir)?;
                let s = format!("file:{}:{}", dir.path().join("l2.img").display(), AUTO_L2);
                l2.temp = Some(dir);
                s
            } else {
                spec.clone()
            };
            for d in devices::open(&spec, &l2.open)? {
                if let Some(n) = d.note {
                    l2.note(n);
                }
                let device = match &a.faults {
                    Some(f) => {
                        let faulty = FaultyDevice::new(d.device, f.config(l2.devices.len()))
                            .map_err(|e| OpenError {
                                spec: spec.clone(),
                                source: SpecError::Device(e),
                            })?;
                        l2.faults.push(faulty.counters());
                        Arc::new(faulty)
                    }
                    None => d.device,
                };
                let info = device.info();
                l2.names
                    .push(format!("{} ({} MiB)", info.name, info.capacity >> 20));
                l2.devices.push(device);
                l2.trids.extend(d.trid);
                l2.guards.extend(d.guard);
            }
        }
        if l2.devices.is_empty() {
            l2.note("no L2 device (--l2 none)".into());
        }
        Ok(l2)
    }

    pub(super) fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }
}

/// A builder with the options every polarc run shares, for values of up
/// to `max_value` bytes; the mode adds the backing store.
pub fn builder(a: &Args, max_value: usize) -> EngineBuilder {
    let defaults = polarc::L2Config::default();
    let mut b = Engine::builder()
        .arc_capacity(a.arc)
        .max_block_size(max_value.next_power_of_two().max(512))
        .policy(a.policy.into())
        .idle(a.idle.into())
        .l2_config(polarc::L2Config {
            write_max: a.l2_write_max,
            dwpd: a.l2_dwpd,
            trim_ahead: a.l2_trim_ahead,
            write_boost: a.l2_write_boost,
            feed_interval: a.l2_feed_interval,
            feed_min_interval: std::time::Duration::from_millis(50).min(a.l2_feed_interval),
            compress: !a.l2_no_compress,
            mfuonly: a.l2_mfuonly,
            norw: a.l2_norw,
            persistent: !a.l2_no_persist,
            // --verify: what a device holds was written against another
            // run's versions.
            start: if a.l2_overwrite {
                polarc::l2::L2Start::Overwrite
            } else if a.l2_fresh || a.verify {
                polarc::l2::L2Start::Fresh
            } else {
                polarc::l2::L2Start::Resume
            },
            write_size: usize::try_from(a.l2_write_size).unwrap_or(usize::MAX),
            read_deadline: a.l2_read_deadline.unwrap_or(defaults.read_deadline),
            write_deadline: a.l2_write_deadline.unwrap_or(defaults.write_deadline),
            poll_budget: a.l2_poll_budget.unwrap_or(defaults.poll_budget),
            ..defaults
        });
    if a.breakdown {
        b = b.timing(true);
    }
    if let Some(d) = a.spin_before_park {
        b = b.spin_before_park(d);
    }
    if let Some(d) = a.backing_timeout {
        b = b.backing_timeout(d);
    }
    if let Some(d) = a.shutdown_timeout {
        b = b.shutdown_timeout(d);
    }
    b
}

/// The hang limit of a run on `e`: `--hang-limit`, else the backing
/// timeout + the L2 write deadline + 10 s, the longest an operation should
/// wait on an engine that works.
pub fn hang_limit(a: &Args, e: &Engine) -> Duration {
    a.hang_limit.unwrap_or_else(|| {
        let c = e.config();
        c.backing_timeout
            .saturating_add(c.l2.write_deadline)
            .saturating_add(Duration::from_secs(10))
    })
}

/// What a run hands [`finish`] for its soak figures.
#[derive(Debug)]
pub struct SoakRun {
    /// The clients' operations over every phase.
    pub totals: Totals,
    /// `--hang-limit` as applied.
    pub hang_limit: Duration,
    /// `--verify`'s checker.
    pub verify: Option<Arc<Verifier>>,
    /// What `--backing-faults` injected.
    pub backing_faults: Option<Arc<SimFaultCounters>>,
}

/// Builds the engine on `l2`'s devices, and prints what the run fell
/// back to and what it runs on.
pub fn build(a: &Args, mut b: EngineBuilder, l2: &mut L2) -> Result<Engine, Error> {
    if let Some(r) = a.reactors {
        b = b.reactors(r);
    }
    if let Some(p) = a.pool_capacity()? {
        b = b.pool_capacity(p);
    }
    if let Some(c) = &a.cores {
        b = b.cores(c.0.clone());
    }
    let with_l2 = !l2.devices.is_empty();
    for d in l2.devices.drain(..) {
        b = b.l2_device_arc(d);
    }
    let e = b.build()?;
    if with_l2 {
        l2.rebuild = wait_for_rebuild(&e)?;
    }
    let s0 = e.stats();
    if !s0.pool.hugepages {
        l2.notes
            .push("buffer pool on normal pages (no 2 MiB hugepages; see env/setup.sh)".into());
    }
    if s0.pin_failures > 0 {
        l2.notes
            .push(format!("{} reactors run unpinned", s0.pin_failures));
    }
    println!("note: fell back to: {}", list(&l2.notes, "nothing", "; "));
    println!(
        "polarc-perf: {} reactors, ARC {} MiB ({}), L2: {}, backing: {}",
        e.config().reactors,
        a.arc >> 20,
        a.policy,
        list(&l2.names, "none", ", "),
        e.backing_description()
    );
    Ok(e)
}

/// Waits until the L2 devices' rebuilds are over (measurements start on
/// what they brought back); `None` when no device had a log to rebuild.
/// The rebuilds start with the reactors; their time runs from the engine's
/// start to the snapshot that shows every entry applied by its shard.
fn wait_for_rebuild(e: &Engine) -> Result<Option<Rebuild>, Error> {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
    let started = std::time::Instant::now();
    let mut s = e.stats();
    while s.l2_rebuilding > 0 {
        if started.elapsed() > LIMIT {
            return Err(Error::RebuildTooLong(LIMIT));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        s = e.stats();
    }
    if s.l2.l2_rebuild_success == 0 {
        return Ok(None);
    }
    // Once more: the shards apply what the rebuilds sent in order.
    let s = e.stats();
    let r = Rebuild::of(&s, started.elapsed().as_secs_f64());
    println!(
        "L2 rebuild: {} entries ({} MiB) from {} log blocks ({} MiB) in {:.3} s: {:.0} entries/s; log read at {:.0} MiB/s",
        r.entries,
        r.bytes >> 20,
        r.log_blocks,
        r.log_bytes >> 20,
        r.seconds,
        r.entries_per_sec,
        r.log_read_mib_per_sec
    );
    Ok(Some(r))
}

/// `items` joined with `sep`, or `empty`.
fn list(items: &[String], empty: &str, sep: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(sep)
    }
}

/// After the measured run: shuts the engine down, prints the report, runs
/// the comparisons asked for, draws the plot and writes the JSON report.
/// Fails, after all that, if an operation hung or `--verify` found a
/// wrong byte.
pub fn finish(
    a: &Args,
    w: &Workload,
    e: Engine,
    l2: L2,
    r: &Report,
    stats: &Stats,
    run: SoakRun,
) -> Result<(), Error> {
    e.shutdown()?;
    // The final figures, once the engine is quiet.
    let last = e.stats();
    let L2 {
        open,
        notes,
        trids,
        guards,
        temp,
        rebuild,
        faults,
        ..
    } = l2;
    drop(temp);
    output::print_report(r, stats);
    let verify = run.verify.as_ref().map(|v| v.summary());
    let soak = Soak::of(
        &run.totals,
        &last,
        verify.as_ref().map(|v| v.wrong),
        &r.timeline,
    );
    let injected = output::faults_json(a, &faults, run.backing_faults.as_deref());
    if a.verify || a.faults.is_some() || a.backing_faults.is_some() {
        output::print_soak(&soak, verify.as_ref(), &injected);
    }
    let comparisons = compare::after_run(a, r, stats, &trids, &open);
    // The engine detaches its devices before a local target stops.
    drop(e);
    drop(guards);
    let comparisons = comparisons?;
    if let Some(path) = &a.plot {
        plot::draw(path, r, "polarc").map_err(|source| Error::Plot {
            path: path.clone(),
            source,
        })?;
        println!("plot: {}", path.display());
    }
    if let Some(path) = &a.json {
        let mut doc = output::report_json(a, w, r, &notes, stats, comparisons, rebuild.as_ref());
        doc["verify"] = serde_json::to_value(&verify)?;
        doc["faults"] = injected;
        doc["soak"] = serde_json::to_value(&soak)?;
        output::write_json(path, &doc)?;
    }
    if soak.hung_ops > 0 {
        return Err(Error::Hung {
            ops: soak.hung_ops,
            limit: run.hang_limit,
        });
    }
    match verify {
        Some(v) if v.wrong > 0 => Err(Error::Wrong(v.wrong)),
        _ => Ok(()),
    }
}

/// How `--l2` devices are opened: I/O mode, and for SPDK the reactors'
/// cores and the DMA memory the buffer pool needs (plus room for SPDK).
pub fn open_options(a: &Args) -> Result<OpenOptions, Error> {
    // At most MAX_REACTORS (Args::check).
    let n = a
        .reactors
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cores = match &a.cores {
        Some(c) => c.0.clone(),
        None => (0..n).collect(),
    };
    // The pool the engine will map (SPDK must provide it as DMA memory).
    let pool = a.mapped_pool()?;
    Ok(OpenOptions {
        direct: !a.l2_buffered,
        cores,
        dma_mb: u32::try_from((pool >> 20) + 256).unwrap_or(u32::MAX),
    })
}
