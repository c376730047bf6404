//! The buffer pool: block buffers carved from one hugepage region.
//!
//! * Any buffer, whatever its size, is a run of 512-byte granules of the
//!   region, found best-fit among the free runs; a run given back merges
//!   with its free neighbours. So memory never strands in a size class: a
//!   pool of fixed-size classes in 2 MiB slabs stranded most of a pool
//!   under a mix of sizes (CloudPhysics' 117 sizes ran it out with a third
//!   of it free), and held at most 0.83 of it with sizes uniform in 512 B –
//!   1 MiB (docs/BENCHMARKS.md). Every buffer is 512-B aligned and a
//!   multiple of 512 B, as O_DIRECT and NVMe want.
//! * The free runs are kept outside the region (two ordered maps), so the
//!   region holds data only and a device can register it whole. They sit
//!   under one mutex. (Hand-rolled: TLSF crates keep their headers inside
//!   the pool, where each 512-B-aligned buffer would also pad out.)
//! * Each reactor keeps a small magazine of the buffers it freed, by size
//!   ([`LocalCache`]), and takes from it first: most allocations and
//!   releases on a reactor touch no lock shared with other reactors. That
//!   is all the memory that can strand: the magazines together hold at
//!   most 1/32 of the pool (and each at most [`MAGAZINE_BYTES`]), and a
//!   reactor the runs cannot serve gives its own back first.
//! * Buffers are reference-counted handles ([`Buf`]); the last drop
//!   returns the buffer.
//! * Running out is counted (`alloc_fail`) and reported as `None`.

mod free_on_write;
mod region;

pub use free_on_write::FreeOnWrite;

pub use region::HUGEPAGE;
pub use region::{FreeFn, Region};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Smallest buffer, and the granule every buffer is a multiple of.
pub const MIN_BUF: usize = 512;

/// The most a reactor's magazine holds, whatever the pool's size. Buffers
/// past it go back to the runs at once.
pub const MAGAZINE_BYTES: usize = 2 << 20;

/// All magazines together hold at most this fraction of the pool.
const MAGAZINES_SHARE: usize = 32;

/// The largest buffer a magazine keeps (bigger ones are rare: feed writes).
const MAGAZINE_MAX_BUF: usize = 256 << 10;

/// The default most a buffer is aligned to: the block size of nearly
/// every device (an engine with larger device blocks asks for more).
pub const IO_ALIGN: usize = 4096;

/// Pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Region size in bytes.
    pub capacity_bytes: u64,
    /// True when the region came from hugetlb pages.
    pub hugepages: bool,
    /// Buffers handed out and not yet returned.
    pub outstanding: u64,
    /// Bytes of the outstanding buffers (their sizes, whole granules).
    pub outstanding_bytes: u64,
    /// Free runs: how fragmented the free memory is.
    pub free_runs: u64,
    /// Bytes in the free runs.
    pub free_bytes: u64,
    /// Bytes freed into the reactors' magazines and not taken again: free
    /// for their reactor only (at most 1/32 of the pool).
    pub magazine_bytes: u64,
    /// The largest free run, in bytes: the largest buffer that can be had
    /// now.
    pub largest_free: u64,
    /// Allocations that found no free run large enough.
    pub alloc_fail: u64,
}

/// The free runs of the region, in granules.
#[derive(Debug, Default)]
struct Runs {
    /// Start → length.
    by_start: BTreeMap<u32, u32>,
    /// (length, start), for best fit: the shortest run that is long
    /// enough, the lowest one among equals.
    by_len: BTreeSet<(u32, u32)>,
}

impl Runs {
    fn insert(&mut self, start: u32, len: u32) {
        self.by_start.insert(start, len);
        self.by_len.insert((len, start));
    }

    fn remove(&mut self, start: u32, len: u32) {
        self.by_start.remove(&start);
        self.by_len.remove(&(len, start));
    }

