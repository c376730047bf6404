//! The L2 protocol between the feeder of a device and the shards (the
//! seed's lists, as messages), and how the L2 tier sends it.
#![forbid(unsafe_code)]

use super::format::L2Loc;
use crate::bufpool::Buf;
use crate::shard::{HeaderIdx, L2Pick, PickCursor, PickRules, Rebuilt};
use std::time::Duration;

/// A message of the L2 protocol.
pub(crate) enum L2Msg {
    /// Feeder → shard: pick blocks for device `dev`, going on from
    /// `from`, for at most `budget` per slice. A shard whose slice ran
    /// out of time sends what it picked and this message to itself, with
    /// the cursor moved on, so the requests queued meanwhile go first.
    Scan {
        dev: u8,
        feeder: usize,
        seq: u64,
        rules: PickRules,
        from: PickCursor,
        budget: Duration,
    },
    /// Shard → feeder: blocks picked (the deferred write list), whether
    /// the shard has started evicting (the ARC is warm), and whether this
    /// is the scan's last slice.
    Picked {
        dev: u8,
        seq: u64,
        picks: Vec<L2Pick<Buf>>,
        warm: bool,
        last: bool,
    },
    /// Feeder → shard: drop L2 copies in these `(start, end, key hashes)`
    /// ranges of `dev`, from range `from.0`'s hash `from.1` on, then
    /// acknowledge. Sliced at `budget` like `Scan`.
    Evict {
        dev: u8,
        feeder: usize,
        seq: u64,
        ranges: Vec<(u64, u64, Vec<u32>)>,
        from: (usize, usize),
        budget: Duration,
    },
    /// Shard → feeder: the evicted ranges can be overwritten.
    EvictAck { dev: u8, seq: u64 },
    /// Shard → feeder: blocks are piling up in my staging queue; feed now
    /// (still within the write rate cap).
    Kick { dev: u8 },
    /// Feeder → shard: where the blocks landed, or `None` when their write
    /// failed (the deferred done list).
    Done {
        dev: u8,
        entries: Vec<(HeaderIdx, Option<L2Loc>)>,
    },
    /// Shard → feeder: log that the key with this hash was invalidated
    /// or replaced, and answer `Durable` with `token` once the record is
    /// durable.
    Record {
        dev: u8,
        hash: u64,
        from: usize,
        token: u64,
    },
    /// Feeder → shard: the records of these tokens are durable on `dev`,
    /// or, with `lost`, `dev`'s log failed before they were.
    Durable {
        dev: u8,
        tokens: Vec<u64>,
        lost: bool,
    },
    /// Feeder → shard: the rebuild of `dev` may bring up to `entries`
    /// entries to this shard (room is made for them at once).
    RebuildStart { dev: u8, entries: u64 },
    /// Feeder → shard: what the rebuild of `dev` found for this shard, in
    /// log order.
    Rebuilt { dev: u8, items: Vec<Rebuilt> },
    /// Feeder → shard: the rebuild of `dev` is over.
    RebuildDone { dev: u8 },
}

impl std::fmt::Debug for L2Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            L2Msg::Scan { dev, seq, .. } => write!(f, "L2Scan(dev {dev}, seq {seq})"),
            L2Msg::Picked { dev, picks, .. } => write!(f, "L2Picked(dev {dev}, {})", picks.len()),
            L2Msg::Evict { dev, ranges, .. } => write!(f, "L2Evict(dev {dev}, {})", ranges.len()),
            L2Msg::EvictAck { dev, seq } => write!(f, "L2EvictAck(dev {dev}, seq {seq})"),
            L2Msg::Kick { dev } => write!(f, "L2Kick(dev {dev})"),
            L2Msg::Done { dev, entries } => write!(f, "L2Done(dev {dev}, {})", entries.len()),
            L2Msg::Record { dev, token, .. } => write!(f, "L2Record(dev {dev}, token {token})"),
            L2Msg::Durable { dev, tokens, lost } => {
                write!(f, "L2Durable(dev {dev}, {}, lost {lost})", tokens.len())
            }
            L2Msg::Rebuilt { dev, items } => write!(f, "L2Rebuilt(dev {dev}, {})", items.len()),
            L2Msg::RebuildDone { dev } => write!(f, "L2RebuildDone(dev {dev})"),
            L2Msg::RebuildStart { dev, entries } => {
                write!(f, "L2RebuildStart(dev {dev}, {entries})")
            }
        }
    }
}

/// How the L2 tier reaches the other reactors. Implemented above it, by
/// the reactors' mailboxes, so that the L2 tier does not depend on the
/// engine's message type.
pub(crate) trait L2Link: Send + Sync {
    /// Sends `msg` to reactor `to`. A reactor that has shut down drops it.
    fn send(&self, to: usize, msg: L2Msg);
    /// Number of reactors (and shards).
    fn reactors(&self) -> usize;
}
