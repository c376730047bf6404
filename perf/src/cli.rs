//! The command line, and the TOML config file that takes the same keys.

use crate::faults::{BackingFaults, L2Faults};
use crate::report::SweepClass;
use crate::trace::{self, Format};
use crate::units::{format_size, parse_duration, parse_size, parse_size_list};
use crate::workload::{Op, OpMix, Popularity, Workload};
use clap::{Parser, ValueEnum};
use std::io::Read;
use std::time::{Duration, Instant};

/// polarc's perf harness: run a cache workload or replay a trace, and
/// report throughput, hit ratios per tier and latency per class.
///
/// With no arguments it runs the embedded default: a scaled-down zipf-1m
/// (200,000 keys of 4 KiB, Zipf 0.99, 48 MiB ARC) with a 512 MiB L2 on an
/// io_uring file in a temp directory, in front of a simulated store.
#[derive(Parser, Debug, Clone)]
#[command(version, args_override_self = true)]
pub struct Args {
    /// A TOML file with any of these options, by their long names
    /// (`arc = "256MiB"`, `l2 = ["mem:1GiB"]`, `in-reactor = true`).
    /// Options on the command line win.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,

    // --- engine ---
    /// Reactors (shards). Default: one per available core.
    #[arg(long)]
    pub reactors: Option<usize>,
    /// Cores to pin reactors to, e.g. `0,2` or `0-3`. Default: the first ones.
    #[arg(long, value_parser = parse_cores)]
    pub cores: Option<CoreList>,
    /// Reactor idle strategy.
    #[arg(long, value_enum, default_value = "adaptive")]
    pub idle: Idle,
    /// How long an adaptive reactor yields, when idle, before it parks
    /// (Config::spin_before_park). Default: the engine's, 100us.
    #[arg(long, value_parser = parse_duration)]
    pub spin_before_park: Option<Duration>,
    /// ARC capacity.
    #[arg(long, default_value = "48MiB", value_parser = parse_size)]
    pub arc: u64,
    /// Replacement policy.
    #[arg(long, value_enum, default_value = "arc")]
    pub policy: Policy,
    /// Buffer pool size. Default: the engine's (ARC × 1.5 + 32 MiB, more
    /// with L2), for trace replay too.
    #[arg(long, value_parser = parse_size)]
    pub pool: Option<u64>,
    /// L2 device: `auto` (an io_uring file in a temp directory, 512 MiB),
    /// `none`, `mem:SIZE`, `file:PATH[:SIZE]` (io_uring),
    /// `uring:/dev/DEVICE`, or with the `spdk` feature `spdk:PCI_ADDRESS`,
    /// `spdk:pcie`, `spdk:'TRANSPORT ID'` or `spdk:nvmf:SIZE` (a local
    /// nvmf_tgt). Repeat for several devices.
    #[arg(long, default_value = "auto")]
    pub l2: Vec<String>,
    /// Open io_uring L2 devices buffered instead of with O_DIRECT.
    #[arg(long)]
    pub l2_buffered: bool,
    /// L2 write rate cap per device, per second (l2arc_write_max).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub l2_write_max: u64,
    /// Drive writes per day: caps the bytes written to each L2 device
    /// (data, padding, log, headers) at DWPD × its capacity per day, on
    /// average (L2Config::dwpd). Default: none.
    #[arg(long)]
    pub l2_dwpd: Option<f64>,
    /// TRIM ahead of the L2 write hand, as a percentage of each cycle's
    /// writes (L2Config::trim_ahead, OpenZFS's l2arc_trim_ahead): punched
    /// holes in a file, discards on a block device, deallocation on SPDK.
    /// Default: 0 (off).
    #[arg(long, default_value_t = 0)]
    pub l2_trim_ahead: u32,
    /// Extra L2 write rate while the ARC warms up (l2arc_write_boost).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub l2_write_boost: u64,
    /// Time between L2 feeds (l2arc_feed_secs).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub l2_feed_interval: Duration,
    /// Bytes per L2 feed write (the feeder packs one per reactor loop).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub l2_write_size: u64,
    /// Store L2 blocks uncompressed.
    #[arg(long)]
    pub l2_no_compress: bool,
    /// Copy only MFU blocks to L2 (l2arc_mfuonly).
    #[arg(long)]
    pub l2_mfuonly: bool,
    /// No L2 reads while the feeder writes (l2arc_norw).
    #[arg(long)]
    pub l2_norw: bool,
    /// Start L2 devices empty instead of rebuilding what their log holds
    /// (a device holding another program's data is still refused).
    #[arg(long)]
    pub l2_fresh: bool,
    /// Format L2 devices whatever they hold, another program's data too.
    #[arg(long)]
    pub l2_overwrite: bool,
    /// Keep no log on L2 devices: their blocks do not survive a restart.
    #[arg(long)]
    pub l2_no_persist: bool,
    /// Backing store: `sim:LATENCY` (e.g. sim:5ms), `sim:MIN-MAX` (uniform,
    /// e.g. sim:100us-2ms) or `file:PATH` (key i at offset i × value size).
    #[arg(long, default_value = "sim:200us")]
    pub backing: String,
    /// The engine to drive: polarc, or foyer (needs the `compare-foyer`
    /// cargo feature).
    #[arg(long, value_enum, default_value = "polarc")]
    pub engine: EngineKind,

