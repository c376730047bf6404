//! Miss-ratio curves (`--mrc`): a trace replayed through the engine's own
//! [`Shard`] (the ARC the reactors run; no second implementation) at many
//! cache sizes in one go, one size per worker thread, for ARC and LRU.
//!
//! With L2 sizes (`--mrc-l2`), each ARC size is also replayed over an L2
//! ring of each size, through the shard's own L2 code: every block that
//! leaves the ARC is staged (as the engine stages it for its feeder),
//! written at once at the ring's hand, and the copies the hand passes are
//! evicted with the shard's `l2_evict`. That is the L2 of a feeder that
//! always keeps up; the engine's feeder is rate-capped (`write_max`,
//! `dwpd`), so its L2 hit ratio can only be lower. Blocks take their
//! logical size rounded up to 512 bytes on the ring (no compression).

use crate::trace::Access;
use polarc::l2::format::{Encoding, L2Loc};
use polarc::shard::{hash_key, shard_of, Flags, PickRules, Policy, Shard, StageRules};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One point of a curve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    /// `arc` or `lru`.
    pub policy: &'static str,
    /// DRAM cache size, bytes.
    pub arc_bytes: u64,
    /// L2 size, bytes (0: no L2).
    pub l2_bytes: u64,
    /// Hits (ARC and L2) over accesses.
    pub hit_ratio: f64,
    /// Accesses served from DRAM.
    pub arc_hits: u64,
    /// Accesses served from L2.
    pub l2_hits: u64,
    /// Accesses that went to the backing store.
    pub misses: u64,
    /// DRAM the shards' headers took at the end (ghosts, keys, the hash
    /// table, the L2-only table), on top of `arc_bytes` of data.
    pub header_bytes: u64,
    /// Bytes written to the L2 ring.
    pub l2_write_bytes: u64,
}

impl Point {
    /// Accesses replayed.
    pub fn accesses(&self) -> u64 {
        self.arc_hits + self.l2_hits + self.misses
    }
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct Plan {
    /// DRAM sizes.
    pub arc_sizes: Vec<u64>,
    /// L2 sizes; 0 means none.
    pub l2_sizes: Vec<u64>,
    /// Policies.
    pub policies: Vec<Policy>,
    /// Shards, routed as the engine routes keys (one per reactor): with
    /// the engine's reactor count, a point equals the engine's replay.
    pub shards: usize,
    /// Worker threads.
    pub threads: usize,
}

impl Plan {
    /// Every (policy, ARC size, L2 size) to replay. L2 sizes go with the
    /// ARC policy only (the engine's L2 sits under its ARC).
    fn jobs(&self) -> Vec<(Policy, u64, u64)> {
        let mut v = Vec::new();
        for &p in &self.policies {
            for &arc in &self.arc_sizes {
                for &l2 in &self.l2_sizes {
                    if l2 == 0 || p == Policy::Arc {
                        v.push((p, arc, l2));
                    }
                }
            }
        }
        v
    }
}

/// Replays `trace` for every point of `plan`, in parallel; `done(i, n)`
/// is called as points finish. Points come back in plan order.
pub fn curve(trace: &[Access], plan: &Plan, done: &(dyn Fn(usize, usize) + Sync)) -> Vec<Point> {
    let jobs = plan.jobs();
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Point>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..plan.threads.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(policy, arc, l2)) = jobs.get(i) else {
                    return;
                };
                let p = replay(trace, policy, arc, l2, plan.shards);
                out.lock().expect("no worker panics holding it")[i] = Some(p);
                done(finished.fetch_add(1, Ordering::Relaxed) + 1, jobs.len());
            });
        }
    });
    out.into_inner()
        .expect("no worker panicked")
        .into_iter()
        .flatten()
        .collect()
}

