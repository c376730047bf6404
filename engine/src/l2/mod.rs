//! The L2 tier: a ring log of compressed blocks on one or more fast
//! devices, fed from the cold ends of the ARC lists (the seed, rebuilt as
//! reactor messages; see `docs/l2.md` and `docs/format.md`).
//!
//! * [`format`]: what the bytes on a device are, and where blocks go.
//! * [`msg`]: the protocol between a device's feeder and the shards.
//! * `read`: every reactor opens its own queue on every L2 device and
//!   reads its own shard's L2 hits on it; evict messages wait for the
//!   reads of their range.
//! * `feeder`: one reactor per device runs its feeder, on a queue of its
//!   own. It asks every shard for blocks (`Scan`); the replies are the
//!   deferred write list (`Picked`). It drops the L2 copies in the range
//!   ahead of the write hand (`Evict`, acknowledged once no read of the
//!   range is in flight), packs the blocks into large aligned writes, and
//!   on completion tells the owning shards where their blocks landed
//!   (`Done`, the deferred done list). Write buffers go back to the pool
//!   through the free-on-write ring only after their write completed.
//!
//! [`L2`] is one reactor's part of all this; the reactor runs it through
//! pollers and timers that the core registers.
#![forbid(unsafe_code)]

pub mod compress;
pub(crate) mod feeder;
pub mod format;
pub(crate) mod journal;
pub(crate) mod msg;
pub(crate) mod prepare;
pub(crate) mod read;
pub(crate) mod rebuild;
pub(crate) mod wear;

pub(crate) use msg::{L2Link, L2Msg};

use crate::bufpool::{Buf, BufPool};
use crate::device::deadline::{DeadlineQueue, Deadlines, Health};
use crate::device::{BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue, MAX_TICK};
use crate::shard::Shard;
use feeder::Feeder;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Drive-writes-per-day budget: caps what is written to the device,
    /// data, padding, log and headers (`l2_dev_write_bytes`), at
    /// `dwpd × capacity / 86400` bytes per second on average. Default:
    /// none.
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
    /// Keep a log on each device, so that its blocks come back after a
    /// restart or a crash (docs/l2.md). Default: true.
    pub persistent: bool,
    /// What to do with what a device holds at start-up. Default:
    /// [`L2Start::Resume`].
    pub start: L2Start,
    /// The share of each device given to the log ring, for devices
    /// formatted from now on (24 bytes per block: 1% holds the log of
    /// blocks of 2.4 KiB or more on the device). Default: 0.01.
    pub log_share: f64,
    /// How long an L2 read may take before its fill is served from the
    /// backing store instead (the L2 copy is kept; the late completion is
    /// dropped). Default: 25 ms: a few ms above the read p99 of a busy
    /// device (NVMe under load: 1–5 ms; a virtual disk: ~10 ms, see
    /// docs/BENCHMARKS.md), and well under what a backing read costs when
    /// the device is stuck for good.
    pub read_deadline: Duration,
    /// How long an L2 write or flush may take before it counts as failed.
    /// Default: 2 s: above a flush on an SSD without power-loss protection
    /// (tens to hundreds of ms), and short enough that an invalidation
    /// waiting on a stuck device answers within seconds.
    pub write_deadline: Duration,
    /// The longest one step of the L2's work runs on a reactor before the
    /// reactor serves its requests: a feeder packing (LZ4, checksums), a
    /// shard picking blocks for a scan, or dropping the copies of an
    /// evicted range. Longer work is cut into slices. Default: 20 µs,
    /// about eight 4 KiB blocks of LZ4 here (see docs/BENCHMARKS.md for
    /// its effect on latency).
    pub poll_budget: Duration,
    /// TRIM ahead of the write hand (OpenZFS's `l2arc_trim_ahead`): each
    /// cycle also evicts, and then discards, this percentage of what it
    /// writes beyond its region, so the flash under the cache learns early
    /// which blocks it may erase. 0 (the default) turns it off. A device
    /// that cannot discard says so once, and trimming stops for it.
    pub trim_ahead: u32,
}