    // --- workload ---
    /// Distinct keys.
    #[arg(long, default_value_t = 200_000)]
    pub keys: u64,
    /// Value size in bytes, or a range `MIN-MAX` (each key has its own size).
    #[arg(long, default_value = "4096", value_parser = parse_value_size)]
    pub value_size: ValueSize,
    /// Value compressibility: 2 means the values compress about 2:1.
    #[arg(long, default_value_t = 2.0)]
    pub compressibility: f64,
    /// Zipf exponent θ of key popularity; 0 for uniform keys.
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Hotspot popularity instead: `FRACTION:SHARE`, e.g. 0.1:0.9 sends 90%
    /// of the operations to 10% of the keys.
    #[arg(long, value_parser = parse_hotspot)]
    pub hotspot: Option<(f64, f64)>,
    /// Share of operations taken from a sequential scan over all keys,
    /// mixed with the random ones (shows ARC's scan resistance).
    #[arg(long, default_value_t = 0.0)]
    pub scan_share: f64,
    /// Operation mix, in relative shares: `read:90,insert:5,invalidate:3,prefetch:2`.
    #[arg(long, default_value = "read:100", value_parser = parse_mix)]
    pub mix: OpMix,
    /// Measured operations.
    #[arg(long, default_value_t = 400_000)]
    pub ops: u64,
    /// Measure for this long instead of a number of operations (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Operations before measuring.
    #[arg(long, default_value_t = 400_000)]
    pub warmup_ops: u64,
    /// Warm up by reading every key once, in order.
    #[arg(long)]
    pub sequential_warmup: bool,
    /// After warm-up, wait until L2 feeding has settled.
    #[arg(long)]
    pub settle_l2: bool,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Requests in flight per client (or per reactor with --in-reactor).
    #[arg(long, default_value_t = 16)]
    pub queue_depth: usize,
    /// Run the measured phase as jobs on the reactors themselves (as SPDK's
    /// bdevperf does): uniform read-throughs, --queue-depth per reactor.
    #[arg(long)]
    pub in_reactor: bool,
    /// Open loop: issue the measured operations at this many per second in
    /// all (shared by the clients, or by the reactors with --in-reactor), on
    /// a schedule, and measure each latency from its intended start, so
    /// that waiting behind a stall counts (no coordinated omission).
    /// --queue-depth still caps what is in flight. Without it the load is
    /// closed-loop, and its latency is mostly queueing.
    #[arg(long, value_name = "OPS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Latency against load: after a closed-loop run, run the measured
    /// phase open-loop at 25, 50, 60, 70, 80, 90 and 100% of its
    /// throughput, and report the highest rate kept up with at a p99 (of
    /// --sweep-class) within this target, e.g. 20us.
    #[arg(long, value_name = "P99", value_parser = parse_duration)]
    pub rate_sweep: Option<Duration>,
    /// The read class whose p99 --rate-sweep holds to its target.
    #[arg(long, value_enum, default_value_t = SweepClass::All)]
    pub sweep_class: SweepClass,
    /// With --rate: the gaps between intended starts.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,

    // --- soak: faults, deadlines, checks ---
    /// Check every byte read against the generator, staleness included:
    /// values carry their key and version, inserts and invalidations bump
    /// the version the store serves, and a read must return a version no
    /// older than the last write that returned before it was issued.
    /// Needs --backing sim:…; client-driven runs only (no --in-reactor, no
    /// --trace). L2 devices start fresh. See docs/perf-report.md.
    #[arg(long)]
    pub verify: bool,
    /// Inject faults into every L2 device: a comma-separated list of
    /// KIND=P or KIND=P:DURATION, P a probability per I/O request.
    /// `eio=P`: reads and writes fail with an I/O error. `torn=P`: a write
    /// lands only a prefix of its blocks and reports success. `flip=P`: a
    /// read comes back with one bit flipped. `hang=P[:DUR]`: a request
    /// completes only after DUR (default 10s); `hang=P:forever` never.
    /// `slow=P:DUR`: a request completes DUR late. `seed=N`: the RNG seed.
    /// E.g. eio=0.001,torn=0.001,flip=0.001,hang=0.0001,slow=0.01:5ms
    #[arg(long, value_name = "SPEC", value_parser = L2Faults::parse)]
    pub faults: Option<L2Faults>,
    /// Inject faults into the simulated store's reads (--backing sim:…):
    /// `fail=P`: the read fails. `slow=P:DUR`: it is answered DUR late.
    /// `hang=P`: it is never answered (--backing-timeout fails its
    /// callers). `seed=N`: the RNG seed. E.g.
    /// fail=0.001,slow=0.01:20ms,hang=0.0001
    #[arg(long, value_name = "SPEC", value_parser = BackingFaults::parse)]
    pub backing_faults: Option<BackingFaults>,
    /// How long a backing read may take before its callers get a timeout
    /// error (Config::backing_timeout). Default: the engine's, 30s.
    #[arg(long, value_parser = parse_duration)]
    pub backing_timeout: Option<Duration>,
    /// How long an L2 read may take before its fill is served from the
    /// backing store (L2Config::read_deadline). Default: the engine's, 25ms.
    #[arg(long, value_parser = parse_duration)]
    pub l2_read_deadline: Option<Duration>,
    /// How long an L2 write or flush may take before it counts as failed
    /// (L2Config::write_deadline). Default: the engine's, 2s.
    #[arg(long, value_parser = parse_duration)]
    pub l2_write_deadline: Option<Duration>,
    /// Longest step of L2 work per reactor loop iteration
    /// (L2Config::poll_budget): LZ4 packing, picking for a scan, dropping
    /// evicted copies; longer work is sliced. 0 packs one block and picks
    /// or evicts 64 headers per step. Default: the engine's, 20us.
    #[arg(long, value_parser = parse_duration)]
    pub l2_poll_budget: Option<Duration>,
    /// How long the engine's shutdown waits for I/O in flight
    /// (Config::shutdown_timeout). Default: the engine's, 10s.
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// A client operation in flight longer than this is given up as hung:
    /// the run stops issuing, reports hung_ops and fails after its report.
    /// Default: the backing timeout + the L2 write deadline + 10s.
    #[arg(long, value_parser = parse_duration)]
    pub hang_limit: Option<Duration>,

    // --- trace replay ---
    /// Replay this trace instead of a synthetic workload (.zst, .gz and .xz
    /// are decompressed).
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// Trace format.
    #[arg(long, value_enum, default_value = "lis")]
    pub trace_format: Format,
    /// csv traces: 0-based column of the key.
    #[arg(long, default_value_t = 0)]
    pub csv_key_column: usize,
    /// csv traces: 0-based column of the size in bytes (default: --value-size).
    #[arg(long)]
    pub csv_size_column: Option<usize>,
    /// csv traces: the field separator.
    #[arg(long, default_value = ",")]
    pub csv_delimiter: char,
    /// csv traces: skip the first line.
    #[arg(long)]
    pub csv_header: bool,
    /// Most bytes of trace to read, after decompression; a longer trace is
    /// an error.
    #[arg(long, default_value = "8GiB", value_parser = parse_size)]
    pub trace_max_bytes: u64,
    /// Most accesses a trace may give (each takes 16 B of memory); more is
    /// an error.
    #[arg(long, default_value_t = trace::DEFAULT_MAX_ACCESSES)]
    pub trace_max_accesses: u64,

    /// Break client threads' read latency down: late issue, the trip to
    /// the reactor, its service, the trip back (the engine stamps each
    /// block it answers; Config::timing). Not with --in-reactor.
    #[arg(long)]
    pub breakdown: bool,
    /// Replay the trace one access at a time through Engine::read, with
    /// the store on worker threads, as an application embedding polarc
    /// would. Default: on the reactors, each shard's accesses in order,
    /// with a store that answers on the reactor (much faster; the same
    /// hits).
    #[arg(long)]
    pub replay_through_clients: bool,

