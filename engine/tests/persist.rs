//! The persistent L2 (issue 11): blocks come back after a restart, from a
//! file device and from RAM devices; invalidation and replacement are
//! durable; another geometry starts empty; a power cut at any moment loses
//! only writes that were not durable and never brings back a stale,
//! torn or invalidated block. The `kill -9` test is `tests/crash.rs`.

use polarc::device::mem::MemDevice;
use polarc::device::powercut::PowerCutDevice;
use polarc::device::uring::{UringDevice, UringOptions};
use polarc::device::BlockDevice;
use polarc::testing::fixtures::{self, block, key, l2_value as value, Versions};
use polarc::{Engine, FnStore, L2Config, Stats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn index(i: u64) -> [u8; 8] {
    polarc::index_key(i)
}

/// Waits until `devices` rebuilds have finished and every shard applied
/// what they sent; returns the stats then.
fn rebuilt(e: &Engine, devices: u64) -> Stats {
    let t = Instant::now();
    loop {
        let s = e.stats();
        if s.l2.l2_rebuild_success >= devices {
            // A second snapshot: the shards' messages are ordered after
            // the rebuild's items.
            return e.stats();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no rebuild: {:?}",
            s.l2
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads keys `0..n` until most are in L2 and the feeds have settled.
fn fill(e: &Engine, n: u64) {
    for _ in 0..2 {
        for i in 0..n {
            assert_eq!(&*e.read(&index(i)).unwrap(), &value(&index(i))[..]);
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        fixtures::settle_l2(e);
    }
}

fn engine_on(dev: impl BlockDevice, reactors: usize) -> (Engine, Arc<AtomicU64>) {
    let (b, reads) = fixtures::l2_engine(dev);
    (b.reactors(reactors).build().unwrap(), reads)
}

#[test]
fn a_clean_restart_brings_back_every_block_from_a_file_one_log_block_per_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l2.img");
    let open = || {
        UringDevice::open(
            &path,
            UringOptions {
                size: Some(64 << 20),
                ..UringOptions::default()
            },
        )
        .unwrap()
    };
    let n = 3000u64;
    let (e, _) = engine_on(open(), 2);
    fill(&e, n);
    e.shutdown().unwrap();
    let before = e.stats();
    let blocks = before.l2_sizes.l2_blocks;
    assert!(blocks > n / 2, "{blocks} blocks in L2");
    assert_eq!(before.pool.outstanding, 0);

    // The restart applies its log one block per poll (a zero budget), so
    // requests are served between blocks; nothing may be lost for it.
    let (b, reads) = fixtures::l2_engine(open());
    let e = b
        .l2_config(L2Config {
            poll_budget: Duration::ZERO,
            ..fixtures::fast_feed()
        })
        .build()
        .unwrap();
    let s = rebuilt(&e, 1);
    assert!(
        s.l2.l2_rebuild_slices >= s.l2.l2_rebuild_log_blks.saturating_sub(1),
        "one log block per poll: {} slices for {} blocks",
        s.l2.l2_rebuild_slices,
        s.l2.l2_rebuild_log_blks
    );
    println!(
        "before: {blocks} blocks; after: {} ({} log blocks, {} entries in {:.1} ms)",
        s.l2_sizes.l2_blocks,
        s.l2.l2_rebuild_log_blks,
        s.l2.l2_rebuild_bufs,
        s.l2.l2_rebuild_ns as f64 / 1e6
    );
    assert!(
        s.l2_sizes.l2_blocks as f64 >= 0.999 * blocks as f64,
        "{} of {blocks} blocks back",
        s.l2_sizes.l2_blocks
    );
    assert_eq!(
        s.l2.l2_rebuild_cksum_lb_errors + s.l2.l2_rebuild_io_errors,
        0
    );
    for i in 0..n {
        assert_eq!(
            &*e.read(&index(i)).unwrap(),
            &value(&index(i))[..],
            "key {i}"
        );
    }
    let s = e.stats();
    let from_backing = reads.load(Ordering::Relaxed);
    println!(
        "after the restart: {} L2 hits, {from_backing} backing reads",
        s.l2.l2_hits
    );
    assert!(
        s.l2.l2_hits >= blocks * 99 / 100,
        "{} L2 hits",
        s.l2.l2_hits
    );
    assert_eq!(s.l2.l2_cksum_bad, 0);
    e.shutdown().unwrap();
}

#[test]
fn entries_are_resharded_when_the_reactor_count_changes() {
    let dev = MemDevice::new(64 << 20, 512).unwrap();
    let n = 3000u64;
    let (e, _) = engine_on(dev.clone(), 2);
    fill(&e, n);
    e.shutdown().unwrap();
    let blocks = e.stats().l2_sizes.l2_blocks;
    for reactors in [3, 1] {
        let (e, _) = engine_on(dev.clone(), reactors);
        let s = rebuilt(&e, 1);
        assert!(
            s.l2_sizes.l2_blocks as f64 >= 0.999 * blocks as f64,
            "{reactors} reactors: {} of {blocks} back",
            s.l2_sizes.l2_blocks
        );
        for i in 0..n {
            assert_eq!(&*e.read(&index(i)).unwrap(), &value(&index(i))[..]);
        }
        assert!(e.stats().l2.l2_hits >= blocks * 99 / 100);
        e.shutdown().unwrap();
    }
}

#[test]
fn another_device_size_or_block_size_starts_empty_and_reads_stay_right() {
    let dev = MemDevice::new(64 << 20, 512).unwrap();
    let n = 2000u64;
    let (e, _) = engine_on(dev.clone(), 2);
    fill(&e, n);
    e.shutdown().unwrap();
    let mut bigger = dev.snapshot();
    bigger.resize(96 << 20, 0);
    for other in [
        MemDevice::from_image(bigger, 512).unwrap(),
        MemDevice::from_image(dev.snapshot(), 4096).unwrap(),
    ] {
        let (e, _) = engine_on(other, 2);
        let s = e.stats();
        assert_eq!((s.l2.l2_rebuild_success, s.l2_sizes.l2_blocks), (0, 0));
        for i in 0..n {
            assert_eq!(&*e.read(&index(i)).unwrap(), &value(&index(i))[..]);
        }
        e.shutdown().unwrap();
    }
}

#[test]
fn a_foreign_device_is_refused_with_its_name() {
    let mut img = vec![0u8; 32 << 20];
    img[..16].copy_from_slice(b"somebody's data!");
    let dev = MemDevice::from_image(img, 512).unwrap();
    let e = fixtures::l2_engine(dev.clone())
        .0
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("mem:33554432") && e.contains("refused"), "{e}");
    let e = fixtures::l2_engine(dev)
        .0
        .l2_config(L2Config {
            start: polarc::l2::L2Start::Overwrite,
            ..fixtures::fast_feed()
        })
        .build()
        .unwrap();
    e.shutdown().unwrap();
}

/// Keys with versions: the backing store serves each key's current
/// version; the values tell which version a read returned.
fn versioned_engine(dev: impl BlockDevice, versions: &Versions) -> Engine {
    versioned_engine_budget(dev, versions, L2Config::default().poll_budget, 0)
}

/// [`versioned_engine`] whose feeders pack for at most `budget` per poll
/// (zero: one block per poll, so records often come while a buffer is
/// being packed), and trim `trim_ahead`% ahead of the hand.
fn versioned_engine_budget(
    dev: impl BlockDevice,
    versions: &Versions,
    budget: Duration,
    trim_ahead: u32,
) -> Engine {
    let v = versions.clone();
    let store = FnStore::new(2, move |k: &[u8]| fixtures::current_block(&v, k)).unwrap();
    Engine::builder()
        .reactors(2)
        .arc_capacity(256 << 10)
        .max_block_size(4096)
        .pool_capacity(32 << 20)
        .hugepages(false)
        .backing(store)
        .l2_device(dev)
        .l2_config(L2Config {
            poll_budget: budget,
            trim_ahead,
            ..fixtures::fast_feed()
        })
        .build()
        .unwrap()
}

/// Pushes key `k` out of the ARC by reading many others; returns once it
/// is in L2 only.
fn push_out(e: &Engine, k: u64, others: std::ops::Range<u64>) {
    // Each read twice: they go to MFU, where `k` is.
    for _ in 0..3 {
        for j in others.clone() {
            e.read(&key(j)).unwrap();
            e.read(&key(j)).unwrap();
        }
        fixtures::settle_l2(e);
    }
    assert!(
        e.get(&key(k)).unwrap().is_none(),
        "key {k} still in the ARC"
    );
}

#[test]
fn insert_replaces_and_the_old_version_never_comes_back() {
    let dev = MemDevice::new(16 << 20, 512).unwrap();
    let versions = Versions::default();
    let e = versioned_engine(dev.clone(), &versions);
    let (k, invalidated) = (0u64, 1u64);
    // v1 of both keys reach L2.
    for k in [k, invalidated] {
        fixtures::bump(&versions, k);
        e.insert(&key(k), &block(k, 1)).unwrap();
    }
    push_out(&e, k, 100..400);
    assert_eq!(&*e.read(&key(k)).unwrap(), &block(k, 1)[..]);
    // v2 replaces v1; it is read back, also once it is in L2 only.
    fixtures::bump(&versions, k);
    e.insert(&key(k), &block(k, 2)).unwrap();
    assert_eq!(&*e.read(&key(k)).unwrap(), &block(k, 2)[..]);
    // The other key: invalidated (its store now has v2).
    fixtures::bump(&versions, invalidated);
    e.invalidate(&key(invalidated)).unwrap();
    push_out(&e, k, 400..700);
    assert_eq!(&*e.read(&key(k)).unwrap(), &block(k, 2)[..]);
    let s = e.stats();
    assert!(
        s.l2.l2_records >= 2 && s.l2.l2_record_commits >= 1,
        "{:?}",
        s.l2
    );
    e.shutdown().unwrap();
    // After a restart: v2 of k, from L2 or the store; never a v1.
    let store_versions = Versions::default();
    for k in [k, invalidated] {
        for _ in 0..3 {
            fixtures::bump(&store_versions, k);
        }
    }
    let e = versioned_engine(dev, &store_versions);
    rebuilt(&e, 1);
    let got = e.read(&key(k)).unwrap();
    assert!(
        *got == block(k, 2)[..] || *got == block(k, 3)[..],
        "key {k} came back as another version ({:?})",
        got.source()
    );
    let got = e.read(&key(invalidated)).unwrap();
    assert_eq!(
        &*got,
        &block(invalidated, 3)[..],
        "the invalidated block came back"
    );
    e.shutdown().unwrap();
}

/// One power cut: threads run reads, inserts (replacements), invalidations
/// and prefetches; the power is cut at a random moment; a new engine on
/// what survived must serve, for every key, a version between the last
/// acknowledged and the last asked for.
fn power_cut_case(seed: u64) -> (u64, u64, polarc::device::powercut::CutReport) {
    use rand::{Rng, SeedableRng};
    const KEYS: u64 = 300;
    const THREADS: u64 = 2;
    let latency = Duration::from_micros(200 + seed % 5 * 400);
    let dev = PowerCutDevice::new(4 << 20, 512)
        .unwrap()
        .with_latency(latency);
    let versions = Versions::default();
    // Acknowledged versions, per key.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    // Odd seeds pack one block per poll.
    let budget = if seed % 2 == 1 {
        Duration::ZERO
    } else {
        L2Config::default().poll_budget
    };
    // Every third seed trims ahead of the hand: a discard not yet flushed
    // when the power goes may or may not have happened.
    let trim = if seed % 3 == 0 { 50 } else { 0 };
    let e = versioned_engine_budget(dev.clone(), &versions, budget, trim);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, versions, acked, stop) =
                (e.clone(), versions.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed * 7 + t);
                while !stop.load(Ordering::Relaxed) {
                    // Thread t rewrites keys k with k % THREADS == t.
                    let k = rng.gen_range(0..KEYS / THREADS) * THREADS + t;
                    match rng.gen_range(0..10) {
                        0 => {
                            let v = fixtures::bump(&versions, k);
                            e.insert(&key(k), &block(k, v)).unwrap();
                            acked[k as usize].store(v, Ordering::SeqCst);
                        }
                        1 => {
                            let v = fixtures::bump(&versions, k);
                            e.invalidate(&key(k)).unwrap();
                            acked[k as usize].store(v, Ordering::SeqCst);
                        }
                        2 => e.prefetch(&key(k)).unwrap(),
                        _ => {
                            let v = fixtures::version(&versions, k);
                            assert_eq!(&*e.read(&key(k)).unwrap(), &block(k, v)[..]);
                        }
                    }
                }
            })
        })
        .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
    // Lower bounds first, the cut, then upper bounds.
    let lo: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let (survived, report) = dev.cut(seed);
    let hi: Vec<u64> = (0..KEYS).map(|k| fixtures::version(&versions, k)).collect();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    e.shutdown().unwrap();
    // The store serves the newest version; the cache may hold any version
    // from the acknowledged one up.
    let after = Versions::default();
    for k in 0..KEYS {
        for _ in 0..hi[k as usize] {
            fixtures::bump(&after, k);
        }
    }
    let e = versioned_engine(survived, &after);
    let s = rebuilt(&e, 1);
    let mut from_l2 = 0;
    for k in 0..KEYS {
        let b = e.read(&key(k)).unwrap();
        let v = (lo[k as usize]..=hi[k as usize]).find(|&v| *b == block(k, v)[..]);
        assert!(
            v.is_some(),
            "seed {seed}: key {k}: not a version in {}..={} ({:?})",
            lo[k as usize],
            hi[k as usize],
            b.source()
        );
        from_l2 += u64::from(b.source() == polarc::Source::L2);
    }
    e.shutdown().unwrap();
    (s.l2.l2_rebuild_bufs, from_l2, report)
}

