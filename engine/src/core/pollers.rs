//! The pollers and timers a reactor runs: its deadlines, and for its L2
//! tier the read queues, each feeder it runs, and the devices'
//! housekeeping tick.
#![forbid(unsafe_code)]

use super::Core;
use crate::device::MAX_TICK;
use crate::l2::read::ReadOutcome;
use crate::reactor::{PollStatus, Poller, Reactor, Sched};
use std::time::Duration;

/// Registers the pollers and timers of `core` on its reactor: its
/// deadlines, and its L2 tier's.
pub(crate) fn register(reactor: &mut Reactor<Core>, core: &mut Core) {
    reactor
        .sched()
        .repeat(Duration::from_millis(1), |core: &mut Core, sched| {
            Some(core.check_deadlines(sched.now()))
        });
    register_l2(reactor, core);
}

/// Registers the L2 pollers and timers of `core` on its reactor.
fn register_l2(reactor: &mut Reactor<Core>, core: &mut Core) {
    let Some(l2) = core.l2.as_deref_mut() else {
        return;
    };
    let feeders = l2.feeders_mut().len();
    let sched = reactor.sched();
    sched.spawn(Box::new(L2Reads::default()));
    for i in 0..feeders {
        sched.spawn(Box::new(Feed(i)));
    }
    // As often as the queues ask, at least every MAX_TICK.
    sched.repeat(MAX_TICK, |core: &mut Core, sched| {
        let l2 = core.l2.as_deref_mut()?;
        Some(l2.tick(sched.now()))
    });
}

/// Polls the reactor's L2 read queues and completes the fills they serve.
#[derive(Default)]
struct L2Reads {
    outcomes: Vec<ReadOutcome>,
}

impl Poller<Core> for L2Reads {
    fn poll(&mut self, core: &mut Core, sched: &mut Sched<Core>) -> PollStatus {
        let Some(l2) = core.l2.as_deref_mut() else {
            return PollStatus::Done;
        };
        l2.kick_if_staging(&core.shard);
        let in_flight = l2.poll_reads(&mut core.shard, &mut self.outcomes, sched.now());
        let reaped = !self.outcomes.is_empty();
        for o in self.outcomes.drain(..) {
            match o {
                ReadOutcome::Hit(idx, buf) => core.finish_l2_fill(idx, buf),
                ReadOutcome::Fallback(idx) => core.start_backing_read(idx),
            }
        }
        PollStatus::of(reaped, in_flight)
    }
}

/// Runs feeder `i` of the reactor, and arms its feed timer.
struct Feed(usize);

impl Poller<Core> for Feed {
    fn poll(&mut self, core: &mut Core, sched: &mut Sched<Core>) -> PollStatus {
        let stopping = core.stopping;
        let Some(l2) = core.l2.as_deref_mut() else {
            return PollStatus::Done;
        };
        let step = l2.feeders_mut()[self.0].poll(sched.now(), stopping);
        if let Some((at, gen)) = step.next_feed {
            let i = self.0;
            sched.after(
                at.saturating_duration_since(sched.now()),
                move |core: &mut Core, _| {
                    if let Some(l2) = core.l2.as_deref_mut() {
                        l2.feeders_mut()[i].on_timer(gen);
                    }
                },
            );
        }
        PollStatus::of(step.busy, step.waiting)
    }
}