    // --- miss-ratio curves and sizing (with --trace) ---
    /// Miss-ratio curve: replay the trace through the engine's ARC code at
    /// each of these DRAM sizes, in parallel, for ARC and LRU, instead of
    /// through the engine: a list (32MiB,128MiB,1GiB) or a range with a
    /// number of steps (32MiB..1GiB:8).
    #[arg(long, value_parser = parse_sizes)]
    pub mrc: Option<SizeList>,
    /// With --mrc: also the two-tier curve, ARC over an L2 of each of
    /// these sizes (a list or a range, as --mrc).
    #[arg(long, value_parser = parse_sizes)]
    pub mrc_l2: Option<SizeList>,
    /// With --mrc: the policies (arc, lru, or both).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "arc,lru")]
    pub mrc_policies: Vec<Policy>,
    /// With --mrc: report the smallest ARC, and ARC + L2, that reach this
    /// hit ratio (0..1), and what they cost.
    #[arg(long)]
    pub target_hit_ratio: Option<f64>,
    /// With --target-hit-ratio: the request rate (accesses per second)
    /// at which to give the L2's write rate and drive writes per day.
    #[arg(long)]
    pub sizing_rate: Option<f64>,

    // --- report ---
    /// Write the report as JSON to this path (`-` for stdout); schema in
    /// docs/perf-report.md.
    #[arg(long)]
    pub json: Option<String>,
    /// Draw hit ratio over time and the latency CDF per class to this SVG.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Interval of the report's timeline.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeline_interval: Duration,

    // --- benchmarks ---
    /// After the run, run fio's io_uring 4K random read on the same L2
    /// file at the same total queue depth, and compare L2-hit throughput.
    #[arg(long)]
    pub fio_compare: bool,
    /// After the run, measure raw LZ4 speed on values like the workload's
    /// and compare the L2 feed throughput with it.
    #[arg(long)]
    pub lz4_compare: bool,
    /// After the run, run SPDK's spdk_nvme_perf (4 KiB random reads) on the
    /// same `--l2 spdk:` device at the same total queue depth, on the
    /// first reactor's core, and compare L2-hit throughput.
    #[arg(long)]
    pub spdk_perf_compare: bool,
    /// Run the feed benchmark instead (see docs/BENCHMARKS.md).
    #[arg(long)]
    pub bench_feed: bool,
    /// Run the ARC-hit benchmark (polarc vs a mutex-sharded HashMap) instead.
    #[arg(long)]
    pub bench_hits: bool,
    /// Operations per thread for --bench-hits.
    #[arg(long, default_value_t = 2_000_000)]
    pub bench_ops: u64,
}

/// A list of cores (one option value, not several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// Value sizes: fixed, or a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValueSize {
    /// Smallest.
    pub min: usize,
    /// Largest.
    pub max: usize,
}

// The variants of these enums have no doc comments: clap would print
// them in --help.

/// `--idle`: the reactors' idle strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Idle {
    Busy,
    Adaptive,
}

impl From<Idle> for polarc::IdleStrategy {
    fn from(i: Idle) -> Self {
        match i {
            Idle::Busy => polarc::IdleStrategy::Busy,
            Idle::Adaptive => polarc::IdleStrategy::Adaptive,
        }
    }
}

/// `--arrivals`: how open-loop operations are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arrivals {
    /// Exponential gaps, as independent users make.
    Poisson,
    /// Equal gaps.
    Fixed,
}

impl From<Arrivals> for polarc::Arrivals {
    fn from(a: Arrivals) -> Self {
        match a {
            Arrivals::Poisson => polarc::Arrivals::Poisson,
            Arrivals::Fixed => polarc::Arrivals::Fixed,
        }
    }
}

/// `--rate`: a finite number of operations per second, above zero.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        Ok(_) => Err(format!(
            "{s}: the rate must be at least 1 operation per second"
        )),
        Err(_) => Err(format!("{s}: not a number of operations per second")),
    }
}

/// Sizes given as a list or a range (`--mrc`, `--mrc-l2`), sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeList(pub Vec<u64>);

fn parse_sizes(s: &str) -> Result<SizeList, crate::units::UnitError> {
    parse_size_list(s, false).map(SizeList)
}

/// `--policy`: the ARC's replacement policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    Arc,
    Lru,
}

impl From<Policy> for polarc::Policy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Arc => polarc::Policy::Arc,
            Policy::Lru => polarc::Policy::Lru,
        }
    }
}

/// As spelled on the command line.
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.to_possible_value().expect("no variant is skipped");
        f.write_str(v.get_name())
    }
}

/// `--engine`: the engine a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    Polarc,
    Foyer,
}

/// Options that are wrong on their own or do not fit together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// A count that must not be zero.
    #[error("--clients, --queue-depth and --keys must be at least 1")]
    Zero,
    /// Values cannot expand.
    #[error("--compressibility {0} must be a number >= 1")]
    Compressibility(f64),
    /// A share outside 0..=1.
    #[error("--scan-share {0} must be within 0..=1")]
    ScanShare(f64),
    /// A negative or NaN exponent.
    #[error("--zipf {0} must be a number >= 0")]
    Zipf(f64),
    /// A timeline needs intervals.
    #[error("--timeline-interval must be above zero")]
    TimelineInterval,
    /// `--bench-feed` without a device.
    #[error("--bench-feed needs an --l2 device, e.g. --l2 file:/var/tmp/f.img:2GiB")]
    FeedNeedsL2,
    /// `--fio-compare` without a device fio can read.
    #[error("--fio-compare needs an --l2 file: or uring: device")]
    FioNeedsFile,
    /// `--spdk-perf-compare` without an SPDK device.
    #[error("--spdk-perf-compare needs an --l2 spdk: device")]
    SpdkPerfNeedsSpdk,
    /// foyer with a trace or in-reactor jobs.
    #[error(
        "--engine foyer runs synthetic read-through workloads only (no --trace, no --in-reactor)"
    )]
    FoyerSyntheticOnly,
    /// foyer without a disk tier.
    #[error("--engine foyer needs a disk tier: --l2 auto or --l2 file:PATH:SIZE")]
    FoyerNeedsDisk,
    /// foyer on a file without a size.
    #[error("--l2 {0}: foyer needs a size, file:PATH:SIZE")]
    FoyerNeedsSize(String),
    /// foyer on a device it cannot use.
    #[error("--l2 {0}: foyer runs on file:PATH:SIZE or auto")]
    FoyerDevice(String),
    /// foyer with a backing store it cannot use.
    #[error("--engine foyer supports --backing sim:LATENCY")]
    FoyerBacking,
    /// Arithmetic on option values that does not fit: what was computed,
    /// from which options.
    #[error("{0} does not fit in 64 bits")]
    Overflow(String),
    /// A count above what the harness supports.
    #[error("--{option} {value}: at most {max}")]
    TooMany {
        /// The option.
        option: &'static str,
        /// Its value.
        value: u64,
        /// The most it may be.
        max: u64,
    },
    /// A sizing option without what it needs, or out of range.
    #[error("{0}")]
    Sizing(&'static str),
    /// A run whose end is beyond the clock.
    #[error("--duration {0:?}: the end of the run does not fit in the clock")]
    Duration(Duration),
    /// A duration that must not be zero.
    #[error("--{0} must be above zero")]
    ZeroDuration(&'static str),
    /// `--verify` or `--backing-faults` without the simulated store.
    #[error("--{0} needs the simulated store (--backing sim:LATENCY)")]
    NeedsSim(&'static str),
    /// A soak option in a mode that does not support it.
    #[error("--{option} is unsupported with --{mode}")]
    Unsupported {
        /// The soak option.
        option: &'static str,
        /// The mode.
        mode: &'static str,
    },
    /// `--verify` with values too small for their header.
    #[error(
        "--verify needs values of at least {} B (--value-size)",
        crate::verify::HEADER
    )]
    VerifyValueSize,
    /// `--verify` with more keys than it tracks.
    #[error("--keys {0}: --verify tracks at most {max} keys", max = crate::verify::MAX_KEYS)]
    VerifyKeys(u64),
    /// A core beyond `spdk_nvme_perf`'s core mask.
    #[error(
        "--cores: core {0} is beyond the 128 cores of spdk_nvme_perf's core mask \
         (--spdk-perf-compare runs it on the first core listed)"
    )]
    CoreMask(usize),
}

