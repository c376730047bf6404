//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Minimal executor: polls `f` on this thread, parking between wake-ups.
/// Enough to show the futures work without any runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Content of key `k` in the test store: length and bytes depend on the key.
pub fn content(key: &[u8]) -> Vec<u8> {
    let h = polarc::shard::hash_key(key);
    let len = 512 + (h % 7) as usize * 500;
    (0..len)
        .map(|i| (h.rotate_left(i as u32 % 64) as u8) ^ (i as u8))
        .collect()
}

/// A store serving [`content`], counting its reads, optionally slow, and
/// failing keys that start with `b"fail"`.
pub fn counting_store(delay: std::time::Duration) -> (polarc::FnStore, Arc<AtomicU64>) {
    let reads = Arc::new(AtomicU64::new(0));
    let r = reads.clone();
    let store = polarc::FnStore::new(4, move |key: &[u8]| {
        r.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(delay);
        if key.starts_with(b"fail") {
            return Err(polarc::BackingError::Other(
                "injected backing failure".into(),
            ));
        }
        Ok(content(key))
    })
    .unwrap();
    (store, reads)
}