#[test]
fn a_power_cut_at_any_moment_serves_nothing_stale_or_torn() {
    let cases: u64 = std::env::var("POLARC_POWERCUT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let (mut rebuilt_entries, mut l2_reads) = (0, 0);
    let mut cut = polarc::device::powercut::CutReport::default();
    for seed in 0..cases {
        let (r, l, c) = power_cut_case(seed);
        rebuilt_entries += r;
        l2_reads += l;
        cut.pending += c.pending;
        cut.torn += c.torn;
        cut.dropped += c.dropped;
        cut.applied += c.applied;
    }
    println!(
        "{cases} power cuts: {rebuilt_entries} entries rebuilt, {l2_reads} reads served from L2 after; writes caught by the cuts: {cut:?}"
    );
    // The cuts caught writes in flight, and the rebuilt L2 served reads.
    assert!(cut.pending > 0 && cut.torn > 0, "{cut:?}");
    assert!(rebuilt_entries > 0 && l2_reads > 0);
}

/// Invalidations by the thousand while the feeder writes 1 MiB batches
/// (three log blocks each): every one is recorded and acknowledged, and the
/// device's log is never given up. (The log once submitted every full block
/// at once and took a full queue for a failed write.)
#[test]
fn heavy_invalidation_while_feeding_keeps_the_log() {
    // Slow writes: log blocks full of records pile up behind them.
    let slow = polarc::device::faulty::FaultConfig {
        write_latency: Duration::from_millis(2),
        ..Default::default()
    };
    let dev =
        polarc::device::faulty::FaultyDevice::new(MemDevice::new(256 << 20, 512).unwrap(), slow)
            .unwrap();
    let (b, _) = fixtures::l2_engine(dev);
    let e = b
        .l2_config(L2Config {
            write_size: 1 << 20,
            ..fixtures::fast_feed()
        })
        .build()
        .unwrap();
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let pending: Vec<_> = (0..20_000u64)
                    .map(|i| {
                        e.read(&index(i * 2 + t)).unwrap();
                        e.invalidate_async(&index(i * 2 + t))
                    })
                    .collect();
                for p in pending {
                    polarc::OpFuture::wait(p).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = e.stats();
    println!("{:?}", s.l2);
    assert_eq!(s.l2.l2_log_failures, 0);
    assert_eq!(s.l2.l2_records, s.requests.invalidate_requests);
    e.shutdown().unwrap();
}

#[test]
fn a_log_given_up_zeroes_both_header_copies_so_a_restart_starts_empty() {
    use polarc::device::faulty::{FaultConfig, FaultyDevice};
    use std::sync::atomic::Ordering::Relaxed;
    let mem = Arc::new(MemDevice::new(64 << 20, 512).unwrap());
    let dev = FaultyDevice::new(mem.clone(), FaultConfig::default()).unwrap();
    let faults = dev.counters();
    let (e, _) = engine_on(dev, 2);
    fill(&e, 300);
    // Every write fails: the record's log block is tried MAX_ATTEMPTS
    // times, then the log is given up, and zeroing the header fails too.
    faults.fail_all_writes.store(true, Relaxed);
    let r = e.invalidate(&index(0));
    assert!(
        matches!(r, Err(polarc::Error::NotDurable { .. })),
        "invalidate with every write failing: {r:?}"
    );
    assert_eq!(e.stats().l2.l2_log_failures, 1);
    // Writes work again: the zeroing is tried again and lands, and records
    // no longer need the log.
    faults.fail_all_writes.store(false, Relaxed);
    fixtures::wait_for("records durable again", Duration::from_secs(10), || {
        e.invalidate(&index(1)).is_ok()
    });
    e.shutdown().unwrap();
    // Both header copies are zero: a restart formats the device instead
    // of rebuilding a log that lacks the records.
    assert!(mem.snapshot()[..2 * 4096].iter().all(|&b| b == 0));
    let (e, _) = engine_on(mem, 2);
    std::thread::sleep(Duration::from_millis(300));
    let s = e.stats();
    assert_eq!(s.l2.l2_rebuild_success, 0, "{:?}", s.l2);
    assert_eq!(s.l2_sizes.l2_blocks, 0);
    assert_eq!(&*e.read(&index(0)).unwrap(), &value(&index(0))[..]);
    e.shutdown().unwrap();
}