/// Most reactors: the engine's limit.
pub const MAX_REACTORS: usize = u16::MAX as usize;
/// Most client threads.
pub const MAX_CLIENTS: usize = 4096;
/// Most requests in flight per client (or per reactor with --in-reactor).
pub const MAX_QUEUE_DEPTH: usize = 65536;
/// Cores are numbered below this (Linux's `CPU_SETSIZE`), and `--cores`
/// lists at most this many.
pub const MAX_CORES: usize = 1024;
/// Largest config file.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `x`, or an [`ArgError::Overflow`] saying what `what` is.
fn fits<T>(x: Option<T>, what: impl FnOnce() -> String) -> Result<T, ArgError> {
    x.ok_or_else(|| ArgError::Overflow(what()))
}

/// The engine's default buffer pool for an ARC of `arc` bytes: ARC × 1.5 +
/// 32 MiB (`polarc::Config::effective_pool_capacity`), checked.
fn default_pool(arc: u64) -> Option<u64> {
    arc.checked_add(arc / 2)?.checked_add(32 << 20)
}

/// Room the engine adds to its default pool for `devices` L2 devices
/// (`polarc::Config::pool_capacity_with_l2`), checked: per device,
/// `writes` feed writes of `write_size` (at least `block`) and 8 MiB; then
/// 16 MiB.
fn l2_room(devices: u64, writes: u64, write_size: u64, block: u64) -> Option<u64> {
    let per_device = writes
        .checked_mul(write_size.max(block))?
        .checked_add(8 << 20)?;
    devices.checked_mul(per_device)?.checked_add(16 << 20)
}

/// `spdk_nvme_perf`'s `-c` core mask for `core`: `0x…` of a 128-bit mask.
pub fn spdk_core_mask(core: usize) -> Result<String, ArgError> {
    u32::try_from(core)
        .ok()
        .and_then(|c| 1u128.checked_shl(c))
        .map(|m| format!("0x{m:x}"))
        .ok_or(ArgError::CoreMask(core))
}

/// A config file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// It is not TOML.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// It names another config file.
    #[error("a config file cannot name another")]
    Nested,
    /// It is larger than [`MAX_CONFIG_BYTES`].
    #[error("larger than {} (is it a config file?)", format_size(MAX_CONFIG_BYTES))]
    TooLarge,
    /// It sets `help` or `version`.
    #[error("{0}: not an option a config file may set")]
    NotAnOption(String),
    /// A value that is not a string, a number, a boolean or an array of
    /// those.
    #[error("{key}: unsupported value {value}")]
    Value {
        /// The option.
        key: String,
        /// Its value.
        value: toml::Value,
    },
}

impl Args {
    /// Options that no parser can check on its own.
    pub fn check(&self) -> Result<(), ArgError> {
        if self.clients == 0 || self.queue_depth == 0 || self.keys == 0 {
            return Err(ArgError::Zero);
        }
        if !(self.compressibility.is_finite() && self.compressibility >= 1.0) {
            return Err(ArgError::Compressibility(self.compressibility));
        }
        if !(0.0..=1.0).contains(&self.scan_share) {
            return Err(ArgError::ScanShare(self.scan_share));
        }
        if !(self.zipf.is_finite() && self.zipf >= 0.0) {
            return Err(ArgError::Zipf(self.zipf));
        }
        if self.timeline_interval.is_zero() {
            return Err(ArgError::TimelineInterval);
        }
        let too_many = |option, value: usize, max: usize| {
            if value > max {
                Err(ArgError::TooMany {
                    option,
                    value: value as u64,
                    max: max as u64,
                })
            } else {
                Ok(())
            }
        };
        too_many("reactors", self.reactors.unwrap_or(0), MAX_REACTORS)?;
        too_many("clients", self.clients, MAX_CLIENTS)?;
        too_many("queue-depth", self.queue_depth, MAX_QUEUE_DEPTH)?;
        self.client_depth()?;
        if let Some(d) = self.duration {
            if Instant::now().checked_add(d).is_none() {
                return Err(ArgError::Duration(d));
            }
        }
        self.check_soak()?;
        self.check_sizing()?;
        self.mapped_pool()?;
        if self.bench_feed {
            self.feed_arc()?;
        }
        if self.spdk_perf_compare {
            if let Some(&c) = self.cores.as_ref().and_then(|c| c.0.first()) {
                spdk_core_mask(c)?;
            }
        }
        Ok(())
    }

