//! The client API end to end, on real reactor threads.

mod common;
use common::{block_on, content, counting_store};
use polarc::{Engine, Error, IdleStrategy, Latency, Pinning, SimStore};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn engine(reactors: usize, arc: u64, delay_ms: u64) -> (Engine, Arc<std::sync::atomic::AtomicU64>) {
    let (store, reads) = counting_store(Duration::from_millis(delay_ms));
    let e = Engine::builder()
        .reactors(reactors)
        .arc_capacity(arc)
        .max_block_size(4096)
        .pool_capacity(16 << 20)
        .hugepages(false)
        .backing(store)
        .build()
        .unwrap();
    (e, reads)
}

#[test]
fn read_through_then_hit_get_insert_invalidate() {
    let (e, reads) = engine(2, 1 << 20, 0);
    assert!(e.get(b"a").unwrap().is_none());
    assert_eq!(&*e.read(b"a").unwrap(), &content(b"a")[..]);
    assert_eq!(reads.load(Ordering::Relaxed), 1);
    assert_eq!(&*e.read(b"a").unwrap(), &content(b"a")[..]);
    assert_eq!(
        reads.load(Ordering::Relaxed),
        1,
        "second read is an ARC hit"
    );
    assert!(e.get(b"a").unwrap().is_some());

    e.insert(b"b", b"inserted bytes").unwrap();
    assert_eq!(&*e.get(b"b").unwrap().unwrap(), b"inserted bytes");
    e.invalidate(b"b").unwrap();
    assert!(e.get(b"b").unwrap().is_none());

    let s = e.stats();
    assert_eq!(s.requests.reads, 2);
    assert_eq!(s.requests.gets, 4);
    assert_eq!(
        s.arc.hits + s.arc.misses,
        s.requests.reads + s.requests.gets
    );
    assert_eq!(s.arc.hits, 3);
    assert_eq!(s.requests.backing_reads, 1);
    assert!(s.hdr_bytes_per_block > 0.0);
    e.shutdown().unwrap();
}

#[test]
fn prefetch_brings_a_block_in_without_waiting() {
    let (e, reads) = engine(1, 1 << 20, 300);
    e.prefetch(b"p").unwrap(); // returns before the 300 ms read
    assert!(e.get(b"p").unwrap().is_none());
    // A demand read joins the prefetch's backing read.
    assert_eq!(&*e.read(b"p").unwrap(), &content(b"p")[..]);
    assert_eq!(reads.load(Ordering::Relaxed), 1);
    assert!(e.get(b"p").unwrap().is_some());
    assert_eq!(e.stats().requests.fills_joined, 1);
}

#[test]
fn concurrent_misses_on_one_key_share_one_backing_read() {
    let (e, reads) = engine(2, 1 << 20, 300);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.read(b"shared").unwrap().to_vec())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), content(b"shared"));
    }
    assert_eq!(reads.load(Ordering::Relaxed), 1);
    // A thread that started after the fill completed hits instead of joining.
    let s = e.stats();
    assert_eq!(s.requests.fills_joined + s.arc.hits, 7);
    assert!(s.requests.fills_joined >= 1);
}

