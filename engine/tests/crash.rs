//! Crash consistency, for real: a child process runs reads, inserts
//! (replacements), invalidations and prefetches on an engine whose L2 is a
//! file (io_uring, `O_DIRECT`), and reports each invalidation or insert it
//! starts and each one that returned. The parent `kill -9`s it at a random
//! moment, starts an engine on the same file, and reads every key: each
//! must come back as a version between the last one acknowledged and the
//! last one asked for. Never a stale, torn or invalidated block.
//!
//! CI runs `POLARC_CRASH_ITERATIONS` kills (default 25); the full run is
//! `POLARC_CRASH_ITERATIONS=1000 cargo test --release -p polarc --test crash`.

use polarc::device::uring::{UringDevice, UringOptions};
use polarc::testing::fixtures::{block, key, parse_key};
use polarc::{Engine, FnStore, L2Config};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "POLARC_CRASH_CHILD";
const KEYS: u64 = 400;
const THREADS: u64 = 3;
const TEST: &str = "kill_9_at_random_points_loses_nothing_acknowledged";

/// The engine both sides use: a small ARC, so most blocks live in L2.
fn engine(file: &Path, versions: Arc<Vec<AtomicU64>>) -> Engine {
    let dev = UringDevice::open(
        file,
        UringOptions {
            size: Some(8 << 20),
            ..UringOptions::default()
        },
    )
    .expect("L2 file");
    let store = FnStore::new(2, move |k: &[u8]| {
        let k = parse_key(k).expect("a model key");
        Ok(block(k, versions[k as usize].load(Ordering::SeqCst)))
    })
    .expect("store");
    Engine::builder()
        .reactors(2)
        .arc_capacity(128 << 10)
        .max_block_size(4096)
        .pool_capacity(32 << 20)
        .hugepages(false)
        .backing(store)
        .l2_device(dev)
        .l2_config(L2Config {
            feed_interval: Duration::from_millis(5),
            feed_min_interval: Duration::from_millis(2),
            write_size: 16 << 10,
            noprefetch: false,
            ..L2Config::default()
        })
        .build()
        .expect("engine")
}

fn versions_of(v: &[u64]) -> Arc<Vec<AtomicU64>> {
    Arc::new(v.iter().map(|&x| AtomicU64::new(x)).collect())
}

/// The child: runs until killed. Prints `I k v` before it asks for
/// version `v` of key `k` (insert or invalidate) and `A k v` once that
/// returned.
fn child(dir: PathBuf) -> ! {
    let state: Vec<u64> = std::fs::read_to_string(dir.join("state"))
        .expect("state")
        .split_whitespace()
        .map(|x| x.parse().expect("a version"))
        .collect();
    let versions = versions_of(&state);
    let e = engine(&dir.join("l2.img"), versions.clone());
    println!("\nPOLARC-CHILD-READY");
    let seed: u64 = std::env::var("POLARC_CRASH_SEED").map_or(1, |s| s.parse().unwrap_or(1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, versions) = (e.clone(), versions.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed * 31 + t);
                let out = std::io::stdout();
                loop {
                    let k = rng.gen_range(0..KEYS / THREADS) * THREADS + t;
                    let v = &versions[k as usize];
                    match rng.gen_range(0..20) {
                        0 | 1 => {
                            let next = v.load(Ordering::SeqCst) + 1;
                            writeln!(out.lock(), "I {k} {next}").expect("stdout");
                            v.store(next, Ordering::SeqCst);
                            if rng.gen_bool(0.5) {
                                e.insert(&key(k), &block(k, next)).expect("insert");
                            } else {
                                e.invalidate(&key(k)).expect("invalidate");
                            }
                            writeln!(out.lock(), "A {k} {next}").expect("stdout");
                        }
                        2 | 3 => e.prefetch(&key(k)).expect("prefetch"),
                        _ => {
                            let want = block(k, v.load(Ordering::SeqCst));
                            let got = e.read(&key(k)).expect("read");
                            if *got != want[..] {
                                writeln!(out.lock(), "WRONG {k}").expect("stdout");
                                std::process::abort();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    std::process::abort()
}

#[test]
fn kill_9_at_random_points_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(PathBuf::from(dir));
    }
    let iterations: u64 = std::env::var("POLARC_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("l2.img");
    // What the store holds, which every key's cached block may lag by one
    // version at most: the last asked for.
    let mut state = vec![0u64; KEYS as usize];
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut acked_total, mut l2_total, mut rebuilt_total) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for it in 0..iterations {
        let text: Vec<String> = state.iter().map(u64::to_string).collect();
        std::fs::write(dir.path().join("state"), text.join(" ")).unwrap();
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("POLARC_CRASH_SEED", it.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill it at a random moment once it is running.
        let ready = Instant::now();
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains("POLARC-CHILD-READY") => break,
                Ok(l) => lines.push(l),
                Err(e) => panic!("iteration {it}: the child never got ready ({e})"),
            }
        }
        assert!(ready.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(rng.gen_range(10..300)));
        c.kill().unwrap(); // SIGKILL
        let _ = c.wait();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        // Lower bound: acknowledged; upper bound: asked for.
        let mut lo = state.clone();
        let mut hi = state.clone();
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            assert_ne!(
                f[0], "WRONG",
                "iteration {it}: the child read a wrong block: {l}"
            );
            let (Some(k), Some(v)) = (
                f.get(1).and_then(|x| x.parse::<usize>().ok()),
                f.get(2).and_then(|x| x.parse::<u64>().ok()),
            ) else {
                continue; // the line the kill cut short, or the harness's own
            };
            match f[0] {
                "I" => hi[k] = hi[k].max(v),
                "A" => {
                    lo[k] = lo[k].max(v);
                    acked_total += 1;
                }
                _ => {}
            }
        }
        // Restart on what the child left; the store has the newest.
        let e = engine(&file, versions_of(&hi));
        let t = Instant::now();
        while e.stats().l2.l2_rebuild_success == 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "no rebuild");
            std::thread::sleep(Duration::from_millis(2));
        }
        rebuilt_total += e.stats().l2.l2_rebuild_bufs;
        for k in 0..KEYS {
            let b = e.read(&key(k)).unwrap();
            let ok = (lo[k as usize]..=hi[k as usize]).any(|v| *b == block(k, v)[..]);
            assert!(
                ok,
                "iteration {it}: key {k} is not a version in {}..={} ({:?})",
                lo[k as usize],
                hi[k as usize],
                b.source()
            );
            l2_total += u64::from(b.source() == polarc::Source::L2);
            // A key whose last change was cut short is settled at the
            // newest version, durably, before the next child runs.
            if lo[k as usize] < hi[k as usize] {
                e.invalidate(&key(k)).unwrap();
            }
        }
        e.shutdown().unwrap();
        state = hi;
    }
    println!(
        "{iterations} kills in {:.1} s: {acked_total} changes acknowledged before them, {rebuilt_total} entries rebuilt, {l2_total} reads served from L2 after a restart",
        started.elapsed().as_secs_f64()
    );
    assert!(acked_total > 0 && rebuilt_total > 0 && l2_total > 0);
}
