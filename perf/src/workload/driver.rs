//! The driver: warm-up and measured phases from clients or in-reactor jobs; trace replay.

use super::{Error, KeySampler, Op, Popularity, Workload};
use crate::procfs::cpu_seconds;
use crate::report::{
    class_of, histograms, part_histograms, Breakdown, Device, Histograms, PartHistograms, Rate,
    Report, Sweep, SweepClass, SweepPoint, Tick, CLASSES,
};
use crate::trace::Access;
use crate::verify::Verifier;
use polarc::{index_key, Block, Engine, OpFuture, Stats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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

/// What the clients check as they run.
#[derive(Clone, Debug)]
pub struct Checks {
    /// `--verify`: every read's bytes, against the versions written.
    pub verify: Option<Arc<Verifier>>,
    /// An operation in flight longer than this is given up as hung, and
    /// the phase stops issuing.
    pub hang_limit: Duration,
}

/// Operations over every phase of a run, warm-up included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Operations that completed, failed ones included.
    pub ops: u64,
    /// Of which failed.
    pub errors: u64,
    /// Operations given up after the hang limit (never answered).
    pub hung_ops: u64,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.ops += o.ops;
        self.errors += o.errors;
        self.hung_ops += o.hung_ops;
    }
}

/// Warms up from client threads, then measures with `driver`.
pub fn run(
    e: &Engine,
    w: &Workload,
    driver: Driver,
    checks: &Checks,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats, Totals), Error> {
    let mut totals = warm_up(e, w, checks, progress)?;
    let (r, stats, measured) = measure(e, w, driver, checks, progress)?;
    totals.add(measured);
    Ok((r, stats, totals))
}

/// One measured phase, from `driver`.
fn measure(
    e: &Engine,
    w: &Workload,
    driver: Driver,
    checks: &Checks,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats, Totals), Error> {
    match driver {
        Driver::Clients => measure_clients(e, w, checks, progress),
        Driver::InReactor => measure_in_reactor(e, w, progress),
    }
}

