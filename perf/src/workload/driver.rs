//! The driver: warm-up and measured phases from clients or in-reactor jobs; trace replay.

use super::{Error, KeySampler, Op, Popularity, Workload};
use crate::procfs::cpu_seconds;
use crate::report::{class_of, histograms, Device, Histograms, Report, Tick, CLASSES};
use crate::trace::Access;
use polarc::{index_key, Block, Engine, OpFuture, Stats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reports progress: phase, done, total.
pub type OnProgress<'a> = &'a dyn Fn(&str, u64, u64);

/// How the measured phase is driven (warm-up always runs from clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Client threads, each keeping a fixed number of requests in flight
    /// through the engine's futures.
    Clients,
    /// A job on every reactor (as bdevperf does): read-throughs with the
    /// workload's zipf or uniform keys, `queue_depth` in flight per
    /// reactor, latency per class.
    InReactor,
}

/// Warms up from client threads, then measures with `driver`.
pub fn run(
    e: &Engine,
    w: &Workload,
    driver: Driver,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats), Error> {
    warm_up(e, w, progress)?;
    match driver {
        Driver::Clients => measure_clients(e, w, progress),
        Driver::InReactor => measure_in_reactor(e, w, progress),
    }
}

/// Replays a trace in order, one request at a time (so that hit ratios
/// are exactly the policy's on that sequence): the key of an access is
/// its id as 8 bytes, and `sizes` tells the backing store each object's
/// current size.
pub fn replay(
    e: &Engine,
    trace: &[Access],
    sizes: &Mutex<std::collections::HashMap<u64, u32>>,
    interval: Duration,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats), Error> {
    let mut hist = histograms();
    let mut errors = 0u64;
    let m = Measure::begin(e);
    let start = m.start;
    let mut timeline = vec![];
    let mut counts = [0u64; CLASSES];
    let mut last = (start, counts);
    let total = trace.len() as u64;
    let mut first = None;
    for (n, a) in trace.iter().enumerate() {
        if n as u64 == total / 10 {
            first = Some(counts);
        }
        sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a.id, a.size);
        let t = Instant::now();
        match e.read(&a.id.to_le_bytes()) {
            Ok(b) => {
                let c = class_of(b.source());
                let _ = hist[c].record(t.elapsed().as_nanos() as u64);
                counts[c] += 1;
            }
            Err(_) => errors += 1,
        }
        if n % 4096 == 0 {
            let now = Instant::now();
            if now - last.0 >= interval {
                timeline.push(Tick::between(start, last, (now, counts)));
                last = (now, counts);
                progress("replay", n as u64, total);
            }
        }
    }
    timeline.push(Tick::between(start, last, (Instant::now(), counts)));
    progress("replay", total, total);
    m.finish(e, &hist, errors, timeline, None, first)
}

