//! A decorator that injects faults into any device: I/O errors (by
//! probability or at the Nth read or write), torn writes (only a prefix of
//! the blocks lands, the request still reports success), bit flips on
//! reads, latency, slow requests, hung requests, and a switch that makes
//! the whole device stop answering. Counters say what was injected, so tests can tell an
//! injected fault from a bug.
#![forbid(unsafe_code)]

use super::{BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue, IoBuf, IoOp};
use crate::bufpool::{Buf, BufPool};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to inject. Probabilities are per request, from 0 to 1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability that a read fails with an I/O error.
    pub read_error: f64,
    /// Probability that a write fails with an I/O error (nothing lands).
    pub write_error: f64,
    /// Fail the Nth read of the device (1-based, over all queues).
    pub fail_read_at: Option<u64>,
    /// Fail the Nth write of the device (1-based, over all queues).
    pub fail_write_at: Option<u64>,
    /// Probability that a write is torn: a random prefix of its blocks
    /// lands and it reports success.
    pub torn_write: f64,
    /// Probability that a successful read comes back with one bit flipped.
    pub bit_flip: f64,
    /// Added to every request's completion time.
    pub latency: Duration,
    /// Added to every write's completion time, on top of `latency`.
    pub write_latency: Duration,
    /// Probability that a request completes `slow_by` late.
    pub slow: f64,
    /// How late a slow request completes.
    pub slow_by: Duration,
    /// Probability that a request hangs: it completes only after
    /// `hang_for`, or, with `None`, never (its buffer comes back when the
    /// queue is dropped, as after a controller reset).
    pub hang: f64,
    /// How long a hung request hangs; `None`: forever.
    pub hang_for: Option<Duration>,
    /// RNG seed; queue i uses `seed + i`.
    pub seed: u64,
}

/// Faults injected so far.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Reads failed.
    pub read_errors: AtomicU64,
    /// Writes failed.
    pub write_errors: AtomicU64,
    /// While set, every write fails (a device that dies after start-up).
    pub fail_all_writes: std::sync::atomic::AtomicBool,
    /// Writes torn.
    pub torn_writes: AtomicU64,
    /// Reads with a flipped bit.
    pub bit_flips: AtomicU64,
    /// Requests made slow.
    pub slow: AtomicU64,
    /// Requests hung.
    pub hangs: AtomicU64,
    /// While set, no request completes (a device that stops answering);
    /// cleared, they complete.
    pub hang_all: std::sync::atomic::AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    queues: AtomicU64,
}

/// A device with faults injected as `config` says.
pub struct FaultyDevice<D> {
    inner: D,
    config: FaultConfig,
    counters: Arc<FaultCounters>,
    scratch: BufPool,
}

impl<D> std::fmt::Debug for FaultyDevice<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyDevice")
            .field("config", &self.config)
            .finish()
    }
}

impl<D: BlockDevice> FaultyDevice<D> {
    /// Wraps `inner`. Torn writes copy their prefix into a small private
    /// pool, so they never take buffers from the engine.
    pub fn new(inner: D, config: FaultConfig) -> Result<Self, DeviceError> {
        let scratch = BufPool::new(8 << 20, 2 << 20, false)
            .map_err(|e| DeviceError::Unsupported(format!("fault pool: {e}")))?;
        Ok(FaultyDevice {
            inner,
            config,
            counters: Arc::default(),
            scratch,
        })
    }
    /// What has been injected.
    pub fn counters(&self) -> Arc<FaultCounters> {
        self.counters.clone()
    }
}

