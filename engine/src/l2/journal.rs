//! A feeder's log on its device (docs/format.md): log blocks describing
//! the feed writes that completed and the invalidation records, written
//! round the log ring; flushes; and the header. The journal orders them:
//!
//! * a write's entries are logged when it is packed, in the order of
//!   everything else the feeder logs: an invalidation record that comes
//!   later lands after them and kills them at a rebuild. (An entry whose
//!   write never completed fails its keyed checksum when read.) Then a
//!   flush, then the header;
//! * the evict position is durable (header, then flush) before the hand
//!   overwrites what an older header vouches for ([`Journal::fence`]);
//! * a record is acknowledged once a flush submitted after its log block
//!   completed has completed. Records are group-committed: while a flush
//!   is in flight, new records wait in the open block for the next one.
//!
//! A log block, once written, is never rewritten: a torn rewrite could
//! destroy a record already acknowledged. A write that fails is sealed
//! again under a new sequence number. After [`MAX_ATTEMPTS`] failures the
//! device's log is given up: both header copies are zeroed and flushed,
//! tried again every [`POISON_RETRY`] until that lands (so that a restart
//! formats it instead of rebuilding a log that lacks records); every
//! waiter is released, and nothing more is logged.
#![forbid(unsafe_code)]

use super::format::{
    DeviceHeader, Geometry, LogBlock, LogItem, COMPAT_CLEAN, ITEM_BYTES, LOG_HEADER_BYTES,
};
use super::L2Counters;
use crate::bufpool::{Buf, BufMut, BufPool};
use crate::device::{Completion, DeviceError, DeviceQueue, IoOp};
use std::collections::{HashMap, VecDeque};

/// Attempts of one log block write, flush or header write before the
/// device's log is given up.
pub(crate) const MAX_ATTEMPTS: u32 = 8;
/// Attempts of one request that timed out before the log is given up: a
/// device that does not answer would only pile up more requests.
pub(crate) const MAX_TIMED_OUT_ATTEMPTS: u32 = 2;

/// True when a request that failed with `e` at its `attempts`-th attempt
/// is not tried again.
fn give_up(e: &DeviceError, attempts: u32) -> bool {
    attempts >= MAX_ATTEMPTS
        || (matches!(e, DeviceError::TimedOut { .. }) && attempts >= MAX_TIMED_OUT_ATTEMPTS)
}

/// Log block writes in flight at most: the feeder's data writes share the
/// queue.
const LOG_WRITES_IN_FLIGHT: usize = 4;

/// Requests of the journal on the feeder's queue carry this in their tag's
/// top byte.
pub(crate) const TAG_KIND_SHIFT: u32 = 56;
pub(crate) const TAG_LOG: u64 = 1;
pub(crate) const TAG_FLUSH: u64 = 2;
pub(crate) const TAG_HEADER: u64 = 3;

/// The tag of the `n`th request of `kind` (0: a feed write) on a feeder's
/// queue: the kind in the top byte, `n` below it.
pub(crate) fn tag(kind: u64, n: u64) -> u64 {
    (kind << TAG_KIND_SHIFT) | (n & ((1 << TAG_KIND_SHIFT) - 1))
}

/// Who waits for what has been logged to be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// An invalidation record: answer reactor `from` with `token`.
    Record { from: usize, token: u64 },
    /// The end of a feed cycle: then write the header.
    Cycle,
    /// A new evict position, whose header write completed.
    Fence(u64),
    /// A clean shutdown: then write the header marked clean.
    Close,
    /// The clean header was written: once it is durable, closed.
    Closed,
}

/// What the journal tells its feeder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// These records are durable: (reactor, token).
    Durable(Vec<(usize, u64)>),
    /// The log failed before these records were durable, and its header
    /// is not known to be zeroed: a restart could resurrect their keys.
    Lost(Vec<(usize, u64)>),
    /// The cycle's log is durable and the header written.
    CycleSynced,
    /// The evict position asked for is durable.
    Fenced,
    /// The clean-shutdown header is durable.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderWhy {
    Cycle,
    Fence(u64),
    Close,
    /// After a failure, the steps that make a restart format the device:
    /// 0 and 1 zero the two header copies, 2 flushes them.
    Poison(u8),
}

