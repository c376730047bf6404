//! A simulated slow store: every key has a block whose bytes are derived
//! from the key, delivered after a configurable latency. Because content
//! is a pure function of the key, any read can be checked byte for byte.
//!
//! For soak tests it can also inject faults into its reads (failures, slow
//! and hung reads, from a seeded RNG, counted), and take the content of a
//! key from the caller at completion time, so that a harness can change a
//! key's block while reads are in flight and check what the engine serves.

use super::{BackingStore, ReadDone, ReadResult};
use crate::error::BackingError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The message of an injected read failure.
pub const INJECTED_FAILURE: &str = "injected backing failure";

/// Faults a [`SimStore`] injects into its reads. Probabilities are per
/// read, from 0 to 1, drawn in this order: fail, hang, slow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimFaults {
    /// Probability that a read fails, after its latency, with
    /// `BackingError::Other` ([`INJECTED_FAILURE`]).
    pub fail: f64,
    /// Probability that a read is answered `slow_by` late.
    pub slow: f64,
    /// How late a slow read is answered.
    pub slow_by: Duration,
    /// Probability that a read is never answered: it is held until the
    /// store is dropped, and then fails with `BackingError::Dropped`
    /// (the engine's `backing_timeout` fails its callers long before).
    pub hang: f64,
    /// RNG seed.
    pub seed: u64,
}

/// Faults a [`SimStore`] has injected so far.
#[derive(Debug, Default)]
pub struct SimFaultCounters {
    /// Reads failed.
    pub failed: AtomicU64,
    /// Reads made slow.
    pub slow: AtomicU64,
    /// Reads hung.
    pub hung: AtomicU64,
}

/// A caller's content source: the block of a key, asked for when a read
/// completes (not when it starts).
pub type ContentFn = dyn Fn(&[u8]) -> ReadResult + Send + Sync;

/// Where the store's blocks come from.
enum Content {
    /// [`SimStore::content`] of [`SimStore::size_of`] bytes.
    Generated { min: usize, max: usize, ratio: f64 },
    /// The caller's function.
    Supplied(Box<ContentFn>),
}

impl Content {
    fn of(&self, key: &[u8]) -> ReadResult {
        match self {
            Content::Generated { min, max, ratio } => Ok(SimStore::content(
                key,
                SimStore::size_of(key, *min, *max),
                *ratio,
            )),
            Content::Supplied(f) => f(key),
        }
    }
}

/// What a read is answered with when its time comes.
enum Answer {
    /// The key's block.
    Block(Arc<Content>),
    /// An injected failure.
    Fail,
}

/// The fault configuration and its RNG.
struct Injector {
    cfg: SimFaults,
    rng: Mutex<SmallRng>,
    counters: Arc<SimFaultCounters>,
}

/// Latency of one simulated read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always this long (e.g. 5 ms for an HDD, 20 ms for an object store).
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
}

impl Latency {
    fn sample(&self, seed: u64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) => {
                let span = hi.saturating_sub(lo).as_nanos() as u64;
                lo + Duration::from_nanos(if span == 0 { 0 } else { mix(seed) % span })
            }
        }
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    key: Box<[u8]>,
    done: ReadDone,
    answer: Answer,
}
impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq)) // min-heap
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Pending>,
    seq: u64,
    closed: bool,
    /// While the timer thread waits: `Some(deadline)` for a timed wait,
    /// `Some(None)` for a wait with nothing pending. A read needs to wake
    /// it only when its own deadline comes first: a futex wake-up per read
    /// cost the submitting reactor 5.6% of its time in a profile.
    waiting: Option<Option<Instant>>,
    /// Hung reads, answered (with `Dropped`) only when the store is dropped.
    hung: Vec<ReadDone>,
}

