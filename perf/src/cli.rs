//! The command line, and the TOML config file that takes the same keys.

use crate::trace::Format;
use crate::units::{parse_duration, parse_size};
use crate::workload::{Op, OpMix, Popularity, Workload};
use clap::{Parser, ValueEnum};
use std::time::Duration;

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
    /// ARC capacity.
    #[arg(long, default_value = "48MiB", value_parser = parse_size)]
    pub arc: u64,
    /// Replacement policy.
    #[arg(long, value_enum, default_value = "arc")]
    pub policy: Policy,
    /// Buffer pool size. Default: the engine's (ARC × 1.5 + 32 MiB, more
    /// with L2), or ARC × 3 + 64 MiB when replaying a trace: with objects of
    /// many sizes, slabs stay with the size classes that first took them.
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
        Ok(())
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
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{x:?} is not a core number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{part:?}: range is backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
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
    let from_file = config_args(path).map_err(|e| {
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("--config {}: {e}\n", path.display()),
        )
    })?;
    // The file's options first, so that the command line overrides them;
    // a list option given on the command line replaces the file's.
    let cli_lists: Vec<String> = argv
        .iter()
        .filter_map(|a| {
            a.strip_prefix("--")
                .map(|n| n.split('=').next().unwrap_or(n).to_string())
        })
        .collect();
    let mut merged = vec![argv[0].clone()];
    for (k, v) in from_file {
        if k == "l2" && cli_lists.iter().any(|c| c == "l2") {
            continue;
        }
        merged.push(format!("--{k}"));
        if let Some(v) = v {
            merged.push(v);
        }
    }
    merged.extend(argv.into_iter().skip(1));
    Args::try_parse_from(merged).map_err(|e| {
        let msg = e.to_string();
        clap::Error::raw(
            e.kind(),
            format!("(with --config {}) {msg}", path.display()),
        )
    })
}

/// The config file as command-line options: `(name, value)`; flags that
/// are `true` have no value, `false` ones are left out.
fn config_args(path: &std::path::Path) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let text = std::fs::read_to_string(path)?;
    let table: toml::Table = text.parse()?;
    let mut out = vec![];
    for (k, v) in table {
        let name = k.replace('_', "-");
        if name == "config" {
            return Err(ConfigError::Nested);
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