/// A zeroing step that failed is tried again after this long, for as long
/// as the engine runs: until it lands, records answer `NotDurable`.
const POISON_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

struct LogWrite {
    seq: u64,
    buf: Buf,
    waiters: Vec<Waiter>,
    /// The end (logical) of the newest write named in the block.
    hand: u64,
    attempts: u32,
}

struct Flush {
    tag: u64,
    waiters: Vec<Waiter>,
    /// What it makes durable: the newest log block and hand.
    seq: u64,
    hand: u64,
    attempts: u32,
}

/// What a durable state vouches for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// The newest log block covered by a completed flush.
    pub seq: u64,
    /// The end (logical) of the newest write a durable block names.
    pub hand: u64,
    /// The evict position.
    pub evict: u64,
}

/// One device's log, run by its feeder.
pub(crate) struct Journal {
    name: String,
    geo: Geometry,
    guid: u128,
    pool: BufPool,
    /// The last header written.
    header: DeviceHeader,
    /// The open log block and its items so far.
    open: Option<(BufMut, usize)>,
    open_waiters: Vec<Waiter>,
    open_hand: u64,
    /// The write whose entries the open block is taking: repeated at the
    /// start of the next block when they spill over.
    open_write: Option<LogItem>,
    next_seq: u64,
    /// Sealed blocks waiting to be written, in sequence order.
    sealed: VecDeque<LogWrite>,
    writes: HashMap<u64, LogWrite>,
    /// Waiters whose log blocks completed, for the next flush.
    completed: Vec<Waiter>,
    completed_seq: u64,
    completed_hand: u64,
    /// Waiters for every log block so far (a cycle's end, a shutdown).
    barrier: Vec<Waiter>,
    flush: Option<Flush>,
    header_io: Option<(u64, HeaderWhy, u32)>,
    /// Header writes waiting for the one in flight.
    header_queue: Vec<HeaderWhy>,
    durable: Durable,
    /// The next feed write's sequence number (for the header).
    pub next_write: u64,
    failed: bool,
    /// After a failure: both header copies are zeroed and flushed, so a
    /// restart formats the device and records need no log.
    zeroed: bool,
    /// After a failed zeroing step: when to try it again.
    poison_retry: Option<std::time::Instant>,
    next_tag: u64,
    events: Vec<Event>,
    /// Counters: log writes and bytes, flushes, header writes, records.
    pub counters: L2Counters,
}

impl Journal {
    /// The journal of a device whose header is `header` (just written at
    /// format time, or read back and rebuilt from), its log resuming at
    /// sequence number `next_seq`, with `durable` as the rebuild found it.
    pub(crate) fn new(
        name: String,
        header: DeviceHeader,
        next_seq: u64,
        durable: Durable,
        pool: &BufPool,
    ) -> Journal {
        Journal {
            name,
            geo: header.geometry,
            guid: header.guid,
            pool: pool.clone(),
            next_write: header.next_write,
            header,
            open: None,
            open_waiters: Vec::new(),
            open_hand: 0,
            open_write: None,
            next_seq: next_seq.max(1),
            sealed: VecDeque::new(),
            writes: HashMap::new(),
            completed: Vec::new(),
            completed_seq: 0,
            completed_hand: 0,
            barrier: Vec::new(),
            flush: None,
            header_io: None,
            header_queue: Vec::new(),
            durable,
            failed: false,
            zeroed: false,
            poison_retry: None,
            next_tag: 0,
            events: Vec::new(),
            counters: L2Counters::default(),
        }
    }

    /// True when nothing is in flight or waiting.
    pub(crate) fn idle(&self) -> bool {
        self.writes.is_empty()
            && self.sealed.is_empty()
            && self.flush.is_none()
            && self.header_io.is_none()
            && self.header_queue.is_empty()
            && self.open_waiters.is_empty()
            && self.completed.is_empty()
            && self.barrier.is_empty()
    }

    /// Takes what happened since the last call.
    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn tag(&mut self, kind: u64) -> u64 {
        self.next_tag += 1;
        tag(kind, self.next_tag)
    }

