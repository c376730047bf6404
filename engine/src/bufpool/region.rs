//! The pool's memory: one anonymous mapping, from 2 MiB hugepages when the
//! system has them, else from normal pages (with a THP hint); or memory a
//! device provides (SPDK's DMA memory), freed by that device's function.

use std::ptr::NonNull;

/// Size of a hugepage and of a pool slab.
pub const HUGEPAGE: usize = 2 << 20;

/// Frees memory that a device allocated for the pool.
pub type FreeFn = Box<dyn FnOnce(NonNull<u8>, usize) + Send + Sync>;

/// One region. Unmapped (or given back to its allocator) on drop.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    hugepages: bool,
    /// `None`: our own mapping, unmapped on drop.
    free: Option<FreeFn>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("hugepages", &self.hugepages)
            .field("external", &self.free.is_some())
            .finish()
    }
}

// SAFETY: the region is plain memory owned by this value; the pool hands
// out disjoint pieces of it under its own synchronisation.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself exposes only the base pointer.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes (rounded up to 2 MiB). Tries hugepages first when
    /// `try_hugepages`; returns the OS error only if both attempts fail.
    pub fn map(len: usize, try_hugepages: bool) -> std::io::Result<Region> {
        let len = len.div_ceil(HUGEPAGE).max(1) * HUGEPAGE;
        if try_hugepages {
            // No MAP_NORESERVE here: without a reservation a hugetlb mapping
            // succeeds with zero hugepages free and SIGBUSes on first touch.
            if let Some(ptr) = Self::mmap(len, libc::MAP_HUGETLB) {
                return Ok(Region {
                    ptr,
                    len,
                    hugepages: true,
                    free: None,
                });
            }
        }
        let ptr = Self::mmap(len, libc::MAP_NORESERVE).ok_or_else(std::io::Error::last_os_error)?;
        // SAFETY: ptr/len is the mapping just created; MADV_HUGEPAGE is
        // only a hint and cannot invalidate it. Failure is harmless.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
        }
        Ok(Region {
            ptr,
            len,
            hugepages: false,
            free: None,
        })
    }

    /// A region of memory allocated elsewhere (a device's DMA memory);
    /// `free` gives it back on drop.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes, aligned to
    /// 2 MiB, used by nothing else, and stay so until `free` is called.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, hugepages: bool, free: FreeFn) -> Region {
        Region {
            ptr,
            len,
            hugepages,
            free: Some(free),
        }
    }

    fn mmap(len: usize, extra_flags: libc::c_int) -> Option<NonNull<u8>> {
        // SAFETY: an anonymous private mapping with no address hint; it
        // touches no existing memory. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            None
        } else {
            NonNull::new(p.cast())
        }
    }

    /// Base address.
    pub fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Length in bytes, a multiple of 2 MiB.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: a region holds at least one 2 MiB page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// True when backed by hugetlb pages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(free) = self.free.take() {
            free(self.ptr, self.len);
            return;
        }
        // SAFETY: ptr/len is exactly our mapping, and every buffer handle
        // keeps the pool (and so this region) alive, so nothing uses it now.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
