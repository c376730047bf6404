//! A reactor's engine state and the handling of every message it gets.
//!
//! `Core` is what a reactor owns: its shard, its pending fills, a handle
//! on the pool and the backing store, and the mailboxes of its peers.
//! Everything here runs on the owning reactor's thread only.
#![forbid(unsafe_code)]

use crate::backing::{BackingStore, ReadDone, ReadResult};
use crate::block::{Block, Source};
use crate::bufpool::{Buf, BufPool};
use crate::error::{BackingError, Error, Result};
use crate::l2::feeder::{FeedCtx, Feeder};
use crate::l2::{L2Core, WRITE_TAG};
use crate::reactor::{Mailbox, Poller};
use crate::shard::{Flags, HeaderIdx, L2Loc, L2Pick, PickRules, Shard};
use crate::stats::ReactorStats;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests and replies between reactors travel in batches of up to this
/// many. Measured on the ARC-hit benchmark: one message per request
/// bounces the ring's index and slot cache lines between cores on every
/// request; batching amortises that (docs/BENCHMARKS.md).
const PEER_BATCH: usize = 16;
/// The longest a reactor with L2 devices goes without a housekeeping tick.
const DEVICE_TICK: Duration = Duration::from_secs(1);

/// What every request answers: the block for reads and gets, `None` for
/// the others.
pub(crate) type Outcome = Result<Option<Block>>;

/// A client operation.
#[derive(Debug)]
pub(crate) enum Op {
    Read,
    Get,
    Insert(Box<[u8]>),
    Invalidate,
    Prefetch,
}

/// Where the answer to a request goes.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Nobody waits (a prefetch's own fill).
    None,
    /// A client thread or future.
    Client(oneshot::Sender<Outcome>),
    /// The job poller of the given reactor, with the job's tag (its issue
    /// time), handed back with the answer.
    Reactor(usize, u64),
}

/// A key carried in a message: inline up to 32 bytes, so that a request
/// allocates nothing. (A heap key is allocated by the sender and freed by
/// the owner; measured, such cross-thread frees contend on glibc's arena
/// locks and cost up to 2x on the remote-hit path.)
pub(crate) type MsgKey = smallvec::SmallVec<[u8; 32]>;

/// One request, routed to the reactor that owns `hash`.
#[derive(Debug)]
pub(crate) struct Request {
    pub op: Op,
    pub key: MsgKey,
    pub hash: u64,
    pub reply: Reply,
}

/// A function to run on a reactor (SPDK's `spdk_thread_send_msg`).
pub(crate) type CallFn = Box<dyn FnOnce(&mut Core) + Send>;