/// What to do with what an L2 device holds at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L2Start {
    /// Rebuild a polarc device's blocks from its log; format a new
    /// (all-zero) device; refuse a device holding anything else.
    #[default]
    Resume,
    /// Start empty: format the device, dropping what it holds, but refuse
    /// one holding data that is not polarc's.
    Fresh,
    /// Format the device whatever it holds.
    Overwrite,
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
            persistent: true,
            start: L2Start::Resume,
            log_share: 0.01,
            read_deadline: Duration::from_millis(25),
            write_deadline: Duration::from_secs(2),
            poll_budget: Duration::from_micros(20),
            trim_ahead: 0,
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
        if self.read_deadline.is_zero() || self.write_deadline.is_zero() {
            return Err("l2 read_deadline and write_deadline must be above zero".into());
        }
        if !(self.log_share > 0.0 && self.log_share <= 0.5) {
            return Err(format!(
                "l2 log_share {} must be above 0 and at most 0.5",
                self.log_share
            ));
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
    /// Bytes of feed writes completed on L2 devices (data and padding).
    pub l2_write_bytes: u64,
    /// Every byte submitted as a write to L2 devices: feed writes (data
    /// and padding), log blocks and headers. What the device wears by,
    /// and what the `dwpd` budget counts.
    pub l2_dev_write_bytes: u64,
    /// Bytes of blocks as stored (after compression) packed into feed
    /// writes. `l2_dev_write_bytes / l2_stored_bytes` is the L2's write
    /// amplification.
    pub l2_stored_bytes: u64,
    /// Bytes of the devices' data rings (a gauge): what `dwpd` is a
    /// fraction of per day.
    pub l2_data_capacity: u64,
    /// Discards (TRIM) issued ahead of the write hand (`trim_ahead`).
    pub l2_trims: u64,
    /// Bytes those discards covered.
    pub l2_trim_bytes: u64,
    /// Discards that failed; a device that cannot discard is not asked
    /// again.
    pub l2_trim_errors: u64,
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
    /// L2 reads past `read_deadline` (served from the backing store; the
    /// copy is kept).
    pub l2_read_timeouts: u64,
    /// L2 writes and flushes past `write_deadline` (failed).
    pub l2_write_timeouts: u64,
    /// Timed-out requests that completed later; their buffers were held
    /// until then.
    pub l2_late_completions: u64,
    /// Requests that timed out and are still on a device (a gauge).
    pub l2_io_held: u64,
    /// Times a device was marked degraded (timeouts in a row).
    pub l2_degraded_episodes: u64,
    /// Times a degraded device answered again.
    pub l2_degraded_recoveries: u64,
    /// Devices degraded now, counted by their feeders (a gauge).
    pub l2_degraded: u64,
    /// Fills that skipped a degraded device's copy (served from the
    /// backing store; the copy is kept).
    pub l2_degraded_skips: u64,
    /// Probe reads of degraded devices.
    pub l2_probes: u64,
    /// Fills that found no pool buffer for an L2 read or its unpacking
    /// (served from the backing store; the copy is kept).
    pub l2_read_lowmem: u64,
    /// L2 reads refused by a full device queue (served from the backing
    /// store; the copy is kept).
    pub l2_queue_full: u64,
    /// Requests in flight abandoned at a shutdown past its time limit.
    pub l2_abandoned: u64,
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
    /// Times a feeder stopped packing a write buffer at its poll budget
    /// (to go on at the next poll).
    pub l2_feed_slices: u64,
    /// Feed scans a shard cut into slices at the poll budget (it served
    /// its queued requests between them).
    pub l2_pick_slices: u64,
    /// Evict messages a shard cut into slices at the poll budget.
    pub l2_evict_slices: u64,
    /// Polls at which a rebuild stopped applying its log at the poll
    /// budget.
    pub l2_rebuild_slices: u64,
    /// Nanoseconds the feeders spent packing (LZ4, checksums, layout,
    /// submission): `l2_feed_bytes / l2_feed_ns` is the feed throughput
    /// of one core, uncapped.
    pub l2_feed_ns: u64,
    /// Log blocks written.
    pub l2_log_writes: u64,
    /// Bytes of log blocks written.
    pub l2_log_write_bytes: u64,
    /// Log block, flush and header writes that failed (and were retried).
    pub l2_log_write_errors: u64,
    /// Devices whose log was given up after repeated failures.
    pub l2_log_failures: u64,
    /// Flushes.
    pub l2_flushes: u64,
    /// Header writes.
    pub l2_header_writes: u64,
    /// Invalidation and replacement records logged.
    pub l2_records: u64,
    /// Group commits that made records durable.
    pub l2_record_commits: u64,
    /// Devices rebuilt from their log at start-up.
    pub l2_rebuild_success: u64,
    /// Log blocks taken by rebuilds.
    pub l2_rebuild_log_blks: u64,
    /// Bytes of log the rebuilds read.
    pub l2_rebuild_log_bytes: u64,
    /// Entries rebuilt (sent to the shards).
    pub l2_rebuild_bufs: u64,
    /// Of which the shards kept: L2-only, or on a header.
    pub l2_rebuild_kept: u64,
    /// Of which joined a header already in the ARC.
    pub l2_rebuild_bufs_precached: u64,
    /// Entries and writes dropped: overwritten, invalidated, or outside
    /// what this engine holds.
    pub l2_rebuild_stale: u64,
    /// Log blocks that failed their checksum or did not parse.
    pub l2_rebuild_cksum_lb_errors: u64,
    /// Log reads that failed.
    pub l2_rebuild_io_errors: u64,
    /// Logical bytes of the entries kept.
    pub l2_rebuild_size: u64,
    /// Device bytes of the entries kept.
    pub l2_rebuild_asize: u64,
    /// Nanoseconds the rebuilds took, device by device, summed.
    pub l2_rebuild_ns: u64,
}

