//! Reactors: one thread per shard, pinned to a core, that loops over its
//! message ring, its pollers and its timers.
//!
//! Threading rule: a reactor's [`Core`] (and so its shard) is touched only
//! by that reactor's thread. Everyone else talks to it through its
//! [`Mailbox`].

mod poller;
mod ring;
mod timer;

pub use poller::{PollStatus, Poller};
pub use ring::{Mailbox, Pushed, Unpark};
pub use timer::{TimerFn, Timers};

use crate::config::{IdleStrategy, Pinning};
use crate::core::{Core, Msg};
use crate::stats::ReactorStats;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one reactor runs.
#[derive(Clone, Debug)]
pub(crate) struct LoopConfig {
    pub core_id: Option<core_affinity::CoreId>,
    pub pinning: Pinning,
    pub idle: IdleStrategy,
    pub spin_before_park: Duration,
    pub batch: usize,
}

/// The reactor loop. Returns its final figures once shut down and quiet;
/// by then its shard (and every buffer it held) has been dropped.
pub(crate) fn run(cfg: LoopConfig, mailbox: Arc<Mailbox<Msg>>, mut core: Core) -> ReactorStats {
    if let (Some(cid), true) = (cfg.core_id, cfg.pinning != Pinning::Off) {
        if core_affinity::set_for_current(cid) {
            core.pinned_core = Some(cid.id);
        } else {
            core.pin_failed = true;
            log::warn!(
                "reactor {}: could not pin to core {}; running unpinned",
                core.id,
                cid.id
            );
        }
    }
    let local_cache = core.pool.register_local_cache();
    let mut pollers: Vec<Box<dyn Poller<Core>>> = Vec::new();
    let mut timers: Timers<Core> = Timers::default();
    let mut idle_since: Option<Instant> = None;
    let mut idle_spins = 0u32;
    loop {
        let mut busy = false;
        for _ in 0..cfg.batch {
            match mailbox.pop() {
                Some(m) => {
                    core.handle(m);
                    busy = true;
                }
                None => break,
            }
        }
        if core.poll_l2() {
            busy = true;
        }
        pollers.append(&mut core.new_pollers);
        pollers.retain_mut(|p| match p.poll(&mut core) {
            PollStatus::Busy => {
                busy = true;
                true
            }
            PollStatus::Idle => true,
            PollStatus::Done => {
                busy = true;
                false
            }
        });
        if !timers.is_empty() && timers.run_due(Instant::now(), &mut core) > 0 {
            busy = true;
        }
        if core.flush() {
            busy = true;
        }
        if busy {
            core.counters.busy_loops += 1;
            idle_since = None;
            idle_spins = 0;
            continue;
        }
        core.counters.idle_loops += 1;
        if core.stopping && pollers.is_empty() && core.quiet() && mailbox.is_empty() {
            break;
        }
        match cfg.idle {
            IdleStrategy::Busy => std::hint::spin_loop(),
            IdleStrategy::Adaptive => {
                // The clock is read once per 32 idle iterations: reading
                // it every time cost 7% of a reactor in a profile.
                idle_spins += 1;
                if idle_spins % 32 != 0 {
                    std::thread::yield_now();
                    continue;
                }
                let now = Instant::now();
                let since = *idle_since.get_or_insert(now);
                if now - since < cfg.spin_before_park {
                    // Yield, not spin: where clients share the cores, a
                    // spinning reactor takes the core a client needs.
                    std::thread::yield_now();
                } else {
                    let timeout = [timers.next_deadline(), core.next_wakeup()]
                        .into_iter()
                        .flatten()
                        .min()
                        .map(|d| d.saturating_duration_since(now));
                    core.counters.parks += 1;
                    mailbox.park(timeout);
                    idle_since = None;
                }
            }
        }
    }
    // From here a producer that finds the ring closed drains it itself.
    mailbox.close_and_drain();
    let stats = core.stats();
    drop(core);
    drop(local_cache);
    stats
}