    /// The miss-ratio curve and sizing options: each needs the one before.
    fn check_sizing(&self) -> Result<(), ArgError> {
        let s = ArgError::Sizing;
        if self.mrc.is_some() && self.trace.is_none() {
            return Err(s("--mrc replays a trace: give --trace FILE"));
        }
        if self.mrc.is_none() && (self.mrc_l2.is_some() || self.target_hit_ratio.is_some()) {
            return Err(s("--mrc-l2 and --target-hit-ratio go with --mrc SIZES"));
        }
        if self.sizing_rate.is_some() && self.target_hit_ratio.is_none() {
            return Err(s("--sizing-rate goes with --target-hit-ratio"));
        }
        if self
            .target_hit_ratio
            .is_some_and(|r| !(r > 0.0 && r <= 1.0))
        {
            return Err(s("--target-hit-ratio must be within (0, 1]"));
        }
        if self
            .sizing_rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(s(
                "--sizing-rate must be a positive number of accesses per second",
            ));
        }
        if self.mrc.is_some() && self.mrc_policies.is_empty() {
            return Err(s("--mrc-policies needs arc, lru or both"));
        }
        if self.breakdown && (self.in_reactor || self.trace.is_some()) {
            return Err(s(
                "--breakdown is for client threads: not with --in-reactor or --trace",
            ));
        }
        if self.l2_dwpd.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
            return Err(s(
                "--l2-dwpd must be a positive number of drive writes per day",
            ));
        }
        Ok(())
    }

    /// The soak options: durations above zero, and `--verify`,
    /// `--faults` and `--backing-faults` where they are supported.
    fn check_soak(&self) -> Result<(), ArgError> {
        for (name, d) in [
            ("backing-timeout", self.backing_timeout),
            ("l2-read-deadline", self.l2_read_deadline),
            ("l2-write-deadline", self.l2_write_deadline),
            ("shutdown-timeout", self.shutdown_timeout),
            ("hang-limit", self.hang_limit),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(ArgError::ZeroDuration(name));
            }
        }
        let asked = [
            ("verify", self.verify),
            ("faults", self.faults.is_some()),
            ("backing-faults", self.backing_faults.is_some()),
        ];
        let modes = [
            ("bench-feed", self.bench_feed),
            ("engine foyer", self.engine == EngineKind::Foyer),
        ];
        for (option, _) in asked.iter().filter(|a| a.1) {
            if let Some((mode, _)) = modes.iter().find(|m| m.1) {
                return Err(ArgError::Unsupported { option, mode });
            }
        }
        let sim = self.backing.starts_with("sim:");
        if self.backing_faults.is_some() {
            if self.trace.is_some() {
                return Err(ArgError::Unsupported {
                    option: "backing-faults",
                    mode: "trace",
                });
            }
            if !sim {
                return Err(ArgError::NeedsSim("backing-faults"));
            }
        }
        if self.verify {
            for (mode, on) in [
                ("in-reactor", self.in_reactor),
                ("trace", self.trace.is_some()),
            ] {
                if on {
                    return Err(ArgError::Unsupported {
                        option: "verify",
                        mode,
                    });
                }
            }
            if !sim {
                return Err(ArgError::NeedsSim("verify"));
            }
            if self.value_size.min < crate::verify::HEADER {
                return Err(ArgError::VerifyValueSize);
            }
            if self.keys > crate::verify::MAX_KEYS {
                return Err(ArgError::VerifyKeys(self.keys));
            }
        }
        Ok(())
    }

    /// Requests in flight from all clients: `--clients` × `--queue-depth`.
    pub fn client_depth(&self) -> Result<usize, ArgError> {
        fits(self.clients.checked_mul(self.queue_depth), || {
            format!(
                "--clients {} × --queue-depth {}",
                self.clients, self.queue_depth
            )
        })
    }

    /// Requests in flight from in-reactor jobs on `reactors` reactors:
    /// `reactors` × `--queue-depth`.
    pub fn reactor_depth(&self, reactors: usize) -> Result<usize, ArgError> {
        fits(reactors.checked_mul(self.queue_depth), || {
            format!("{reactors} reactors × --queue-depth {}", self.queue_depth)
        })
    }

    /// The buffer pool the harness asks the engine for: `--pool`; `None`:
    /// the engine's default. (Trace replay used to ask for ARC × 3 + 64 MiB,
    /// because slabs stayed with the size classes that first took them;
    /// they change hands now.)
    pub fn pool_capacity(&self) -> Result<Option<u64>, ArgError> {
        Ok(self.pool)
    }

    /// The buffer pool the engine maps (`polarc::Config::pool_capacity_with_l2`
    /// for `--l2`'s devices, checked): [`Args::pool_capacity`], else
    /// ARC × 1.5 + 32 MiB and room for each device's feed writes.
    pub fn mapped_pool(&self) -> Result<u64, ArgError> {
        if let Some(p) = self.pool_capacity()? {
            return Ok(p);
        }
        let base = fits(default_pool(self.arc), || {
            format!(
                "--arc {}: ARC × 1.5 + 32 MiB (the buffer pool)",
                format_size(self.arc)
            )
        })?;
        if self.l2.is_empty() {
            return Ok(base);
        }
        let block = self.value_size.max.next_power_of_two().max(512) as u64;
        let writes = polarc::L2Config::default().writes_in_flight as u64;
        let room = l2_room(self.l2.len() as u64, writes, self.l2_write_size, block);
        fits(room.and_then(|r| r.checked_add(base)), || {
            format!(
                "--arc {} with --l2-write-size {} on {} --l2 devices: the buffer pool \
                 (ARC × 1.5 + 32 MiB, and {writes} feed writes + 8 MiB per device)",
                format_size(self.arc),
                format_size(self.l2_write_size),
                self.l2.len()
            )
        })
    }

    /// `--bench-feed`'s ARC: `--keys` values of `--value-size` (its
    /// largest), and a quarter more; its buffer pool (with one device and
    /// 8 feed writes in flight) must fit too.
    pub fn feed_arc(&self) -> Result<u64, ArgError> {
        let value = self.value_size.max as u64;
        let what = || {
            format!(
                "--keys {} × --value-size {}: the feed benchmark's ARC (× 1.25) and buffer pool",
                self.keys,
                format_size(value)
            )
        };
        let data = fits(self.keys.checked_mul(value), what)?;
        let arc = fits(data.checked_add(data / 4), what)?;
        let block = value.next_power_of_two().max(512);
        let pool = default_pool(arc)
            .zip(l2_room(
                1,
                8,
                polarc::L2Config::default().write_size as u64,
                block,
            ))
            .and_then(|(p, r)| p.checked_add(r));
        fits(pool, what)?;
        Ok(arc)
    }

    /// The bounds on reading `--trace`.
    pub fn trace_limits(&self) -> trace::Limits {
        trace::Limits {
            max_bytes: self.trace_max_bytes,
            max_accesses: self.trace_max_accesses,
            ..trace::Limits::default()
        }
    }

    /// The synthetic workload these options describe.
    pub fn workload(&self) -> Workload {
        Workload {
            keys: self.keys,
            popularity: match self.hotspot {
                Some((keys, share)) => Popularity::Hotspot { keys, share },
                None if self.zipf == 0.0 => Popularity::Uniform,
                None => Popularity::Zipf(self.zipf),
            },
            scan_share: self.scan_share,
            mix: self.mix,
            value_size: (self.value_size.min, self.value_size.max),
            compressibility: self.compressibility,
            ops: self.ops,
            duration: self.duration,
            warmup_ops: self.warmup_ops,
            clients: self.clients,
            queue_depth: self.queue_depth,
            sequential_warmup: self.sequential_warmup,
            settle_l2: self.settle_l2,
            timeline_interval: self.timeline_interval,
            rate: self.rate,
            arrivals: self.arrivals.into(),
            breakdown: self.breakdown,
        }
    }
}

