//! The L2 feeder of one device, run by one reactor (ZFS's
//! `l2arc_feed_thread`, as a state machine driven by messages):
//!
//! 1. `Idle` → at the feed time, send `L2Scan` to every shard.
//! 2. `Scanning` → the `L2Picked` replies are the deferred write list.
//!    Plan the region the blocks may take, wrapping the hand at the end of
//!    the device, and send `L2Evict` for every logged batch the region
//!    overwrites.
//! 3. `Evicting` → once every shard acknowledged (after its reads of the
//!    range completed), nothing can read the region any more.
//! 4. `Writing` → pack the blocks (LZ4, EMPTY, raw) into large aligned
//!    writes, a few in flight at a time. On each completion send `L2Done`
//!    to the owning shards and put the buffer on the free-on-write ring.
//!    When all are done, back to `Idle`.

use super::{checksum, DevShared, L2Config, L2Counters, WRITE_TAG};
use crate::bufpool::{Buf, BufPool, FreeOnWrite};
use crate::compress::{self, Encoding};
use crate::core::Msg;
use crate::device::{Completion, DeviceQueue, IoBuf, IoOp};
use crate::reactor::Mailbox;
use crate::shard::{shard_of, HeaderIdx, L2Loc, L2Pick, PickRules, L2_SECTOR};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a feeder needs from its reactor for one step.
pub(crate) struct FeedCtx<'a> {
    pub me: usize,
    pub peers: &'a [Arc<Mailbox<Msg>>],
    pub pool: &'a BufPool,
    pub queue: &'a mut dyn DeviceQueue,
    pub counters: &'a mut L2Counters,
    pub stopping: bool,
}

impl FeedCtx<'_> {
    fn send(&self, to: usize, msg: Msg) {
        // A reactor that has shut down drops the message, and with it any
        // buffer reference it carries.
        let _ = self.peers[to].send(msg);
    }
}

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

struct InFlight {
    done: DoneList,
}

/// One device's feeder.
pub(crate) struct Feeder {
    pub dev: u8,
    shared: Arc<DevShared>,
    cfg: Arc<L2Config>,
    shards: usize,
    bs: u64,
    cap: u64,
    write_size: usize,
    max_span: u64,
    hand: u64,
    lap: u64,
    /// The region planned for this cycle's writes ends here.
    region_end: u64,
    log: VecDeque<Batch>,
    log_blocks: u64,
    phase: Phase,
    last_feed: Option<Instant>,
    next_feed: Option<Instant>,
    seq: u64,
    due: usize,
    warm: bool,
    target: u64,
    wrote: u64,
    picks: VecDeque<L2Pick<Buf>>,
    writes: HashMap<u64, InFlight>,
    next_tag: u64,
    fow: FreeOnWrite,
    /// Feed writes of the current cycle that succeeded and failed.
    cycle_ok: u32,
    cycle_failed: u32,
    /// Set while every write fails: the wait before the next cycle.
    backoff: Option<Duration>,
}

/// The longest wait between feed cycles while every write fails.
pub(crate) const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);

impl Feeder {
    pub(crate) fn new(
        dev: u8,
        shared: Arc<DevShared>,
        cfg: Arc<L2Config>,
        shards: usize,
        pool: &BufPool,
    ) -> Feeder {
        let bs = u64::from(shared.info.block_size);
        let cap = shared.info.capacity.min(crate::shard::L2_MAX_OFFSET) / bs * bs;
        let max_span = pool.max_buf() as u64;
        let write_size = (cfg.write_size as u64).clamp(bs, max_span) / bs * bs;
        Feeder {
            dev,
            shared,
            cfg,
            shards,
            bs,
            cap,
            write_size: write_size as usize,
            max_span,
            hand: 0,
            lap: 0,
            region_end: 0,
            log: VecDeque::new(),
            log_blocks: 0,
            phase: Phase::Idle,
            last_feed: None,
            next_feed: None,
            seq: 0,
            due: 0,
            warm: false,
            target: 0,
            wrote: 0,
            picks: VecDeque::new(),
            writes: HashMap::new(),
            next_tag: 0,
            fow: FreeOnWrite::default(),
            cycle_ok: 0,
            cycle_failed: 0,
            backoff: None,
        }
    }

