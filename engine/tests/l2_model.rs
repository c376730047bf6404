//! Model test of the L2 tier under faults: random workloads from several
//! client threads, on 2 or 3 reactors, with far more data than the ARC
//! holds, over an L2 device that fails reads and writes, tears writes and
//! flips bits. Every read must return the true bytes.
//!
//! Truth is versioned: a thread that invalidates one of its private keys
//! first bumps the key's version in the backing store, so an L2 copy of
//! the old version served to it after the invalidation would be caught.

use polarc::device::faulty::{FaultConfig, FaultyDevice};
use polarc::device::mem::MemDevice;
use polarc::testing::fixtures::{block, bump, current_block, key, version, Versions};
use polarc::{Engine, FnStore, L2Config};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const THREADS: u64 = 3;
const KEYS: u64 = 90;

#[derive(Default, Debug, Clone, Copy)]
struct Seen {
    l2_hits: u64,
    cksum_bad: u64,
    io_error: u64,
    writes_error: u64,
    evicted: u64,
}

fn run_case(seed: u64) -> Result<Seen, String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let reactors = rng.gen_range(2..=3);
    let faults = FaultConfig {
        read_error: rng.gen_range(0.0..0.05),
        write_error: rng.gen_range(0.05..0.15),
        fail_write_at: (seed % 2 == 0).then_some(3),
        torn_write: rng.gen_range(0.0..0.1),
        bit_flip: rng.gen_range(0.0..0.05),
        seed,
        ..FaultConfig::default()
    };
    let versions = Versions::default();
    let v2 = versions.clone();
    let store = FnStore::new(2, move |k: &[u8]| current_block(&v2, k)).unwrap();
    // 64 KiB, about half the data: the ring wraps many times in one case.
    let dev = FaultyDevice::new(MemDevice::new(64 << 10, 512).unwrap(), faults.clone()).unwrap();
    let e = Engine::builder()
        .reactors(reactors)
        .arc_capacity((reactors as u64 * 16) << 10)
        .max_block_size(4096)
        .pool_capacity(16 << 20)
        .hugepages(false)
        .backing(store)
        .l2_device(dev)
        .l2_config(L2Config {
            feed_interval: Duration::from_millis(2),
            feed_min_interval: Duration::from_millis(1),
            write_size: 16 << 10,
            noprefetch: false,
            ..L2Config::default()
        })
        .build()
        .map_err(|e| e.to_string())?;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let e = e.clone();
            let versions = versions.clone();
            let mut rng = SmallRng::seed_from_u64(seed * 31 + t);
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..1500 {
                    // Pace the clients so that each case spans many feed
                    // intervals (2 ms): the ring must wrap and writes fail.
                    if i % 20 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let k = rng.gen_range(0..KEYS);
                    let kb = key(k);
                    // Keys k with k % THREADS == t are this thread's to rewrite.
                    let mine = k % THREADS == t;
                    match rng.gen_range(0..10) {
                        0 if mine => {
                            bump(&versions, k);
                            e.invalidate(&kb).map_err(|e| e.to_string())?;
                        }
                        1 => e.prefetch(&kb).map_err(|e| e.to_string())?,
                        _ => {
                            let v0 = version(&versions, k);
                            let b = e.read(&kb).map_err(|e| format!("read {k}: {e}"))?;
                            let v1 = version(&versions, k);
                            // Only the owner rewrites a key: its own reads must
                            // see the current version; another thread's read may
                            // overlap a rewrite and see either side of it.
                            let ok = (v0..=v1).any(|v| *b == block(k, v)[..]);
                            if !ok || (mine && *b != block(k, v0)[..]) {
                                return Err(format!(
                                    "seed {seed}: key {k} v{v0}..=v{v1}: wrong bytes ({} B from {:?})",
                                    b.len(),
                                    b.source()
                                ));
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap()?;
    }
    let s = e.stats();
    e.shutdown().map_err(|e| e.to_string())?;
    let f = e.stats();
    if f.pool.outstanding != 0 {
        return Err(format!(
            "seed {seed}: {} buffers outstanding",
            f.pool.outstanding
        ));
    }
    if f.l2.l2_free_on_write != f.l2.l2_writes_sent {
        return Err(format!(
            "seed {seed}: {} write buffers freed of {} written",
            f.l2.l2_free_on_write, f.l2.l2_writes_sent
        ));
    }
    Ok(Seen {
        l2_hits: s.l2.l2_hits,
        cksum_bad: s.l2.l2_cksum_bad,
        io_error: s.l2.l2_io_error,
        writes_error: s.l2.l2_writes_error,
        evicted: s.l2.l2_evicted,
    })
}

#[test]
fn l2_never_serves_a_wrong_byte_under_faults() {
    let mut total = Seen::default();
    for seed in 1..=12 {
        let s = run_case(seed).unwrap();
        total.l2_hits += s.l2_hits;
        total.cksum_bad += s.cksum_bad;
        total.io_error += s.io_error;
        total.writes_error += s.writes_error;
        total.evicted += s.evicted;
    }
    println!("over 12 cases: {total:?}");
    // The faults and the L2 paths were all exercised.
    assert!(total.l2_hits > 100, "{total:?}");
    assert!(total.cksum_bad > 0 && total.io_error > 0, "{total:?}");
    assert!(total.writes_error > 0 && total.evicted > 0, "{total:?}");
}
