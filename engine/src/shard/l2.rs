//! The shard's side of the L2 tier: picking blocks for the feeder, taking
//! its done and evict messages, and the compact table of L2-only blocks.
//!
//! A block that left the ARC entirely but still has an L2 copy keeps no
//! full header: it becomes an [`L2Entry`] (32 B: the key's full 64-bit
//! hash and the packed location) in a table of its own. Identity there is
//! the 64-bit hash, which is also what the on-device log records, so that
//! a rebuild can re-shard entries. Beyond that, the checksum is keyed by
//! the key ([`key_tag`]), so even an entry found for another key that
//! shares all 64 bits fails verification and is dropped, never served.
//!
//! Also here: the shard's side of a rebuild at start-up (entries and
//! invalidation records from a device's log, applied in log order).

use super::header::{Flags, HeaderIdx, State, NIL};
use super::{hash_key, table_hash, Shard};
use crate::l2::format::{key_tag, Encoding, L2Loc};
use hashbrown::HashTable;

/// An L2-only block: everything the read path needs, without the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Entry {
    /// The key's hash ([`super::hash_key`]).
    pub hash: u64,
    /// Where the copy is.
    pub loc: L2Loc,
}

/// What a rebuild found in a device's log, for one shard, in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebuilt {
    /// The key with this hash has a copy here.
    Entry(u64, L2Loc),
    /// Copies of the key with this hash logged before, on device `dev`,
    /// are dead (it was invalidated or replaced).
    Dead(u64, u8),
}

/// What applying rebuilt items did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildApplied {
    /// Entries now in the shard (L2-only, or on a header).
    pub entries: u64,
    /// Of which attached to a header already in the ARC.
    pub precached: u64,
    /// Entries dropped: their key was invalidated or replaced while the
    /// rebuild ran, or a newer copy is being written.
    pub stale: u64,
    /// Logical bytes of the entries kept.
    pub bytes: u64,
    /// Device bytes of the entries kept.
    pub asize: u64,
}

/// Which blocks a feed scan may pick (ZFS's admission knobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickRules {
    /// Stop once this many bytes are picked.
    pub want: u64,
    /// Scan at most this many bytes from each list's cold end (headroom).
    pub scan: u64,
    /// Skip blocks brought in by prefetch and not read since.
    pub noprefetch: bool,
    /// Pick from MFU only.
    pub mfuonly: bool,
}

/// Headers a pick slice looks at between two checks of its time budget.
pub const PICK_SLICE: usize = 64;

/// Where a scan cut into slices goes on from (see [`Shard::l2_pick_some`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PickCursor {
    /// 0: the staged queue and then MFU; 1: MRU.
    list: usize,
    /// The next header of that list to look at; `None`: its cold end.
    next: Option<HeaderIdx>,
    /// Bytes of the lists scanned so far.
    scanned: u64,
    /// Bytes picked so far.
    picked: u64,
    /// The scan is over.
    pub done: bool,
}

impl PickCursor {
    fn next_list(&mut self) {
        self.list += 1;
        self.next = None;
        self.scanned = 0;
    }
}

/// A block picked for L2: marked `L2_WRITING`, its data referenced.
#[derive(Debug)]
pub struct L2Pick<T> {
    /// Its header; stays allocated until the done message.
    pub idx: HeaderIdx,
    /// Key hash, for the feeder's log and the evict messages.
    pub hash: u64,
    /// Checksum key ([`key_tag`]).
    pub tag: u64,
    /// Logical size.
    pub size: u32,
    /// A reference to the data: the block cannot change or vanish under
    /// the feeder.
    pub data: T,
    /// Picked from MFU.
    pub mfu: bool,
}

/// L2 sizes of one shard, following arcstats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct L2Sizes {
    /// Blocks with an L2 copy.
    pub l2_blocks: u64,
    /// Logical bytes of those blocks (`l2_size`).
    pub l2_size: u64,
    /// Bytes they take on the devices (`l2_asize`).
    pub l2_asize: u64,
    /// Of `l2_asize`, blocks written from MRU.
    pub l2_mru_asize: u64,
    /// Of `l2_asize`, blocks written from MFU.
    pub l2_mfu_asize: u64,
    /// L2-only blocks (no ARC header at all).
    pub l2_only_blocks: u64,
    /// DRAM of the L2-only table, in bytes.
    pub l2_only_table_bytes: u64,
}

