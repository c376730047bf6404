//! A reactor's host: the engine state one reactor owns (its shard, its
//! fills in flight, its L2 part, its peers) and the handling of every
//! message it gets. Everything here runs on the owning reactor's thread.
//!
//! * `msg`: the messages of a reactor's ring.
//! * `fill`: client requests, fills from L2 and the backing store.
//! * `peers`: sending to other reactors, batched.
//! * `pollers`: the L2 pollers and timers a reactor runs.
#![forbid(unsafe_code)]

mod fill;
#[cfg(test)]
mod l2_sim_tests;
pub(crate) mod msg;
mod peers;
pub(crate) mod pollers;

use crate::backing::BackingStore;
use crate::bufpool::{Buf, BufPool};
use crate::l2::L2;
use crate::reactor::{Host, LoopCounters, Sched};
#[cfg(feature = "jobs")]
use crate::request::Outcome;
use crate::request::Reply;
use crate::shard::Shard;
use crate::stats::{CoreCounters, ReactorStats};
use fill::Fills;
use msg::{Mailboxes, Msg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reactor's core takes from the engine's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_block: usize,
    pub backing_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Fills in flight past which prefetches are dropped.
    pub max_in_flight: usize,
    /// Stamp client reads with when they were taken and answered.
    pub timing: bool,
}

/// Client requests in flight on one reactor: clients add one as they
/// send; the reactor takes off what it answered, once per loop iteration.
pub(crate) type InFlight = Arc<crossbeam_utils::CachePadded<AtomicUsize>>;

pub(crate) use peers::Peers;

/// A reactor's state.
pub(crate) struct Core {
    /// This reactor's index.
    pub(crate) id: usize,
    /// The shard this reactor owns.
    pub(crate) shard: Shard<Buf>,
    pub(crate) pool: BufPool,
    backing: Arc<dyn BackingStore>,
    pub(crate) peers: Peers,
    fills: Fills,
    /// The L2 tier's queues, reads and feeders, when L2 devices are set.
    pub(crate) l2: Option<Box<L2>>,
    /// Invalidations and replacements waiting for their L2 records to be
    /// durable, by token.
    awaiting_durable: HashMap<u64, Reply>,
    /// Answers to requests this reactor's job sent, its own included.
    #[cfg(feature = "jobs")]
    pub(crate) job_inbox: Vec<(u64, Outcome)>,
    limits: Limits,
    /// This reactor's count of client requests in flight, and how many it
    /// answered since it last took them off.
    in_flight: InFlight,
    answered: usize,
    /// When a shutdown stops waiting for I/O in flight.
    stop_by: Option<Instant>,
    /// The shutdown's time limit passed: whatever is in flight was given up.
    abandoned: bool,
    /// Counters.
    pub(crate) counters: CoreCounters,
    loops: LoopCounters,
    pub(crate) stopping: bool,
    /// The core this reactor is pinned to, if pinning succeeded.
    pub(crate) pinned_core: Option<usize>,
    pub(crate) pin_failed: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("pending", &self.fills.len())
            .finish()
    }
}

impl Core {
    pub(crate) fn new(
        id: usize,
        shard: Shard<Buf>,
        pool: BufPool,
        backing: Arc<dyn BackingStore>,
        mailboxes: Mailboxes,
        limits: Limits,
        in_flight: InFlight,
    ) -> Self {
        Core {
            id,
            shard,
            pool,
            backing,
            peers: Peers::new(mailboxes),
            fills: Fills::default(),
            l2: None,
            awaiting_durable: HashMap::new(),
            #[cfg(feature = "jobs")]
            job_inbox: Vec::new(),
            limits,
            in_flight,
            answered: 0,
            stop_by: None,
            abandoned: false,
            counters: CoreCounters::default(),
            loops: LoopCounters::default(),
            stopping: false,
            pinned_core: None,
            pin_failed: false,
        }
    }

    /// Number of reactors.
    #[cfg(feature = "jobs")]
    pub(crate) fn reactors(&self) -> usize {
        self.peers.len()
    }

