//! The L2 tier end to end: blocks evicted from the ARC come back from the
//! L2 device, compressed and checksummed, and the seed's buffer leak
//! stays fixed.

use polarc::device::faulty::{FaultConfig, FaultyDevice};
use polarc::device::mem::MemDevice;
use polarc::device::BlockDevice;
use polarc::testing::fixtures::{self as common, fast_feed, l2_value as value};
use polarc::{Engine, L2Config};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn engine(dev: impl BlockDevice, l2: L2Config, arc: u64) -> (Engine, Arc<AtomicU64>) {
    let (b, reads) = common::l2_engine(dev);
    (b.arc_capacity(arc).l2_config(l2).build().unwrap(), reads)
}

fn key(i: u64) -> [u8; 8] {
    polarc::index_key(i)
}

#[test]
fn blocks_evicted_from_the_arc_come_back_from_l2() {
    let (e, reads) = engine(MemDevice::new(64 << 20, 512).unwrap(), fast_feed(), 2 << 20);
    let n = 3000u64; // 12 MiB of blocks over a 2 MiB ARC
    for _pass in 0..3 {
        for i in 0..n {
            let b = e.read(&key(i)).unwrap();
            assert_eq!(&*b, &value(&key(i))[..]);
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        common::settle_l2(&e);
    }
    let before = reads.load(Ordering::Relaxed);
    for i in 0..n {
        assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
    }
    let s = e.stats();
    let from_backing = reads.load(Ordering::Relaxed) - before;
    println!(
        "l2: {:?}\nsizes: {:?}\nlast pass: {from_backing} of {n} from the backing store; {} B per L2-only block",
        s.l2, s.l2_sizes, s.l2_hdr_bytes_per_block
    );
    assert!(s.l2.l2_hits > n / 2, "{} L2 hits", s.l2.l2_hits);
    assert!(from_backing < n / 4, "{from_backing} backing reads");
    assert!(s.l2.l2_compress_successes > 0);
    assert!(
        s.l2_sizes.l2_asize < s.l2_sizes.l2_size,
        "2:1 data is stored compressed"
    );
    assert_eq!(s.l2.l2_cksum_bad + s.l2.l2_io_error, 0);
    e.shutdown().unwrap();
    let s = e.stats();
    assert_eq!(s.pool.outstanding, 0);
    assert_eq!(s.l2.l2_free_on_write, s.l2.l2_writes_sent);
}

/// The seed's bug (illumos 3995): compressed buffers leaked when a feed
/// write completed, above all when it failed. Feed with compression, with
/// write errors injected mid-batch; once quiet, every write buffer went
/// back through the free-on-write ring and no pool buffer is outstanding.
#[test]
fn no_compressed_buffer_leaks_even_when_feed_writes_fail() {
    let faults = FaultConfig {
        write_error: 0.3,
        fail_write_at: Some(2),
        seed: 7,
        ..FaultConfig::default()
    };
    let dev = FaultyDevice::new(MemDevice::new(8 << 20, 512).unwrap(), faults).unwrap();
    let injected = dev.counters();
    let (e, _) = engine(dev, fast_feed(), 1 << 20);
    let n = 2000u64;
    for pass in 0..3 {
        for i in 0..n {
            assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        common::settle_l2(&e);
        println!("pass {pass}: {:?}", e.stats().l2);
    }
    // Quiet, with nothing cached: no buffer may be outstanding.
    for i in 0..n {
        e.invalidate(&key(i)).unwrap();
    }
    common::settle_l2(&e);
    let s = e.stats();
    assert_eq!(s.pool.outstanding, 0, "buffers outstanding while quiet");
    assert!(
        s.l2.l2_writes_error > 0 && s.l2.l2_writes_done > 0,
        "{:?}",
        s.l2
    );
    // Every injected write error is accounted for: feed writes, and the
    // log's own writes (log blocks, flushes, headers), which are retried.
    assert_eq!(
        s.l2.l2_writes_error + s.l2.l2_log_write_errors,
        injected.write_errors.load(Ordering::Relaxed)
    );
    assert!(s.l2.l2_compress_successes > 0);
    assert_eq!(s.l2.l2_free_on_write, s.l2.l2_writes_sent);
    assert_eq!(
        s.l2_sizes.l2_blocks, 0,
        "invalidated blocks keep no L2 copy"
    );
    e.shutdown().unwrap();
    let f = e.stats();
    assert_eq!(f.pool.outstanding, 0);
    assert_eq!(f.l2.l2_free_on_write, f.l2.l2_writes_sent);
}

/// Fills the ARC with `n` blocks, lets them reach L2, then pushes them out
/// of the ARC with other keys.
fn warm_l2(e: &Engine, n: u64) {
    for i in 0..n {
        e.read(&key(i)).unwrap();
    }
    let t = Instant::now();
    while e.stats().l2_sizes.l2_blocks < n * 9 / 10 {
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", e.stats().l2);
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 1_000_000..1_000_000 + n {
        e.read(&key(i)).unwrap();
    }
}

/// The seed's second change (illumos 3997): L2 reads go on while the
/// feeder writes. With every feed write taking 1.5 s, L2 hits complete
/// while a write is in flight; with `norw` they go to the backing store.
#[test]
fn l2_reads_complete_while_a_slow_feed_write_is_in_flight() {
    for norw in [false, true] {
        let faults = FaultConfig {
            write_latency: Duration::from_millis(1500),
            ..FaultConfig::default()
        };
        let dev = FaultyDevice::new(MemDevice::new(32 << 20, 512).unwrap(), faults).unwrap();
        let l2 = L2Config {
            norw,
            writes_in_flight: 8,
            // Every write takes 1.5 s here; the log's own writes would only
            // slow the test down (persistence has tests of its own).
            persistent: false,
            ..fast_feed()
        };
        let (e, _) = engine(dev, l2, 1 << 20);
        let n = 200;
        warm_l2(&e, n);
        // Wait for a feed write (of the second set) to be in flight.
        let t = Instant::now();
        let before = loop {
            let s = e.stats();
            if s.l2.l2_writes_sent > s.l2.l2_writes_done {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no feed write started"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let t = Instant::now();
        for i in 0..n {
            assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
        }
        let took = t.elapsed();
        let after = e.stats();
        println!(
            "norw={norw}: {n} reads in {took:?}; L2 hits {} -> {}, norw skips {}, writes done {} -> {}",
            before.l2.l2_hits,
            after.l2.l2_hits,
            after.l2.l2_norw_skips,
            before.l2.l2_writes_done,
            after.l2.l2_writes_done
        );
        // The write that was in flight before the reads is still in flight.
        assert_eq!(after.l2.l2_writes_done, before.l2.l2_writes_done);
        assert!(after.l2.l2_writes_sent > after.l2.l2_writes_done);
        if norw {
            assert_eq!(after.l2.l2_hits, before.l2.l2_hits);
            assert!(after.l2.l2_norw_skips > 0);
        } else {
            assert!(
                after.l2.l2_hits >= before.l2.l2_hits + n / 2,
                "L2 reads waited for the write"
            );
        }
        e.shutdown().unwrap();
        assert_eq!(e.stats().pool.outstanding, 0);
    }
}

/// Fills a small device many times over. Without injected faults no
/// checksum ever fails: no L2 copy points at overwritten data.
#[test]
fn the_ring_wraps_many_times_without_a_bad_checksum() {
    let cap = 1u64 << 20;
    let (e, _) = engine(MemDevice::new(cap, 512).unwrap(), fast_feed(), 512 << 10);
    let n = 2500u64; // ~5 MiB compressed, 10 MiB raw
    for pass in 0..4 {
        for i in 0..n {
            let k = key((i * 7919 + pass * 13) % n);
            assert_eq!(&*e.read(&k).unwrap(), &value(&k)[..]);
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    common::settle_l2(&e);
    for i in 0..n {
        assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
    }
    let s = e.stats();
    println!("{:?}\n{:?}", s.l2, s.l2_sizes);
    assert!(
        s.l2.l2_write_bytes > 5 * cap,
        "device filled only {:.1} times",
        s.l2.l2_write_bytes as f64 / cap as f64
    );
    assert!(s.l2.l2_evicted > 0 && s.l2.l2_hits > 0);
    assert_eq!(s.l2.l2_cksum_bad, 0);
    assert_eq!(s.l2.l2_io_error, 0);
    assert!(s.l2_sizes.l2_asize <= cap);
    e.shutdown().unwrap();
}

/// A device whose queues cannot be opened fails the build with its error,
/// and the reactors that did start are shut down.
#[test]
fn a_device_that_refuses_its_queues_fails_the_build() {
    struct Refusing;
    impl BlockDevice for Refusing {
        fn info(&self) -> polarc::device::DeviceInfo {
            polarc::device::DeviceInfo {
                name: "refusing".into(),
                block_size: 512,
                capacity: 64 << 20,
            }
        }
        fn open_queue(
            &self,
            _depth: usize,
        ) -> Result<Box<dyn polarc::device::DeviceQueue>, polarc::device::DeviceError> {
            Err(polarc::device::DeviceError::Unsupported(
                "no queues on this device".into(),
            ))
        }
    }
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(4 << 20)
        .max_block_size(64 << 10)
        .hugepages(false)
        .l2_device(Refusing)
        .build()
        .unwrap_err();
    assert!(
        matches!(e, polarc::Error::Device(_)) && e.to_string().contains("no queues on this device"),
        "{e}"
    );
}

/// A device whose every write fails (gone, or failed): the feeder backs
/// off instead of scanning and compressing every feed interval, and reads
/// stay right from the backing store throughout.
#[test]
fn the_feeder_backs_off_while_every_write_fails() {
    let faults = FaultConfig {
        seed: 3,
        ..FaultConfig::default()
    };
    let dev = FaultyDevice::new(MemDevice::new(8 << 20, 512).unwrap(), faults).unwrap();
    let injected = dev.counters();
    let (e, _) = engine(dev, fast_feed(), 1 << 20);
    // The device dies once the engine has started (a device whose header
    // cannot be written is refused at start-up).
    injected.fail_all_writes.store(true, Ordering::Relaxed);
    let n = 2000u64;
    for i in 0..n {
        assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = e.stats().l2;
    assert!(before.l2_writes_error > 0, "{before:?}");
    std::thread::sleep(Duration::from_secs(1));
    let after = e.stats().l2;
    // Without back-off: one cycle per 20 ms feed interval, about 50.
    assert!(
        after.l2_feeds - before.l2_feeds <= 5,
        "{} feed cycles in 1 s while every write fails",
        after.l2_feeds - before.l2_feeds
    );
    assert_eq!(after.l2_writes_done, 0);
    e.shutdown().unwrap();
    assert_eq!(e.stats().pool.outstanding, 0);
}