/// Blocks evicted from the ARC before the feeder reached them. Under a
/// workload that drives ARC's `p` towards 0, a block read once stays in
/// MRU for milliseconds, far less than a feed interval, so a scan of the
/// lists' cold ends alone never sees it (measured on zipf-1m: 3.5 points
/// of hit ratio lost). An eligible block leaving the ARC without an L2
/// copy is therefore kept here, marked `L2_WRITING` and holding its
/// buffer, until the next scan takes it; the queue is bounded, and the
/// oldest block is dropped when it is full.
#[derive(Debug)]
pub(super) struct Stage<T> {
    queue: std::collections::VecDeque<(HeaderIdx, T, u32, bool)>,
    bytes: u64,
    rules: Option<StageRules>,
}

impl<T> Default for Stage<T> {
    fn default() -> Self {
        Stage {
            queue: Default::default(),
            bytes: 0,
            rules: None,
        }
    }
}

/// Which evicted blocks are staged for the feeder, and how many bytes of
/// them at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageRules {
    /// Bytes of buffers the queue may hold.
    pub limit: u64,
    /// Skip prefetched blocks never read.
    pub noprefetch: bool,
    /// Stage MFU blocks only.
    pub mfuonly: bool,
}

/// What an evict message did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Evicted {
    /// L2 copies dropped.
    pub dropped: u64,
    /// Of which the block was still in the ARC (`l2_evict_l1cached`).
    pub l1cached: u64,
}

impl<T: Clone> Shard<T> {
    /// Stages evicted blocks for the feeder from now on (see [`Stage`]).
    pub fn l2_set_stage(&mut self, rules: StageRules) {
        self.stage.rules = Some(rules);
    }

    /// Picks blocks for the feeder in one go (see [`Shard::l2_pick_some`]).
    pub fn l2_pick(&mut self, rules: &PickRules) -> Vec<L2Pick<T>> {
        let mut cursor = PickCursor::default();
        self.l2_pick_some(rules, &mut cursor, || false)
    }

    /// Picks blocks for the feeder: first the staged ones, then from the
    /// cold ends of MFU and MRU, blocks that are resident, eligible, not
    /// yet in L2 and not being written. Marks them `L2_WRITING`. The reply
    /// is the seed's deferred write list.
    ///
    /// Works in slices: every [`PICK_SLICE`] headers it asks `out_of_time`,
    /// and when that says yes it returns what it picked so far, with
    /// `cursor` saying where to go on from (`cursor.done` is false). A
    /// scan of thousands of headers took up to 1.3 ms in one go, and every
    /// request on the reactor waited for it (docs/BENCHMARKS.md).
    pub fn l2_pick_some(
        &mut self,
        rules: &PickRules,
        cursor: &mut PickCursor,
        mut out_of_time: impl FnMut() -> bool,
    ) -> Vec<L2Pick<T>> {
        let mut picks = Vec::new();
        let mut looked = 0usize;
        let mut time_up = |looked: &mut usize| {
            *looked += 1;
            *looked % PICK_SLICE == 0 && out_of_time()
        };
        while cursor.list == 0 && cursor.picked < rules.want {
            let Some((idx, data, size, mfu)) = self.pop_staged() else {
                break;
            };
            if self.slab[idx as usize].flags.contains(Flags::DETACHED) {
                self.l2_settle(idx, None, false);
            } else {
                let h = &self.slab[idx as usize];
                cursor.picked += u64::from(size);
                picks.push(L2Pick {
                    idx,
                    hash: hash_key(&h.key),
                    tag: key_tag(&h.key),
                    size,
                    data,
                    mfu,
                });
            }
            if time_up(&mut looked) {
                return picks;
            }
        }
        let lists: &[State] = if rules.mfuonly {
            &[State::Mfu]
        } else {
            &[State::Mfu, State::Mru]
        };
        while let Some(&state) = lists.get(cursor.list) {
            // Where the last slice stopped, if that header is still on the
            // list (requests ran in between); else the cold end again.
            let mut next = match cursor.next {
                Some(i) if self.slab.get(i as usize).is_some_and(|h| h.state == state) => Some(i),
                _ => self.list_from_tail(state).next(),
            };
            while let Some(idx) = next {
                if cursor.scanned >= rules.scan || cursor.picked >= rules.want {
                    break;
                }
                let h = &mut self.slab[idx as usize];
                next = (h.prev != NIL).then_some(h.prev);
                cursor.scanned += u64::from(h.size);
                if wants_l2(h, rules.noprefetch) {
                    cursor.picked += u64::from(h.size);
                    h.flags.insert(Flags::L2_WRITING);
                    let data = h.data.clone().expect("resident header has data");
                    picks.push(L2Pick {
                        idx,
                        hash: hash_key(&h.key),
                        tag: key_tag(&h.key),
                        size: h.size,
                        data,
                        mfu: state == State::Mfu,
                    });
                }
                if time_up(&mut looked) {
                    cursor.next = next;
                    if next.is_none() {
                        cursor.next_list();
                    }
                    return picks;
                }
            }
            cursor.next_list();
        }
        cursor.done = true;
        picks
    }

