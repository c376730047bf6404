//! The L2 feeder of one device, run by one reactor (ZFS's
//! `l2arc_feed_thread`, as a state machine driven by messages). It has a
//! queue of its own on its device, so its writes complete to it alone.
//!
//! 1. `Idle` → once a feed is due (its timer fired, or a shard kicked),
//!    send `Scan` to every shard.
//! 2. `Scanning` → the `Picked` replies are the deferred write list.
//!    Plan the region the blocks may take, wrapping the hand at the end of
//!    the device, and send `Evict` for every logged batch the region
//!    overwrites.
//! 3. `Evicting` → once every shard acknowledged (after its reads of the
//!    range completed), nothing can read the region any more.
//! 4. `Writing` → pack the blocks (LZ4, EMPTY, raw) into large aligned
//!    writes, a few in flight at a time. On each completion send `Done`
//!    to the owning shards and put the buffer on the free-on-write ring.
//!    When all are done, back to `Idle`, with the next feed's time.

use super::compress;
use super::format::{checksum, Encoding, L2Loc, Placement, L2_MAX_OFFSET, L2_SECTOR};
use super::{DevShared, L2Config, L2Counters, L2Link, L2Msg};
use crate::bufpool::{Buf, BufPool, FreeOnWrite};
use crate::device::{Completion, DeviceError, DeviceQueue, IoBuf, IoOp};
use crate::shard::{shard_of, HeaderIdx, L2Pick, PickRules};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Scanning,
    Evicting,
    Writing,
}

/// Blocks written by one feed write, kept in write order: the feeder's
/// log of the ring (ZFS's `l2ad_buflist`), 4 bytes per block.
#[derive(Debug)]
struct Batch {
    start: u64,
    end: u64,
    /// `lap × capacity + start`: increases along the log.
    logical: u64,
    /// Low 32 bits of the key hashes, per owning shard.
    hashes: Vec<Vec<u32>>,
}

type DoneList = Vec<Vec<(HeaderIdx, L2Loc)>>;

/// What one poll of a feeder did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FeedPoll {
    /// It did work, or has writes in flight.
    pub busy: bool,
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
    queue: Box<dyn DeviceQueue>,
    counters: L2Counters,
    shards: usize,
    placement: Placement,
    cap: u64,
    hand: u64,
    lap: u64,
    /// The region planned for this cycle's writes ends here.
    region_end: u64,
    log: VecDeque<Batch>,
    log_blocks: u64,
    phase: Phase,
    /// A feed is due: start a cycle at the next poll while idle.
    due: bool,
    /// Generation of the armed feed timer; a kick moves it on, so that
    /// the timer armed before is ignored.
    timer_gen: u64,
    last_feed: Option<Instant>,
    seq: u64,
    awaited: usize,
    warm: bool,
    target: u64,
    wrote: u64,
    picks: VecDeque<L2Pick<Buf>>,
    writes: HashMap<u64, DoneList>,
    next_tag: u64,
    fow: FreeOnWrite,
    done: Vec<Completion>,
    /// Feed writes of the current cycle that succeeded and failed.
    cycle_ok: u32,
    cycle_failed: u32,
    /// Set while every write fails: the wait before the next cycle.
    backoff: Option<Duration>,
}

/// The longest wait between feed cycles while every write fails.
pub(crate) const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);

impl Feeder {
    /// The feeder of device `dev`, run by reactor `me`; opens its queue.
    pub(crate) fn new(
        dev: u8,
        me: usize,
        shared: Arc<DevShared>,
        cfg: Arc<L2Config>,
        link: Arc<dyn L2Link>,
        pool: &BufPool,
    ) -> Result<Feeder, DeviceError> {
        let mut queue = shared.device.open_queue(cfg.writes_in_flight)?;
        queue.register_pool(pool)?;
        let bs = u64::from(shared.info.block_size);
        let cap = shared.info.capacity.min(L2_MAX_OFFSET) / bs * bs;
        let max_span = pool.max_buf() as u64;
        let write_size = (cfg.write_size as u64).clamp(bs, max_span) / bs * bs;
        Ok(Feeder {
            dev,
            me,
            shards: link.reactors(),
            shared,
            cfg,
            link,
            pool: pool.clone(),
            queue,
            counters: L2Counters::default(),
            placement: Placement {
                block_size: bs,
                max_span,
                write_size,
            },
            cap,
            hand: 0,
            lap: 0,
            region_end: 0,
            log: VecDeque::new(),
            log_blocks: 0,
            phase: Phase::Idle,
            due: true,
            timer_gen: 0,
            last_feed: None,
            seq: 0,
            awaited: 0,
            warm: false,
            target: 0,
            wrote: 0,
            picks: VecDeque::new(),
            writes: HashMap::new(),
            next_tag: 0,
            fow: FreeOnWrite::default(),
            done: Vec::new(),
            cycle_ok: 0,
            cycle_failed: 0,
            backoff: None,
        })
    }