impl L2Counters {
    /// Adds `b`, field by field.
    pub(crate) fn add(&mut self, b: &L2Counters) {
        add_fields!(
            self,
            b,
            L2Counters {
                l2_hits,
                l2_misses,
                l2_feeds,
                l2_read_bytes,
                l2_write_bytes,
                l2_dev_write_bytes,
                l2_stored_bytes,
                l2_data_capacity,
                l2_trims,
                l2_trim_bytes,
                l2_trim_errors,
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
                l2_read_timeouts,
                l2_write_timeouts,
                l2_late_completions,
                l2_io_held,
                l2_degraded_episodes,
                l2_degraded_recoveries,
                l2_degraded,
                l2_degraded_skips,
                l2_probes,
                l2_read_lowmem,
                l2_queue_full,
                l2_abandoned,
                l2_compress_successes,
                l2_compress_failures,
                l2_compress_zeros,
                l2_norw_skips,
                l2_log_bytes,
                l2_feed_bytes,
                l2_feed_slices,
                l2_pick_slices,
                l2_evict_slices,
                l2_rebuild_slices,
                l2_feed_ns,
                l2_log_writes,
                l2_log_write_bytes,
                l2_log_write_errors,
                l2_log_failures,
                l2_flushes,
                l2_header_writes,
                l2_records,
                l2_record_commits,
                l2_rebuild_success,
                l2_rebuild_log_blks,
                l2_rebuild_log_bytes,
                l2_rebuild_bufs,
                l2_rebuild_kept,
                l2_rebuild_bufs_precached,
                l2_rebuild_stale,
                l2_rebuild_cksum_lb_errors,
                l2_rebuild_io_errors,
                l2_rebuild_size,
                l2_rebuild_asize,
                l2_rebuild_ns
            }
        );
    }
}

/// Adds what a queue's deadlines did to `c`.
pub(crate) fn add_deadlines(c: &mut L2Counters, q: &DeadlineQueue) {
    let d = q.counters();
    c.l2_read_timeouts += d.read_timeouts;
    c.l2_write_timeouts += d.write_timeouts;
    c.l2_late_completions += d.late;
    c.l2_degraded_episodes += d.degraded;
    c.l2_io_held += q.abandoned() as u64;
}

