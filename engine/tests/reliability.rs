//! Reliability: deadlines on every I/O, a device that stops answering,
//! transient conditions that are not errors, EMPTY blocks leaving the
//! L2-only table, bounded input and bounded submission, a shutdown that
//! finishes whatever the devices do, and a buffer pool that runs out.

use polarc::device::faulty::{FaultConfig, FaultCounters, FaultyDevice};
use polarc::device::mem::MemDevice;
use polarc::testing::fixtures::{self as common, l2_value as value};
use polarc::{BackingError, BackingStore, Engine, Error, L2Config, ReadDone, WhenFull};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn key(i: u64) -> [u8; 8] {
    polarc::index_key(i)
}

/// An engine over a faulty RAM device, with short deadlines.
fn faulty_engine(l2: L2Config, shutdown: Duration) -> (Engine, Arc<FaultCounters>) {
    let dev = FaultyDevice::new(
        MemDevice::new(64 << 20, 512).unwrap(),
        FaultConfig::default(),
    )
    .unwrap();
    let faults = dev.counters();
    let (b, _) = common::l2_engine(dev);
    let e = b.l2_config(l2).shutdown_timeout(shutdown).build().unwrap();
    (e, faults)
}

fn short_deadlines() -> L2Config {
    L2Config {
        read_deadline: Duration::from_millis(20),
        write_deadline: Duration::from_millis(300),
        ..common::fast_feed()
    }
}

/// Reads keys `0..n`, waits until most have an L2 copy, then pushes them
/// out of the ARC with other keys.
fn warm_l2(e: &Engine, n: u64) {
    for i in 0..n {
        e.read(&key(i)).unwrap();
    }
    let t = Instant::now();
    while e.stats().l2_sizes.l2_blocks < n * 9 / 10 {
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", e.stats().l2);
        std::thread::sleep(Duration::from_millis(10));
    }
    evict(e, 1_000_000, 2 * n);
}

/// Pushes everything else out of the 2 MiB ARC.
fn evict(e: &Engine, from: u64, n: u64) {
    for i in from..from + n.max(600) {
        e.read(&key(i)).unwrap();
    }
}