impl<D: BlockDevice> BlockDevice for FaultyDevice<D> {
    fn info(&self) -> DeviceInfo {
        let mut i = self.inner.info();
        i.name = format!("faulty({})", i.name);
        i
    }
    fn pool_region(&self, len: usize) -> Option<std::io::Result<crate::bufpool::Region>> {
        self.inner.pool_region(len)
    }
    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        let n = self.counters.queues.fetch_add(1, Relaxed);
        Ok(Box::new(FaultyQueue {
            inner: self.inner.open_queue(depth)?,
            info: self.inner.info(),
            config: self.config.clone(),
            counters: self.counters.clone(),
            scratch: self.scratch.clone(),
            rng: SmallRng::seed_from_u64(self.config.seed.wrapping_add(n)),
            injected: VecDeque::new(),
            torn: HashMap::new(),
            held: VecDeque::new(),
            hung: Vec::new(),
            bit_flip_reads: HashMap::new(),
            depth,
        }))
    }
}

struct FaultyQueue {
    inner: Box<dyn DeviceQueue>,
    info: DeviceInfo,
    config: FaultConfig,
    counters: Arc<FaultCounters>,
    scratch: BufPool,
    rng: SmallRng,
    /// Requests failed here, never sent to the inner queue.
    injected: VecDeque<Completion>,
    /// Torn writes in flight: tag → the caller's full buffer.
    torn: HashMap<u64, Buf>,
    /// Completions held back for latency.
    held: VecDeque<(Instant, Completion)>,
    /// Completions of requests hung forever.
    hung: Vec<Completion>,
    /// Reads that will get a bit flipped: tag → length read.
    bit_flip_reads: HashMap<u64, u64>,
    /// The depth asked for: a request held back for latency still counts,
    /// as on a real device.
    depth: usize,
}

impl FaultyQueue {
    fn fail(&mut self, tag: u64, op: IoOp) {
        let offset = op.range().map_or(0, |r| r.0);
        let device = self.info.name.clone();
        self.injected.push_back(Completion::failed(
            tag,
            op,
            DeviceError::Io { device, offset },
        ));
    }
}

