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

/// Waits until every L2 feed write sent has completed (and at least 100 ms).
pub fn settle_l2(e: &polarc::Engine) {
    use std::time::{Duration, Instant};
    let t = Instant::now();
    loop {
        let s = e.stats();
        if s.l2.l2_writes_sent == s.l2.l2_writes_done + s.l2.l2_writes_error
            && t.elapsed() > Duration::from_millis(100)
        {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "feeds never settled");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Blocks of the L2 tests: 4 KiB, about 2:1 compressible.
pub fn l2_value(key: &[u8]) -> Vec<u8> {
    polarc::SimStore::content(key, 4096, 2.0)
}

/// A store serving [`l2_value`], counting its reads.
pub fn l2_store() -> (polarc::FnStore, Arc<AtomicU64>) {
    let reads = Arc::new(AtomicU64::new(0));
    let r = reads.clone();
    let s = polarc::FnStore::new(2, move |key: &[u8]| {
        r.fetch_add(1, Ordering::Relaxed);
        Ok(l2_value(key))
    })
    .unwrap();
    (s, reads)
}

/// L2 knobs that feed quickly, so tests need not wait: feeds every 20 ms
/// (5 ms when behind), 64 KiB writes.
pub fn fast_feed() -> polarc::L2Config {
    polarc::L2Config {
        feed_interval: std::time::Duration::from_millis(20),
        feed_min_interval: std::time::Duration::from_millis(5),
        write_size: 64 << 10,
        ..polarc::L2Config::default()
    }
}
