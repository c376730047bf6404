//! Trace replay: the trace's accesses in order, one at a time, through polarc.

use super::engine::{self, SoakRun, L2};
use crate::error::Error;
use polarc::shard::{hash_key, shard_of};
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
    let fixed = if a.replay_through_clients {
        None
    } else {
        let sizes = fixed_sizes(&trace);
        if sizes.is_none() {
            l2.note(
                "replay through clients: the trace changes objects' sizes, which the inline store cannot follow"
                    .into(),
            );
        }
        sizes
    };
    let sizes = Sizes::default();
    let b = engine::builder(a, max_value);
    let b = match &fixed {
        Some(f) => b.backing(inline_store(f.clone(), max_value, a.compressibility)),
        None => b.backing(store(&sizes, a.compressibility)?),
    };
    let e = engine::build(a, b, &mut l2)?;
    let progress = Progress::new();
    let w = a.workload();
    let reactors = e.config().reactors;
    println!(
        "replay: {} ({:?}), {} accesses, {}{}",
        path.display(),
        a.trace_format,
        trace.len(),
        if fixed.is_some() {
            "in order per shard, one access at a time per reactor, on the reactors"
        } else {
            "in order, one at a time, through Engine::read"
        },
        if reactors > 1 {
            format!("; the ARC is sharded over {reactors} reactors")
        } else {
            String::new()
        }
    );
    let on_progress = |p: &str, d: u64, n: u64| progress.update(p, d, n);
    let (r, stats) = match fixed {
        Some(_) => {
            let lists = split_by_shard(&trace, reactors);
            workload::replay_in_reactor(&e, Arc::new(lists), a.timeline_interval, &on_progress)?
        }
        None => workload::replay(&e, &trace, &sizes, a.timeline_interval, &on_progress)?,
    };
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

/// Each object's size, when no access changes it; `None` otherwise.
fn fixed_sizes(trace: &[Access]) -> Option<Arc<HashMap<u64, u32>>> {
    let mut m = HashMap::new();
    for a in trace {
        if *m.entry(a.id).or_insert(a.size) != a.size {
            return None;
        }
    }
    Some(Arc::new(m))
}

/// The trace's ids, split by the shard that owns each (as the engine
/// routes keys), each list in trace order.
fn split_by_shard(trace: &[Access], shards: usize) -> Vec<Vec<u64>> {
    let mut lists = vec![Vec::new(); shards.max(1)];
    for a in trace {
        let key = a.id.to_le_bytes();
        lists[shard_of(hash_key(&key), shards.max(1))].push(a.id);
    }
    lists
}

/// A store that makes each object's bytes on the reactor that asks: a
/// slice of one block of the asked compressibility, stamped with the key.
/// (Making every object's bytes from its key, as the simulated store
/// does, took a third of a miss-heavy replay's time; a cache does not
/// look at the bytes, and the L2 compresses each block alone, so the
/// ratio is the same.)
fn inline_store(sizes: Arc<HashMap<u64, u32>>, max: usize, ratio: f64) -> polarc::InlineStore {
    let template = SimStore::content(b"polarc-perf trace replay", max.max(8), ratio);
    polarc::InlineStore::new("trace objects", move |key: &[u8]| {
        let id = u64::from_le_bytes(
            key.try_into()
                .map_err(|_| polarc::BackingError::Other("not a trace key".into()))?,
        );
        let size = (sizes.get(&id).copied().unwrap_or(512) as usize).min(template.len());
        let mut v = template[..size].to_vec();
        let stamp = size.min(key.len());
        v[..stamp].copy_from_slice(&key[..stamp]);
        Ok(v)
    })
}

/// Reads the trace; returns it and its largest object's size.
pub(super) fn load(a: &Args, path: &Path) -> Result<(Vec<Access>, usize), Error> {
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
