//! Validation of the engine's ARC (the very `Shard` the reactors run)
//! against published results on real traces:
//! * OLTP (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement
//!   Cache", USENIX FAST 2003), Table IV;
//! * CloudPhysics, libCacheSim's byte-capacity LRU miss counts.
//!
//! The traces live in `../shared/traces/` (or `$POLARC_TRACES`) and are not
//! part of the project; without them these tests print a skip line.

use polarc::shard::Policy;
use polarc_perf::mrc::{self, Plan};
use polarc_perf::trace::{self, Access, Format};
use std::path::PathBuf;

fn trace_path(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("POLARC_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"));
    let p = dir.join(name);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "skipped: trace {} not found (set POLARC_TRACES)",
            p.display()
        );
        None
    }
}

/// Replays `trace` through `shards` shards of total capacity `bytes`,
/// routing keys as the engine does, on the MRC path (`--mrc`). Returns
/// (hits, misses).
fn replay(trace: &[Access], bytes: u64, policy: Policy, shards: usize) -> (u64, u64) {
    let p = mrc::replay(trace, policy, bytes, 0, shards);
    (p.arc_hits, p.misses)
}

/// Every size of `sizes` for ARC and LRU at once, in parallel, as
/// `--mrc` runs them: (LRU (hits, misses), ARC (hits, misses)) per size.
fn curve(trace: &[Access], sizes: &[u64]) -> Vec<((u64, u64), (u64, u64))> {
    let plan = Plan {
        arc_sizes: sizes.to_vec(),
        l2_sizes: vec![0],
        policies: vec![Policy::Lru, Policy::Arc],
        shards: 1,
        threads: 2,
    };
    let pts = mrc::curve(trace, &plan, &|_, _| {});
    let (lru, arc) = pts.split_at(sizes.len());
    lru.iter()
        .zip(arc)
        .map(|(l, a)| {
            assert_eq!(
                (l.policy, a.policy, l.arc_bytes),
                ("lru", "arc", a.arc_bytes)
            );
            ((l.arc_hits, l.misses), (a.arc_hits, a.misses))
        })
        .collect()
}

fn ratio((h, m): (u64, u64)) -> f64 {
    100.0 * h as f64 / (h + m) as f64
}

/// Table IV of the ARC paper: (c in 512-byte pages, LRU %, ARC %).
const OLTP_TABLE_IV: [(u64, f64, f64); 5] = [
    (1000, 32.83, 38.93),
    (2000, 42.47, 46.08),
    (5000, 53.65, 55.25),
    (10000, 60.70, 61.87),
    (15000, 64.63, 65.40),
];

#[test]
fn oltp_reproduces_arc_paper_table_iv() {
    let Some(path) = trace_path("OLTP.lis.zst") else {
        return;
    };
    let t = trace::read_all(&path, Format::Lis).unwrap();
    assert_eq!(t.len(), 914_145, "page requests in OLTP");
    let sizes: Vec<u64> = OLTP_TABLE_IV.iter().map(|&(c, _, _)| c * 512).collect();
    for ((c, lru_paper, arc_paper), (lru, arc)) in OLTP_TABLE_IV.into_iter().zip(curve(&t, &sizes))
    {
        let (lru, arc) = (ratio(lru), ratio(arc));
        println!(
            "OLTP c={c:>5}: LRU {lru:.4} (paper {lru_paper}), ARC {arc:.4} (paper {arc_paper})"
        );
        assert!(
            (lru - lru_paper).abs() <= 0.01,
            "LRU at c={c}: {lru:.4} vs {lru_paper}"
        );
        assert!(
            (arc - arc_paper).abs() <= 0.05,
            "ARC at c={c}: {arc:.4} vs {arc_paper}"
        );
    }
}

/// Sharding splits the capacity evenly over shards and routes keys by
/// hash, as the engine does. This measures what that costs on OLTP (the
/// figures are in docs/sharding.md) and checks it stays small.
#[test]
fn oltp_sharding_effect() {
    let Some(path) = trace_path("OLTP.lis.zst") else {
        return;
    };
    let t = trace::read_all(&path, Format::Lis).unwrap();
    for (c, _, _) in OLTP_TABLE_IV {
        let one = ratio(replay(&t, c * 512, Policy::Arc, 1));
        let mut line = format!("OLTP ARC c={c:>5}: 1 shard {one:.2}");
        for n in [2, 4, 8] {
            let r = ratio(replay(&t, c * 512, Policy::Arc, n));
            line += &format!(", {n} shards {r:.2}");
            assert!(
                (r - one).abs() < 1.5,
                "{n} shards at c={c}: {r:.2} vs {one:.2}"
            );
        }
        println!("{line}");
    }
}

const MIB: u64 = 1 << 20;
/// libCacheSim's LRU miss counts on cloudPhysicsIO, 128..1024 MiB.
const CLOUDPHYSICS_LRU_MISSES: [u64; 8] = [93374, 89783, 83572, 81722, 72494, 72104, 71972, 71704];
/// libCacheSim's ARC variant, for reference only.
const CLOUDPHYSICS_ARC_MISSES: [u64; 8] = [90252, 85861, 78168, 74297, 67381, 65685, 64439, 64772];

#[test]
fn cloudphysics_byte_capacity_matches_libcachesim() {
    let Some(path) = trace_path("cloudPhysicsIO.oracleGeneral.bin") else {
        return;
    };
    let t = trace::read_all(&path, Format::Oracle).unwrap();
    assert_eq!(t.len(), 113_872, "requests in cloudPhysicsIO");
    let mut arc_better = 0;
    let sizes: Vec<u64> = (128..=1024).step_by(128).map(|m| m * MIB).collect();
    for (i, ((_, lru), (_, arc))) in curve(&t, &sizes).into_iter().enumerate() {
        let mib = sizes[i] / MIB;
        println!(
            "cloudPhysics {mib:>4} MiB: LRU misses {lru} (libCacheSim {}), ARC misses {arc} (libCacheSim's ARC {})",
            CLOUDPHYSICS_LRU_MISSES[i], CLOUDPHYSICS_ARC_MISSES[i]
        );
        assert_eq!(lru, CLOUDPHYSICS_LRU_MISSES[i], "LRU misses at {mib} MiB");
        if arc < lru {
            arc_better += 1;
        }
    }
    assert!(
        arc_better >= 6,
        "ARC beat LRU at only {arc_better} of 8 sizes"
    );
}
