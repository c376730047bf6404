//! The L2 feeder of one device, run by one reactor (ZFS's
//! `l2arc_feed_thread`, as a state machine driven by messages). It has a
//! queue of its own on its device, so its requests complete to it alone.
//!
//! 0. `Rebuilding` → at start-up, a device with a log gets its entries
//!    back ([`super::rebuild`]); nothing is fed until that is done.
//! 1. `Idle` → once a feed is due (its timer fired, or a shard kicked),
//!    send `Scan` to every shard.
//! 2. `Scanning` → the `Picked` replies are the deferred write list.
//!    Plan the region the blocks may take, wrapping the hand at the end of
//!    the data ring, and send `Evict` for every logged batch the region
//!    overwrites.
//! 3. `Evicting` → once every shard acknowledged (after its reads of the
//!    range completed), nothing can read the region any more.
//! 4. `Fencing` → with a persistent log, the region's end becomes the
//!    durable evict position before anything is written there.
//! 5. `Writing` → pack the blocks (LZ4, EMPTY, raw) into large aligned
//!    writes, a few in flight at a time, and log each write and its
//!    blocks. On each completion send `Done` to the owning shards and put
//!    the buffer on the free-on-write ring. A block whose key is recorded
//!    dead (invalidated, replaced) after it was picked is not written.
//! 6. `Sealing` → with a persistent log, the cycle's log blocks, a flush,
//!    then the header. Back to `Idle`, with the next feed's time.
//!
//! At shutdown a persistent feeder closes its log (`Closing`): its last
//! log block, a flush, and a header marked clean.

use super::compress;
use super::format::{
    checksum, DeviceHeader, Encoding, L2Loc, LogItem, Placement, L2_SECTOR, MAX_REL_SECTORS,
};
use super::journal::{self, Durable, Event, Journal};
use super::rebuild::{Rebuild, TAG_REBUILD};
use super::wear::WearBudget;
use super::{DevShared, L2Config, L2Counters, L2Link, L2Msg};
use crate::bufpool::{Buf, BufMut, BufPool, FreeOnWrite};
use crate::device::deadline::{DeadlineQueue, Deadlines};
use crate::device::{Completion, DeviceError, DeviceQueue, IoBuf, IoOp};
use crate::shard::{shard_of, HeaderIdx, L2Pick, PickCursor, PickRules};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Rebuilding,
    Idle,
    Scanning,
    Evicting,
    Fencing,
    Writing,
    Sealing,
    Closing,
    Closed,
}

/// Blocks written by one feed write, kept in write order: the feeder's
/// eviction log of the ring (ZFS's `l2ad_buflist`), 4 bytes per block.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Device offsets of the write.
    start: u64,
    end: u64,
    /// Logical position (`lap × data size + offset in the ring`).
    pub logical: u64,
    /// Low 32 bits of the key hashes, per owning shard.
    hashes: Vec<Vec<u32>>,
}

impl Batch {
    /// A write at device offsets `start..end`, logical position `logical`.
    pub(crate) fn new(start: u64, end: u64, logical: u64, shards: usize) -> Batch {
        Batch {
            start,
            end,
            logical,
            hashes: vec![Vec::new(); shards],
        }
    }
    /// Adds a block of the key with `hash`, owned by `shard`.
    pub(crate) fn add(&mut self, shard: usize, hash: u64) {
        self.hashes[shard].push(hash as u32);
    }
    fn blocks(&self) -> u64 {
        self.hashes.iter().map(|h| h.len() as u64).sum()
    }
}

/// A feed write being packed, over as many polls as its LZ4 takes.
struct Packing {
    wbuf: BufMut,
    /// Bytes of it the write may use.
    room: usize,
    /// Its offset in the data ring, and sequence number.
    base: u64,
    write_seq: u64,
    /// Bytes packed so far.
    pos: usize,
    blocks: Vec<(HeaderIdx, u64, L2Loc)>,
    entries: Vec<LogItem>,
}

/// A feed write in flight.
struct InFlight {
    /// `Done` lists per shard.
    done: Vec<Vec<(HeaderIdx, L2Loc)>>,
}

/// What one poll of a feeder did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FeedPoll {
    /// It did work.
    pub busy: bool,
    /// It has requests in flight, which complete without a message.
    pub waiting: bool,
    /// Arm a timer for the next feed at this time; when it fires, call
    /// [`Feeder::on_timer`] with this generation.
    pub next_feed: Option<(Instant, u64)>,
}

