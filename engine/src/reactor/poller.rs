//! Pollers: work a reactor runs on every loop iteration.
#![forbid(unsafe_code)]

use super::Sched;

/// What a poller did this iteration; feeds the busy/idle statistics and
/// the idle strategy (a reactor parks only when every poller is idle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// Did work.
    Busy,
    /// Did nothing, but has work in flight that completes without a
    /// message (device I/O): the reactor may yield its core, but must not
    /// park.
    Waiting,
    /// Nothing to do.
    Idle,
    /// Finished for good: the reactor drops it.
    Done,
}

impl PollStatus {
    /// `Busy` if it did work, else `Waiting` while it has device I/O in
    /// flight, else `Idle`.
    pub fn of(did_work: bool, io_in_flight: bool) -> PollStatus {
        match (did_work, io_in_flight) {
            (true, _) => PollStatus::Busy,
            (false, true) => PollStatus::Waiting,
            (false, false) => PollStatus::Idle,
        }
    }
}

/// A poller over the reactor's host `H`. It may arm timers and start
/// other pollers through `sched`.
pub trait Poller<H> {
    /// Runs once per loop iteration.
    fn poll(&mut self, host: &mut H, sched: &mut Sched<H>) -> PollStatus;
    /// A task keeps its reactor running until it returns
    /// [`PollStatus::Done`] (an in-reactor job). Other pollers serve the
    /// host, whose [`super::Host::finished`] says when they are quiet.
    /// Default: false.
    fn is_task(&self) -> bool {
        false
    }
}
