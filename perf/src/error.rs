//! The harness's top-level error: why a mode failed, as printed to the user.

use crate::mode::{compare::CompareError, run::BackingError};
use polarc_perf::cli::ArgError;
use polarc_perf::devices::OpenError;
use polarc_perf::trace::TraceError;
use polarc_perf::{plot, workload};
use std::path::PathBuf;

/// Why a mode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Options that are wrong or do not fit together.
    #[error(transparent)]
    Args(#[from] ArgError),
    /// A `--backing` spec that does not give a store.
    #[error("--backing {spec}: {source}")]
    Backing {
        /// The spec.
        spec: String,
        /// What is wrong with it.
        source: BackingError,
    },
    /// An `--l2` device that could not be opened.
    #[error(transparent)]
    Device(#[from] OpenError),
    /// `--l2 auto` found no place for its file.
    #[error("--l2 auto: cannot create a temp directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// A trace that could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A trace without accesses.
    #[error("{}: the trace has no accesses", .0.display())]
    EmptyTrace(PathBuf),
    /// A trace object the engine cannot hold.
    #[error("{}: an object of {size} B is larger than the engine's 2 MiB block limit", .path.display())]
    ObjectTooLarge {
        /// The trace.
        path: PathBuf,
        /// The object's size.
        size: usize,
    },
    /// The trace's backing store could not start its threads.
    #[error(transparent)]
    TraceStore(std::io::Error),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] polarc::Error),
    /// The workload could not be run.
    #[error(transparent)]
    Workload(#[from] workload::Error),
    /// The L2 devices' rebuild at start-up did not end in time.
    #[error("the L2 rebuild did not end within {0:?}")]
    RebuildTooLong(std::time::Duration),
    /// The feed benchmark's feeder did not finish.
    #[error("the feeder did not copy every block within 120 s")]
    FeedStalled,
    /// A comparison after the run failed.
    #[error(transparent)]
    Compare(#[from] CompareError),
    /// foyer side by side failed.
    #[cfg(feature = "compare-foyer")]
    #[error(transparent)]
    Foyer(#[from] crate::mode::compare::foyer_peer::PeerError),
    /// `--engine foyer` in a build without foyer.
    #[cfg(not(feature = "compare-foyer"))]
    #[error(
        "--engine foyer: unsupported in this build; rebuild with the cargo feature: \
         cargo run --release -p polarc-perf --features compare-foyer -- --engine foyer"
    )]
    NoFoyer,
    /// `--plot` could not draw or write its SVG.
    #[error("--plot {}: {source}", .path.display())]
    Plot {
        /// The SVG.
        path: PathBuf,
        /// Why.
        source: plot::Error,
    },
    /// Client operations the engine never answered.
    #[error("{ops} operations were still in flight after --hang-limit {limit:?}: the engine left callers waiting (see the report above)")]
    Hung {
        /// Operations given up.
        ops: u64,
        /// The hang limit.
        limit: std::time::Duration,
    },
    /// `--verify` found wrong bytes.
    #[error("--verify: {0} reads returned wrong or stale bytes (details above)")]
    Wrong(u64),
    /// A report that could not be turned into JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// `--json` could not write its file.
    #[error("--json {path}: {source}")]
    WriteJson {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}