/// What every reactor knows of one L2 device.
pub(crate) struct DevShared {
    pub device: Arc<dyn BlockDevice>,
    pub info: DeviceInfo,
    /// The reactor that feeds it.
    pub feeder: usize,
    /// Feed writes in flight (read by `norw`).
    pub writes_in_flight: AtomicUsize,
    /// Whether it answers in time, shared by all its queues.
    pub health: Arc<Health>,
    /// Its header as the engine found or wrote it, and whether its log
    /// is to be rebuilt.
    pub start: prepare::Prepared,
}

/// One reactor's queue on one device.
pub(crate) struct DevQueue {
    pub shared: Arc<DevShared>,
    pub queue: DeadlineQueue,
}

impl DevShared {
    /// Opens a queue of `depth` on the device with deadlines `limits`,
    /// registered with `pool`.
    pub(crate) fn open_queue(
        &self,
        depth: usize,
        limits: Deadlines,
        pool: &BufPool,
    ) -> Result<DeadlineQueue, DeviceError> {
        let mut inner = self.device.open_queue(depth)?;
        inner.register_pool(pool)?;
        Ok(DeadlineQueue::new(
            inner,
            self.info.name.clone(),
            limits,
            self.health.clone(),
        ))
    }
}

/// A reactor's L2 state: its read queues and reads in flight, and the
/// feeders of the devices it feeds.
pub(crate) struct L2 {
    me: usize,
    cfg: Arc<L2Config>,
    link: Arc<dyn L2Link>,
    pool: BufPool,
    /// This reactor's read queue on every device, by device index.
    devs: Vec<DevQueue>,
    reads: read::Reads,
    feeders: Vec<Feeder>,
    /// Counters of the read side.
    counters: L2Counters,
    /// A kick was sent since the last scan.
    kicked: bool,
    /// Scratch for completions.
    done: Vec<Completion>,
    /// Devices that keep a log, by index: an invalidation waits for each.
    persistent: Vec<u8>,
    /// Invalidations and replacements waiting for records to be durable:
    /// token → devices still to answer, and a device whose log lost it.
    awaiting: HashMap<u64, (usize, Option<u8>)>,
    next_token: u64,
    /// Devices whose rebuild has not told this shard it is over.
    rebuilding: usize,
    /// Keys invalidated or replaced while a rebuild runs: what the log says
    /// of them is older.
    dead_since_start: HashSet<u64>,
}

/// What a reactor needs to open its L2 queues.
#[derive(Clone)]
pub(crate) struct L2Setup {
    pub cfg: Arc<L2Config>,
    pub devs: Vec<Arc<DevShared>>,
    /// The largest block the engine holds (rebuilt entries above it are
    /// dropped).
    pub max_block: u32,
}

impl L2 {
    /// Opens reactor `me`'s read queue on every device and the feeders of
    /// the devices it feeds. Runs on the reactor's own thread: a queue
    /// belongs to the thread that polls it.
    pub(crate) fn open(
        setup: L2Setup,
        me: usize,
        link: Arc<dyn L2Link>,
        pool: &BufPool,
    ) -> Result<L2, DeviceError> {
        let mut devs = Vec::new();
        let mut feeders = Vec::new();
        let mut persistent = Vec::new();
        let mut rebuilding = 0;
        for (i, shared) in setup.devs.into_iter().enumerate() {
            let start = &shared.start;
            if start.header.compat & format::COMPAT_NO_LOG == 0 {
                persistent.push(i as u8);
                rebuilding += usize::from(start.resume);
            }
            if shared.feeder == me {
                feeders.push(Feeder::new(
                    i as u8,
                    me,
                    shared.clone(),
                    setup.cfg.clone(),
                    link.clone(),
                    pool,
                    start,
                    setup.max_block,
                )?);
            }
            let limits = Deadlines {
                read: setup.cfg.read_deadline,
                write: setup.cfg.write_deadline,
            };
            let queue = shared.open_queue(setup.cfg.queue_depth, limits, pool)?;
            devs.push(DevQueue { shared, queue });
        }
        Ok(L2 {
            persistent,
            awaiting: HashMap::new(),
            next_token: 0,
            rebuilding,
            dead_since_start: HashSet::new(),
            me,
            cfg: setup.cfg,
            link,
            pool: pool.clone(),
            devs,
            reads: read::Reads::default(),
            feeders,
            counters: L2Counters::default(),
            kicked: false,
            done: Vec::new(),
        })
    }

