//! Workloads driven from client threads, each keeping a fixed number of
//! requests in flight through the engine's futures; in-reactor jobs; and
//! trace replay.

use crate::trace::Access;
use polarc::{index_key, Block, Engine, OpFuture, Source, Stats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Which keys a workload asks for.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Popularity {
    /// Uniform over all keys.
    Uniform,
    /// Zipf with exponent θ.
    Zipf(f64),
    /// A fraction of the keys gets a share of the operations.
    Hotspot {
        /// Fraction of the keys that are hot.
        keys: f64,
        /// Share of the operations they get.
        share: f64,
    },
}

/// Shares of each operation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct OpMix {
    /// Read-through.
    pub read: f64,
    /// Insert (the value is generated like the store's).
    pub insert: f64,
    /// Invalidate.
    pub invalidate: f64,
    /// Prefetch.
    pub prefetch: f64,
}

/// A synthetic workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Workload {
    /// Distinct keys, `index_key(0..keys)`.
    pub keys: u64,
    /// Key popularity.
    pub popularity: Popularity,
    /// Share of operations taken from a sequential scan over the keys.
    pub scan_share: f64,
    /// Operation mix.
    pub mix: OpMix,
    /// Value sizes (smallest, largest), for inserts.
    pub value_size: (usize, usize),
    /// Compressibility of inserted values.
    pub compressibility: f64,
    /// Measured operations (when `duration` is not set).
    pub ops: u64,
    /// Measure for this long instead.
    pub duration: Option<Duration>,
    /// Operations before measuring.
    pub warmup_ops: u64,
    /// Client threads.
    pub clients: usize,
    /// Requests in flight per client.
    pub queue_depth: usize,
    /// Read every key in order during warm-up.
    pub sequential_warmup: bool,
    /// After warm-up, wait until the L2 feeders have written what they could.
    pub settle_l2: bool,
    /// Timeline interval.
    pub timeline_interval: Duration,
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
}

/// Latency percentiles of one class, in µs.
#[derive(Debug, Default, serde::Serialize)]
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

/// Latency per class of operation.
#[derive(Debug, Default, serde::Serialize)]
pub struct Latencies {
    /// Every operation.
    pub all: Latency,
    /// Reads served by the ARC.
    pub arc_hit: Latency,
    /// Reads served by L2.
    pub l2_hit: Latency,
    /// Reads served by the backing store.
    pub miss: Latency,
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
    /// Latency CDF per class (µs, quantile), for plots.
    #[serde(skip)]
    pub cdf: Vec<(&'static str, Vec<(f64, f64)>)>,
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
        Device {
            reads: r,
            read_bytes: b.l2.l2_read_bytes - a.l2.l2_read_bytes,
            read_iops: r as f64 / s,
            writes: w,
            write_bytes: b.l2.l2_write_bytes - a.l2.l2_write_bytes,
            write_iops: w as f64 / s,
        }
    }
}

/// CPU seconds (user + system) this process has used, from /proc.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces): utime is the 14th
    // field and stime the 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some(ticks / 100.0)
}

/// Peak resident set size of this process, from /proc.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

type Hist = hdrhistogram::Histogram<u64>;

fn new_hist() -> Hist {
    Hist::new(3).expect("histogram")
}

/// Classes of completed operations: ARC hit, L2 hit, miss, other op.
const CLASSES: usize = 4;

/// Counters the clients bump and the progress loop samples.
#[derive(Default)]
struct Live {
    done: [AtomicU64; CLASSES],
}

impl Live {
    fn snapshot(&self) -> [u64; CLASSES] {
        std::array::from_fn(|i| self.done[i].load(Relaxed))
    }
}

enum Keys {
    Uniform(u64),
    Zipf(rand_distr::Zipf<f64>),
    Hotspot { n: u64, hot: u64, share: f64 },
}

impl Keys {
    fn new(w: &Workload) -> Result<Keys, String> {
        let n = w.keys.max(1);
        Ok(match w.popularity {
            Popularity::Uniform | Popularity::Zipf(0.0) => Keys::Uniform(n),
            Popularity::Zipf(t) => rand_distr::Zipf::new(n, t)
                .map(Keys::Zipf)
                .map_err(|e| format!("--zipf {t}: {e}"))?,
            Popularity::Hotspot { keys, share } => Keys::Hotspot {
                n,
                hot: ((n as f64 * keys) as u64).clamp(1, n),
                share,
            },
        })
    }
    fn sample(&self, rng: &mut SmallRng) -> u64 {
        match self {
            Keys::Uniform(n) => rng.gen_range(0..*n),
            Keys::Zipf(z) => z.sample(rng) as u64 - 1,
            Keys::Hotspot { n, hot, share } => {
                if rng.gen_bool(*share) || hot == n {
                    rng.gen_range(0..*hot)
                } else {
                    rng.gen_range(*hot..*n)
                }
            }
        }
    }
}