    /// Takes `n` granules, starting at a multiple of `align` granules (a
    /// power of two), from the best-fitting run that has room for them.
    fn take(&mut self, n: u32, align: u32) -> Option<u32> {
        let fits = |&(len, start): &(u32, u32)| {
            let at = start.next_multiple_of(align);
            (at + n <= start + len).then_some((len, start, at))
        };
        // The shortest runs that may fit, a few of them; failing those, the
        // shortest run that fits wherever it starts; failing that (a pool
        // nearly full of short misaligned runs), every run that may fit.
        let (len, start, at) = self
            .by_len
            .range((n, 0)..)
            .take(32)
            .find_map(fits)
            .or_else(|| {
                self.by_len
                    .range((n + align - 1, 0)..)
                    .next()
                    .and_then(fits)
            })
            .or_else(|| self.by_len.range((n, 0)..(n + align - 1, 0)).find_map(fits))?;
        self.remove(start, len);
        if at > start {
            self.insert(start, at - start);
        }
        if at + n < start + len {
            self.insert(at + n, start + len - at - n);
        }
        Some(at)
    }

    /// Gives `n` granules at `start` back, merged with free neighbours.
    fn give(&mut self, start: u32, n: u32) {
        let (mut s, mut len) = (start, n);
        if let Some((&ps, &pl)) = self.by_start.range(..start).next_back() {
            debug_assert!(ps + pl <= start, "run {ps}+{pl} overlaps {start}");
            if ps + pl == start {
                self.remove(ps, pl);
                (s, len) = (ps, len + pl);
            }
        }
        if let Some(&nl) = self.by_start.get(&(start + n)) {
            self.remove(start + n, nl);
            len += nl;
        }
        self.insert(s, len);
    }
}

#[derive(Debug)]
struct Shared {
    id: usize,
    region: Region,
    max_buf: usize,
    /// The most a buffer is aligned to (see [`BufPool::alloc`]).
    io_align: usize,
    /// Reactors with a magazine, and the bytes the magazines hold.
    magazines: AtomicU64,
    magazine_bytes: AtomicU64,
    runs: Mutex<Runs>,
    outstanding: AtomicU64,
    outstanding_bytes: AtomicU64,
    alloc_fail: AtomicU64,
    warned: AtomicBool,
}

/// A buffer pool. Cheap to clone; all clones share the region.
#[derive(Clone, Debug)]
pub struct BufPool {
    shared: Arc<Shared>,
}

static NEXT_POOL_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// A reactor's freed buffers, by size in granules: (size, starts).
#[derive(Debug, Default)]
struct Magazine {
    bins: Vec<(u32, Vec<u32>)>,
    bytes: usize,
}

impl Magazine {
    fn pop(&mut self, n: u32) -> Option<u32> {
        let (_, v) = self.bins.iter_mut().find(|(size, _)| *size == n)?;
        let start = v.pop()?;
        self.bytes -= n as usize * MIN_BUF;
        Some(start)
    }

    /// Keeps a buffer of `n` granules at `start`, if the magazine stays
    /// within `limit` bytes.
    fn push(&mut self, start: u32, n: u32, limit: usize) -> bool {
        let bytes = n as usize * MIN_BUF;
        if bytes > MAGAZINE_MAX_BUF || self.bytes + bytes > limit {
            return false;
        }
        match self.bins.iter_mut().find(|(size, _)| *size == n) {
            Some((_, v)) => v.push(start),
            None => self.bins.push((n, vec![start])),
        }
        self.bytes += bytes;
        true
    }

    /// Gives everything back to `runs`, and takes it off the pool's
    /// count of magazine bytes.
    fn drain_into(&mut self, runs: &mut Runs, magazine_bytes: &AtomicU64) {
        for (n, v) in self.bins.drain(..) {
            for start in v {
                runs.give(start, n);
            }
        }
        magazine_bytes.fetch_sub(std::mem::take(&mut self.bytes) as u64, Relaxed);
    }
}

