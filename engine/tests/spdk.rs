//! The SPDK backend, for real: SPDK's `nvmf_tgt` serves a malloc bdev on
//! 127.0.0.1, and the engine's `spdk` device reaches it through SPDK's NVMe
//! driver over NVMe/TCP.
//!
//! Run with an installed SPDK:
//! `SPDK_DIR=/opt/spdk cargo test -p polarc --features spdk --test spdk`.
//! Without the `spdk` feature the tests print why they are skipped.

#[cfg(not(feature = "spdk"))]
#[test]
fn spdk_tests() {
    println!("skipped: SPDK not found (set SPDK_DIR)");
}

#[cfg(feature = "spdk")]
mod with_spdk {
    use polarc::bufpool::BufPool;
    use polarc::device::spdk::{init_env, SpdkDevice, SpdkEnvOptions, SpdkTarget};
    use polarc::device::{BlockDevice, DeviceError};
    use polarc::testing::fixtures::{self as common, l2_value as value};
    use polarc::testing::nvmf_target::NvmfTarget;
    use polarc::Engine;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Target on core 0, initiator on the last core: on 2 cores they
    /// share the machine, each on its own core.
    fn initiator_core() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get() - 1)
    }

    fn env() {
        init_env(&SpdkEnvOptions {
            name: "polarc-test".into(),
            cores: vec![initiator_core()],
            mem_size_mb: Some(1024),
            no_huge: true,
            no_pci: true,
            ..SpdkEnvOptions::default()
        })
        .expect("SPDK environment");
    }

    fn target(size_mb: u64) -> NvmfTarget {
        NvmfTarget::start(size_mb, 512, 0).expect("nvmf_tgt")
    }

    fn connect(t: &NvmfTarget) -> SpdkDevice {
        env();
        SpdkDevice::connect(&SpdkTarget::parse(&t.trid()).unwrap()).expect("connect")
    }

    #[test]
    fn passes_the_device_conformance_suite() {
        let t = target(64);
        let dev = connect(&t);
        let info = dev.info();
        assert_eq!(info.capacity, 64 << 20);
        assert_eq!(info.block_size, 512);
        let region = dev.pool_region(16 << 20).unwrap().unwrap();
        let pool = BufPool::from_region(region, 1 << 20);
        polarc::testing::conformance::run(&dev, &pool).unwrap();
        assert_eq!(pool.stats().outstanding, 0);
        println!("conformance passed on {}", info.name);
    }

    #[test]
    fn a_bad_target_is_a_clear_error() {
        env();
        let e = SpdkTarget::parse("traddr:127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("no trtype"), "{e}");
        // Nothing listens on this port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tgt = SpdkTarget::parse(&format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:nqn.x"
        ))
        .unwrap();
        let e = SpdkDevice::connect(&tgt).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, DeviceError::Unreachable { .. }) && msg.contains("could not be connected"),
            "{msg}"
        );
        assert!(
            msg.contains(&port.to_string()) && !msg.contains('\n'),
            "{msg}"
        );
    }

    fn engine(dev: SpdkDevice) -> (Engine, Arc<AtomicU64>) {
        let (b, reads) = common::l2_engine(dev);
        // The reactors keep off the target's core: a busy-polling target
        // would otherwise delay every wake-up of a reactor sharing its core.
        (b.cores(vec![initiator_core(); 2]).build().unwrap(), reads)
    }

    fn key(i: u64) -> [u8; 8] {
        polarc::index_key(i)
    }

    fn pass(e: &Engine, n: u64) {
        for i in 0..n {
            assert_eq!(&*e.read(&key(i)).unwrap(), &value(&key(i))[..], "key {i}");
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn engine_serves_l2_hits_from_the_nvme_target() {
        let t = target(64);
        let (e, reads) = engine(connect(&t));
        let n = 3000u64; // 12 MiB of blocks over a 2 MiB ARC
        for _ in 0..3 {
            pass(&e, n);
            common::settle_l2(&e);
        }
        let before = reads.load(Ordering::Relaxed);
        pass(&e, n);
        let s = e.stats();
        let from_backing = reads.load(Ordering::Relaxed) - before;
        println!(
            "l2: {:?}\nlast pass: {from_backing} of {n} from the backing store",
            s.l2
        );
        assert!(s.l2.l2_hits > n / 2, "{} L2 hits", s.l2.l2_hits);
        assert!(from_backing < n / 4, "{from_backing} backing reads");
        assert_eq!(s.l2.l2_cksum_bad + s.l2.l2_io_error, 0);
        e.shutdown().unwrap();
        let s = e.stats();
        assert_eq!(s.pool.outstanding, 0);
        assert_eq!(s.l2.l2_free_on_write, s.l2.l2_writes_sent);
    }

    /// The persistent L2 over SPDK: a second engine on the same namespace
    /// rebuilds from its log (flushes and header writes through the NVMe
    /// driver) and serves its blocks from L2.
    #[test]
    fn a_restarted_engine_rebuilds_from_the_namespace() {
        let t = target(64);
        let n = 3000u64;
        let blocks = {
            let (e, _) = engine(connect(&t));
            for _ in 0..3 {
                pass(&e, n);
                common::settle_l2(&e);
            }
            e.shutdown().unwrap();
            e.stats().l2_sizes.l2_blocks
        };
        let (e, reads) = engine(connect(&t));
        let t0 = std::time::Instant::now();
        while e.stats().l2_rebuilding > 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "no rebuild");
            std::thread::sleep(Duration::from_millis(5));
        }
        let s = e.stats();
        println!("{blocks} blocks before; rebuilt {:?}", s.l2_sizes);
        assert_eq!(s.l2.l2_rebuild_success, 1);
        assert!(s.l2_sizes.l2_blocks as f64 >= 0.999 * blocks as f64);
        pass(&e, n);
        let s = e.stats();
        assert!(
            s.l2.l2_hits >= blocks * 99 / 100,
            "{} L2 hits",
            s.l2.l2_hits
        );
        assert!(reads.load(Ordering::Relaxed) <= n - blocks * 99 / 100);
        assert_eq!(s.l2.l2_cksum_bad + s.l2.l2_io_error, 0);
        e.shutdown().unwrap();
    }

    const KEEP_ALIVE_MS: u32 = 10_000;
    const IDLE_MS: u64 = 25_000;

    /// An idle engine keeps its NVMe-oF association: the admin queue (and
    /// so the keep-alive, SPDK's default 10 s) is polled even with no I/O,
    /// so L2 hits still come after 25 s of silence. (Before the device tick,
    /// the target dropped the controller and every L2 read failed.)
    #[test]
    fn an_idle_engine_keeps_its_controller() {
        let t = target(64);
        env();
        let mut tgt = SpdkTarget::parse(&t.trid()).unwrap();
        tgt.keep_alive_ms = Some(KEEP_ALIVE_MS);
        let dev = SpdkDevice::connect(&tgt).expect("connect");
        let (e, reads) = engine(dev.clone());
        let n = 3000u64;
        for _ in 0..2 {
            pass(&e, n);
            common::settle_l2(&e);
        }
        std::thread::sleep(Duration::from_millis(IDLE_MS));
        let before = (e.stats().l2, reads.load(Ordering::Relaxed));
        pass(&e, n);
        let s = e.stats().l2;
        println!("after {IDLE_MS} ms idle: {s:?}");
        assert!(!dev.failed(), "the controller failed while idle");
        assert_eq!(s.l2_io_error, 0);
        assert!(
            s.l2_hits - before.0.l2_hits > n / 2,
            "{} L2 hits",
            s.l2_hits - before.0.l2_hits
        );
        e.shutdown().unwrap();
    }

    /// The target dies under load. Every read stays right (from the
    /// backing store), the device's errors are counted, the feeder backs
    /// off instead of compressing for writes that fail. Then the target
    /// comes back and L2 resumes; shutdown leaks no buffer.
    #[test]
    fn a_target_crash_loses_nothing_and_l2_resumes_when_it_is_back() {
        let mut t = target(64);
        let dev = connect(&t);
        let (e, reads) = engine(dev.clone());
        let n = 3000u64;
        pass(&e, n);
        common::settle_l2(&e);
        t.kill();
        let before = reads.load(Ordering::Relaxed);
        for _ in 0..3 {
            pass(&e, n);
        }
        let s = e.stats().l2;
        println!("after the crash: {s:?}");
        assert!(
            reads.load(Ordering::Relaxed) > before,
            "reads went to the backing store"
        );
        assert!(
            s.l2_io_error + s.l2_writes_error > 0,
            "the dead target caused no error"
        );
        assert_eq!(s.l2_cksum_bad, 0);
        // Backing off: in 1 s, a few feed cycles, not one per 20 ms interval.
        let feeds = s.l2_feeds;
        std::thread::sleep(Duration::from_secs(1));
        let later = e.stats().l2.l2_feeds;
        assert!(
            later - feeds <= 5,
            "{} feed cycles in 1 s to a dead device",
            later - feeds
        );
        assert!(dev.failed() || s.l2_writes_error > 0);

        // The target comes back (empty): the controller is reattached, the
        // queues open new qpairs, and L2 serves hits again. What the old
        // target held is gone, but those entries were dropped on their
        // errors, and any stale location would fail its checksum.
        t.restart().expect("restart nvmf_tgt");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let hits = e.stats().l2.l2_hits;
        while e.stats().l2.l2_hits < hits + n / 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no L2 hits 30 s after the target came back: {:?}; reattaches {}",
                e.stats().l2,
                dev.reattaches()
            );
            pass(&e, n);
            common::settle_l2(&e);
        }
        let s = e.stats().l2;
        println!("after the restart: {s:?}; reattaches {}", dev.reattaches());
        assert!(dev.reattaches() >= 1 && !dev.failed());
        assert_eq!(s.l2_cksum_bad, 0);
        e.shutdown().unwrap();
        assert_eq!(e.stats().pool.outstanding, 0);
    }
}
