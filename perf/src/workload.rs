//! Read-through workloads driven from client threads, each keeping a
//! fixed number of requests in flight through the engine's futures.

use polarc::{index_key, Engine, Source, Stats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A read-through workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Workload {
    /// Distinct keys, `index_key(0..keys)`.
    pub keys: u64,
    /// Zipf exponent θ; 0 means uniform.
    pub zipf: f64,
    /// Measured operations.
    pub ops: u64,
    /// Operations before measuring.
    pub warmup_ops: u64,
    /// Client threads.
    pub clients: usize,
    /// Requests in flight per client.
    pub queue_depth: usize,
    /// Read every key in order during warm-up (instead of the measured
    /// distribution), so that every key has been seen once.
    pub sequential_warmup: bool,
    /// After warm-up, wait until the L2 feeders have written what they
    /// could (the L2 block count stops growing).
    pub settle_l2: bool,
}

/// Hit ratios over the measured operations, by the tier that served them.
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
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
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
    /// Served by the ARC.
    pub arc_hit: Latency,
    /// Served by L2.
    pub l2_hit: Latency,
    /// Served by the backing store.
    pub miss: Latency,
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
    /// Hit ratios, from the tier each read reports ([`polarc::Block::source`]).
    pub hit_ratio: HitRatio,
    /// Latency percentiles per class.
    pub latency_us: Latencies,
    /// Operations that failed.
    pub errors: u64,
    /// CPU time (user + system, whole process) per measured operation, in
    /// seconds; `None` where /proc is not available.
    pub cpu_seconds_per_op: Option<f64>,
}

/// CPU seconds (user + system) this process has used, from /proc.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th and stime the 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some(ticks / 100.0)
}

type Hists = [hdrhistogram::Histogram<u64>; 3];

fn hists() -> Hists {
    std::array::from_fn(|_| hdrhistogram::Histogram::<u64>::new(3).expect("histogram"))
}

enum Keys {
    Uniform(u64),
    Zipf(rand_distr::Zipf<f64>),
}

impl Keys {
    fn new(w: &Workload) -> Result<Keys, String> {
        if w.zipf == 0.0 {
            return Ok(Keys::Uniform(w.keys));
        }
        rand_distr::Zipf::new(w.keys, w.zipf)
            .map(Keys::Zipf)
            .map_err(|e| format!("--zipf {}: {e}", w.zipf))
    }
    fn sample(&self, rng: &mut SmallRng) -> u64 {
        match self {
            Keys::Uniform(n) => rng.gen_range(0..*n),
            Keys::Zipf(z) => z.sample(rng) as u64 - 1,
        }
    }
}

struct ThreadWaker(std::thread::Thread);
impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `ops` read-throughs; returns (errors, latency histograms in ns
/// for ARC hits, L2 hits and misses).
fn phase(
    e: &Engine,
    w: &Workload,
    ops: u64,
    seed: u64,
    sequential: bool,
    progress: &dyn Fn(u64),
) -> Result<(u64, Hists), String> {
    let keys = std::sync::Arc::new(Keys::new(w)?);
    let per_client = ops.div_ceil(w.clients as u64);
    let (clients, nkeys) = (w.clients as u64, w.keys);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handles: Vec<_> = (0..w.clients)
        .map(|c| {
            let (e, keys, done) = (e.clone(), keys.clone(), done.clone());
            let qd = w.queue_depth.max(1);
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed + c as u64);
                let mut hist = hists();
                let mut errors = 0;
                // Park when nothing completed: spinning here would starve the
                // reactors and the store of the cores they need.
                let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
                let mut cx = Context::from_waker(&waker);
                let mut inflight: Vec<(Instant, polarc::OpFuture<polarc::Block>)> =
                    Vec::with_capacity(qd);
                let mut issued = 0;
                let mut completed = 0u64;
                while completed < per_client {
                    while issued < per_client && inflight.len() < qd {
                        let i = if sequential {
                            (c as u64 + issued * clients) % nkeys
                        } else {
                            keys.sample(&mut rng)
                        };
                        let k = index_key(i);
                        inflight.push((Instant::now(), e.read_async(&k)));
                        issued += 1;
                    }
                    let mut i = 0;
                    let before = completed;
                    while i < inflight.len() {
                        match Pin::new(&mut inflight[i].1).poll(&mut cx) {
                            Poll::Pending => i += 1,
                            Poll::Ready(r) => {
                                let (t, _) = inflight.swap_remove(i);
                                let ns = t.elapsed().as_nanos() as u64;
                                match r {
                                    Ok(b) => {
                                        let class = match b.source() {
                                            Source::Arc => 0,
                                            Source::L2 => 1,
                                            Source::Backing => 2,
                                        };
                                        let _ = hist[class].record(ns);
                                    }
                                    Err(_) => errors += 1,
                                }
                                completed += 1;
                                if completed % 4096 == 0 {
                                    done.fetch_add(4096, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    if completed == before {
                        std::thread::park_timeout(Duration::from_millis(1));
                    }
                }
                (errors, hist)
            })
        })
        .collect();
    let mut last = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= Duration::from_secs(1) {
            progress(done.load(std::sync::atomic::Ordering::Relaxed));
            last = Instant::now();
        }
    }
    let mut total = hists();
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
    Ok((errors, total))
}

/// Warms up, then measures.
pub fn run(
    e: &Engine,
    w: &Workload,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(Report, Stats), String> {
    if w.warmup_ops > 0 {
        phase(e, w, w.warmup_ops, 1, w.sequential_warmup, &|n| {
            progress("warm-up", n, w.warmup_ops)
        })?;
    }
    if w.settle_l2 {
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
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let (errors, hist) = phase(e, w, w.ops, 1_000_003, false, &|n| {
        progress("measure", n, w.ops)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let after = e.stats();
    let mut all = hists().into_iter().next().expect("one");
    for h in &hist {
        all.add(h).map_err(|e| e.to_string())?;
    }
    let ops = all.len() + errors;
    let share = |n: u64| if ops == 0 { 0.0 } else { n as f64 / ops as f64 };
    Ok((
        Report {
            ops,
            seconds,
            ops_per_sec: ops as f64 / seconds,
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
        },
        after,
    ))
}

/// Warms up from client threads, then measures with a job on every
/// reactor: uniform read-throughs, `queue_depth` in flight per reactor.
/// Per-class latency is not measured this way; hit ratios come from the
/// engine's counters.
pub fn run_in_reactor(
    e: &Engine,
    w: &Workload,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(Report, Stats), String> {
    let warm = Workload {
        ops: 0,
        ..w.clone()
    };
    run(e, &warm, progress)?;
    let before = e.stats();
    let cpu0 = cpu_seconds();
    let spec = polarc::JobSpec {
        keys: w.keys,
        ops_per_reactor: w.ops / before.reactors.len() as u64,
        queue_depth: w.queue_depth,
        op: polarc::JobOp::Read,
        seed: 7,
    };
    let reports = e.run_jobs(&spec).map_err(|e| e.to_string())?;
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let after = e.stats();
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let seconds = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    let arc = after.arc.hits - before.arc.hits;
    let l2 = after.l2.l2_hits - before.l2.l2_hits;
    let share = |n: u64| if ops == 0 { 0.0 } else { n as f64 / ops as f64 };
    Ok((
        Report {
            ops,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            hit_ratio: HitRatio {
                overall: share(arc + l2),
                arc: share(arc),
                l2: share(l2),
            },
            latency_us: Latencies::default(),
            errors,
            cpu_seconds_per_op: cpu.map(|c| c / ops.max(1) as f64),
        },
        after,
    ))
}