    /// The feeder's done message for one block: its copy is at `loc`, or
    /// (`None`) its write failed. Clears `L2_WRITING` and settles a header
    /// that left the ARC or was invalidated while it was being written.
    pub fn l2_done(&mut self, idx: HeaderIdx, loc: Option<L2Loc>) {
        self.l2_settle(idx, loc, true);
    }

    /// Drops the L2 copies on device `dev` in `[start, end)` of the blocks
    /// whose key hashes' low 32 bits are `hashes` (the feeder's log of
    /// that range). Whatever lies in the range goes, whichever key it is.
    pub fn l2_evict(&mut self, dev: u8, start: u64, end: u64, hashes: &[u32]) -> L2Evicted {
        let mut out = L2Evicted::default();
        // An EMPTY block takes no room: it sits at the offset after the
        // block before it, which is the batch's end when it comes last.
        let in_range = |l: &L2Loc| {
            l.is_some()
                && l.dev() == dev
                && l.offset() >= start
                && (l.offset() < end || (l.offset() == end && l.encoding() == Encoding::Empty))
        };
        for &hash in hashes {
            let th = table_hash(u64::from(hash));
            if let Ok(e) = self
                .l2only
                .find_entry(th, |e| e.hash as u32 == hash && in_range(&e.loc))
            {
                let (e, _) = e.remove();
                self.l2_account(e.loc, false);
                out.dropped += 1;
            }
            let idxs: Vec<HeaderIdx> = self
                .table
                .iter_hash(th)
                .copied()
                .filter(|&i| in_range(&self.slab[i as usize].l2))
                .collect();
            for idx in idxs {
                let loc = std::mem::replace(&mut self.slab[idx as usize].l2, L2Loc::NONE);
                self.l2_account(loc, false);
                out.dropped += 1;
                if self.slab[idx as usize].state.is_resident() {
                    out.l1cached += 1;
                }
            }
        }
        out
    }

    /// Drops the L2 copy `loc` of header `idx`, if it still has it (after a
    /// failed or corrupt L2 read).
    pub fn l2_drop(&mut self, idx: HeaderIdx, loc: L2Loc) {
        if self.slab[idx as usize].l2 == loc {
            self.slab[idx as usize].l2 = L2Loc::NONE;
            self.l2_account(loc, false);
        }
    }

    /// L2 sizes.
    pub fn l2_sizes(&self) -> L2Sizes {
        let mut s = self.l2;
        s.l2_only_blocks = self.l2only.len() as u64;
        s.l2_only_table_bytes = self.l2only.allocation_size() as u64;
        s
    }
}

impl<T> Shard<T> {
    /// The ARC is dropping the data of header `idx`: keep it for the
    /// feeder if the block is eligible and not yet in L2.
    pub(super) fn l2_stage_evicted(&mut self, idx: HeaderIdx, state: State, data: T) {
        let Some(rules) = self.stage.rules else {
            return;
        };
        let h = &mut self.slab[idx as usize];
        if !wants_l2(h, rules.noprefetch)
            || (rules.mfuonly && state != State::Mfu)
            || u64::from(h.size) > rules.limit
        {
            return;
        }
        h.flags.insert(Flags::L2_WRITING);
        let size = h.size;
        self.counters.l2_staged += 1;
        self.stage.bytes += u64::from(size);
        self.stage
            .queue
            .push_back((idx, data, size, state == State::Mfu));
        while self.stage.bytes > rules.limit {
            let Some((old, data, _, _)) = self.pop_staged() else {
                break;
            };
            drop(data);
            self.counters.l2_stage_dropped += 1;
            // A staged block the feeder will not get: as a failed write would.
            self.l2_settle(old, None, false);
        }
    }

