//! Rebuilding a device's L2 entries at start-up from its log, run by the
//! device's feeder on its own queue before it feeds (docs/l2.md):
//!
//! 1. From the header's newest log block, read forward while each next
//!    block is valid and in sequence: blocks written after the last header
//!    write are found too. The newest of them, and the header, give the
//!    evict position.
//! 2. Read the whole log ring from the oldest slot to the newest, in large
//!    reads with many in flight, and take each block that is valid,
//!    belongs to this device and carries the sequence number its slot must
//!    hold in the last lap of the log. Items are applied in log order:
//!    a write whose data the hand may since have overwritten (below the
//!    evict position, one data ring back) is dropped with its entries;
//!    the others' entries, and the invalidation records, go to the shards
//!    that own their keys as messages.
//!
//! What it cannot prove current it drops; what it lets through is still
//! checked on every read by the keyed checksum.

use super::feeder::Batch;
use super::format::{DeviceHeader, Geometry, L2Loc, LogBlock, LogError, LogItem, L2_SECTOR};
use super::{L2Counters, L2Link, L2Msg};
use crate::bufpool::{Buf, BufPool};
use crate::device::{Completion, DeviceQueue, IoBuf, IoOp};
use crate::shard::{shard_of, Rebuilt};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Rebuild reads carry this kind in their tag's top byte.
pub(crate) const TAG_REBUILD: u64 = 4;
/// Items per message to a shard.
/// Entries per `Rebuilt` message: a shard applies one message in one
/// step, about 15 µs for 256 entries here (rebuilds apply 13–15 M entries
/// a second on 2 reactors), within the reactors' 20 µs poll budget.
const ITEMS_PER_MSG: usize = 256;
/// Bytes per log read.
const CHUNK_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading forward from the header's newest block.
    FindNewest,
    /// Reading the whole ring in order.
    Stream,
    Done,
}

/// The write the items being applied belong to.
#[derive(Debug, Clone, Copy)]
struct CurrentWrite {
    logical: u64,
    seq: u64,
    len: u64,
    valid: bool,
}

/// What a finished rebuild leaves the feeder.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// The write hand (logical).
    pub hand: u64,
    /// The evict position (logical).
    pub evict: u64,
    /// The next log block's sequence number.
    pub next_log: u64,
    /// The newest log block taken.
    pub newest_log: u64,
    /// The next feed write's sequence number.
    pub next_write: u64,
    /// The writes whose blocks are back, oldest first: the feeder's
    /// eviction log.
    pub batches: Vec<Batch>,
}

/// One device's rebuild.
pub(crate) struct Rebuild {
    dev: u8,
    name: String,
    geo: Geometry,
    guid: u128,
    header: DeviceHeader,
    max_block: u32,
    shards: usize,
    chunk_blocks: u64,
    depth: usize,
    stage: Stage,
    /// FindNewest: the sequence number the next block must carry, and
    /// whether the newest block is found.
    expected: u64,
    found_newest: bool,
    newest: u64,
    evict: u64,
    /// Stream: the slot ranges to read, in order, and where we are.
    chunks: Vec<(u64, u64)>,
    next_submit: usize,
    next_apply: usize,
    arrived: HashMap<usize, Option<Buf>>,
    /// The chunk being applied, block by block, within the poll budget:
    /// (its bytes, first slot, blocks, the next block to apply).
    applying: Option<(Buf, u64, u64, u64)>,
    reads: HashMap<u64, usize>,
    next_tag: u64,
    per_shard: Vec<Vec<Rebuilt>>,
    batches: Vec<Batch>,
    current: Option<CurrentWrite>,
    hand: u64,
    max_write_seq: u64,
    /// Set at the first poll: the reactor may start some time after the
    /// rebuild is set up.
    started: Option<Instant>,
    /// `l2_rebuild_*` counters.
    pub counters: L2Counters,
}

