//! Report types: what a run measured, built from per-class latency histograms.

use hdrhistogram::errors::AdditionError;
use polarc::{Source, Stats};
use std::time::Instant;

/// A latency histogram, in ns.
pub type Hist = hdrhistogram::Histogram<u64>;

/// Classes of completed operations, in histogram order: ARC (memory) hit,
/// L2 (disk) hit, miss, other operation.
pub const CLASSES: usize = 4;

/// One histogram per class.
pub type Histograms = [Hist; CLASSES];

/// An empty histogram.
pub fn hist() -> Hist {
    Hist::new(3).expect("histogram")
}

/// Empty histograms, one per class.
pub fn histograms() -> Histograms {
    std::array::from_fn(|_| hist())
}

/// The class of a read served by `source`.
pub fn class_of(source: Source) -> usize {
    match source {
        Source::Arc => 0,
        Source::L2 => 1,
        Source::Backing => 2,
    }
}

/// Hit ratios over the measured reads, by the tier that served them.
#[derive(Debug, Default, serde::Serialize)]
pub struct HitRatio {
    /// Served by the ARC or L2.
    pub overall: f64,
    /// Served by the ARC.
    pub arc: f64,
    /// Served by L2.
    pub l2: f64,
    /// Served by the ARC or L2, over the reads of the first 10% of the
    /// measured operations: how warm the cache was at first (after a
    /// restart, what the L2's rebuild brought back).
    pub first_10pct: Option<f64>,
}

/// What the L2 devices' rebuild brought back at start-up.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rebuild {
    /// Entries the shards took.
    pub entries: u64,
    /// Their logical bytes.
    pub bytes: u64,
    /// Wall time from the engine's start (its reactors start the
    /// rebuilds) until every entry was applied by its shard.
    pub seconds: f64,
    /// `entries / seconds`.
    pub entries_per_sec: f64,
    /// Log blocks taken.
    pub log_blocks: u64,
    /// Bytes of log read.
    pub log_bytes: u64,
    /// Log read throughput of the rebuilds themselves (device time).
    pub log_read_mib_per_sec: f64,
    /// Devices rebuilt.
    pub devices: u64,
}

impl Rebuild {
    /// From the engine's counters after the rebuild, `seconds` after
    /// start-up.
    pub fn of(s: &Stats, seconds: f64) -> Rebuild {
        let l2 = &s.l2;
        let device_s = l2.l2_rebuild_ns as f64 / 1e9;
        Rebuild {
            entries: l2.l2_rebuild_kept,
            bytes: l2.l2_rebuild_size,
            seconds,
            entries_per_sec: l2.l2_rebuild_kept as f64 / seconds.max(1e-9),
            log_blocks: l2.l2_rebuild_log_blks,
            log_bytes: l2.l2_rebuild_log_bytes,
            log_read_mib_per_sec: l2.l2_rebuild_log_bytes as f64
                / (1 << 20) as f64
                / device_s.max(1e-9),
            devices: l2.l2_rebuild_success,
        }
    }
}

/// Latency percentiles of one class, in µs.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Latency {
    /// Operations in the class.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    fn of(h: &Hist) -> Latency {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// Parts of a client read's latency (`--breakdown`), in order.
pub const PARTS: usize = 4;

/// Per read class (ARC hit, L2 hit, miss), one histogram per part.
pub type PartHistograms = [[Hist; PARTS]; 3];

/// Empty part histograms.
pub fn part_histograms() -> PartHistograms {
    std::array::from_fn(|_| std::array::from_fn(|_| hist()))
}

