//! The L2 read path, run by the reactor that owns the block (DESIGN §3,
//! step 2): read the stored bytes on this reactor's own queue, verify the
//! checksum, unpack. Any failure (I/O error, checksum mismatch, corrupt
//! encoding) drops the L2 copy and is counted; the caller then reads the
//! backing store, so it never sees the cache device's errors.
//!
//! Also here: evict messages, acknowledged only once no read of the
//! evicted range is in flight, so the feeder never overwrites bytes that
//! a read is still transferring.

use super::compress;
use super::format::{checksum, key_tag, Encoding, L2Loc};
use super::{L2Msg, L2};
use crate::bufpool::Buf;
use crate::device::{Completion, IoBuf, IoOp};
use crate::shard::{Flags, HeaderIdx, Shard};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// What a lookup of a block's L2 copy started.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A device read is in flight; its [`ReadOutcome`] comes from
    /// [`L2::poll_reads`].
    Reading,
    /// The block is all zeros (stored as nothing): here it is.
    Zeros(Buf),
    /// No usable copy: read the backing store.
    Miss,
}

/// A completed L2 read.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// The block of this header, verified and unpacked.
    Hit(HeaderIdx, Buf),
    /// The copy was unusable and is dropped: read the backing store.
    Failed(HeaderIdx),
}

/// An L2 read in flight.
#[derive(Debug)]
struct ReadCtx {
    idx: HeaderIdx,
    loc: L2Loc,
    span_start: u64,
}

/// An evict acknowledgement waiting for reads of the range.
#[derive(Debug)]
struct EvictWait {
    feeder: usize,
    dev: u8,
    seq: u64,
    tags: Vec<u64>,
}

/// A reactor's L2 reads in flight.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    map: HashMap<u64, ReadCtx>,
    next: u64,
    waits: Vec<EvictWait>,
}

impl L2 {
    /// Looks for a usable L2 copy of header `idx`, whose fill has just
    /// begun, and starts reading it.
    pub(crate) fn try_read(&mut self, shard: &mut Shard<Buf>, idx: HeaderIdx) -> Lookup {
        let h = shard.header(idx);
        let loc = h.l2;
        if h.flags.contains(Flags::L2_WRITING) {
            self.counters.l2_rw_clash += 1;
            return Lookup::Miss;
        }
        if !loc.is_some() {
            self.counters.l2_misses += 1;
            return Lookup::Miss;
        }
        let Some(dq) = self.devs.get_mut(usize::from(loc.dev())) else {
            self.counters.l2_misses += 1;
            return Lookup::Miss;
        };
        if self.cfg.norw && dq.shared.writes_in_flight.load(Relaxed) > 0 {
            self.counters.l2_norw_skips += 1;
            return Lookup::Miss;
        }
        if loc.encoding() == Encoding::Empty {
            if loc.cksum() != checksum(key_tag(&h.key), loc.write_seq(), &[]) {
                self.counters.l2_cksum_bad += 1;
                shard.l2_drop(idx, loc);
                return Lookup::Miss;
            }
            let Some(mut b) = self.pool.alloc(loc.lsize() as usize) else {
                self.counters.l2_misses += 1;
                return Lookup::Miss;
            };
            self.counters.l2_hits += 1;
            b.as_mut_slice()[..loc.lsize() as usize].fill(0);
            return Lookup::Zeros(b.freeze(loc.lsize() as usize));
        }
        let bs = u64::from(dq.shared.info.block_size);
        let span_start = loc.offset() / bs * bs;
        let span_end = (loc.offset() + u64::from(loc.psize())).next_multiple_of(bs);
        let Some(buf) = self.pool.alloc((span_end - span_start) as usize) else {
            self.counters.l2_misses += 1;
            return Lookup::Miss;
        };
        self.reads.next += 1;
        let tag = self.reads.next;
        self.reads.map.insert(
            tag,
            ReadCtx {
                idx,
                loc,
                span_start,
            },
        );
        dq.queue.submit(
            tag,
            IoOp::Read {
                offset: span_start,
                len: span_end - span_start,
                buf,
            },
        );
        Lookup::Reading
    }

