//! Synthetic workloads and trace replay against the engine.

mod driver;
mod keys;
mod model;

pub use driver::{replay, replay_in_reactor, run, sweep, Checks, Driver, OnProgress, Totals};
pub use keys::KeySampler;
pub use model::{Op, OpMix, Popularity, Workload};

/// A workload that could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Zipf exponent is out of the distribution's range.
    #[error("--zipf {theta}: {source}")]
    Zipf {
        /// The exponent.
        theta: f64,
        /// Why the distribution refused it.
        source: rand_distr::ZipfError,
    },
    /// `--duration` past the end of the clock.
    #[error("--duration {0:?}: the end of the run does not fit in the clock")]
    Duration(std::time::Duration),
    /// A client thread could not be started.
    #[error("cannot start a client thread (--clients): {0}")]
    Spawn(#[source] std::io::Error),
    /// A client thread panicked.
    #[error("a client thread panicked")]
    ClientPanicked,
    /// Latency histograms could not be merged.
    #[error(transparent)]
    Histogram(#[from] hdrhistogram::errors::AdditionError),
    /// The engine refused an operation (in-reactor jobs).
    #[error(transparent)]
    Engine(#[from] polarc::Error),
}
