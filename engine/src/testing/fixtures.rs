//! Fixtures shared by the L2 simulation, the model tests, the L2 tests
//! and the SPDK tests: versioned blocks whose bytes prove which version a
//! read returned, and an L2 engine set up to feed quickly.

use crate::backing::{FnStore, SimStore};
use crate::device::BlockDevice;
use crate::{Engine, EngineBuilder, L2Config};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `f` every 10 ms until it holds; panics, naming `what`, once
/// `limit` has passed.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The key of model key `k`.
pub fn key(k: u64) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// The model key of a [`key`]; `None` for another key.
pub fn parse_key(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(b"key-")?)
        .ok()?
        .parse()
        .ok()
}

/// The block of key `k` at `version`: 512 B to 4 KiB, about 2:1
/// compressible; every 10th key is all zeros (stored as EMPTY).
pub fn block(k: u64, version: u64) -> Vec<u8> {
    let len = 512 + (k as usize * 397) % 3585;
    if k % 10 == 9 {
        return vec![0; len];
    }
    let mut seed = key(k);
    seed.extend_from_slice(&version.to_le_bytes());
    SimStore::content(&seed, len, 2.0)
}

/// The current version of every model key (absent: 0). A test that
/// rewrites a key bumps its version first; a read of an older version is
/// then caught.
pub type Versions = Arc<Mutex<HashMap<u64, u64>>>;

/// The current version of key `k`.
pub fn version(v: &Versions, k: u64) -> u64 {
    *v.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .unwrap_or(&0)
}

/// Moves key `k` to its next version; returns it.
pub fn bump(v: &Versions, k: u64) -> u64 {
    let mut m = v.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(k).or_insert(0);
    *e += 1;
    *e
}

/// The bytes of model key `key` at its current version, or an error for
/// a key that is not a model key.
pub fn current_block(v: &Versions, key: &[u8]) -> Result<Vec<u8>, crate::BackingError> {
    let k = parse_key(key).ok_or_else(|| {
        crate::BackingError::Other(format!("not a model key: {}", crate::backing::hex_key(key)))
    })?;
    Ok(block(k, version(v, k)))
}

/// Blocks of the L2 tests: 4 KiB, about 2:1 compressible.
pub fn l2_value(key: &[u8]) -> Vec<u8> {
    SimStore::content(key, 4096, 2.0)
}

/// A store serving [`l2_value`], counting its reads.
pub fn l2_store() -> (FnStore, Arc<AtomicU64>) {
    let reads = Arc::new(AtomicU64::new(0));
    let r = reads.clone();
    let s = FnStore::new(2, move |key: &[u8]| {
        r.fetch_add(1, Ordering::Relaxed);
        Ok(l2_value(key))
    })
    .expect("store threads");
    (s, reads)
}

/// L2 knobs that feed quickly, so tests need not wait: feeds every 20 ms
/// (5 ms when behind), 64 KiB writes.
pub fn fast_feed() -> L2Config {
    L2Config {
        feed_interval: Duration::from_millis(20),
        feed_min_interval: Duration::from_millis(5),
        write_size: 64 << 10,
        ..L2Config::default()
    }
}

/// An engine of 2 reactors over `dev`, with a 2 MiB ARC, 64 KiB blocks,
/// [`fast_feed`] and an [`l2_store`] whose reads it counts. Callers may
/// change any setting before `build`.
pub fn l2_engine(dev: impl BlockDevice) -> (EngineBuilder, Arc<AtomicU64>) {
    let (store, reads) = l2_store();
    let b = Engine::builder()
        .reactors(2)
        .arc_capacity(2 << 20)
        .max_block_size(64 << 10)
        .backing(store)
        .l2_device(dev)
        .l2_config(fast_feed());
    (b, reads)
}

/// Waits until every L2 feed write sent has completed (and at least 100 ms).
///
/// # Panics
/// When the feeds have not settled after 30 s.
pub fn settle_l2(e: &Engine) {
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
