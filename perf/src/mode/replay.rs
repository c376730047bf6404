//! Trace replay: the trace's accesses in order, one at a time, through polarc.

use super::engine::{self, SoakRun, L2};
use crate::error::Error;
use polarc::SimStore;
use polarc_perf::cli::Args;
use polarc_perf::progress::Progress;
use polarc_perf::trace::{self, Access, CsvOptions};
use polarc_perf::workload::{self, Totals};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Each object's current size, by id: the replay sets it before each
/// access, and the backing store serves that many bytes.
type Sizes = Arc<Mutex<HashMap<u64, u32>>>;

/// Replays the trace at `path` on polarc, and reports.
pub fn run(a: &Args, path: &Path) -> Result<(), Error> {
    let mut l2 = L2::open(a)?;
    let (trace, max_value) = load(a, path)?;
    let sizes = Sizes::default();
    let b = engine::builder(a, max_value).backing(store(&sizes, a.compressibility)?);
    let e = engine::build(a, b, &mut l2)?;
    let progress = Progress::new();
    let w = a.workload();
    println!(
        "replay: {} ({:?}), {} accesses, in order, one at a time{}",
        path.display(),
        a.trace_format,
        trace.len(),
        if e.config().reactors > 1 {
            format!("; the ARC is sharded over {} reactors", e.config().reactors)
        } else {
            String::new()
        }
    );
    let (r, stats) = workload::replay(&e, &trace, &sizes, a.timeline_interval, &|p, d, n| {
        progress.update(p, d, n)
    })?;
    progress.finish();
    let run = SoakRun {
        totals: Totals {
            ops: r.ops,
            errors: r.errors,
            hung_ops: 0,
        },
        hang_limit: engine::hang_limit(a, &e),
        verify: None,
        backing_faults: None,
    };
    engine::finish(a, &w, e, l2, &r, &stats, run)
}

/// Reads the trace; returns it and its largest object's size.
fn load(a: &Args, path: &Path) -> Result<(Vec<Access>, usize), Error> {
    let o = CsvOptions {
        key_column: a.csv_key_column,
        size_column: a.csv_size_column,
        delimiter: a.csv_delimiter,
        header: a.csv_header,
        default_size: u32::try_from(a.value_size.max).unwrap_or(u32::MAX),
    };
    eprintln!("reading {} ...", path.display());
    let t = trace::read_all_with(path, a.trace_format, &o, &a.trace_limits())?;
    if t.is_empty() {
        return Err(Error::EmptyTrace(path.into()));
    }
    let max = t.iter().map(|x| x.size).max().unwrap_or(512) as usize;
    if max > 2 << 20 {
        return Err(Error::ObjectTooLarge {
            path: path.into(),
            size: max,
        });
    }
    Ok((t, max))
}

/// A backing store that serves each trace object at its current size.
fn store(sizes: &Sizes, ratio: f64) -> Result<polarc::FnStore, Error> {
    let sizes = sizes.clone();
    polarc::FnStore::new(2, move |key: &[u8]| {
        let id = u64::from_le_bytes(
            key.try_into()
                .map_err(|_| polarc::BackingError::Other("not a trace key".into()))?,
        );
        let size = *sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .unwrap_or(&512);
        Ok(SimStore::content(key, size as usize, ratio))
    })
    .map_err(Error::TraceStore)
}