/// Where a client read's time went (`--breakdown`, client threads), from
/// the client's clock and the reactor's stamps (`polarc::Block::timing`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Parts {
    /// From the intended start to the issue: the client thread was not
    /// running, or was at its queue depth (open loop; 0 in a closed loop).
    pub late: Latency,
    /// From the issue until the reactor took the request from its ring:
    /// the ring's queue and the reactor's wake-up.
    pub to_reactor: Latency,
    /// The reactor's service: taking to answering, with the L2 read or the
    /// store's read of a miss.
    pub service: Latency,
    /// From the answer until the client saw it: the client's wake-up and
    /// its turn among the operations it polls.
    pub to_client: Latency,
}

/// [`Parts`] per read class.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Breakdown {
    /// Reads served by the ARC.
    pub arc_hit: Parts,
    /// Reads served by L2.
    pub l2_hit: Parts,
    /// Reads served by the backing store.
    pub miss: Parts,
}

impl Breakdown {
    /// The percentiles of part histograms.
    pub fn of(h: &PartHistograms) -> Breakdown {
        let parts = |c: &[Hist; PARTS]| Parts {
            late: Latency::of(&c[0]),
            to_reactor: Latency::of(&c[1]),
            service: Latency::of(&c[2]),
            to_client: Latency::of(&c[3]),
        };
        Breakdown {
            arc_hit: parts(&h[0]),
            l2_hit: parts(&h[1]),
            miss: parts(&h[2]),
        }
    }
}

/// Latency per class of operation.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Latencies {
    /// Every operation.
    pub all: Latency,
    /// Reads served by the ARC.
    pub arc_hit: Latency,
    /// Reads served by L2.
    pub l2_hit: Latency,
    /// Reads served by the backing store.
    pub miss: Latency,
    /// Other operations: inserts, invalidations, prefetches.
    pub other: Latency,
}

/// One interval of the timeline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Tick {
    /// Seconds since the measured phase started (end of the interval).
    pub t: f64,
    /// Throughput over the interval.
    pub ops_per_sec: f64,
    /// Reads served by the ARC or L2, over reads, in the interval.
    pub hit_ratio: f64,
    /// Of which by L2.
    pub l2_hit_ratio: f64,
    /// Resident set size of the process at the end of the interval
    /// (VmRSS); `None` where /proc is not available.
    pub rss_bytes: Option<u64>,
}

impl Tick {
    /// The interval between two snapshots of the operations completed per
    /// class, for a phase that started at `start`, with the RSS now.
    pub fn between(
        start: Instant,
        (t0, a): (Instant, [u64; CLASSES]),
        (t1, b): (Instant, [u64; CLASSES]),
    ) -> Tick {
        let d: [u64; CLASSES] = std::array::from_fn(|i| b[i] - a[i]);
        let reads = d[0] + d[1] + d[2];
        let ratio = |n: u64| {
            if reads == 0 {
                0.0
            } else {
                n as f64 / reads as f64
            }
        };
        Tick {
            t: (t1 - start).as_secs_f64(),
            ops_per_sec: d.iter().sum::<u64>() as f64 / (t1 - t0).as_secs_f64().max(1e-9),
            hit_ratio: ratio(d[0] + d[1]),
            l2_hit_ratio: ratio(d[1]),
            rss_bytes: crate::procfs::rss_bytes(),
        }
    }
}

/// An open-loop run's rate: what was asked for and what was done.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rate {
    /// Operations per second asked for (`--rate`).
    pub target: f64,
    /// Operations per second done over the measured part.
    pub achieved: f64,
    /// The engine kept up: it did at least [`KEPT_UP`] of the target rate.
    pub kept_up: bool,
    /// Operations issued more than 50 µs after their intended start: the
    /// generator was at --queue-depth, or (client threads) was not
    /// scheduled in time. Their latency counts the wait.
    pub issued_late: u64,
}

/// The share of the target rate an engine that keeps up achieves.
pub const KEPT_UP: f64 = 0.95;

impl Rate {
    pub fn new(target: f64, achieved: f64, issued_late: u64) -> Rate {
        Rate {
            target,
            achieved,
            kept_up: achieved >= KEPT_UP * target,
            issued_late,
        }
    }
}