    /// Logs a completed feed write and the blocks it stored.
    pub(crate) fn log_write(
        &mut self,
        q: &mut dyn DeviceQueue,
        write: LogItem,
        entries: &[LogItem],
    ) {
        if self.failed {
            return;
        }
        let LogItem::Write {
            logical, sectors, ..
        } = write
        else {
            unreachable!("log_write takes a Write item")
        };
        let end = logical + u64::from(sectors) * 512;
        self.open_write = None;
        self.append(q, write);
        self.open_write = Some(write);
        for e in entries {
            self.open_hand = self.open_hand.max(end);
            self.append(q, *e);
        }
        self.open_hand = self.open_hand.max(end);
        self.open_write = None;
    }

    /// Logs that the key with `hash` is dead; `from`'s `token` is answered
    /// once the record is durable.
    pub(crate) fn record(&mut self, q: &mut dyn DeviceQueue, hash: u64, from: usize, token: u64) {
        if self.failed {
            self.resolve(vec![Waiter::Record { from, token }]);
            return;
        }
        self.append(q, LogItem::Invalidate { hash });
        self.open_waiters.push(Waiter::Record { from, token });
        self.counters.l2_records += 1;
    }

    /// The feed cycle is over: make its log durable, then write the header;
    /// [`Event::CycleSynced`] follows.
    pub(crate) fn sync_cycle(&mut self) {
        self.wait_for_all(Waiter::Cycle);
    }

    /// Makes `evict` the durable evict position before any write passes
    /// the old one; [`Event::Fenced`] follows.
    pub(crate) fn fence(&mut self, evict: u64) {
        if self.failed || evict <= self.durable.evict {
            self.events.push(Event::Fenced);
            return;
        }
        self.header_queue.push(HeaderWhy::Fence(evict));
    }

    /// Shutdown: the log and then a header marked clean, durable;
    /// [`Event::Closed`] follows.
    pub(crate) fn close(&mut self) {
        self.wait_for_all(Waiter::Close);
    }

    fn wait_for_all(&mut self, w: Waiter) {
        if self.failed {
            self.resolve(vec![w]);
            return;
        }
        self.barrier.push(w);
    }

    /// Submits what is due: the open block when someone waits on it, a
    /// flush for completed blocks, the next header write.
    pub(crate) fn pump(&mut self, q: &mut dyn DeviceQueue) {
        if self.failed {
            let due = self
                .poison_retry
                .is_none_or(|t| std::time::Instant::now() >= t);
            if self.header_io.is_none() && due {
                if let Some(&why @ HeaderWhy::Poison(_)) = self.header_queue.first() {
                    self.header_queue.clear();
                    self.write_header(q, why, 1);
                }
            }
            return;
        }
        // Group commit: while one commit (a waited-on block's write, then
        // its flush) is under way, records gather in the open block.
        let waited_on = !self.open_waiters.is_empty() || !self.barrier.is_empty();
        if waited_on && !self.committing() && self.open.is_some() {
            self.seal(q);
        }
        self.submit_sealed(q);
        if !self.barrier.is_empty()
            && self.open.is_none()
            && self.sealed.is_empty()
            && self.writes.is_empty()
        {
            let b = std::mem::take(&mut self.barrier);
            self.completed.extend(b);
        }
        if self.flush.is_none() && !self.completed.is_empty() {
            let waiters = std::mem::take(&mut self.completed);
            let tag = self.tag(TAG_FLUSH);
            self.flush = Some(Flush {
                tag,
                waiters,
                seq: self.completed_seq,
                hand: self.completed_hand,
                attempts: 1,
            });
            self.counters.l2_flushes += 1;
            q.submit(tag, IoOp::Flush);
        }
        if self.header_io.is_none() && !self.header_queue.is_empty() {
            let why = self.header_queue.remove(0);
            self.write_header(q, why, 1);
        }
    }

    /// A request of the journal completed.
    pub(crate) fn on_complete(&mut self, q: &mut dyn DeviceQueue, c: Completion) {
        match c.tag >> TAG_KIND_SHIFT {
            TAG_LOG => self.log_done(q, c),
            TAG_FLUSH => self.flush_done(q, c),
            TAG_HEADER => self.header_done(q, c),
            k => log::error!("{}: journal completion of kind {k}", self.name),
        }
    }

