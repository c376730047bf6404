//! A RAM device with a volatile write cache, and what a power cut does to
//! it: the fault-injection mode for crash consistency (with [`faulty`]
//! for I/O errors, torn writes that report success, bit flips, latency).
//!
//! A write is visible to reads once it completed (after the device's
//! latency), but it is durable only once a flush submitted after its
//! completion completes.
//! [`PowerCutDevice::cut`] returns the durable image as a new device:
//! every write not yet covered by a completed flush is dropped, applied,
//! or torn at 512-byte sectors (a random subset of its sectors lands), in
//! a random order.
//!
//! [`faulty`]: super::faulty
#![forbid(unsafe_code)]

use super::mem::MemDevice;
use super::{
    check, check_depth, into_buf, BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue,
    IoBuf, IoOp,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a power cut did to the writes it caught.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Writes not yet durable at the cut.
    pub pending: u64,
    /// Of which dropped whole.
    pub dropped: u64,
    /// Of which torn (some of their sectors landed).
    pub torn: u64,
    /// Of which landed whole.
    pub applied: u64,
}

#[derive(Debug)]
struct State {
    /// What reads see.
    volatile: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
    /// Writes submitted and not yet completed: id → (offset, bytes).
    in_flight: HashMap<u64, (u64, Vec<u8>)>,
    /// Completed writes not yet covered by a flush: id → (offset, bytes).
    pending: BTreeMap<u64, (u64, Vec<u8>)>,
    next_id: u64,
}

/// A RAM device whose writes are durable only after a flush.
#[derive(Debug, Clone)]
pub struct PowerCutDevice {
    info: DeviceInfo,
    latency: Duration,
    state: Arc<Mutex<State>>,
}

impl PowerCutDevice {
    /// A zeroed device of `capacity` bytes with `block_size`-byte blocks,
    /// whose requests complete at once.
    pub fn new(capacity: u64, block_size: u32) -> Result<Self, DeviceError> {
        // (MemDevice checks the geometry.)
        let image = MemDevice::new(capacity, block_size)?.snapshot();
        Ok(Self::from_image(image, block_size))
    }

    /// A device holding `image`, all of it durable.
    pub fn from_image(image: Vec<u8>, block_size: u32) -> Self {
        PowerCutDevice {
            info: DeviceInfo {
                name: format!("powercut:{}", image.len()),
                block_size,
                capacity: image.len() as u64,
            },
            latency: Duration::ZERO,
            state: Arc::new(Mutex::new(State {
                volatile: image.clone(),
                durable: image,
                in_flight: HashMap::new(),
                pending: BTreeMap::new(),
                next_id: 0,
            })),
        }
    }

    /// Requests complete `latency` after their submission, so that more of
    /// them are in flight when the power is cut.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: returns what survives, as a new device, and what
    /// happened to the writes that were not durable (in flight, or
    /// completed but not covered by a completed flush). `seed` drives the
    /// choices. This device goes on as it was.
    pub fn cut(&self, seed: u64) -> (PowerCutDevice, CutReport) {
        let st = self.state();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut image = st.durable.clone();
        let mut writes: Vec<&(u64, Vec<u8>)> =
            st.pending.values().chain(st.in_flight.values()).collect();
        // Any order: the device may have reordered them.
        for i in (1..writes.len()).rev() {
            writes.swap(i, rng.gen_range(0..=i));
        }
        let mut r = CutReport {
            pending: writes.len() as u64,
            ..CutReport::default()
        };
        for (offset, bytes) in writes {
            let o = *offset as usize;
            match rng.gen_range(0..3) {
                0 => r.dropped += 1,
                1 => {
                    image[o..o + bytes.len()].copy_from_slice(bytes);
                    r.applied += 1;
                }
                _ => {
                    for (s, sector) in bytes.chunks(512).enumerate() {
                        if rng.gen_bool(0.5) {
                            let at = o + s * 512;
                            image[at..at + sector.len()].copy_from_slice(sector);
                        }
                    }
                    r.torn += 1;
                }
            }
        }
        (Self::from_image(image, self.info.block_size), r)
    }

    /// Writes not yet durable.
    pub fn pending_writes(&self) -> usize {
        let st = self.state();
        st.pending.len() + st.in_flight.len()
    }
}

impl BlockDevice for PowerCutDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }
    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        check_depth(depth)?;
        Ok(Box::new(CutQueue {
            dev: self.clone(),
            depth,
            due: VecDeque::new(),
        }))
    }
}

/// What a completion does to the device when it is delivered.
enum Effect {
    None,
    /// A write lands (in the volatile cache).
    Write(u64),
    /// A flush makes these completed writes durable.
    Flush(Vec<u64>),
}

