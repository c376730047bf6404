//! In-reactor jobs: load generated on the reactors themselves, as SPDK's
//! bdevperf does. A key owned by the job's own reactor is served in place;
//! a key owned by another reactor costs a message round trip, kept up to
//! `queue_depth` deep. Behind the `jobs` feature: the perf harness uses
//! them; a library user need not compile their random sampling and
//! histograms.
#![forbid(unsafe_code)]

use crate::core::Core;
use crate::index_key;
use crate::reactor::{PollStatus, Poller, Sched};
use crate::request::{MsgKey, Op, Outcome, Reply, Request};
use crate::shard::{hash_key, shard_of};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which operation a job issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum JobOp {
    /// Cache-only lookups (`get`).
    Get,
    /// Read-through (`read`).
    Read,
}

/// What every reactor's job does.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobSpec {
    /// Keys are `index_key(i)` for `i` in `0..keys`.
    pub keys: u64,
    /// Zipf exponent θ of the keys' popularity; 0 for uniform.
    pub zipf: f64,
    /// Measure each operation's latency, per tier that served it (two
    /// clock reads per operation).
    pub latency: bool,
    /// Operations each reactor's job completes.
    pub ops_per_reactor: u64,
    /// Requests in flight at once, per job: fills of local misses and
    /// requests to other reactors.
    pub queue_depth: usize,
    /// The operation.
    pub op: JobOp,
    /// RNG seed; reactor r uses `seed + r`.
    pub seed: u64,
    /// Open loop: each reactor's job issues this many operations per
    /// second on a schedule, and each latency is measured from the
    /// operation's intended start, so time spent waiting behind a stall
    /// counts (no coordinated omission). `None`: closed loop, as many as
    /// `queue_depth` allows.
    pub rate: Option<f64>,
    /// How the open loop spaces its operations.
    pub arrivals: Arrivals,
    /// Trace replay: reactor `r`'s job reads the keys `index_key(id)` of
    /// `trace[r]`, in order, instead of drawing keys, and does as many
    /// operations as that list holds (`ops_per_reactor` and `zipf` are
    /// not used). With a queue depth of 1 and each list holding the keys
    /// its reactor's shard owns, every shard sees its accesses in trace
    /// order, so hits are exactly the policy's.
    #[serde(skip)]
    pub trace: Option<Arc<Vec<Vec<u64>>>>,
}

/// An open-loop operation issued more than this after its intended start
/// is counted late ([`JobReport::issued_late`]); the harness's client
/// threads count theirs the same way.
pub const ISSUED_LATE_AFTER: Duration = Duration::from_micros(50);

/// How an open loop spaces its operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Exponential gaps: a Poisson process, as independent clients make.
    #[default]
    Poisson,
    /// Equal gaps.
    Fixed,
}

impl Arrivals {
    /// The gap before the next operation at `rate` per second.
    pub fn gap<R: Rng + ?Sized>(self, rate: f64, rng: &mut R) -> Duration {
        let mean = 1.0 / rate;
        let secs = match self {
            Arrivals::Fixed => mean,
            // Inverse CDF of the exponential; 1 - u is in (0, 1].
            Arrivals::Poisson => -(1.0 - rng.gen::<f64>()).ln() * mean,
        };
        Duration::from_secs_f64(secs.min(3600.0))
    }
}

/// What one job did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct JobReport {
    /// Reactor it ran on.
    pub reactor: usize,
    /// Operations completed.
    pub ops: u64,
    /// Of which served by the job's own shard.
    pub local_ops: u64,
    /// Of which sent to another reactor.
    pub remote_ops: u64,
    /// Operations that returned a block.
    pub hits: u64,
    /// Operations that returned none.
    pub misses: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Bytes copied out.
    pub bytes: u64,
    /// Reads of the first tenth of the job's operations served by the
    /// ARC, L2 and the backing store (how warm the cache was at first).
    pub first_tenth: [u64; 3],
    /// From the first poll to the last completion.
    pub elapsed: Duration,
    /// The engine shut down before the job had done all its operations.
    pub stopped: bool,
    /// Open loop: operations issued after their intended start because
    /// the job was at its queue depth (their latency counts the wait).
    pub issued_late: u64,
    /// Latency in ns of reads served by the ARC, L2 and the backing
    /// store, when the spec asked for it.
    #[serde(skip)]
    pub latency: Option<Box<[hdrhistogram::Histogram<u64>; 3]>>,
}

/// The histogram and counter index of a read served by `source`: ARC, L2,
/// backing store.
fn class_of(source: crate::block::Source) -> usize {
    match source {
        crate::block::Source::Arc => 0,
        crate::block::Source::L2 => 1,
        crate::block::Source::Backing => 2,
    }
}

pub(crate) struct Job {
    spec: JobSpec,
    /// Operations to complete.
    total: u64,
    zipf: Option<rand_distr::Zipf<f64>>,
    rng: SmallRng,
    issued: u64,
    inflight: usize,
    next: Option<u64>,
    scratch: Vec<u8>,
    report: JobReport,
    start: Option<Instant>,
    done: Option<oneshot::Sender<JobReport>>,
    /// Open loop: the intended start of the next operation, from `start`.
    next_at: Duration,
}