/// A message to a reactor.
pub(crate) enum Msg {
    Request(Request),
    /// A backing read completed for the fill of header `idx`.
    Fill {
        idx: HeaderIdx,
        result: ReadResult,
    },
    /// Requests from a peer reactor's job, batched.
    Requests(Vec<Request>),
    /// Answers to requests this reactor's job sent to a peer, batched.
    Completions(Vec<(u64, Outcome)>),
    Call(CallFn),
    Stats(oneshot::Sender<ReactorStats>),
    Shutdown,
    /// Feeder → shard: pick blocks for device `dev`.
    L2Scan {
        dev: u8,
        feeder: usize,
        seq: u64,
        rules: PickRules,
    },
    /// Shard → feeder: the picked blocks (the deferred write list), and
    /// whether the shard has started evicting (the ARC is warm).
    L2Picked {
        dev: u8,
        seq: u64,
        picks: Vec<L2Pick<Buf>>,
        warm: bool,
    },
    /// Feeder → shard: drop L2 copies in these `(start, end, key hashes)`
    /// ranges of `dev`, then acknowledge.
    L2Evict {
        dev: u8,
        feeder: usize,
        seq: u64,
        ranges: Vec<(u64, u64, Vec<u32>)>,
    },
    /// Shard → feeder: the evicted ranges can be overwritten.
    L2EvictAck {
        dev: u8,
        seq: u64,
    },
    /// Shard → feeder: blocks are piling up in my staging queue; feed now
    /// (still within the write rate cap).
    L2Kick {
        dev: u8,
    },
    /// Feeder → shard: where the blocks landed, or `None` when their write
    /// failed (the deferred done list).
    L2Done {
        dev: u8,
        entries: Vec<(HeaderIdx, Option<L2Loc>)>,
    },
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Request(r) => write!(f, "Request({:?})", r.op),
            Msg::Fill { idx, .. } => write!(f, "Fill({idx})"),
            Msg::Requests(v) => write!(f, "Requests({})", v.len()),
            Msg::Completions(v) => write!(f, "Completions({})", v.len()),
            Msg::Call(_) => f.write_str("Call"),
            Msg::Stats(_) => f.write_str("Stats"),
            Msg::Shutdown => f.write_str("Shutdown"),
            Msg::L2Scan { dev, seq, .. } => write!(f, "L2Scan(dev {dev}, seq {seq})"),
            Msg::L2Picked { dev, picks, .. } => write!(f, "L2Picked(dev {dev}, {})", picks.len()),
            Msg::L2Evict { dev, ranges, .. } => write!(f, "L2Evict(dev {dev}, {})", ranges.len()),
            Msg::L2EvictAck { dev, seq } => write!(f, "L2EvictAck(dev {dev}, seq {seq})"),
            Msg::L2Kick { dev } => write!(f, "L2Kick(dev {dev})"),
            Msg::L2Done { dev, entries } => write!(f, "L2Done(dev {dev}, {})", entries.len()),
        }
    }
}

/// Counters of a reactor beyond its shard's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreCounters {
    /// `read` requests.
    pub reads: u64,
    /// `get` requests.
    pub gets: u64,
    /// `insert` requests.
    pub insert_requests: u64,
    /// `invalidate` requests.
    pub invalidate_requests: u64,
    /// `prefetch` requests.
    pub prefetch_requests: u64,
    /// Reads sent to the backing store.
    pub backing_reads: u64,
    /// Backing reads that failed.
    pub backing_errors: u64,
    /// Misses that joined a backing read already in flight.
    pub fills_joined: u64,
    /// Blocks served but not cached because the pool was exhausted.
    pub uncached_fills: u64,
    /// Messages taken from the ring.
    pub messages: u64,
    /// Loop iterations that did work.
    pub busy_loops: u64,
    /// Loop iterations that found nothing to do.
    pub idle_loops: u64,
    /// Times the reactor parked (adaptive idle).
    pub parks: u64,
}

pub(crate) struct Fill {
    waiters: Vec<Reply>,
    prefetch: bool,
}