impl DeviceQueue for FaultyQueue {
    fn submit(&mut self, tag: u64, op: IoOp) {
        if self.in_flight() >= self.depth {
            let depth = self.depth;
            self.injected.push_back(Completion::failed(
                tag,
                op,
                DeviceError::QueueFull { depth },
            ));
            return;
        }
        let c = &self.config;
        match op {
            IoOp::Read { offset, len, buf } => {
                let n = self.counters.reads.fetch_add(1, Relaxed) + 1;
                if c.fail_read_at == Some(n) || self.rng.gen_bool(c.read_error.clamp(0.0, 1.0)) {
                    self.counters.read_errors.fetch_add(1, Relaxed);
                    return self.fail(tag, IoOp::Read { offset, len, buf });
                }
                if self.rng.gen_bool(c.bit_flip.clamp(0.0, 1.0)) {
                    self.bit_flip_reads.insert(tag, len);
                }
                self.inner.submit(tag, IoOp::Read { offset, len, buf });
            }
            IoOp::Write { offset, buf } => {
                let n = self.counters.writes.fetch_add(1, Relaxed) + 1;
                if c.fail_write_at == Some(n)
                    || self.counters.fail_all_writes.load(Relaxed)
                    || self.rng.gen_bool(c.write_error.clamp(0.0, 1.0))
                {
                    self.counters.write_errors.fetch_add(1, Relaxed);
                    return self.fail(tag, IoOp::Write { offset, buf });
                }
                let bs = self.info.block_size as usize;
                let blocks = buf.len() / bs.max(1);
                if blocks > 1 && self.rng.gen_bool(c.torn_write.clamp(0.0, 1.0)) {
                    let keep = self.rng.gen_range(1..blocks) * bs;
                    if let Some(mut prefix) = self.scratch.alloc(keep) {
                        prefix.as_mut_slice()[..keep].copy_from_slice(&buf[..keep]);
                        self.counters.torn_writes.fetch_add(1, Relaxed);
                        self.torn.insert(tag, buf);
                        return self.inner.submit(
                            tag,
                            IoOp::Write {
                                offset,
                                buf: prefix.freeze(keep),
                            },
                        );
                    }
                }
                self.inner.submit(tag, IoOp::Write { offset, buf });
            }
            IoOp::Flush => self.inner.submit(tag, IoOp::Flush),
            op @ IoOp::Discard { .. } => self.inner.submit(tag, op),
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut fresh = Vec::new();
        self.inner.poll(&mut fresh);
        fresh.extend(self.injected.drain(..));
        let now = Instant::now();
        for mut c in fresh {
            if let Some(full) = self.torn.remove(&c.tag) {
                c.buf = IoBuf::Write(full); // the caller gets its own buffer back
            }
            if let (Some(len), IoBuf::Read(b), true) = (
                self.bit_flip_reads.remove(&c.tag),
                &mut c.buf,
                c.result.is_ok(),
            ) {
                let bit = self.rng.gen_range(0..len * 8);
                b.as_mut_slice()[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.counters.bit_flips.fetch_add(1, Relaxed);
            }
            let mut due = now + self.config.latency;
            if matches!(c.buf, IoBuf::Write(_)) {
                due += self.config.write_latency;
            }
            if self.rng.gen_bool(self.config.slow.clamp(0.0, 1.0)) {
                self.counters.slow.fetch_add(1, Relaxed);
                due += self.config.slow_by;
            }
            if self.rng.gen_bool(self.config.hang.clamp(0.0, 1.0)) {
                self.counters.hangs.fetch_add(1, Relaxed);
                match self.config.hang_for {
                    Some(d) => due += d,
                    None => {
                        self.hung.push(c);
                        continue;
                    }
                }
            }
            self.held.push_back((due, c));
        }
        if self.counters.hang_all.load(Relaxed) {
            return 0;
        }
        // Requests complete in deadline order, not submission order: a fast
        // read overtakes a slow write.
        let before = out.len();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= now {
                out.push(self.held.remove(i).expect("index in range").1);
            } else {
                i += 1;
            }
        }
        out.len() - before
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.injected.len() + self.held.len() + self.hung.len()
    }

    fn tick(&mut self, now: Instant) -> Duration {
        self.inner.tick(now)
    }

    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        self.inner.register_pool(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::MemDevice;

    fn pool() -> BufPool {
        BufPool::new(16 << 20, 1 << 20, false).unwrap()
    }

    fn run_one(q: &mut dyn DeviceQueue, tag: u64, op: IoOp) -> Completion {
        q.submit(tag, op);
        let mut out = vec![];
        let t = Instant::now();
        while out.is_empty() {
            q.poll(&mut out);
            assert!(t.elapsed() < Duration::from_secs(5), "no completion");
        }
        out.pop().unwrap()
    }

    fn write(p: &BufPool, q: &mut dyn DeviceQueue, off: u64, byte: u8, len: usize) -> Completion {
        let mut b = p.alloc(len).unwrap();
        b.as_mut_slice()[..len].fill(byte);
        run_one(
            q,
            1,
            IoOp::Write {
                offset: off,
                buf: b.freeze(len),
            },
        )
    }

    fn read(
        p: &BufPool,
        q: &mut dyn DeviceQueue,
        off: u64,
        len: usize,
    ) -> (Result<(), DeviceError>, Vec<u8>) {
        let c = run_one(
            q,
            2,
            IoOp::Read {
                offset: off,
                len: len as u64,
                buf: p.alloc(len).unwrap(),
            },
        );
        let IoBuf::Read(mut b) = c.buf else {
            panic!("read buffer lost")
        };
        (c.result, b.as_mut_slice()[..len].to_vec())
    }

    #[test]
    fn with_no_faults_it_passes_the_conformance_suite() {
        let p = pool();
        let d = FaultyDevice::new(
            MemDevice::new(8 << 20, 512).unwrap(),
            FaultConfig::default(),
        )
        .unwrap();
        crate::testing::conformance::run(&d, &p).unwrap();
        assert_eq!(p.stats().outstanding, 0);
    }

    #[test]
    fn it_wraps_a_shared_device() {
        let p = pool();
        let shared: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20, 512).unwrap());
        let d = FaultyDevice::new(shared.clone(), FaultConfig::default()).unwrap();
        assert_eq!(d.info().capacity, shared.info().capacity);
        crate::testing::conformance::run(&d, &p).unwrap();
        assert_eq!(p.stats().outstanding, 0);
    }

