//! Statistics: per-reactor snapshots and engine totals, as a struct, as
//! JSON and as Prometheus text. Names follow ZFS's arcstats.
#![forbid(unsafe_code)]

use crate::bufpool::PoolStats;
use crate::l2::L2Counters;
use crate::shard::{L2Sizes, ShardCounters, ShardSizes};
use std::fmt::Write;

/// Counters of a reactor beyond its shard's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreCounters {
    /// `read` requests.
    pub reads: u64,
    /// `get` requests.
    pub gets: u64,
    /// `insert` requests.
    pub insert_requests: u64,
    /// `invalidate` requests.
    pub invalidate_requests: u64,
    /// `prefetch` requests.
    pub prefetch_requests: u64,
    /// Reads sent to the backing store.
    pub backing_reads: u64,
    /// Backing reads that failed.
    pub backing_errors: u64,
    /// Backing reads that timed out (their callers got an error).
    pub backing_timeouts: u64,
    /// Backing reads that completed after their timeout (dropped).
    pub backing_late: u64,
    /// Prefetches dropped because `max_in_flight` fills were in flight.
    pub prefetch_dropped: u64,
    /// Fills given up by a shutdown past its time limit.
    pub abandoned_fills: u64,
    /// Invalidations given up by a shutdown past its time limit.
    pub abandoned_records: u64,
    /// Misses that joined a backing read already in flight.
    pub fills_joined: u64,
    /// Blocks served but not cached because the pool was exhausted.
    pub uncached_fills: u64,
    /// Messages taken from the ring.
    pub messages: u64,
    /// Loop iterations that did work.
    pub busy_loops: u64,
    /// Loop iterations that found nothing to do.
    pub idle_loops: u64,
    /// Times the reactor parked (adaptive idle).
    pub parks: u64,
}

/// One reactor's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReactorStats {
    /// Reactor index.
    pub id: usize,
    /// Core it is pinned to, if pinned.
    pub pinned_core: Option<usize>,
    /// True when pinning was asked for and failed.
    pub pin_failed: bool,
    /// Request and loop counters.
    pub core: CoreCounters,
    /// ARC counters of its shard.
    pub shard: ShardCounters,
    /// ARC state sizes of its shard.
    pub sizes: ShardSizes,
    /// L2 counters of this reactor (its reads, and its feeders' writes).
    pub l2: L2Counters,
    /// L2 sizes of its shard.
    pub l2_sizes: L2Sizes,
    /// L2 devices whose rebuild runs on this reactor now.
    pub l2_rebuilding: u64,
}

/// A snapshot of the whole engine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stats {
    /// ARC counters summed over shards.
    pub arc: ShardCounters,
    /// Request and loop counters summed over reactors.
    pub requests: CoreCounters,
    /// State sizes summed over shards (`p` is the sum of the shards' p).
    pub sizes: ShardSizes,
    /// Header DRAM per live header, in bytes.
    pub hdr_bytes_per_block: f64,
    /// ARC hit ratio of demand accesses, hits / (hits + misses).
    pub hit_ratio: f64,
    /// L2 counters summed over reactors (arcstats `l2_*`).
    pub l2: L2Counters,
    /// L2 sizes summed over shards.
    pub l2_sizes: L2Sizes,
    /// DRAM of L2 headers (`l2_hdr_size`): the L2-only tables plus the
    /// feeders' logs.
    pub l2_hdr_size: u64,
    /// L2 devices whose rebuild from their log is still running (a gauge):
    /// blocks not yet rebuilt are misses meanwhile.
    pub l2_rebuilding: u64,
    /// DRAM per L2-only block: its table entry (24 B plus the table's
    /// slack) plus its 4-byte log entry. ZFS's L2-only header is 96 B.
    pub l2_hdr_bytes_per_block: f64,
    /// L2 hits over fills that looked for an L2 copy.
    pub l2_hit_ratio: f64,
    /// Demand accesses served by the ARC or L2, over all demand accesses.
    pub overall_hit_ratio: f64,
    /// Buffer pool.
    pub pool: PoolStats,
    /// Reactors that failed to pin.
    pub pin_failures: usize,
    /// Per-reactor detail.
    pub reactors: Vec<ReactorStats>,
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("stats serialise")
}

fn add_counters(a: &mut ShardCounters, b: &ShardCounters) {
    add_fields!(
        a,
        b,
        ShardCounters {
            hits,
            misses,
            mru_hits,
            mfu_hits,
            mru_ghost_hits,
            mfu_ghost_hits,
            inserts,
            evict_mru,
            evict_mfu,
            evicted_bytes,
            ghost_deleted,
            too_large,
            invalidates,
            l2_writing_evicted,
            l2_writing_invalidated,
            l2_write_failed_evicted,
            l2_staged,
            l2_stage_dropped
        }
    );
}

fn add_core(a: &mut CoreCounters, b: &CoreCounters) {
    add_fields!(
        a,
        b,
        CoreCounters {
            reads,
            gets,
            insert_requests,
            invalidate_requests,
            prefetch_requests,
            backing_reads,
            backing_errors,
            backing_timeouts,
            backing_late,
            prefetch_dropped,
            abandoned_fills,
            abandoned_records,
            fills_joined,
            uncached_fills,
            messages,
            busy_loops,
            idle_loops,
            parks
        }
    );
}

