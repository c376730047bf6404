//! Client requests and fills: a miss starts one fill per key (from L2 when
//! it holds a usable copy, else from the backing store), concurrent misses
//! join it, and its completion enters the ARC and answers every waiter.
#![forbid(unsafe_code)]

use super::msg::Msg;
use super::Core;
use crate::backing::{ReadDone, ReadResult};
use crate::block::{Block, Source, Timing};
use crate::bufpool::Buf;
use crate::error::{BackingError, Error};
use crate::l2::read::Lookup;
use crate::request::{Op, Outcome, Reply, Request};
use crate::shard::{Flags, HeaderIdx};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// A fill in flight: who waits for it.
struct Fill {
    waiters: Vec<Reply>,
    prefetch: bool,
    /// Tells its backing read's completion from a late one of an earlier
    /// fill of the same header slot.
    id: u64,
}

impl Fill {
    fn flags(&self) -> Flags {
        let mut flags = Flags::L2_ELIGIBLE;
        if self.prefetch {
            flags.insert(Flags::PREFETCH);
        }
        flags
    }
}

/// A reactor's fills in flight, by header, and the deadlines of their
/// backing reads in the order they were started (the timeout is one for
/// all, so that is also deadline order).
#[derive(Default)]
pub(super) struct Fills {
    map: HashMap<HeaderIdx, Fill>,
    next_id: u64,
    deadlines: VecDeque<(Instant, HeaderIdx, u64)>,
}

impl Fills {
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

impl Core {
    /// Answers a request.
    pub(super) fn reply(&mut self, r: Reply, o: Outcome) {
        match r {
            Reply::None => {}
            Reply::Client(tx) => {
                self.answered += 1;
                let _ = tx.send(o);
            }
            Reply::Timed(tx, taken) => {
                self.answered += 1;
                let t = Timing {
                    taken,
                    answered: Instant::now(),
                };
                let _ = tx.send(o.map(|b| b.map(|b| b.with_timing(t))));
            }
            #[cfg(feature = "jobs")]
            Reply::Reactor(to, tag) if to == self.id => self.job_inbox.push((tag, o)),
            #[cfg(feature = "jobs")]
            Reply::Reactor(to, tag) => self.peers.queue_reply(to, tag, o),
        }
    }

    /// The block of a resident header.
    pub(crate) fn block(&self, idx: HeaderIdx) -> Block {
        Block::pool(
            self.shard
                .header(idx)
                .data
                .clone()
                .expect("resident header has data"),
            Source::Arc,
        )
    }

    pub(super) fn handle_request(&mut self, req: Request) {
        let Request {
            op,
            key,
            hash,
            reply,
        } = req;
        let reply = match reply {
            Reply::Client(tx) if self.limits.timing => Reply::Timed(tx, Instant::now()),
            r => r,
        };
        match op {
            Op::Get => {
                self.counters.gets += 1;
                let b = self
                    .shard
                    .lookup_for_read(hash, &key)
                    .map(|i| self.block(i));
                self.reply(reply, Ok(b));
            }
            Op::Read => {
                self.counters.reads += 1;
                match self.shard.lookup_for_read(hash, &key) {
                    Some(i) => {
                        let b = self.block(i);
                        self.reply(reply, Ok(Some(b)));
                    }
                    None => self.start_fill(hash, &key, reply, false),
                }
            }
            Op::Prefetch => {
                self.counters.prefetch_requests += 1;
                let busy = self.shard.find(hash, &key).is_some_and(|i| {
                    let h = self.shard.header(i);
                    h.state.is_resident() || h.flags.contains(Flags::IO_IN_PROGRESS)
                });
                if busy {
                } else if self.fills.len() >= self.limits.max_in_flight {
                    // Advice, not a request: dropped rather than queued
                    // without bound.
                    self.counters.prefetch_dropped += 1;
                } else {
                    self.start_fill(hash, &key, Reply::None, true);
                }
                self.reply(reply, Ok(None));
            }
            Op::Insert(data) => {
                self.counters.insert_requests += 1;
                // The old block, its L2 copy and any fill in flight go
                // first, as for an invalidation.
                self.shard.invalidate(hash, &key);
                self.cache_new(hash, &key, &data);
                self.after_kill(hash, reply);
            }
            Op::InsertIfAbsent(data) => {
                self.counters.insert_requests += 1;
                self.insert_if_absent(hash, &key, &data);
                self.reply(reply, Ok(None));
            }
            Op::Invalidate => {
                self.counters.invalidate_requests += 1;
                self.shard.invalidate(hash, &key);
                self.after_kill(hash, reply);
            }
        }
    }

