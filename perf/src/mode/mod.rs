//! The modes the options choose: a workload run, trace replay, foyer side by side, benchmarks.

mod bench;
pub mod compare;
mod engine;
mod mrc;
mod output;
mod replay;
pub mod run;

use crate::error::Error;
use polarc_perf::cli::{Args, EngineKind};

/// Runs the mode `a` asks for.
pub fn dispatch(a: Args) -> Result<(), Error> {
    if a.bench_hits {
        return bench::hits(&a);
    }
    a.check()?;
    if a.bench_feed {
        return bench::feed(&a);
    }
    if a.engine == EngineKind::Foyer {
        return compare::foyer(&a);
    }
    match &a.trace {
        Some(path) if a.mrc.is_some() => mrc::run(&a, path),
        Some(path) => replay::run(&a, path),
        None => run::run(&a),
    }
}
