//! The L2 read path, run by the reactor that owns the block (DESIGN §3,
//! step 2): read the stored bytes on this reactor's own queue, verify the
//! checksum, unpack. A failure that says the copy is bad (an I/O error, a
//! checksum mismatch, a corrupt encoding) drops the L2 copy; a transient
//! one (the read's deadline passed, the device is degraded, the queue is
//! full, no pool buffer) keeps it. Either way it is counted and the caller
//! reads the backing store, so it never sees the cache device's errors.
//!
//! Also here: evict messages, acknowledged only once no read of the
//! evicted range is in flight, so the feeder never overwrites bytes that
//! a read is still transferring.

use super::compress;
use super::format::{checksum, key_tag, Encoding, L2Loc};
use super::{L2Msg, L2};
use crate::bufpool::Buf;
use crate::device::{Completion, DeviceError, DeviceQueue, IoBuf, IoOp};
use crate::shard::{Flags, HeaderIdx, Shard, PICK_SLICE};
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
    /// No block from L2 this time: read the backing store.
    Fallback(HeaderIdx),
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
        if dq.shared.health.is_degraded() {
            self.counters.l2_degraded_skips += 1;
            return Lookup::Miss;
        }
        if loc.encoding() == Encoding::Empty {
            if loc.cksum() != checksum(key_tag(&h.key), loc.write_seq(), &[]) {
                self.counters.l2_cksum_bad += 1;
                shard.l2_drop(idx, loc);
                return Lookup::Miss;
            }
            let Some(mut b) = self.pool.alloc(loc.lsize() as usize) else {
                self.counters.l2_read_lowmem += 1;
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
            self.counters.l2_read_lowmem += 1;
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

    /// Polls this reactor's read queues at time `now` (the reactor's
    /// clock: reads past their deadline time out); completed reads go to
    /// `out`. True when a read completed or is still in flight (the
    /// reactor must not park then: completions are not messages).
    pub(crate) fn poll_reads(
        &mut self,
        shard: &mut Shard<Buf>,
        out: &mut Vec<ReadOutcome>,
        now: std::time::Instant,
    ) -> bool {
        let mut done = std::mem::take(&mut self.done);
        let mut busy = false;
        for d in self.devs.iter_mut() {
            if d.queue.in_flight() > 0 {
                busy = true;
                d.queue.expire(now);
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
        // A read that timed out no longer uses the range (its buffer is
        // held until the device lets go of it).
        self.release_waits(c.tag);
        let rbuf = match (c.result, c.buf) {
            (Ok(()), IoBuf::Read(b)) => b,
            (Err(e), _) => {
                let keep = match e {
                    DeviceError::TimedOut { .. } => true, // counted by the queue
                    DeviceError::QueueFull { .. } => {
                        self.counters.l2_queue_full += 1;
                        true
                    }
                    e => {
                        log::warn!("L2 read of {:?}: {e}; reading the backing store", r.loc);
                        self.counters.l2_io_error += 1;
                        false
                    }
                };
                if !keep {
                    shard.l2_drop(r.idx, r.loc);
                }
                out.push(ReadOutcome::Fallback(r.idx));
                return;
            }
            (Ok(()), buf) => unreachable!("a read completes with its read buffer, not {buf:?}"),
        };
        let loc = r.loc;
        let off = (loc.offset() - r.span_start) as usize;
        let psize = loc.psize() as usize;
        let lsize = loc.lsize() as usize;
        let frozen = rbuf.freeze(off + psize);
        let stored = &frozen[off..];
        let tag = key_tag(&shard.header(r.idx).key);
        let block = if checksum(tag, loc.write_seq(), stored) != loc.cksum() {
            self.counters.l2_cksum_bad += 1;
            None
        } else if loc.encoding() == Encoding::Raw && off == 0 && psize == lsize {
            // Zero-copy: the read buffer becomes the block.
            Some(frozen)
        } else {
            let Some(mut b) = self.pool.alloc(lsize) else {
                // Transient: the copy is good, memory is short.
                self.counters.l2_read_lowmem += 1;
                out.push(ReadOutcome::Fallback(r.idx));
                return;
            };
            match compress::unpack(loc.encoding(), stored, &mut b.as_mut_slice()[..lsize]) {
                Ok(()) => Some(b.freeze(lsize)),
                Err(e) => {
                    log::warn!("L2 block {loc:?}: {e}");
                    self.counters.l2_cksum_bad += 1;
                    None
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
                out.push(ReadOutcome::Fallback(r.idx));
            }
        }
    }

    /// The feeder will overwrite these ranges of device `dev`: drop the L2
    /// copies there (from `from`, a range and a hash in it), then
    /// acknowledge once no read of them is in flight. Past `budget` it
    /// sends the rest to itself, so queued requests go first.
    #[allow(clippy::too_many_arguments)] // the fields of L2Msg::Evict
    pub(super) fn evict(
        &mut self,
        shard: &mut Shard<Buf>,
        dev: u8,
        feeder: usize,
        seq: u64,
        ranges: Vec<(u64, u64, Vec<u32>)>,
        from: (usize, usize),
        budget: std::time::Duration,
    ) {
        let t0 = std::time::Instant::now();
        let (mut r, mut h) = from;
        while let Some((start, end, hashes)) = ranges.get(r) {
            let to = (h + PICK_SLICE).min(hashes.len());
            let e = shard.l2_evict(dev, *start, *end, &hashes[h..to]);
            self.counters.l2_evicted += e.dropped;
            self.counters.l2_evict_l1cached += e.l1cached;
            (r, h) = if to == hashes.len() {
                (r + 1, 0)
            } else {
                (r, to)
            };
            if r < ranges.len() && t0.elapsed() >= budget {
                self.counters.l2_evict_slices += 1;
                let rest = L2Msg::Evict {
                    dev,
                    feeder,
                    seq,
                    ranges,
                    from: (r, h),
                    budget,
                };
                self.link.send(self.me, rest);
                return;
            }
        }
        // Reads of any of the ranges, started before this message's first
        // slice, must end before the feeder overwrites them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufpool::BufPool;
    use crate::device::mem::MemDevice;
    use crate::device::BlockDevice;
    use crate::l2::prepare::prepare;
    use crate::l2::{DevShared, L2Config, L2Link, L2Setup};
    use crate::shard::{hash_key, Policy, Rebuilt};
    use std::sync::Arc;

    struct NoPeers;
    impl L2Link for NoPeers {
        fn send(&self, _: usize, _: L2Msg) {}
        fn reactors(&self) -> usize {
            1
        }
    }

    /// A reactor's L2 over a RAM device holding one compressed block of
    /// `key`, known to `shard` as an L2-only copy.
    fn one_block(key: &[u8], pool: &BufPool) -> (L2, Shard<Buf>, Arc<MemDevice>) {
        let dev = Arc::new(MemDevice::new(8 << 20, 512).unwrap());
        let cfg = L2Config::default();
        let start = prepare(dev.as_ref(), &cfg, 64 << 10, pool).unwrap();
        let data_offset = start.header.geometry.data_offset;
        let data = crate::SimStore::content(key, 4096, 2.0);
        let mut packed = pool.alloc(4096).unwrap();
        let p = compress::pack(&data, packed.as_mut_slice(), 512, true).unwrap();
        assert_eq!(p.encoding, Encoding::Lz4);
        let stored = packed.freeze(p.len.next_multiple_of(512));
        let seq = 7;
        let cksum = checksum(key_tag(key), seq, &stored[..p.len]);
        let mut q = dev.open_queue(1).unwrap();
        q.submit(
            1,
            IoOp::Write {
                offset: data_offset,
                buf: stored,
            },
        );
        let mut out = vec![];
        while out.is_empty() {
            q.poll(&mut out);
        }
        assert!(out[0].result.is_ok());
        drop(out);
        let loc = L2Loc::at(0, data_offset, Encoding::Lz4, p.len as u32, 4096).written(
            u64::from(seq),
            cksum,
            false,
        );
        let mut shard = Shard::new(1 << 20, Policy::Arc);
        shard.l2_rebuild(&[Rebuilt::Entry(hash_key(key), loc)], &Default::default());
        let d: Arc<dyn BlockDevice> = dev.clone();
        let setup = L2Setup {
            cfg: Arc::new(cfg),
            devs: vec![Arc::new(DevShared {
                info: d.info(),
                device: d,
                feeder: 1, // no feeder here
                writes_in_flight: Default::default(),
                health: Default::default(),
                start,
            })],
            max_block: 64 << 10,
        };
        let l2 = L2::open(setup, 0, Arc::new(NoPeers), pool).unwrap();
        (l2, shard, dev)
    }

    fn read(l2: &mut L2, shard: &mut Shard<Buf>) -> ReadOutcome {
        let mut out = vec![];
        let t = std::time::Instant::now();
        while out.is_empty() {
            l2.poll_reads(shard, &mut out, std::time::Instant::now());
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
        }
        out.pop().unwrap()
    }

    #[test]
    fn no_memory_to_unpack_keeps_the_copy() {
        let pool = BufPool::new(32 << 20, 64 << 10, false).unwrap();
        let key = b"some key";
        let (mut l2, mut shard, _dev) = one_block(key, &pool);
        let idx = shard.begin_fill(hash_key(key), key);
        let loc = shard.header(idx).l2;
        assert!(loc.is_some());
        let l = l2.try_read(&mut shard, idx);
        assert!(matches!(l, Lookup::Reading), "{l:?} {:?}", l2.counters);
        // The pool runs dry while the read is in flight.
        let mut hold = vec![];
        for size in [64 << 10, 4096, 512] {
            while let Some(b) = pool.alloc(size) {
                hold.push(b);
            }
        }
        assert!(matches!(
            read(&mut l2, &mut shard),
            ReadOutcome::Fallback(_)
        ));
        assert_eq!(l2.counters.l2_read_lowmem, 1);
        assert_eq!(shard.header(idx).l2, loc, "the copy is kept");
        // With memory back, the same copy serves the block.
        drop(hold);
        assert!(matches!(l2.try_read(&mut shard, idx), Lookup::Reading));
        let ReadOutcome::Hit(_, b) = read(&mut l2, &mut shard) else {
            panic!("no hit");
        };
        assert_eq!(&b[..], &crate::SimStore::content(key, 4096, 2.0)[..]);
    }
}
