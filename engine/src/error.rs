//! Errors of the engine's public API.
#![forbid(unsafe_code)]

use std::sync::Arc;

/// An error from the backing store. Cloneable: one backing read may answer
/// several waiting callers.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackingError {
    /// The store has no block for this key.
    #[error("no block for key {0}")]
    NotFound(String),
    /// The store returned an I/O error.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The store returned a block of a size the engine cannot hold.
    #[error("block of {size} B from the backing store is outside 1..={max} B")]
    BadSize {
        /// Size returned.
        size: usize,
        /// Configured maximum block size.
        max: usize,
    },
    /// The store dropped the request without answering it.
    #[error("the backing store dropped the request")]
    Dropped,
    /// The store did not answer in time (`Config::backing_timeout`).
    #[error("the backing store did not answer within {0:?} (Config::backing_timeout)")]
    TimedOut(std::time::Duration),
    /// Any other failure, described by the store.
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for BackingError {
    fn from(e: std::io::Error) -> Self {
        BackingError::Io(Arc::new(e))
    }
}

/// An engine error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Keys must not be empty.
    #[error("empty key")]
    EmptyKey,
    /// A key longer than `Config::max_key_len`.
    #[error("key of {len} B is longer than max_key_len ({max} B)")]
    KeyTooLong {
        /// Length given.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The reactor owning the key has `Config::max_in_flight` requests and
    /// `Config::when_full` is `Busy`: try again later.
    #[error("busy: the reactor has max_in_flight ({0}) requests in flight; try again later")]
    Busy(usize),
    /// An invalidation or replacement took effect in memory, but an L2
    /// device's log failed before its record was durable, so a restart
    /// could bring the old block back from that device.
    #[error("{device}: the log failed before this invalidation was durable; start the device fresh (L2Start::Fresh) after a restart")]
    NotDurable {
        /// The device whose log failed.
        device: String,
    },
    /// A block given to `insert` has a size the engine cannot hold.
    #[error("block of {size} B is outside 1..={max} B")]
    BlockSize {
        /// Size given.
        size: usize,
        /// Configured maximum block size.
        max: usize,
    },
    /// The backing store failed this read. The cache is unchanged.
    #[error("backing store: {0}")]
    Backing(#[from] BackingError),
    /// The engine has been shut down.
    #[error("the engine is shut down")]
    ShutDown,
    /// An L2 device could not be opened or used at start-up.
    #[error("L2 device: {0}")]
    Device(#[from] crate::device::DeviceError),
    /// Start-up failed: mapping the buffer pool or spawning a reactor.
    #[error("start-up failed: {0}")]
    Startup(Arc<std::io::Error>),
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