#[test]
fn a_device_that_stops_answering_is_read_around_rested_and_probed_back() {
    let (e, faults) = faulty_engine(short_deadlines(), Duration::from_secs(5));
    let n = 300;
    warm_l2(&e, n);
    let before = e.stats().l2;
    faults.hang_all.store(true, Relaxed);
    let t = Instant::now();
    for i in 0..n {
        assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
    }
    let took = t.elapsed();
    let s = e.stats();
    println!("hung: {n} reads in {took:?}; {:?}", s.l2);
    assert!(s.l2.l2_read_timeouts >= 3, "{:?}", s.l2);
    assert!(s.l2.l2_degraded_episodes >= 1);
    assert_eq!(s.l2.l2_degraded, 1, "the device is degraded now");
    assert!(s.l2.l2_degraded_skips > 0, "reads skip it once degraded");
    assert_eq!(s.l2.l2_io_error + s.l2.l2_cksum_bad, 0);
    assert!(
        took < Duration::from_secs(5),
        "reads waited for the device: {took:?}"
    );
    // Feeding stops while it is degraded; probes go on.
    let feeds = e.stats().l2.l2_feeds;
    evict(&e, 2_000_000, 600);
    std::thread::sleep(Duration::from_millis(1500));
    let s = e.stats();
    assert_eq!(s.l2.l2_feeds, feeds, "fed a degraded device");
    assert!(s.l2.l2_probes >= 1);
    // An invalidation waiting on the stuck log answers, saying the record
    // is not durable.
    let t = Instant::now();
    let r = e.invalidate(&key(0));
    assert!(
        matches!(r, Err(Error::NotDurable { .. })),
        "invalidate on a stuck log: {r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // It answers again: a probe heals it, and the copies kept serve hits.
    faults.hang_all.store(false, Relaxed);
    common::wait_for("recovery", Duration::from_secs(10), || {
        e.stats().l2.l2_degraded == 0
    });
    assert!(e.stats().l2.l2_degraded_recoveries >= 1);
    // The given-up log's header copies get zeroed once the device answers
    // (tried again every second), so that records need the log no more.
    common::wait_for("records durable again", Duration::from_secs(10), || {
        e.invalidate(&key(0)).is_ok()
    });
    evict(&e, 3_000_000, 600);
    let hits = e.stats().l2.l2_hits;
    for i in 1..n {
        assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
    }
    let s = e.stats();
    assert!(
        s.l2.l2_hits - hits > (n - before.l2_hits.min(n)) / 4,
        "L2 copies kept through the timeouts serve hits: {} then {}",
        hits,
        s.l2.l2_hits
    );
    e.shutdown().unwrap();
    let s = e.stats();
    assert_eq!(s.pool.outstanding, 0, "held buffers came back");
    assert_eq!(s.l2.l2_io_held, 0);
}

/// A store that answers only when told to, with what it is told.
#[derive(Default)]
struct Stuck {
    held: Mutex<Vec<(Vec<u8>, ReadDone)>>,
    answer: AtomicBool,
}

#[derive(Clone)]
struct StuckStore(Arc<Stuck>);

impl BackingStore for StuckStore {
    fn read(&self, key: &[u8], done: ReadDone) {
        if self.0.answer.load(Relaxed) {
            done.complete(Ok(value(key)));
        } else {
            self.0.held.lock().unwrap().push((key.to_vec(), done));
        }
    }
    fn describe(&self) -> String {
        "stuck".into()
    }
}

#[test]
fn a_backing_read_past_its_deadline_fails_and_leaves_the_cache_clean() {
    let store = Arc::new(Stuck::default());
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(8 << 20)
        .backing(StuckStore(store.clone()))
        .backing_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = Instant::now();
    let r = e.read(b"k");
    let took = t.elapsed();
    assert!(
        matches!(r, Err(Error::Backing(BackingError::TimedOut(_)))),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(e.stats().requests.backing_timeouts, 1);
    // The late answer, with bytes that are not the key's, is dropped.
    for (_, done) in store.held.lock().unwrap().drain(..) {
        done.complete(Ok(b"stale".to_vec()));
    }
    common::wait_for("the late answer", Duration::from_secs(5), || {
        e.stats().requests.backing_late == 1
    });
    assert!(e.get(b"k").unwrap().is_none(), "a late answer was cached");
    store.answer.store(true, Relaxed);
    assert_eq!(&*e.read(b"k").unwrap(), &value(b"k")[..]);
    e.shutdown().unwrap();
    assert_eq!(e.stats().pool.outstanding, 0);
}

#[test]
fn shutdown_finishes_in_bounded_time_whatever_the_devices_and_store_do() {
    // Writes that never end (a minute-long deadline), a store that never
    // answers, an invalidation waiting on the log: the shutdown gives up
    // after its time limit and says what it abandoned.
    let l2 = L2Config {
        write_deadline: Duration::from_secs(60),
        ..short_deadlines()
    };
    let store = Arc::new(Stuck::default());
    store.answer.store(true, Relaxed);
    let dev = FaultyDevice::new(
        MemDevice::new(64 << 20, 512).unwrap(),
        FaultConfig::default(),
    )
    .unwrap();
    let faults = dev.counters();
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(2 << 20)
        .max_block_size(64 << 10)
        .backing(StuckStore(store.clone()))
        .backing_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_millis(500))
        .l2_device(dev)
        .l2_config(l2)
        .build()
        .unwrap();
    for i in 0..300 {
        e.read(&key(i)).unwrap();
    }
    let t0 = Instant::now();
    faults.hang_all.store(true, Relaxed);
    store.answer.store(false, Relaxed);
    let (e2, e3) = (e.clone(), e.clone());
    let reader = std::thread::spawn(move || e2.read(b"never answered"));
    let invalidator = std::thread::spawn(move || e3.invalidate(&key(1)));
    // Feeds start writes that hang (`insert` would wait for the log).
    for i in 10_000..10_600 {
        e.insert_if_absent(&key(i), &value(&key(i))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    e.shutdown().unwrap();
    let took = t.elapsed();
    let s = e.stats();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    println!(
        "shutdown took {took:?}; abandoned: {} fills, {} records, {} L2 requests",
        s.requests.abandoned_fills, s.requests.abandoned_records, s.l2.l2_abandoned
    );
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    let r = reader.join().unwrap();
    assert!(matches!(r, Err(Error::ShutDown)), "{r:?}");
    assert!(invalidator.join().unwrap().is_err());
    assert!(s.requests.abandoned_fills >= 1);
    assert!(s.l2.l2_abandoned >= 1, "{:?}", s.l2);
}

#[test]
fn transient_conditions_keep_the_l2_copy() {
    // A read queue of depth 1 refuses all but one of a burst of reads.
    let l2 = L2Config {
        queue_depth: 1,
        ..common::fast_feed()
    };
    let (b, _) = common::l2_engine(MemDevice::new(64 << 20, 512).unwrap());
    let e = b.l2_config(l2).build().unwrap();
    let n = 300;
    warm_l2(&e, n);
    let copies = e.stats().l2_sizes.l2_blocks;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in (t..n).step_by(8) {
                    assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = e.stats();
    println!("{:?}", s.l2);
    assert!(s.l2.l2_queue_full > 0, "no read was refused: {:?}", s.l2);
    assert_eq!(s.l2.l2_io_error, 0, "a full queue is not an I/O error");
    assert!(
        s.l2_sizes.l2_blocks + 10 >= copies,
        "copies dropped: {copies} before, {} after",
        s.l2_sizes.l2_blocks
    );
    e.shutdown().unwrap();
}

#[test]
fn empty_blocks_leave_the_l2_only_table_when_the_hand_passes() {
    // A 4 MiB device, an 8 MiB ARC: each round inserts 1500 all-zero
    // blocks (EMPTY: no room on the device, so only-EMPTY feed writes),
    // then 1500 blocks of which every 4th is zeros (EMPTY ones at batch
    // ends). The data wraps the ring many times; the EMPTY entries must
    // go with the batches the hand passes.
    let (b, _) = common::l2_engine(MemDevice::new(4 << 20, 512).unwrap());
    let e = b.arc_capacity(8 << 20).build().unwrap();
    let zeros = vec![0u8; 4096];
    let mut next = 0u64;
    let rounds = 12;
    for _ in 0..rounds {
        for _ in 0..1500 {
            e.insert(&key(next), &zeros).unwrap();
            next += 1;
        }
        common::settle_l2(&e);
        for j in 0..1500 {
            let v = if j % 4 == 3 {
                zeros.clone()
            } else {
                value(&key(next))
            };
            e.insert(&key(next), &v).unwrap();
            next += 1;
        }
        common::settle_l2(&e);
    }
    let s = e.stats();
    println!(
        "{} blocks inserted, {} EMPTY; L2 copies {}, L2-only {}",
        next, s.l2.l2_compress_zeros, s.l2_sizes.l2_blocks, s.l2_sizes.l2_only_blocks
    );
    assert!(s.l2.l2_compress_zeros > (rounds * 1500) as u64);
    assert!(
        s.l2_sizes.l2_blocks < 9000,
        "EMPTY entries pile up: {} L2 copies after {} EMPTY writes",
        s.l2_sizes.l2_blocks,
        s.l2.l2_compress_zeros
    );
    e.shutdown().unwrap();
}

#[test]
fn keys_have_a_maximum_length() {
    let (store, _) = common::l2_store();
    let e = Engine::builder()
        .reactors(1)
        .arc_capacity(4 << 20)
        .backing(store)
        .max_key_len(16)
        .build()
        .unwrap();
    assert!(e.read(&[7u8; 16]).is_ok());
    let r = e.read(&[7u8; 17]);
    assert!(
        matches!(r, Err(Error::KeyTooLong { len: 17, max: 16 })),
        "{r:?}"
    );
    assert!(e.insert(&[1u8; 100], b"x").is_err());
    e.shutdown().unwrap();
}

/// A store that counts reads in flight, each taking 20 ms.
fn slow_counting_store(in_flight: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> polarc::FnStore {
    polarc::FnStore::new(64, move |key: &[u8]| {
        let now = in_flight.fetch_add(1, Relaxed) + 1;
        peak.fetch_max(now, Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        in_flight.fetch_sub(1, Relaxed);
        Ok(value(key))
    })
    .unwrap()
}

#[test]
fn a_full_engine_pushes_back() {
    for when_full in [WhenFull::Busy, WhenFull::Wait] {
        let (in_flight, peak) = (Arc::default(), Arc::<AtomicUsize>::default());
        let e = Engine::builder()
            .reactors(1)
            .arc_capacity(16 << 20)
            .backing(slow_counting_store(in_flight, peak.clone()))
            .max_in_flight(4)
            .when_full(when_full)
            .build()
            .unwrap();
        let busy = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let (e, busy) = (e.clone(), busy.clone());
                std::thread::spawn(move || {
                    for i in 0..5 {
                        match e.read(&key(t * 100 + i)) {
                            Ok(b) => assert_eq!(&*b, &value(&key(t * 100 + i))[..]),
                            Err(Error::Busy(4)) => {
                                busy.fetch_add(1, Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (peak, busy) = (peak.load(Relaxed), busy.load(Relaxed));
        println!("{when_full:?}: peak {peak} reads in flight, {busy} Busy");
        assert!(
            peak <= 4,
            "{peak} backing reads at once past max_in_flight 4"
        );
        match when_full {
            WhenFull::Busy => assert!(busy > 0),
            WhenFull::Wait => assert_eq!(busy, 0),
        }
        e.shutdown().unwrap();
    }
}

#[test]
fn prefetches_past_the_limit_are_dropped_not_queued() {
    // The store holds every read until the prefetches have been counted,
    // so what is dropped does not depend on how fast this machine is.
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::<AtomicUsize>::default());
    let open = Arc::new(AtomicBool::new(false));
    let (gate, seen) = (open.clone(), peak.clone());
    let store = polarc::FnStore::new(64, move |k: &[u8]| {
        let now = in_flight.fetch_add(1, Relaxed) + 1;
        seen.fetch_max(now, Relaxed);
        let t = Instant::now();
        while !gate.load(Relaxed) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        in_flight.fetch_sub(1, Relaxed);
        Ok(value(k))
    })
    .unwrap();
    let e = Engine::builder()
        .reactors(1)
        .arc_capacity(16 << 20)
        .backing(store)
        .max_in_flight(8)
        .build()
        .unwrap();
    for i in 0..1000 {
        e.prefetch(&key(i)).unwrap();
    }
    let s = e.stats().requests;
    open.store(true, Relaxed);
    assert_eq!(s.prefetch_requests, 1000, "{s:?}");
    assert_eq!(s.backing_reads, 8, "{s:?}");
    assert_eq!(s.prefetch_dropped, 992, "{s:?}");
    e.shutdown().unwrap();
    assert!(peak.load(Relaxed) <= 8);
}

#[cfg(feature = "jobs")]
mod jobs {
    use super::*;
    use polarc::{JobOp, JobSpec};

    fn spec(ops: u64) -> JobSpec {
        JobSpec {
            keys: 1 << 20,
            zipf: 0.0,
            latency: false,
            ops_per_reactor: ops,
            queue_depth: 8,
            op: JobOp::Read,
            seed: 1,
            rate: None,
            arrivals: Default::default(),
            trace: None,
        }
    }

    #[test]
    fn a_job_ends_when_the_engine_shuts_down() {
        let store =
            polarc::SimStore::new(polarc::Latency::Fixed(Duration::from_millis(1)), 4096).unwrap();
        let e = Engine::builder()
            .reactors(2)
            .arc_capacity(8 << 20)
            .backing(store)
            .build()
            .unwrap();
        let e2 = e.clone();
        let job = std::thread::spawn(move || e2.run_jobs(&spec(u64::MAX / 4)));
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        e.shutdown().unwrap();
        let r = job.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        match r {
            Ok(reports) => assert!(reports.iter().all(|r| r.stopped && r.ops > 0)),
            Err(e) => assert!(matches!(e, Error::ShutDown), "{e}"),
        }
    }

    /// Once armed, panics on the 1000th read of a key that reactor 0 owns:
    /// by then reactor 0 holds requests from reactor 1's job (taken from
    /// its ring, their fills under way) that it will never answer.
    struct Panicky(Arc<AtomicBool>, AtomicU64);
    impl BackingStore for Panicky {
        fn read(&self, key: &[u8], done: ReadDone) {
            let owner = polarc::shard::shard_of(polarc::shard::hash_key(key), 2);
            if self.0.load(Relaxed) && owner == 0 && self.1.fetch_add(1, Relaxed) == 1000 {
                panic!("injected: the store panics on reactor 0");
            }
            done.complete(Ok(value(key)));
        }
        fn describe(&self) -> String {
            "panicky".into()
        }
    }

    #[test]
    fn a_peer_that_dies_answers_its_jobs_requests() {
        let armed = Arc::new(AtomicBool::new(false));
        let e = Engine::builder()
            .reactors(2)
            .arc_capacity(8 << 20)
            .backing(Panicky(armed.clone(), AtomicU64::new(0)))
            .build()
            .unwrap();
        armed.store(true, Relaxed);
        // Both waits are bounded, so that a job that never ends fails the
        // test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let e2 = e.clone();
        std::thread::spawn(move || {
            let r = e2.run_jobs(&spec(200_000));
            let _ = tx.send(r.is_err());
            let _ = tx.send(e2.shutdown().is_ok());
        });
        let limit = Duration::from_secs(20);
        let failed = rx.recv_timeout(limit).expect("the jobs never ended");
        assert!(failed, "a reactor died, yet run_jobs succeeded");
        // Reactor 1's job ends although reactor 0 never answers what it
        // had taken, and so does the shutdown.
        let shut = rx.recv_timeout(limit).expect("shutdown never ended");
        assert!(shut);
    }
}

/// A key's block: 512 B to 256 KiB, its size and bytes a function of it.
fn sized_value(key: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(key.try_into().expect("an 8-byte key"));
    let len = 512 * (1 + (n * 7919 % 512)) as usize;
    polarc::SimStore::content(key, len, 2.0)
}

/// A pool that runs out (callers hold more blocks than it has) serves
/// every read correctly from a heap copy, uncached; once the blocks are
/// dropped, its free memory merges back and reads are cached again,
/// whatever sizes came and went; after shutdown nothing is outstanding.
#[test]
fn a_pool_that_runs_out_serves_uncached_then_caches_again() {
    let store = polarc::FnStore::new(2, |k: &[u8]| Ok(sized_value(k))).unwrap();
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(2 << 20)
        .max_block_size(256 << 10)
        .pool_capacity(6 << 20)
        .hugepages(false)
        .backing(store)
        .build()
        .unwrap();
    // Holding blocks keeps their pool buffers: about 13 MiB of them.
    let mut held = Vec::new();
    for i in 0..100 {
        let b = e.read(&key(i)).unwrap();
        assert_eq!(&*b, &sized_value(&key(i))[..], "key {i}");
        held.push(b);
    }
    let s = e.stats();
    assert!(
        s.pool.alloc_fail > 0 && s.requests.uncached_fills > 0,
        "{:?}",
        s.pool
    );
    assert!(held.iter().any(|b| !b.is_pooled()), "some were heap copies");
    drop(held);
    // Every size came and went, and nothing stranded: what the ARC does
    // not hold is free, but for the reactors' magazines (1/32 at most).
    let p = e.stats().pool;
    assert_eq!(
        p.free_bytes + p.magazine_bytes + p.outstanding_bytes,
        p.capacity_bytes,
        "{p:?}"
    );
    assert!(p.magazine_bytes <= p.capacity_bytes / 32, "{p:?}");
    let uncached = e.stats().requests.uncached_fills;
    for round in 0..2 {
        for i in 1000..1010 {
            let b = e.read(&key(i)).unwrap();
            assert_eq!(&*b, &sized_value(&key(i))[..]);
            assert!(
                b.is_pooled(),
                "round {round}, key {i}: {:?}",
                e.stats().pool
            );
        }
    }
    let s = e.stats();
    assert_eq!(s.requests.uncached_fills, uncached, "cached again");
    assert!(s.arc.hits >= 10, "the second round hit the ARC");
    e.shutdown().unwrap();
    assert_eq!(e.stats().pool.outstanding, 0);
}
