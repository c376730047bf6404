//! Blocks handed to callers.
#![forbid(unsafe_code)]

use crate::bufpool::Buf;
use std::sync::Arc;
use std::time::Instant;

/// A block's bytes: a reference-counted handle to the cached buffer
/// (zero-copy), or to a heap copy when the buffer pool was exhausted.
/// Holding a `Block` keeps its pool buffer out of the pool: drop it soon.
#[derive(Clone, Debug)]
pub struct Block(Repr, Source, Option<Box<Timing>>);

/// When the reactor that served a client's read took the request from
/// its ring and answered it (with `Config::timing`). With the client's
/// own clock reads around it, a read's latency splits into: the trip to
/// the reactor (ring, wake-up), the service (`answered - taken`, the I/O
/// of a miss included), and the trip back (the client's wake-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The reactor took the request.
    pub taken: Instant,
    /// The reactor sent the answer.
    pub answered: Instant,
}

/// Which tier served a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The ARC, in DRAM.
    Arc,
    /// An L2 device.
    L2,
    /// The backing store.
    Backing,
}

#[derive(Clone, Debug)]
enum Repr {
    Pool(Buf),
    Heap(Arc<[u8]>),
}

impl Block {
    pub(crate) fn pool(buf: Buf, source: Source) -> Self {
        Block(Repr::Pool(buf), source, None)
    }
    pub(crate) fn heap(bytes: Vec<u8>) -> Self {
        Block(Repr::Heap(bytes.into()), Source::Backing, None)
    }
    pub(crate) fn with_timing(mut self, t: Timing) -> Self {
        self.2 = Some(Box::new(t));
        self
    }
    /// When the reactor took and answered the read, if the engine was
    /// built with `timing`.
    pub fn timing(&self) -> Option<Timing> {
        self.2.as_deref().copied()
    }
    /// Which tier served this block: for a read that joined another's
    /// fill, the tier that fill came from.
    pub fn source(&self) -> Source {
        self.1
    }
    /// True when the bytes live in the engine's buffer pool.
    pub fn is_pooled(&self) -> bool {
        matches!(self.0, Repr::Pool(_))
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Pool(b) => b,
            Repr::Heap(h) => h,
        }
    }
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Block {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}