/// The read class whose p99 a rate sweep holds to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SweepClass {
    All,
    ArcHit,
    L2Hit,
    Miss,
}

impl SweepClass {
    /// This class's latency in `l`.
    pub fn of(self, l: &Latencies) -> &Latency {
        match self {
            SweepClass::All => &l.all,
            SweepClass::ArcHit => &l.arc_hit,
            SweepClass::L2Hit => &l.l2_hit,
            SweepClass::Miss => &l.miss,
        }
    }
}

/// One open-loop run of a rate sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepPoint {
    pub rate: Rate,
    pub latency_us: Latencies,
}

/// A rate sweep: open-loop runs at shares of the closed-loop throughput.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sweep {
    /// The read class held to the target, and its p99 target in µs.
    pub class: SweepClass,
    pub p99_target_us: f64,
    /// The closed-loop run's throughput, which the rates are shares of.
    pub closed_loop_ops_per_sec: f64,
    /// The highest rate kept up with at a p99 within the target; `None`
    /// when no rate met it.
    pub max_rate: Option<f64>,
    pub points: Vec<SweepPoint>,
}

/// What a run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Measured operations.
    pub ops: u64,
    /// Wall time of the measured part.
    pub seconds: f64,
    /// Throughput.
    pub ops_per_sec: f64,
    /// Hit ratios of reads, from the tier each read reports
    /// ([`polarc::Block::source`]).
    pub hit_ratio: HitRatio,
    /// Latency percentiles per class.
    pub latency_us: Latencies,
    /// Operations that failed.
    pub errors: u64,
    /// CPU time (user + system, whole process) per measured operation, in
    /// seconds; `None` where /proc is not available.
    pub cpu_seconds_per_op: Option<f64>,
    /// Hit ratio and throughput per interval.
    pub timeline: Vec<Tick>,
    /// L2 device traffic over the measured part.
    pub device: Device,
    /// Open loop (`--rate`): the rate asked for and kept; `None` (JSON
    /// `null`) for a closed loop, whose latency is mostly queueing.
    pub rate: Option<Rate>,
    /// `--rate-sweep`: latency against load, and the highest rate that met
    /// the p99 target.
    pub sweep: Option<Sweep>,
    /// `--breakdown`: where client reads' time went; `None` otherwise.
    pub breakdown: Option<Breakdown>,
    /// Latency CDF per class (µs, quantile), for plots.
    #[serde(skip)]
    pub cdf: Vec<(&'static str, Vec<(f64, f64)>)>,
}

impl Report {
    /// A report from per-class latency histograms (ns). Operations are the
    /// recorded ones plus `errors`; `cpu` is the CPU seconds they took.
    /// `first` counts the reads of the first 10% of the operations per
    /// class, where the driver kept them.
    pub fn from_histograms(
        hist: &Histograms,
        errors: u64,
        seconds: f64,
        cpu: Option<f64>,
        timeline: Vec<Tick>,
        first: Option<[u64; CLASSES]>,
    ) -> Result<Report, AdditionError> {
        let mut all = self::hist();
        for h in hist {
            all.add(h)?;
        }
        let ops = all.len() + errors;
        let reads = hist[0].len() + hist[1].len() + hist[2].len();
        let share = |n: u64| {
            if reads == 0 {
                0.0
            } else {
                n as f64 / reads as f64
            }
        };
        let cdf = |h: &Hist| -> Vec<(f64, f64)> {
            if h.is_empty() {
                return vec![];
            }
            (0..=200)
                .map(|i| {
                    let q = 1.0 - 0.5f64.powf(i as f64 / 20.0);
                    (h.value_at_quantile(q) as f64 / 1000.0, q)
                })
                .collect()
        };
        Ok(Report {
            ops,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            hit_ratio: HitRatio {
                overall: share(hist[0].len() + hist[1].len()),
                arc: share(hist[0].len()),
                l2: share(hist[1].len()),
                first_10pct: first.and_then(|f| {
                    let reads = f[0] + f[1] + f[2];
                    (reads > 0).then(|| (f[0] + f[1]) as f64 / reads as f64)
                }),
            },
            latency_us: Latencies {
                all: Latency::of(&all),
                arc_hit: Latency::of(&hist[0]),
                l2_hit: Latency::of(&hist[1]),
                miss: Latency::of(&hist[2]),
                other: Latency::of(&hist[3]),
            },
            errors,
            cpu_seconds_per_op: cpu.map(|c| c / ops.max(1) as f64),
            timeline,
            device: Device::default(),
            rate: None,
            sweep: None,
            breakdown: None,
            cdf: vec![
                ("ARC hit", cdf(&hist[0])),
                ("L2 hit", cdf(&hist[1])),
                ("miss", cdf(&hist[2])),
            ],
        })
    }
}