/// Samples keys with a workload's popularity (for peers driven outside
/// this module, e.g. foyer).
pub struct KeySampler(Keys);

impl std::fmt::Debug for KeySampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySampler")
    }
}

impl KeySampler {
    /// A sampler for `w`'s keys.
    pub fn new(w: &Workload) -> Result<KeySampler, String> {
        Keys::new(w).map(KeySampler)
    }
    /// The next key index.
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        self.0.sample(rng)
    }
}

struct ThreadWaker(std::thread::Thread);
impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

enum Pending {
    Read(OpFuture<Block>),
    Other(OpFuture<()>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Random,
    Sequential,
}

/// What each client's next key and operation are.
struct Plan {
    keys: Arc<Keys>,
    w: Workload,
    kind: Kind,
}

impl Plan {
    fn next(&self, rng: &mut SmallRng, client: u64, issued: u64) -> (u64, u8) {
        let clients = self.w.clients as u64;
        if self.kind == Kind::Sequential {
            return ((client + issued * clients) % self.w.keys.max(1), 0);
        }
        let key = if self.w.scan_share > 0.0 && rng.gen_bool(self.w.scan_share.min(1.0)) {
            (client + issued * clients) % self.w.keys.max(1)
        } else {
            self.keys.sample(rng)
        };
        let m = &self.w.mix;
        let total = m.read + m.insert + m.invalidate + m.prefetch;
        let x = rng.gen_range(0.0..total);
        let op = if x < m.read {
            0
        } else if x < m.read + m.insert {
            1
        } else if x < m.read + m.insert + m.invalidate {
            2
        } else {
            3
        };
        (key, op)
    }
}

/// When a phase stops.
#[derive(Clone, Copy)]
enum Until {
    Ops(u64),
    Time(Instant),
}

/// Runs one phase from client threads. Returns (errors, histograms of
/// ARC hits, L2 hits, misses and other ops in ns, timeline).
fn phase(
    e: &Engine,
    plan: Plan,
    until: Until,
    seed: u64,
    progress: &dyn Fn(u64),
    tick: Option<Duration>,
) -> Result<(u64, [Hist; CLASSES], Vec<Tick>), String> {
    let plan = Arc::new(plan);
    let live = Arc::new(Live::default());
    let handles: Vec<_> = (0..plan.w.clients)
        .map(|c| {
            let (e, plan, live) = (e.clone(), plan.clone(), live.clone());
            std::thread::spawn(move || {
                let w = &plan.w;
                let per_client = match until {
                    Until::Ops(n) => n.div_ceil(w.clients as u64),
                    Until::Time(_) => u64::MAX,
                };
                let deadline = match until {
                    Until::Time(t) => Some(t),
                    Until::Ops(_) => None,
                };
                let mut rng = SmallRng::seed_from_u64(seed + c as u64);
                let mut hist: [Hist; CLASSES] = std::array::from_fn(|_| new_hist());
                let mut errors = 0;
                // Park when nothing completed: spinning here would starve the
                // reactors and the store of the cores they need.
                let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
                let mut cx = Context::from_waker(&waker);
                let qd = w.queue_depth.max(1);
                let mut inflight: Vec<(Instant, Pending)> = Vec::with_capacity(qd);
                let mut issued = 0u64;
                let mut completed = 0u64;
                let mut stop = false;
                let mut idle = 0u32;
                while !(stop || issued == per_client) || !inflight.is_empty() {
                    if let Some(d) = deadline {
                        stop |= Instant::now() >= d;
                    }
                    while !stop && issued < per_client && inflight.len() < qd {
                        let (i, op) = plan.next(&mut rng, c as u64, issued);
                        let k = index_key(i);
                        let p = match op {
                            0 => Pending::Read(e.read_async(&k)),
                            1 => {
                                let (lo, hi) = w.value_size;
                                let len = polarc::SimStore::size_of(&k, lo, hi);
                                let v = polarc::SimStore::content(&k, len, w.compressibility);
                                Pending::Other(e.insert_async(&k, &v))
                            }
                            2 => Pending::Other(e.invalidate_async(&k)),
                            _ => Pending::Other(e.prefetch_async(&k)),
                        };
                        inflight.push((Instant::now(), p));
                        issued += 1;
                    }
                    let mut i = 0;
                    let before = completed;
                    while i < inflight.len() {
                        let class = match &mut inflight[i].1 {
                            Pending::Read(f) => match Pin::new(f).poll(&mut cx) {
                                Poll::Pending => None,
                                Poll::Ready(Ok(b)) => Some(Some(match b.source() {
                                    Source::Arc => 0,
                                    Source::L2 => 1,
                                    Source::Backing => 2,
                                })),
                                Poll::Ready(Err(_)) => Some(None),
                            },
                            Pending::Other(f) => match Pin::new(f).poll(&mut cx) {
                                Poll::Pending => None,
                                Poll::Ready(Ok(())) => Some(Some(3)),
                                Poll::Ready(Err(_)) => Some(None),
                            },
                        };
                        match class {
                            None => i += 1,
                            Some(class) => {
                                let (t, _) = inflight.swap_remove(i);
                                completed += 1;
                                match class {
                                    Some(c) => {
                                        let _ = hist[c].record(t.elapsed().as_nanos() as u64);
                                        live.done[c].fetch_add(1, Relaxed);
                                    }
                                    None => errors += 1,
                                }
                            }
                        }
                    }
                    if completed == before && !inflight.is_empty() {
                        idle += 1;
                        if idle < 16 {
                            std::thread::yield_now();
                        } else {
                            std::thread::park_timeout(Duration::from_millis(1));
                        }
                    } else {
                        idle = 0;
                    }
                }
                (errors, hist)
            })
        })
        .collect();
    let start = Instant::now();
    let mut last_tick = (start, live.snapshot());
    let mut timeline = vec![];
    let mut last_progress = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now - last_progress >= Duration::from_millis(250) {
            progress(live.snapshot().iter().sum());
            last_progress = now;
        }
        if let Some(iv) = tick {
            if now - last_tick.0 >= iv {
                let snap = live.snapshot();
                timeline.push(make_tick(start, last_tick, (now, snap)));
                last_tick = (now, snap);
            }
        }
    }
    if tick.is_some() {
        let now = Instant::now();
        let snap = live.snapshot();
        if snap.iter().sum::<u64>() > last_tick.1.iter().sum::<u64>() {
            timeline.push(make_tick(start, last_tick, (now, snap)));
        }
    }
    progress(live.snapshot().iter().sum());
    let mut total: [Hist; CLASSES] = std::array::from_fn(|_| new_hist());
    let mut errors = 0;
    for h in handles {
        let (e, hist) = h
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        errors += e;
        for (t, h) in total.iter_mut().zip(hist) {
            t.add(h).map_err(|e| e.to_string())?;
        }
    }
    Ok((errors, total, timeline))
}

