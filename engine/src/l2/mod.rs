//! The L2 tier: a ring log of compressed blocks on one or more fast
//! devices, fed from the cold ends of the ARC lists (the seed, rebuilt as
//! reactor messages; see `docs/l2.md` and `docs/format.md`).
//!
//! * Every reactor opens its own queue on every L2 device and reads its
//!   own shard's L2 hits on it ([`read`]).
//! * One reactor per device runs its [`feeder`]: it asks every shard for
//!   blocks (`L2Scan`), the replies are the deferred write list
//!   (`L2Picked`); it drops the L2 copies in the range ahead of the write
//!   hand (`L2Evict`, acknowledged once no read of the range is in
//!   flight), packs the blocks into large aligned writes, and on completion
//!   tells the owning shards where their blocks landed (`L2Done`, the
//!   deferred done list). Write buffers go back to the pool through the
//!   free-on-write ring only after their write completed.
#![forbid(unsafe_code)]

pub(crate) mod feeder;
pub(crate) mod read;

use crate::device::{BlockDevice, DeviceInfo, DeviceQueue};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// The L2 knobs, with ZFS's meaning (`l2arc_*` module parameters).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct L2Config {
    /// Write rate cap per device, bytes per second (`l2arc_write_max`).
    /// Default: 256 MiB/s. ZFS's 8 MiB dates from 2008-era SSDs; an NVMe
    /// device takes far more, and a feeder slower than the ARC's eviction
    /// rate loses most blocks before it can copy them (zipf-1m at 310k
    /// ops/s: hit ratio 0.879 with 128 MiB/s, 0.914 with 256). Use `dwpd`
    /// to bound device wear.
    pub write_max: u64,
    /// Extra write rate while the ARC is warming up, i.e. before any shard
    /// has evicted (`l2arc_write_boost`). Default: 128 MiB/s.
    pub write_boost: u64,
    /// How deep to scan each list's cold end, in multiples of the write
    /// target (`l2arc_headroom`). Default: 2.
    pub headroom: u64,
    /// Time between feeds (`l2arc_feed_secs`). Default: 200 ms, against
    /// ZFS's 1 s: a DRAM tier of a few hundred MiB turns over in seconds
    /// under load, and blocks evicted between feeds are lost to L2.
    pub feed_interval: Duration,
    /// Time between feeds while the last feed wrote over half its target
    /// (`l2arc_feed_min_ms` with `l2arc_feed_again`). Default: 50 ms.
    pub feed_min_interval: Duration,
    /// Do not copy blocks that were prefetched and never read on demand
    /// (`l2arc_noprefetch`). Default: true.
    pub noprefetch: bool,
    /// Copy MFU blocks only (`l2arc_mfuonly`). Default: false.
    pub mfuonly: bool,
    /// No L2 reads on a device while the feeder writes to it
    /// (`l2arc_norw`). Default: false, the seed's change.
    pub norw: bool,
    /// LZ4-compress blocks on the device. Default: true.
    pub compress: bool,
    /// Drive-writes-per-day budget: caps the write rate at
    /// `dwpd × capacity / 86400` bytes per second. Default: none.
    pub dwpd: Option<f64>,
    /// Requests in flight per reactor per device. Default: 128.
    pub queue_depth: usize,
    /// Bytes per feed write (rounded down to a size class, at most the
    /// largest block). Default: 1 MiB.
    pub write_size: usize,
    /// Feed writes in flight per device. Default: 4.
    pub writes_in_flight: usize,
    /// Keep eligible blocks that leave the ARC before the feeder reached
    /// them, up to 1/8 of the ARC, until the next feed (a polarc addition;
    /// see `shard::l2`). Default: true.
    pub stage_evicted: bool,
}

impl Default for L2Config {
    fn default() -> Self {
        L2Config {
            write_max: 256 << 20,
            write_boost: 128 << 20,
            headroom: 2,
            feed_interval: Duration::from_millis(200),
            feed_min_interval: Duration::from_millis(50),
            noprefetch: true,
            mfuonly: false,
            norw: false,
            compress: true,
            dwpd: None,
            queue_depth: 128,
            write_size: 1 << 20,
            writes_in_flight: 4,
            stage_evicted: true,
        }
    }
}

impl L2Config {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<(), String> {
        if self.write_max == 0 {
            return Err("l2 write_max must be above zero".into());
        }
        if self.headroom == 0 {
            return Err("l2 headroom must be at least 1".into());
        }
        if self.feed_interval.is_zero() || self.feed_min_interval > self.feed_interval {
            return Err(
                "l2 feed interval must be above zero and at least the minimum interval".into(),
            );
        }
        if self.queue_depth == 0 || self.writes_in_flight == 0 {
            return Err("l2 queue_depth and writes_in_flight must be at least 1".into());
        }
        if let Some(d) = self.dwpd {
            if !(d.is_finite() && d > 0.0) {
                return Err(format!("l2 dwpd {d} must be a positive number"));
            }
        }
        Ok(())
    }
}