/// L2 device traffic over the measured part, summed over devices.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Device {
    /// Reads (L2 hits, and reads that failed or did not verify).
    pub reads: u64,
    /// Stored bytes read.
    pub read_bytes: u64,
    /// Reads per second.
    pub read_iops: f64,
    /// Feed writes completed.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Writes per second.
    pub write_iops: f64,
    /// Every byte written to the devices: feed writes (data and padding),
    /// log blocks and headers.
    pub device_write_bytes: u64,
    /// `device_write_bytes` per second.
    pub device_write_bytes_per_sec: f64,
    /// Bytes of blocks as stored (compressed) in those feed writes.
    pub stored_bytes: u64,
    /// `device_write_bytes / stored_bytes`; 0 when nothing was stored.
    pub write_amplification: f64,
    /// The `dwpd` budget in bytes per second (`--l2-dwpd` × the data
    /// rings' capacity / 86,400), if one was set.
    pub dwpd_budget_bytes_per_sec: Option<f64>,
    /// `device_write_bytes_per_sec` over that budget.
    pub of_dwpd_budget: Option<f64>,
}

impl Device {
    /// The traffic between two snapshots taken `seconds` apart.
    pub fn between(a: &Stats, b: &Stats, seconds: f64) -> Device {
        let reads = |s: &Stats| s.l2.l2_hits + s.l2.l2_cksum_bad + s.l2.l2_io_error;
        let (r, w) = (
            reads(b) - reads(a),
            b.l2.l2_writes_done - a.l2.l2_writes_done,
        );
        let s = seconds.max(1e-9);
        let dev = b.l2.l2_dev_write_bytes - a.l2.l2_dev_write_bytes;
        let stored = b.l2.l2_stored_bytes - a.l2.l2_stored_bytes;
        Device {
            reads: r,
            read_bytes: b.l2.l2_read_bytes - a.l2.l2_read_bytes,
            read_iops: r as f64 / s,
            writes: w,
            write_bytes: b.l2.l2_write_bytes - a.l2.l2_write_bytes,
            write_iops: w as f64 / s,
            device_write_bytes: dev,
            device_write_bytes_per_sec: dev as f64 / s,
            stored_bytes: stored,
            write_amplification: if stored == 0 {
                0.0
            } else {
                dev as f64 / stored as f64
            },
            dwpd_budget_bytes_per_sec: None,
            of_dwpd_budget: None,
        }
    }

    /// Sets the `dwpd` budget of devices whose data rings hold `capacity`
    /// bytes, and this run's writes against it.
    pub fn with_dwpd(mut self, dwpd: Option<f64>, capacity: u64) -> Device {
        if let Some(d) = dwpd.filter(|_| capacity > 0) {
            let budget = d * capacity as f64 / 86_400.0;
            self.dwpd_budget_bytes_per_sec = Some(budget);
            self.of_dwpd_budget = Some(self.device_write_bytes_per_sec / budget);
        }
        self
    }
}