/// One device's feeder.
pub(crate) struct Feeder {
    pub dev: u8,
    /// The reactor running it.
    me: usize,
    shared: Arc<DevShared>,
    cfg: Arc<L2Config>,
    link: Arc<dyn L2Link>,
    pool: BufPool,
    queue: DeadlineQueue,
    counters: L2Counters,
    shards: usize,
    placement: Placement,
    /// Device offset of the data ring, and its size.
    data_offset: u64,
    cap: u64,
    /// Offset in the data ring of the next write, and the ring's lap.
    hand: u64,
    lap: u64,
    /// The region planned for this cycle's writes ends here.
    region_end: u64,
    /// The end of what this cycle evicts: `region_end`, or further with
    /// `trim_ahead`; `[region_end, evict_end)` is discarded once fenced.
    evict_end: u64,
    /// The device refused a discard: no more trimming.
    trim_unsupported: bool,
    /// The discard of this cycle, while it may still run on the device:
    /// (tag, timed out). The cycle does not end before it has, or the next
    /// cycle's writes could land in its range and be wiped by it.
    trim: Option<(u64, bool)>,
    log: VecDeque<Batch>,
    log_blocks: u64,
    phase: Phase,
    /// A feed is due: start a cycle at the next poll while idle.
    due: bool,
    /// Generation of the armed feed timer; a kick moves it on, so that
    /// the timer armed before is ignored.
    timer_gen: u64,
    last_feed: Option<Instant>,
    /// The `dwpd` budget, over device bytes.
    wear: WearBudget,
    seq: u64,
    awaited: usize,
    warm: bool,
    target: u64,
    wrote: u64,
    picks: VecDeque<L2Pick<Buf>>,
    writes: HashMap<u64, InFlight>,
    next_tag: u64,
    /// The next feed write's sequence number (keys its blocks' checksums).
    next_write: u64,
    fow: FreeOnWrite,
    done: Vec<Completion>,
    /// The device's log, when persistent.
    journal: Option<Journal>,
    /// The rebuild at start-up, while it runs.
    rebuild: Option<Rebuild>,
    /// The device header, until the journal starts.
    header: DeviceHeader,
    /// Invalidation records that came during the rebuild.
    records: Vec<(u64, usize, u64)>,
    /// Keys recorded dead during this cycle: their picks not yet packed
    /// are not written (their log entries would come after the record).
    killed: HashSet<u64>,
    /// Feed writes of the current cycle that succeeded and failed.
    cycle_ok: u32,
    cycle_failed: u32,
    /// Set while every write fails: the wait before the next cycle.
    backoff: Option<Duration>,
    /// A probe read of a degraded device is in flight, since then.
    probing: Option<Instant>,
    /// The write buffer being packed.
    packing: Option<Packing>,
}

/// Requests of a feeder's probe of a degraded device carry this in their
/// tag's top byte.
const TAG_PROBE: u64 = 5;
/// Tag kind of a discard ahead of the hand.
const TAG_TRIM: u64 = 6;
/// The most one discard ahead of the hand covers.
const MAX_TRIM: u64 = 64 << 20;
/// How often a degraded device is probed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between feed cycles while every write fails.
pub(crate) const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);
/// Requests of the log, flushes, headers and rebuild reads a feeder's
/// queue holds beyond its feed writes.
const META_DEPTH: usize = 16;
/// Rebuild reads in flight.
const REBUILD_DEPTH: usize = 12;

