//! The messages a reactor's ring carries: client requests, backing-store
//! completions, batches between reactors, the L2 protocol ([`L2Msg`]) and
//! control.
#![forbid(unsafe_code)]

#[cfg(feature = "jobs")]
use super::Core;
use crate::backing::ReadResult;
use crate::l2::{L2Link, L2Msg};
use crate::reactor::Mailbox;
#[cfg(feature = "jobs")]
use crate::reactor::Sched;
#[cfg(feature = "jobs")]
use crate::request::Outcome;
use crate::request::Request;
use crate::shard::HeaderIdx;
use crate::stats::ReactorStats;
use std::sync::Arc;

/// A function to run on a reactor (SPDK's `spdk_thread_send_msg`).
#[cfg(feature = "jobs")]
pub(crate) type CallFn = Box<dyn FnOnce(&mut Core, &mut Sched<Core>) + Send>;

/// A message to a reactor.
pub(crate) enum Msg {
    Request(Request),
    /// Backing read `id` completed for the fill of header `idx`.
    Fill {
        idx: HeaderIdx,
        id: u64,
        result: ReadResult,
    },
    /// Requests from a peer reactor's job, batched.
    #[cfg(feature = "jobs")]
    Requests(Vec<Request>),
    /// Answers to requests this reactor's job sent to a peer, batched.
    #[cfg(feature = "jobs")]
    Completions(Vec<(u64, Outcome)>),
    /// The L2 tier's own protocol, between feeders and shards.
    L2(L2Msg),
    /// Runs a function on the reactor (starts an in-reactor job).
    #[cfg(feature = "jobs")]
    Call(CallFn),
    Stats(oneshot::Sender<ReactorStats>),
    Shutdown,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Request(r) => write!(f, "Request({:?})", r.op),
            Msg::Fill { idx, .. } => write!(f, "Fill({idx})"),
            #[cfg(feature = "jobs")]
            Msg::Requests(v) => write!(f, "Requests({})", v.len()),
            #[cfg(feature = "jobs")]
            Msg::Completions(v) => write!(f, "Completions({})", v.len()),
            Msg::L2(m) => write!(f, "{m:?}"),
            #[cfg(feature = "jobs")]
            Msg::Call(_) => f.write_str("Call"),
            Msg::Stats(_) => f.write_str("Stats"),
            Msg::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// Every reactor's mailbox, by reactor index.
pub(crate) type Mailboxes = Arc<[Arc<Mailbox<Msg>>]>;

/// Sends `msg` to reactor `to`. If that reactor has gone, what is left in
/// its ring is dropped, and requests from peers' jobs in it are answered
/// [`crate::Error::ShutDown`] (a client's request answers itself when
/// dropped), so that no job waits forever on a dead peer.
pub(crate) fn send(mailboxes: &Mailboxes, to: usize, msg: Msg) {
    if mailboxes[to].push(msg) == crate::reactor::Pushed::Closed {
        drain_closed(mailboxes, &mailboxes[to]);
    }
}

/// Empties the ring of a reactor that has gone, answering what waits for
/// an answer (see [`send`]).
pub(crate) fn drain_closed(mailboxes: &Mailboxes, ring: &Mailbox<Msg>) {
    while let Some(m) = ring.pop() {
        reject(mailboxes, m);
    }
}

/// Drops a message its reactor will never handle, answering requests
/// from peers' jobs with `ShutDown`.
pub(crate) fn reject(mailboxes: &Mailboxes, msg: Msg) {
    #[cfg(feature = "jobs")]
    {
        let requests = match msg {
            Msg::Requests(v) => v,
            Msg::Request(r) => vec![r],
            _ => return,
        };
        let mut answers: Vec<Vec<(u64, Outcome)>> = vec![Vec::new(); mailboxes.len()];
        for r in requests {
            if let crate::request::Reply::Reactor(to, tag) = r.reply {
                answers[to].push((tag, Err(crate::Error::ShutDown)));
            }
        }
        for (to, v) in answers.into_iter().enumerate() {
            if !v.is_empty() {
                // A closed ring here is a job that has gone too: dropped.
                let _ = mailboxes[to].send(Msg::Completions(v));
            }
        }
    }
    #[cfg(not(feature = "jobs"))]
    let _ = (mailboxes, msg);
}

/// The L2 tier reaches other reactors through their mailboxes.
#[derive(Clone)]
pub(crate) struct MailboxLink(pub Mailboxes);

impl L2Link for MailboxLink {
    fn send(&self, to: usize, msg: L2Msg) {
        // A reactor that has shut down drops the message, and with it any
        // buffer reference it carries.
        send(&self.0, to, Msg::L2(msg));
    }
    fn reactors(&self) -> usize {
        self.0.len()
    }
}