    /// True when no backing or L2 I/O is in flight and no feed cycle is
    /// under way.
    pub(crate) fn quiet(&self) -> bool {
        self.fills.is_empty()
            && self.awaiting_durable.is_empty()
            && self.l2.as_ref().is_none_or(|l2| l2.quiet())
    }

    /// The reactor's deadlines at `now`: backing reads past theirs fail,
    /// and a shutdown past its time limit gives up what is in flight.
    /// Returns how soon to look again.
    pub(crate) fn check_deadlines(&mut self, now: Instant) -> Duration {
        self.expire_backing_reads(now);
        if let Some(by) = self.stop_by {
            if now >= by && !self.quiet() {
                self.abandon();
            }
        }
        let mut next = self.limits.backing_timeout.min(Duration::from_secs(1)) / 4;
        if let Some(by) = self.stop_by {
            next = next.min(by.saturating_duration_since(now));
        }
        next.max(Duration::from_millis(1))
    }

    /// Gives up on everything in flight, at a shutdown past its limit:
    /// waiting callers get `ShutDown`, the L2 requests still on their
    /// devices keep their buffers, and the reactor may exit.
    fn abandon(&mut self) {
        let (fills, waiting) = (self.fills.len(), self.awaiting_durable.len());
        self.fail_all_fills();
        for (_, reply) in std::mem::take(&mut self.awaiting_durable) {
            self.reply(reply, Err(crate::Error::ShutDown));
        }
        self.counters.abandoned_fills += fills as u64;
        self.counters.abandoned_records += waiting as u64;
        if let Some(l2) = self.l2.as_deref_mut() {
            l2.abandon();
        }
        self.abandoned = true;
        log::warn!(
            "reactor {}: shutdown took over {:?}; gave up {fills} fills and {waiting} invalidations in flight",
            self.id,
            self.limits.shutdown_timeout
        );
    }

    pub(crate) fn stats(&self) -> ReactorStats {
        let mut core = self.counters;
        let l = self.loops;
        (core.messages, core.busy_loops, core.idle_loops, core.parks) =
            (l.messages, l.busy_loops, l.idle_loops, l.parks);
        ReactorStats {
            id: self.id,
            pinned_core: self.pinned_core,
            pin_failed: self.pin_failed,
            core,
            shard: self.shard.counters,
            sizes: self.shard.sizes(),
            l2: self
                .l2
                .as_ref()
                .map_or_else(Default::default, |l2| l2.counters()),
            l2_sizes: self.shard.l2_sizes(),
            l2_rebuilding: self.l2.as_ref().map_or(0, |l2| l2.rebuilding()),
        }
    }
}

impl Host for Core {
    type Msg = Msg;

    fn handle(&mut self, msg: Msg, _sched: &mut Sched<Core>) {
        match msg {
            Msg::Request(r) => self.handle_request(r),
            Msg::Fill { idx, id, result } => self.complete_fill(idx, id, result),
            #[cfg(feature = "jobs")]
            Msg::Requests(v) => {
                for r in v {
                    self.handle_request(r);
                }
            }
            #[cfg(feature = "jobs")]
            Msg::Completions(mut v) => self.job_inbox.append(&mut v),
            Msg::L2(m) => match self.l2.as_deref_mut() {
                Some(l2) => {
                    let durable = l2.handle(m, &mut self.shard);
                    if !durable.is_empty() {
                        self.durable(durable);
                    }
                }
                None => log::error!("reactor {}: {m:?} without an L2 tier", self.id),
            },
            #[cfg(feature = "jobs")]
            Msg::Call(f) => f(self, _sched),
            Msg::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
            Msg::Shutdown => {
                self.stopping = true;
                self.stop_by = Some(Instant::now() + self.limits.shutdown_timeout);
            }
        }
    }

    fn flush(&mut self) -> bool {
        if self.answered > 0 {
            self.in_flight.fetch_sub(self.answered, Relaxed);
            self.answered = 0;
        }
        self.peers.flush()
    }

    fn finished(&self) -> bool {
        self.stopping && (self.abandoned || self.quiet())
    }

    fn reject(&mut self, msg: Msg) {
        msg::reject(self.peers.mailboxes(), msg);
    }

    fn loop_counters(&mut self) -> &mut LoopCounters {
        &mut self.loops
    }
}
