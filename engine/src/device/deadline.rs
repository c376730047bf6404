//! Deadlines on a device queue's requests, and a device's health.
//!
//! [`DeadlineQueue`] wraps any queue. A request still in flight past its
//! deadline completes at once with [`DeviceError::TimedOut`] and
//! [`IoBuf::Held`]: its buffer stays with the queue until the device
//! really completes the request (or the queue is dropped, see each
//! backend's `Drop`), so a device can never write into memory that was
//! handed out again. The late completion is dropped here and counted.
//!
//! [`Health`] is shared by every queue on one device: [`DEGRADE_AFTER`]
//! timeouts in a row mark the device degraded (the L2 tier then stops
//! reading from it and feeding it); whoever probes it calls
//! [`Health::recovered`] once it answers in time again.
#![forbid(unsafe_code)]

use super::{Completion, DeviceError, DeviceQueue, IoBuf, IoOp};
use crate::bufpool::BufPool;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Timeouts in a row, on any of a device's queues, that mark it degraded.
pub const DEGRADE_AFTER: u32 = 3;

/// How long a request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Reads.
    pub read: Duration,
    /// Writes and flushes.
    pub write: Duration,
}

/// Whether a device answers, shared by all its queues.
#[derive(Debug, Default)]
pub struct Health {
    timeouts_in_row: AtomicU32,
    degraded: AtomicBool,
}

impl Health {
    /// True while the device is degraded.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
    }

    /// A request timed out; true when this one made the device degraded.
    fn timed_out(&self) -> bool {
        let n = self.timeouts_in_row.fetch_add(1, Relaxed) + 1;
        n >= DEGRADE_AFTER && !self.degraded.swap(true, Relaxed)
    }

    /// A request completed in time: the timeouts in a row start again.
    fn answered(&self) {
        // A load first: this runs on every completion, and a store would
        // bounce the line between the device's queues.
        if self.timeouts_in_row.load(Relaxed) != 0 {
            self.timeouts_in_row.store(0, Relaxed);
        }
    }

    /// The device answered a probe in time; true when this ended a
    /// degraded spell.
    pub fn recovered(&self) -> bool {
        self.timeouts_in_row.store(0, Relaxed);
        self.degraded.swap(false, Relaxed)
    }
}

/// What a queue's deadlines did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineCounters {
    /// Reads that timed out.
    pub read_timeouts: u64,
    /// Writes and flushes that timed out.
    pub write_timeouts: u64,
    /// Timed-out requests that completed later (their result dropped).
    pub late: u64,
    /// Times this queue's timeout made the device degraded.
    pub degraded: u64,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    deadline: Instant,
    write: bool,
    offset: u64,
}

/// A queue whose requests have deadlines (see the module docs).
pub struct DeadlineQueue {
    inner: Box<dyn DeviceQueue>,
    name: String,
    limits: Deadlines,
    health: std::sync::Arc<Health>,
    live: HashMap<u64, Live>,
    /// Deadlines in submission order, reads and writes apart: each is in
    /// deadline order too. Entries of completed requests are skipped.
    order: [VecDeque<(Instant, u64)>; 2],
    /// Tags of requests that timed out and are still on the device.
    abandoned: HashSet<u64>,
    expired: Vec<Completion>,
    scratch: Vec<Completion>,
    counters: DeadlineCounters,
}

impl std::fmt::Debug for DeadlineQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineQueue")
            .field("name", &self.name)
            .field("live", &self.live.len())
            .field("abandoned", &self.abandoned.len())
            .finish()
    }
}

impl DeadlineQueue {
    /// Wraps `inner`, a queue on device `name` whose health is `health`.
    pub fn new(
        inner: Box<dyn DeviceQueue>,
        name: String,
        limits: Deadlines,
        health: std::sync::Arc<Health>,
    ) -> Self {
        DeadlineQueue {
            inner,
            name,
            limits,
            health,
            live: HashMap::new(),
            order: [VecDeque::new(), VecDeque::new()],
            abandoned: HashSet::new(),
            expired: Vec::new(),
            scratch: Vec::new(),
            counters: DeadlineCounters::default(),
        }
    }