impl Rebuild {
    /// A rebuild of device `dev` from `header`; entries larger than
    /// `max_block` are dropped; `depth` reads may be in flight.
    pub(crate) fn new(
        dev: u8,
        name: String,
        header: DeviceHeader,
        max_block: u32,
        shards: usize,
        depth: usize,
        pool: &BufPool,
    ) -> Rebuild {
        let geo = header.geometry;
        let meta = u64::from(geo.meta_block);
        let chunk_blocks = (CHUNK_BYTES.min(pool.max_buf() as u64) / meta).max(1);
        Rebuild {
            dev,
            name,
            guid: header.guid,
            geo,
            max_block,
            shards,
            chunk_blocks,
            depth: depth.max(1),
            stage: Stage::FindNewest,
            expected: header.newest_log + 1,
            found_newest: false,
            newest: header.newest_log,
            evict: header.evict,
            chunks: Vec::new(),
            next_submit: 0,
            next_apply: 0,
            arrived: HashMap::new(),
            applying: None,
            reads: HashMap::new(),
            next_tag: 0,
            per_shard: vec![Vec::new(); shards],
            batches: Vec::new(),
            current: None,
            hand: header.hand,
            max_write_seq: 0,
            started: None,
            counters: L2Counters::default(),
            header,
        }
    }

    /// Submits reads. Returns the result once the rebuild is over.
    pub(crate) fn poll(
        &mut self,
        q: &mut dyn DeviceQueue,
        pool: &BufPool,
        link: &dyn L2Link,
        budget: Duration,
    ) -> Option<Resumed> {
        self.started.get_or_insert_with(Instant::now);
        if self.found_newest && self.stage == Stage::FindNewest {
            self.start_stream(link);
        }
        match self.stage {
            Stage::FindNewest if self.reads.is_empty() => {
                let slot = self.expected % self.geo.log_blocks;
                let n = self.chunk_blocks.min(self.geo.log_blocks - slot);
                self.submit(q, pool, slot, n, usize::MAX);
            }
            Stage::Stream => {
                while self.reads.len() < self.depth && self.next_submit < self.chunks.len() {
                    let (slot, n) = self.chunks[self.next_submit];
                    self.submit(q, pool, slot, n, self.next_submit);
                    self.next_submit += 1;
                }
                // A chunk (up to 1 MiB of log, tens of thousands of
                // entries) took milliseconds in one step: apply it block by
                // block, for at most `budget` per poll (at least a block).
                let t0 = Instant::now();
                loop {
                    if self.applying.is_none() {
                        let Some(buf) = self.arrived.remove(&self.next_apply) else {
                            break;
                        };
                        let (slot, n) = self.chunks[self.next_apply];
                        self.next_apply += 1;
                        match buf {
                            Some(b) => self.applying = Some((b, slot, n, 0)),
                            None => self.counters.l2_rebuild_io_errors += 1,
                        }
                        continue;
                    }
                    let Some((b, slot, n, mut next)) = self.applying.take() else {
                        break;
                    };
                    self.apply_block(&b, slot, next, link);
                    next += 1;
                    if next < n {
                        self.applying = Some((b, slot, n, next));
                    }
                    if t0.elapsed() >= budget {
                        self.counters.l2_rebuild_slices += 1;
                        return None;
                    }
                }
                if self.next_apply == self.chunks.len()
                    && self.applying.is_none()
                    && self.reads.is_empty()
                {
                    return Some(self.finish(link));
                }
            }
            _ => {}
        }
        if self.stage == Stage::Done {
            return Some(self.finish(link));
        }
        None
    }

    fn submit(&mut self, q: &mut dyn DeviceQueue, pool: &BufPool, slot: u64, n: u64, idx: usize) {
        let len = n * u64::from(self.geo.meta_block);
        let Some(buf) = pool.alloc(len as usize) else {
            // Retried at the next poll.
            return;
        };
        self.next_tag += 1;
        let tag = super::journal::tag(TAG_REBUILD, self.next_tag);
        self.reads.insert(tag, idx);
        q.submit(
            tag,
            IoOp::Read {
                offset: self.geo.log_offset(slot),
                len,
                buf,
            },
        );
    }