thread_local! {
    /// The magazines of the pools this thread is a reactor of.
    static LOCAL: RefCell<Vec<(usize, Magazine)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's magazine for pool `id`, if it has one.
fn with_magazine<R>(id: usize, f: impl FnOnce(&mut Magazine) -> R) -> Option<R> {
    LOCAL
        .try_with(|l| {
            let mut l = l.try_borrow_mut().ok()?;
            let (_, m) = l.iter_mut().find(|(i, _)| *i == id)?;
            Some(f(m))
        })
        .ok()
        .flatten()
}

impl BufPool {
    /// Maps a pool of `capacity` bytes for blocks up to `max_block` bytes.
    /// Falls back to normal pages, with one warning, when hugepages are
    /// not available.
    pub fn new(capacity: usize, max_block: usize, try_hugepages: bool) -> std::io::Result<BufPool> {
        Self::new_aligned(capacity, max_block, IO_ALIGN, try_hugepages)
    }

    /// [`BufPool::new`] with buffers aligned for devices of blocks up to
    /// `io_align` bytes.
    pub fn new_aligned(
        capacity: usize,
        max_block: usize,
        io_align: usize,
        try_hugepages: bool,
    ) -> std::io::Result<BufPool> {
        if capacity.div_ceil(HUGEPAGE).max(1) * HUGEPAGE / MIN_BUF > u32::MAX as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a buffer pool of {capacity} B: at most 2 TiB"),
            ));
        }
        let region = Region::map(capacity, try_hugepages)?;
        if try_hugepages && !region.hugepages() {
            log::warn!(
                "no 2 MiB hugepages for a {} MiB buffer pool; using normal pages (see env/setup.sh)",
                region.len() >> 20
            );
        }
        Ok(Self::from_region_aligned(region, max_block, io_align))
    }

    /// A pool over memory given by a device (SPDK's DMA memory).
    pub fn from_region(region: Region, max_block: usize) -> BufPool {
        Self::from_region_aligned(region, max_block, IO_ALIGN)
    }

    /// A pool whose buffers are aligned for devices of blocks up to
    /// `io_align` bytes (a power of two; see [`BufPool::alloc`]).
    pub fn from_region_aligned(region: Region, max_block: usize, io_align: usize) -> BufPool {
        assert!(
            io_align.is_power_of_two() && io_align <= HUGEPAGE,
            "io_align {io_align}"
        );
        assert!(max_block <= HUGEPAGE, "max block above 2 MiB");
        // Granules are u32: a region above 2 TiB (a device's; `new`
        // refuses one) is used up to that.
        let granules = u32::try_from(region.len() / MIN_BUF).unwrap_or_else(|_| {
            log::warn!(
                "a buffer pool region of {} B: only its first 2 TiB are used",
                region.len()
            );
            u32::MAX
        });
        let mut runs = Runs::default();
        if granules > 0 {
            runs.insert(0, granules);
        }
        BufPool {
            shared: Arc::new(Shared {
                id: NEXT_POOL_ID.fetch_add(1, Relaxed),
                region,
                max_buf: max_block.max(1).next_multiple_of(MIN_BUF),
                io_align: io_align.max(MIN_BUF),
                magazines: AtomicU64::new(0),
                magazine_bytes: AtomicU64::new(0),
                runs: Mutex::new(runs),
                outstanding: AtomicU64::new(0),
                outstanding_bytes: AtomicU64::new(0),
                alloc_fail: AtomicU64::new(0),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// The pool's memory: (start address, length). Every buffer lies in
    /// it, so a device can register it once (io_uring fixed buffers, SPDK
    /// DMA memory).
    pub fn region(&self) -> (usize, usize) {
        let r = &self.shared.region;
        (r.base().as_ptr() as usize, r.len())
    }

    /// The largest buffer the pool hands out.
    pub fn max_buf(&self) -> usize {
        self.shared.max_buf
    }

    /// A writable buffer of at least `len` bytes (`len` rounded up to
    /// 512), or `None` (counted) when no free run is long enough or `len`
    /// exceeds [`BufPool::max_buf`]. A buffer is aligned to the largest
    /// power of two that divides its size, up to the pool's `io_align`
    /// (4 KiB by default): a device I/O is a whole number of the device's
    /// blocks, and O_DIRECT wants its buffer aligned to one.
    pub fn alloc(&self, len: usize) -> Option<BufMut> {
        let s = &self.shared;
        let size = len.max(1).next_multiple_of(MIN_BUF);
        let align = (1 << size.trailing_zeros()).min(s.io_align) / MIN_BUF;
        let n = (size / MIN_BUF) as u32;
        // A buffer of this size from this reactor's magazine was aligned
        // for this size when it was first taken.
        let start = match with_magazine(s.id, |m| m.pop(n)).flatten() {
            Some(start) => {
                s.magazine_bytes.fetch_sub(size as u64, Relaxed);
                Some(start)
            }
            None if size <= s.max_buf => {
                let mut runs = s.runs.lock().unwrap_or_else(|e| e.into_inner());
                runs.take(n, align as u32).or_else(|| {
                    // What this reactor's magazine holds may make room.
                    with_magazine(s.id, |m| m.drain_into(&mut runs, &s.magazine_bytes))?;
                    runs.take(n, align as u32)
                })
            }
            None => None,
        };
        let Some(start) = start else {
            s.alloc_fail.fetch_add(1, Relaxed);
            if !s.warned.swap(true, Relaxed) {
                log::warn!("buffer pool exhausted (request of {len} B); blocks are served uncached until buffers return");
            }
            return None;
        };
        s.outstanding.fetch_add(1, Relaxed);
        s.outstanding_bytes.fetch_add(size as u64, Relaxed);
        let ptr = s.region.base().as_ptr() as usize + start as usize * MIN_BUF;
        Some(BufMut(Arc::new(Inner {
            pool: s.clone(),
            // A run lies inside the region, whose base is not null.
            ptr: NonNull::new(ptr as *mut u8).expect("pool pointer is null"),
            cap: size as u32,
            len: size as u32,
        })))
    }

    /// Makes the calling thread a reactor of this pool: it keeps a
    /// magazine of the buffers it frees, given back when the returned
    /// guard drops.
    pub fn register_local_cache(&self) -> LocalCache {
        let _ = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            if !l.iter().any(|(id, _)| *id == self.shared.id) {
                l.push((self.shared.id, Magazine::default()));
                self.shared.magazines.fetch_add(1, Relaxed);
            }
        });
        LocalCache { pool: self.clone() }
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        let (free_runs, free_bytes, largest_free) = {
            let r = s.runs.lock().unwrap_or_else(|e| e.into_inner());
            let largest = r.by_len.last().map_or(0, |&(l, _)| l);
            let free: u64 = r.by_start.values().map(|&l| u64::from(l)).sum();
            (
                r.by_start.len() as u64,
                free * MIN_BUF as u64,
                u64::from(largest) * MIN_BUF as u64,
            )
        };
        PoolStats {
            capacity_bytes: s.region.len() as u64,
            hugepages: s.region.hugepages(),
            outstanding: s.outstanding.load(Relaxed),
            outstanding_bytes: s.outstanding_bytes.load(Relaxed),
            free_runs,
            free_bytes,
            magazine_bytes: s.magazine_bytes.load(Relaxed),
            largest_free,
            alloc_fail: s.alloc_fail.load(Relaxed),
        }
    }
}

fn give_back(s: &Shared, ptr: NonNull<u8>, cap: u32) {
    s.outstanding.fetch_sub(1, Relaxed);
    s.outstanding_bytes.fetch_sub(u64::from(cap), Relaxed);
    let start = ((ptr.as_ptr() as usize - s.region.base().as_ptr() as usize) / MIN_BUF) as u32;
    let n = cap / MIN_BUF as u32;
    let limit = (s.region.len() / MAGAZINES_SHARE / s.magazines.load(Relaxed).max(1) as usize)
        .min(MAGAZINE_BYTES);
    if with_magazine(s.id, |m| m.push(start, n, limit)) == Some(true) {
        s.magazine_bytes.fetch_add(u64::from(cap), Relaxed);
        return;
    }
    s.runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .give(start, n);
}

/// A reactor's registration for a magazine; dropping it gives the
/// magazine's buffers back.
#[derive(Debug)]
pub struct LocalCache {
    pool: BufPool,
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        let s = &self.pool.shared;
        let _ = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            if let Some(i) = l.iter().position(|(id, _)| *id == s.id) {
                let (_, mut m) = l.swap_remove(i);
                let mut runs = s.runs.lock().unwrap_or_else(|e| e.into_inner());
                m.drain_into(&mut runs, &s.magazine_bytes);
                s.magazines.fetch_sub(1, Relaxed);
            }
        });
    }
}

