//! The drive-writes-per-day budget: a token bucket over the bytes really
//! written to the device (data, padding, log and headers), not over the
//! logical bytes fed. Capping the logical rate let a device under 1.6:1
//! compression see about 62% of its budget.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// How many bytes the device may still take.
#[derive(Debug, Default)]
pub(super) struct WearBudget {
    /// Bytes earned and not yet written; negative after an overshoot,
    /// which the next cycles pay back.
    credit: f64,
    /// When credit was last earned.
    at: Option<Instant>,
    /// The device's running total of bytes written, when last seen.
    seen: u64,
}

/// Credit saved while the feeder has nothing to write is capped at this
/// many feed intervals' worth, so a quiet spell does not become a burst
/// (a cycle that comes a few intervals late still gets its due).
const SAVED_INTERVALS: f64 = 4.0;

impl WearBudget {
    /// Earns `rate` bytes per second since the last call (one `interval`
    /// on the first), pays for what was written since (`written` is the
    /// device's running total), and returns the bytes the device may take
    /// now.
    pub(super) fn room(
        &mut self,
        now: Instant,
        rate: f64,
        interval: Duration,
        written: u64,
    ) -> f64 {
        let elapsed = self
            .at
            .map_or(interval, |t| now.saturating_duration_since(t));
        self.at = Some(now);
        self.credit += rate * elapsed.as_secs_f64();
        self.credit -= written.saturating_sub(self.seen) as f64;
        self.seen = written;
        self.credit = self
            .credit
            .min(rate * interval.as_secs_f64() * SAVED_INTERVALS);
        self.credit.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feeder that writes what it is allowed, with 6% more for log and
    /// padding and whole 1 MiB writes, keeps to the budget over 5 minutes.
    #[test]
    fn writes_stay_within_the_budget_whatever_the_overhead() {
        let rate = 3.0 * 1024.0 * 1024.0;
        let interval = Duration::from_millis(200);
        let mut w = WearBudget::default();
        let t0 = Instant::now();
        let mut written = 0u64;
        let mut now = t0;
        while now - t0 < Duration::from_secs(300) {
            let room = w.room(now, rate, interval, written);
            let mib = (room / (1 << 20) as f64).ceil() as u64; // rounds up: overshoots
            written += mib * (1 << 20) * 106 / 100;
            // Cycles come late now and then.
            now += if mib % 3 == 0 { interval * 3 } else { interval };
        }
        let budget = rate * (now - t0).as_secs_f64();
        let ratio = written as f64 / budget;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "wrote {ratio:.3} of the budget"
        );
    }

    #[test]
    fn idle_time_saves_at_most_four_intervals() {
        let mut w = WearBudget::default();
        let t0 = Instant::now();
        let i = Duration::from_secs(1);
        assert_eq!(w.room(t0, 100.0, i, 0), 100.0);
        assert_eq!(w.room(t0 + Duration::from_secs(60), 100.0, i, 0), 400.0);
        // 700 written: 300 owed, paid back before anything more.
        assert_eq!(w.room(t0 + Duration::from_secs(60), 100.0, i, 700), 0.0);
        assert_eq!(w.room(t0 + Duration::from_secs(63), 100.0, i, 700), 0.0);
        assert_eq!(w.room(t0 + Duration::from_secs(64), 100.0, i, 700), 100.0);
    }
}