    /// True when no L2 I/O of this reactor is in flight and its feeders
    /// are idle.
    pub(crate) fn quiet(&self) -> bool {
        self.devs.iter().all(|d| d.queue.in_flight() == 0) && self.feeders.iter().all(Feeder::idle)
    }

    /// The key with `hash` was invalidated or replaced in this reactor's
    /// shard: has every device that keeps a log record it. Returns the
    /// token that [`L2::handle`] hands back once all have it durable, or
    /// `None` when no device keeps a log (the caller answers at once).
    pub(crate) fn record_dead(&mut self, hash: u64) -> Option<u64> {
        if self.persistent.is_empty() {
            return None;
        }
        if self.rebuilding > 0 {
            self.dead_since_start.insert(hash);
        }
        self.next_token += 1;
        let token = self.next_token;
        self.awaiting.insert(token, (self.persistent.len(), None));
        for &dev in &self.persistent {
            let feeder = self.devs[usize::from(dev)].shared.feeder;
            self.link.send(
                feeder,
                L2Msg::Record {
                    dev,
                    hash,
                    from: self.me,
                    token,
                },
            );
        }
        Some(token)
    }

    /// Handles one message of the L2 protocol. `shard` is this reactor's.
    /// Returns the tokens of [`L2::record_dead`] that every device has
    /// answered, each with the name of a device whose log failed before
    /// the record was durable, if any.
    pub(crate) fn handle(
        &mut self,
        msg: L2Msg,
        shard: &mut Shard<Buf>,
    ) -> Vec<(u64, Option<String>)> {
        let mut durable = Vec::new();
        match msg {
            L2Msg::Scan {
                dev,
                feeder,
                seq,
                rules,
                mut from,
                budget,
            } => {
                let t0 = Instant::now();
                let picks = shard.l2_pick_some(&rules, &mut from, || t0.elapsed() >= budget);
                self.kicked = false;
                let c = shard.counters;
                let warm = c.evict_mru + c.evict_mfu > 0;
                if !from.done {
                    self.counters.l2_pick_slices += 1;
                }
                self.link.send(
                    feeder,
                    L2Msg::Picked {
                        dev,
                        seq,
                        picks,
                        warm,
                        last: from.done,
                    },
                );
                if !from.done {
                    self.link.send(
                        self.me,
                        L2Msg::Scan {
                            dev,
                            feeder,
                            seq,
                            rules,
                            from,
                            budget,
                        },
                    );
                }
            }
            L2Msg::Picked {
                dev,
                seq,
                picks,
                warm,
                last,
            } => {
                if let Some(f) = self.feeder(dev) {
                    f.on_picked(seq, picks, warm, last);
                }
            }
            L2Msg::Evict {
                dev,
                feeder,
                seq,
                ranges,
                from,
                budget,
            } => self.evict(shard, dev, feeder, seq, ranges, from, budget),
            L2Msg::EvictAck { dev, seq } => {
                if let Some(f) = self.feeder(dev) {
                    f.on_evict_ack(seq);
                }
            }
            L2Msg::Kick { dev } => {
                if let Some(f) = self.feeder(dev) {
                    f.on_kick();
                }
            }
            L2Msg::Done { entries, .. } => {
                for (idx, loc) in entries {
                    shard.l2_done(idx, loc);
                }
            }
            L2Msg::Record {
                dev,
                hash,
                from,
                token,
            } => {
                if let Some(f) = self.feeder(dev) {
                    f.record(hash, from, token);
                }
            }
            L2Msg::Durable { dev, tokens, lost } => {
                for t in tokens {
                    let Some((left, lost_on)) = self.awaiting.get_mut(&t) else {
                        log::error!("reactor {}: unknown record token {t}", self.me);
                        continue;
                    };
                    *left -= 1;
                    if lost {
                        *lost_on = Some(dev);
                    }
                    if *left == 0 {
                        let lost_on = *lost_on;
                        self.awaiting.remove(&t);
                        let name =
                            lost_on.map(|d| self.devs[usize::from(d)].shared.info.name.clone());
                        durable.push((t, name));
                    }
                }
            }
            L2Msg::RebuildStart { entries, .. } => shard.l2_reserve(entries),
            L2Msg::Rebuilt { items, .. } => {
                let a = shard.l2_rebuild(&items, &self.dead_since_start);
                let c = &mut self.counters;
                c.l2_rebuild_kept += a.entries;
                c.l2_rebuild_bufs_precached += a.precached;
                c.l2_rebuild_stale += a.stale;
                c.l2_rebuild_size += a.bytes;
                c.l2_rebuild_asize += a.asize;
            }
            L2Msg::RebuildDone { .. } => {
                self.rebuilding = self.rebuilding.saturating_sub(1);
                if self.rebuilding == 0 {
                    self.dead_since_start = HashSet::new();
                }
            }
        }
        durable
    }

