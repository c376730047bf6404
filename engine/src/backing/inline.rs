//! A store that answers on the reactor that asked: for stores whose
//! reads are computations, not I/O (trace replay, simulations), where a
//! hop to a worker thread and back would cost more than the read.
#![forbid(unsafe_code)]

use super::{BackingStore, ReadDone, ReadResult};

/// What an [`InlineStore`] calls for each read.
type ReadFn = Box<dyn Fn(&[u8]) -> ReadResult + Send + Sync>;

/// Calls a closure in [`BackingStore::read`], on the reactor, and
/// completes at once. The closure must be quick and must not block: the
/// reactor serves nothing else meanwhile.
pub struct InlineStore {
    f: ReadFn,
    desc: String,
}

impl std::fmt::Debug for InlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineStore")
            .field("desc", &self.desc)
            .finish()
    }
}

impl InlineStore {
    /// A store whose reads are `f`, described as `desc` in reports.
    pub fn new(
        desc: impl Into<String>,
        f: impl Fn(&[u8]) -> ReadResult + Send + Sync + 'static,
    ) -> Self {
        InlineStore {
            f: Box::new(f),
            desc: desc.into(),
        }
    }
}

impl BackingStore for InlineStore {
    fn read(&self, key: &[u8], done: ReadDone) {
        done.complete((self.f)(key));
    }
    fn describe(&self) -> String {
        format!("{} (inline, on the reactor)", self.desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_read_completes_before_read_returns() {
        let s = InlineStore::new("test", |k: &[u8]| Ok(k.to_vec()));
        let (tx, rx) = mpsc::channel();
        s.read(b"abc", ReadDone::new(move |r| tx.send(r).unwrap()));
        assert_eq!(rx.try_recv().unwrap().unwrap(), b"abc");
        assert!(s.describe().contains("inline"));
    }
}