/// Replays `trace` on `shards` shards of `arc` bytes in all, over an L2
/// ring of `l2` bytes (0: none).
pub fn replay(trace: &[Access], policy: Policy, arc: u64, l2: u64, shards: usize) -> Point {
    let shards = shards.max(1);
    let mut s: Vec<Shard<()>> = (0..shards)
        .map(|_| Shard::new(arc / shards as u64, policy))
        .collect();
    let mut ring = (l2 > 0).then(|| Ring::new(l2));
    if ring.is_some() {
        for sh in &mut s {
            sh.l2_set_stage(StageRules {
                limit: u64::MAX,
                noprefetch: false,
                mfuonly: false,
            });
        }
    }
    let flags = if ring.is_some() {
        Flags::L2_ELIGIBLE
    } else {
        Flags::empty()
    };
    let (mut arc_hits, mut l2_hits, mut misses) = (0u64, 0u64, 0u64);
    for a in trace {
        let key = a.id.to_le_bytes();
        let h = hash_key(&key);
        let i = shard_of(h, shards);
        let sh = &mut s[i];
        if sh.lookup_for_read(h, &key).is_some() {
            arc_hits += 1;
            continue;
        }
        let idx = sh.begin_fill(h, &key);
        if sh.header(idx).l2.is_some() {
            l2_hits += 1;
        } else {
            misses += 1;
        }
        // A rejection (too large) already cleaned up; it is still counted.
        let _ = sh.complete_fill(idx, a.size, (), flags);
        if let Some(r) = &mut ring {
            r.feed(&mut s, i);
        }
    }
    let header_bytes = s
        .iter()
        .map(|sh| sh.hdr_bytes() + sh.l2_sizes().l2_only_table_bytes)
        .sum();
    let n = (arc_hits + l2_hits + misses).max(1);
    Point {
        policy: match policy {
            Policy::Arc => "arc",
            Policy::Lru => "lru",
        },
        arc_bytes: arc,
        l2_bytes: l2,
        hit_ratio: (arc_hits + l2_hits) as f64 / n as f64,
        arc_hits,
        l2_hits,
        misses,
        header_bytes,
        l2_write_bytes: ring.map_or(0, |r| r.written),
    }
}

/// The L2 device's data ring: where each copy lies, and the hand.
struct Ring {
    cap: u64,
    hand: u64,
    /// Copies by start offset: (end, key hash, shard).
    copies: BTreeMap<u64, (u64, u64, usize)>,
    written: u64,
    seq: u64,
}

const SECTOR: u64 = 512;

impl Ring {
    fn new(cap: u64) -> Ring {
        Ring {
            cap: cap / SECTOR * SECTOR,
            hand: 0,
            copies: BTreeMap::new(),
            written: 0,
            seq: 0,
        }
    }

    /// Writes what shard `i` staged (the blocks that just left its ARC).
    fn feed(&mut self, shards: &mut [Shard<()>], i: usize) {
        let picks = shards[i].l2_pick(&PickRules {
            want: u64::MAX,
            scan: 0, // staged blocks only: the lists are not scanned
            noprefetch: false,
            mfuonly: false,
        });
        for p in picks {
            let len = u64::from(p.size).next_multiple_of(SECTOR);
            if len > self.cap {
                shards[i].l2_done(p.idx, None);
                continue;
            }
            if self.hand + len > self.cap {
                self.hand = 0;
            }
            let (start, end) = (self.hand, self.hand + len);
            self.evict(shards, start, end);
            self.seq += 1;
            let loc =
                L2Loc::at(0, start, Encoding::Raw, p.size, p.size).written(self.seq, 0, p.mfu);
            shards[i].l2_done(p.idx, Some(loc));
            self.copies.insert(start, (end, p.hash, i));
            self.hand = end;
            self.written += len;
        }
    }

    /// Drops every copy overlapping `[start, end)`.
    fn evict(&mut self, shards: &mut [Shard<()>], start: u64, end: u64) {
        let before = self
            .copies
            .range(..start)
            .next_back()
            .filter(|(_, &(e, _, _))| e > start)
            .map(|(&s, _)| s);
        let overlapping: Vec<u64> = before
            .into_iter()
            .chain(self.copies.range(start..end).map(|(&s, _)| s))
            .collect();
        for s in overlapping {
            let (e, hash, shard) = self.copies.remove(&s).expect("listed above");
            shards[shard].l2_evict(0, s, e, &[hash as u32]);
        }
    }
}

/// The smallest configuration that reaches a hit ratio.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Advice {
    /// The hit ratio asked for.
    pub target: f64,
    /// The point chosen.
    pub point: Point,
    /// DRAM: the ARC's data and every header.
    pub dram_bytes: u64,
    /// Bytes written to L2 per second at `rate`, if a rate was given.
    pub l2_write_bytes_per_sec: Option<f64>,
    /// Those writes as drive writes per day of the L2.
    pub l2_dwpd: Option<f64>,
}

