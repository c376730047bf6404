//! Pollers: work a reactor runs on every loop iteration.
#![forbid(unsafe_code)]

/// What a poller did this iteration; feeds the busy/idle statistics and
/// the idle strategy (a reactor parks only when every poller is idle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// Did work, or has work in flight that it must keep polling for.
    Busy,
    /// Nothing to do.
    Idle,
    /// Finished for good: the reactor drops it.
    Done,
}

/// A poller over the reactor's state `C`.
pub trait Poller<C>: Send {
    /// Runs once per loop iteration.
    fn poll(&mut self, ctx: &mut C) -> PollStatus;
}
