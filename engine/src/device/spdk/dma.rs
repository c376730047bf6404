//! SPDK DMA memory for the buffer pool.

use super::env::{env_hugepages, require_env};
use crate::bufpool::{Region, HUGEPAGE};
use spdk_sys as sys;

/// A region of SPDK DMA memory for the buffer pool, 2 MiB aligned.
pub fn dma_region(len: usize) -> std::io::Result<Region> {
    require_env().map_err(std::io::Error::other)?;
    let len = len.div_ceil(HUGEPAGE).max(1) * HUGEPAGE;
    // SAFETY: the environment is started; a failed allocation returns NULL.
    let p = unsafe {
        sys::spdk_zmalloc(
            len,
            HUGEPAGE,
            std::ptr::null_mut(),
            sys::SPDK_ENV_NUMA_ID_ANY,
            sys::SPDK_MALLOC_DMA,
        )
    };
    let Some(ptr) = std::ptr::NonNull::new(p.cast::<u8>()) else {
        return Err(std::io::Error::other(format!(
            "SPDK could not allocate {} MiB of DMA memory for the buffer pool \
             (reserve more hugepages, or raise the SPDK memory size)",
            len >> 20
        )));
    };
    let free = |p: std::ptr::NonNull<u8>, _len: usize| {
        // SAFETY: `p` came from spdk_zmalloc above and is freed once, when
        // the region (and so every buffer in it) is gone.
        unsafe { sys::spdk_free(p.as_ptr().cast()) }
    };
    let hugepages = env_hugepages();
    // SAFETY: `ptr` is valid for `len` bytes, exclusively ours, until
    // `free` runs.
    Ok(unsafe { Region::from_raw(ptr, len, hugepages, Box::new(free)) })
}
