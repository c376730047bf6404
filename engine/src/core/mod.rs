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
use std::sync::Arc;

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
    max_block: usize,
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
        max_block: usize,
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
            max_block,
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
            Msg::Fill { idx, result } => self.complete_fill(idx, result),
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
            Msg::Shutdown => self.stopping = true,
        }
    }

    fn flush(&mut self) -> bool {
        self.peers.flush()
    }

    fn finished(&self) -> bool {
        self.stopping && self.quiet()
    }

    fn loop_counters(&mut self) -> &mut LoopCounters {
        &mut self.loops
    }
}