    /// Times out the requests past their deadline at `now`: they complete
    /// at the next [`DeviceQueue::poll`]. Cheap when none is due.
    pub fn expire(&mut self, now: Instant) {
        for kind in 0..2 {
            while let Some(&(deadline, tag)) = self.order[kind].front() {
                if deadline > now {
                    break;
                }
                self.order[kind].pop_front();
                let Some(l) = self.live.get(&tag).copied() else {
                    continue; // completed in time
                };
                if l.deadline != deadline {
                    continue; // a later request under the same tag
                }
                self.live.remove(&tag);
                self.abandoned.insert(tag);
                let (what, after) = if l.write {
                    self.counters.write_timeouts += 1;
                    ("write", self.limits.write)
                } else {
                    self.counters.read_timeouts += 1;
                    ("read", self.limits.read)
                };
                if self.health.timed_out() {
                    self.counters.degraded += 1;
                    log::warn!(
                        "L2 device {}: {DEGRADE_AFTER} requests in a row timed out; degraded: no reads or feeding until it answers",
                        self.name
                    );
                }
                self.expired.push(Completion {
                    tag,
                    buf: IoBuf::Held,
                    result: Err(DeviceError::TimedOut {
                        device: self.name.clone(),
                        what: format!("{what} at offset {}", l.offset),
                        after,
                    }),
                });
            }
        }
    }

    /// The earliest deadline of a request in flight (or of one that
    /// completed since: a timer set by it fires early, harmlessly).
    pub fn next_deadline(&self) -> Option<Instant> {
        let r = self.order[0].front().map(|d| d.0);
        let w = self.order[1].front().map(|d| d.0);
        r.into_iter().chain(w).min()
    }

    /// Requests that timed out and are still on the device, their buffers
    /// held.
    pub fn abandoned(&self) -> usize {
        self.abandoned.len()
    }

    /// True while the request `tag`, which timed out, is still on the
    /// device.
    pub fn is_abandoned(&self, tag: u64) -> bool {
        self.abandoned.contains(&tag)
    }

    /// Gives up on every request in flight (a shutdown past its time
    /// limit): none will be reported. Returns how many.
    pub fn abandon_all(&mut self) -> usize {
        let n = self.live.len();
        self.abandoned.extend(self.live.drain().map(|(t, _)| t));
        self.order = [VecDeque::new(), VecDeque::new()];
        self.expired.clear();
        n
    }

    /// What the deadlines did.
    pub fn counters(&self) -> DeadlineCounters {
        self.counters
    }

    /// The device's health.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

impl DeviceQueue for DeadlineQueue {
    fn submit(&mut self, tag: u64, op: IoOp) {
        let write = !matches!(op, IoOp::Read { .. });
        let offset = op.range().map_or(0, |r| r.0);
        let deadline = Instant::now()
            + if write {
                self.limits.write
            } else {
                self.limits.read
            };
        if self.abandoned.contains(&tag) {
            log::error!(
                "L2 device {}: tag {tag:x} reused while a timed-out request holds it",
                self.name
            );
        }
        self.live.insert(
            tag,
            Live {
                deadline,
                write,
                offset,
            },
        );
        self.order[usize::from(write)].push_back((deadline, tag));
        self.inner.submit(tag, op);
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        let mut fresh = std::mem::take(&mut self.scratch);
        if self.inner.in_flight() > 0 {
            self.inner.poll(&mut fresh);
        }
        for c in fresh.drain(..) {
            if self.abandoned.remove(&c.tag) {
                // Its caller has had a timeout; only now may the buffer go
                // back to the pool.
                self.counters.late += 1;
                continue;
            }
            self.live.remove(&c.tag);
            if c.result.is_ok() {
                self.health.answered();
            }
            out.push(c);
        }
        self.scratch = fresh;
        out.append(&mut self.expired);
        out.len() - before
    }

    fn in_flight(&self) -> usize {
        // Abandoned requests are nobody's to wait for.
        (self.inner.in_flight() + self.expired.len()).saturating_sub(self.abandoned.len())
    }