fn parse_value_size(s: &str) -> Result<ValueSize, String> {
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (
            parse_size(a).map_err(|e| e.to_string())?,
            parse_size(b).map_err(|e| e.to_string())?,
        ),
        None => {
            let v = parse_size(s).map_err(|e| e.to_string())?;
            (v, v)
        }
    };
    if min == 0 || min > max || max > 2 << 20 {
        return Err(format!("{s:?}: sizes must be 1 B to 2 MiB, smallest first"));
    }
    Ok(ValueSize {
        min: min as usize,
        max: max as usize,
    })
}

fn parse_hotspot(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("{s:?}: expected FRACTION:SHARE, both in (0, 1), e.g. 0.1:0.9");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if !(a > 0.0 && a < 1.0 && b > 0.0 && b < 1.0) {
        return Err(bad());
    }
    Ok((a, b))
}

fn parse_mix(s: &str) -> Result<OpMix, String> {
    let mut m = OpMix::default();
    for part in s.split(',') {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?}: expected OP:SHARE, e.g. read:90"))?;
        let v: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{part:?}: the share must be a number >= 0"))?;
        let k = k.trim();
        let op = Op::from_str(k, false).map_err(|_| {
            format!("{k:?}: unknown operation (read, insert, invalidate, prefetch)")
        })?;
        *m.share_mut(op) = v;
    }
    if m.total() <= 0.0 {
        return Err("the mix has no operations".into());
    }
    Ok(m)
}

fn parse_cores(s: &str) -> Result<CoreList, String> {
    let mut out = vec![];
    for part in s.split(',') {
        let num = |x: &str| {
            let c = x
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{x:?} is not a core number"))?;
            if c >= MAX_CORES {
                return Err(format!("core {c} is out of range (0-{})", MAX_CORES - 1));
            }
            Ok(c)
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let c = num(part)?;
                (c, c)
            }
        };
        if a > b {
            return Err(format!("{part:?}: range is backwards"));
        }
        // Both below MAX_CORES: no overflow.
        if out.len() + (b - a + 1) > MAX_CORES {
            return Err(format!("more than {MAX_CORES} cores listed"));
        }
        out.extend(a..=b);
    }
    Ok(CoreList(out))
}

/// Parses the command line, merged over the config file if one is given.
pub fn parse() -> Result<Args, clap::Error> {
    let argv: Vec<String> = std::env::args().collect();
    parse_from(argv)
}

/// [`parse`] over explicit arguments (tests).
pub fn parse_from(argv: Vec<String>) -> Result<Args, clap::Error> {
    let first = Args::try_parse_from(&argv)?;
    let Some(path) = &first.config else {
        return Ok(first);
    };
    let name = path.display().to_string();
    let text = read_config(path).map_err(|e| config_error(&name, e))?;
    parse_with_config(argv, &name, &text)
}

/// The error of a config file named `name`.
fn config_error(name: &str, e: ConfigError) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::InvalidValue,
        format!("--config {name}: {e}\n"),
    )
}

/// Reads a config file of at most [`MAX_CONFIG_BYTES`].
fn read_config(path: &std::path::Path) -> Result<String, ConfigError> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge);
    }
    Ok(text)
}

/// The command line `argv` over the config file `text` (named `name` in
/// errors): the file's options first, so that the command line overrides
/// them; a list option given on the command line replaces the file's.
/// Reads no file.
pub fn parse_with_config(argv: Vec<String>, name: &str, text: &str) -> Result<Args, clap::Error> {
    let from_file = parse_config_text(text).map_err(|e| config_error(name, e))?;
    let cli_lists: Vec<String> = argv
        .iter()
        .skip(1)
        .filter_map(|a| {
            a.strip_prefix("--")
                .map(|n| n.split('=').next().unwrap_or(n).to_string())
        })
        .collect();
    let mut merged = vec![argv
        .first()
        .cloned()
        .unwrap_or_else(|| "polarc-perf".into())];
    for (k, v) in from_file {
        if k == "l2" && cli_lists.iter().any(|c| c == "l2") {
            continue;
        }
        // `--name=value`: a value is never taken for an option.
        merged.push(match v {
            Some(v) => format!("--{k}={v}"),
            None => format!("--{k}"),
        });
    }
    merged.extend(argv.into_iter().skip(1));
    Args::try_parse_from(merged).map_err(|e| {
        let msg = e.to_string();
        clap::Error::raw(e.kind(), format!("(with --config {name}) {msg}"))
    })
}