fn warm_up(e: &Engine, w: &Workload, progress: OnProgress<'_>) -> Result<(), Error> {
    if w.warmup_ops > 0 {
        let kind = if w.sequential_warmup {
            Kind::Sequential
        } else {
            Kind::Random
        };
        let _ = phase(
            e,
            Plan::new(w, kind)?,
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

/// Waits until the L2 block count stops growing.
fn settle(e: &Engine, w: &Workload, progress: OnProgress<'_>) {
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

fn measure_clients(
    e: &Engine,
    w: &Workload,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats), Error> {
    let plan = Plan::new(w, Kind::Random)?;
    let m = Measure::begin(e);
    let start = m.start;
    let (until, total) = match w.duration {
        Some(d) => (
            Until::Time(start.checked_add(d).ok_or(Error::Duration(d))?),
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        ),
        None => (Until::Ops(w.ops), w.ops),
    };
    let timed = w.duration.is_some();
    let (errors, hist, timeline, first) = phase(
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
    m.finish(e, &hist, errors, timeline, None, Some(first))
}

fn measure_in_reactor(
    e: &Engine,
    w: &Workload,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats), Error> {
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
        rate: None,
        arrivals: Default::default(),
    };
    progress("measure (in-reactor jobs)", 0, w.ops);
    let reports = e.run_jobs(&spec)?;
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    progress("measure (in-reactor jobs)", ops, w.ops);
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let seconds = reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    let mut hist = histograms();
    for r in &reports {
        if let Some(l) = &r.latency {
            for (a, b) in hist.iter_mut().zip(l.iter()) {
                a.add(b)?;
            }
        }
    }
    let mut first = [0u64; CLASSES];
    for r in &reports {
        for (f, n) in first.iter_mut().zip(r.first_tenth) {
            *f += n;
        }
    }
    // Every read the jobs completed has its latency recorded, so the
    // report's count (recorded + errors) is the jobs' count.
    m.finish(e, &hist, errors, vec![], Some(seconds), Some(first))
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
        hist: &Histograms,
        errors: u64,
        timeline: Vec<Tick>,
        seconds: Option<f64>,
        first: Option<[u64; CLASSES]>,
    ) -> Result<(Report, Stats), Error> {
        let seconds = seconds.unwrap_or_else(|| self.start.elapsed().as_secs_f64());
        let cpu = cpu_seconds().zip(self.cpu0).map(|(b, a)| b - a);
        let after = e.stats();
        let mut r = Report::from_histograms(hist, errors, seconds, cpu, timeline, first)?;
        r.device = Device::between(&self.before, &after, seconds);
        Ok((r, after))
    }
}

/// The class of operations other than reads.
const OTHER: usize = 3;

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Random,
    Sequential,
}

/// What each client's next key and operation are.
struct Plan {
    keys: KeySampler,
    w: Workload,
    kind: Kind,
}

impl Plan {
    fn new(w: &Workload, kind: Kind) -> Result<Plan, Error> {
        Ok(Plan {
            keys: KeySampler::new(w)?,
            w: w.clone(),
            kind,
        })
    }

    fn next(&self, rng: &mut SmallRng, client: u64, issued: u64) -> (u64, Op) {
        // The clients take turns along the scan; in u128, as `issued`
        // may grow without bound in a timed phase.
        let pos = u128::from(client) + u128::from(issued) * self.w.clients as u128;
        let scan = (pos % u128::from(self.w.keys.max(1))) as u64;
        if self.kind == Kind::Sequential {
            return (scan, Op::Read);
        }
        let key = if self.w.scan_share > 0.0 && rng.gen_bool(self.w.scan_share.min(1.0)) {
            scan
        } else {
            self.keys.sample(rng)
        };
        (key, self.w.mix.sample(rng))
    }
}

/// When a phase stops.
#[derive(Clone, Copy)]
enum Until {
    Ops(u64),
    Time(Instant),
}

/// Runs one phase from client threads. Returns (errors, histograms of
/// ARC hits, L2 hits, misses and other ops in ns, timeline, operations
/// per class in each client's first tenth).
fn phase(
    e: &Engine,
    plan: Plan,
    until: Until,
    seed: u64,
    progress: &dyn Fn(u64),
    tick: Option<Duration>,
) -> Result<(u64, Histograms, Vec<Tick>, [u64; CLASSES]), Error> {
    let plan = Arc::new(plan);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let handles = (0..plan.w.clients)
        .map(|c| {
            let (e, plan, live) = (e.clone(), plan.clone(), live.clone());
            std::thread::Builder::new()
                .name(format!("client {c}"))
                .spawn(move || client(&e, &plan, &live, c as u64, until, seed, started))
                .map_err(Error::Spawn)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeline = watch(&handles, &live, progress, tick);
    let mut total = histograms();
    let mut errors = 0;
    let mut first = [0u64; CLASSES];
    for h in handles {
        let (e, hist, f) = h.join().map_err(|_| Error::ClientPanicked)?;
        errors += e;
        for (t, h) in total.iter_mut().zip(hist) {
            t.add(h)?;
        }
        for (t, n) in first.iter_mut().zip(f) {
            *t += n;
        }
    }
    Ok((errors, total, timeline, first))
}

/// Samples the clients' counters until they finish: progress every
/// 250 ms, and a timeline tick every `tick`.
fn watch<T>(
    handles: &[JoinHandle<T>],
    live: &Live,
    progress: &dyn Fn(u64),
    tick: Option<Duration>,
) -> Vec<Tick> {
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
                timeline.push(Tick::between(start, last_tick, (now, snap)));
                last_tick = (now, snap);
            }
        }
    }
    if tick.is_some() {
        let now = Instant::now();
        let snap = live.snapshot();
        if snap.iter().sum::<u64>() > last_tick.1.iter().sum::<u64>() {
            timeline.push(Tick::between(start, last_tick, (now, snap)));
        }
    }
    progress(live.snapshot().iter().sum());
    timeline
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

impl Pending {
    /// Starts `op` on key index `i`.
    fn start(e: &Engine, w: &Workload, op: Op, i: u64) -> Pending {
        let k = index_key(i);
        match op {
            Op::Read => Pending::Read(e.read_async(&k)),
            Op::Insert => {
                let (lo, hi) = w.value_size;
                let len = polarc::SimStore::size_of(&k, lo, hi);
                let v = polarc::SimStore::content(&k, len, w.compressibility);
                Pending::Other(e.insert_async(&k, &v))
            }
            Op::Invalidate => Pending::Other(e.invalidate_async(&k)),
            Op::Prefetch => Pending::Other(e.prefetch_async(&k)),
        }
    }

    /// Ready with the class of the completed operation, or `None` if it
    /// failed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        match self {
            Pending::Read(f) => Pin::new(f)
                .poll(cx)
                .map(|r| r.ok().map(|b| class_of(b.source()))),
            Pending::Other(f) => Pin::new(f).poll(cx).map(|r| r.ok().map(|()| OTHER)),
        }
    }
}