struct CutQueue {
    dev: PowerCutDevice,
    depth: usize,
    due: VecDeque<(Instant, Completion, Effect)>,
}

impl DeviceQueue for CutQueue {
    fn submit(&mut self, tag: u64, op: IoOp) {
        let result = check(&self.dev.info, &op, self.due.len(), self.depth);
        let mut st = self.dev.state();
        let (buf, effect) = match (result.is_ok(), op) {
            (
                true,
                IoOp::Read {
                    offset,
                    len,
                    mut buf,
                },
            ) => {
                let (o, n) = (offset as usize, len as usize);
                buf.as_mut_slice()[..n].copy_from_slice(&st.volatile[o..o + n]);
                (IoBuf::Read(buf), Effect::None)
            }
            (true, IoOp::Write { offset, buf }) => {
                let id = st.next_id;
                st.next_id += 1;
                st.in_flight.insert(id, (offset, buf.to_vec()));
                (IoBuf::Write(buf), Effect::Write(id))
            }
            // Like a write of zeros: gone for good only once flushed.
            (true, IoOp::Discard { offset, len }) => {
                let id = st.next_id;
                st.next_id += 1;
                st.in_flight.insert(id, (offset, vec![0; len as usize]));
                (IoBuf::None, Effect::Write(id))
            }
            // It covers what completed before it was submitted.
            (true, IoOp::Flush) => (
                IoBuf::None,
                Effect::Flush(st.pending.keys().copied().collect()),
            ),
            (_, op) => (into_buf(op), Effect::None),
        };
        drop(st);
        let at = Instant::now() + self.dev.latency;
        self.due
            .push_back((at, Completion { tag, buf, result }, effect));
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let now = Instant::now();
        let mut n = 0;
        while self.due.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, c, effect) = self.due.pop_front().expect("front exists");
            let mut st = self.dev.state();
            match effect {
                Effect::None => {}
                Effect::Write(id) => {
                    if let Some((offset, bytes)) = st.in_flight.remove(&id) {
                        let o = offset as usize;
                        st.volatile[o..o + bytes.len()].copy_from_slice(&bytes);
                        st.pending.insert(id, (offset, bytes));
                    }
                }
                Effect::Flush(ids) => {
                    for id in ids {
                        if let Some((offset, bytes)) = st.pending.remove(&id) {
                            let o = offset as usize;
                            st.durable[o..o + bytes.len()].copy_from_slice(&bytes);
                        }
                    }
                }
            }
            out.push(c);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufpool::BufPool;

    fn write(q: &mut dyn DeviceQueue, pool: &BufPool, offset: u64, byte: u8) {
        let mut b = pool.alloc(4096).unwrap();
        b.as_mut_slice()[..4096].fill(byte);
        q.submit(
            0,
            IoOp::Write {
                offset,
                buf: b.freeze(4096),
            },
        );
        let mut out = vec![];
        q.poll(&mut out);
        assert!(out[0].result.is_ok());
    }

    #[test]
    fn passes_the_conformance_suite() {
        let pool = BufPool::new(16 << 20, 1 << 20, false).unwrap();
        let dev = PowerCutDevice::new(8 << 20, 512).unwrap();
        crate::testing::conformance::run(&dev, &pool).unwrap();
    }

    #[test]
    fn only_flushed_writes_survive_whole_and_the_rest_are_dropped_torn_or_applied() {
        let pool = BufPool::new(4 << 20, 1 << 20, false).unwrap();
        let dev = PowerCutDevice::new(1 << 20, 512).unwrap();
        let mut q = dev.open_queue(4).unwrap();
        write(q.as_mut(), &pool, 0, 1);
        q.submit(0, IoOp::Flush);
        let mut out = vec![];
        q.poll(&mut out);
        let mut seen = CutReport::default();
        for i in 0..40u64 {
            write(q.as_mut(), &pool, 8192 + i * 4096, 2);
        }
        assert_eq!(dev.pending_writes(), 40);
        for seed in 0..5 {
            let (after, r) = dev.cut(seed);
            let img = after.state().durable.clone();
            assert!(img[..4096].iter().all(|&b| b == 1), "flushed data survives");
            assert_eq!(r.pending, 40);
            assert_eq!(r.dropped + r.torn + r.applied, 40);
            seen.dropped += r.dropped;
            seen.torn += r.torn;
            seen.applied += r.applied;
        }
        assert!(
            seen.dropped > 0 && seen.torn > 0 && seen.applied > 0,
            "{seen:?}"
        );
    }
}