/// The shares of the closed-loop throughput a rate sweep runs at.
const SWEEP_SHARES: [f64; 7] = [0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Warms up, measures closed-loop (the report returned), then runs the
/// measured phase open-loop at [`SWEEP_SHARES`] of that throughput, and
/// finds the highest rate kept up with at a `class` p99 within `target`.
pub fn sweep(
    e: &Engine,
    w: &Workload,
    driver: Driver,
    checks: &Checks,
    progress: OnProgress<'_>,
    target: Duration,
    class: SweepClass,
) -> Result<(Report, Stats, Totals), Error> {
    let closed = Workload {
        rate: None,
        ..w.clone()
    };
    let (mut r, mut stats, mut totals) = run(e, &closed, driver, checks, progress)?;
    let max = r.ops_per_sec;
    let target_us = target.as_secs_f64() * 1e6;
    let mut points = Vec::new();
    for share in SWEEP_SHARES {
        let open = Workload {
            rate: Some((max * share).max(1.0)),
            ..w.clone()
        };
        let (p, s, t) = measure(e, &open, driver, checks, progress)?;
        totals.add(t);
        stats = s;
        let (Some(rate), latency_us) = (p.rate, p.latency_us) else {
            continue;
        };
        let c = class.of(&latency_us);
        println!(
            "sweep: {:>9.0} ops/s asked ({:>3.0}%), {:>9.0} done{}; {class:?} p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            rate.target,
            share * 100.0,
            rate.achieved,
            if rate.kept_up { "" } else { " (fell behind)" },
            c.p50,
            c.p99,
            c.p999
        );
        points.push(SweepPoint { rate, latency_us });
    }
    let max_rate = points
        .iter()
        .filter(|p| p.rate.kept_up && class.of(&p.latency_us).p99 <= target_us)
        .map(|p| p.rate.target)
        .max_by(f64::total_cmp);
    match max_rate {
        Some(m) => println!(
            "sweep: highest rate with {class:?} p99 <= {target_us:.1} us: {m:.0} ops/s ({:.0}% of closed-loop {max:.0})",
            m / max * 100.0
        ),
        None => println!("sweep: no rate tried kept {class:?} p99 within {target_us:.1} us"),
    }
    r.sweep = Some(Sweep {
        class,
        p99_target_us: target_us,
        closed_loop_ops_per_sec: max,
        max_rate,
        points,
    });
    Ok((r, stats, totals))
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

/// Replays a trace on the reactors: reactor `r`'s job reads the ids of
/// `lists[r]` (the accesses its shard owns, in trace order) one at a
/// time, so each shard sees exactly the trace's order and the hits are
/// the policy's; the shards run in parallel. With an inline store a miss
/// completes on the reactor, without a thread hop. Progress comes from
/// the shards' counters while the jobs run.
pub fn replay_in_reactor(
    e: &Engine,
    lists: Arc<Vec<Vec<u64>>>,
    interval: Duration,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats), Error> {
    let total: u64 = lists.iter().map(|l| l.len() as u64).sum();
    let m = Measure::begin(e);
    let spec = polarc::JobSpec {
        keys: 0,
        zipf: 0.0,
        latency: true,
        ops_per_reactor: 0,
        queue_depth: 1,
        op: polarc::JobOp::Read,
        seed: 0,
        rate: None,
        arrivals: Default::default(),
        trace: Some(lists),
    };
    let accessed = |s: &Stats| s.arc.hits + s.arc.misses;
    let base = accessed(&m.before);
    let running = std::sync::atomic::AtomicBool::new(true);
    let reports = std::thread::scope(|sc| {
        let jobs = sc.spawn(|| {
            let r = e.run_jobs(&spec);
            running.store(false, std::sync::atomic::Ordering::Release);
            r
        });
        while running.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(interval.min(Duration::from_millis(200)));
            progress(
                "replay (in-reactor)",
                (accessed(&e.stats()) - base).min(total),
                total,
            );
        }
        jobs.join().expect("the jobs' thread does not panic")
    })?;
    progress("replay (in-reactor)", total, total);
    let j = JobsMeasured::of(&reports)?;
    m.finish(e, &j.hist, j.errors, vec![], Some(j.seconds), Some(j.first))
}

/// What the reactors' jobs measured, summed over jobs.
struct JobsMeasured {
    ops: u64,
    errors: u64,
    issued_late: u64,
    /// The slowest job's time.
    seconds: f64,
    hist: Histograms,
    first: [u64; CLASSES],
}

impl JobsMeasured {
    fn of(reports: &[polarc::JobReport]) -> Result<JobsMeasured, Error> {
        let mut j = JobsMeasured {
            ops: 0,
            errors: 0,
            issued_late: 0,
            seconds: 0.0,
            hist: histograms(),
            first: [0u64; CLASSES],
        };
        for r in reports {
            j.ops += r.ops;
            j.errors += r.errors;
            j.issued_late += r.issued_late;
            j.seconds = j.seconds.max(r.elapsed.as_secs_f64());
            if let Some(l) = &r.latency {
                for (a, b) in j.hist.iter_mut().zip(l.iter()) {
                    a.add(b)?;
                }
            }
            for (f, n) in j.first.iter_mut().zip(r.first_tenth) {
                *f += n;
            }
        }
        Ok(j)
    }
}

fn warm_up(
    e: &Engine,
    w: &Workload,
    checks: &Checks,
    progress: OnProgress<'_>,
) -> Result<Totals, Error> {
    let mut totals = Totals::default();
    if w.warmup_ops > 0 {
        let kind = if w.sequential_warmup {
            Kind::Sequential
        } else {
            Kind::Random
        };
        let p = phase(
            e,
            Plan::new(w, kind)?,
            Until::Ops(w.warmup_ops),
            1,
            checks,
            &|n| progress("warm-up", n, w.warmup_ops),
            None,
        )?;
        totals = p.totals;
    }
    if w.settle_l2 {
        settle(e, w, progress);
    }
    Ok(totals)
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
    checks: &Checks,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats, Totals), Error> {
    let mut plan = Plan::new(w, Kind::Random)?;
    plan.client_rate = w.rate.map(|r| r / w.clients.max(1) as f64);
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
    let p = phase(
        e,
        plan,
        until,
        1_000_003,
        checks,
        &|n| {
            if timed {
                progress("measure (ms)", start.elapsed().as_millis() as u64, total)
            } else {
                progress("measure", n, total)
            }
        },
        Some(w.timeline_interval),
    )?;
    let (mut r, stats) = m.finish(e, &p.hist, p.totals.errors, p.timeline, None, Some(p.first))?;
    r.rate = w.rate.map(|t| Rate::new(t, r.ops_per_sec, p.issued_late));
    r.breakdown = p.parts.as_deref().map(Breakdown::of);
    Ok((r, stats, p.totals))
}

fn measure_in_reactor(
    e: &Engine,
    w: &Workload,
    progress: OnProgress<'_>,
) -> Result<(Report, Stats, Totals), Error> {
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
        // Open loop: the rate is shared by the reactors' jobs.
        rate: w.rate.map(|r| r / m.before.reactors.len() as f64),
        arrivals: w.arrivals,
        trace: None,
    };
    progress("measure (in-reactor jobs)", 0, w.ops);
    let reports = e.run_jobs(&spec)?;
    let j = JobsMeasured::of(&reports)?;
    progress("measure (in-reactor jobs)", j.ops, w.ops);
    // Every read the jobs completed has its latency recorded, so the
    // report's count (recorded + errors) is the jobs' count.
    let (mut r, stats) = m.finish(e, &j.hist, j.errors, vec![], Some(j.seconds), Some(j.first))?;
    r.rate = w.rate.map(|t| Rate::new(t, r.ops_per_sec, j.issued_late));
    let (ops, errors) = (j.ops, j.errors);
    let totals = Totals {
        ops,
        errors,
        hung_ops: 0,
    };
    Ok((r, stats, totals))
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
        r.device = Device::between(&self.before, &after, seconds)
            .with_dwpd(e.config().l2.dwpd, after.l2.l2_data_capacity);
        Ok((r, after))
    }
}