fn make_tick(
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
    }
}

/// Waits until the L2 block count stops growing.
fn settle(e: &Engine, w: &Workload, progress: &dyn Fn(&str, u64, u64)) {
    let mut last = e.stats().l2_sizes.l2_blocks;
    let mut still = 0;
    while still < 5 {
        std::thread::sleep(Duration::from_millis(200));
        let now = e.stats().l2_sizes.l2_blocks;
        still = if now == last { still + 1 } else { 0 };
        last = now;
        progress("settle L2", now, w.keys);
    }
}

/// Builds a report from per-class latency histograms (ns): ARC (memory)
/// hits, L2 (disk) hits, misses, other operations. Operations are the
/// recorded ones plus `errors`.
pub fn report_from(
    hist: &[Hist; CLASSES],
    errors: u64,
    seconds: f64,
    cpu: Option<f64>,
    timeline: Vec<Tick>,
) -> Result<Report, String> {
    let mut all = new_hist();
    for h in hist {
        all.add(h).map_err(|e| e.to_string())?;
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
        },
        latency_us: Latencies {
            all: Latency::of(&all),
            arc_hit: Latency::of(&hist[0]),
            l2_hit: Latency::of(&hist[1]),
            miss: Latency::of(&hist[2]),
        },
        errors,
        cpu_seconds_per_op: cpu.map(|c| c / ops.max(1) as f64),
        timeline,
        device: Device::default(),
        cdf: vec![
            ("ARC hit", cdf(&hist[0])),
            ("L2 hit", cdf(&hist[1])),
            ("miss", cdf(&hist[2])),
        ],
    })
}

fn warm_up(e: &Engine, w: &Workload, progress: &dyn Fn(&str, u64, u64)) -> Result<(), String> {
    if w.warmup_ops > 0 {
        let kind = if w.sequential_warmup {
            Kind::Sequential
        } else {
            Kind::Random
        };
        let plan = Plan {
            keys: Arc::new(Keys::new(w)?),
            w: w.clone(),
            kind,
        };
        phase(
            e,
            plan,
            Until::Ops(w.warmup_ops),
            1,
            &|n| progress("warm-up", n, w.warmup_ops),
            None,
        )?;
    }
    if w.settle_l2 {
        settle(e, w, progress);
    }
    Ok(())
}

/// What a measured phase starts from: engine counters, wall time, CPU.
struct Measure {
    before: Stats,
    start: Instant,
    cpu0: Option<f64>,
}

impl Measure {
    fn begin(e: &Engine) -> Measure {
        Measure {
            before: e.stats(),
            start: Instant::now(),
            cpu0: cpu_seconds(),
        }
    }

