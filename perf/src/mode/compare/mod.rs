//! Comparisons: foyer side by side, and after a run fio, spdk_nvme_perf and raw LZ4.

#[cfg(feature = "compare-foyer")]
pub mod foyer_peer;

use crate::error::Error;
use polarc::{SimStore, Stats};
use polarc_perf::cli::{ArgError, Args};
use polarc_perf::devices::{self, OpenOptions};
use polarc_perf::report::Report;
use serde_json::Value;

/// A comparison that could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// fio is not installed.
    #[error("--fio-compare: cannot run fio ({0}); install it (apt install fio)")]
    FioMissing(#[source] std::io::Error),
    /// fio failed; its stderr.
    #[error("--fio-compare: fio failed: {0}")]
    FioFailed(String),
    /// fio's report does not parse.
    #[error("--fio-compare: fio's JSON: {0}")]
    FioJson(#[source] serde_json::Error),
    /// spdk_nvme_perf failed.
    #[cfg(feature = "spdk")]
    #[error(transparent)]
    Spdk(#[from] polarc_perf::spdk::SpdkError),
    /// `--spdk-perf-compare` in a build without SPDK.
    #[cfg(not(feature = "spdk"))]
    #[error("--spdk-perf-compare: unsupported: this polarc-perf was built without SPDK (--features spdk)")]
    NoSpdk,
}

/// Runs the workload through foyer instead (`--engine foyer`).
pub fn foyer(a: &Args) -> Result<(), Error> {
    #[cfg(feature = "compare-foyer")]
    {
        foyer_peer::run(a)
    }
    #[cfg(not(feature = "compare-foyer"))]
    {
        let _ = a;
        Err(Error::NoFoyer)
    }
}

/// The comparisons after a run, by their field in the JSON report.
#[derive(Debug, Default)]
pub struct Comparisons {
    /// `--fio-compare`.
    pub fio: Option<Value>,
    /// `--lz4-compare`.
    pub lz4: Option<Value>,
    /// `--spdk-perf-compare`.
    pub spdk_nvme_perf: Option<Value>,
}

/// Runs the comparisons `a` asks for after polarc's run `r`.
pub fn after_run(
    a: &Args,
    r: &Report,
    s: &Stats,
    trids: &[String],
    o: &OpenOptions,
) -> Result<Comparisons, Error> {
    let lz4 = a
        .lz4_compare
        .then(|| lz4_compare(a.value_size.max, a.compressibility, s));
    let fio = if a.fio_compare {
        Some(fio_compare(a, r, s)?)
    } else {
        None
    };
    let spdk_nvme_perf = if a.spdk_perf_compare {
        Some(spdk_perf_compare(a, r, s, trids, o)?)
    } else {
        None
    };
    Ok(Comparisons {
        fio,
        lz4,
        spdk_nvme_perf,
    })
}

/// Runs fio's io_uring 4K random read, O_DIRECT, on the L2 file at the
/// run's total queue depth, over the bytes L2 used, and compares.
fn fio_compare(a: &Args, r: &Report, s: &Stats) -> Result<Value, Error> {
    let spec = a.l2.iter().find(|s| s.as_str() != "none");
    let path = match spec.and_then(|s| s.split_once(':')) {
        Some(("file", rest)) => devices::file_spec(rest).0.to_string(),
        Some(("uring", p)) => p.to_string(),
        _ => return Err(ArgError::FioNeedsFile.into()),
    };
    let depth = total_depth(a, s)?;
    let size = s.l2.l2_write_bytes.max(64 << 20).next_multiple_of(1 << 20);
    let out = std::process::Command::new("fio")
        .args([
            "--name=l2",
            &format!("--filename={path}"),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            &format!("--iodepth={depth}"),
            &format!("--size={size}"),
            "--runtime=10",
            "--time_based",
            "--output-format=json",
        ])
        .output()
        .map_err(CompareError::FioMissing)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(CompareError::FioFailed(stderr).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(CompareError::FioJson)?;
    let iops = v["jobs"][0]["read"]["iops"].as_f64().unwrap_or(0.0);
    let what = format!("fio io_uring 4K randread, O_DIRECT, QD {depth} on {path}");
    Ok(compare_l2_hits(&what, "fio_iops", iops, depth, r))
}

/// Runs SPDK's spdk_nvme_perf on the run's SPDK device at its total queue
/// depth, on the first reactor's core, and compares L2-hit throughput.
fn spdk_perf_compare(
    a: &Args,
    r: &Report,
    s: &Stats,
    trids: &[String],
    o: &OpenOptions,
) -> Result<Value, Error> {
    #[cfg(feature = "spdk")]
    {
        let trid = trids.first().ok_or(ArgError::SpdkPerfNeedsSpdk)?;
        let depth = total_depth(a, s)?;
        let core = o.cores[0];
        let iops = polarc_perf::spdk::nvme_perf(trid, depth, core).map_err(CompareError::from)?;
        let what = format!("spdk_nvme_perf 4K randread, QD {depth}, core {core}");
        let mut v = compare_l2_hits(&what, "spdk_nvme_perf_iops", iops, depth, r);
        v["core"] = core.into();
        Ok(v)
    }
    #[cfg(not(feature = "spdk"))]
    {
        let _ = (a, r, s, trids, o);
        Err(CompareError::NoSpdk.into())
    }
}

/// Requests in flight over the whole run: jobs × depth, or clients × depth.
fn total_depth(a: &Args, s: &Stats) -> Result<usize, ArgError> {
    if a.in_reactor {
        a.reactor_depth(s.reactors.len())
    } else {
        a.client_depth()
    }
}

/// Prints and returns polarc's L2 hits per second against a raw device
/// benchmark's IOPS (`what` names it; `key` is its JSON field).
fn compare_l2_hits(what: &str, key: &str, iops: f64, depth: usize, r: &Report) -> Value {
    let l2_ops = r.ops_per_sec * r.hit_ratio.l2;
    let ratio = l2_ops / iops.max(1.0);
    println!(
        "{what}: {iops:.0} IOPS; polarc L2 hits {l2_ops:.0}/s (all ops {:.0}/s): ratio {ratio:.2}",
        r.ops_per_sec
    );
    let mut v = serde_json::json!({
        "depth": depth, "polarc_l2_hits_per_sec": l2_ops,
        "polarc_ops_per_sec": r.ops_per_sec, "ratio": ratio,
    });
    v[key] = iops.into();
    v
}

/// Raw LZ4 block compression speed, one thread, on values like the
/// workload's (the feed's reference), against the measured feed speed.
pub fn lz4_compare(value: usize, ratio: f64, s: &Stats) -> Value {
    let blocks: Vec<Vec<u8>> = (0..256u64)
        .map(|i| SimStore::content(&i.to_le_bytes(), value, ratio))
        .collect();
    let mut dst = vec![0u8; value + value / 255 + 16];
    let start = std::time::Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        for b in &blocks {
            let n = lz4::block::compress_to_buffer(b, None, false, &mut dst).unwrap_or(0);
            std::hint::black_box(n);
            bytes += b.len() as u64;
        }
    }
    let lz4 = bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    let feed = s.l2.l2_feed_bytes as f64 / (1 << 20) as f64 / (s.l2.l2_feed_ns.max(1) as f64 / 1e9);
    println!(
        "LZ4 raw compression on the same kind of values: {lz4:.0} MiB/s; L2 feed {feed:.0} MiB/s: ratio {:.2}",
        feed / lz4
    );
    serde_json::json!({ "lz4_mib_per_sec": lz4, "feed_mib_per_sec": feed, "ratio": feed / lz4 })
}
