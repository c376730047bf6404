//! The buffer pool: block buffers carved from one hugepage region.
//!
//! * The region is cut into 2 MiB slabs; a slab is given to one size class
//!   the first time that class runs dry, and stays with it.
//! * Size classes are 512 B × {1, 1.5} × 2^k up to the maximum block size,
//!   so every buffer is a multiple of 512 B and 512-B aligned, and at most
//!   a third of a buffer is slack.
//! * Each reactor thread has a local cache per class ([`LocalCache`]);
//!   other threads use the shared free lists. Both are lock-free.
//! * Buffers are reference-counted handles ([`Buf`]); the last drop
//!   returns the buffer, to the dropping reactor's cache when there is one.
//! * Running out is counted (`alloc_fail`) and reported as `None`.

mod free_on_write;
mod region;

pub use free_on_write::FreeOnWrite;

pub use region::HUGEPAGE;
pub use region::{FreeFn, Region};

use crossbeam_queue::SegQueue;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Smallest buffer.
pub const MIN_BUF: usize = 512;
/// Buffers moved between a local cache and the shared lists at a time.
const BATCH: usize = 32;

/// The size classes up to `max`: 512, 1024, 1536, 2048, 3072, 4096, …
pub fn size_classes(max: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut base = MIN_BUF;
    while base <= max {
        v.push(base);
        let mid = base + base / 2;
        if base >= 1024 && mid <= max {
            v.push(mid);
        }
        base *= 2;
    }
    if v.last() != Some(&max) && max >= MIN_BUF {
        // A maximum that is no class of its own (e.g. 3 MiB + 1) still fits.
        v.push(max.next_multiple_of(MIN_BUF));
    }
    v
}

/// Pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Region size in bytes.
    pub capacity_bytes: u64,
    /// True when the region came from hugetlb pages.
    pub hugepages: bool,
    /// Buffers handed out and not yet returned.
    pub outstanding: u64,
    /// Bytes of the outstanding buffers (their class sizes).
    pub outstanding_bytes: u64,
    /// Slabs given to size classes so far.
    pub slabs_used: u64,
    /// Allocations that found no free buffer.
    pub alloc_fail: u64,
}

#[derive(Debug)]
struct Shared {
    id: usize,
    region: Region,
    classes: Vec<usize>,
    free: Vec<SegQueue<usize>>,
    next_slab: AtomicUsize,
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

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The local caches of the pools this thread is a reactor of.
    static LOCAL: RefCell<Vec<(usize, Vec<Vec<usize>>)>> = const { RefCell::new(Vec::new()) };
}

impl BufPool {
    /// Maps a pool of `capacity` bytes for blocks up to `max_block` bytes.
    /// Falls back to normal pages, with one warning, when hugepages are
    /// not available.
    pub fn new(capacity: usize, max_block: usize, try_hugepages: bool) -> std::io::Result<BufPool> {
        let region = Region::map(capacity, try_hugepages)?;
        if try_hugepages && !region.hugepages() {
            log::warn!(
                "no 2 MiB hugepages for a {} MiB buffer pool; using normal pages (see env/setup.sh)",
                region.len() >> 20
            );
        }
        Ok(Self::from_region(region, max_block))
    }

