//! Block headers: the per-block record a shard keeps in its hash table.

use crate::l2::format::L2Loc;

/// Index of a header in its shard's slab. `NIL` marks "no header".
pub type HeaderIdx = u32;
/// The null link of the intrusive lists.
pub const NIL: HeaderIdx = u32::MAX;

/// Where a header is in the ARC state machine (ZFS's `arc_state_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum State {
    /// On no list and holding no data: being filled, or out of the ARC
    /// and waiting for the feeder's done message.
    Anon,
    /// Resident, seen once recently (ARC's T1).
    Mru,
    /// Resident, seen at least twice (ARC's T2).
    Mfu,
    /// Evicted from MRU; only the key and size are kept (ARC's B1).
    MruGhost,
    /// Evicted from MFU; only the key and size are kept (ARC's B2).
    MfuGhost,
}

impl State {
    /// True for the states whose header holds the block's data.
    pub fn is_resident(self) -> bool {
        matches!(self, State::Mru | State::Mfu)
    }
    /// True for the two ghost states.
    pub fn is_ghost(self) -> bool {
        matches!(self, State::MruGhost | State::MfuGhost)
    }
}

/// Header flags (ZFS's `ARC_FLAG_*`), one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// A backing or L2 read is filling this block; waiters are parked on it.
    pub const IO_IN_PROGRESS: Flags = Flags(1 << 0);
    /// Brought in by `prefetch`, not yet read on demand.
    pub const PREFETCH: Flags = Flags(1 << 1);
    /// May be copied to L2 by the feeder.
    pub const L2_ELIGIBLE: Flags = Flags(1 << 2);
    /// The feeder holds it in a device write that has not completed.
    pub const L2_WRITING: Flags = Flags(1 << 3);
    /// Invalidated while a fill was in flight: the fill must not insert it.
    pub const DETACHED: Flags = Flags(1 << 4);

    /// No flags.
    pub const fn empty() -> Self {
        Flags(0)
    }
    /// True when every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 5] = [
            "IO_IN_PROGRESS",
            "PREFETCH",
            "L2_ELIGIBLE",
            "L2_WRITING",
            "DETACHED",
        ];
        let set: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Flags({})", set.join("|"))
    }
}

/// One block's header. `prev`/`next` link it into exactly one ARC list
/// (or into the slab's free list once released).
#[derive(Debug)]
pub struct Header<T> {
    /// The block's key. Empty only for a free slab slot.
    pub key: Box<[u8]>,
    /// The block's data while resident (`Mru`/`Mfu`).
    pub data: Option<T>,
    pub(crate) prev: HeaderIdx,
    pub(crate) next: HeaderIdx,
    /// Logical size in bytes.
    pub size: u32,
    /// ARC state.
    pub state: State,
    /// Flags.
    pub flags: Flags,
    /// L2 copy, if any.
    pub l2: L2Loc,
}

impl<T> Header<T> {
    pub(crate) fn new(key: Box<[u8]>, size: u32) -> Self {
        Header {
            key,
            data: None,
            prev: NIL,
            next: NIL,
            size,
            state: State::Anon,
            flags: Flags::empty(),
            l2: L2Loc::NONE,
        }
    }
}