    /// The feeder of device `dev`, which this reactor must run.
    fn feeder(&mut self, dev: u8) -> Option<&mut Feeder> {
        let f = self.feeders.iter_mut().find(|f| f.dev == dev);
        if f.is_none() {
            log::error!("reactor {}: no feeder for L2 device {dev}", self.me);
        }
        f
    }

    /// The feeders this reactor runs.
    pub(crate) fn feeders_mut(&mut self) -> &mut [Feeder] {
        &mut self.feeders
    }

    /// When blocks pile up in the shard's staging queue, asks every
    /// device's feeder to come now (once per scan).
    pub(crate) fn kick_if_staging(&mut self, shard: &Shard<Buf>) {
        if !self.kicked && shard.l2_stage_pressure() {
            self.kicked = true;
            for (dev, d) in self.devs.iter().enumerate() {
                self.link
                    .send(d.shared.feeder, L2Msg::Kick { dev: dev as u8 });
            }
        }
    }

    /// Housekeeping of every queue of this reactor (see
    /// [`DeviceQueue::tick`]); returns how soon they want the next.
    pub(crate) fn tick(&mut self, now: Instant) -> Duration {
        let reads = self.devs.iter_mut().map(|d| d.queue.tick(now));
        let feeds = self.feeders.iter_mut().map(|f| f.tick(now));
        reads.chain(feeds).fold(MAX_TICK, Duration::min)
    }

    /// Devices whose rebuild runs on this reactor now.
    pub(crate) fn rebuilding(&self) -> u64 {
        self.feeders.iter().filter(|f| f.rebuilding()).count() as u64
    }

    /// This reactor's L2 counters: its reads and its feeders.
    pub(crate) fn counters(&self) -> L2Counters {
        let mut c = self.counters;
        for f in &self.feeders {
            c.add(&f.counters());
            c.l2_log_bytes += f.log_bytes();
        }
        for d in &self.devs {
            add_deadlines(&mut c, &d.queue);
        }
        c
    }

    /// Gives up on every request in flight, at a shutdown past its time
    /// limit: their buffers stay with the queues (see
    /// [`DeadlineQueue::abandon_all`]), and the feeders stop.
    pub(crate) fn abandon(&mut self) {
        let mut n = 0;
        for d in &mut self.devs {
            n += d.queue.abandon_all();
        }
        for f in &mut self.feeders {
            n += f.abandon();
        }
        self.counters.l2_abandoned += n as u64;
        if n > 0 {
            log::warn!(
                "reactor {}: shutdown abandoned {n} L2 requests still on their devices",
                self.me
            );
        }
    }
}
