//! Sending to other reactors. Requests and replies between reactors come
//! from in-reactor jobs (the `jobs` feature) and are batched: measured on
//! the ARC-hit benchmark, one message per request bounces the ring's index
//! and slot cache lines between cores on every request; batches of 16
//! amortise that (docs/BENCHMARKS.md).
#![forbid(unsafe_code)]

use super::msg::Mailboxes;
#[cfg(feature = "jobs")]
use {
    super::msg::Msg,
    crate::request::{Outcome, Request},
};

/// Requests and replies to one reactor leave in batches of up to this many.
#[cfg(feature = "jobs")]
const PEER_BATCH: usize = 16;

/// A reactor's view of its peers: their mailboxes, and what waits to
/// leave for each in a batch.
pub(crate) struct Peers {
    mailboxes: Mailboxes,
    #[cfg(feature = "jobs")]
    requests: Vec<Vec<Request>>,
    #[cfg(feature = "jobs")]
    replies: Vec<Vec<(u64, Outcome)>>,
}

impl Peers {
    pub(crate) fn new(mailboxes: Mailboxes) -> Peers {
        #[cfg(feature = "jobs")]
        let n = mailboxes.len();
        Peers {
            mailboxes,
            #[cfg(feature = "jobs")]
            requests: (0..n).map(|_| Vec::new()).collect(),
            #[cfg(feature = "jobs")]
            replies: (0..n).map(|_| Vec::new()).collect(),
        }
    }

    /// Number of reactors.
    #[cfg(feature = "jobs")]
    pub(crate) fn len(&self) -> usize {
        self.mailboxes.len()
    }

    /// Every mailbox.
    pub(crate) fn mailboxes(&self) -> &Mailboxes {
        &self.mailboxes
    }

    /// Queues a request for reactor `to`; it leaves in a batch, at the
    /// latest at [`Peers::flush`].
    #[cfg(feature = "jobs")]
    pub(crate) fn queue_request(&mut self, to: usize, req: Request) {
        self.requests[to].push(req);
        if self.requests[to].len() >= PEER_BATCH {
            self.flush_to(to);
        }
    }

    /// Queues the answer to a request from reactor `to`'s job.
    #[cfg(feature = "jobs")]
    pub(crate) fn queue_reply(&mut self, to: usize, tag: u64, outcome: Outcome) {
        self.replies[to].push((tag, outcome));
        if self.replies[to].len() >= PEER_BATCH {
            self.flush_to(to);
        }
    }

    /// Sends what waits for reactor `to`. A reactor that has shut down
    /// answers its requests `ShutDown` (see [`super::msg::send`]).
    #[cfg(feature = "jobs")]
    fn flush_to(&mut self, to: usize) {
        if !self.requests[to].is_empty() {
            let v = std::mem::replace(&mut self.requests[to], Vec::with_capacity(PEER_BATCH));
            super::msg::send(&self.mailboxes, to, Msg::Requests(v));
        }
        if !self.replies[to].is_empty() {
            let v = std::mem::replace(&mut self.replies[to], Vec::with_capacity(PEER_BATCH));
            super::msg::send(&self.mailboxes, to, Msg::Completions(v));
        }
    }

    /// Sends every queued batch. The reactor calls it once per loop
    /// iteration, so nothing waits longer than one iteration.
    #[cfg(feature = "jobs")]
    pub(crate) fn flush(&mut self) -> bool {
        let mut sent = false;
        for to in 0..self.mailboxes.len() {
            if !self.requests[to].is_empty() || !self.replies[to].is_empty() {
                self.flush_to(to);
                sent = true;
            }
        }
        sent
    }

    /// True if a reactor other than `me` has closed its ring (it shut
    /// down or died).
    #[cfg(feature = "jobs")]
    pub(crate) fn any_gone(&self, me: usize) -> bool {
        (self.mailboxes.iter().enumerate()).any(|(i, m)| i != me && m.is_closed())
    }

    /// Without jobs nothing is batched.
    #[cfg(not(feature = "jobs"))]
    pub(crate) fn flush(&mut self) -> bool {
        false
    }
}