/// The simulated store. Its blocks are `block_size` bytes, compressible
/// about `compressibility`:1, generated from the key by [`SimStore::content`].
pub struct SimStore {
    latency: Latency,
    block_size: usize,
    max_size: usize,
    compressibility: f64,
    content: Arc<Content>,
    faults: Option<Injector>,
    q: Arc<(Mutex<Queue>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SimStore {
    /// A store of `block_size`-byte blocks with incompressible content.
    pub fn new(latency: Latency, block_size: usize) -> std::io::Result<Self> {
        Self::with_compressibility(latency, block_size, 1.0)
    }

    /// A store whose blocks compress about `ratio`:1 (1.0: random bytes).
    pub fn with_compressibility(
        latency: Latency,
        block_size: usize,
        ratio: f64,
    ) -> std::io::Result<Self> {
        Self::with_sizes(latency, block_size, block_size, ratio)
    }

    /// A store whose blocks are [`SimStore::size_of`] bytes, between
    /// `min` and `max`, and compress about `ratio`:1.
    pub fn with_sizes(
        latency: Latency,
        min: usize,
        max: usize,
        ratio: f64,
    ) -> std::io::Result<Self> {
        let q: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let (block_size, max_size) = (min.min(max), max.max(min));
        let q2 = q.clone();
        let thread = std::thread::Builder::new()
            .name("polarc-sim".into())
            .spawn(move || {
                let (m, cv) = &*q2;
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let now = Instant::now();
                    match g.heap.peek() {
                        Some(p) if p.at <= now => {
                            let p = g.heap.pop().expect("peeked");
                            drop(g);
                            p.done.complete(match p.answer {
                                Answer::Block(c) => c.of(&p.key),
                                Answer::Fail => Err(BackingError::Other(INJECTED_FAILURE.into())),
                            });
                            g = m.lock().unwrap_or_else(|e| e.into_inner());
                        }
                        Some(p) => {
                            let (at, wait) = (p.at, p.at - now);
                            g.waiting = Some(Some(at));
                            g = cv
                                .wait_timeout(g, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                            g.waiting = None;
                        }
                        None if g.closed => return,
                        None => {
                            g.waiting = Some(None);
                            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                            g.waiting = None;
                        }
                    }
                }
            })?;
        Ok(SimStore {
            latency,
            block_size,
            max_size,
            compressibility: ratio.max(1.0),
            content: Arc::new(Content::Generated {
                min: block_size,
                max: max_size,
                ratio,
            }),
            faults: None,
            q,
            thread: Some(thread),
        })
    }

    /// The same store, injecting `faults` into its reads.
    #[must_use]
    pub fn with_faults(mut self, faults: SimFaults) -> Self {
        self.faults = Some(Injector {
            rng: Mutex::new(SmallRng::seed_from_u64(faults.seed)),
            cfg: faults,
            counters: Arc::default(),
        });
        self
    }

    /// The same store, answering each read with `content(key)`, called
    /// when the read completes: a key's block may change while reads of it
    /// are in flight, as in a real store.
    #[must_use]
    pub fn with_content(
        mut self,
        content: impl Fn(&[u8]) -> ReadResult + Send + Sync + 'static,
    ) -> Self {
        self.content = Arc::new(Content::Supplied(Box::new(content)));
        self
    }

    /// What the store has injected so far (zeros without faults). The
    /// counters stay readable after the store is handed to an engine.
    pub fn fault_counters(&self) -> Arc<SimFaultCounters> {
        match &self.faults {
            Some(f) => f.counters.clone(),
            None => Arc::default(),
        }
    }

    /// Draws this read's faults: its answer and extra delay, or `None`
    /// for a read that hangs.
    fn draw(&self) -> Option<(Answer, Duration)> {
        let Some(f) = &self.faults else {
            return Some((Answer::Block(self.content.clone()), Duration::ZERO));
        };
        let (c, k) = (&f.cfg, &f.counters);
        let mut rng = f.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(c.fail.clamp(0.0, 1.0)) {
            k.failed.fetch_add(1, Relaxed);
            return Some((Answer::Fail, Duration::ZERO));
        }
        if rng.gen_bool(c.hang.clamp(0.0, 1.0)) {
            k.hung.fetch_add(1, Relaxed);
            return None;
        }
        let mut delay = Duration::ZERO;
        if rng.gen_bool(c.slow.clamp(0.0, 1.0)) {
            k.slow.fetch_add(1, Relaxed);
            delay = c.slow_by;
        }
        Some((Answer::Block(self.content.clone()), delay))
    }

    /// The size of `key`'s block in a store of blocks from `min` to `max`
    /// bytes: a pure function of the key.
    pub fn size_of(key: &[u8], min: usize, max: usize) -> usize {
        if max <= min {
            return min;
        }
        let h = xxhash_rust::xxh3::xxh3_64(key).rotate_left(17);
        min + (h % (max - min + 1) as u64) as usize
    }

    /// The block of `key`: `len` bytes, a pure function of the key. A
    /// fraction 1/`ratio` of each 64-byte run is pseudo-random, the rest
    /// zeros, so LZ4 compresses it about `ratio`:1.
    pub fn content(key: &[u8], len: usize, ratio: f64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut s = xxhash_rust::xxh3::xxh3_64(key);
        let random_per_64 = ((64.0 / ratio.max(1.0)).round() as usize).clamp(1, 64);
        for chunk in out.chunks_mut(64) {
            let n = random_per_64.min(chunk.len());
            for b in chunk[..n].chunks_mut(8) {
                s = mix(s);
                b.copy_from_slice(&s.to_le_bytes()[..b.len()]);
            }
        }
        out
    }
}

impl BackingStore for SimStore {
    fn read(&self, key: &[u8], done: ReadDone) {
        let drawn = self.draw();
        let (m, cv) = &*self.q;
        let Some((answer, delay)) = drawn else {
            m.lock().unwrap_or_else(|e| e.into_inner()).hung.push(done);
            return;
        };
        let at = Instant::now()
            + self
                .latency
                .sample(xxhash_rust::xxh3::xxh3_64(key) ^ 0x5bd1e995)
            + delay;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.seq += 1;
        let seq = g.seq;
        g.heap.push(Pending {
            at,
            seq,
            key: key.into(),
            done,
            answer,
        });
        let wake = match g.waiting {
            Some(Some(deadline)) => at < deadline,
            Some(None) => true,
            None => false, // awake: it looks at the heap before waiting
        };
        drop(g);
        if wake {
            cv.notify_one();
        }
    }
    fn describe(&self) -> String {
        let lat = match self.latency {
            Latency::Fixed(d) => format!("{d:?}"),
            Latency::Uniform(a, b) => format!("uniform {a:?}..{b:?}"),
        };
        let size = if self.max_size > self.block_size {
            format!("{}-{} B", self.block_size, self.max_size)
        } else {
            format!("{} B", self.block_size)
        };
        let mut d = match *self.content {
            Content::Generated { .. } => format!(
                "simulated store, {size} blocks, {lat} latency, ~{}:1 compressible",
                self.compressibility
            ),
            Content::Supplied(_) => {
                format!("simulated store, {lat} latency, blocks supplied by the caller")
            }
        };
        if let Some(f) = &self.faults {
            let c = &f.cfg;
            d += &format!(
                ", faults: fail {}, slow {} (+{:?}), hang {}",
                c.fail, c.slow, c.slow_by, c.hang
            );
        }
        d
    }
}

impl Drop for SimStore {
    fn drop(&mut self) {
        let hung = {
            let (m, cv) = &*self.q;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            g.closed = true;
            cv.notify_all();
            std::mem::take(&mut g.hung)
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Outside the lock: each fails its read with `Dropped`.
        drop(hung);
    }
}

/// SplitMix64 finaliser: a cheap, well-mixed step for generated content.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_after_latency_with_content_from_the_key() {
        let s = SimStore::new(Latency::Fixed(Duration::from_millis(20)), 4096).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        for k in [b"b".as_slice(), b"a"] {
            let tx = tx.clone();
            let key = k.to_vec();
            s.read(
                k,
                ReadDone::new(move |r| tx.send((key, r.unwrap(), t0.elapsed())).unwrap()),
            );
        }
        for _ in 0..2 {
            let (key, data, took) = rx.recv().unwrap();
            assert!(took >= Duration::from_millis(20), "{took:?}");
            assert_eq!(data, SimStore::content(&key, 4096, 1.0));
        }
        assert_ne!(
            SimStore::content(b"a", 64, 1.0),
            SimStore::content(b"b", 64, 1.0)
        );
    }

    #[test]
    fn compressibility_sets_the_zero_fraction() {
        let c = SimStore::content(b"k", 4096, 2.0);
        let zeros = c.iter().filter(|&&b| b == 0).count();
        assert!((1900..=2200).contains(&zeros), "{zeros}");
    }

    /// Reads `keys` and returns each result with how long it took, in
    /// completion order (waits at most `wait` for each).
    fn read_all(
        s: &SimStore,
        keys: &[&[u8]],
        wait: Duration,
    ) -> Vec<Option<(ReadResult, Duration)>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        for k in keys {
            let tx = tx.clone();
            s.read(
                k,
                ReadDone::new(move |r| {
                    let _ = tx.send((r, t0.elapsed()));
                }),
            );
        }
        keys.iter().map(|_| rx.recv_timeout(wait).ok()).collect()
    }