/// The class of operations other than reads.
const OTHER: usize = 3;

/// Counters the clients bump and the progress loop samples.
#[derive(Default)]
struct Live {
    done: [AtomicU64; CLASSES],
    /// Set when a client gave up on a hung operation: every client stops
    /// issuing.
    abort: AtomicBool,
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
    /// Open loop: each client's operations per second (the measured
    /// phase only; warm-up is closed-loop).
    client_rate: Option<f64>,
}

impl Plan {
    fn new(w: &Workload, kind: Kind) -> Result<Plan, Error> {
        Ok(Plan {
            keys: KeySampler::new(w)?,
            w: w.clone(),
            kind,
            client_rate: None,
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

/// What one phase measured.
struct PhaseResult {
    /// Operations, errors and hung operations.
    totals: Totals,
    /// Latency of ARC hits, L2 hits, misses and other ops, in ns.
    hist: Histograms,
    /// One tick per interval, if asked for.
    timeline: Vec<Tick>,
    /// Operations per class in each client's first tenth.
    first: [u64; CLASSES],
    /// Open loop: operations issued late (see [`Rate::issued_late`]).
    issued_late: u64,
    /// `--breakdown`: the parts of read latency per class.
    parts: Option<Box<PartHistograms>>,
}

/// What one client measured.
struct ClientResult {
    totals: Totals,
    hist: Histograms,
    first: [u64; CLASSES],
    issued_late: u64,
    parts: Option<Box<PartHistograms>>,
}

/// Runs one phase from client threads.
fn phase(
    e: &Engine,
    plan: Plan,
    until: Until,
    seed: u64,
    checks: &Checks,
    progress: &dyn Fn(u64),
    tick: Option<Duration>,
) -> Result<PhaseResult, Error> {
    let plan = Arc::new(plan);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let handles = (0..plan.w.clients)
        .map(|c| {
            let (e, plan, live, checks) = (e.clone(), plan.clone(), live.clone(), checks.clone());
            std::thread::Builder::new()
                .name(format!("client {c}"))
                .spawn(move || {
                    let at = Start {
                        client: c as u64,
                        until,
                        seed,
                        started,
                    };
                    client(&e, &plan, &live, &checks, at)
                })
                .map_err(Error::Spawn)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeline = watch(&handles, &live, progress, tick);
    let mut out = PhaseResult {
        totals: Totals::default(),
        hist: histograms(),
        timeline,
        first: [0u64; CLASSES],
        issued_late: 0,
        parts: plan.w.breakdown.then(|| Box::new(part_histograms())),
    };
    for h in handles {
        let c = h.join().map_err(|_| Error::ClientPanicked)?;
        out.totals.add(c.totals);
        for (t, h) in out.hist.iter_mut().zip(c.hist) {
            t.add(h)?;
        }
        for (t, n) in out.first.iter_mut().zip(c.first) {
            *t += n;
        }
        out.issued_late += c.issued_late;
        if let (Some(all), Some(mine)) = (&mut out.parts, c.parts) {
            for (a, m) in all.iter_mut().flatten().zip(mine.iter().flatten()) {
                a.add(m)?;
            }
        }
    }
    Ok(out)
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
    /// A read; under `--verify`, its key and the oldest version it may
    /// return.
    Read(OpFuture<Block>, Option<(u64, u64)>),
    /// An insert or invalidation; under `--verify`, its key and version.
    Write(OpFuture<()>, Option<(u64, u64)>),
    /// A prefetch.
    Other(OpFuture<()>),
}

impl Pending {
    /// Starts `op` on key index `i`.
    fn start(e: &Engine, w: &Workload, op: Op, i: u64, verify: Option<&Verifier>) -> Pending {
        let k = index_key(i);
        match op {
            Op::Read => {
                // Before the read is issued: a write returning meanwhile
                // must not raise the bar for it.
                let lo = verify.map(|v| (i, v.read(i)));
                Pending::Read(e.read_async(&k), lo)
            }
            Op::Insert => match verify {
                Some(v) => {
                    let (version, value) = v.insert(i);
                    Pending::Write(e.insert_async(&k, &value), Some((i, version)))
                }
                None => {
                    let (lo, hi) = w.value_size;
                    let len = polarc::SimStore::size_of(&k, lo, hi);
                    let v = polarc::SimStore::content(&k, len, w.compressibility);
                    Pending::Write(e.insert_async(&k, &v), None)
                }
            },
            Op::Invalidate => {
                let version = verify.map(|v| (i, v.invalidate(i)));
                Pending::Write(e.invalidate_async(&k), version)
            }
            Op::Prefetch => Pending::Other(e.prefetch_async(&k)),
        }
    }

    /// The key of a write under `--verify`.
    fn written_key(&self) -> Option<u64> {
        match self {
            Pending::Write(_, Some((k, _))) => Some(*k),
            _ => None,
        }
    }

    /// Ready with the class of the completed operation (and a read's
    /// stamps, with `timing`), or `None` if it failed; under `--verify`, a
    /// read is checked and a write recorded.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        verify: Option<&Verifier>,
    ) -> Poll<Option<(usize, Option<polarc::Timing>)>> {
        match self {
            Pending::Read(f, check) => Pin::new(f).poll(cx).map(|r| {
                if let (Some(v), Some((k, lo))) = (verify, *check) {
                    v.check(k, lo, r.as_ref().ok().map(|b| (&b[..], b.source())));
                }
                r.ok().map(|b| (class_of(b.source()), b.timing()))
            }),
            Pending::Write(f, done) => Pin::new(f).poll(cx).map(|r| {
                if let (Some(v), Some((k, version)), Ok(())) = (verify, *done, &r) {
                    v.written(k, version);
                }
                r.ok().map(|()| (OTHER, None))
            }),
            Pending::Other(f) => Pin::new(f).poll(cx).map(|r| r.ok().map(|()| (OTHER, None))),
        }
    }
}

/// Under `--verify`, an insert or invalidation goes to a key client `c`
/// owns, and only if that key has no write in flight (versions of a key
/// are written in order); otherwise the client reads instead.
fn owned(v: &Verifier, i: u64, op: Op, c: u64, writing: &HashSet<u64>) -> (u64, Op) {
    if !matches!(op, Op::Insert | Op::Invalidate) {
        return (i, op);
    }
    match v.writer_key(i, c) {
        Some(k) if !writing.contains(&k) => (k, op),
        _ => (i, Op::Read),
    }
}

/// Where a client starts.
#[derive(Clone, Copy)]
struct Start {
    client: u64,
    until: Until,
    seed: u64,
    started: Instant,
}

/// One client thread of a phase: keeps `queue_depth` operations in flight
/// until the phase's end, and gives up on any that stays in flight past
/// the hang limit. Returns its totals, histograms and operations per class
/// in its first tenth (by count, or by time for a timed phase).
fn client(e: &Engine, plan: &Plan, live: &Live, checks: &Checks, at: Start) -> ClientResult {
    let Start {
        client: c,
        until,
        seed,
        started,
    } = at;
    let w = &plan.w;
    let verify = checks.verify.as_deref();
    // Keys this client is writing (--verify).
    let mut writing = HashSet::new();
    let mut hung = 0u64;
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
    // (intended start, issue, the operation)
    let mut inflight: Vec<(Instant, Instant, Pending)> = Vec::with_capacity(qd);
    let mut parts = w.breakdown.then(|| Box::new(part_histograms()));
    let mut issued = 0u64;
    let mut completed = 0u64;
    let mut stop = false;
    let mut idle = 0u32;
    // Open loop: the intended start of the next operation. Latency runs
    // from it, so an operation that waits for a free slot (--queue-depth)
    // counts the wait (no coordinated omission).
    let mut next_at = started;
    let mut issued_late = 0u64;
    let arrivals = w.arrivals;
    while !(stop || issued == per_client) || !inflight.is_empty() {
        let now = Instant::now();
        if let Some(d) = deadline {
            stop |= now >= d;
        }
        stop |= live.abort.load(Relaxed);
        let mut waiting_for_time = false;
        while !stop && issued < per_client && inflight.len() < qd {
            let intended = match plan.client_rate {
                Some(rate) => {
                    if next_at > now {
                        waiting_for_time = true;
                        break;
                    }
                    let at = next_at;
                    next_at += arrivals.gap(rate, &mut rng);
                    if now.saturating_duration_since(at) > polarc::ISSUED_LATE_AFTER {
                        issued_late += 1;
                    }
                    at
                }
                None => Instant::now(),
            };
            let (i, op) = plan.next(&mut rng, c, issued);
            let (i, op) = match verify {
                Some(v) => owned(v, i, op, c, &writing),
                None => (i, op),
            };
            let p = Pending::start(e, w, op, i, verify);
            writing.extend(p.written_key());
            inflight.push((intended, Instant::now(), p));
            issued += 1;
        }
        let mut i = 0;
        let before = completed;
        while i < inflight.len() {
            let Poll::Ready(class) = inflight[i].2.poll(&mut cx, verify) else {
                if now.saturating_duration_since(inflight[i].0) > checks.hang_limit {
                    // Never answered: give up on it (its key stays in
                    // `writing`, as its version may still land) and stop
                    // the phase.
                    inflight.swap_remove(i);
                    hung += 1;
                    live.abort.store(true, Relaxed);
                    continue;
                }
                i += 1;
                continue;
            };
            let (t, issued_at, p) = inflight.swap_remove(i);
            if let Some(k) = p.written_key() {
                writing.remove(&k);
            }
            completed += 1;
            match class {
                Some((c, timing)) => {
                    let seen = Instant::now();
                    let _ = hist[c].record((seen - t).as_nanos() as u64);
                    if let (Some(parts), Some(s)) = (&mut parts, timing) {
                        let ns = |a: Instant, b: Instant| {
                            b.saturating_duration_since(a).as_nanos() as u64
                        };
                        let h = &mut parts[c];
                        let _ = h[0].record(ns(t, issued_at));
                        let _ = h[1].record(ns(issued_at, s.taken));
                        let _ = h[2].record(ns(s.taken, s.answered));
                        let _ = h[3].record(ns(s.answered, seen));
                    }
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
                // Open loop with a free slot: no later than the next
                // intended start. At --queue-depth only a completion (which
                // unparks) lets the next one go, however overdue it is.
                let wait = match plan.client_rate {
                    Some(_) if inflight.len() < qd => {
                        next_at.saturating_duration_since(Instant::now())
                    }
                    _ => Duration::from_millis(1),
                };
                std::thread::park_timeout(wait.min(Duration::from_millis(1)));
            }
        } else if completed == before && waiting_for_time {
            // Nothing in flight: sleep until the next intended start, but
            // yield through the last stretch (a sleep overshoots by tens
            // of µs).
            let wait = next_at.saturating_duration_since(Instant::now());
            if wait > Duration::from_micros(200) {
                std::thread::park_timeout(wait - Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        } else {
            idle = 0;
        }
    }
    if hung > 0 {
        log::error!(
            "client {c}: gave up on {hung} operations in flight for over {:?} (--hang-limit)",
            checks.hang_limit
        );
    }
    ClientResult {
        totals: Totals {
            ops: completed,
            errors,
            hung_ops: hung,
        },
        hist,
        first,
        issued_late,
        parts,
    }
}
