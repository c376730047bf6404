//! A synthetic workload run: from client threads, or as jobs in the reactors.

use super::engine::{self, SoakRun, L2};
use crate::error::Error;
use polarc::backing::SimFaultCounters;
use polarc::{EngineBuilder, Latency, SimStore};
use polarc_perf::cli::Args;
use polarc_perf::progress::Progress;
use polarc_perf::units::{parse_duration, UnitError};
use polarc_perf::verify::{Values, Verifier};
use polarc_perf::workload::{self, Checks, Driver, Popularity, Workload};
use std::sync::Arc;

/// A `--backing` spec that does not give a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackingError {
    /// Not `sim:…` or `file:…`.
    #[error("expected sim:LATENCY, sim:MIN-MAX or file:PATH")]
    Syntax,
    /// A latency that does not parse.
    #[error(transparent)]
    Latency(#[from] UnitError),
    /// `sim:MIN-MAX` with MIN above MAX.
    #[error("the range is backwards")]
    Backwards,
    /// `--verify` or `--backing-faults` on a store that is not simulated.
    #[error("--verify and --backing-faults need the simulated store (sim:…)")]
    NeedsSim,
    /// A file store with a `--value-size` range.
    #[error("a file store needs a fixed --value-size")]
    FileNeedsFixedSize,
    /// A file too small for `--keys`.
    #[error("{len} B holds {keys} values of {size} B, fewer than --keys {want}")]
    FileTooSmall {
        /// The file's length.
        len: u64,
        /// Values it holds.
        keys: u64,
        /// Value size.
        size: usize,
        /// `--keys`.
        want: u64,
    },
    /// The store could not be opened or started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs `a`'s workload on polarc, and reports.
pub fn run(a: &Args) -> Result<(), Error> {
    let mut l2 = L2::open(a)?;
    let verify = a.verify.then(|| {
        let values = Values {
            min: a.value_size.min,
            max: a.value_size.max,
            ratio: a.compressibility,
        };
        Arc::new(Verifier::new(a.keys, a.clients, values))
    });
    let (b, backing_faults) =
        with_backing(engine::builder(a, a.value_size.max), a, verify.as_ref()).map_err(
            |source| Error::Backing {
                spec: a.backing.clone(),
                source,
            },
        )?;
    let e = engine::build(a, b, &mut l2)?;
    let progress = Progress::new();
    let w = a.workload();
    println!("workload: {}", describe(&w, a));
    let driver = if a.in_reactor {
        Driver::InReactor
    } else {
        Driver::Clients
    };
    let checks = Checks {
        verify: verify.clone(),
        hang_limit: engine::hang_limit(a, &e),
    };
    let on_progress = |p: &str, d, n| progress.update(p, d, n);
    let (r, stats, totals) = match a.rate_sweep {
        Some(target) => {
            workload::sweep(&e, &w, driver, &checks, &on_progress, target, a.sweep_class)?
        }
        None => workload::run(&e, &w, driver, &checks, &on_progress)?,
    };
    progress.finish();
    let run = SoakRun {
        totals,
        hang_limit: checks.hang_limit,
        verify,
        backing_faults,
    };
    engine::finish(a, &w, e, l2, &r, &stats, run)
}

/// The workload in one line.
fn describe(w: &Workload, a: &Args) -> String {
    let pop = match w.popularity {
        Popularity::Uniform => "uniform".to_string(),
        Popularity::Zipf(t) => format!("zipf {t}"),
        Popularity::Hotspot { keys, share } => {
            format!(
                "hotspot: {:.0}% of keys get {:.0}% of ops",
                keys * 100.0,
                share * 100.0
            )
        }
    };
    let size = if a.value_size.min == a.value_size.max {
        format!("{} B", a.value_size.min)
    } else {
        format!("{}-{} B", a.value_size.min, a.value_size.max)
    };
    let scan = if w.scan_share > 0.0 {
        format!(" + {:.0}% sequential scan", w.scan_share * 100.0)
    } else {
        String::new()
    };
    let m = &w.mix;
    let amount = match w.duration {
        Some(d) => format!("{d:?} measured"),
        None => format!("{} measured", w.ops),
    };
    format!(
        "{} keys x {size}, {pop}{scan}; mix read {} / insert {} / invalidate {} / prefetch {}; {} warm-up + {amount}; {}",
        w.keys, m.read, m.insert, m.invalidate, m.prefetch, w.warmup_ops,
        if a.in_reactor {
            format!("in-reactor jobs, QD {} per reactor", w.queue_depth)
        } else {
            format!("{} clients x QD {}", w.clients, w.queue_depth)
        }
    )
}

/// The `--backing` store: simulated (with `--backing-faults`, and
/// `--verify`'s versions as its content), or values in a file. Returns the
/// builder, and the counters of the faults the store injects.
fn with_backing(
    b: EngineBuilder,
    a: &Args,
    verify: Option<&Arc<Verifier>>,
) -> Result<(EngineBuilder, Option<Arc<SimFaultCounters>>), BackingError> {
    let (min, max) = (a.value_size.min, a.value_size.max);
    match a.backing.split_once(':') {
        Some(("sim", lat)) => {
            let latency = match lat.split_once('-') {
                Some((x, y)) => {
                    let (x, y) = (parse_duration(x)?, parse_duration(y)?);
                    if x > y {
                        return Err(BackingError::Backwards);
                    }
                    Latency::Uniform(x, y)
                }
                None => Latency::Fixed(parse_duration(lat)?),
            };
            let mut s = SimStore::with_sizes(latency, min, max, a.compressibility)?;
            let mut counters = None;
            if let Some(f) = &a.backing_faults {
                s = s.with_faults(f.config());
                counters = Some(s.fault_counters());
            }
            if let Some(v) = verify {
                let v = v.clone();
                s = s.with_content(move |key| v.content(key));
            }
            Ok((b.backing(s), counters))
        }
        Some(("file", path)) => {
            if verify.is_some() || a.backing_faults.is_some() {
                return Err(BackingError::NeedsSim);
            }
            if min != max {
                return Err(BackingError::FileNeedsFixedSize);
            }
            let len = std::fs::metadata(path)?.len();
            let keys = len / min as u64;
            if keys < a.keys {
                return Err(BackingError::FileTooSmall {
                    len,
                    keys,
                    size: min,
                    want: a.keys,
                });
            }
            let map: Arc<polarc::backing::KeyMap> = Arc::new(move |k: &[u8]| {
                let i = u64::from_le_bytes(k.try_into().ok()?);
                (i < keys).then_some((i * min as u64, min))
            });
            let s = polarc::FileStore::open(std::path::Path::new(path), 4, map)?;
            Ok((b.backing(s), None))
        }
        _ => Err(BackingError::Syntax),
    }
}