#[test]
fn backing_errors_reach_the_caller_and_do_not_poison_the_cache() {
    let (e, _) = engine(2, 1 << 20, 0);
    let err = e.read(b"fail-1").unwrap_err();
    assert!(matches!(err, Error::Backing(_)), "{err}");
    assert!(err.to_string().contains("injected backing failure"));
    assert!(e.get(b"fail-1").unwrap().is_none());
    let s = e.stats();
    assert_eq!(s.requests.backing_errors, 1);
    assert_eq!(s.sizes.headers, 0, "a failed fill leaves no header");
    assert_eq!(&*e.read(b"ok").unwrap(), &content(b"ok")[..]);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (e, _) = engine(1, 1 << 20, 0);
    assert!(matches!(e.read(b""), Err(Error::EmptyKey)));
    assert!(matches!(
        e.insert(b"k", &[]),
        Err(Error::BlockSize { size: 0, max: 4096 })
    ));
    assert!(matches!(
        e.insert(b"k", &[1; 4097]),
        Err(Error::BlockSize { size: 4097, .. })
    ));
    assert!(e.get(b"k").unwrap().is_none());
    assert_eq!(e.stats().requests.insert_requests, 0);

    let refuse = |b: polarc::EngineBuilder, needle: &str| {
        let err = b.hugepages(false).build().unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    };
    refuse(
        Engine::builder().arc_capacity(0),
        "arc_capacity must be above zero",
    );
    refuse(Engine::builder().max_block_size(3000), "power of two");
    refuse(Engine::builder().reactors(0), "reactors must be at least 1");
    refuse(
        Engine::builder()
            .reactors(1000)
            .pinning(Pinning::Required)
            .arc_capacity(1 << 40),
        "pinning required",
    );
}

#[test]
fn a_block_larger_than_the_backing_limit_is_an_error() {
    let store = polarc::FnStore::new(1, |_k: &[u8]| Ok(vec![7u8; 8192])).unwrap();
    let e = Engine::builder()
        .reactors(1)
        .max_block_size(4096)
        .arc_capacity(1 << 20)
        .hugepages(false)
        .backing(store)
        .build()
        .unwrap();
    let err = e.read(b"big").unwrap_err().to_string();
    assert!(
        err.contains("8192 B from the backing store is outside 1..=4096"),
        "{err}"
    );
}

#[test]
fn futures_work_without_a_runtime() {
    let (e, _) = engine(2, 1 << 20, 5);
    let futs: Vec<_> = (0..20u32).map(|i| e.read_async(&i.to_le_bytes())).collect();
    for (i, f) in futs.into_iter().enumerate() {
        let b = block_on(f).unwrap();
        assert_eq!(&*b, &content(&(i as u32).to_le_bytes())[..]);
    }
    assert!(block_on(e.get_async(&3u32.to_le_bytes()))
        .unwrap()
        .is_some());
    block_on(e.invalidate_async(&3u32.to_le_bytes())).unwrap();
    assert!(block_on(e.get_async(&3u32.to_le_bytes()))
        .unwrap()
        .is_none());
    assert!(matches!(block_on(e.get_async(b"")), Err(Error::EmptyKey)));
}

#[test]
fn shutdown_returns_every_buffer_and_later_calls_fail() {
    let (e, _) = engine(2, 64 << 10, 0);
    for i in 0..500u32 {
        e.read(&i.to_le_bytes()).unwrap();
    }
    let held = e.read(&499u32.to_le_bytes()).unwrap();
    let s = e.stats();
    assert!(s.arc.evict_mru + s.arc.evict_mfu > 0, "the ARC overflowed");
    assert!(s.pool.outstanding > 0);
    e.shutdown().unwrap();
    assert_eq!(
        e.stats().pool.outstanding,
        1,
        "only the block the test holds"
    );
    drop(held);
    assert_eq!(e.stats().pool.outstanding, 0);
    assert!(matches!(e.read(b"x"), Err(Error::ShutDown)));
    assert_eq!(
        e.stats().requests.reads,
        501,
        "final figures survive shutdown"
    );
}

#[test]
fn shutdown_waits_for_fills_in_flight() {
    let (e, _) = engine(2, 1 << 20, 30);
    let pending = e.read_async(b"slow"); // queued before shutdown
    e.shutdown().unwrap();
    // The read was accepted before shutdown, so it completes.
    assert_eq!(pending.wait().unwrap().to_vec(), content(b"slow"));
    assert_eq!(e.stats().pool.outstanding, 0);
}

