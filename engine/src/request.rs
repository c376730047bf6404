//! The client protocol: what a request asks and where its answer goes.
#![forbid(unsafe_code)]

use crate::block::Block;
use crate::error::Result;

/// What every request answers: the block for reads and gets, `None` for
/// the others.
pub(crate) type Outcome = Result<Option<Block>>;

/// A client operation.
#[derive(Debug)]
pub(crate) enum Op {
    Read,
    Get,
    /// Replace: the key's old block goes, the new one is cached.
    Insert(Box<[u8]>),
    /// Cache unless the key is cached or being filled.
    InsertIfAbsent(Box<[u8]>),
    Invalidate,
    Prefetch,
}

/// Where the answer to a request goes.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Nobody waits (a prefetch's own fill).
    None,
    /// A client thread or future.
    Client(oneshot::Sender<Outcome>),
    /// A client, with when its reactor took the request (`Config::timing`).
    Timed(oneshot::Sender<Outcome>, std::time::Instant),
    /// The job poller of the given reactor, with the job's tag (its issue
    /// time), handed back with the answer.
    #[cfg(feature = "jobs")]
    Reactor(usize, u64),
}

/// A key carried in a message: inline up to 32 bytes, so that a request
/// allocates nothing. (A heap key is allocated by the sender and freed by
/// the owner; measured, such cross-thread frees contend on glibc's arena
/// locks and cost up to 2x on the remote-hit path.)
pub(crate) type MsgKey = smallvec::SmallVec<[u8; 32]>;

/// One request, routed to the reactor that owns `hash`.
#[derive(Debug)]
pub(crate) struct Request {
    pub op: Op,
    pub key: MsgKey,
    pub hash: u64,
    pub reply: Reply,
}