    /// Polls this reactor's read queues; completed reads go to `out`. True
    /// when a read completed or is still in flight (the reactor must not
    /// park then: completions are not messages).
    pub(crate) fn poll_reads(
        &mut self,
        shard: &mut Shard<Buf>,
        out: &mut Vec<ReadOutcome>,
    ) -> bool {
        let mut done = std::mem::take(&mut self.done);
        let mut busy = false;
        for d in self.devs.iter_mut() {
            if d.queue.in_flight() > 0 {
                busy = true;
                d.queue.poll(&mut done);
            }
        }
        for c in done.drain(..) {
            self.read_done(shard, c, out);
        }
        self.done = done;
        busy
    }

    fn read_done(&mut self, shard: &mut Shard<Buf>, c: Completion, out: &mut Vec<ReadOutcome>) {
        let Some(r) = self.reads.map.remove(&c.tag) else {
            log::error!("reactor {}: unknown L2 read tag {}", self.me, c.tag);
            return;
        };
        self.release_waits(c.tag);
        let IoBuf::Read(rbuf) = c.buf else {
            unreachable!("a read completes with its read buffer")
        };
        let block = match c.result {
            Err(e) => {
                log::warn!("L2 read of {:?}: {e}; reading the backing store", r.loc);
                self.counters.l2_io_error += 1;
                None
            }
            Ok(()) => {
                let loc = r.loc;
                let off = (loc.offset() - r.span_start) as usize;
                let psize = loc.psize() as usize;
                let lsize = loc.lsize() as usize;
                let frozen = rbuf.freeze(off + psize);
                let stored = &frozen[off..];
                let tag = key_tag(&shard.header(r.idx).key);
                if checksum(tag, loc.write_seq(), stored) != loc.cksum() {
                    self.counters.l2_cksum_bad += 1;
                    None
                } else if loc.encoding() == Encoding::Raw && off == 0 && psize == lsize {
                    // Zero-copy: the read buffer becomes the block.
                    Some(frozen)
                } else {
                    match self.pool.alloc(lsize) {
                        None => {
                            self.counters.l2_misses += 1;
                            None
                        }
                        Some(mut b) => {
                            match compress::unpack(
                                loc.encoding(),
                                stored,
                                &mut b.as_mut_slice()[..lsize],
                            ) {
                                Ok(()) => Some(b.freeze(lsize)),
                                Err(e) => {
                                    log::warn!("L2 block {loc:?}: {e}");
                                    self.counters.l2_cksum_bad += 1;
                                    None
                                }
                            }
                        }
                    }
                }
            }
        };
        match block {
            Some(b) => {
                self.counters.l2_hits += 1;
                self.counters.l2_read_bytes += u64::from(r.loc.psize());
                out.push(ReadOutcome::Hit(r.idx, b));
            }
            None => {
                shard.l2_drop(r.idx, r.loc);
                out.push(ReadOutcome::Failed(r.idx));
            }
        }
    }

    /// The feeder will overwrite these ranges of device `dev`: drop the L2
    /// copies there, then acknowledge once no read of them is in flight.
    pub(super) fn evict(
        &mut self,
        shard: &mut Shard<Buf>,
        dev: u8,
        feeder: usize,
        seq: u64,
        ranges: Vec<(u64, u64, Vec<u32>)>,
    ) {
        for (start, end, hashes) in &ranges {
            let e = shard.l2_evict(dev, *start, *end, hashes);
            self.counters.l2_evicted += e.dropped;
            self.counters.l2_evict_l1cached += e.l1cached;
        }
        let tags: Vec<u64> = self
            .reads
            .map
            .iter()
            .filter(|(_, r)| {
                r.loc.dev() == dev
                    && ranges
                        .iter()
                        .any(|(s, e, _)| r.loc.offset() < *e && r.loc.offset() + r.loc.asize() > *s)
            })
            .map(|(t, _)| *t)
            .collect();
        if tags.is_empty() {
            self.link.send(feeder, L2Msg::EvictAck { dev, seq });
        } else {
            self.counters.l2_evict_reading += tags.len() as u64;
            self.reads.waits.push(EvictWait {
                feeder,
                dev,
                seq,
                tags,
            });
        }
    }

    fn release_waits(&mut self, tag: u64) {
        if self.reads.waits.is_empty() {
            return;
        }
        let link = &self.link;
        self.reads.waits.retain_mut(|w| {
            w.tags.retain(|&t| t != tag);
            if w.tags.is_empty() {
                link.send(
                    w.feeder,
                    L2Msg::EvictAck {
                        dev: w.dev,
                        seq: w.seq,
                    },
                );
                false
            } else {
                true
            }
        });
    }
}