    /// The report of the phase, from its histograms; `seconds` overrides
    /// the wall time since `begin` (jobs time themselves).
    fn finish(
        self,
        e: &Engine,
        hist: &[Hist; CLASSES],
        errors: u64,
        timeline: Vec<Tick>,
        seconds: Option<f64>,
    ) -> Result<(Report, Stats), String> {
        let seconds = seconds.unwrap_or_else(|| self.start.elapsed().as_secs_f64());
        let cpu = cpu_seconds().zip(self.cpu0).map(|(b, a)| b - a);
        let after = e.stats();
        let mut r = report_from(hist, errors, seconds, cpu, timeline)?;
        r.device = Device::between(&self.before, &after, seconds);
        Ok((r, after))
    }
}

/// Warms up, then measures.
pub fn run(
    e: &Engine,
    w: &Workload,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(Report, Stats), String> {
    warm_up(e, w, progress)?;
    let plan = Plan {
        keys: Arc::new(Keys::new(w)?),
        w: w.clone(),
        kind: Kind::Random,
    };
    let m = Measure::begin(e);
    let start = m.start;
    let (until, total) = match w.duration {
        Some(d) => (Until::Time(start + d), d.as_millis() as u64),
        None => (Until::Ops(w.ops), w.ops),
    };
    let timed = w.duration.is_some();
    let (errors, hist, timeline) = phase(
        e,
        plan,
        until,
        1_000_003,
        &|n| {
            if timed {
                progress("measure (ms)", start.elapsed().as_millis() as u64, total)
            } else {
                progress("measure", n, total)
            }
        },
        Some(w.timeline_interval),
    )?;
    m.finish(e, &hist, errors, timeline, None)
}

/// Warms up from client threads, then measures with a job on every
/// reactor (as bdevperf does): read-throughs with the workload's zipf or
/// uniform keys, `queue_depth` in flight per reactor, latency per class.
pub fn run_in_reactor(
    e: &Engine,
    w: &Workload,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(Report, Stats), String> {
    warm_up(e, w, progress)?;
    let m = Measure::begin(e);
    let spec = polarc::JobSpec {
        keys: w.keys,
        zipf: match w.popularity {
            Popularity::Zipf(t) => t,
            _ => 0.0,
        },
        latency: true,
        ops_per_reactor: w.ops / m.before.reactors.len() as u64,
        queue_depth: w.queue_depth,
        op: polarc::JobOp::Read,
        seed: 7,
    };
    progress("measure (in-reactor jobs)", 0, w.ops);
    let reports = e.run_jobs(&spec).map_err(|e| e.to_string())?;
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    progress("measure (in-reactor jobs)", ops, w.ops);
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let seconds = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    let mut hist: [Hist; CLASSES] = std::array::from_fn(|_| new_hist());
    for r in &reports {
        if let Some(l) = &r.latency {
            for (a, b) in hist.iter_mut().zip(l.iter()) {
                a.add(b).map_err(|e| e.to_string())?;
            }
        }
    }
    // Every read the jobs completed has its latency recorded, so the
    // report's count (recorded + errors) is the jobs' count.
    m.finish(e, &hist, errors, vec![], Some(seconds))
}

/// Replays a trace in order, one request at a time (so that hit ratios
/// are exactly the policy's on that sequence): the key of an access is
/// its id as 8 bytes, and `sizes` tells the backing store each object's
/// current size.
pub fn replay(
    e: &Engine,
    trace: &[Access],
    sizes: &std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    interval: Duration,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(Report, Stats), String> {
    let mut hist: [Hist; CLASSES] = std::array::from_fn(|_| new_hist());
    let mut errors = 0u64;
    let m = Measure::begin(e);
    let start = m.start;
    let mut timeline = vec![];
    let mut counts = [0u64; CLASSES];
    let mut last = (start, counts);
    let total = trace.len() as u64;
    for (n, a) in trace.iter().enumerate() {
        sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a.id, a.size);
        let t = Instant::now();
        match e.read(&a.id.to_le_bytes()) {
            Ok(b) => {
                let c = match b.source() {
                    Source::Arc => 0,
                    Source::L2 => 1,
                    Source::Backing => 2,
                };
                let _ = hist[c].record(t.elapsed().as_nanos() as u64);
                counts[c] += 1;
            }
            Err(_) => errors += 1,
        }
        if n % 4096 == 0 {
            let now = Instant::now();
            if now - last.0 >= interval {
                timeline.push(make_tick(start, last, (now, counts)));
                last = (now, counts);
                progress("replay", n as u64, total);
            }
        }
    }
    timeline.push(make_tick(start, last, (Instant::now(), counts)));
    progress("replay", total, total);
    m.finish(e, &hist, errors, timeline, None)
}