    /// True when no write is in flight and no cycle is under way.
    pub(crate) fn idle(&self) -> bool {
        self.writes.is_empty() && self.picks.is_empty()
    }

    /// True while idle between cycles with the next feed not yet due to
    /// be started at once (no kick).
    pub(crate) fn waiting(&self) -> bool {
        self.phase == Phase::Idle && self.next_feed.is_some()
    }

    /// When the next feed is due, while idle between cycles.
    pub(crate) fn next_feed(&self) -> Option<Instant> {
        (self.phase == Phase::Idle)
            .then_some(self.next_feed)
            .flatten()
    }

    /// Bytes of the log (its hashes), for `l2_log_bytes`.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_blocks * 4
    }

    /// Runs the feeder for one reactor loop iteration. True when it did work.
    pub(crate) fn poll(&mut self, now: Instant, ctx: &mut FeedCtx<'_>) -> bool {
        let freed = self.fow.drain();
        ctx.counters.l2_free_on_write += freed;
        let mut busy = freed > 0;
        match self.phase {
            Phase::Idle if ctx.stopping => {}
            Phase::Idle if self.next_feed.is_none_or(|t| now >= t) => {
                self.start_cycle(now, ctx);
                busy = true;
            }
            Phase::Idle => {}
            Phase::Scanning | Phase::Evicting if ctx.stopping => {
                // Replies may never come from reactors that have stopped.
                self.abort_picks(ctx);
                self.phase = Phase::Idle;
            }
            Phase::Scanning | Phase::Evicting => {}
            Phase::Writing => {
                let t = Instant::now();
                busy |= self.fill_writes(ctx);
                ctx.counters.l2_feed_ns += t.elapsed().as_nanos() as u64;
                if self.picks.is_empty() && self.writes.is_empty() {
                    self.finish_cycle(now);
                    busy = true;
                }
            }
        }
        busy
    }

    fn start_cycle(&mut self, now: Instant, ctx: &mut FeedCtx<'_>) {
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
            self.next_feed = Some(now + cfg.feed_interval);
            return;
        }
        ctx.counters.l2_feeds += 1;
        let want = self.target.div_ceil(self.shards as u64);
        let rules = PickRules {
            want,
            scan: want.saturating_mul(cfg.headroom),
            noprefetch: cfg.noprefetch,
            mfuonly: cfg.mfuonly,
        };
        self.seq += 1;
        self.due = self.shards;
        self.phase = Phase::Scanning;
        for to in 0..self.shards {
            ctx.send(
                to,
                Msg::L2Scan {
                    dev: self.dev,
                    feeder: ctx.me,
                    seq: self.seq,
                    rules,
                },
            );
        }
    }

    fn finish_cycle(&mut self, now: Instant) {
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
            self.next_feed = Some(now + b);
            self.wrote = 0;
            return;
        }
        if ok > 0 && self.backoff.take().is_some() {
            log::info!(
                "L2 device {}: feed writes succeed again",
                self.shared.info.name
            );
        }
        let again = self.wrote * 2 > self.target;
        self.next_feed = Some(
            self.last_feed.unwrap_or(now)
                + if again {
                    self.cfg.feed_min_interval
                } else {
                    self.cfg.feed_interval
                },
        );
        self.wrote = 0;
    }

    /// A shard's reply to `L2Scan`.
    pub(crate) fn on_picked(
        &mut self,
        seq: u64,
        picks: Vec<L2Pick<Buf>>,
        warm: bool,
        ctx: &mut FeedCtx<'_>,
    ) {
        if seq != self.seq || self.phase != Phase::Scanning {
            // A cycle abandoned at shutdown: release the blocks.
            for p in picks {
                send_done(ctx, self.shards, self.dev, vec![(p.idx, p.hash, None)]);
            }
            return;
        }
        self.warm |= warm;
        self.picks.extend(picks);
        self.due -= 1;
        if self.due == 0 {
            self.plan(ctx);
        }
    }

    /// A shard's staging queue is filling up: feed at the next poll.
    pub(crate) fn on_kick(&mut self) {
        if self.phase == Phase::Idle && self.backoff.is_none() {
            self.next_feed = None;
        }
    }

    /// A shard's acknowledgement of `L2Evict`.
    pub(crate) fn on_evict_ack(&mut self, seq: u64) {
        if seq == self.seq && self.phase == Phase::Evicting {
            self.due -= 1;
            if self.due == 0 {
                self.phase = Phase::Writing;
            }
        }
    }

    /// Where in a write buffer a block of `size` bytes goes when the
    /// buffer is filled to `pos`: the next 512-byte boundary, or the next
    /// device block when its aligned read span would otherwise exceed the
    /// largest pool buffer.
    fn place(&self, pos: u64, size: u64) -> u64 {
        let start = pos.next_multiple_of(L2_SECTOR);
        if (start % self.bs + size).next_multiple_of(self.bs) > self.max_span {
            pos.next_multiple_of(self.bs)
        } else {
            start
        }
    }

    /// The room the picked blocks may take: the packing of
    /// [`Feeder::fill_writes`] with every block raw (compression only
    /// shrinks them), plus one block of slack.
    fn room_needed(&self, sizes: impl Iterator<Item = u64>) -> u64 {
        let (bs, ws) = (self.bs, self.write_size as u64);
        let mut total = 0u64;
        let mut pos = 0u64;
        let mut room = 0u64;
        for size in sizes {
            loop {
                if room == 0 {
                    room = ws.max(size.next_multiple_of(bs));
                    pos = 0;
                }
                let start = self.place(pos, size);
                if start + size > room {
                    total += pos.next_multiple_of(bs);
                    room = 0;
                    continue;
                }
                pos = start + size;
                break;
            }
        }
        total + pos.next_multiple_of(bs) + bs
    }

    fn plan(&mut self, ctx: &mut FeedCtx<'_>) {
        // Keep one cycle to at most a quarter of the device.
        let mut need = self.room_needed(self.picks.iter().map(|p| u64::from(p.size)));
        while need > self.cap / 4 {
            let drop_n = self.picks.len().div_ceil(4).max(1);
            let dropped: Vec<_> = self
                .picks
                .drain(self.picks.len() - drop_n..)
                .map(|p| (p.idx, p.hash, None))
                .collect();
            send_done(ctx, self.shards, self.dev, dropped);
            need = self.room_needed(self.picks.iter().map(|p| u64::from(p.size)));
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
        self.due = 0;
        for (to, r) in ranges.into_iter().enumerate() {
            if !r.is_empty() {
                self.due += 1;
                ctx.send(
                    to,
                    Msg::L2Evict {
                        dev: self.dev,
                        feeder: ctx.me,
                        seq: self.seq,
                        ranges: r,
                    },
                );
            }
        }
        self.phase = if self.due == 0 {
            Phase::Writing
        } else {
            Phase::Evicting
        };
    }

    /// Packs picked blocks into write buffers and submits them, keeping
    /// `writes_in_flight` in flight.
    fn fill_writes(&mut self, ctx: &mut FeedCtx<'_>) -> bool {
        let mut busy = false;
        // One write buffer per reactor loop iteration: packing several in a
        // row (about 0.65 ms of LZ4 each) held the reactor's reads behind
        // it (L2-hit p99 3.7 ms with one reactor).
        while !busy && self.writes.len() < self.cfg.writes_in_flight && !self.picks.is_empty() {
            busy = true;
            let first = u64::from(self.picks[0].size).next_multiple_of(self.bs);
            let want = (self.write_size as u64).max(first) as usize;
            let Some(mut wbuf) = ctx.pool.alloc(want) else {
                ctx.counters.l2_abort_lowmem += 1;
                self.abort_picks(ctx);
                break;
            };
            let room = (want as u64).min(wbuf.capacity() as u64 / self.bs * self.bs) as usize;
            let base = self.hand;
            let slice = wbuf.as_mut_slice();
            let mut pos = 0usize;
            let mut blocks: Vec<(HeaderIdx, u64, L2Loc)> = Vec::new();
            while let Some(p) = self.picks.front() {
                let size = p.size as usize;
                let start = self.place(pos as u64, u64::from(p.size)) as usize;
                if start + size > room {
                    break;
                }
                let p = self.picks.pop_front().expect("front exists");
                ctx.counters.l2_feed_bytes += u64::from(p.size);
                let dst = &mut slice[start..start + size];
                let packed =
                    match compress::pack(&p.data, dst, L2_SECTOR as usize, self.cfg.compress) {
                        Ok(packed) => packed,
                        Err(e) => {
                            log::error!("L2 feed: {e}");
                            send_done(ctx, self.shards, self.dev, vec![(p.idx, p.hash, None)]);
                            continue;
                        }
                    };
                match packed.encoding {
                    Encoding::Empty => ctx.counters.l2_compress_zeros += 1,
                    Encoding::Lz4 => ctx.counters.l2_compress_successes += 1,
                    Encoding::Raw => ctx.counters.l2_compress_failures += 1,
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
            let len = pos.next_multiple_of(self.bs as usize);
            if base + len as u64 > self.region_end {
                // The planned room was too small: a bug, but never one that
                // overwrites data a shard may still read.
                log::error!(
                    "L2 feed on {}: write of {len} B at {base} passes the planned region end {}; dropping the cycle",
                    self.shared.info.name,
                    self.region_end
                );
                let done = blocks.into_iter().map(|(i, h, _)| (i, h, None)).collect();
                send_done(ctx, self.shards, self.dev, done);
                self.abort_picks(ctx);
                break;
            }
            if len == 0 {
                // Only EMPTY blocks: nothing to write.
                let done = blocks
                    .into_iter()
                    .map(|(i, h, l)| (i, h, Some(l)))
                    .collect();
                send_done(ctx, self.shards, self.dev, done);
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
            let tag = WRITE_TAG | (u64::from(self.dev) << 48) | (self.next_tag & ((1 << 48) - 1));
            self.writes.insert(tag, InFlight { done });
            self.hand = base + len as u64;
            self.wrote += len as u64;
            ctx.counters.l2_writes_sent += 1;
            self.shared.writes_in_flight.fetch_add(1, Relaxed);
            ctx.queue.submit(tag, IoOp::Write { offset: base, buf });
        }
        busy
    }

    /// A feed write completed.
    pub(crate) fn on_write_done(&mut self, c: Completion, ctx: &mut FeedCtx<'_>) {
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
        if let IoBuf::Write(buf) = c.buf {
            if ok {
                ctx.counters.l2_writes_done += 1;
                ctx.counters.l2_write_bytes += buf.len() as u64;
            }
            // Only now that the device gave it back may it return to the pool.
            self.fow.push(buf);
        }
        if let Err(e) = &c.result {
            ctx.counters.l2_writes_error += 1;
            log::warn!("L2 feed write failed: {e}; its blocks get no L2 copy");
        }
        for (to, entries) in w.done.into_iter().enumerate() {
            if !entries.is_empty() {
                let entries = entries
                    .into_iter()
                    .map(|(i, l)| (i, ok.then_some(l)))
                    .collect();
                ctx.send(
                    to,
                    Msg::L2Done {
                        dev: self.dev,
                        entries,
                    },
                );
            }
        }
    }

    /// Releases every picked block without writing it.
    fn abort_picks(&mut self, ctx: &mut FeedCtx<'_>) {
        let all = self
            .picks
            .drain(..)
            .map(|p| (p.idx, p.hash, None))
            .collect();
        send_done(ctx, self.shards, self.dev, all);
    }
}

/// Sends done messages for `(header, key hash, location)` triples,
/// grouped by owning shard.
fn send_done(
    ctx: &mut FeedCtx<'_>,
    shards: usize,
    dev: u8,
    blocks: Vec<(HeaderIdx, u64, Option<L2Loc>)>,
) {
    let mut per: Vec<Vec<(HeaderIdx, Option<L2Loc>)>> = vec![Vec::new(); shards];
    for (idx, hash, loc) in blocks {
        per[shard_of(hash, shards)].push((idx, loc));
    }
    for (to, entries) in per.into_iter().enumerate() {
        if !entries.is_empty() {
            ctx.send(to, Msg::L2Done { dev, entries });
        }
    }
}
