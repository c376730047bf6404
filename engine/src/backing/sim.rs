//! A simulated slow store: every key has a block whose bytes are derived
//! from the key, delivered after a configurable latency. Because content
//! is a pure function of the key, any read can be checked byte for byte.

use super::{BackingStore, ReadDone};
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
}

/// The simulated store. Its blocks are `block_size` bytes, compressible
/// about `compressibility`:1, generated from the key by [`SimStore::content`].
pub struct SimStore {
    latency: Latency,
    block_size: usize,
    max_size: usize,
    compressibility: f64,
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
                            let len = Self::size_of(&p.key, block_size, max_size);
                            p.done.complete(Ok(Self::content(&p.key, len, ratio)));
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
            q,
            thread: Some(thread),
        })
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
        let at = Instant::now()
            + self
                .latency
                .sample(xxhash_rust::xxh3::xxh3_64(key) ^ 0x5bd1e995);
        let (m, cv) = &*self.q;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.seq += 1;
        let seq = g.seq;
        g.heap.push(Pending {
            at,
            seq,
            key: key.into(),
            done,
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
        format!(
            "simulated store, {size} blocks, {lat} latency, ~{}:1 compressible",
            self.compressibility
        )
    }
}

impl Drop for SimStore {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.q;
            m.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    #[test]
    fn dropping_the_store_completes_nothing_twice_and_joins() {
        let s = SimStore::new(Latency::Fixed(Duration::ZERO), 512).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        s.read(b"x", ReadDone::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv().unwrap());
        drop(s);
    }
}