    /// True when no write is in flight and no cycle is under way.
    pub(crate) fn idle(&self) -> bool {
        self.writes.is_empty() && self.picks.is_empty() && self.queue.in_flight() == 0
    }

    /// Bytes of the log (its hashes), for `l2_log_bytes`.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_blocks * 4
    }

    /// The feeder's counters (its writes and evictions).
    pub(crate) fn counters(&self) -> &L2Counters {
        &self.counters
    }

    /// Housekeeping of its queue; returns how soon it wants the next.
    pub(crate) fn tick(&mut self, now: Instant) -> Duration {
        self.queue.tick(now)
    }

    /// Runs the feeder for one reactor loop iteration, at time `now`; while
    /// `stopping`, it starts no cycle.
    pub(crate) fn poll(&mut self, now: Instant, stopping: bool) -> FeedPoll {
        let freed = self.fow.drain();
        self.counters.l2_free_on_write += freed;
        let mut out = FeedPoll {
            busy: freed > 0 || self.queue.in_flight() > 0,
            next_feed: None,
        };
        if self.queue.in_flight() > 0 {
            let mut done = std::mem::take(&mut self.done);
            self.queue.poll(&mut done);
            for c in done.drain(..) {
                self.on_write_done(c);
            }
            self.done = done;
        }
        match self.phase {
            Phase::Idle if stopping || !self.due => {}
            Phase::Idle => {
                out.next_feed = self.start_cycle(now);
                out.busy = true;
            }
            Phase::Scanning | Phase::Evicting if stopping => {
                // Replies may never come from reactors that have stopped.
                self.abort_picks();
                self.phase = Phase::Idle;
            }
            Phase::Scanning | Phase::Evicting => {}
            Phase::Writing => {
                let t = Instant::now();
                out.busy |= self.fill_writes();
                self.counters.l2_feed_ns += t.elapsed().as_nanos() as u64;
                if self.picks.is_empty() && self.writes.is_empty() {
                    out.next_feed = Some(self.finish_cycle(now));
                    out.busy = true;
                }
            }
        }
        out
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
        if let Some(d) = cfg.dwpd {
            rate = rate.min(d * self.cap as f64 / 86_400.0);
        }
        self.last_feed = Some(now);
        self.target = ((rate * elapsed) as u64).min(self.cap / 4);
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
                },
            );
        }
        None
    }

    /// Ends a cycle; returns the timer of the next feed.
    fn finish_cycle(&mut self, now: Instant) -> (Instant, u64) {
        self.phase = Phase::Idle;
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

    /// A shard's reply to `Scan`.
    pub(crate) fn on_picked(&mut self, seq: u64, picks: Vec<L2Pick<Buf>>, warm: bool) {
        if seq != self.seq || self.phase != Phase::Scanning {
            // A cycle abandoned at shutdown: release the blocks.
            for p in picks {
                self.send_done(vec![(p.idx, p.hash, None)]);
            }
            return;
        }
        self.warm |= warm;
        self.picks.extend(picks);
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
                self.phase = Phase::Writing;
            }
        }
    }

    fn plan(&mut self) {
        // Keep one cycle to at most a quarter of the device.
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
        let logical_end = self.lap * self.cap + self.region_end;
        // Every logged batch that starts before the region's end, one lap
        // back, is overwritten (or older): drop its blocks' L2 copies.
        let mut ranges: Vec<Vec<(u64, u64, Vec<u32>)>> = vec![Vec::new(); self.shards];
        while let Some(b) = self.log.front() {
            if b.logical + self.cap >= logical_end {
                break;
            }
            let b = self.log.pop_front().expect("front exists");
            for (s, hashes) in b.hashes.into_iter().enumerate() {
                self.log_blocks -= hashes.len() as u64;
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
                    },
                );
            }
        }
        self.phase = if self.awaited == 0 {
            Phase::Writing
        } else {
            Phase::Evicting
        };
    }

    /// Packs picked blocks into write buffers and submits them, keeping
    /// `writes_in_flight` in flight.
    fn fill_writes(&mut self) -> bool {
        let mut busy = false;
        let bs = self.placement.block_size;
        // One write buffer per reactor loop iteration: packing several in a
        // row (about 0.65 ms of LZ4 each) held the reactor's reads behind
        // it (L2-hit p99 3.7 ms with one reactor).
        while !busy && self.writes.len() < self.cfg.writes_in_flight && !self.picks.is_empty() {
            busy = true;
            let first = u64::from(self.picks[0].size).next_multiple_of(bs);
            let want = self.placement.write_size.max(first) as usize;
            let Some(mut wbuf) = self.pool.alloc(want) else {
                self.counters.l2_abort_lowmem += 1;
                self.abort_picks();
                break;
            };
            let room = (want as u64).min(wbuf.capacity() as u64 / bs * bs) as usize;
            let base = self.hand;
            let slice = wbuf.as_mut_slice();
            let mut pos = 0usize;
            let mut blocks: Vec<(HeaderIdx, u64, L2Loc)> = Vec::new();
            while let Some(p) = self.picks.front() {
                let size = p.size as usize;
                let start = self.placement.place(pos as u64, u64::from(p.size)) as usize;
                if start + size > room {
                    break;
                }
                let p = self.picks.pop_front().expect("front exists");
                self.counters.l2_feed_bytes += u64::from(p.size);
                let dst = &mut slice[start..start + size];
                let packed =
                    match compress::pack(&p.data, dst, L2_SECTOR as usize, self.cfg.compress) {
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
                let stored = &slice[start..start + packed.len];
                let loc = L2Loc::new(
                    self.dev,
                    base + start as u64,
                    packed.encoding,
                    packed.len as u32,
                    p.size,
                    checksum(p.tag, stored),
                    p.mfu,
                );
                blocks.push((p.idx, p.hash, loc));
                pos = start + packed.len;
            }
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
                break;
            }
            if len == 0 {
                // Only EMPTY blocks: nothing to write.
                let done = blocks
                    .into_iter()
                    .map(|(i, h, l)| (i, h, Some(l)))
                    .collect();
                self.send_done(done);
                continue;
            }
            slice[pos..len].fill(0);
            let buf = wbuf.freeze(len);
            let mut done: DoneList = vec![Vec::new(); self.shards];
            let mut hashes: Vec<Vec<u32>> = vec![Vec::new(); self.shards];
            for (idx, hash, loc) in blocks {
                let s = shard_of(hash, self.shards);
                done[s].push((idx, loc));
                hashes[s].push(hash as u32);
                self.log_blocks += 1;
            }
            self.log.push_back(Batch {
                start: base,
                end: base + len as u64,
                logical: self.lap * self.cap + base,
                hashes,
            });
            self.next_tag += 1;
            let tag = self.next_tag;
            self.writes.insert(tag, done);
            self.hand = base + len as u64;
            self.wrote += len as u64;
            self.counters.l2_writes_sent += 1;
            self.shared.writes_in_flight.fetch_add(1, Relaxed);
            self.queue.submit(tag, IoOp::Write { offset: base, buf });
        }
        busy
    }

    /// A feed write completed.
    fn on_write_done(&mut self, c: Completion) {
        let Some(done) = self.writes.remove(&c.tag) else {
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
        for (to, entries) in done.into_iter().enumerate() {
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

    /// Releases every picked block without writing it.
    fn abort_picks(&mut self) {
        let all = self
            .picks
            .drain(..)
            .map(|p| (p.idx, p.hash, None))
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
