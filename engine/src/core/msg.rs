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
    /// A backing read completed for the fill of header `idx`.
    Fill {
        idx: HeaderIdx,
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

/// The L2 tier reaches other reactors through their mailboxes.
#[derive(Clone)]
pub(crate) struct MailboxLink(pub Mailboxes);

impl L2Link for MailboxLink {
    fn send(&self, to: usize, msg: L2Msg) {
        // A reactor that has shut down drops the message, and with it any
        // buffer reference it carries.
        let _ = self.0[to].send(Msg::L2(msg));
    }
    fn reactors(&self) -> usize {
        self.0.len()
    }
}