    /// Takes the oldest staged block.
    fn pop_staged(&mut self) -> Option<(HeaderIdx, T, u32, bool)> {
        let e = self.stage.queue.pop_front()?;
        self.stage.bytes -= u64::from(e.2);
        Some(e)
    }

    /// Clears `L2_WRITING` of header `idx` and records `loc` as its copy.
    /// Settles a header that only that kept: an invalidated one is freed
    /// (its copy must never be found), one that left the ARC meanwhile is
    /// forgotten. A write that failed (`loc` none) for a block that left
    /// the ARC is counted when `count_failure`.
    fn l2_settle(&mut self, idx: HeaderIdx, loc: Option<L2Loc>, count_failure: bool) {
        let h = &mut self.slab[idx as usize];
        debug_assert!(
            h.flags.contains(Flags::L2_WRITING),
            "header {idx} is not being written"
        );
        h.flags.remove(Flags::L2_WRITING);
        let io = h.flags.contains(Flags::IO_IN_PROGRESS);
        if h.flags.contains(Flags::DETACHED) {
            if !io {
                self.free_slot(idx);
            }
            return;
        }
        let left_arc = h.state == State::Anon && !io;
        match loc {
            Some(loc) => {
                debug_assert!(!h.l2.is_some());
                h.l2 = loc;
                self.l2_account(loc, true);
            }
            None if left_arc && count_failure => self.counters.l2_write_failed_evicted += 1,
            None => {}
        }
        if left_arc {
            self.forget(idx);
        }
    }

    /// Releases every staged block, as if the queue overflowed.
    pub fn l2_unstage_all(&mut self) {
        while let Some((idx, data, _, _)) = self.pop_staged() {
            drop(data);
            self.l2_settle(idx, None, false);
        }
    }

    /// True when the staging queue is at least half full: the feeder
    /// should come sooner than its interval.
    pub fn l2_stage_pressure(&self) -> bool {
        self.stage
            .rules
            .is_some_and(|r| self.stage.bytes * 2 >= r.limit)
    }

    /// Bytes of buffers in the staging queue.
    pub fn l2_staged_bytes(&self) -> u64 {
        self.stage.bytes
    }

    /// Moves a header's L2 copy into the L2-only table; the caller frees
    /// the header. An older entry with the same hash is replaced.
    pub(super) fn l2_keep_only(&mut self, hash: u64, loc: L2Loc) {
        if let Some(old) = self.l2only_take(hash) {
            self.l2_account(old, false);
        }
        self.l2only
            .insert_unique(table_hash(hash), L2Entry { hash, loc }, |e| {
                table_hash(e.hash)
            });
    }

    /// Takes the L2-only entry of the key with this hash, if any.
    pub(super) fn l2only_take(&mut self, hash: u64) -> Option<L2Loc> {
        if self.l2only.is_empty() {
            return None;
        }
        self.l2only
            .find_entry(table_hash(hash), |e| e.hash == hash)
            .ok()
            .map(|e| e.remove().0.loc)
    }

    /// Drops the L2-only entry of the key with this hash (invalidation).
    pub(super) fn l2only_drop(&mut self, hash: u64) -> bool {
        match self.l2only_take(hash) {
            Some(loc) => {
                self.l2_account(loc, false);
                true
            }
            None => false,
        }
    }