impl Job {
    pub(crate) fn new(
        reactor: usize,
        spec: JobSpec,
        max_block: usize,
        done: oneshot::Sender<JobReport>,
    ) -> Self {
        let zipf = (spec.zipf > 0.0)
            .then(|| rand_distr::Zipf::new(spec.keys.max(1), spec.zipf).ok())
            .flatten();
        let latency = spec.latency.then(|| {
            Box::new(std::array::from_fn(|_| {
                hdrhistogram::Histogram::new(3).expect("histogram")
            }))
        });
        let total = match &spec.trace {
            Some(t) => t.get(reactor).map_or(0, |v| v.len() as u64),
            None => spec.ops_per_reactor,
        };
        Job {
            total,
            zipf,
            rng: SmallRng::seed_from_u64(spec.seed.wrapping_add(reactor as u64)),
            spec,
            issued: 0,
            inflight: 0,
            next: None,
            scratch: vec![0; max_block],
            report: JobReport {
                reactor,
                latency,
                ..JobReport::default()
            },
            start: None,
            done: Some(done),
            next_at: Duration::ZERO,
        }
    }

    /// The tag of a request issued now: its time since the job started.
    fn tag(&self) -> u64 {
        match (self.spec.latency, self.start) {
            (true, Some(s)) => s.elapsed().as_nanos() as u64,
            _ => 0,
        }
    }

    fn account(&mut self, tag: u64, o: Outcome) {
        self.report.ops += 1;
        if let (true, Ok(Some(b))) = (self.report.ops * 10 <= self.total, &o) {
            self.report.first_tenth[class_of(b.source())] += 1;
        }
        if let (Some(h), Some(s), Ok(Some(b))) = (&mut self.report.latency, self.start, &o) {
            let _ =
                h[class_of(b.source())].record((s.elapsed().as_nanos() as u64).saturating_sub(tag));
        }
        match o {
            Ok(Some(b)) => {
                self.scratch[..b.len()].copy_from_slice(&b);
                self.report.hits += 1;
                self.report.bytes += b.len() as u64;
            }
            Ok(None) => self.report.misses += 1,
            Err(_) => self.report.errors += 1,
        }
    }
}

impl Poller<Core> for Job {
    fn is_task(&self) -> bool {
        true
    }

    fn poll(&mut self, core: &mut Core, _: &mut Sched<Core>) -> PollStatus {
        let start = *self.start.get_or_insert_with(Instant::now);
        let inbox = std::mem::take(&mut core.job_inbox);
        let (completed, issued) = (inbox.len(), self.issued);
        // Saturating: a job that ended stranded leaves late answers behind.
        self.inflight = self.inflight.saturating_sub(inbox.len());
        for (tag, o) in inbox {
            self.account(tag, o);
        }
        let n = core.reactors();
        let now = self.spec.rate.map(|_| start.elapsed());
        let mut waiting_for_time = false;
        for _ in 0..32 {
            if self.issued == self.total || core.stopping {
                break;
            }
            if now.is_some_and(|now| self.next_at > now) {
                waiting_for_time = true;
                break;
            }
            let i = match self.next.take() {
                Some(i) => i,
                None => match (&self.spec.trace, &self.zipf) {
                    (Some(t), _) => t[core.id][self.issued as usize],
                    (None, Some(z)) => {
                        rand_distr::Distribution::sample(z, &mut self.rng) as u64 - 1
                    }
                    (None, None) => self.rng.gen_range(0..self.spec.keys.max(1)),
                },
            };
            let key = index_key(i);
            let hash = hash_key(&key);
            let owner = shard_of(hash, n);
            if self.inflight >= self.spec.queue_depth {
                // Misses (local fills, L2 reads) and remote requests share
                // the job's queue depth. Open loop: the operation keeps its
                // intended start, so the wait counts in its latency.
                self.next = Some(i);
                break;
            }
            let tag = match (self.spec.rate, now) {
                (Some(rate), Some(now)) => {
                    let intended = self.next_at;
                    if now.saturating_sub(intended) > ISSUED_LATE_AFTER {
                        self.report.issued_late += 1;
                    }
                    self.next_at += self.spec.arrivals.gap(rate, &mut self.rng);
                    intended.as_nanos() as u64
                }
                _ => self.tag(),
            };
            if owner == core.id {
                self.issued += 1;
                self.report.local_ops += 1;
                match core.shard.lookup_for_read(hash, &key) {
                    Some(idx) => {
                        let b = core.block(idx);
                        self.account(tag, Ok(Some(b)));
                    }
                    None if self.spec.op == JobOp::Read => {
                        self.inflight += 1;
                        core.start_fill(hash, &key, Reply::Reactor(core.id, tag), false);
                    }
                    None => self.account(tag, Ok(None)),
                }
            } else {
                self.issued += 1;
                self.inflight += 1;
                self.report.remote_ops += 1;
                let op = if self.spec.op == JobOp::Get {
                    Op::Get
                } else {
                    Op::Read
                };
                let req = Request {
                    op,
                    key: MsgKey::from_slice(&key),
                    hash,
                    reply: Reply::Reactor(core.id, tag),
                };
                core.peers.queue_request(owner, req);
            }
        }
        let stopped = core.stopping && self.inflight == 0;
        // A peer that died (its reactor panicked) never answers what it
        // had taken from its ring: the job ends rather than wait forever.
        let stranded = completed == 0 && self.inflight > 0 && core.peers.any_gone(core.id);
        if self.report.ops == self.total || stopped || stranded {
            self.report.stopped = self.report.ops < self.total;
            self.report.elapsed = start.elapsed();
            if let Some(tx) = self.done.take() {
                let _ = tx.send(std::mem::take(&mut self.report));
            }
            return PollStatus::Done;
        }
        if completed == 0 && self.issued == issued && !waiting_for_time {
            // Waiting for replies: let the reactor idle (and yield the
            // core to the store and the kernel) until one arrives. (An
            // open loop waiting for its next start stays busy: a parked
            // reactor would start it late.)
            return PollStatus::Idle;
        }
        PollStatus::Busy
    }
}