/// From `points`, the ARC-only and the two-tier configurations that reach
/// `target` with the least DRAM (ties: the smaller L2), each with its
/// wear at `rate` accesses per second. `None` where no point reaches it.
pub fn advise(
    points: &[Point],
    target: f64,
    rate: Option<f64>,
) -> (Option<Advice>, Option<Advice>) {
    let best = |two_tier: bool| {
        points
            .iter()
            .filter(|p| p.policy == "arc" && (p.l2_bytes > 0) == two_tier && p.hit_ratio >= target)
            .min_by_key(|p| (p.arc_bytes + p.header_bytes, p.l2_bytes))
            .map(|p| {
                let per_access = p.l2_write_bytes as f64 / p.accesses().max(1) as f64;
                let bps = rate.map(|r| r * per_access);
                Advice {
                    target,
                    point: p.clone(),
                    dram_bytes: p.arc_bytes + p.header_bytes,
                    l2_write_bytes_per_sec: bps.filter(|_| p.l2_bytes > 0),
                    l2_dwpd: bps
                        .filter(|_| p.l2_bytes > 0)
                        .map(|b| b * 86_400.0 / p.l2_bytes as f64),
                }
            })
    };
    (best(false), best(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop over `n` objects of 4 KiB, `rounds` times.
    fn looping(n: u64, rounds: u64) -> Vec<Access> {
        (0..rounds)
            .flat_map(|_| (0..n).map(|id| Access { id, size: 4096 }))
            .collect()
    }

    #[test]
    fn a_loop_larger_than_lru_misses_always_and_fits_once_the_cache_holds_it() {
        let t = looping(100, 5);
        let small = replay(&t, Policy::Lru, 50 * 4096, 0, 1);
        assert_eq!((small.arc_hits, small.misses), (0, 500));
        let big = replay(&t, Policy::Lru, 100 * 4096, 0, 1);
        assert_eq!((big.arc_hits, big.misses), (400, 100));
    }

    #[test]
    fn an_l2_under_the_arc_serves_what_the_arc_let_go() {
        let t = looping(100, 5);
        let alone = replay(&t, Policy::Arc, 20 * 4096, 0, 2);
        let tiered = replay(&t, Policy::Arc, 20 * 4096, 200 * 4096, 2);
        assert_eq!(alone.arc_hits + alone.misses, 500);
        // Every object is on the L2 once the first round has passed.
        assert!(tiered.misses <= 100 + 20, "{tiered:?}");
        assert!(tiered.l2_hits >= 300, "{tiered:?}");
        assert!(tiered.l2_write_bytes >= 100 * 4096);
        // A ring too small for the loop loses copies to its hand first.
        let small = replay(&t, Policy::Arc, 20 * 4096, 40 * 4096, 2);
        assert!(small.l2_hits < tiered.l2_hits, "{small:?}");
    }

    #[test]
    fn points_come_back_in_plan_order_whatever_the_threads() {
        let t = looping(300, 3);
        let plan = Plan {
            arc_sizes: vec![64 * 4096, 128 * 4096, 512 * 4096],
            l2_sizes: vec![0, 256 * 4096],
            policies: vec![Policy::Arc, Policy::Lru],
            shards: 2,
            threads: 3,
        };
        let pts = curve(&t, &plan, &|_, _| {});
        // LRU gets no L2 points: 3 ARC × 2 L2 + 3 LRU.
        assert_eq!(pts.len(), 9);
        for p in &pts {
            let q = replay(
                &t,
                if p.policy == "arc" {
                    Policy::Arc
                } else {
                    Policy::Lru
                },
                p.arc_bytes,
                p.l2_bytes,
                2,
            );
            assert_eq!(*p, q);
        }
        let (arc_only, tiered) = advise(&pts, 0.6, Some(1000.0));
        let a = arc_only.expect("512 blocks hold the loop");
        assert_eq!((a.point.arc_bytes, a.point.l2_bytes), (512 * 4096, 0));
        let t2 = tiered.expect("an L2 of 256 blocks helps the smaller ARCs");
        assert!(t2.point.arc_bytes < 512 * 4096, "{t2:?}");
        assert!(t2.l2_dwpd.unwrap() > 0.0);
    }
}
