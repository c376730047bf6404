//! The synthetic workload: key popularity, operation mix, sizes and phases.

use rand::Rng;
use std::time::Duration;

/// Which keys a workload asks for.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Popularity {
    /// Uniform over all keys.
    Uniform,
    /// Zipf with exponent θ.
    Zipf(f64),
    /// A fraction of the keys gets a share of the operations.
    Hotspot {
        /// Fraction of the keys that are hot.
        keys: f64,
        /// Share of the operations they get.
        share: f64,
    },
}

/// An operation of the mix, named as in `--mix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// Read-through.
    Read,
    /// Insert (the value is generated like the store's).
    Insert,
    /// Invalidate.
    Invalidate,
    /// Prefetch.
    Prefetch,
}

/// Shares of each operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct OpMix {
    /// Read-through.
    pub read: f64,
    /// Insert (the value is generated like the store's).
    pub insert: f64,
    /// Invalidate.
    pub invalidate: f64,
    /// Prefetch.
    pub prefetch: f64,
}

impl OpMix {
    /// The share of `op`.
    pub fn share_mut(&mut self, op: Op) -> &mut f64 {
        match op {
            Op::Read => &mut self.read,
            Op::Insert => &mut self.insert,
            Op::Invalidate => &mut self.invalidate,
            Op::Prefetch => &mut self.prefetch,
        }
    }

    /// The sum of the shares.
    pub fn total(&self) -> f64 {
        self.read + self.insert + self.invalidate + self.prefetch
    }

    /// An operation drawn with the mix's shares.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let x = rng.gen_range(0.0..self.total());
        if x < self.read {
            Op::Read
        } else if x < self.read + self.insert {
            Op::Insert
        } else if x < self.read + self.insert + self.invalidate {
            Op::Invalidate
        } else {
            Op::Prefetch
        }
    }
}

/// A synthetic workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Workload {
    /// Distinct keys, `index_key(0..keys)`.
    pub keys: u64,
    /// Key popularity.
    pub popularity: Popularity,
    /// Share of operations taken from a sequential scan over the keys.
    pub scan_share: f64,
    /// Operation mix.
    pub mix: OpMix,
    /// Value sizes (smallest, largest), for inserts.
    pub value_size: (usize, usize),
    /// Compressibility of inserted values.
    pub compressibility: f64,
    /// Measured operations (when `duration` is not set).
    pub ops: u64,
    /// Measure for this long instead.
    pub duration: Option<Duration>,
    /// Operations before measuring.
    pub warmup_ops: u64,
    /// Client threads.
    pub clients: usize,
    /// Requests in flight per client.
    pub queue_depth: usize,
    /// Read every key in order during warm-up.
    pub sequential_warmup: bool,
    /// After warm-up, wait until the L2 feeders have written what they could.
    pub settle_l2: bool,
    /// Timeline interval.
    pub timeline_interval: Duration,
    /// Open loop: operations per second in all; `None` is closed-loop.
    pub rate: Option<f64>,
    /// Open loop: the gaps between intended starts.
    pub arrivals: polarc::Arrivals,
    /// Break client reads' latency down (the engine stamps its blocks).
    pub breakdown: bool,
}
