//! What a soak reports: operations, timeouts and degraded episodes, wrong
//! bytes, hung callers, pool buffers left after shutdown, and memory.

use crate::report::Tick;
use crate::workload::Totals;
use polarc::Stats;

/// The soak figures of a run (JSON `"soak"`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Soak {
    /// Client operations over every phase, warm-up included, failed ones
    /// included.
    pub ops: u64,
    /// Of which failed.
    pub errors: u64,
    /// Timeouts over the whole run, from the engine's final counters.
    pub timeouts: Timeouts,
    /// L2 device health over the whole run.
    pub degraded: Degraded,
    /// Reads whose bytes were wrong (`--verify`; `None` without it).
    pub wrong: Option<u64>,
    /// Operations given up after `--hang-limit`: callers the engine never
    /// answered. Any makes the run fail.
    pub hung_ops: u64,
    /// Buffer pool buffers still out after the engine shut down: a leak
    /// when not zero.
    pub pool_outstanding_after_shutdown: u64,
    /// Peak RSS (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// RSS at the first and last tick of the measured timeline: flat
    /// after warm-up when they are close.
    pub rss_first_tick_bytes: Option<u64>,
    /// See `rss_first_tick_bytes`.
    pub rss_last_tick_bytes: Option<u64>,
}

/// Requests past their deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Timeouts {
    /// L2 reads past the read deadline (served from the backing store).
    pub l2_read: u64,
    /// L2 writes and flushes past the write deadline (failed).
    pub l2_write: u64,
    /// Timed-out L2 requests that completed later.
    pub l2_late: u64,
    /// Backing reads past the backing timeout (their callers failed).
    pub backing: u64,
    /// Timed-out backing reads that completed later.
    pub backing_late: u64,
}

/// Times L2 devices were marked degraded, and came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Degraded {
    /// Times a device was marked degraded.
    pub episodes: u64,
    /// Times a degraded device answered again.
    pub recoveries: u64,
    /// Devices still degraded at the end.
    pub at_end: u64,
}

impl Soak {
    /// From the clients' totals, the engine's final statistics (after its
    /// shutdown), `--verify`'s wrong reads and the measured timeline.
    pub fn of(totals: &Totals, last: &Stats, wrong: Option<u64>, timeline: &[Tick]) -> Soak {
        let (l2, req) = (&last.l2, &last.requests);
        Soak {
            ops: totals.ops,
            errors: totals.errors,
            timeouts: Timeouts {
                l2_read: l2.l2_read_timeouts,
                l2_write: l2.l2_write_timeouts,
                l2_late: l2.l2_late_completions,
                backing: req.backing_timeouts,
                backing_late: req.backing_late,
            },
            degraded: Degraded {
                episodes: l2.l2_degraded_episodes,
                recoveries: l2.l2_degraded_recoveries,
                at_end: l2.l2_degraded,
            },
            wrong,
            hung_ops: totals.hung_ops,
            pool_outstanding_after_shutdown: last.pool.outstanding,
            peak_rss_bytes: crate::procfs::peak_rss_bytes(),
            rss_first_tick_bytes: timeline.first().and_then(|t| t.rss_bytes),
            rss_last_tick_bytes: timeline.last().and_then(|t| t.rss_bytes),
        }
    }
}
