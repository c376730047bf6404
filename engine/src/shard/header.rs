//! Block headers: the per-block record a shard keeps in its hash table.

use crate::compress::Encoding;

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

/// Location of a block's copy on an L2 device: 16 bytes, packed so that
/// an L2-only block costs little DRAM (docs/format.md).
///
/// * `a`: byte offset / 512 in bits 0..40 (512 TiB), device index in bits
///   40..48, checksum bits 0..16 in bits 48..64.
/// * `b`: stored size in bits 0..22, logical size in bits 22..44, encoding
///   in bits 44..46, "came from MFU" in bit 46, checksum bits 16..32 in
///   bits 47..63.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct L2Loc {
    a: u64,
    b: u64,
}

/// Unit of L2 addresses and allocations.
pub const L2_SECTOR: u64 = 512;
/// Largest device offset an [`L2Loc`] can name.
pub const L2_MAX_OFFSET: u64 = (1 << 40) * L2_SECTOR;
/// Largest stored or logical size an [`L2Loc`] can hold.
pub const L2_MAX_SIZE: u32 = (1 << 22) - 1;

impl L2Loc {
    /// No L2 copy.
    pub const NONE: L2Loc = L2Loc {
        a: u64::MAX,
        b: u64::MAX,
    };

    /// A copy on device `dev` at byte `offset` (a multiple of 512), stored
    /// as `encoding` in `psize` bytes, `lsize` bytes once unpacked.
    pub fn new(
        dev: u8,
        offset: u64,
        encoding: Encoding,
        psize: u32,
        lsize: u32,
        cksum: u32,
        from_mfu: bool,
    ) -> L2Loc {
        assert!(
            offset % L2_SECTOR == 0 && offset < L2_MAX_OFFSET,
            "L2 offset {offset}"
        );
        assert!(psize <= L2_MAX_SIZE && lsize <= L2_MAX_SIZE, "L2 size");
        let c = u64::from(cksum);
        L2Loc {
            a: (offset / L2_SECTOR) | (u64::from(dev) << 40) | ((c & 0xffff) << 48),
            b: u64::from(psize)
                | (u64::from(lsize) << 22)
                | ((encoding as u64) << 44)
                | (u64::from(from_mfu) << 46)
                | ((c >> 16) << 47),
        }
    }
    /// True when this names a copy on a device.
    pub fn is_some(&self) -> bool {
        self.a != u64::MAX
    }
    /// Device index.
    pub fn dev(&self) -> u8 {
        (self.a >> 40) as u8
    }
    /// Byte offset on the device.
    pub fn offset(&self) -> u64 {
        (self.a & ((1 << 40) - 1)) * L2_SECTOR
    }
    /// Bytes stored on the device (0 for an all-zero block).
    pub fn psize(&self) -> u32 {
        (self.b & ((1 << 22) - 1)) as u32
    }
    /// Bytes taken on the device: `psize` rounded up to 512.
    pub fn asize(&self) -> u64 {
        u64::from(self.psize()).next_multiple_of(L2_SECTOR)
    }
    /// The block's logical size.
    pub fn lsize(&self) -> u32 {
        ((self.b >> 22) & ((1 << 22) - 1)) as u32
    }
    /// How the block is stored.
    pub fn encoding(&self) -> Encoding {
        Encoding::from_u8(((self.b >> 44) & 3) as u8).unwrap_or(Encoding::Raw)
    }
    /// True when the block was on the MFU list when it was written.
    pub fn from_mfu(&self) -> bool {
        (self.b >> 46) & 1 == 1
    }
    /// Checksum of the stored bytes, keyed by the block's key.
    pub fn cksum(&self) -> u32 {
        ((self.a >> 48) | (((self.b >> 47) & 0xffff) << 16)) as u32
    }
}

impl std::fmt::Debug for L2Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.is_some() {
            return f.write_str("L2Loc(none)");
        }
        write!(
            f,
            "L2Loc(dev {} @{} {:?} {}/{} B cksum {:08x}{})",
            self.dev(),
            self.offset(),
            self.encoding(),
            self.psize(),
            self.lsize(),
            self.cksum(),
            if self.from_mfu() { " mfu" } else { "" }
        )
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