/// L2 counters of one reactor; names follow arcstats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct L2Counters {
    /// Fills served from an L2 device.
    pub l2_hits: u64,
    /// Fills that found no usable L2 copy.
    pub l2_misses: u64,
    /// Feed cycles started.
    pub l2_feeds: u64,
    /// Stored bytes read from L2 for hits.
    pub l2_read_bytes: u64,
    /// Bytes written to L2 devices.
    pub l2_write_bytes: u64,
    /// Feed writes submitted.
    pub l2_writes_sent: u64,
    /// Feed writes completed successfully.
    pub l2_writes_done: u64,
    /// Feed writes that failed; their blocks got no L2 copy.
    pub l2_writes_error: u64,
    /// Fills of a block still being written to L2, served from the
    /// backing store instead.
    pub l2_rw_clash: u64,
    /// L2 reads in flight on a range the feeder was about to overwrite
    /// (the feeder waited for them).
    pub l2_evict_reading: u64,
    /// L2 copies dropped ahead of the hand while the block was in the ARC.
    pub l2_evict_l1cached: u64,
    /// L2 copies dropped ahead of the write hand.
    pub l2_evicted: u64,
    /// Write buffers returned to the pool through the free-on-write ring.
    pub l2_free_on_write: u64,
    /// Feed cycles cut short because the buffer pool ran low.
    pub l2_abort_lowmem: u64,
    /// L2 reads whose checksum did not match (served from the backing store).
    pub l2_cksum_bad: u64,
    /// L2 reads that failed with an I/O error (served from the backing store).
    pub l2_io_error: u64,
    /// Blocks stored LZ4-compressed.
    pub l2_compress_successes: u64,
    /// Blocks stored raw because compression saved less than a sector.
    pub l2_compress_failures: u64,
    /// All-zero blocks, stored as EMPTY.
    pub l2_compress_zeros: u64,
    /// Fills that skipped L2 because the feeder was writing (`norw`).
    pub l2_norw_skips: u64,
    /// Bytes of the feeders' logs (4 B per written block).
    pub l2_log_bytes: u64,
    /// Logical bytes the feeders packed (before compression).
    pub l2_feed_bytes: u64,
    /// Nanoseconds the feeders spent packing (LZ4, checksums, layout,
    /// submission): `l2_feed_bytes / l2_feed_ns` is the feed throughput
    /// of one core, uncapped.
    pub l2_feed_ns: u64,
}

/// Adds `b` to `a`, field by field.
pub(crate) fn add_counters(a: &mut L2Counters, b: &L2Counters) {
    crate::stats::add_fields!(
        a,
        b,
        L2Counters {
            l2_hits,
            l2_misses,
            l2_feeds,
            l2_read_bytes,
            l2_write_bytes,
            l2_writes_sent,
            l2_writes_done,
            l2_writes_error,
            l2_rw_clash,
            l2_evict_reading,
            l2_evict_l1cached,
            l2_evicted,
            l2_free_on_write,
            l2_abort_lowmem,
            l2_cksum_bad,
            l2_io_error,
            l2_compress_successes,
            l2_compress_failures,
            l2_compress_zeros,
            l2_norw_skips,
            l2_log_bytes,
            l2_feed_bytes,
            l2_feed_ns
        }
    );
}

/// The checksum of a block's stored bytes, keyed by its key's tag
/// ([`crate::shard::key_tag`]): xxh3-64 folded to 32 bits.
pub fn checksum(tag: u64, stored: &[u8]) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(stored, tag);
    (h ^ (h >> 32)) as u32
}

/// What every reactor knows of one L2 device.
pub(crate) struct DevShared {
    pub device: Arc<dyn BlockDevice>,
    pub info: DeviceInfo,
    /// The reactor that feeds it.
    pub feeder: usize,
    /// Feed writes in flight (read by `norw`).
    pub writes_in_flight: AtomicUsize,
}

/// One reactor's queue on one device.
pub(crate) struct DevQueue {
    pub shared: Arc<DevShared>,
    pub queue: Box<dyn DeviceQueue>,
}

/// Tags of feed writes have this bit set; tags of reads do not.
pub(crate) const WRITE_TAG: u64 = 1 << 63;

/// A reactor's L2 state.
pub(crate) struct L2Core {
    pub cfg: Arc<L2Config>,
    pub devs: Vec<DevQueue>,
    pub reads: read::Reads,
    pub feeders: Vec<feeder::Feeder>,
    pub counters: L2Counters,
    /// Scratch for completions.
    pub done: Vec<crate::device::Completion>,
    /// A kick was sent since the last scan.
    pub kicked: bool,
    /// Loop iterations, for reading the clock only now and then.
    pub clock_tick: u32,
}

/// What a reactor needs to open its L2 queues.
#[derive(Clone)]
pub(crate) struct L2Setup {
    pub cfg: Arc<L2Config>,
    pub devs: Vec<Arc<DevShared>>,
}

impl L2Core {
    /// Opens reactor `me`'s queue on every device and creates the feeders
    /// of the devices it feeds. Runs on the reactor's own thread: a queue
    /// belongs to the thread that polls it.
    pub(crate) fn open(
        setup: L2Setup,
        me: usize,
        shards: usize,
        pool: &crate::bufpool::BufPool,
    ) -> Result<L2Core, crate::device::DeviceError> {
        let mut devs = Vec::new();
        let mut feeders = Vec::new();
        for (i, shared) in setup.devs.into_iter().enumerate() {
            let mut depth = setup.cfg.queue_depth;
            if shared.feeder == me {
                depth += setup.cfg.writes_in_flight;
                feeders.push(feeder::Feeder::new(
                    i as u8,
                    shared.clone(),
                    setup.cfg.clone(),
                    shards,
                    pool,
                ));
            }
            let mut queue = shared.device.open_queue(depth)?;
            queue.register_pool(pool)?;
            devs.push(DevQueue { shared, queue });
        }
        Ok(L2Core {
            cfg: setup.cfg,
            devs,
            reads: read::Reads::default(),
            feeders,
            counters: L2Counters::default(),
            done: Vec::new(),
            kicked: false,
            clock_tick: 0,
        })
    }

    /// True when no L2 I/O of this reactor is in flight and its feeders
    /// are idle.
    pub fn quiet(&self) -> bool {
        self.devs.iter().all(|d| d.queue.in_flight() == 0)
            && self.feeders.iter().all(feeder::Feeder::idle)
    }
}

#[cfg(test)]
mod sim;