    /// The key with this hash was invalidated or replaced: once every
    /// persistent L2 device has its record durable, the caller is answered
    /// (at once without one).
    fn after_kill(&mut self, hash: u64, reply: Reply) {
        match self.l2.as_deref_mut().and_then(|l2| l2.record_dead(hash)) {
            Some(token) => {
                self.awaiting_durable.insert(token, reply);
            }
            None => self.reply(reply, Ok(None)),
        }
    }

    /// Every device has answered for the records of these tokens: durable,
    /// or lost on the device named.
    pub(super) fn durable(&mut self, tokens: Vec<(u64, Option<String>)>) {
        for (t, lost) in tokens {
            let outcome = match lost {
                None => Ok(None),
                Some(device) => Err(Error::NotDurable { device }),
            };
            match self.awaiting_durable.remove(&t) {
                Some(reply) => self.reply(reply, outcome),
                None => log::error!("reactor {}: unknown durable token {t}", self.id),
            }
        }
    }

    /// Caches `data` for `key` unless it is already cached or being
    /// filled (the caller says blocks are immutable, so either copy is
    /// the same bytes).
    fn insert_if_absent(&mut self, hash: u64, key: &[u8], data: &[u8]) {
        if let Some(i) = self.shard.find(hash, key) {
            let h = self.shard.header(i);
            if h.state.is_resident() || h.flags.contains(Flags::IO_IN_PROGRESS) {
                return;
            }
        }
        self.cache_new(hash, key, data);
    }

    /// Caches `data` as the block of `key`, which has no resident block.
    fn cache_new(&mut self, hash: u64, key: &[u8], data: &[u8]) {
        let Some(buf) = self.copy_to_pool(data) else {
            self.counters.uncached_fills += 1;
            return;
        };
        let idx = self.shard.begin_fill(hash, key);
        // A rejection (too large) was cleaned up and counted by the shard.
        let _ = self
            .shard
            .complete_fill(idx, data.len() as u32, buf, Flags::L2_ELIGIBLE);
    }

    fn copy_to_pool(&self, data: &[u8]) -> Option<Buf> {
        let mut b = self.pool.alloc(data.len())?;
        b.as_mut_slice()[..data.len()].copy_from_slice(data);
        Some(b.freeze(data.len()))
    }

    /// Starts a fill for `key`, or joins the one in flight.
    pub(crate) fn start_fill(&mut self, hash: u64, key: &[u8], waiter: Reply, prefetch: bool) {
        if let Some(idx) = self.shard.find(hash, key) {
            if self.shard.header(idx).flags.contains(Flags::IO_IN_PROGRESS) {
                let fill = self
                    .fills
                    .map
                    .get_mut(&idx)
                    .expect("a fill in flight is pending");
                if !matches!(waiter, Reply::None) {
                    fill.waiters.push(waiter);
                    fill.prefetch = false;
                }
                self.counters.fills_joined += 1;
                return;
            }
        }
        let idx = self.shard.begin_fill(hash, key);
        let waiters = if matches!(waiter, Reply::None) {
            vec![]
        } else {
            vec![waiter]
        };
        self.fills.next_id += 1;
        let id = self.fills.next_id;
        self.fills.map.insert(
            idx,
            Fill {
                waiters,
                prefetch,
                id,
            },
        );
        let lookup = match self.l2.as_deref_mut() {
            Some(l2) => l2.try_read(&mut self.shard, idx),
            None => Lookup::Miss,
        };
        match lookup {
            Lookup::Reading => {}
            Lookup::Zeros(buf) => self.finish_l2_fill(idx, buf),
            Lookup::Miss => self.start_backing_read(idx),
        }
    }