/// A reactor's state.
pub struct Core {
    /// This reactor's index.
    pub id: usize,
    /// The shard this reactor owns.
    pub shard: Shard<Buf>,
    pub(crate) pool: BufPool,
    backing: Arc<dyn BackingStore>,
    pub(crate) peers: Arc<[Arc<Mailbox<Msg>>]>,
    pub(crate) pending: std::collections::HashMap<HeaderIdx, Fill>,
    /// The L2 tier's queues, reads and feeders, when L2 devices are set.
    pub(crate) l2: Option<Box<L2Core>>,
    /// Answers to requests this reactor's job sent to peers.
    pub(crate) job_inbox: Vec<(u64, Outcome)>,
    /// Requests and replies to peers, per peer, waiting to leave in a batch.
    outbox_requests: Vec<Vec<Request>>,
    outbox_replies: Vec<Vec<(u64, Outcome)>>,
    /// Pollers to start on the next loop iteration.
    pub(crate) new_pollers: Vec<Box<dyn Poller<Core>>>,
    max_block: usize,
    /// Counters.
    pub counters: CoreCounters,
    pub(crate) stopping: bool,
    /// The core this reactor is pinned to, if pinning succeeded.
    pub(crate) pinned_core: Option<usize>,
    pub(crate) pin_failed: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Core {
    pub(crate) fn new(
        id: usize,
        shard: Shard<Buf>,
        pool: BufPool,
        backing: Arc<dyn BackingStore>,
        peers: Arc<[Arc<Mailbox<Msg>>]>,
        max_block: usize,
    ) -> Self {
        let n = peers.len();
        Core {
            id,
            shard,
            pool,
            backing,
            peers,
            pending: std::collections::HashMap::new(),
            l2: None,
            job_inbox: Vec::new(),
            outbox_requests: (0..n).map(|_| Vec::new()).collect(),
            outbox_replies: (0..n).map(|_| Vec::new()).collect(),
            new_pollers: Vec::new(),
            max_block,
            counters: CoreCounters::default(),
            stopping: false,
            pinned_core: None,
            pin_failed: false,
        }
    }

    /// Number of reactors.
    pub fn reactors(&self) -> usize {
        self.peers.len()
    }

    /// True when no backing or L2 I/O is in flight and no feed cycle is
    /// under way.
    pub(crate) fn quiet(&self) -> bool {
        self.pending.is_empty() && self.l2.as_ref().is_none_or(|l2| l2.quiet())
    }

    /// The earliest time a feeder wants to run, so that a parked reactor
    /// wakes for it.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let l2 = self.l2.as_ref()?;
        // Every reactor's device queues get their housekeeping tick at least
        // this often, however long the feed interval (an NVMe-oF keep-alive
        // is 10 s; a failed controller's qpairs must be freed everywhere
        // before it can be attached again).
        let tick = Instant::now() + DEVICE_TICK;
        let feed = l2.feeders.iter().filter_map(Feeder::next_feed).min();
        Some(feed.map_or(tick, |f| f.min(tick)))
    }