    /// A read of the rebuild completed.
    pub(crate) fn on_read(&mut self, c: Completion) {
        let Some(idx) = self.reads.remove(&c.tag) else {
            log::error!("{}: unknown rebuild read {:x}", self.name, c.tag);
            return;
        };
        let data = match (c.result, c.buf) {
            (Ok(()), IoBuf::Read(b)) => {
                let len = b.capacity();
                self.counters.l2_rebuild_log_bytes += len as u64;
                Some(b.freeze(len))
            }
            (Err(e), _) => {
                log::warn!("{}: reading the log: {e}", self.name);
                None
            }
            _ => None,
        };
        if idx == usize::MAX {
            self.found_chunk(data);
        } else {
            self.arrived.insert(idx, data);
        }
    }

    /// A chunk read forward from the header's newest block.
    fn found_chunk(&mut self, data: Option<Buf>) {
        let meta = self.geo.meta_block as usize;
        let slot = self.expected % self.geo.log_blocks;
        let n = self.chunk_blocks.min(self.geo.log_blocks - slot) as usize;
        let mut more = true;
        match data {
            None => {
                self.counters.l2_rebuild_io_errors += 1;
                more = false;
            }
            Some(b) => {
                for i in 0..n {
                    match LogBlock::open(&b[i * meta..(i + 1) * meta], self.guid) {
                        Ok(lb) if lb.seq == self.expected => {
                            self.newest = lb.seq;
                            self.evict = self.evict.max(lb.evict);
                            self.expected += 1;
                        }
                        _ => {
                            more = false;
                            break;
                        }
                    }
                }
            }
        }
        // Never more than one lap of the log.
        if !more || self.expected > self.header.newest_log + self.geo.log_blocks {
            self.found_newest = true;
        }
    }

    fn start_stream(&mut self, link: &dyn L2Link) {
        if self.newest == 0 {
            self.stage = Stage::Done;
            return;
        }
        // At most a full log of entries, spread over the shards: the
        // L2-only tables grow to about that anyway as the device fills, and
        // growing them item by item took a third of a rebuild.
        let blocks = self.newest.min(self.geo.log_blocks);
        let per_shard = blocks * self.geo.items_per_log_block() as u64 / self.shards as u64;
        self.stage = Stage::Stream;
        for s in 0..self.shards {
            link.send(
                s,
                L2Msg::RebuildStart {
                    dev: self.dev,
                    entries: per_shard,
                },
            );
        }
        let l = self.geo.log_blocks;
        let mut pos = (self.newest + 1) % l;
        let mut left = l;
        while left > 0 {
            let n = self.chunk_blocks.min(l - pos).min(left);
            self.chunks.push((pos, n));
            pos = (pos + n) % l;
            left -= n;
        }
    }

    /// True while a read chunk waits to be applied.
    pub(crate) fn has_work(&self) -> bool {
        self.applying.is_some() || self.arrived.contains_key(&self.next_apply)
    }

    /// Block `i` of the chunk `b` that starts at slot `slot`.
    fn apply_block(&mut self, b: &[u8], slot: u64, i: u64, link: &dyn L2Link) {
        let meta = self.geo.meta_block as usize;
        let l = self.geo.log_blocks;
        let s = slot + i;
        // The only sequence number slot `s` may hold in the last lap.
        let back = (self.newest % l + l - s) % l;
        let Some(seq) = self.newest.checked_sub(back).filter(|&q| q > 0) else {
            return;
        };
        let block = &b[i as usize * meta..(i as usize + 1) * meta];
        match LogBlock::open(block, self.guid) {
            Ok(lb) if lb.seq == seq => {
                self.counters.l2_rebuild_log_blks += 1;
                for item in lb.items(block) {
                    match item {
                        Ok(it) => self.apply(it, link),
                        Err(_) => {
                            // A checksummed block that does not parse:
                            // its remaining items cannot be trusted.
                            self.counters.l2_rebuild_cksum_lb_errors += 1;
                            break;
                        }
                    }
                }
                // A write's entries never continue in another block
                // without their write item first.
                self.current = None;
            }
            // Left from an earlier lap, an earlier format, or never written.
            Ok(_) | Err(LogError::OtherDevice | LogError::NoMagic) => {}
            Err(_) => self.counters.l2_rebuild_cksum_lb_errors += 1,
        }
    }