impl Stats {
    pub(crate) fn from_parts(reactors: Vec<ReactorStats>, pool: PoolStats) -> Stats {
        let mut arc = ShardCounters::default();
        let mut requests = CoreCounters::default();
        let mut sizes = ShardSizes::default();
        let mut l2 = L2Counters::default();
        let mut l2s = L2Sizes::default();
        for r in &reactors {
            l2.add(&r.l2);
            add_fields!(
                l2s,
                &r.l2_sizes,
                L2Sizes {
                    l2_blocks,
                    l2_size,
                    l2_asize,
                    l2_mru_asize,
                    l2_mfu_asize,
                    l2_only_blocks,
                    l2_only_table_bytes
                }
            );
            add_counters(&mut arc, &r.shard);
            add_core(&mut requests, &r.core);
            add_fields!(
                sizes,
                &r.sizes,
                ShardSizes {
                    c,
                    p,
                    mru_bytes,
                    mfu_bytes,
                    mru_ghost_bytes,
                    mfu_ghost_bytes,
                    resident_blocks,
                    headers,
                    hdr_bytes
                }
            );
        }
        let accesses = arc.hits + arc.misses;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let l2_looked = l2.l2_hits
            + l2.l2_misses
            + l2.l2_rw_clash
            + l2.l2_norw_skips
            + l2.l2_cksum_bad
            + l2.l2_io_error;
        let l2_hdr_size = l2s.l2_only_table_bytes + l2.l2_log_bytes;
        Stats {
            l2_hdr_size,
            l2_hdr_bytes_per_block: if l2s.l2_only_blocks == 0 {
                0.0
            } else {
                l2s.l2_only_table_bytes as f64 / l2s.l2_only_blocks as f64 + 4.0
            },
            l2_hit_ratio: ratio(l2.l2_hits, l2_looked),
            l2_rebuilding: reactors.iter().map(|r| r.l2_rebuilding).sum(),
            overall_hit_ratio: ratio(arc.hits + l2.l2_hits.min(arc.misses), accesses),
            l2,
            l2_sizes: l2s,
            hdr_bytes_per_block: if sizes.headers == 0 {
                0.0
            } else {
                sizes.hdr_bytes as f64 / sizes.headers as f64
            },
            hit_ratio: if accesses == 0 {
                0.0
            } else {
                arc.hits as f64 / accesses as f64
            },
            pin_failures: reactors.iter().filter(|r| r.pin_failed).count(),
            arc,
            requests,
            sizes,
            pool,
            reactors,
        }
    }

    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("stats serialise")
    }

    /// The snapshot in Prometheus text exposition format. Totals are
    /// unlabelled; per-reactor counters carry a `reactor` label.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut emit = |name: &str, kind: &str, help: &str, values: &[(Option<usize>, f64)]| {
            let _ = writeln!(
                out,
                "# HELP polarc_{name} {help}\n# TYPE polarc_{name} {kind}"
            );
            for (r, v) in values {
                match r {
                    Some(r) => {
                        let _ = writeln!(out, "polarc_{name}{{reactor=\"{r}\"}} {v}");
                    }
                    None => {
                        let _ = writeln!(out, "polarc_{name} {v}");
                    }
                }
            }
        };
        // Counters: the total, then one labelled line per reactor.
        let mut counters =
            |prefix: &str, help: &str, total: serde_json::Value, per: Vec<serde_json::Value>| {
                for (k, v) in total.as_object().expect("object") {
                    let mut vals = vec![(None, v.as_f64().unwrap_or(0.0))];
                    for (r, rv) in self.reactors.iter().zip(&per) {
                        vals.push((Some(r.id), rv[k].as_f64().unwrap_or(0.0)));
                    }
                    emit(
                        &format!("{prefix}{k}_total"),
                        "counter",
                        &format!("{help} {k}"),
                        &vals,
                    );
                }
            };
        counters(
            "arc_",
            "ARC",
            json(&self.arc),
            self.reactors.iter().map(|r| json(&r.shard)).collect(),
        );
        counters(
            "",
            "reactor",
            json(&self.requests),
            self.reactors.iter().map(|r| json(&r.core)).collect(),
        );
        counters(
            "",
            "L2",
            json(&self.l2),
            self.reactors.iter().map(|r| json(&r.l2)).collect(),
        );
        let json = serde_json::to_value(self.sizes).expect("serialise");
        for (k, v) in json.as_object().expect("object") {
            emit(
                &format!("arc_{k}"),
                "gauge",
                &format!("ARC size {k}"),
                &[(None, v.as_f64().unwrap_or(0.0))],
            );
        }
        let json = serde_json::to_value(self.l2_sizes).expect("serialise");
        for (k, v) in json.as_object().expect("object") {
            emit(
                k,
                "gauge",
                &format!("L2 size {k}"),
                &[(None, v.as_f64().unwrap_or(0.0))],
            );
        }
        let json = serde_json::to_value(self.pool).expect("serialise");
        for (k, v) in json.as_object().expect("object") {
            let v = v
                .as_f64()
                .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
                .unwrap_or(0.0);
            emit(
                &format!("pool_{k}"),
                "gauge",
                &format!("buffer pool {k}"),
                &[(None, v)],
            );
        }
        emit(
            "l2_rebuilding",
            "gauge",
            "L2 devices rebuilding from their log",
            &[(None, self.l2_rebuilding as f64)],
        );
        emit(
            "hit_ratio",
            "gauge",
            "demand hit ratio",
            &[(None, self.hit_ratio)],
        );
        emit(
            "hdr_bytes_per_block",
            "gauge",
            "header DRAM per block",
            &[(None, self.hdr_bytes_per_block)],
        );
        emit(
            "pin_failures",
            "gauge",
            "reactors that failed to pin",
            &[(None, self.pin_failures as f64)],
        );
        out
    }
}