    /// Applies items a rebuild found in device `dev`'s log, in log order.
    /// Keys in `dead` were invalidated or replaced since the engine
    /// started: their logged copies are older and are dropped.
    pub fn l2_rebuild(
        &mut self,
        items: &[Rebuilt],
        dead: &std::collections::HashSet<u64>,
    ) -> RebuildApplied {
        let mut out = RebuildApplied::default();
        for item in items {
            match *item {
                Rebuilt::Entry(hash, loc) => {
                    if !dead.is_empty() && dead.contains(&hash) {
                        out.stale += 1;
                        continue;
                    }
                    if let Some(idx) = self.find_by_hash(hash) {
                        // A key read (or inserted) since start-up: the
                        // logged copy joins its header if it has none.
                        let h = &self.slab[idx as usize];
                        if h.l2.is_some()
                            || h.flags.contains(Flags::L2_WRITING)
                            || h.flags.contains(Flags::DETACHED)
                        {
                            out.stale += 1;
                            continue;
                        }
                        self.slab[idx as usize].l2 = loc;
                        out.precached += 1;
                    } else {
                        self.l2_keep_only(hash, loc);
                    }
                    self.l2_account(loc, true);
                    out.entries += 1;
                    out.bytes += u64::from(loc.lsize());
                    out.asize += loc.asize();
                }
                Rebuilt::Dead(hash, dev) => {
                    if let Ok(e) = self
                        .l2only
                        .find_entry(table_hash(hash), |e| e.hash == hash && e.loc.dev() == dev)
                    {
                        let (e, _) = e.remove();
                        self.l2_account(e.loc, false);
                    }
                    if let Some(idx) = self.find_by_hash(hash) {
                        let loc = self.slab[idx as usize].l2;
                        if loc.is_some() && loc.dev() == dev {
                            self.slab[idx as usize].l2 = L2Loc::NONE;
                            self.l2_account(loc, false);
                        }
                    }
                }
            }
        }
        out
    }

    /// Makes room in the L2-only table for `entries` more.
    pub fn l2_reserve(&mut self, entries: u64) {
        let n = usize::try_from(entries).unwrap_or(usize::MAX);
        self.l2only.reserve(n, |e| table_hash(e.hash));
    }

    /// The header of the key whose hash is `hash`, if the table has one.
    fn find_by_hash(&self, hash: u64) -> Option<HeaderIdx> {
        self.table
            .find(table_hash(hash), |&i| {
                hash_key(&self.slab[i as usize].key) == hash
            })
            .copied()
    }

    pub(super) fn l2_account(&mut self, loc: L2Loc, add: bool) {
        let s = &mut self.l2;
        let (size, asize) = (u64::from(loc.lsize()), loc.asize());
        let list = if loc.from_mfu() {
            &mut s.l2_mfu_asize
        } else {
            &mut s.l2_mru_asize
        };
        if add {
            s.l2_blocks += 1;
            s.l2_size += size;
            s.l2_asize += asize;
            *list += asize;
        } else {
            s.l2_blocks -= 1;
            s.l2_size -= size;
            s.l2_asize -= asize;
            *list -= asize;
        }
    }
}

/// True when the block of `h` may be copied to L2: eligible, not yet in
/// L2, not being written, and (with `noprefetch`) not prefetch-only.
fn wants_l2<T>(h: &super::Header<T>, noprefetch: bool) -> bool {
    let f = h.flags;
    let prefetch_only = noprefetch && f.contains(Flags::PREFETCH);
    f.contains(Flags::L2_ELIGIBLE)
        && !f.contains(Flags::L2_WRITING)
        && !h.l2.is_some()
        && !prefetch_only
}

