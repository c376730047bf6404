//! The ARC-hit benchmark: resident 4 KiB blocks read and copied out, against a no-engine baseline.

use polarc::{index_key, Engine, IdleStrategy, JobOp, JobSpec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Knobs of the benchmark.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HitBench {
    /// Distinct keys (all resident).
    pub keys: u64,
    /// Block size.
    pub block: usize,
    /// Operations per thread (per reactor for jobs).
    pub ops: u64,
    /// Remote requests in flight per in-reactor job.
    pub queue_depth: usize,
    /// Repetitions; the median is reported.
    pub runs: usize,
}

impl Default for HitBench {
    fn default() -> Self {
        HitBench {
            keys: 16 * 1024,
            block: 4096,
            ops: 2_000_000,
            queue_depth: 32,
            runs: 3,
        }
    }
}

/// One measured configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HitResult {
    /// What was measured.
    pub name: String,
    /// Median ops/s over the runs.
    pub ops_per_sec: f64,
    /// Every run's ops/s.
    pub runs: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Table = Vec<Mutex<HashMap<[u8; 8], Arc<[u8]>, xxhash_rust::xxh3::Xxh3DefaultBuilder>>>;

/// The baseline: the same work without the engine, `threads` threads doing
/// lock, look up, copy out, unlock on a sharded `HashMap<key, Arc<[u8]>>`
/// behind mutexes, with the engine's hash function.
pub fn baseline(b: &HitBench, threads: usize) -> HitResult {
    let shards = 64;
    let table: Arc<Table> = Arc::new(
        (0..shards)
            .map(|_| Mutex::new(HashMap::default()))
            .collect(),
    );
    for i in 0..b.keys {
        let k = index_key(i);
        let h = polarc::shard::hash_key(&k);
        let data: Arc<[u8]> = vec![(i % 251) as u8; b.block].into();
        table[polarc::shard::shard_of(h, shards)]
            .lock()
            .unwrap()
            .insert(k, data);
    }
    let runs = (0..b.runs)
        .map(|r| {
            let start = Instant::now();
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let table = table.clone();
                    let (ops, keys, block) = (b.ops, b.keys, b.block);
                    std::thread::spawn(move || {
                        if let Some(c) =
                            core_affinity::get_core_ids().and_then(|c| c.get(t).copied())
                        {
                            core_affinity::set_for_current(c);
                        }
                        let mut rng = SmallRng::seed_from_u64(r as u64 * 1000 + t as u64);
                        let mut out = vec![0u8; block];
                        let mut sum = 0u64;
                        for _ in 0..ops {
                            let k = index_key(rng.gen_range(0..keys));
                            let h = polarc::shard::hash_key(&k);
                            let g = table[polarc::shard::shard_of(h, shards)].lock().unwrap();
                            let v = g.get(&k).expect("preloaded");
                            out[..v.len()].copy_from_slice(v);
                            drop(g);
                            sum += u64::from(out[0]);
                        }
                        std::hint::black_box(sum)
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            rate(b.ops, threads, start.elapsed().as_secs_f64())
        })
        .collect::<Vec<_>>();
    HitResult {
        name: format!("baseline, {threads} thread(s)"),
        ops_per_sec: median(runs.clone()),
        runs,
    }
}

/// `ops` per thread on `threads` threads in `secs`, per second (in f64:
/// no product to overflow).
fn rate(ops: u64, threads: usize, secs: f64) -> f64 {
    ops as f64 * threads as f64 / secs
}

/// The ARC for `b`'s keys: twice their bytes, checked.
fn arc_for(b: &HitBench) -> Result<u64, polarc::Error> {
    (b.block as u64)
        .checked_mul(b.keys)
        .and_then(|x| x.checked_mul(2))
        .ok_or_else(|| {
            polarc::Error::Config(format!(
                "--bench-hits: {} keys × {} B × 2 (the ARC) does not fit in 64 bits",
                b.keys, b.block
            ))
        })
}

fn preloaded_engine(b: &HitBench, reactors: usize) -> Result<Engine, polarc::Error> {
    let e = Engine::builder()
        .reactors(reactors)
        .idle(IdleStrategy::Busy)
        .arc_capacity(arc_for(b)?)
        .max_block_size(b.block.next_power_of_two())
        .build()?;
    let data = vec![7u8; b.block];
    for i in 0..b.keys {
        e.insert(&index_key(i), &data)?;
    }
    Ok(e)
}

/// In-reactor jobs on `reactors` reactors. Also returns the share of
/// operations that were remote (owned by another reactor).
pub fn jobs(b: &HitBench, reactors: usize) -> Result<(HitResult, f64), polarc::Error> {
    let e = preloaded_engine(b, reactors)?;
    let mut remote_share = 0.0;
    let mut runs = vec![];
    for r in 0..b.runs {
        let spec = JobSpec {
            zipf: 0.0,
            latency: false,
            keys: b.keys,
            ops_per_reactor: b.ops,
            queue_depth: b.queue_depth,
            op: JobOp::Get,
            seed: r as u64 * 77,
            rate: None,
            arrivals: Default::default(),
            trace: None,
        };
        let reports = e.run_jobs(&spec)?;
        let ops: u64 = reports.iter().map(|j| j.ops).sum();
        let hits: u64 = reports.iter().map(|j| j.hits).sum();
        assert_eq!(hits, ops, "every key is resident");
        let remote: u64 = reports.iter().map(|j| j.remote_ops).sum();
        remote_share = remote as f64 / ops as f64;
        let secs = reports
            .iter()
            .map(|j| j.elapsed.as_secs_f64())
            .fold(0.0, f64::max);
        runs.push(ops as f64 / secs);
    }
    e.shutdown()?;
    Ok((
        HitResult {
            name: format!("polarc in-reactor jobs, {reactors} reactor(s)"),
            ops_per_sec: median(runs.clone()),
            runs,
        },
        remote_share,
    ))
}

/// Blocking `get` from one client thread, copying out, on one reactor.
/// Returns throughput and the round-trip latency percentiles (p50, p99).
pub fn client(b: &HitBench) -> Result<(HitResult, Duration, Duration), polarc::Error> {
    let e = preloaded_engine(b, 1)?;
    if let Some(c) = core_affinity::get_core_ids().and_then(|c| c.get(1).copied()) {
        core_affinity::set_for_current(c);
    }
    let mut out = vec![0u8; b.block];
    let mut runs = vec![];
    let mut rng = SmallRng::seed_from_u64(5);
    for _ in 0..b.runs {
        let start = Instant::now();
        for _ in 0..b.ops {
            let k = index_key(rng.gen_range(0..b.keys));
            let blk = e.get(&k)?.expect("preloaded");
            out[..blk.len()].copy_from_slice(&blk);
        }
        runs.push(b.ops as f64 / start.elapsed().as_secs_f64());
    }
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..(b.ops / 4).max(1000) {
        let k = index_key(rng.gen_range(0..b.keys));
        let t = Instant::now();
        let blk = e.get(&k)?.expect("preloaded");
        out[..blk.len()].copy_from_slice(&blk);
        drop(blk);
        let _ = h.record(t.elapsed().as_nanos() as u64);
    }
    e.shutdown()?;
    std::hint::black_box(&out);
    Ok((
        HitResult {
            name: "polarc blocking get, 1 reactor + 1 client".into(),
            ops_per_sec: median(runs.clone()),
            runs,
        },
        Duration::from_nanos(h.value_at_quantile(0.5)),
        Duration::from_nanos(h.value_at_quantile(0.99)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_sizes_are_errors_not_overflows() {
        assert_eq!(rate(u64::MAX, 2, 1.0), u64::MAX as f64 * 2.0);
        let b = HitBench {
            keys: u64::MAX / 4096 + 1,
            ..HitBench::default()
        };
        assert!(arc_for(&b)
            .unwrap_err()
            .to_string()
            .contains("does not fit in 64 bits"));
        assert_eq!(arc_for(&HitBench::default()).unwrap(), 128 << 20);
    }
}