#[derive(Debug)]
struct Inner {
    pool: Arc<Shared>,
    ptr: NonNull<u8>,
    /// The buffer's size, whole granules.
    cap: u32,
    /// Valid bytes: the capacity while writable, the data length once frozen.
    len: u32,
}

// SAFETY: `Inner` owns its buffer exclusively (the pool never hands the
// same granules out twice while they are outstanding); the pointer is into
// a region kept alive by `pool`. Writes happen only through `BufMut`,
// which is unique, so sharing `&Inner` across threads exposes only reads.
unsafe impl Send for Inner {}
// SAFETY: see `Send` above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        give_back(&self.pool, self.ptr, self.cap);
    }
}

/// A writable buffer, owned by one thread. Freeze it to share it.
#[derive(Debug)]
pub struct BufMut(Arc<Inner>);

impl BufMut {
    /// The whole buffer (its capacity).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let inner = Arc::get_mut(&mut self.0).expect("BufMut is unique");
        // SAFETY: ptr points to `cap` bytes of the live region that no one
        // else references (BufMut is the only handle), so a unique borrow
        // tied to `&mut self` is sound.
        unsafe { std::slice::from_raw_parts_mut(inner.ptr.as_ptr(), inner.cap as usize) }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.0.cap as usize
    }

    /// Makes the first `len` bytes a shared, read-only buffer.
    pub fn freeze(mut self, len: usize) -> Buf {
        let inner = Arc::get_mut(&mut self.0).expect("BufMut is unique");
        assert!(len <= inner.cap as usize, "freeze past capacity");
        inner.len = len as u32;
        Buf(self.0)
    }
}