    /// A pool over memory given by a device (SPDK's DMA memory).
    pub fn from_region(region: Region, max_block: usize) -> BufPool {
        assert!(max_block <= HUGEPAGE, "max block above the slab size");
        let classes = size_classes(max_block);
        let free = classes.iter().map(|_| SegQueue::new()).collect();
        BufPool {
            shared: Arc::new(Shared {
                id: NEXT_POOL_ID.fetch_add(1, Relaxed),
                region,
                classes,
                free,
                next_slab: AtomicUsize::new(0),
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
        *self.shared.classes.last().expect("at least one class")
    }

    /// The class index for a buffer of `len` bytes, if one is big enough.
    pub fn class_for(&self, len: usize) -> Option<usize> {
        self.shared.classes.iter().position(|&c| c >= len.max(1))
    }

    /// A writable buffer of at least `len` bytes, or `None` (counted) when
    /// the pool is exhausted or `len` exceeds the largest class.
    pub fn alloc(&self, len: usize) -> Option<BufMut> {
        let class = self.class_for(len);
        let ptr = class.and_then(|c| self.take(c));
        let (Some(class), Some(ptr)) = (class, ptr) else {
            self.shared.alloc_fail.fetch_add(1, Relaxed);
            if !self.shared.warned.swap(true, Relaxed) {
                log::warn!("buffer pool exhausted (request of {len} B); blocks are served uncached until buffers return");
            }
            return None;
        };
        let size = self.shared.classes[class];
        self.shared.outstanding.fetch_add(1, Relaxed);
        self.shared
            .outstanding_bytes
            .fetch_add(size as u64, Relaxed);
        Some(BufMut(Arc::new(Inner {
            pool: self.shared.clone(),
            // `take` only returns pointers into the region, never null.
            ptr: NonNull::new(ptr as *mut u8).expect("pool pointer is null"),
            class: class as u8,
            len: size as u32,
        })))
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        PoolStats {
            capacity_bytes: s.region.len() as u64,
            hugepages: s.region.hugepages(),
            outstanding: s.outstanding.load(Relaxed),
            outstanding_bytes: s.outstanding_bytes.load(Relaxed),
            slabs_used: s.next_slab.load(Relaxed).min(self.slab_count()) as u64,
            alloc_fail: s.alloc_fail.load(Relaxed),
        }
    }

    /// Makes the calling thread a reactor of this pool: it gets local
    /// caches, flushed back when the returned guard drops.
    pub fn register_local_cache(&self) -> LocalCache {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if !l.iter().any(|(id, _)| *id == self.shared.id) {
                l.push((self.shared.id, vec![Vec::new(); self.shared.classes.len()]));
            }
        });
        LocalCache { pool: self.clone() }
    }

    fn slab_count(&self) -> usize {
        self.shared.region.len() / HUGEPAGE
    }

    fn take(&self, class: usize) -> Option<usize> {
        let s = &self.shared;
        let local = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let (_, caches) = l.iter_mut().find(|(id, _)| *id == s.id)?;
            let cache = &mut caches[class];
            if cache.is_empty() {
                while cache.len() < BATCH {
                    match s.free[class].pop() {
                        Some(p) => cache.push(p),
                        None => break,
                    }
                }
                if cache.is_empty() {
                    self.carve_slab(class, cache);
                }
            }
            Some(cache.pop())
        });
        match local {
            Some(p) => p,
            None => s.free[class].pop().or_else(|| {
                let mut v = Vec::new();
                self.carve_slab(class, &mut v);
                let p = v.pop();
                for q in v {
                    s.free[class].push(q);
                }
                p
            }),
        }
    }

    /// Gives a fresh slab to `class`, cutting it into buffers pushed to `out`.
    fn carve_slab(&self, class: usize, out: &mut Vec<usize>) {
        let s = &self.shared;
        let slab = s.next_slab.fetch_add(1, Relaxed);
        if slab >= self.slab_count() {
            return;
        }
        let size = s.classes[class];
        let base = s.region.base().as_ptr() as usize + slab * HUGEPAGE;
        out.extend((0..HUGEPAGE / size).rev().map(|i| base + i * size));
    }
}

fn give_back(s: &Shared, ptr: usize, class: usize) {
    s.outstanding.fetch_sub(1, Relaxed);
    s.outstanding_bytes
        .fetch_sub(s.classes[class] as u64, Relaxed);
    let kept = LOCAL.try_with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else {
            return false;
        };
        let Some((_, caches)) = l.iter_mut().find(|(id, _)| *id == s.id) else {
            return false;
        };
        let cache = &mut caches[class];
        cache.push(ptr);
        if cache.len() >= 4 * BATCH {
            for p in cache.drain(..2 * BATCH) {
                s.free[class].push(p);
            }
        }
        true
    });
    if kept != Ok(true) {
        s.free[class].push(ptr);
    }
}