    fn append(&mut self, q: &mut dyn DeviceQueue, item: LogItem) {
        let per_block = self.geo.items_per_log_block();
        if self.open.as_ref().is_some_and(|(_, n)| *n >= per_block) {
            self.seal(q);
        }
        if self.open.is_none() {
            let len = self.geo.meta_block as usize;
            let Some(mut b) = self.pool.alloc(len) else {
                // Without a buffer the log cannot go on: give it up rather
                // than acknowledge what was never logged.
                log::error!("{}: no pool buffer for a log block", self.name);
                self.fail(q);
                return;
            };
            b.as_mut_slice()[..len].fill(0);
            self.open = Some((b, 0));
            // Entries belong to the write before them, in the same block.
            if let Some(w) = self.open_write {
                if !matches!(item, LogItem::Write { .. }) {
                    self.put(w);
                }
            }
        }
        self.put(item);
    }

    fn put(&mut self, item: LogItem) {
        let (b, n) = self.open.as_mut().expect("an open block");
        let at = LOG_HEADER_BYTES + *n * ITEM_BYTES;
        b.as_mut_slice()[at..at + ITEM_BYTES].copy_from_slice(&item.encode());
        *n += 1;
    }

    /// True while a commit is under way: a block someone waits on is
    /// sealed or being written, or waits for its flush.
    fn committing(&self) -> bool {
        self.flush.is_some()
            || !self.completed.is_empty()
            || self.sealed.iter().any(|w| !w.waiters.is_empty())
            || self.writes.values().any(|w| !w.waiters.is_empty())
    }

    /// Seals the open block under the next sequence number (the order
    /// of its contents), to be written by [`Journal::pump`].
    fn seal(&mut self, q: &mut dyn DeviceQueue) {
        let Some((mut b, n)) = self.open.take() else {
            return;
        };
        let len = self.geo.meta_block as usize;
        let seq = self.next_seq;
        self.next_seq += 1;
        LogBlock {
            seq,
            evict: self.durable.evict,
            items: n,
        }
        .seal(self.guid, &mut b.as_mut_slice()[..len]);
        self.sealed.push_back(LogWrite {
            seq,
            buf: b.freeze(len),
            waiters: std::mem::take(&mut self.open_waiters),
            hand: std::mem::take(&mut self.open_hand),
            attempts: 0,
        });
        self.submit_sealed(q);
    }

    /// Writes sealed blocks, at most [`LOG_WRITES_IN_FLIGHT`] at a time.
    fn submit_sealed(&mut self, q: &mut dyn DeviceQueue) {
        while self.writes.len() < LOG_WRITES_IN_FLIGHT {
            let Some(mut w) = self.sealed.pop_front() else {
                return;
            };
            w.attempts += 1;
            let tag = self.tag(TAG_LOG);
            let (offset, buf) = (self.geo.log_offset(w.seq), w.buf.clone());
            self.counters.l2_log_writes += 1;
            self.counters.l2_log_write_bytes += buf.len() as u64;
            self.counters.l2_dev_write_bytes += buf.len() as u64;
            self.writes.insert(tag, w);
            q.submit(tag, IoOp::Write { offset, buf });
        }
    }

    fn log_done(&mut self, q: &mut dyn DeviceQueue, c: Completion) {
        let Some(mut w) = self.writes.remove(&c.tag) else {
            if !self.failed {
                log::error!("{}: unknown log write {:x}", self.name, c.tag);
            }
            return;
        };
        match c.result {
            Ok(()) => {
                self.completed.extend(w.waiters);
                self.completed_seq = self.completed_seq.max(w.seq);
                self.completed_hand = self.completed_hand.max(w.hand);
                // Nobody may wait on this block: its entries still go
                // with the next flush asked for.
            }
            // A full queue is no failure: try again soon.
            Err(DeviceError::QueueFull { .. }) => {
                w.attempts -= 1;
                self.sealed.push_front(w);
            }
            Err(e) if give_up(&e, w.attempts) => {
                self.counters.l2_log_write_errors += 1;
                log::error!(
                    "{}: log block write failed {} times ({e})",
                    self.name,
                    w.attempts
                );
                self.completed.extend(w.waiters);
                self.fail(q);
            }
            Err(e) => {
                // Written again under the same sequence number: a failed
                // write vouched for nothing, and a later number would put
                // its items after records that came later.
                self.counters.l2_log_write_errors += 1;
                log::warn!(
                    "{}: log block write failed ({e}); writing it again",
                    self.name
                );
                self.sealed.push_front(w);
            }
        }
        self.submit_sealed(q);
    }