/// A shared, read-only, reference-counted buffer.
#[derive(Clone, Debug)]
pub struct Buf(Arc<Inner>);

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to at least `len` initialised-or-zero bytes
        // of the live region (kept alive by the Arc); after freeze no one
        // writes them, so shared reads are sound.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len as usize) }
    }
}

impl Buf {
    /// Number of handles to this buffer.
    pub fn ref_count(this: &Buf) -> usize {
        Arc::strong_count(&this.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_write_freeze_read_and_return() {
        let pool = BufPool::new(4 << 20, 1 << 20, false).unwrap();
        let mut b = pool.alloc(3000).unwrap();
        assert_eq!(b.capacity(), 3072);
        b.as_mut_slice()[..5].copy_from_slice(b"hello");
        let f = b.freeze(5);
        assert_eq!(&*f, b"hello");
        let g = f.clone();
        assert_eq!(Buf::ref_count(&g), 2);
        assert_eq!(pool.stats().outstanding, 1);
        drop(f);
        assert_eq!(pool.stats().outstanding, 1);
        drop(g);
        assert_eq!(pool.stats().outstanding, 0);
        assert_eq!(pool.stats().free_runs, 1, "merged back into one run");
    }

    #[test]
    fn exhaustion_is_counted_and_recovers() {
        let pool = BufPool::new(2 << 20, 1 << 20, false).unwrap();
        let a = pool.alloc(1 << 20).unwrap();
        let b = pool.alloc(1 << 20).unwrap();
        assert!(pool.alloc(1 << 20).is_none());
        assert!(pool.alloc(512).is_none(), "nothing left at all");
        assert_eq!(pool.stats().alloc_fail, 2);
        drop(a);
        // Any size fits where the freed buffer was.
        let small: Vec<_> = (0..2048).map(|_| pool.alloc(512).unwrap()).collect();
        assert!(pool.alloc(512).is_none());
        drop(small);
        assert!(pool.alloc(1 << 20).is_some());
        drop(b);
        assert!(
            pool.alloc((1 << 20) + 1).is_none(),
            "above the largest buffer"
        );
    }

    #[test]
    fn freed_runs_merge_with_both_neighbours() {
        let pool = BufPool::new(2 << 20, 1 << 20, false).unwrap();
        let bufs: Vec<_> = (0..4).map(|_| pool.alloc(512 << 10).unwrap()).collect();
        let mut it = bufs.into_iter();
        let (a, b, c, d) = (it.next(), it.next(), it.next(), it.next());
        drop(a);
        drop(c);
        assert_eq!(pool.stats().free_runs, 2);
        assert!(pool.alloc(1 << 20).is_none(), "two runs of 512 KiB apart");
        drop(b);
        assert_eq!(pool.stats().free_runs, 1, "a, b and c are one run");
        assert_eq!(pool.stats().largest_free, 3 << 19);
        assert!(pool.alloc(1 << 20).is_some());
        drop(d);
    }

    /// Threads allocate and free every size at random on a small pool;
    /// every live buffer holds its owner's pattern, which would break if
    /// two buffers overlapped.
    #[test]
    fn buffers_never_overlap_whatever_the_mix() {
        use rand::{Rng, SeedableRng};
        let pool = BufPool::new(16 << 20, 1 << 20, false).unwrap();
        let threads: Vec<_> = (0..3u8)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let _cache = (t != 2).then(|| pool.register_local_cache());
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(t));
                    let mut live: Vec<(Buf, u8)> = Vec::new();
                    for i in 0..20_000u32 {
                        if rng.gen_bool(0.5) || live.len() > 64 {
                            if !live.is_empty() {
                                let (b, tag) = live.swap_remove(rng.gen_range(0..live.len()));
                                assert!(b.iter().all(|&x| x == tag), "two buffers overlap");
                            }
                        } else {
                            let len = rng.gen_range(1..=1 << 20);
                            if let Some(mut b) = pool.alloc(len) {
                                let tag = (i as u8) ^ (t << 6);
                                b.as_mut_slice().fill(tag);
                                let cap = b.capacity();
                                live.push((b.freeze(cap), tag));
                            }
                        }
                    }
                    for (b, tag) in live {
                        assert!(b.iter().all(|&x| x == tag), "two buffers overlap");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = pool.stats();
        assert_eq!((s.outstanding, s.outstanding_bytes, s.free_runs), (0, 0, 1));
        assert_eq!(s.largest_free, 16 << 20);
    }

    /// What a cache can fill the pool to, with block sizes uniform in
    /// 512 B – 1 MiB: allocate until the pool says no, evict a block at
    /// random, go on. At each refusal, the bytes in use over the capacity
    /// (`held`: what was not stranded) and the bytes asked for over it
    /// (`asked`: less the rounding to 512 B).
    pub(crate) fn usable_fraction(capacity: usize, rounds: usize) -> (f64, f64) {
        use rand::{Rng, SeedableRng};
        let pool = BufPool::new(capacity, 1 << 20, false).unwrap();
        let _cache = pool.register_local_cache();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(14);
        let mut live: Vec<(BufMut, usize)> = Vec::new();
        let (mut held, mut asked) = (Vec::new(), Vec::new());
        let mut asked_bytes = 0usize;
        while held.len() < rounds {
            let len = rng.gen_range(512..=1 << 20);
            match pool.alloc(len) {
                Some(b) => {
                    asked_bytes += len;
                    live.push((b, len));
                }
                None => {
                    let cap = pool.stats().capacity_bytes as f64;
                    held.push(pool.stats().outstanding_bytes as f64 / cap);
                    asked.push(asked_bytes as f64 / cap);
                    let (_, len) = live.swap_remove(rng.gen_range(0..live.len()));
                    asked_bytes -= len;
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        // The first refusals come while the pool is first filled.
        held.drain(..rounds / 10);
        asked.drain(..rounds / 10);
        (median(&mut held), median(&mut asked))
    }

    #[test]
    fn a_mix_of_sizes_does_not_strand_the_pool() {
        let (held, asked) = usable_fraction(256 << 20, 2000);
        println!("uniform 512 B - 1 MiB: {held:.3} of the pool held, {asked:.3} asked for");
        assert!(held >= 0.9, "held {held:.3}");
        assert!(asked >= 0.9, "asked {asked:.3}");
    }

    #[test]
    fn io_buffers_are_aligned_to_their_blocks() {
        let pool = BufPool::new(8 << 20, 1 << 20, false).unwrap();
        let addr = |b: &BufMut| b.0.ptr.as_ptr() as usize;
        let mut keep = Vec::new();
        for len in [512, 4096, 1536, 12288, 8192, 3000, 1 << 20, 65536, 2560] {
            let b = pool.alloc(len).unwrap();
            let want = (1usize << b.capacity().trailing_zeros()).min(IO_ALIGN);
            assert_eq!(addr(&b) % want, 0, "{len} B at {:#x}", addr(&b));
            keep.push(b);
        }
        let big = BufPool::new_aligned(8 << 20, 1 << 20, 65536, false).unwrap();
        let _small = big.alloc(512).unwrap();
        let b = big.alloc(65536).unwrap();
        assert_eq!(addr(&b) % 65536, 0);
        drop(keep);
        assert_eq!(pool.stats().free_runs, 1, "the padding merged back");
    }

    #[test]
    fn a_reactor_reuses_what_it_freed_and_gives_it_back_when_short() {
        let pool = BufPool::new(64 << 20, 1 << 20, false).unwrap();
        let p = pool.clone();
        std::thread::spawn(move || {
            let cache = p.register_local_cache();
            let a = p.alloc(4096).unwrap();
            let at = a.0.ptr.as_ptr() as usize;
            drop(a);
            let s = p.stats();
            assert_eq!((s.free_bytes, s.magazine_bytes), ((64 << 20) - 4096, 4096));
            let b = p.alloc(4096).unwrap();
            assert_eq!(b.0.ptr.as_ptr() as usize, at, "the magazine's buffer");
            drop(b);
            // Fill the pool with 64 KiB buffers (60 KiB stay free: the
            // 4 KiB one is in the magazine), then free 16 neighbours: 1 MiB
            // more in the magazine (within its 2 MiB).
            let mut all: Vec<_> = (0..1023).map(|_| p.alloc(64 << 10).unwrap()).collect();
            all.sort_by_key(|b| b.0.ptr.as_ptr() as usize);
            drop(all.drain(100..116).collect::<Vec<_>>());
            let s = p.stats();
            assert_eq!(
                (s.free_bytes, s.magazine_bytes),
                (60 << 10, (1 << 20) + 4096),
                "{s:?}"
            );
            // The runs cannot serve 1 MiB: the magazine goes back to them.
            let whole = p.alloc(1 << 20).unwrap();
            assert_eq!(p.stats().magazine_bytes, 0);
            drop((whole, all));
            drop(cache);
            let s = p.stats();
            assert_eq!(
                (s.free_runs, s.magazine_bytes),
                (1, 0),
                "all back when the reactor left"
            );
            assert_eq!(s.free_bytes, 64 << 20);
        })
        .join()
        .unwrap();
        assert_eq!(pool.stats().outstanding, 0);
    }

    #[test]
    fn the_magazines_hold_at_most_a_32nd_of_the_pool() {
        let pool = BufPool::new(8 << 20, 1 << 20, false).unwrap();
        let p = pool.clone();
        std::thread::spawn(move || {
            let _cache = p.register_local_cache();
            let bufs: Vec<_> = (0..256).map(|_| p.alloc(8 << 10).unwrap()).collect();
            drop(bufs);
            assert_eq!(p.stats().magazine_bytes, (8 << 20) / 32);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_aligned_run_is_found_behind_many_misaligned_ones() {
        let mut r = Runs::default();
        // 40 runs of 8 granules, each starting one past a multiple of 8,
        // and one aligned run of 8 at the end.
        for i in 0..40 {
            r.insert(i * 32 + 1, 8);
        }
        r.insert(40 * 32, 8);
        assert_eq!(r.take(8, 8), Some(40 * 32));
        assert_eq!(r.take(8, 8), None, "no aligned run of 8 is left");
        assert_eq!(r.take(8, 1), Some(1), "unaligned, the first fits");
    }

    #[test]
    fn a_pool_above_2_tib_is_an_error_not_a_panic() {
        let e = BufPool::new(3 << 40, 1 << 20, false).unwrap_err();
        assert!(e.to_string().contains("at most 2 TiB"), "{e}");
    }

    #[test]
    fn hugepage_request_falls_back() {
        // With no hugepages configured this must still succeed.
        let pool = BufPool::new(2 << 20, 4096, true).unwrap();
        assert!(pool.alloc(4096).is_some());
    }
}
