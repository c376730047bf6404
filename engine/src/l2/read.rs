//! The L2 read path, run by the reactor that owns the block (DESIGN §3,
//! step 2): read the stored bytes on this reactor's own queue, verify the
//! checksum, unpack, fill. Any failure (I/O error, checksum mismatch,
//! corrupt encoding) drops the L2 copy, is counted, and the fill goes on
//! to the backing store: the caller never sees the cache device's errors.
//!
//! Also here: evict messages, acknowledged only once no read of the
//! evicted range is in flight, so the feeder never overwrites bytes that
//! a read is still transferring.

use super::checksum;
use crate::compress::{self, Encoding};
use crate::core::{Core, Msg};
use crate::device::{Completion, IoBuf, IoOp};
use crate::shard::{key_tag, Flags, HeaderIdx, L2Loc};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// An L2 read in flight.
#[derive(Debug)]
pub(crate) struct ReadCtx {
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

impl Core {
    /// Tries to fill header `idx` (just begun) from L2. Returns false when
    /// there is no usable copy; the caller then reads the backing store.
    pub(crate) fn l2_try_read(&mut self, idx: HeaderIdx) -> bool {
        let Some(l2) = self.l2.as_mut() else {
            return false;
        };
        let h = self.shard.header(idx);
        let loc = h.l2;
        if h.flags.contains(Flags::L2_WRITING) {
            l2.counters.l2_rw_clash += 1;
            return false;
        }
        if !loc.is_some() {
            l2.counters.l2_misses += 1;
            return false;
        }
        let Some(dq) = l2.devs.get_mut(usize::from(loc.dev())) else {
            l2.counters.l2_misses += 1;
            return false;
        };
        if l2.cfg.norw && dq.shared.writes_in_flight.load(Relaxed) > 0 {
            l2.counters.l2_norw_skips += 1;
            return false;
        }
        if loc.encoding() == Encoding::Empty {
            let ok = loc.cksum() == checksum(key_tag(&h.key), &[]);
            return self.l2_fill_zeros(idx, loc, ok);
        }
        let bs = u64::from(dq.shared.info.block_size);
        let span_start = loc.offset() / bs * bs;
        let span_end = (loc.offset() + u64::from(loc.psize())).next_multiple_of(bs);
        let Some(buf) = self.pool.alloc((span_end - span_start) as usize) else {
            l2.counters.l2_misses += 1;
            return false;
        };
        l2.reads.next += 1;
        let tag = l2.reads.next & !super::WRITE_TAG;
        l2.reads.map.insert(
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
        true
    }

    fn l2_fill_zeros(&mut self, idx: HeaderIdx, loc: L2Loc, ok: bool) -> bool {
        let l2 = self.l2.as_mut().expect("L2 configured");
        if !ok {
            l2.counters.l2_cksum_bad += 1;
            self.shard.l2_drop(idx, loc);
            return false;
        }
        let Some(mut b) = self.pool.alloc(loc.lsize() as usize) else {
            l2.counters.l2_misses += 1;
            return false;
        };
        l2.counters.l2_hits += 1;
        b.as_mut_slice()[..loc.lsize() as usize].fill(0);
        self.finish_l2_fill(idx, b.freeze(loc.lsize() as usize));
        true
    }

    /// An L2 read completed.
    pub(crate) fn l2_read_done(&mut self, c: Completion) {
        let l2 = self.l2.as_mut().expect("L2 configured");
        let Some(r) = l2.reads.map.remove(&c.tag) else {
            log::error!("reactor {}: unknown L2 read tag {}", self.id, c.tag);
            return;
        };
        self.l2_release_waits(c.tag);
        let l2 = self.l2.as_mut().expect("L2 configured");
        let IoBuf::Read(rbuf) = c.buf else {
            unreachable!("a read completes with its read buffer")
        };
        let block = match c.result {
            Err(e) => {
                log::warn!("L2 read of {:?}: {e}; reading the backing store", r.loc);
                l2.counters.l2_io_error += 1;
                None
            }
            Ok(()) => {
                let loc = r.loc;
                let off = (loc.offset() - r.span_start) as usize;
                let psize = loc.psize() as usize;
                let lsize = loc.lsize() as usize;
                let frozen = rbuf.freeze(off + psize);
                let stored = &frozen[off..];
                let tag = key_tag(&self.shard.header(r.idx).key);
                if checksum(tag, stored) != loc.cksum() {
                    l2.counters.l2_cksum_bad += 1;
                    None
                } else if loc.encoding() == Encoding::Raw && off == 0 && psize == lsize {
                    // Zero-copy: the read buffer becomes the block.
                    Some(frozen)
                } else {
                    match self.pool.alloc(lsize) {
                        None => {
                            l2.counters.l2_misses += 1;
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
                                    l2.counters.l2_cksum_bad += 1;
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
                l2.counters.l2_hits += 1;
                l2.counters.l2_read_bytes += u64::from(r.loc.psize());
                self.finish_l2_fill(r.idx, b);
            }
            None => {
                self.shard.l2_drop(r.idx, r.loc);
                self.start_backing_read(r.idx);
            }
        }
    }

    /// The feeder will overwrite these ranges of device `dev`: drop the L2
    /// copies there, then acknowledge once no read of them is in flight.
    pub(crate) fn l2_evict(
        &mut self,
        dev: u8,
        feeder: usize,
        seq: u64,
        ranges: Vec<(u64, u64, Vec<u32>)>,
    ) {
        let Some(l2) = self.l2.as_mut() else {
            return;
        };
        for (start, end, hashes) in &ranges {
            let e = self.shard.l2_evict(dev, *start, *end, hashes);
            l2.counters.l2_evicted += e.dropped;
            l2.counters.l2_evict_l1cached += e.l1cached;
        }
        let tags: Vec<u64> = l2
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
            self.send(feeder, Msg::L2EvictAck { dev, seq });
        } else {
            l2.counters.l2_evict_reading += tags.len() as u64;
            l2.reads.waits.push(EvictWait {
                feeder,
                dev,
                seq,
                tags,
            });
        }
    }

    fn l2_release_waits(&mut self, tag: u64) {
        let l2 = self.l2.as_mut().expect("L2 configured");
        if l2.reads.waits.is_empty() {
            return;
        }
        let mut acks = Vec::new();
        l2.reads.waits.retain_mut(|w| {
            w.tags.retain(|&t| t != tag);
            if w.tags.is_empty() {
                acks.push((w.feeder, w.dev, w.seq));
                false
            } else {
                true
            }
        });
        for (feeder, dev, seq) in acks {
            self.send(feeder, Msg::L2EvictAck { dev, seq });
        }
    }
}