/// A config file's text as command-line options: `(name, value)`; flags
/// that are `true` have no value, `false` ones are left out.
pub fn parse_config_text(text: &str) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge);
    }
    let table: toml::Table = text.parse()?;
    let mut out = vec![];
    for (k, v) in table {
        let name = k.replace('_', "-");
        if name == "config" {
            return Err(ConfigError::Nested);
        }
        if matches!(name.as_str(), "help" | "version" | "h" | "V") {
            return Err(ConfigError::NotAnOption(k));
        }
        let scalar = |v: &toml::Value| -> Result<String, ConfigError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(ConfigError::Value {
                    key: k.clone(),
                    value: other.clone(),
                }),
            }
        };
        match &v {
            toml::Value::Boolean(true) => out.push((name, None)),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for i in items {
                    out.push((name.clone(), Some(scalar(i)?)));
                }
            }
            v => out.push((name, Some(scalar(v)?))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary config files are refused or read; never a panic.
        #[test]
        fn config_files_never_panic(text in "[a-z_\\-=\\[\\]\"0-9., \n]{0,120}") {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("c.toml");
            std::fs::write(&p, &text).unwrap();
            let argv = vec!["polarc-perf".to_string(), "--config".into(), p.display().to_string()];
            let _ = parse_from(argv);
        }
    }

    proptest! {
        /// Arbitrary config text, over the command line, then checked and
        /// every derived size computed: errors or values; never a panic.
        #[test]
        fn config_text_and_checks_never_panic(
            text in "[a-z_\\-=\\[\\]\"0-9., \n]{0,160}",
            arc in prop::sample::select(vec!["48MiB", "15EiB", "16383PiB", "12297829382473034752"]),
            trace in any::<bool>(),
        ) {
            let mut argv = vec!["polarc-perf".to_string(), "--arc".into(), arc.into()];
            if trace {
                argv.extend(["--trace".into(), "t.lis".into()]);
            }
            if let Ok(a) = parse_with_config(argv, "c.toml", &text) {
                let _ = a.check();
                let _ = a.pool_capacity();
                let _ = a.mapped_pool();
                let _ = a.feed_arc();
                let _ = a.client_depth();
                let _ = a.reactor_depth(usize::MAX);
            }
        }
    }

    /// The error of `check()` (or of parsing) for `v`.
    fn check_err(v: &[&str]) -> String {
        match args(v) {
            Ok(a) => a.check().unwrap_err().to_string(),
            Err(e) => e,
        }
    }

    #[test]
    fn config_arithmetic_is_checked_and_names_the_option() {
        let e = check_err(&["--arc", "15EiB", "--trace", "t.lis"]);
        assert_eq!(
            e,
            "--arc 15EiB: ARC × 1.5 + 32 MiB (the buffer pool) does not fit in 64 bits"
        );
        // With --pool the trace's pool is not computed; the engine's
        // default is not used either.
        let a = args(&["--arc", "15EiB", "--trace", "t.lis", "--pool", "1GiB"]).unwrap();
        assert_eq!(a.pool_capacity().unwrap(), Some(1 << 30));
        assert_eq!(a.mapped_pool().unwrap(), 1 << 30);
        let e = check_err(&["--arc", "15EiB", "--l2", "none"]);
        assert_eq!(
            e,
            "--arc 15EiB: ARC × 1.5 + 32 MiB (the buffer pool) does not fit in 64 bits"
        );
        let e = check_err(&["--l2-write-size", "4EiB"]);
        assert!(
            e.starts_with(
                "--arc 48MiB with --l2-write-size 4EiB on 1 --l2 devices: the buffer pool"
            ) && e.ends_with("does not fit in 64 bits"),
            "{e}"
        );
        let a = args(&["--arc", "1GiB", "--l2", "mem:1GiB", "--l2", "mem:1GiB"]).unwrap();
        let want = polarc::Config {
            arc_capacity: 1 << 30,
            max_block_size: 4096,
            ..polarc::Config::default()
        }
        .pool_capacity_with_l2(2)
        .unwrap();
        assert_eq!(a.mapped_pool().unwrap(), want, "the engine's pool, checked");
        let e = check_err(&[
            "--bench-feed",
            "--keys",
            "4503599627370496",
            "--l2",
            "mem:1GiB",
        ]);
        assert_eq!(
            e,
            "--keys 4503599627370496 × --value-size 4KiB: the feed benchmark's ARC (× 1.25) \
             and buffer pool does not fit in 64 bits"
        );
        let a = args(&["--keys", "1000", "--value-size", "1KiB"]).unwrap();
        assert_eq!(a.feed_arc().unwrap(), 1250 * 1024);
        let e = check_err(&["--arc", "16EiB"]);
        assert!(e.contains("size \"16EiB\" is out of range"), "{e}");
        let a = args(&["--clients", "4096", "--queue-depth", "65536"]).unwrap();
        assert_eq!(a.client_depth().unwrap(), 1 << 28);
        assert_eq!(
            a.reactor_depth(usize::MAX).unwrap_err().to_string(),
            format!(
                "{} reactors × --queue-depth 65536 does not fit in 64 bits",
                usize::MAX
            )
        );
        let e = check_err(&["--duration", "18000000000000000000s"]);
        assert!(
            e.starts_with("--duration ")
                && e.ends_with("the end of the run does not fit in the clock"),
            "{e}"
        );
    }

    #[test]
    fn counts_and_cores_are_bounded() {
        assert_eq!(
            check_err(&["--reactors", "65536"]),
            "--reactors 65536: at most 65535"
        );
        assert_eq!(
            check_err(&["--clients", "4097"]),
            "--clients 4097: at most 4096"
        );
        assert_eq!(
            check_err(&["--queue-depth", "18446744073709551615"]),
            "--queue-depth 18446744073709551615: at most 65536"
        );
        assert!(check_err(&["--cores", "0-18446744073709551615"])
            .contains("core 18446744073709551615 is out of range (0-1023)"));
        assert!(check_err(&["--cores", "0-1023,0"]).contains("more than 1024 cores listed"));
        assert_eq!(
            args(&["--cores", "0-1023"]).unwrap().cores.unwrap().0.len(),
            1024
        );
        assert_eq!(spdk_core_mask(0).unwrap(), "0x1");
        assert_eq!(
            spdk_core_mask(127).unwrap(),
            format!("0x{:x}", 1u128 << 127)
        );
        for core in [128, 1 << 32, usize::MAX] {
            assert!(matches!(spdk_core_mask(core), Err(ArgError::CoreMask(c)) if c == core));
        }
        let e = check_err(&["--spdk-perf-compare", "--cores", "200,1"]);
        assert!(
            e.starts_with("--cores: core 200 is beyond the 128 cores"),
            "{e}"
        );
        args(&["--spdk-perf-compare", "--cores", "127,200"])
            .unwrap()
            .check()
            .unwrap();
    }

    #[test]
    fn soak_options_parse_and_are_checked() {
        let a = args(&[
            "--verify",
            "--faults",
            "eio=0.001,hang=0.0001:forever",
            "--backing-faults",
            "fail=0.01,slow=0.1:20ms",
            "--backing-timeout",
            "500ms",
            "--l2-read-deadline",
            "20ms",
            "--l2-write-deadline",
            "300ms",
            "--shutdown-timeout",
            "2s",
            "--hang-limit",
            "5s",
        ])
        .unwrap();
        a.check().unwrap();
        assert!(a.verify);
        let f = a.faults.as_ref().unwrap();
        assert_eq!((f.eio, f.hang), (Some(0.001), Some((0.0001, None))));
        let b = a.backing_faults.as_ref().unwrap();
        assert_eq!(b.slow, Some((0.1, Duration::from_millis(20))));
        assert_eq!(a.backing_timeout, Some(Duration::from_millis(500)));
        assert_eq!(a.l2_read_deadline, Some(Duration::from_millis(20)));
        assert_eq!(a.l2_write_deadline, Some(Duration::from_millis(300)));
        assert_eq!(a.shutdown_timeout, Some(Duration::from_secs(2)));
        assert_eq!(a.hang_limit, Some(Duration::from_secs(5)));
        let a = args(&[]).unwrap();
        assert!(!a.verify && a.faults.is_none() && a.backing_timeout.is_none());
        // --help states the engine's defaults.
        let c = polarc::Config::default();
        assert_eq!(c.backing_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.l2.read_deadline, Duration::from_millis(25));
        assert_eq!(c.l2.write_deadline, Duration::from_secs(2));
        assert_eq!(c.l2.poll_budget, Duration::from_micros(20));
        // A zero poll budget is allowed: one block per poll.
        let a = args(&["--l2-poll-budget", "0s"]).unwrap();
        a.check().unwrap();
        assert_eq!(a.l2_poll_budget, Some(Duration::ZERO));

        for flag in [
            "--backing-timeout",
            "--l2-read-deadline",
            "--l2-write-deadline",
            "--shutdown-timeout",
            "--hang-limit",
        ] {
            assert_eq!(
                check_err(&[flag, "0s"]),
                format!("{flag} must be above zero")
            );
        }
        // Bad specs name the flag, the spec and the part at fault.
        let e = args(&["--faults", "eio=0.1,torn=2"]).unwrap_err();
        assert!(
            e.contains("--faults") && e.contains("eio=0.1,torn=2") && e.contains("\"torn=2\""),
            "{e}"
        );
        let e = args(&["--backing-faults", "slow=0.1"]).unwrap_err();
        assert!(e.contains("missing duration"), "{e}");
        // --verify and --backing-faults need the simulated store, and
        // client-driven runs.
        assert_eq!(
            check_err(&["--verify", "--backing", "file:/tmp/x"]),
            "--verify needs the simulated store (--backing sim:LATENCY)"
        );
        assert_eq!(
            check_err(&["--backing-faults", "fail=0.1", "--backing", "file:/x"]),
            "--backing-faults needs the simulated store (--backing sim:LATENCY)"
        );
        assert_eq!(
            check_err(&["--verify", "--in-reactor"]),
            "--verify is unsupported with --in-reactor"
        );
        assert_eq!(
            check_err(&["--verify", "--trace", "t.lis"]),
            "--verify is unsupported with --trace"
        );
        assert_eq!(
            check_err(&["--backing-faults", "hang=0.1", "--trace", "t.lis"]),
            "--backing-faults is unsupported with --trace"
        );
        assert_eq!(
            check_err(&["--faults", "eio=0.1", "--bench-feed", "--l2", "mem:1GiB"]),
            "--faults is unsupported with --bench-feed"
        );
        assert_eq!(
            check_err(&["--verify", "--engine", "foyer"]),
            "--verify is unsupported with --engine foyer"
        );
        assert_eq!(
            check_err(&["--verify", "--value-size", "8-64"]),
            "--verify needs values of at least 16 B (--value-size)"
        );
        assert!(
            check_err(&["--verify", "--keys", "1000000000000"]).contains("--verify tracks at most")
        );
        // Faults on L2 alone go with in-reactor jobs and traces.
        args(&["--faults", "flip=0.1", "--in-reactor"])
            .unwrap()
            .check()
            .unwrap();
    }

    #[test]
    fn trace_limits_have_defaults_and_flags() {
        let a = args(&[]).unwrap();
        assert_eq!(a.trace_limits(), trace::Limits::default());
        assert_eq!(a.trace_limits().max_bytes, 8 << 30);
        let a = args(&["--trace-max-bytes", "64GiB", "--trace-max-accesses", "1000"]).unwrap();
        let l = a.trace_limits();
        assert_eq!(
            (l.max_bytes, l.max_accesses, l.max_line),
            (64 << 30, 1000, 64 << 10)
        );
        assert!(args(&["--trace-max-bytes", "lots"])
            .unwrap_err()
            .contains("lots"));
    }

    #[test]
    fn hostile_config_files_are_errors() {
        let cfg = |t: &str| parse_with_config(vec!["polarc-perf".into()], "c.toml", t);
        let e = cfg("arc = \"15EiB\"\ntrace = \"t.lis\"\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--arc 15EiB: ARC × 1.5 + 32 MiB"),
            "{e}"
        );
        // A value is never taken for an option.
        let e = cfg("keys = \"--help\"\n").unwrap_err();
        assert_ne!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("--help"), "{e}");
        for (text, needle) in [
            ("help = true\n", "help: not an option a config file may set"),
            ("keys = 99999999999999999999\n", "c.toml"),
            ("arc = { a = 1 }\n", "unsupported value"),
            ("l2 = [[\"mem:1GiB\"]]\n", "unsupported value"),
            ("keys = -1\n", "-1"),
            ("zipf = nan\n", ""),
        ] {
            match cfg(text) {
                Err(e) => assert!(e.to_string().contains(needle), "{text:?}: {e}"),
                Ok(a) => assert!(a.check().is_err(), "{text:?} passed"),
            }
        }
        let huge = "#".repeat(MAX_CONFIG_BYTES as usize + 1);
        assert!(matches!(
            parse_config_text(&huge),
            Err(ConfigError::TooLarge)
        ));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.toml");
        std::fs::write(&p, &huge).unwrap();
        let e = args(&["--config", p.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("larger than 1MiB"), "{e}");
        assert_eq!(
            parse_config_text("arc = \"1GiB\"\nl2-buffered = true\nsettle_l2 = false\n").unwrap(),
            vec![
                ("arc".to_string(), Some("1GiB".to_string())),
                ("l2-buffered".to_string(), None)
            ]
        );
    }

    fn args(v: &[&str]) -> Result<Args, String> {
        let mut a = vec!["polarc-perf".to_string()];
        a.extend(v.iter().map(|s| s.to_string()));
        parse_from(a).map_err(|e| e.to_string())
    }

    #[test]
    fn values_parse_and_bad_ones_name_the_problem() {
        let a = args(&[
            "--value-size",
            "1KiB-8KiB",
            "--mix",
            "read:9,insert:1",
            "--cores",
            "0-2,5",
        ])
        .unwrap();
        assert_eq!(
            a.value_size,
            ValueSize {
                min: 1024,
                max: 8192
            }
        );
        assert_eq!((a.mix.read, a.mix.insert), (9.0, 1.0));
        assert_eq!(a.cores, Some(CoreList(vec![0, 1, 2, 5])));
        assert!(args(&["--value-size", "8KiB-1KiB"])
            .unwrap_err()
            .contains("smallest first"));
        assert!(args(&["--mix", "write:5"])
            .unwrap_err()
            .contains("unknown operation"));
        assert!(args(&["--hotspot", "2:0.5"])
            .unwrap_err()
            .contains("FRACTION:SHARE"));
        assert!(args(&["--cores", "3-1"]).unwrap_err().contains("backwards"));
        assert!(args(&["--arc", "lots"]).unwrap_err().contains("lots"));
    }

    #[test]
    fn the_config_file_takes_the_same_keys_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("perf.toml");
        std::fs::write(
            &p,
            "arc = \"256MiB\"\nkeys = 1000\nl2 = [\"mem:64MiB\", \"mem:32MiB\"]\nin-reactor = true\nsettle_l2 = false\nzipf = 0.5\n",
        )
        .unwrap();
        let c = p.to_str().unwrap();
        let a = args(&["--config", c, "--keys", "5"]).unwrap();
        assert_eq!((a.arc, a.keys, a.zipf), (256 << 20, 5, 0.5));
        assert_eq!(a.l2, vec!["mem:64MiB", "mem:32MiB"]);
        assert!(a.in_reactor && !a.settle_l2);
        let a = args(&["--config", c, "--l2", "none"]).unwrap();
        assert_eq!(a.l2, vec!["none"]);
        std::fs::write(&p, "bogus = 1\n").unwrap();
        let e = args(&["--config", c]).unwrap_err();
        assert!(e.contains("--bogus") && e.contains("--config"), "{e}");
        std::fs::write(&p, "arc = \n").unwrap();
        assert!(args(&["--config", c]).unwrap_err().contains("--config"));
    }
}
