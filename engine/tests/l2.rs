//! The L2 tier end to end: blocks evicted from the ARC come back from the
//! L2 device, compressed and checksummed, and the seed's buffer leak
//! stays fixed.

mod common;

use polarc::device::faulty::{FaultConfig, FaultyDevice};
use polarc::device::mem::MemDevice;
use polarc::device::BlockDevice;
use polarc::{Engine, FnStore, L2Config, SimStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;

fn value(key: &[u8]) -> Vec<u8> {
    SimStore::content(key, BLOCK, 2.0)
}

fn store() -> (FnStore, Arc<AtomicU64>) {
    let reads = Arc::new(AtomicU64::new(0));
    let r = reads.clone();
    let s = FnStore::new(2, move |key: &[u8]| {
        r.fetch_add(1, Ordering::Relaxed);
        Ok(value(key))
    })
    .unwrap();
    (s, reads)
}

fn fast_feed() -> L2Config {
    L2Config {
        feed_interval: Duration::from_millis(20),
        feed_min_interval: Duration::from_millis(5),
        write_size: 64 << 10,
        ..L2Config::default()
    }
}

fn engine(dev: impl BlockDevice, l2: L2Config, arc: u64) -> (Engine, Arc<AtomicU64>) {
    let (s, reads) = store();
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(arc)
        .max_block_size(64 << 10)
        .backing(s)
        .l2_device(dev)
        .l2_config(l2)
        .build()
        .unwrap();
    (e, reads)
}

fn key(i: u64) -> [u8; 8] {
    polarc::index_key(i)
}

/// Waits until every feed write sent has completed.
fn settle(e: &Engine) {
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
        settle(&e);
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