impl Feeder {
    /// The feeder of device `dev`, run by reactor `me`; opens its queue.
    /// `header` is the device's; with `resume`, its log is rebuilt first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dev: u8,
        me: usize,
        shared: Arc<DevShared>,
        cfg: Arc<L2Config>,
        link: Arc<dyn L2Link>,
        pool: &BufPool,
        start: &super::prepare::Prepared,
        max_block: u32,
    ) -> Result<Feeder, DeviceError> {
        let (header, resume) = (start.header, start.resume);
        // Its reads are bulk (the log at a rebuild, 1 MiB at a time, many
        // in flight): they get the write deadline. A probe is judged
        // against the read deadline by the feeder itself.
        let limits = Deadlines {
            read: cfg.write_deadline,
            write: cfg.write_deadline,
        };
        let queue = shared.open_queue(cfg.writes_in_flight + META_DEPTH, limits, pool)?;
        let geo = header.geometry;
        let bs = u64::from(geo.block_size);
        let max_span = pool.max_buf() as u64;
        let write_size = (cfg.write_size as u64)
            .clamp(bs, max_span)
            .min(u64::from(MAX_REL_SECTORS) * L2_SECTOR)
            / bs
            * bs;
        let shards = link.reactors();
        let persistent = header.compat & super::format::COMPAT_NO_LOG == 0;
        let rebuild = (resume && persistent).then(|| {
            Rebuild::new(
                dev,
                shared.info.name.clone(),
                header,
                max_block,
                shards,
                REBUILD_DEPTH,
                pool,
            )
        });
        let mut f = Feeder {
            dev,
            me,
            shards,
            shared,
            cfg,
            link,
            pool: pool.clone(),
            queue,
            counters: L2Counters {
                l2_log_write_errors: start.write_errors,
                ..L2Counters::default()
            },
            placement: Placement {
                block_size: bs,
                max_span,
                write_size,
            },
            data_offset: geo.data_offset,
            cap: geo.data_size,
            hand: 0,
            lap: 0,
            region_end: 0,
            evict_end: 0,
            trim_unsupported: false,
            trim: None,
            log: VecDeque::new(),
            log_blocks: 0,
            phase: if rebuild.is_some() {
                Phase::Rebuilding
            } else {
                Phase::Idle
            },
            due: true,
            timer_gen: 0,
            last_feed: None,
            wear: WearBudget::default(),
            seq: 0,
            awaited: 0,
            warm: false,
            target: 0,
            wrote: 0,
            picks: VecDeque::new(),
            writes: HashMap::new(),
            next_tag: 0,
            next_write: header.next_write.max(1),
            fow: FreeOnWrite::default(),
            done: Vec::new(),
            journal: None,
            rebuild,
            header,
            records: Vec::new(),
            killed: HashSet::new(),
            cycle_ok: 0,
            cycle_failed: 0,
            backoff: None,
            probing: None,
            packing: None,
        };
        if f.rebuild.is_none() && persistent {
            f.start_journal(1, Durable::default());
        }
        Ok(f)
    }

    fn start_journal(&mut self, next_log: u64, durable: Durable) {
        let j = Journal::new(
            self.shared.info.name.clone(),
            self.header,
            next_log,
            durable,
            &self.pool,
        );
        self.journal = Some(j);
        for (hash, from, token) in std::mem::take(&mut self.records) {
            self.record(hash, from, token);
        }
    }

    /// True while its rebuild runs.
    pub(crate) fn rebuilding(&self) -> bool {
        self.phase == Phase::Rebuilding
    }

    /// True when nothing is in flight and no cycle is under way.
    pub(crate) fn idle(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Closed)
            && self.writes.is_empty()
            && self.picks.is_empty()
            && self.packing.is_none()
            && self.queue.in_flight() == 0
            && self.journal.as_ref().is_none_or(Journal::idle)
    }

    /// Bytes of the eviction log (its hashes), for `l2_log_bytes`.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_blocks * 4
    }

    /// The feeder's counters (its writes, log, rebuild and queue).
    pub(crate) fn counters(&self) -> L2Counters {
        let mut c = self.counters;
        super::add_deadlines(&mut c, &self.queue);
        c.l2_degraded += u64::from(self.shared.health.is_degraded());
        c.l2_data_capacity = self.cap;
        if let Some(j) = &self.journal {
            c.add(&j.counters);
        }
        if let Some(r) = &self.rebuild {
            c.add(&r.counters);
        }
        c
    }

    /// Housekeeping of its queue; returns how soon it wants the next.
    pub(crate) fn tick(&mut self, now: Instant) -> Duration {
        self.queue.tick(now)
    }

    /// Runs the feeder for one reactor loop iteration, at time `now`; while
    /// `stopping`, it starts no cycle and closes its log.
    pub(crate) fn poll(&mut self, now: Instant, stopping: bool) -> FeedPoll {
        let freed = self.fow.drain();
        self.counters.l2_free_on_write += freed;
        let mut out = FeedPoll {
            busy: freed > 0,
            waiting: false,
            next_feed: None,
        };
        if self.queue.in_flight() > 0 {
            let mut done = std::mem::take(&mut self.done);
            self.queue.expire(now);
            self.queue.poll(&mut done);
            out.busy |= !done.is_empty();
            for c in done.drain(..) {
                self.on_complete(c);
            }
            self.done = done;
        }
        match self.phase {
            Phase::Rebuilding => {
                self.poll_rebuild();
                // Log read and waiting to be applied: the reactor must not
                // park (no message will wake it).
                out.busy |= self.rebuild.as_ref().is_some_and(Rebuild::has_work);
                out.waiting |= self.rebuild.is_some();
            }
            Phase::Idle if stopping => {
                if let Some(j) = &mut self.journal {
                    j.close();
                    self.phase = Phase::Closing;
                } else {
                    self.phase = Phase::Closed;
                }
                out.busy = true;
            }
            Phase::Idle if !self.due => {}
            Phase::Idle if self.shared.health.is_degraded() => {
                // Nothing is fed to a device that does not answer; a probe
                // finds out when it does again.
                self.probe();
                out.next_feed = Some(self.arm(now + PROBE_INTERVAL));
                out.busy = true;
            }
            Phase::Idle => {
                out.next_feed = self.start_cycle(now);
                out.busy = true;
            }
            Phase::Scanning | Phase::Evicting if stopping => {
                // Replies may never come from reactors that have stopped.
                self.abort_picks();
                self.phase = Phase::Idle;
            }
            Phase::Writing => {
                if self.shared.health.is_degraded() {
                    // Writes to a device that does not answer would only
                    // wait for their deadlines: give up the cycle's rest.
                    self.abort_picks();
                }
                let t = Instant::now();
                out.busy |= self.fill_writes();
                self.counters.l2_feed_ns += t.elapsed().as_nanos() as u64;
                if self.picks.is_empty()
                    && self.packing.is_none()
                    && self.writes.is_empty()
                    && !self.trimming()
                {
                    out.busy = true;
                    match &mut self.journal {
                        Some(j) if self.wrote > 0 => {
                            j.sync_cycle();
                            self.phase = Phase::Sealing;
                        }
                        _ => out.next_feed = Some(self.finish_cycle(now)),
                    }
                }
            }
            _ => {}
        }
        let events = match &mut self.journal {
            Some(j) => {
                j.next_write = self.next_write;
                j.pump(&mut self.queue);
                j.events()
            }
            None => Vec::new(),
        };
        {
            for e in events {
                out.busy = true;
                match e {
                    Event::Durable(acks) => self.acks(acks, false),
                    Event::Lost(acks) => self.acks(acks, true),
                    Event::Fenced if self.phase == Phase::Fencing => self.start_writing(),
                    Event::CycleSynced if self.phase == Phase::Sealing => {
                        out.next_feed = Some(self.finish_cycle(now));
                    }
                    Event::Closed => self.phase = Phase::Closed,
                    _ => {}
                }
            }
        }
        // I/O submitted above completes without a message: the reactor
        // must not park while any is in flight.
        out.waiting |= self.queue.in_flight() > 0;
        out
    }

    fn poll_rebuild(&mut self) {
        let Some(r) = &mut self.rebuild else {
            self.phase = Phase::Idle;
            return;
        };
        let budget = self.cfg.poll_budget;
        let Some(res) = r.poll(&mut self.queue, &self.pool, self.link.as_ref(), budget) else {
            return;
        };
        let (d, lap) = (self.cap, res.hand / self.cap);
        self.lap = lap;
        self.hand = res.hand - lap * d;
        self.next_write = res.next_write;
        self.log_blocks = res.batches.iter().map(Batch::blocks).sum();
        self.log = res.batches.into();
        self.header.next_write = res.next_write;
        let rc = r.counters;
        self.counters.add(&rc);
        self.rebuild = None;
        self.phase = Phase::Idle;
        self.start_journal(
            res.next_log,
            Durable {
                seq: res.newest_log,
                hand: res.hand,
                evict: res.evict,
            },
        );
    }

    /// Answers the reactors whose records are durable (or `lost`).
    fn acks(&self, acks: Vec<(usize, u64)>, lost: bool) {
        let mut per: HashMap<usize, Vec<u64>> = HashMap::new();
        for (from, token) in acks {
            per.entry(from).or_default().push(token);
        }
        for (to, tokens) in per {
            self.link.send(
                to,
                L2Msg::Durable {
                    dev: self.dev,
                    tokens,
                    lost,
                },
            );
        }
    }

    /// Logs that the key with `hash` is dead; reactor `from` hears of
    /// `token` once that is durable.
    pub(crate) fn record(&mut self, hash: u64, from: usize, token: u64) {
        if !self.picks.is_empty() {
            self.killed.insert(hash);
        }
        self.unpack_dead(hash);
        match &mut self.journal {
            Some(j) => j.record(&mut self.queue, hash, from, token),
            None if self.phase == Phase::Rebuilding => self.records.push((hash, from, token)),
            None => self.acks(vec![(from, token)], false),
        }
    }

    /// Reads the device's first block to see whether it answers again
    /// (an answer in time heals it, see `device::deadline`).
    fn probe(&mut self) {
        if self.probing.is_some() {
            return;
        }
        let bs = self.placement.block_size;
        let Some(buf) = self.pool.alloc(bs as usize) else {
            return;
        };
        self.probing = Some(Instant::now());
        self.counters.l2_probes += 1;
        let tag = self.tag(TAG_PROBE);
        self.queue.submit(
            tag,
            IoOp::Read {
                offset: 0,
                len: bs,
                buf,
            },
        );
    }

    /// The tag of this feeder's next request of `kind` (0: a feed write).
    fn tag(&mut self, kind: u64) -> u64 {
        self.next_tag += 1;
        journal::tag(kind, self.next_tag)
    }

    /// A probe completed: in time, the device is healthy again.
    fn probe_done(&mut self, c: Completion) {
        let Some(since) = self.probing.take() else {
            return;
        };
        if c.result.is_ok()
            && since.elapsed() <= self.cfg.read_deadline
            && self.shared.health.recovered()
        {
            self.counters.l2_degraded_recoveries += 1;
            self.due = true;
            log::info!(
                "L2 device {} answers again; reads and feeding resume",
                self.shared.info.name
            );
        }
    }

    /// Gives up on every request in flight and stops, at a shutdown past
    /// its time limit. Returns how many requests were abandoned.
    pub(crate) fn abandon(&mut self) -> usize {
        let n = self.queue.abandon_all();
        self.abort_picks();
        self.writes.clear();
        self.shared.writes_in_flight.store(0, Relaxed);
        self.journal = None;
        self.rebuild = None;
        self.phase = Phase::Closed;
        n
    }

    fn on_complete(&mut self, c: Completion) {
        match c.tag >> journal::TAG_KIND_SHIFT {
            0 => self.on_write_done(c),
            TAG_PROBE => self.probe_done(c),
            TAG_TRIM => self.trim_done(c),
            TAG_REBUILD => match &mut self.rebuild {
                Some(r) => r.on_read(c),
                None => log::error!("L2 feeder {}: stray rebuild read", self.dev),
            },
            _ => match &mut self.journal {
                Some(j) => j.on_complete(&mut self.queue, c),
                None => log::error!("L2 feeder {}: stray log completion", self.dev),
            },
        }
    }

    /// The feed timer of generation `gen` fired.
    pub(crate) fn on_timer(&mut self, gen: u64) {
        if gen == self.timer_gen && self.phase == Phase::Idle {
            self.due = true;
        }
    }

    /// A timer for the next feed at `at`: (time, generation).
    fn arm(&mut self, at: Instant) -> (Instant, u64) {
        self.due = false;
        self.timer_gen += 1;
        (at, self.timer_gen)
    }

    /// Starts a cycle, or, with nothing to write yet, returns when to try.
    fn start_cycle(&mut self, now: Instant) -> Option<(Instant, u64)> {
        let cfg = &self.cfg;
        let elapsed = self
            .last_feed
            .map_or(cfg.feed_interval, |t| (now - t).min(cfg.feed_interval))
            .as_secs_f64();
        let mut rate = cfg.write_max as f64;
        if !self.warm {
            rate += cfg.write_boost as f64;
        }
        self.last_feed = Some(now);
        self.target = ((rate * elapsed) as u64).min(self.cap / 4);
        if let Some(dwpd) = cfg.dwpd {
            let c = self.counters();
            let room = self.wear.room(
                now,
                dwpd * self.cap as f64 / 86_400.0,
                cfg.feed_interval,
                c.l2_dev_write_bytes,
            );
            // The picks are logical bytes; the device sees them compressed,
            // padded and logged, at the ratio seen so far.
            let per_device_byte = if c.l2_dev_write_bytes > 0 && c.l2_feed_bytes > 0 {
                c.l2_feed_bytes as f64 / c.l2_dev_write_bytes as f64
            } else {
                1.0
            };
            self.target = self.target.min((room * per_device_byte) as u64);
        }
        if self.target == 0 {
            let interval = cfg.feed_interval;
            return Some(self.arm(now + interval));
        }
        self.due = false;
        self.counters.l2_feeds += 1;
        let want = self.target.div_ceil(self.shards as u64);
        let rules = PickRules {
            want,
            scan: want.saturating_mul(cfg.headroom),
            noprefetch: cfg.noprefetch,
            mfuonly: cfg.mfuonly,
        };
        self.seq += 1;
        self.awaited = self.shards;
        self.phase = Phase::Scanning;
        for to in 0..self.shards {
            self.link.send(
                to,
                L2Msg::Scan {
                    dev: self.dev,
                    feeder: self.me,
                    seq: self.seq,
                    rules,
                    from: PickCursor::default(),
                    budget: self.cfg.poll_budget,
                },
            );
        }
        None
    }

    /// Ends a cycle; returns the timer of the next feed.
    fn finish_cycle(&mut self, now: Instant) -> (Instant, u64) {
        self.phase = Phase::Idle;
        self.killed.clear();
        let (ok, failed) = (self.cycle_ok, self.cycle_failed);
        (self.cycle_ok, self.cycle_failed) = (0, 0);
        if failed > 0 && ok == 0 {
            // Every write of the cycle failed (a device gone, a controller
            // resetting): back off, doubling up to MAX_WRITE_BACKOFF, rather
            // than compress blocks for writes that will fail too.
            let b = self
                .backoff
                .map_or(self.cfg.feed_interval, |b| b * 2)
                .min(MAX_WRITE_BACKOFF);
            if self.backoff.is_none() {
                log::warn!(
                    "L2 device {}: every feed write failed; retrying in {b:?}, backing off up to {MAX_WRITE_BACKOFF:?}",
                    self.shared.info.name
                );
            }
            self.backoff = Some(b);
            self.wrote = 0;
            return self.arm(now + b);
        }
        if ok > 0 && self.backoff.take().is_some() {
            log::info!(
                "L2 device {}: feed writes succeed again",
                self.shared.info.name
            );
        }
        let again = self.wrote * 2 > self.target;
        let interval = if again {
            self.cfg.feed_min_interval
        } else {
            self.cfg.feed_interval
        };
        self.wrote = 0;
        let at = self.last_feed.unwrap_or(now) + interval;
        self.arm(at)
    }

    /// A shard's reply to `Scan`: one slice of it, or (`last`) its end.
    pub(crate) fn on_picked(&mut self, seq: u64, picks: Vec<L2Pick<Buf>>, warm: bool, last: bool) {
        if seq != self.seq || self.phase != Phase::Scanning {
            // A cycle abandoned at shutdown: release the blocks.
            for p in picks {
                self.send_done(vec![(p.idx, p.hash, None)]);
            }
            return;
        }
        self.warm |= warm;
        self.picks.extend(picks);
        if !last {
            return;
        }
        self.awaited -= 1;
        if self.awaited == 0 {
            self.plan();
        }
    }

    /// A shard's staging queue is filling up: feed at the next poll.
    pub(crate) fn on_kick(&mut self) {
        if self.phase == Phase::Idle && self.backoff.is_none() {
            self.due = true;
            // The timer armed for the regular feed no longer counts.
            self.timer_gen += 1;
        }
    }

    /// A shard's acknowledgement of `Evict`.
    pub(crate) fn on_evict_ack(&mut self, seq: u64) {
        if seq == self.seq && self.phase == Phase::Evicting {
            self.awaited -= 1;
            if self.awaited == 0 {
                self.fence();
            }
        }
    }

    /// Nothing can read the region any more: with a log, make its end the
    /// durable evict position first.
    fn fence(&mut self) {
        match &mut self.journal {
            Some(j) if !self.picks.is_empty() => {
                j.fence(self.lap * self.cap + self.evict_end);
                self.phase = Phase::Fencing;
            }
            _ => self.start_writing(),
        }
    }

    /// The region can be written: first discard what lies past it, up to
    /// where this cycle evicted (nothing references it any more, and no
    /// restart can bring it back).
    fn start_writing(&mut self) {
        self.phase = Phase::Writing;
        let bs = self.placement.block_size;
        let (start, end) = (
            self.region_end.next_multiple_of(bs),
            self.evict_end / bs * bs,
        );
        // A TRIM is advisory: a bounded one finishes well within the
        // write deadline on any device that does them.
        let end = end.min(start + MAX_TRIM);
        if end <= start || self.trim_unsupported {
            return;
        }
        let tag = self.tag(TAG_TRIM);
        self.trim = Some((tag, false));
        self.counters.l2_trims += 1;
        self.counters.l2_trim_bytes += end - start;
        self.queue.submit(
            tag,
            IoOp::Discard {
                offset: self.data_offset + start,
                len: end - start,
            },
        );
    }

    /// True while this cycle's discard may still run on the device.
    fn trimming(&mut self) -> bool {
        match self.trim {
            Some((_, false)) => true,
            Some((tag, true)) if self.queue.is_abandoned(tag) => true,
            _ => {
                self.trim = None;
                false
            }
        }
    }

    /// A discard ahead of the hand completed (or timed out: then it may
    /// still run, and the cycle waits until the device lets go of it).
    fn trim_done(&mut self, c: Completion) {
        let timed_out = matches!(c.result, Err(DeviceError::TimedOut { .. }));
        self.trim = match self.trim {
            Some((tag, _)) if tag == c.tag && timed_out => Some((tag, true)),
            _ => None,
        };
        if let Err(e) = c.result {
            self.counters.l2_trim_errors += 1;
            if !self.trim_unsupported {
                log::warn!(
                    "L2 device {}: discard ahead of the hand failed ({e}); trimming stops for it",
                    self.shared.info.name
                );
            }
            self.trim_unsupported = true;
        }
    }

    fn plan(&mut self) {
        // Keep one cycle to at most a quarter of the data ring.
        let mut need = self
            .placement
            .room_needed(self.picks.iter().map(|p| u64::from(p.size)));
        while need > self.cap / 4 {
            let drop_n = self.picks.len().div_ceil(4).max(1);
            let dropped: Vec<_> = self
                .picks
                .drain(self.picks.len() - drop_n..)
                .map(|p| (p.idx, p.hash, None))
                .collect();
            self.send_done(dropped);
            need = self
                .placement
                .room_needed(self.picks.iter().map(|p| u64::from(p.size)));
        }
        if self.picks.is_empty() {
            self.phase = Phase::Writing;
            return;
        }
        if self.hand + need > self.cap {
            self.lap += 1;
            self.hand = 0;
        }
        self.region_end = self.hand + need;
        let ahead = need.saturating_mul(u64::from(self.cfg.trim_ahead)) / 100;
        self.evict_end = if self.trim_unsupported {
            self.region_end
        } else {
            self.region_end.saturating_add(ahead).min(self.cap)
        };
        let logical_end = self.lap * self.cap + self.evict_end;
        // Every logged batch that starts before the region's end, one lap
        // back, is overwritten (or older): drop its blocks' L2 copies.
        let mut ranges: Vec<Vec<(u64, u64, Vec<u32>)>> = vec![Vec::new(); self.shards];
        while let Some(b) = self.log.front() {
            if b.logical + self.cap >= logical_end {
                break;
            }
            let b = self.log.pop_front().expect("front exists");
            self.log_blocks -= b.blocks();
            for (s, hashes) in b.hashes.into_iter().enumerate() {
                if !hashes.is_empty() {
                    ranges[s].push((b.start, b.end, hashes));
                }
            }
        }
        self.seq += 1;
        self.awaited = 0;
        for (to, r) in ranges.into_iter().enumerate() {
            if !r.is_empty() {
                self.awaited += 1;
                self.link.send(
                    to,
                    L2Msg::Evict {
                        dev: self.dev,
                        feeder: self.me,
                        seq: self.seq,
                        ranges: r,
                        from: (0, 0),
                        budget: self.cfg.poll_budget,
                    },
                );
            }
        }
        if self.awaited == 0 {
            self.fence();
        } else {
            self.phase = Phase::Evicting;
        }
    }

    /// Packs picked blocks into write buffers and submits them, keeping
    /// `writes_in_flight` in flight, for at most `poll_budget` per call
    /// (at least one block): a buffer whose LZ4 takes longer is packed
    /// over several polls, and the reactor serves its requests between
    /// them. (Packing a 1 MiB buffer in one go took 0.65 ms; every request
    /// that came meanwhile waited for it.)
    fn fill_writes(&mut self) -> bool {
        let t0 = Instant::now();
        let budget = self.cfg.poll_budget;
        let mut busy = false;
        loop {
            if self.packing.is_none() {
                if self.writes.len() >= self.cfg.writes_in_flight
                    || self.picks.is_empty()
                    || (busy && t0.elapsed() >= budget)
                {
                    return busy;
                }
                if !self.start_packing() {
                    return true;
                }
            }
            busy = true;
            if !self.pack_some(t0, budget) {
                return true; // out of time; the buffer waits for the next poll
            }
            self.finish_packing();
        }
    }

    /// Starts a write buffer at the hand. False when the pool has none
    /// (the cycle's picks are given up).
    fn start_packing(&mut self) -> bool {
        let bs = self.placement.block_size;
        let first = u64::from(self.picks[0].size).next_multiple_of(bs);
        let want = self.placement.write_size.max(first) as usize;
        let Some(wbuf) = self.pool.alloc(want) else {
            self.counters.l2_abort_lowmem += 1;
            self.abort_picks();
            return false;
        };
        let room = (want as u64).min(wbuf.capacity() as u64 / bs * bs) as usize;
        let write_seq = self.next_write;
        self.next_write += 1;
        self.packing = Some(Packing {
            wbuf,
            room,
            base: self.hand,
            write_seq,
            pos: 0,
            blocks: Vec::new(),
            entries: Vec::new(),
        });
        true
    }

    /// Packs picks into the buffer under way until it is full or the
    /// picks run out (true), or `budget` from `t0` has passed (false).
    fn pack_some(&mut self, t0: Instant, budget: Duration) -> bool {
        let Some(mut w) = self.packing.take() else {
            return true;
        };
        let done = self.pack_into(&mut w, t0, budget);
        self.packing = Some(w);
        done
    }

    fn pack_into(&mut self, w: &mut Packing, t0: Instant, budget: Duration) -> bool {
        let slice = w.wbuf.as_mut_slice();
        while let Some(p) = self.picks.front() {
            let size = p.size as usize;
            let start = self.placement.place(w.pos as u64, u64::from(p.size)) as usize;
            if start + size > w.room {
                return true;
            }
            let p = self.picks.pop_front().expect("front exists");
            if self.killed.contains(&p.hash) {
                // Invalidated or replaced since it was picked: its record
                // is in the log already, so its entry may not follow.
                self.send_done(vec![(p.idx, p.hash, None)]);
                continue;
            }
            self.counters.l2_feed_bytes += u64::from(p.size);
            let dst = &mut slice[start..start + size];
            let packed = match compress::pack(&p.data, dst, L2_SECTOR as usize, self.cfg.compress) {
                Ok(packed) => packed,
                Err(e) => {
                    log::error!("L2 feed: {e}");
                    self.send_done(vec![(p.idx, p.hash, None)]);
                    continue;
                }
            };
            match packed.encoding {
                Encoding::Empty => self.counters.l2_compress_zeros += 1,
                Encoding::Lz4 => self.counters.l2_compress_successes += 1,
                Encoding::Raw => self.counters.l2_compress_failures += 1,
            }
            self.counters.l2_stored_bytes += packed.len as u64;
            let stored = &slice[start..start + packed.len];
            let cksum = checksum(p.tag, w.write_seq as u32, stored);
            let loc = L2Loc::at(
                self.dev,
                self.data_offset + w.base + start as u64,
                packed.encoding,
                packed.len as u32,
                p.size,
            )
            .written(w.write_seq, cksum, p.mfu);
            w.entries.push(LogItem::Entry {
                hash: p.hash,
                cksum,
                rel_sectors: (start as u64 / L2_SECTOR) as u16,
                psize: packed.len as u32,
                lsize: p.size,
                encoding: packed.encoding,
                mfu: p.mfu,
            });
            w.blocks.push((p.idx, p.hash, loc));
            w.pos = start + packed.len;
            if t0.elapsed() >= budget {
                self.counters.l2_feed_slices += 1;
                return self.picks.is_empty();
            }
        }
        true
    }

    /// Logs and submits the buffer under way.
    fn finish_packing(&mut self) {
        let Some(Packing {
            wbuf,
            base,
            write_seq,
            pos,
            blocks,
            entries,
            ..
        }) = self.packing.take()
        else {
            return;
        };
        let bs = self.placement.block_size;
        let len = pos.next_multiple_of(bs as usize);
        if base + len as u64 > self.region_end {
            // The planned room was too small: a bug, but never one that
            // overwrites data a shard may still read.
            log::error!(
                "L2 feed on {}: write of {len} B at {base} passes the planned region end {}; dropping the cycle",
                self.shared.info.name,
                self.region_end
            );
            let done = blocks.into_iter().map(|(i, h, _)| (i, h, None)).collect();
            self.send_done(done);
            self.abort_picks();
            return;
        }
        let logical = self.lap * self.cap + base;
        let write = LogItem::Write {
            logical,
            seq: write_seq,
            sectors: (len as u64 / L2_SECTOR) as u32,
        };
        if len == 0 {
            // Only EMPTY blocks: nothing to write, but their log, and a
            // batch of no length at the hand, so that they leave the
            // L2-only table when the hand comes round.
            if let Some(j) = &mut self.journal {
                j.log_write(&mut self.queue, write, &entries);
            }
            let at = self.data_offset + base;
            let mut batch = Batch::new(at, at, logical, self.shards);
            for (_, hash, _) in &blocks {
                batch.add(shard_of(*hash, self.shards), *hash);
                self.log_blocks += 1;
            }
            self.log.push_back(batch);
            let done = blocks
                .into_iter()
                .map(|(i, h, l)| (i, h, Some(l)))
                .collect();
            self.send_done(done);
            return;
        }
        let mut wbuf = wbuf;
        wbuf.as_mut_slice()[pos..len].fill(0);
        let buf = wbuf.freeze(len);
        let mut done: Vec<Vec<(HeaderIdx, L2Loc)>> = vec![Vec::new(); self.shards];
        let mut batch = Batch::new(
            self.data_offset + base,
            self.data_offset + base + len as u64,
            logical,
            self.shards,
        );
        for (idx, hash, loc) in blocks {
            let s = shard_of(hash, self.shards);
            done[s].push((idx, loc));
            batch.add(s, hash);
            self.log_blocks += 1;
        }
        self.log.push_back(batch);
        // Logged when submitted, so that a record that comes later lands
        // after its entries (one that came while the buffer was packed
        // took its block out, see `record`); an entry whose write never
        // completes fails its checksum when read.
        if let Some(j) = &mut self.journal {
            j.log_write(&mut self.queue, write, &entries);
        }
        let tag = self.tag(0);
        self.writes.insert(tag, InFlight { done });
        self.hand = base + len as u64;
        self.wrote += len as u64;
        self.counters.l2_writes_sent += 1;
        self.counters.l2_dev_write_bytes += len as u64;
        self.shared.writes_in_flight.fetch_add(1, Relaxed);
        self.queue.submit(
            tag,
            IoOp::Write {
                offset: self.data_offset + base,
                buf,
            },
        );
    }

    /// The key with `hash` was invalidated or replaced: a block of it in
    /// the buffer under way leaves it (its bytes stay, unreferenced), so
    /// that no entry of it follows the record in the log.
    fn unpack_dead(&mut self, hash: u64) {
        let Some(w) = self.packing.as_mut() else {
            return;
        };
        let mut gone = Vec::new();
        w.blocks.retain(|&(idx, h, _)| {
            if h == hash {
                gone.push((idx, h, None));
            }
            h != hash
        });
        w.entries
            .retain(|e| !matches!(e, LogItem::Entry { hash: h, .. } if *h == hash));
        if !gone.is_empty() {
            self.send_done(gone);
        }
    }

    /// A feed write completed.
    fn on_write_done(&mut self, c: Completion) {
        let Some(w) = self.writes.remove(&c.tag) else {
            log::error!("L2 feeder {}: unknown write tag {:x}", self.dev, c.tag);
            return;
        };
        self.shared.writes_in_flight.fetch_sub(1, Relaxed);
        let ok = c.result.is_ok();
        if ok {
            self.cycle_ok += 1;
        } else {
            self.cycle_failed += 1;
        }
        // A write that timed out has its buffer held by the queue until
        // the device lets go of it (`IoBuf::Held`).
        if let IoBuf::Write(buf) = c.buf {
            if ok {
                self.counters.l2_writes_done += 1;
                self.counters.l2_write_bytes += buf.len() as u64;
            }
            // Only now that the device gave it back may it return to the pool.
            self.fow.push(buf);
        }
        if let Err(e) = &c.result {
            self.counters.l2_writes_error += 1;
            log::warn!("L2 feed write failed: {e}; its blocks get no L2 copy");
        }
        for (to, entries) in w.done.into_iter().enumerate() {
            if !entries.is_empty() {
                let entries = entries
                    .into_iter()
                    .map(|(i, l)| (i, ok.then_some(l)))
                    .collect();
                self.link.send(
                    to,
                    L2Msg::Done {
                        dev: self.dev,
                        entries,
                    },
                );
            }
        }
    }

    /// Releases every picked block without writing it, those packed into
    /// the buffer under way too (the buffer is dropped).
    fn abort_picks(&mut self) {
        let packed = self.packing.take().into_iter().flat_map(|w| w.blocks);
        let all = packed
            .map(|(i, h, _)| (i, h, None))
            .chain(self.picks.drain(..).map(|p| (p.idx, p.hash, None)))
            .collect();
        self.send_done(all);
    }

    /// Sends done messages for `(header, key hash, location)` triples,
    /// grouped by owning shard.
    fn send_done(&self, blocks: Vec<(HeaderIdx, u64, Option<L2Loc>)>) {
        let mut per: Vec<Vec<(HeaderIdx, Option<L2Loc>)>> = vec![Vec::new(); self.shards];
        for (idx, hash, loc) in blocks {
            per[shard_of(hash, self.shards)].push((idx, loc));
        }
        for (to, entries) in per.into_iter().enumerate() {
            if !entries.is_empty() {
                self.link.send(
                    to,
                    L2Msg::Done {
                        dev: self.dev,
                        entries,
                    },
                );
            }
        }
    }
}