    fn tick(&mut self, now: Instant) -> Duration {
        self.expire(now);
        let next = self.inner.tick(now);
        match self.next_deadline() {
            Some(d) => next.min(d.saturating_duration_since(now)),
            None => next,
        }
    }

    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        self.inner.register_pool(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::faulty::{FaultConfig, FaultyDevice};
    use crate::device::mem::MemDevice;
    use crate::device::BlockDevice;
    use std::sync::Arc;

    fn pool() -> BufPool {
        BufPool::new(16 << 20, 1 << 20, false).unwrap()
    }

    fn limits() -> Deadlines {
        Deadlines {
            read: Duration::from_millis(20),
            write: Duration::from_millis(20),
        }
    }

    fn read(p: &BufPool, q: &mut DeadlineQueue, tag: u64) {
        q.submit(
            tag,
            IoOp::Read {
                offset: 0,
                len: 512,
                buf: p.alloc(512).unwrap(),
            },
        );
    }

    fn wait_n(q: &mut DeadlineQueue, n: usize) -> Vec<Completion> {
        let t = Instant::now();
        let mut out = vec![];
        while out.len() < n {
            q.expire(Instant::now());
            q.poll(&mut out);
            assert!(t.elapsed() < Duration::from_secs(5), "no completion");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.len(), n);
        out
    }

    fn wait(q: &mut DeadlineQueue) -> Completion {
        wait_n(q, 1).pop().unwrap()
    }

    #[test]
    fn a_hung_read_times_out_and_its_buffer_is_held_until_the_device_answers() {
        let p = pool();
        let d = FaultyDevice::new(
            MemDevice::new(1 << 20, 512).unwrap(),
            FaultConfig::default(),
        )
        .unwrap();
        let faults = d.counters();
        let health = Arc::new(Health::default());
        let mut q = DeadlineQueue::new(d.open_queue(8).unwrap(), "m".into(), limits(), health);
        faults.hang_all.store(true, Relaxed);
        read(&p, &mut q, 1);
        let c = wait(&mut q);
        assert!(
            matches!(c.result, Err(DeviceError::TimedOut { .. })),
            "{:?}",
            c.result
        );
        assert!(matches!(c.buf, IoBuf::Held));
        assert_eq!(q.in_flight(), 0, "nobody waits for it");
        assert_eq!((q.abandoned(), p.stats().outstanding), (1, 1), "still held");
        faults.hang_all.store(false, Relaxed);
        let t = Instant::now();
        let mut out = vec![];
        while q.abandoned() > 0 {
            q.poll(&mut out);
            assert!(t.elapsed() < Duration::from_secs(5));
        }
        assert!(out.is_empty(), "the late completion is not reported");
        assert_eq!(q.counters().late, 1);
        assert_eq!(p.stats().outstanding, 0, "released once really complete");
    }

    #[test]
    fn timeouts_in_a_row_degrade_the_device() {
        let p = pool();
        let d = FaultyDevice::new(
            MemDevice::new(1 << 20, 512).unwrap(),
            FaultConfig::default(),
        )
        .unwrap();
        let faults = d.counters();
        let health = Arc::new(Health::default());
        let mut a = DeadlineQueue::new(
            d.open_queue(8).unwrap(),
            "m".into(),
            limits(),
            health.clone(),
        );
        let mut b = DeadlineQueue::new(
            d.open_queue(8).unwrap(),
            "m".into(),
            limits(),
            health.clone(),
        );
        faults.hang_all.store(true, Relaxed);
        for tag in 1..DEGRADE_AFTER as u64 {
            read(&p, &mut a, tag);
            wait(&mut a);
        }
        assert!(!health.is_degraded(), "not before {DEGRADE_AFTER} in a row");
        read(&p, &mut b, 9);
        wait(&mut b);
        assert!(
            health.is_degraded(),
            "timeouts on any queue of the device count"
        );
        assert_eq!(b.counters().degraded, 1);
        faults.hang_all.store(false, Relaxed);
        read(&p, &mut b, 10);
        assert!(wait(&mut b).result.is_ok());
        assert!(health.is_degraded(), "only a probe heals it");
        assert!(health.recovered());
        assert!(!health.is_degraded());
        // An answer in time breaks a run of timeouts.
        faults.hang_all.store(true, Relaxed);
        read(&p, &mut a, 11);
        read(&p, &mut a, 12);
        wait_n(&mut a, 2);
        faults.hang_all.store(false, Relaxed);
        read(&p, &mut a, 13);
        while !matches!(wait(&mut a).result, Ok(())) {}
        faults.hang_all.store(true, Relaxed);
        read(&p, &mut a, 14);
        wait(&mut a);
        assert!(!health.is_degraded(), "2 + 1 timeouts, not 3 in a row");
    }

    #[test]
    fn requests_in_time_pass_the_conformance_suite() {
        use crate::device::DeviceInfo;
        struct Timed(MemDevice);
        impl BlockDevice for Timed {
            fn info(&self) -> DeviceInfo {
                self.0.info()
            }
            fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
                let long = Duration::from_secs(5);
                Ok(Box::new(DeadlineQueue::new(
                    self.0.open_queue(depth)?,
                    "m".into(),
                    Deadlines {
                        read: long,
                        write: long,
                    },
                    Arc::default(),
                )))
            }
        }
        let p = pool();
        crate::testing::conformance::run(&Timed(MemDevice::new(8 << 20, 512).unwrap()), &p)
            .unwrap();
        assert_eq!(p.stats().outstanding, 0);
    }
}
