//! polarc: a userspace, polled-mode, two-level cache engine (ARC in DRAM,
//! L2ARC-style ring log on a fast device, a slow backing store behind).
//!
//! # Threading
//! * Each reactor thread owns one shard of the hash table; no lock is
//!   shared across shards. Acting on another shard's block is a message to
//!   the reactor that owns it.
//! * [`Engine`] is a cheap handle: clone it, share it, call it from any
//!   thread, blocking or through the returned futures (any executor).
//! * A [`Block`] is a reference-counted view of a pool buffer; hold it only
//!   as long as needed.
//!
//! ```
//! use polarc::{Engine, SimStore, Latency};
//! use std::time::Duration;
//! let engine = Engine::builder()
//!     .reactors(2)
//!     .arc_capacity(64 << 20)
//!     .pool_capacity(128 << 20)
//!     .backing(SimStore::new(Latency::Fixed(Duration::from_millis(1)), 4096).unwrap())
//!     .build()
//!     .unwrap();
//! let b = engine.read(b"some key").unwrap();              // miss: from the store
//! assert_eq!(&*b, &SimStore::content(b"some key", 4096, 1.0)[..]);
//! assert!(engine.get(b"some key").unwrap().is_some());    // now an ARC hit
//! engine.shutdown().unwrap();
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

/// Adds every field of `$b` to `$a`. The destructuring makes adding a
/// field to the struct without summing it a compile error.
macro_rules! add_fields {
    ($a:expr, $b:expr, $T:ident { $($f:ident),* $(,)? }) => {{
        let $T { $($f),* } = *$b;
        $( $a.$f += $f; )*
    }};
}

pub mod backing;
mod block;
pub mod bufpool;
mod config;
mod core;
pub mod device;
mod engine;
mod error;
#[cfg(feature = "jobs")]
mod job;
pub mod l2;
pub mod reactor;
mod request;
pub mod shard;
mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backing::{BackingStore, FileStore, FnStore, InlineStore, Latency, ReadDone, SimStore};
pub use block::{Block, Source, Timing};
pub use config::{Config, WhenFull};
pub use engine::{Engine, EngineBuilder, OpFuture};
pub use error::{BackingError, Error, Result};
#[cfg(feature = "jobs")]
pub use job::{Arrivals, JobOp, JobReport, JobSpec, ISSUED_LATE_AFTER};
pub use l2::compress;
pub use l2::{L2Config, L2Counters};
pub use reactor::{IdleStrategy, Pinning};
pub use shard::Policy;
pub use stats::{CoreCounters, ReactorStats, Stats};

/// The key of index `i` in in-reactor jobs and in the perf harness: `i`
/// as 8 bytes, little-endian.
pub fn index_key(i: u64) -> [u8; 8] {
    i.to_le_bytes()
}
