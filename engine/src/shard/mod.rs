//! A hash-table shard: headers, their hash table, and the ARC lists.
//!
//! A shard is owned by exactly one reactor. It does no I/O and holds no
//! locks; the reactor drives it. The trace validation tests drive the very
//! same code through [`Shard::access`], so there is no separate simulator.
//!
//! The replacement policy is the ARC of Megiddo & Modha (FAST 2003),
//! generalised from pages to bytes: list sizes and the target `p` are in
//! bytes, and `p` is an `f64` as in the paper. With every block the same
//! size it is exactly the paper's algorithm. [`Policy::Lru`] is a plain LRU
//! kept as a reference.
#![forbid(unsafe_code)]

mod header;
mod l2;
mod list;

pub use header::{Flags, Header, HeaderIdx, State, NIL};
pub use l2::{
    L2Entry, L2Evicted, L2Pick, L2Sizes, PickCursor, PickRules, RebuildApplied, Rebuilt,
    StageRules, PICK_SLICE,
};
pub use list::List;

use crate::l2::format::L2Loc;
use hashbrown::HashTable;

/// Hashes a key. Clients use it to route a key to its shard and the shard
/// reuses it for its table, so it is computed once per request.
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The hash a shard's tables use: the key hash's low 32 bits, spread
/// over 64. The L2-only table and the feeder's log keep only these 32
/// bits (4 bytes instead of 8 per block), so every table of a shard uses
/// the same 32; [`shard_of`] uses the other 32.
pub fn table_hash(hash: u64) -> u64 {
    u64::from(hash as u32).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Which shard of `n` owns a key hash. Uses the high bits so that the
/// table, which uses the low bits, stays well spread within a shard.
pub fn shard_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash >> 32) * n as u128) >> 32) as usize
}

/// The replacement policy of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Adaptive replacement cache (the default).
    #[default]
    Arc,
    /// Plain LRU, as a reference.
    Lru,
}

/// Why a completed fill did not enter the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The block is larger than the shard's whole capacity.
    TooLarge,
    /// The key was invalidated while the fill was in flight.
    Detached,
}

/// Counters a shard keeps; names follow ZFS's arcstats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardCounters {
    /// Demand accesses served from the ARC.
    pub hits: u64,
    /// Demand accesses that found no resident block.
    pub misses: u64,
    /// Hits on the MRU list.
    pub mru_hits: u64,
    /// Hits on the MFU list.
    pub mfu_hits: u64,
    /// Fills of a key found on the MRU ghost list.
    pub mru_ghost_hits: u64,
    /// Fills of a key found on the MFU ghost list.
    pub mfu_ghost_hits: u64,
    /// Blocks that entered the ARC.
    pub inserts: u64,
    /// Blocks evicted from the MRU list.
    pub evict_mru: u64,
    /// Blocks evicted from the MFU list.
    pub evict_mfu: u64,
    /// Bytes evicted from MRU and MFU.
    pub evicted_bytes: u64,
    /// Ghost headers deleted to bound the directory.
    pub ghost_deleted: u64,
    /// Blocks refused because they exceed the capacity.
    pub too_large: u64,
    /// Keys invalidated.
    pub invalidates: u64,
    /// Blocks that left the ARC while their L2 write was in flight (kept
    /// as anon headers until the done message).
    pub l2_writing_evicted: u64,
    /// Blocks invalidated while their L2 write was in flight (their copy
    /// is discarded by the done message).
    pub l2_writing_invalidated: u64,
    /// L2 writes that failed for blocks that had left the ARC meanwhile.
    pub l2_write_failed_evicted: u64,
    /// Blocks evicted before the feeder reached them, kept for it in the
    /// staging queue.
    pub l2_staged: u64,
    /// Staged blocks dropped because the queue was full.
    pub l2_stage_dropped: u64,
}

/// Sizes of the ARC states, in bytes and blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ShardSizes {
    /// Capacity `c` in bytes.
    pub c: u64,
    /// Adaptive MRU target `p` in bytes.
    pub p: f64,
    /// Resident MRU bytes (T1).
    pub mru_bytes: u64,
    /// Resident MFU bytes (T2).
    pub mfu_bytes: u64,
    /// MRU ghost bytes (B1).
    pub mru_ghost_bytes: u64,
    /// MFU ghost bytes (B2).
    pub mfu_ghost_bytes: u64,
    /// Resident blocks.
    pub resident_blocks: u64,
    /// Live headers of any state.
    pub headers: u64,
    /// DRAM taken by headers, their keys and the hash table.
    pub hdr_bytes: u64,
}