    fn faulty(faults: SimFaults) -> SimStore {
        SimStore::new(Latency::Fixed(Duration::from_millis(1)), 512)
            .unwrap()
            .with_faults(faults)
    }

    #[test]
    fn injected_failures_fail_the_read_and_are_counted() {
        let s = faulty(SimFaults {
            fail: 1.0,
            ..SimFaults::default()
        });
        for r in read_all(&s, &[b"a", b"b", b"c"], Duration::from_secs(5)) {
            let (r, _) = r.expect("answered");
            assert!(
                matches!(&r, Err(BackingError::Other(m)) if m == INJECTED_FAILURE),
                "{r:?}"
            );
        }
        let k = s.fault_counters();
        assert_eq!(k.failed.load(Relaxed), 3);
        assert_eq!((k.slow.load(Relaxed), k.hung.load(Relaxed)), (0, 0));
        assert!(s.describe().contains("fail 1"), "{}", s.describe());
    }

    #[test]
    fn slow_reads_are_answered_late_with_the_right_block() {
        let s = faulty(SimFaults {
            slow: 1.0,
            slow_by: Duration::from_millis(60),
            ..SimFaults::default()
        });
        let (r, took) = read_all(&s, &[b"k"], Duration::from_secs(5))[0]
            .take()
            .expect("answered");
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert_eq!(r.unwrap(), SimStore::content(b"k", 512, 1.0));
        assert_eq!(s.fault_counters().slow.load(Relaxed), 1);
        // Without faults the same read is fast.
        let plain = SimStore::new(Latency::Fixed(Duration::from_millis(1)), 512).unwrap();
        let (_, took) = read_all(&plain, &[b"k"], Duration::from_secs(5))[0]
            .take()
            .unwrap();
        assert!(took < Duration::from_millis(60), "{took:?}");
    }

