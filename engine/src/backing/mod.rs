//! The backing store: the slow store behind both cache tiers.
//!
//! A store is asynchronous: [`BackingStore::read`] starts a read and
//! returns at once (it is called on a reactor, which must not block); the
//! store calls [`ReadDone::complete`] later, from any thread.
#![forbid(unsafe_code)]

mod file;
mod inline;
mod sim;
mod workers;

pub use file::{hex_key, FileStore, FnStore, KeyMap};
pub use inline::InlineStore;
pub use sim::{ContentFn, Latency, SimFaultCounters, SimFaults, SimStore, INJECTED_FAILURE};

use crate::error::BackingError;

/// The result of a backing read.
pub type ReadResult = Result<Vec<u8>, BackingError>;

/// Completion of one backing read. Must be completed exactly once; if it
/// is dropped instead, the read fails with [`BackingError::Dropped`], so a
/// buggy store cannot leave callers waiting forever.
pub struct ReadDone(Option<Box<dyn FnOnce(ReadResult) + Send>>);

impl std::fmt::Debug for ReadDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadDone")
    }
}

impl ReadDone {
    /// Wraps a completion callback.
    pub fn new(f: impl FnOnce(ReadResult) + Send + 'static) -> Self {
        ReadDone(Some(Box::new(f)))
    }
    /// Delivers the result.
    pub fn complete(mut self, result: ReadResult) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl Drop for ReadDone {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(BackingError::Dropped));
        }
    }
}

/// A slow store behind the cache. Keys name immutable blocks.
pub trait BackingStore: Send + Sync + 'static {
    /// Starts reading `key`; completes `done` exactly once. Must not block
    /// for long: it runs on a reactor.
    fn read(&self, key: &[u8], done: ReadDone);
    /// A one-line description for reports.
    fn describe(&self) -> String;
}

impl<T: BackingStore + ?Sized> BackingStore for std::sync::Arc<T> {
    fn read(&self, key: &[u8], done: ReadDone) {
        (**self).read(key, done)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}