/// A shard: the hash table of headers plus the ARC lists over them.
#[derive(Debug)]
pub struct Shard<T> {
    table: HashTable<HeaderIdx>,
    slab: Vec<Header<T>>,
    free: HeaderIdx,
    live: u64,
    key_bytes: u64,
    policy: Policy,
    c: u64,
    p: f64,
    t1: List,
    t2: List,
    b1: List,
    b2: List,
    l2only: HashTable<L2Entry>,
    l2: L2Sizes,
    stage: l2::Stage<T>,
    /// Counters, read by the reactor for stats.
    pub counters: ShardCounters,
}

impl<T> Shard<T> {
    /// An empty shard holding at most `capacity` bytes of block data.
    pub fn new(capacity: u64, policy: Policy) -> Self {
        Shard {
            table: HashTable::new(),
            slab: Vec::new(),
            free: NIL,
            live: 0,
            key_bytes: 0,
            policy,
            c: capacity,
            p: 0.0,
            t1: List::default(),
            t2: List::default(),
            b1: List::default(),
            b2: List::default(),
            l2only: l2::new_table(),
            l2: L2Sizes::default(),
            stage: l2::Stage::default(),
            counters: ShardCounters::default(),
        }
    }

    /// Finds the header of `key`, whatever its state.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<HeaderIdx> {
        self.table
            .find(table_hash(hash), |&i| &*self.slab[i as usize].key == key)
            .copied()
    }

    /// The header at `idx`.
    pub fn header(&self, idx: HeaderIdx) -> &Header<T> {
        &self.slab[idx as usize]
    }

    /// Mutable header at `idx`, for flags and the L2 location. Callers
    /// must not change `size` or `state`: the lists account for them.
    pub fn header_mut(&mut self, idx: HeaderIdx) -> &mut Header<T> {
        &mut self.slab[idx as usize]
    }

    /// Looks up `key` for a demand read. Returns the header if resident,
    /// after counting the hit and applying ARC's case I; counts a miss
    /// otherwise.
    pub fn lookup_for_read(&mut self, hash: u64, key: &[u8]) -> Option<HeaderIdx> {
        match self.find(hash, key) {
            Some(idx) if self.slab[idx as usize].state.is_resident() => {
                self.hit(idx);
                Some(idx)
            }
            _ => {
                self.counters.misses += 1;
                None
            }
        }
    }

    /// A demand hit on a resident header (ARC case I).
    pub fn hit(&mut self, idx: HeaderIdx) {
        let h = &mut self.slab[idx as usize];
        debug_assert!(h.state.is_resident());
        h.flags.remove(Flags::PREFETCH);
        self.counters.hits += 1;
        match (self.policy, h.state) {
            (Policy::Lru, _) => {
                self.counters.mru_hits += 1;
                self.t1.remove(&mut self.slab, idx);
                self.t1.push_front(&mut self.slab, idx);
            }
            (Policy::Arc, State::Mru) => {
                self.counters.mru_hits += 1;
                self.t1.remove(&mut self.slab, idx);
                self.slab[idx as usize].state = State::Mfu;
                self.t2.push_front(&mut self.slab, idx);
            }
            (Policy::Arc, _) => {
                self.counters.mfu_hits += 1;
                self.t2.remove(&mut self.slab, idx);
                self.t2.push_front(&mut self.slab, idx);
            }
        }
    }

    /// Starts filling `key`, which is not resident: finds or creates its
    /// header and marks it `IO_IN_PROGRESS`. A ghost stays on its ghost
    /// list, so that the fill still counts as a ghost hit. A new header
    /// takes over the key's L2-only entry, if there is one.
    pub fn begin_fill(&mut self, hash: u64, key: &[u8]) -> HeaderIdx {
        let idx = match self.find(hash, key) {
            Some(idx) => idx,
            None => {
                let idx = self.alloc_header(key.into());
                self.table.insert_unique(table_hash(hash), idx, |&i| {
                    table_hash(hash_key(&self.slab[i as usize].key))
                });
                if let Some(loc) = self.l2only_take(hash) {
                    self.slab[idx as usize].l2 = loc;
                }
                idx
            }
        };
        let h = &mut self.slab[idx as usize];
        debug_assert!(!h.state.is_resident() && !h.flags.contains(Flags::IO_IN_PROGRESS));
        h.flags.insert(Flags::IO_IN_PROGRESS);
        idx
    }

    /// Completes a fill begun by [`Shard::begin_fill`]: the block enters
    /// the ARC (cases II to IV), evicting as needed. On rejection the data
    /// is handed back and the header is cleaned up.
    pub fn complete_fill(
        &mut self,
        idx: HeaderIdx,
        size: u32,
        data: T,
        flags: Flags,
    ) -> Result<(), (Rejected, T)> {
        let h = &mut self.slab[idx as usize];
        debug_assert!(h.flags.contains(Flags::IO_IN_PROGRESS));
        if h.flags.contains(Flags::DETACHED) {
            h.flags.remove(Flags::IO_IN_PROGRESS);
            self.free_detached(idx);
            return Err((Rejected::Detached, data));
        }
        if u64::from(size) > self.c {
            h.flags.remove(Flags::IO_IN_PROGRESS);
            self.counters.too_large += 1;
            self.settle_unfilled(idx);
            return Err((Rejected::TooLarge, data));
        }
        // IO_IN_PROGRESS stays set while the block is admitted: making room
        // may drop this very header from the L2 staging queue, which must
        // not free it.
        if h.state.is_ghost() {
            // The ghost's recorded size is what its list accounts for; the
            // new size takes effect once it is off the list.
            self.admit_ghost(idx, size);
        } else {
            self.slab[idx as usize].size = size;
            self.admit_new(idx);
        }
        let h = &mut self.slab[idx as usize];
        h.flags.remove(Flags::IO_IN_PROGRESS);
        h.data = Some(data);
        h.flags.insert(flags);
        self.counters.inserts += 1;
        Ok(())
    }

    /// Abandons a fill (the read failed): the header goes back to what it
    /// was, or away if it was new.
    pub fn abort_fill(&mut self, idx: HeaderIdx) {
        let h = &mut self.slab[idx as usize];
        h.flags.remove(Flags::IO_IN_PROGRESS);
        if h.flags.contains(Flags::DETACHED) {
            self.free_detached(idx);
        } else {
            self.settle_unfilled(idx);
        }
    }

    /// Invalidates `key`: it is never served again, from the ARC or from
    /// L2. A header whose fill or L2 write is in flight is detached from
    /// the table, so that neither can bring the key back; it is freed when
    /// the last of them completes. Returns true when the key was known.
    pub fn invalidate(&mut self, hash: u64, key: &[u8]) -> bool {
        let l2only = self.l2only_drop(hash);
        let Some(idx) = self.find(hash, key) else {
            if l2only {
                self.counters.invalidates += 1;
            }
            return l2only;
        };
        self.counters.invalidates += 1;
        self.unlist(idx);
        self.remove_from_table(idx);
        let loc = std::mem::replace(&mut self.slab[idx as usize].l2, L2Loc::NONE);
        if loc.is_some() {
            self.l2_account(loc, false);
        }
        let h = &mut self.slab[idx as usize];
        if h.flags.contains(Flags::L2_WRITING) {
            self.counters.l2_writing_invalidated += 1;
        }
        h.data = None;
        h.state = State::Anon;
        h.flags.insert(Flags::DETACHED);
        self.free_detached(idx);
        true
    }

    /// Frees a detached header unless a fill or an L2 write still refers
    /// to it; the last of those frees it.
    fn free_detached(&mut self, idx: HeaderIdx) {
        let f = self.slab[idx as usize].flags;
        if !f.contains(Flags::IO_IN_PROGRESS) && !f.contains(Flags::L2_WRITING) {
            self.free_slot(idx);
        }
    }

    /// Replays one access of a trace: a hit, or a miss followed at once by
    /// the fill. Returns true on a hit. Used by the validation tests and
    /// the perf harness's trace replay.
    pub fn access(&mut self, hash: u64, key: &[u8], size: u32, data: impl FnOnce() -> T) -> bool {
        if self.lookup_for_read(hash, key).is_some() {
            return true;
        }
        let idx = self.begin_fill(hash, key);
        // A rejection (too large) already cleaned up; it is still a miss.
        let _ = self.complete_fill(idx, size, data(), Flags::empty());
        false
    }

    /// Byte and block totals of the states.
    pub fn sizes(&self) -> ShardSizes {
        ShardSizes {
            c: self.c,
            p: self.p,
            mru_bytes: self.t1.bytes,
            mfu_bytes: self.t2.bytes,
            mru_ghost_bytes: self.b1.bytes,
            mfu_ghost_bytes: self.b2.bytes,
            resident_blocks: self.t1.len + self.t2.len,
            headers: self.live,
            hdr_bytes: self.hdr_bytes(),
        }
    }

    /// DRAM used by headers: the slab, the key bytes and the hash table.
    pub fn hdr_bytes(&self) -> u64 {
        (self.slab.capacity() * std::mem::size_of::<Header<T>>()) as u64
            + self.key_bytes
            + self.table.allocation_size() as u64
    }

    /// Live headers that have all bits of `flag` set.
    pub fn headers_with(&self, flag: Flags) -> usize {
        self.table
            .iter()
            .filter(|&&i| self.slab[i as usize].flags.contains(flag))
            .count()
    }

    /// Capacity `c` in bytes.
    pub fn capacity(&self) -> u64 {
        self.c
    }

    /// The replacement policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Headers on a list, LRU first: for tests and the L2 feeder's scan.
    pub fn list_from_tail(&self, state: State) -> impl Iterator<Item = HeaderIdx> + '_ {
        let list = match state {
            State::Mru => &self.t1,
            State::Mfu => &self.t2,
            State::MruGhost => &self.b1,
            State::MfuGhost => &self.b2,
            State::Anon => &EMPTY_LIST,
        };
        list.iter_from_tail(&self.slab)
    }

    // --- ARC ---------------------------------------------------------------

    /// Cases II and III: a fill of a key on a ghost list adapts `p`, makes
    /// room and enters MFU.
    fn admit_ghost(&mut self, idx: HeaderIdx, size: u32) {
        let state = self.slab[idx as usize].state;
        let ghost_size = f64::from(self.slab[idx as usize].size);
        let (b1, b2) = (self.b1.bytes as f64, self.b2.bytes as f64);
        let in_b2 = state == State::MfuGhost;
        if in_b2 {
            self.counters.mfu_ghost_hits += 1;
            let delta = if b2 >= b1 { 1.0 } else { b1 / b2 };
            self.p = (self.p - delta * ghost_size).max(0.0);
            self.b2.remove(&mut self.slab, idx);
        } else {
            self.counters.mru_ghost_hits += 1;
            let delta = if b1 >= b2 { 1.0 } else { b2 / b1 };
            self.p = (self.p + delta * ghost_size).min(self.c as f64);
            self.b1.remove(&mut self.slab, idx);
        }
        self.slab[idx as usize].size = size;
        self.make_room(u64::from(size), in_b2);
        self.slab[idx as usize].state = State::Mfu;
        self.t2.push_front(&mut self.slab, idx);
        self.trim_ghosts();
    }

    /// Case IV: a key in no list. (For LRU: evict from the tail.)
    fn admit_new(&mut self, idx: HeaderIdx) {
        let s = u64::from(self.slab[idx as usize].size);
        let c = self.c;
        if self.policy == Policy::Lru {
            while self.t1.bytes + s > c {
                let Some(t) = self.t1.tail() else { break };
                self.evict_resident(t, false);
            }
        } else if self.t1.bytes + self.b1.bytes + s > c {
            // Case IV.A: L1 = T1 ∪ B1 is full.
            while self.t1.bytes + self.b1.bytes + s > c {
                let Some(g) = self.b1.tail() else { break };
                self.drop_ghost(g);
            }
            // B1 was empty (|T1| = c in the paper): delete T1's LRU blocks
            // from the cache and the directory.
            while self.t1.bytes + s > c {
                let Some(t) = self.t1.tail() else { break };
                self.evict_resident(t, false);
            }
            self.make_room(s, false);
        } else {
            // Case IV.B.
            let total = |a: &Self| a.t1.bytes + a.t2.bytes + a.b1.bytes + a.b2.bytes;
            if total(self) + s > c {
                while total(self) + s > 2 * c {
                    let Some(g) = self.b2.tail() else { break };
                    self.drop_ghost(g);
                }
                self.make_room(s, false);
            }
        }
        self.slab[idx as usize].state = State::Mru;
        self.t1.push_front(&mut self.slab, idx);
        if self.policy == Policy::Arc {
            self.trim_ghosts();
        }
    }

    /// REPLACE of the paper, repeated until `s` more bytes fit in T1 ∪ T2.
    /// With unit sizes and a full cache it runs exactly once, as there.
    fn make_room(&mut self, s: u64, x_in_b2: bool) {
        while self.t1.bytes + self.t2.bytes + s > self.c {
            let t1 = self.t1.bytes as f64;
            let from_t1 =
                self.t1.len > 0 && ((x_in_b2 && t1 == self.p) || t1 > self.p || self.t2.len == 0);
            let victim = if from_t1 {
                self.t1.tail()
            } else {
                self.t2.tail()
            };
            let Some(v) = victim else { break };
            self.evict_resident(v, true);
        }
    }

    /// With variable sizes the paper's bounds |T1|+|B1| ≤ c and
    /// |T1|+|T2|+|B1|+|B2| ≤ 2c can be overshot by one block; restore them.
    fn trim_ghosts(&mut self) {
        while self.t1.bytes + self.b1.bytes > self.c {
            let Some(g) = self.b1.tail() else { break };
            self.drop_ghost(g);
        }
        while self.t1.bytes + self.t2.bytes + self.b1.bytes + self.b2.bytes > 2 * self.c {
            let Some(g) = self.b2.tail().or_else(|| self.b1.tail()) else {
                break;
            };
            self.drop_ghost(g);
        }
    }

    /// Evicts a resident block: to its ghost list when `to_ghost`, else
    /// out of the directory. Its data is dropped here, which returns a
    /// pool buffer once no reader holds it.
    fn evict_resident(&mut self, idx: HeaderIdx, to_ghost: bool) {
        let state = self.slab[idx as usize].state;
        let size = u64::from(self.slab[idx as usize].size);
        if state == State::Mru {
            self.t1.remove(&mut self.slab, idx);
            self.counters.evict_mru += 1;
        } else {
            self.t2.remove(&mut self.slab, idx);
            self.counters.evict_mfu += 1;
        }
        self.counters.evicted_bytes += size;
        let data = self.slab[idx as usize].data.take();
        if let Some(data) = data {
            self.l2_stage_evicted(idx, state, data);
        }
        if to_ghost {
            let (ghost_state, list) = if state == State::Mru {
                (State::MruGhost, &mut self.b1)
            } else {
                (State::MfuGhost, &mut self.b2)
            };
            self.slab[idx as usize].state = ghost_state;
            list.push_front(&mut self.slab, idx);
        } else {
            self.forget(idx);
        }
    }

    /// Deletes a ghost from its list.
    fn drop_ghost(&mut self, idx: HeaderIdx) {
        self.unlist(idx);
        self.counters.ghost_deleted += 1;
        self.forget(idx);
    }

    /// A header that left every list. It survives as anon while a fill
    /// or an L2 write is in flight (the done message settles it); with an
    /// L2 copy it shrinks to an L2-only entry; otherwise it is freed.
    fn forget(&mut self, idx: HeaderIdx) {
        let h = &mut self.slab[idx as usize];
        if h.flags.contains(Flags::IO_IN_PROGRESS) || h.flags.contains(Flags::L2_WRITING) {
            if h.flags.contains(Flags::L2_WRITING) && h.state != State::Anon {
                self.counters.l2_writing_evicted += 1;
            }
            h.state = State::Anon;
            return;
        }
        let loc = h.l2;
        self.remove_from_table(idx);
        if loc.is_some() {
            let hash = hash_key(&self.slab[idx as usize].key);
            self.l2_keep_only(hash, loc);
        }
        self.free_slot(idx);
    }

    /// After an aborted or rejected fill: a new (anon) header is removed,
    /// a ghost or L2-only header stays as it was.
    fn settle_unfilled(&mut self, idx: HeaderIdx) {
        if self.slab[idx as usize].state == State::Anon {
            self.forget(idx);
        }
    }

    fn unlist(&mut self, idx: HeaderIdx) {
        let list = match self.slab[idx as usize].state {
            State::Mru => &mut self.t1,
            State::Mfu => &mut self.t2,
            State::MruGhost => &mut self.b1,
            State::MfuGhost => &mut self.b2,
            State::Anon => return,
        };
        list.remove(&mut self.slab, idx);
    }

    // --- slab and table ----------------------------------------------------

    fn alloc_header(&mut self, key: Box<[u8]>) -> HeaderIdx {
        self.live += 1;
        self.key_bytes += key.len() as u64;
        if self.free != NIL {
            let idx = self.free;
            let h = &mut self.slab[idx as usize];
            self.free = h.next;
            *h = Header::new(key, 0);
            idx
        } else {
            let idx =
                HeaderIdx::try_from(self.slab.len()).expect("more than 2^32 headers in one shard");
            self.slab.push(Header::new(key, 0));
            idx
        }
    }

    fn remove_from_table(&mut self, idx: HeaderIdx) {
        let hash = table_hash(hash_key(&self.slab[idx as usize].key));
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
    }

    fn free_slot(&mut self, idx: HeaderIdx) {
        let h = &mut self.slab[idx as usize];
        self.live -= 1;
        self.key_bytes -= h.key.len() as u64;
        *h = Header::new(Box::default(), 0);
        h.next = self.free;
        self.free = idx;
    }
}

static EMPTY_LIST: List = List::EMPTY;

#[cfg(test)]
mod tests;
