//! The free-on-write ring (the seed's `l2arc_free_on_write` list): write
//! buffers of the L2 feeder wait here from the moment their write
//! completes until the feeder's next poll drains them back to the pool.
//! A buffer is only ever pushed after the device gave it back, so no
//! buffer the device may still read is freed, and none is leaked: the
//! ring is drained on every poll and on drop.
#![forbid(unsafe_code)]

use super::Buf;
use std::collections::VecDeque;

/// Buffers whose write completed, waiting to return to the pool.
#[derive(Debug, Default)]
pub struct FreeOnWrite {
    ring: VecDeque<Buf>,
    freed: u64,
}

impl FreeOnWrite {
    /// Queues a buffer the device has given back.
    pub fn push(&mut self, buf: Buf) {
        self.ring.push_back(buf);
    }
    /// Returns every queued buffer to the pool; returns how many.
    pub fn drain(&mut self) -> u64 {
        let n = self.ring.len() as u64;
        self.ring.clear();
        self.freed += n;
        n
    }
    /// Buffers freed so far.
    pub fn freed(&self) -> u64 {
        self.freed
    }
    /// Buffers waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }
    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufpool::BufPool;

    #[test]
    fn buffers_return_only_when_drained() {
        let pool = BufPool::new(4 << 20, 1 << 20, false).unwrap();
        let mut fow = FreeOnWrite::default();
        fow.push(pool.alloc(4096).unwrap().freeze(4096));
        fow.push(pool.alloc(8192).unwrap().freeze(8192));
        assert_eq!(pool.stats().outstanding, 2);
        assert_eq!(fow.drain(), 2);
        assert_eq!(pool.stats().outstanding, 0);
        assert_eq!(fow.freed(), 2);
        assert!(fow.is_empty());
    }
}