    /// Reads the block of header `idx`, whose fill is pending, from the
    /// backing store.
    pub(crate) fn start_backing_read(&mut self, idx: HeaderIdx) {
        let Some(id) = self.fills.map.get(&idx).map(|f| f.id) else {
            log::error!(
                "reactor {}: backing read for header {idx}, which has no fill",
                self.id
            );
            return;
        };
        self.counters.backing_reads += 1;
        self.fills
            .deadlines
            .push_back((Instant::now() + self.limits.backing_timeout, idx, id));
        let me = self.peers.mailboxes()[self.id].clone();
        let key = self.shard.header(idx).key.clone();
        self.backing.read(
            &key,
            ReadDone::new(move |result| {
                // The reactor stays open while a fill is pending; one that
                // timed out meanwhile is told apart by its id.
                let _ = me.push(Msg::Fill { idx, id, result });
            }),
        );
    }

    /// Fails the fills whose backing read is past its deadline: their
    /// callers get a timeout error, the cache is left as it was, and the
    /// read's late completion is dropped.
    pub(crate) fn expire_backing_reads(&mut self, now: Instant) {
        while let Some(&(deadline, idx, id)) = self.fills.deadlines.front() {
            if deadline > now {
                break;
            }
            self.fills.deadlines.pop_front();
            if self.fills.map.get(&idx).is_none_or(|f| f.id != id) {
                continue; // completed in time
            }
            let fill = self.fills.map.remove(&idx).expect("checked above");
            self.shard.abort_fill(idx);
            self.counters.backing_timeouts += 1;
            let e = Error::Backing(BackingError::TimedOut(self.limits.backing_timeout));
            for w in fill.waiters {
                self.reply(w, Err(e.clone()));
            }
        }
    }

    /// Fails every fill in flight with `ShutDown` (a shutdown past its
    /// time limit); the cache is left as it was.
    pub(super) fn fail_all_fills(&mut self) {
        let fills: Vec<(HeaderIdx, Fill)> = self.fills.map.drain().collect();
        self.fills.deadlines.clear();
        for (idx, fill) in fills {
            self.shard.abort_fill(idx);
            for w in fill.waiters {
                self.reply(w, Err(Error::ShutDown));
            }
        }
    }

    /// Completes the fill of header `idx` with a block read from L2.
    pub(crate) fn finish_l2_fill(&mut self, idx: HeaderIdx, buf: Buf) {
        let Some(fill) = self.fills.map.remove(&idx) else {
            log::error!(
                "reactor {}: L2 fill of header {idx}, which has none pending",
                self.id
            );
            return;
        };
        let _ = self
            .shard
            .complete_fill(idx, buf.len() as u32, buf.clone(), fill.flags());
        let outcome = Ok(Some(Block::pool(buf, Source::L2)));
        for w in fill.waiters {
            self.reply(w, outcome.clone());
        }
    }

    /// The backing read `id` for the fill of header `idx` completed.
    pub(super) fn complete_fill(&mut self, idx: HeaderIdx, id: u64, result: ReadResult) {
        if self.fills.map.get(&idx).is_none_or(|f| f.id != id) {
            // It timed out: its callers have had their answer, and the
            // header may be another fill's by now.
            self.counters.backing_late += 1;
            return;
        }
        let fill = self.fills.map.remove(&idx).expect("checked above");
        let result = result.and_then(|v| {
            if v.is_empty() || v.len() > self.limits.max_block {
                Err(BackingError::BadSize {
                    size: v.len(),
                    max: self.limits.max_block,
                })
            } else {
                Ok(v)
            }
        });
        let outcome = match result {
            Err(e) => {
                self.shard.abort_fill(idx);
                self.counters.backing_errors += 1;
                Err(Error::Backing(e))
            }
            Ok(data) => match self.copy_to_pool(&data) {
                Some(buf) => {
                    // Rejected (invalidated meanwhile, or too large): the
                    // waiters still get the bytes they asked for.
                    let _ =
                        self.shard
                            .complete_fill(idx, data.len() as u32, buf.clone(), fill.flags());
                    Ok(Some(Block::pool(buf, Source::Backing)))
                }
                None => {
                    self.shard.abort_fill(idx);
                    self.counters.uncached_fills += 1;
                    Ok(Some(Block::heap(data)))
                }
            },
        };
        for w in fill.waiters {
            self.reply(w, outcome.clone());
        }
    }
}