    fn flush_done(&mut self, q: &mut dyn DeviceQueue, c: Completion) {
        let Some(mut f) = self.flush.take() else {
            if !self.failed {
                log::error!("{}: unknown flush {:x}", self.name, c.tag);
            }
            return;
        };
        if let Err(e) = c.result {
            let full = matches!(e, DeviceError::QueueFull { .. });
            self.counters.l2_log_write_errors += u64::from(!full);
            if !full && give_up(&e, f.attempts) {
                log::error!("{}: flush failed {} times ({e})", self.name, f.attempts);
                self.completed.extend(f.waiters);
                self.fail(q);
            } else {
                // A full queue is no failure.
                f.attempts += u32::from(!full);
                f.tag = self.tag(TAG_FLUSH);
                q.submit(f.tag, IoOp::Flush);
                self.flush = Some(f);
            }
            return;
        }
        self.durable.seq = self.durable.seq.max(f.seq);
        self.durable.hand = self.durable.hand.max(f.hand);
        self.resolve(f.waiters);
    }

    /// Waiters whose wait is over.
    fn resolve(&mut self, waiters: Vec<Waiter>) {
        let mut acks = Vec::new();
        for w in waiters {
            match w {
                Waiter::Record { from, token } => acks.push((from, token)),
                Waiter::Cycle if self.failed => self.events.push(Event::CycleSynced),
                Waiter::Cycle => self.header_queue.push(HeaderWhy::Cycle),
                Waiter::Fence(evict) => {
                    self.durable.evict = self.durable.evict.max(evict);
                    self.events.push(Event::Fenced);
                }
                Waiter::Close if self.failed => self.events.push(Event::Closed),
                Waiter::Close => self.header_queue.push(HeaderWhy::Close),
                Waiter::Closed => self.events.push(Event::Closed),
            }
        }
        if acks.is_empty() {
        } else if self.failed && !self.zeroed {
            self.events.push(Event::Lost(acks));
        } else {
            self.counters.l2_record_commits += 1;
            self.events.push(Event::Durable(acks));
        }
    }

    fn write_header(&mut self, q: &mut dyn DeviceQueue, why: HeaderWhy, attempts: u32) {
        if why == HeaderWhy::Poison(2) {
            let tag = self.tag(TAG_HEADER);
            self.header_io = Some((tag, why, attempts));
            q.submit(tag, IoOp::Flush);
            return;
        }
        let len = self.geo.meta_block as usize;
        let Some(mut b) = self.pool.alloc(len) else {
            log::error!("{}: no pool buffer for the header", self.name);
            self.header_failed(q, why, MAX_ATTEMPTS);
            return;
        };
        let s = &mut b.as_mut_slice()[..len];
        let offset = if let HeaderWhy::Poison(copy) = why {
            // Both copies zeroed: a restart finds a new device.
            s.fill(0);
            self.geo.header_offset(u64::from(copy))
        } else {
            let d = self.durable;
            let h = DeviceHeader {
                generation: self.header.generation + 1,
                compat: if why == HeaderWhy::Close {
                    COMPAT_CLEAN
                } else {
                    0
                },
                hand: d.hand.max(self.header.hand),
                evict: match why {
                    HeaderWhy::Fence(e) => e.max(d.evict),
                    _ => d.evict,
                }
                .max(d.hand.max(self.header.hand)),
                newest_log: d.seq.max(self.header.newest_log),
                next_write: self.next_write,
                ..self.header
            };
            h.encode(s);
            self.header = h;
            self.geo.header_offset(h.generation)
        };
        let tag = self.tag(TAG_HEADER);
        self.header_io = Some((tag, why, attempts));
        self.counters.l2_header_writes += 1;
        self.counters.l2_dev_write_bytes += len as u64;
        q.submit(
            tag,
            IoOp::Write {
                offset,
                buf: b.freeze(len),
            },
        );
    }