    /// Runs `f` on the feeder of device `dev`, if this reactor runs it.
    fn with_feeder(&mut self, dev: u8, f: impl FnOnce(&mut Feeder, &mut FeedCtx<'_>)) {
        let stopping = self.stopping;
        let Some(l2) = self.l2.as_deref_mut() else {
            return;
        };
        let L2Core {
            devs,
            feeders,
            counters,
            ..
        } = l2;
        let Some(fd) = feeders.iter_mut().find(|f| f.dev == dev) else {
            log::error!("reactor {}: no feeder for L2 device {dev}", self.id);
            return;
        };
        let mut ctx = FeedCtx {
            me: self.id,
            peers: &self.peers,
            pool: &self.pool,
            queue: devs[usize::from(dev)].queue.as_mut(),
            counters,
            stopping,
        };
        f(fd, &mut ctx);
    }

    /// Polls this reactor's device queues and runs its feeders, if it has
    /// any (only they need the clock: reading it every loop iteration cost
    /// 10% of an L2-hit workload). True when it did work or has I/O in
    /// flight (the reactor must not park then: completions are not
    /// messages).
    pub(crate) fn poll_l2(&mut self) -> bool {
        let now = self.l2.as_deref_mut().and_then(|l2| {
            // An idle feeder waits for a time at least 1 ms away, and device
            // housekeeping is rarer still: looking at the clock every 64
            // iterations is enough (6.8% of the feeding reactor went to
            // clock reads in a profile).
            l2.clock_tick = l2.clock_tick.wrapping_add(1);
            let working = l2.feeders.iter().any(|f| !f.waiting());
            (working || l2.clock_tick % 64 == 0).then(Instant::now)
        });
        self.poll_l2_at(now)
    }

    /// [`Core::poll_l2`] with the time given (the simulation's clock).
    pub(crate) fn poll_l2_at(&mut self, now: Option<Instant>) -> bool {
        let Some(l2) = self.l2.as_deref_mut() else {
            return false;
        };
        if !l2.kicked && self.shard.l2_stage_pressure() {
            l2.kicked = true;
            for (dev, d) in l2.devs.iter().enumerate() {
                let _ = self.peers[d.shared.feeder].send(Msg::L2Kick { dev: dev as u8 });
            }
        }
        let mut done = std::mem::take(&mut l2.done);
        let mut busy = false;
        for d in l2.devs.iter_mut() {
            if d.queue.in_flight() > 0 {
                busy = true;
                d.queue.poll(&mut done);
            }
        }
        for c in done.drain(..) {
            if c.tag & WRITE_TAG != 0 {
                let dev = ((c.tag >> 48) & 0xff) as u8;
                self.with_feeder(dev, |f, ctx| f.on_write_done(c, ctx));
            } else {
                self.l2_read_done(c);
            }
        }
        let l2 = self.l2.as_deref_mut().expect("L2 configured");
        l2.done = done;
        if let Some(now) = now {
            for d in l2.devs.iter_mut() {
                d.queue.tick(now);
            }
            for i in 0..l2.feeders.len() {
                let dev = self.l2.as_ref().expect("L2 configured").feeders[i].dev;
                self.with_feeder(dev, |f, ctx| busy |= f.poll(now, ctx));
            }
        }
        busy
    }

    /// Handles one message.
    pub(crate) fn handle(&mut self, msg: Msg) {
        self.counters.messages += 1;
        match msg {
            Msg::Request(r) => self.handle_request(r),
            Msg::Fill { idx, result } => self.complete_fill(idx, result),
            Msg::Requests(v) => {
                for r in v {
                    self.handle_request(r);
                }
            }
            Msg::Completions(mut v) => self.job_inbox.append(&mut v),
            Msg::Call(f) => f(self),
            Msg::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
            Msg::Shutdown => self.stopping = true,
            Msg::L2Scan {
                dev,
                feeder,
                seq,
                rules,
            } => {
                let picks = self.shard.l2_pick(&rules);
                if let Some(l2) = self.l2.as_deref_mut() {
                    l2.kicked = false;
                }
                let c = self.shard.counters;
                let warm = c.evict_mru + c.evict_mfu > 0;
                self.send(
                    feeder,
                    Msg::L2Picked {
                        dev,
                        seq,
                        picks,
                        warm,
                    },
                );
            }
            Msg::L2Picked {
                dev,
                seq,
                picks,
                warm,
            } => self.with_feeder(dev, |f, ctx| f.on_picked(seq, picks, warm, ctx)),
            Msg::L2Evict {
                dev,
                feeder,
                seq,
                ranges,
            } => self.l2_evict(dev, feeder, seq, ranges),
            Msg::L2EvictAck { dev, seq } => self.with_feeder(dev, |f, _| f.on_evict_ack(seq)),
            Msg::L2Kick { dev } => self.with_feeder(dev, |f, _| f.on_kick()),
            Msg::L2Done { entries, .. } => {
                for (idx, loc) in entries {
                    self.shard.l2_done(idx, loc);
                }
            }
        }
    }

    /// Sends a message to reactor `to`. If it has shut down, the message
    /// is dropped, which answers any waiting client with `ShutDown`.
    pub(crate) fn send(&self, to: usize, msg: Msg) {
        let _ = self.peers[to].send(msg);
    }

    fn reply(&mut self, r: Reply, o: Outcome) {
        match r {
            Reply::None => {}
            Reply::Client(tx) => {
                let _ = tx.send(o);
            }
            Reply::Reactor(to, tag) if to == self.id => self.job_inbox.push((tag, o)),
            Reply::Reactor(to, tag) => {
                self.outbox_replies[to].push((tag, o));
                if self.outbox_replies[to].len() >= PEER_BATCH {
                    self.flush_to(to);
                }
            }
        }
    }

    /// Queues a request for peer `to`; it leaves in a batch, at the latest
    /// when the reactor loop calls [`Core::flush`].
    pub(crate) fn queue_request(&mut self, to: usize, req: Request) {
        self.outbox_requests[to].push(req);
        if self.outbox_requests[to].len() >= PEER_BATCH {
            self.flush_to(to);
        }
    }

    fn flush_to(&mut self, to: usize) {
        if !self.outbox_requests[to].is_empty() {
            let v = std::mem::replace(
                &mut self.outbox_requests[to],
                Vec::with_capacity(PEER_BATCH),
            );
            self.send(to, Msg::Requests(v));
        }
        if !self.outbox_replies[to].is_empty() {
            let v = std::mem::replace(&mut self.outbox_replies[to], Vec::with_capacity(PEER_BATCH));
            self.send(to, Msg::Completions(v));
        }
    }

    /// Sends every queued batch. The reactor calls it once per loop
    /// iteration, so nothing waits longer than one iteration.
    pub(crate) fn flush(&mut self) -> bool {
        let mut sent = false;
        for to in 0..self.peers.len() {
            if !self.outbox_requests[to].is_empty() || !self.outbox_replies[to].is_empty() {
                self.flush_to(to);
                sent = true;
            }
        }
        sent
    }

    /// The block of a resident header.
    pub(crate) fn block(&self, idx: HeaderIdx) -> Block {
        Block::pool(
            self.shard
                .header(idx)
                .data
                .clone()
                .expect("resident header has data"),
            Source::Arc,
        )
    }

    fn handle_request(&mut self, req: Request) {
        let Request {
            op,
            key,
            hash,
            reply,
        } = req;
        match op {
            Op::Get => {
                self.counters.gets += 1;
                let b = self
                    .shard
                    .lookup_for_read(hash, &key)
                    .map(|i| self.block(i));
                self.reply(reply, Ok(b));
            }
            Op::Read => {
                self.counters.reads += 1;
                match self.shard.lookup_for_read(hash, &key) {
                    Some(i) => {
                        let b = self.block(i);
                        self.reply(reply, Ok(Some(b)));
                    }
                    None => self.start_fill(hash, &key, reply, false),
                }
            }
            Op::Prefetch => {
                self.counters.prefetch_requests += 1;
                let busy = self.shard.find(hash, &key).is_some_and(|i| {
                    let h = self.shard.header(i);
                    h.state.is_resident() || h.flags.contains(Flags::IO_IN_PROGRESS)
                });
                if !busy {
                    self.start_fill(hash, &key, Reply::None, true);
                }
                self.reply(reply, Ok(None));
            }
            Op::Insert(data) => {
                self.counters.insert_requests += 1;
                self.insert(hash, &key, &data);
                self.reply(reply, Ok(None));
            }
            Op::Invalidate => {
                self.counters.invalidate_requests += 1;
                self.shard.invalidate(hash, &key);
                self.reply(reply, Ok(None));
            }
        }
    }

    /// Caches `data` for `key` unless it is already cached or being
    /// filled (blocks are immutable, so either copy is the same bytes).
    fn insert(&mut self, hash: u64, key: &[u8], data: &[u8]) {
        if let Some(i) = self.shard.find(hash, key) {
            let h = self.shard.header(i);
            if h.state.is_resident() || h.flags.contains(Flags::IO_IN_PROGRESS) {
                return;
            }
        }
        let Some(buf) = self.copy_to_pool(data) else {
            self.counters.uncached_fills += 1;
            return;
        };
        let idx = self.shard.begin_fill(hash, key);
        // A rejection (too large) was cleaned up and counted by the shard.
        let _ = self
            .shard
            .complete_fill(idx, data.len() as u32, buf, Flags::L2_ELIGIBLE);
    }

    fn copy_to_pool(&self, data: &[u8]) -> Option<Buf> {
        let mut b = self.pool.alloc(data.len())?;
        b.as_mut_slice()[..data.len()].copy_from_slice(data);
        Some(b.freeze(data.len()))
    }

    /// Starts a backing read for `key`, or joins the one in flight.
    pub(crate) fn start_fill(&mut self, hash: u64, key: &[u8], waiter: Reply, prefetch: bool) {
        if let Some(idx) = self.shard.find(hash, key) {
            if self.shard.header(idx).flags.contains(Flags::IO_IN_PROGRESS) {
                let fill = self
                    .pending
                    .get_mut(&idx)
                    .expect("a fill in flight is pending");
                if !matches!(waiter, Reply::None) {
                    fill.waiters.push(waiter);
                    fill.prefetch = false;
                }
                self.counters.fills_joined += 1;
                return;
            }
        }
        let idx = self.shard.begin_fill(hash, key);
        let waiters = if matches!(waiter, Reply::None) {
            vec![]
        } else {
            vec![waiter]
        };
        self.pending.insert(idx, Fill { waiters, prefetch });
        if !self.l2_try_read(idx) {
            self.start_backing_read(idx);
        }
    }

    /// Reads the block of header `idx`, whose fill is pending, from the
    /// backing store.
    pub(crate) fn start_backing_read(&mut self, idx: HeaderIdx) {
        self.counters.backing_reads += 1;
        let me = self.peers[self.id].clone();
        let key = self.shard.header(idx).key.clone();
        self.backing.read(
            &key,
            ReadDone::new(move |result| {
                // The reactor stays open while a fill is pending.
                let _ = me.push(Msg::Fill { idx, result });
            }),
        );
    }

    /// Completes the fill of header `idx` with a block read from L2.
    pub(crate) fn finish_l2_fill(&mut self, idx: HeaderIdx, buf: Buf) {
        let Some(fill) = self.pending.remove(&idx) else {
            log::error!(
                "reactor {}: L2 fill of header {idx}, which has none pending",
                self.id
            );
            return;
        };
        let flags = Self::fill_flags(&fill);
        let _ = self
            .shard
            .complete_fill(idx, buf.len() as u32, buf.clone(), flags);
        let outcome = Ok(Some(Block::pool(buf, Source::L2)));
        for w in fill.waiters {
            self.reply(w, outcome.clone());
        }
    }

    fn fill_flags(fill: &Fill) -> Flags {
        let mut flags = Flags::L2_ELIGIBLE;
        if fill.prefetch {
            flags.insert(Flags::PREFETCH);
        }
        flags
    }

    fn complete_fill(&mut self, idx: HeaderIdx, result: ReadResult) {
        let Some(fill) = self.pending.remove(&idx) else {
            log::error!(
                "reactor {}: completion for header {idx}, which has no fill in flight",
                self.id
            );
            return;
        };
        let result = result.and_then(|v| {
            if v.is_empty() || v.len() > self.max_block {
                Err(BackingError::BadSize {
                    size: v.len(),
                    max: self.max_block,
                })
            } else {
                Ok(v)
            }
        });
        let outcome = match result {
            Err(e) => {
                self.shard.abort_fill(idx);
                self.counters.backing_errors += 1;
                Err(Error::Backing(e))
            }
            Ok(data) => match self.copy_to_pool(&data) {
                Some(buf) => {
                    let flags = Self::fill_flags(&fill);
                    // Rejected (invalidated meanwhile, or too large): the
                    // waiters still get the bytes they asked for.
                    let _ = self
                        .shard
                        .complete_fill(idx, data.len() as u32, buf.clone(), flags);
                    Ok(Some(Block::pool(buf, Source::Backing)))
                }
                None => {
                    self.shard.abort_fill(idx);
                    self.counters.uncached_fills += 1;
                    Ok(Some(Block::heap(data)))
                }
            },
        };
        for w in fill.waiters {
            self.reply(w, outcome.clone());
        }
    }

    pub(crate) fn stats(&self) -> ReactorStats {
        ReactorStats {
            id: self.id,
            pinned_core: self.pinned_core,
            pin_failed: self.pin_failed,
            core: self.counters,
            shard: self.shard.counters,
            sizes: self.shard.sizes(),
            l2: self.l2.as_ref().map_or_else(Default::default, |l2| {
                let mut c = l2.counters;
                c.l2_log_bytes = l2.feeders.iter().map(Feeder::log_bytes).sum();
                c
            }),
            l2_sizes: self.shard.l2_sizes(),
        }
    }
}