#[test]
fn busy_idle_and_parks_are_counted() {
    let store = SimStore::new(Latency::Fixed(Duration::from_millis(1)), 4096).unwrap();
    let e = Engine::builder()
        .reactors(1)
        .arc_capacity(1 << 20)
        .idle(IdleStrategy::Adaptive)
        .spin_before_park(Duration::from_micros(10))
        .hugepages(false)
        .backing(store)
        .build()
        .unwrap();
    e.read(b"k").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let s = e.stats();
    assert!(s.requests.busy_loops > 0 && s.requests.idle_loops > 0);
    assert!(s.requests.parks > 0, "an idle adaptive reactor parks");
    assert_eq!(s.reactors.len(), 1);
}

#[test]
fn stats_render_as_json_and_prometheus() {
    let (e, _) = engine(2, 1 << 20, 0);
    e.read(b"a").unwrap();
    e.read(b"a").unwrap();
    let s = e.stats();
    let j: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(j["arc"]["hits"], 1);
    assert_eq!(j["arc"]["misses"], 1);
    assert_eq!(j["reactors"].as_array().unwrap().len(), 2);
    let p = s.to_prometheus();
    assert!(p.contains("# TYPE polarc_arc_hits_total counter"));
    assert!(p.contains("\npolarc_arc_hits_total 1\n"), "{p}");
    assert!(p.contains("polarc_arc_mru_hits_total{reactor=\""));
    assert!(p.contains("\npolarc_pool_outstanding "));
    assert!(p.contains("\npolarc_l2_hits_total 0\n"), "{p}");
    assert!(p.contains("\npolarc_l2_asize 0\n"), "{p}");
    for line in p.lines().filter(|l| !l.starts_with('#')) {
        let v = line.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample {line:?}");
    }
}

#[test]
fn the_sim_store_serves_checkable_content() {
    let store = SimStore::new(Latency::Fixed(Duration::from_millis(2)), 4096).unwrap();
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(1 << 20)
        .max_block_size(4096)
        .hugepages(false)
        .backing(store)
        .build()
        .unwrap();
    for i in 0..50u64 {
        let k = polarc::index_key(i);
        assert_eq!(&*e.read(&k).unwrap(), &SimStore::content(&k, 4096, 1.0)[..]);
    }
    assert!(e.backing_description().contains("simulated store"));
}

#[test]
fn invalidate_during_a_fill_keeps_the_block_out() {
    let (e, reads) = engine(1, 1 << 20, 40);
    e.prefetch(b"k").unwrap();
    e.invalidate(b"k").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(reads.load(Ordering::Relaxed), 1, "the fill completed");
    assert!(
        e.get(b"k").unwrap().is_none(),
        "an invalidated key is never served"
    );
    let s = e.stats();
    assert_eq!(
        (s.sizes.headers, s.sizes.resident_blocks),
        (0, 0),
        "the detached header was freed"
    );
    assert_eq!(s.arc.invalidates, 1);
}

#[test]
fn timing_stamps_say_when_the_reactor_took_and_answered_a_read() {
    let (store, _) = counting_store(Duration::from_millis(5));
    let e = Engine::builder()
        .reactors(2)
        .arc_capacity(1 << 20)
        .max_block_size(4096)
        .pool_capacity(16 << 20)
        .hugepages(false)
        .backing(store)
        .timing(true)
        .build()
        .unwrap();
    let sent = std::time::Instant::now();
    let miss = e.read(b"k").unwrap();
    let back = std::time::Instant::now();
    let t = miss.timing().expect("stamped");
    assert!(sent <= t.taken && t.taken <= t.answered && t.answered <= back);
    assert!(
        t.answered - t.taken >= Duration::from_millis(5),
        "the miss's service holds the store's 5 ms: {t:?}"
    );
    let hit = e.read(b"k").unwrap();
    let t = hit.timing().expect("stamped");
    assert!(t.answered - t.taken < Duration::from_millis(5), "{t:?}");
    let (plain, _) = engine(1, 1 << 20, 0);
    assert!(plain.read(b"k").unwrap().timing().is_none());
}