    #[test]
    fn nth_operation_errors_return_the_buffer() {
        let p = pool();
        let cfg = FaultConfig {
            fail_write_at: Some(2),
            fail_read_at: Some(1),
            ..FaultConfig::default()
        };
        let d = FaultyDevice::new(MemDevice::new(1 << 20, 512).unwrap(), cfg).unwrap();
        let mut q = d.open_queue(4).unwrap();
        assert!(write(&p, q.as_mut(), 0, 1, 512).result.is_ok());
        let c = write(&p, q.as_mut(), 512, 2, 512);
        assert!(
            matches!(c.result, Err(DeviceError::Io { offset: 512, .. })),
            "{:?}",
            c.result
        );
        assert!(matches!(c.buf, IoBuf::Write(_)));
        drop(c);
        assert!(read(&p, q.as_mut(), 0, 512).0.is_err());
        assert_eq!(read(&p, q.as_mut(), 0, 512), (Ok(()), vec![1; 512]));
        assert_eq!(
            read(&p, q.as_mut(), 512, 512).1,
            vec![0; 512],
            "the failed write landed nothing"
        );
        let k = d.counters();
        assert_eq!(
            (k.read_errors.load(Relaxed), k.write_errors.load(Relaxed)),
            (1, 1)
        );
        assert_eq!(p.stats().outstanding, 0);
    }

    #[test]
    fn torn_writes_land_a_prefix_and_report_success() {
        let p = pool();
        let cfg = FaultConfig {
            torn_write: 1.0,
            ..FaultConfig::default()
        };
        let d = FaultyDevice::new(MemDevice::new(1 << 20, 512).unwrap(), cfg).unwrap();
        let mut q = d.open_queue(4).unwrap();
        let c = write(&p, q.as_mut(), 0, 9, 4096);
        assert!(c.result.is_ok());
        let IoBuf::Write(b) = &c.buf else { panic!() };
        assert_eq!(b.len(), 4096, "the caller gets its own buffer back");
        let (_, data) = read(&p, q.as_mut(), 0, 4096);
        let landed = data.iter().take_while(|&&x| x == 9).count();
        assert!(
            (512..4096).contains(&landed) && landed % 512 == 0,
            "{landed}"
        );
        assert!(data[landed..].iter().all(|&x| x == 0));
        assert_eq!(d.counters().torn_writes.load(Relaxed), 1);
    }

    #[test]
    fn bit_flips_change_exactly_one_bit() {
        let p = pool();
        let cfg = FaultConfig {
            bit_flip: 1.0,
            ..FaultConfig::default()
        };
        let d = FaultyDevice::new(MemDevice::new(1 << 20, 512).unwrap(), cfg).unwrap();
        let mut q = d.open_queue(4).unwrap();
        write(&p, q.as_mut(), 0, 0xAA, 1024);
        let (r, data) = read(&p, q.as_mut(), 0, 1024);
        assert!(r.is_ok());
        let flipped: u32 = data.iter().map(|&x| (x ^ 0xAA).count_ones()).sum();
        assert_eq!(flipped, 1);
    }

    #[test]
    fn latency_delays_completions() {
        let p = pool();
        let cfg = FaultConfig {
            latency: Duration::from_millis(30),
            ..FaultConfig::default()
        };
        let d = FaultyDevice::new(MemDevice::new(1 << 20, 512).unwrap(), cfg).unwrap();
        let mut q = d.open_queue(4).unwrap();
        let t = Instant::now();
        write(&p, q.as_mut(), 0, 1, 512);
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
