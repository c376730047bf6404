//! The pool's memory: one anonymous mapping, from 2 MiB hugepages when the
//! system has them, else from normal pages (with a THP hint).

use std::ptr::NonNull;

/// Size of a hugepage and of a pool slab.
pub const HUGEPAGE: usize = 2 << 20;

/// One mapped region. Unmapped on drop.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    hugepages: bool,
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
        })
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
    /// True when backed by hugetlb pages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len is exactly our mapping, and every buffer handle
        // keeps the pool (and so this region) alive, so nothing uses it now.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