    #[test]
    fn hung_reads_are_answered_only_when_the_store_is_dropped() {
        let s = faulty(SimFaults {
            hang: 1.0,
            ..SimFaults::default()
        });
        let (tx, rx) = std::sync::mpsc::channel();
        s.read(b"h", ReadDone::new(move |r| tx.send(r).unwrap()));
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "answered"
        );
        assert_eq!(s.fault_counters().hung.load(Relaxed), 1);
        drop(s);
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("failed at drop");
        assert!(matches!(r, Err(BackingError::Dropped)), "{r:?}");
    }

    #[test]
    fn faults_follow_their_probabilities_and_the_seed() {
        let keys: Vec<Vec<u8>> = (0..400u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let run = |seed| {
            let s = faulty(SimFaults {
                fail: 0.25,
                seed,
                ..SimFaults::default()
            });
            let mut failed: Vec<bool> = vec![];
            // One at a time, so completion order is submission order.
            for k in &keys {
                let r = read_all(&s, &[k], Duration::from_secs(5))[0]
                    .take()
                    .unwrap();
                failed.push(r.0.is_err());
            }
            let n = failed.iter().filter(|&&f| f).count() as u64;
            assert_eq!(n, s.fault_counters().failed.load(Relaxed));
            assert!((60..=140).contains(&n), "{n} of 400 failed at p = 0.25");
            failed
        };
        assert_eq!(run(7), run(7), "the same seed, the same faults");
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn supplied_content_is_read_when_the_read_completes() {
        let version = Arc::new(AtomicU64::new(1));
        let v = version.clone();
        let s = SimStore::new(Latency::Fixed(Duration::from_millis(80)), 512)
            .unwrap()
            .with_content(move |key| {
                if key == b"missing" {
                    return Err(BackingError::NotFound("missing".into()));
                }
                let mut b = key.to_vec();
                b.extend(v.load(Relaxed).to_le_bytes());
                Ok(b)
            });
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        s.read(b"k", ReadDone::new(move |r| tx.send(r).unwrap()));
        s.read(b"missing", ReadDone::new(move |r| tx2.send(r).unwrap()));
        // Changed after the read started, before it completes.
        version.store(2, Relaxed);
        let a = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(a, [b"k".as_slice(), &2u64.to_le_bytes()].concat());
        let b = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(b, Err(BackingError::NotFound(_))), "{b:?}");
        assert!(s.describe().contains("supplied"), "{}", s.describe());
    }

    #[test]
    fn dropping_the_store_completes_nothing_twice_and_joins() {
        let s = SimStore::new(Latency::Fixed(Duration::ZERO), 512).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        s.read(b"x", ReadDone::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv().unwrap());
        drop(s);
    }
}