    fn header_done(&mut self, q: &mut dyn DeviceQueue, c: Completion) {
        let Some((tag, why, attempts)) = self.header_io else {
            return;
        };
        if tag != c.tag {
            return;
        }
        self.header_io = None;
        if let Err(e) = c.result {
            if matches!(e, DeviceError::QueueFull { .. }) {
                // A full queue is no failure: the same write again.
                self.write_header(q, why, attempts);
                return;
            }
            self.counters.l2_log_write_errors += 1;
            log::warn!("{}: header write failed ({e})", self.name);
            let attempts = if give_up(&e, attempts) {
                MAX_ATTEMPTS
            } else {
                attempts
            };
            self.header_failed(q, why, attempts);
            return;
        }
        match why {
            HeaderWhy::Cycle => self.events.push(Event::CycleSynced),
            // The header must be durable before the hand moves on.
            HeaderWhy::Fence(e) => self.completed.push(Waiter::Fence(e)),
            // Closed once the clean header is durable.
            HeaderWhy::Close => self.completed.push(Waiter::Closed),
            HeaderWhy::Poison(step @ (0 | 1)) => {
                self.header_queue.push(HeaderWhy::Poison(step + 1))
            }
            HeaderWhy::Poison(_) => {
                self.zeroed = true;
                log::warn!(
                    "{}: header copies zeroed; records no longer need its log",
                    self.name
                );
            }
        }
    }

    fn header_failed(&mut self, q: &mut dyn DeviceQueue, why: HeaderWhy, attempts: u32) {
        self.header_io = None;
        if let HeaderWhy::Poison(step) = why {
            if self.poison_retry.is_none() || attempts >= MAX_ATTEMPTS {
                log::error!(
                    "{}: could not zero the header either (step {step}); trying again every {POISON_RETRY:?}, records answer NotDurable meanwhile",
                    self.name
                );
            }
            self.header_queue = vec![why];
            self.poison_retry = Some(std::time::Instant::now() + POISON_RETRY);
            return;
        }
        if attempts >= MAX_ATTEMPTS {
            log::error!("{}: header write failed {MAX_ATTEMPTS} times", self.name);
            let w = match why {
                HeaderWhy::Cycle => Waiter::Cycle,
                HeaderWhy::Fence(e) => Waiter::Fence(e),
                _ => Waiter::Close,
            };
            self.completed.push(w);
            self.fail(q);
        } else {
            self.write_header(q, why, attempts + 1);
        }
    }

    /// Gives the log up: zeroes the header copies (best effort), releases
    /// every waiter, logs nothing more.
    fn fail(&mut self, q: &mut dyn DeviceQueue) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.counters.l2_log_failures += 1;
        log::error!(
            "{}: its log is given up; the device will be started empty next time",
            self.name
        );
        let mut all = std::mem::take(&mut self.open_waiters);
        all.append(&mut self.completed);
        all.append(&mut self.barrier);
        for (_, w) in self.writes.drain() {
            all.extend(w.waiters);
        }
        for w in self.sealed.drain(..) {
            all.extend(w.waiters);
        }
        if let Some(f) = self.flush.take() {
            all.extend(f.waiters);
        }
        // Header writes asked for, in flight or waiting, end too (a late
        // completion of the one in flight is ignored).
        let headers = self
            .header_queue
            .drain(..)
            .chain(self.header_io.take().map(|h| h.1));
        all.extend(headers.filter_map(|why| match why {
            HeaderWhy::Cycle => Some(Waiter::Cycle),
            HeaderWhy::Fence(e) => Some(Waiter::Fence(e)),
            HeaderWhy::Close => Some(Waiter::Close),
            HeaderWhy::Poison(_) => None,
        }));
        self.open = None;
        self.resolve(all);
        self.header_queue = vec![HeaderWhy::Poison(0)];
        self.pump(q);
    }
}