/// One client thread of a phase: keeps `queue_depth` operations in flight
/// until the phase's end. Returns (errors, histograms, operations per class
/// in its first tenth: by count, or by time for a timed phase).
fn client(
    e: &Engine,
    plan: &Plan,
    live: &Live,
    c: u64,
    until: Until,
    seed: u64,
    started: Instant,
) -> (u64, Histograms, [u64; CLASSES]) {
    let w = &plan.w;
    let per_client = match until {
        Until::Ops(n) => n.div_ceil(w.clients as u64),
        Until::Time(_) => u64::MAX,
    };
    let deadline = match until {
        Until::Time(t) => Some(t),
        Until::Ops(_) => None,
    };
    let first_until = deadline.map(|d| started + (d - started) / 10);
    let mut first = [0u64; CLASSES];
    let mut rng = SmallRng::seed_from_u64(seed + c);
    let mut hist = histograms();
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
            let (i, op) = plan.next(&mut rng, c, issued);
            inflight.push((Instant::now(), Pending::start(e, w, op, i)));
            issued += 1;
        }
        let mut i = 0;
        let before = completed;
        while i < inflight.len() {
            let Poll::Ready(class) = inflight[i].1.poll(&mut cx) else {
                i += 1;
                continue;
            };
            let (t, _) = inflight.swap_remove(i);
            completed += 1;
            match class {
                Some(c) => {
                    let _ = hist[c].record(t.elapsed().as_nanos() as u64);
                    live.done[c].fetch_add(1, Relaxed);
                    let in_first = match first_until {
                        Some(u) => Instant::now() < u,
                        // completed × 10 <= per_client, without overflow.
                        None => completed <= per_client / 10,
                    };
                    if in_first {
                        first[c] += 1;
                    }
                }
                None => errors += 1,
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
    (errors, hist, first)
}