    fn apply(&mut self, item: LogItem, link: &dyn L2Link) {
        match item {
            LogItem::Write {
                logical,
                seq,
                sectors,
            } => {
                let len = u64::from(sectors) * L2_SECTOR;
                let d = self.geo.data_size;
                let fits = len > 0 && logical % d + len <= d;
                // Overwritten, or being overwritten, since: the hand has
                // passed the evict position one ring back.
                let valid =
                    fits && logical.saturating_add(d) >= self.evict && logical + len <= self.evict;
                self.current = Some(CurrentWrite {
                    logical,
                    seq,
                    len,
                    valid,
                });
                if valid {
                    self.hand = self.hand.max(logical + len);
                    self.max_write_seq = self.max_write_seq.max(seq);
                    let start = self.geo.data_at(logical);
                    let same = self.batches.last().is_some_and(|b| b.logical == logical);
                    if !same {
                        self.batches
                            .push(Batch::new(start, start + len, logical, self.shards));
                    }
                } else {
                    self.counters.l2_rebuild_stale += 1;
                }
            }
            LogItem::Entry {
                hash,
                cksum,
                rel_sectors,
                psize,
                lsize,
                encoding,
                mfu,
            } => {
                let Some(w) = self.current.filter(|w| w.valid) else {
                    self.counters.l2_rebuild_stale += 1;
                    return;
                };
                let rel = u64::from(rel_sectors) * L2_SECTOR;
                if rel + u64::from(psize) > w.len || lsize > self.max_block {
                    self.counters.l2_rebuild_stale += 1;
                    return;
                }
                let offset = self.geo.data_at(w.logical) + rel;
                let loc =
                    L2Loc::at(self.dev, offset, encoding, psize, lsize).written(w.seq, cksum, mfu);
                let s = shard_of(hash, self.shards);
                if let Some(b) = self.batches.last_mut() {
                    b.add(s, hash);
                }
                self.counters.l2_rebuild_bufs += 1;
                self.send(s, Rebuilt::Entry(hash, loc), link);
            }
            LogItem::Invalidate { hash } => {
                let s = shard_of(hash, self.shards);
                self.send(s, Rebuilt::Dead(hash, self.dev), link);
            }
        }
    }

    fn send(&mut self, shard: usize, item: Rebuilt, link: &dyn L2Link) {
        self.per_shard[shard].push(item);
        if self.per_shard[shard].len() >= ITEMS_PER_MSG {
            let items = std::mem::take(&mut self.per_shard[shard]);
            link.send(
                shard,
                L2Msg::Rebuilt {
                    dev: self.dev,
                    items,
                },
            );
        }
    }

    fn finish(&mut self, link: &dyn L2Link) -> Resumed {
        for s in 0..self.shards {
            let items = std::mem::take(&mut self.per_shard[s]);
            if !items.is_empty() {
                link.send(
                    s,
                    L2Msg::Rebuilt {
                        dev: self.dev,
                        items,
                    },
                );
            }
            link.send(s, L2Msg::RebuildDone { dev: self.dev });
        }
        self.stage = Stage::Done;
        let took = self.started.map_or(Duration::ZERO, |t| t.elapsed());
        self.counters.l2_rebuild_success += 1;
        self.counters.l2_rebuild_ns += took.as_nanos() as u64;
        log::info!(
            "{}: rebuilt {} entries from {} log blocks in {:.3} s",
            self.name,
            self.counters.l2_rebuild_bufs,
            self.counters.l2_rebuild_log_blks,
            took.as_secs_f64()
        );
        Resumed {
            hand: self.hand,
            evict: self.evict.max(self.hand),
            next_log: self.newest + 1,
            newest_log: self.newest,
            next_write: self.header.next_write.max(self.max_write_seq + 1),
            batches: std::mem::take(&mut self.batches),
        }
    }
}
