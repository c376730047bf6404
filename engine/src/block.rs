//! Blocks handed to callers.
#![forbid(unsafe_code)]

use crate::bufpool::Buf;
use std::sync::Arc;

/// A block's bytes: a reference-counted handle to the cached buffer
/// (zero-copy), or to a heap copy when the buffer pool was exhausted.
/// Holding a `Block` keeps its pool buffer out of the pool: drop it soon.
#[derive(Clone, Debug)]
pub struct Block(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Pool(Buf),
    Heap(Arc<[u8]>),
}

impl Block {
    pub(crate) fn pool(buf: Buf) -> Self {
        Block(Repr::Pool(buf))
    }
    pub(crate) fn heap(bytes: Vec<u8>) -> Self {
        Block(Repr::Heap(bytes.into()))
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