/// A new, empty L2-only table.
pub(super) fn new_table() -> HashTable<L2Entry> {
    HashTable::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::format::Encoding;
    use crate::shard::Policy;

    #[test]
    fn an_l2_only_entry_takes_32_bytes() {
        assert_eq!(std::mem::size_of::<L2Entry>(), 32);
    }

    /// A shard of `n` 4 KiB blocks, every third one read again (MFU).
    fn filled(n: u32) -> Shard<u32> {
        let mut s: Shard<u32> = Shard::new(u64::from(n) * 2 * 4096, Policy::Arc);
        for i in 0..n {
            let k = format!("key-{i}").into_bytes();
            let idx = s.begin_fill(hash_key(&k), &k);
            s.complete_fill(idx, 4096, i, Flags::L2_ELIGIBLE).unwrap();
            if i % 3 == 0 {
                let idx = s.lookup_for_read(hash_key(&k), &k).unwrap();
                s.hit(idx);
            }
        }
        s
    }

    fn rules(want: u64) -> PickRules {
        PickRules {
            want,
            scan: want * 2,
            noprefetch: false,
            mfuonly: false,
        }
    }

    #[test]
    fn a_scan_cut_into_slices_picks_what_one_pass_picks() {
        let (mut one, mut sliced) = (filled(1000), filled(1000));
        let want = 700 * 4096;
        let whole: Vec<HeaderIdx> = one.l2_pick(&rules(want)).iter().map(|p| p.idx).collect();
        let mut cursor = PickCursor::default();
        let mut parts = Vec::new();
        let mut slices = 0;
        while !cursor.done {
            slices += 1;
            parts.extend(sliced.l2_pick_some(&rules(want), &mut cursor, || true));
        }
        let parts: Vec<HeaderIdx> = parts.iter().map(|p| p.idx).collect();
        assert_eq!(whole.len(), 700);
        assert_eq!(parts, whole);
        assert!(slices >= 700 / PICK_SLICE, "{slices} slices");
    }

    #[test]
    fn a_sliced_scan_survives_its_lists_changing_between_slices() {
        let mut s = filled(1000);
        let want = 900 * 4096;
        let mut cursor = PickCursor::default();
        let mut picked = Vec::new();
        let mut next_key = 1000u32;
        while !cursor.done {
            for p in s.l2_pick_some(&rules(want), &mut cursor, || true) {
                assert!(s.header(p.idx).flags.contains(Flags::L2_WRITING));
                picked.push(p.idx);
            }
            // Requests between slices: hits move blocks to MFU's hot end,
            // fills push cold blocks out of the ARC.
            for i in (0..1000).step_by(7) {
                let k = format!("key-{i}").into_bytes();
                if let Some(idx) = s.lookup_for_read(hash_key(&k), &k) {
                    s.hit(idx);
                }
            }
            for _ in 0..50 {
                let k = format!("key-{next_key}").into_bytes();
                let idx = s.begin_fill(hash_key(&k), &k);
                s.complete_fill(idx, 4096, next_key, Flags::empty())
                    .unwrap();
                next_key += 1;
            }
        }
        let mut unique = picked.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), picked.len(), "a block was picked twice");
        assert!(picked.len() as u64 * 4096 <= want);
        assert!(picked.len() > 100, "only {} picked", picked.len());
    }

    #[test]
    fn a_block_keeps_its_copy_through_the_arc_and_invalidate_drops_it() {
        let mut s: Shard<u32> = Shard::new(3 * 4096, Policy::Arc);
        let key = |i: u32| format!("key-{i}").into_bytes();
        let fill = |s: &mut Shard<u32>, i: u32| {
            let k = key(i);
            let idx = s.begin_fill(hash_key(&k), &k);
            s.complete_fill(idx, 4096, i, Flags::L2_ELIGIBLE).unwrap();
        };
        fill(&mut s, 0);
        let picks = s.l2_pick(&PickRules {
            want: 1 << 20,
            scan: 1 << 20,
            noprefetch: true,
            mfuonly: false,
        });
        assert_eq!(picks.len(), 1);
        assert!(s.header(picks[0].idx).flags.contains(Flags::L2_WRITING));
        let loc = L2Loc::at(0, 0, Encoding::Raw, 4096, 4096).written(1, 1, false);
        s.l2_done(picks[0].idx, Some(loc));
        // Push it out of the ARC and out of the ghost lists.
        for i in 1..40 {
            fill(&mut s, i);
        }
        let z = s.l2_sizes();
        assert_eq!((z.l2_blocks, z.l2_only_blocks, z.l2_size), (1, 1, 4096));
        // A new fill of the key takes the L2-only entry over.
        let k = key(0);
        let idx = s.begin_fill(hash_key(&k), &k);
        assert_eq!(s.header(idx).l2, loc);
        assert_eq!(s.l2_sizes().l2_only_blocks, 0);
        s.abort_fill(idx);
        assert_eq!(s.l2_sizes().l2_only_blocks, 1, "back to L2-only");
        assert!(s.invalidate(hash_key(&k), &k));
        assert_eq!(s.l2_sizes().l2_blocks, 0);
        let idx = s.begin_fill(hash_key(&k), &k);
        assert!(
            !s.header(idx).l2.is_some(),
            "an invalidated key has no L2 copy"
        );
    }
}