/// A reactor's registration for local caches; dropping it flushes them
/// to the shared lists.
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
                let (_, caches) = l.swap_remove(i);
                for (class, cache) in caches.into_iter().enumerate() {
                    for p in cache {
                        s.free[class].push(p);
                    }
                }
            }
        });
    }
}

#[derive(Debug)]
struct Inner {
    pool: Arc<Shared>,
    ptr: NonNull<u8>,
    class: u8,
    /// Valid bytes: the class size while writable, the data length once frozen.
    len: u32,
}

// SAFETY: `Inner` owns its buffer exclusively (the pool never hands the
// same pointer out twice while it is outstanding); the pointer is into a
// region kept alive by `pool`. Writes happen only through `BufMut`, which
// is unique, so sharing `&Inner` across threads exposes only reads.
unsafe impl Send for Inner {}
// SAFETY: see `Send` above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        give_back(&self.pool, self.ptr.as_ptr() as usize, self.class as usize);
    }
}

/// A writable buffer, owned by one thread. Freeze it to share it.
#[derive(Debug)]
pub struct BufMut(Arc<Inner>);

impl BufMut {
    /// The whole buffer (its class size).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let inner = Arc::get_mut(&mut self.0).expect("BufMut is unique");
        let cap = inner.pool.classes[inner.class as usize];
        // SAFETY: ptr points to `cap` bytes of the live region that no one
        // else references (BufMut is the only handle), so a unique borrow
        // tied to `&mut self` is sound.
        unsafe { std::slice::from_raw_parts_mut(inner.ptr.as_ptr(), cap) }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.0.pool.classes[self.0.class as usize]
    }

    /// Makes the first `len` bytes a shared, read-only buffer.
    pub fn freeze(mut self, len: usize) -> Buf {
        let inner = Arc::get_mut(&mut self.0).expect("BufMut is unique");
        assert!(
            len <= inner.pool.classes[inner.class as usize],
            "freeze past capacity"
        );
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
    fn classes_are_512_multiples_up_to_max() {
        let c = size_classes(1 << 20);
        assert_eq!(&c[..6], &[512, 1024, 1536, 2048, 3072, 4096]);
        assert_eq!(*c.last().unwrap(), 1 << 20);
        assert!(c.iter().all(|x| x % 512 == 0));
        assert!(c.windows(2).all(|w| w[0] < w[1]));
    }

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
    }

    #[test]
    fn exhaustion_is_counted_and_recovers() {
        let pool = BufPool::new(2 << 20, 1 << 20, false).unwrap();
        let a = pool.alloc(1 << 20).unwrap();
        let b = pool.alloc(1 << 20).unwrap();
        assert!(pool.alloc(1 << 20).is_none());
        assert!(pool.alloc(512).is_none(), "no slab left for another class");
        assert_eq!(pool.stats().alloc_fail, 2);
        drop(a);
        assert!(pool.alloc(1 << 20).is_some());
        drop(b);
        assert!(
            pool.alloc((1 << 20) + 1).is_none(),
            "above the largest class"
        );
    }

    #[test]
    fn local_cache_serves_and_flushes() {
        let pool = BufPool::new(8 << 20, 1 << 20, false).unwrap();
        let p2 = pool.clone();
        std::thread::spawn(move || {
            let _cache = p2.register_local_cache();
            let bufs: Vec<_> = (0..1000).map(|_| p2.alloc(4096).unwrap()).collect();
            let mut seen: Vec<usize> = bufs.iter().map(|b| b.0.ptr.as_ptr() as usize).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 1000, "no buffer handed out twice");
            drop(bufs);
        })
        .join()
        .unwrap();
        let s = pool.stats();
        assert_eq!(s.outstanding, 0);
        // After the reactor left, its cached buffers are usable by others.
        let all: Vec<_> = (0..(s.slabs_used as usize * HUGEPAGE / 4096))
            .map(|_| pool.alloc(4096).unwrap())
            .collect();
        assert!(!all.is_empty());
    }

    #[test]
    fn hugepage_request_falls_back() {
        // With no hugepages configured this must still succeed.
        let pool = BufPool::new(2 << 20, 4096, true).unwrap();
        assert!(pool.alloc(4096).is_some());
    }
}
