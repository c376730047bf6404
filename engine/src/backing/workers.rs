//! A small pool of threads that run blocking reads for a store.

use super::{ReadDone, ReadResult};
use std::sync::Arc;

type ReadFn = dyn Fn(&[u8]) -> ReadResult + Send + Sync;
type Job = (Box<[u8]>, ReadDone);

/// Runs a blocking read function on `n` threads. The threads exit when
/// the pool is dropped and the queue is empty.
pub(crate) struct Workers {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn new(n: usize, name: &str, read: Arc<ReadFn>) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..n.max(1))
            .map(|i| {
                let rx = rx.clone();
                let read = read.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for (key, done) in rx {
                            done.complete(read(&key));
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Workers {
            tx: Some(tx),
            threads,
        })
    }

    pub(crate) fn submit(&self, key: &[u8], done: ReadDone) {
        if let Some(tx) = &self.tx {
            // A send fails only once every worker is gone; `done` is then
            // dropped, which fails the read instead of losing it.
            let _ = tx.send((key.into(), done));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
