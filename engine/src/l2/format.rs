//! The one home of what describes bytes on an L2 device and where they
//! are (docs/format.md, byte by byte): a block's location ([`L2Loc`]) and
//! its limits, the [`Encoding`]s, the keyed [`checksum`] and the
//! [`key_tag`] it is keyed by, and the [`Placement`] of blocks inside a
//! feed write.
//!
//! A leaf module: it imports nothing from the rest of the crate, so the
//! shard (which keeps L2 locations in its headers) may use it without
//! depending on the L2 tier. Whatever here reads bytes that came from a
//! device returns an error on bad input; it never panics.
#![forbid(unsafe_code)]

/// Unit of L2 addresses and allocations.
pub const L2_SECTOR: u64 = 512;
/// Largest device offset an [`L2Loc`] can name.
pub const L2_MAX_OFFSET: u64 = (1 << 40) * L2_SECTOR;
/// Largest stored or logical size an [`L2Loc`] can hold.
pub const L2_MAX_SIZE: u32 = (1 << 22) - 1;

/// How a block is stored on an L2 device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum Encoding {
    /// All zeros; nothing is stored.
    Empty = 0,
    /// Stored as is.
    Raw = 1,
    /// LZ4 block format, without a size prefix.
    Lz4 = 2,
}

impl Encoding {
    /// Parses the on-device value; unknown values are corrupt data.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::Empty),
            1 => Some(Encoding::Raw),
            2 => Some(Encoding::Lz4),
            _ => None,
        }
    }
}

/// A second, independent hash of a key: the seed of its L2 checksum. An
/// L2 copy found through another key with the same key hash fails
/// verification instead of being served.
pub fn key_tag(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x9e37_79b9_7f4a_7c15)
}

/// The checksum of a block's stored bytes, keyed by its key's
/// [`key_tag`]: xxh3-64 folded to 32 bits.
pub fn checksum(tag: u64, stored: &[u8]) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(stored, tag);
    (h ^ (h >> 32)) as u32
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

impl L2Loc {
    /// No L2 copy.
    pub const NONE: L2Loc = L2Loc {
        a: u64::MAX,
        b: u64::MAX,
    };

    /// A copy on device `dev` at byte `offset` (a multiple of 512), stored
    /// as `encoding` in `psize` bytes, `lsize` bytes once unpacked.
    ///
    /// # Panics
    /// On an offset or size an `L2Loc` cannot hold: the feeder places
    /// blocks within these limits, so that is a bug, never bad input.
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
    /// How the block is stored. A location is only ever built from an
    /// [`Encoding`], so its two bits always hold one.
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

/// Where blocks go inside a feed write, and how much room a batch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The device's block size: writes and read spans are multiples of it.
    pub block_size: u64,
    /// The largest read span (the largest pool buffer).
    pub max_span: u64,
    /// Bytes per feed write.
    pub write_size: u64,
}

impl Placement {
    /// Where in a write buffer a block of `size` bytes goes when the
    /// buffer is filled to `pos`: the next 512-byte boundary, or the next
    /// device block when its aligned read span would otherwise exceed the
    /// largest pool buffer.
    pub fn place(&self, pos: u64, size: u64) -> u64 {
        let start = pos.next_multiple_of(L2_SECTOR);
        if (start % self.block_size + size).next_multiple_of(self.block_size) > self.max_span {
            pos.next_multiple_of(self.block_size)
        } else {
            start
        }
    }

    /// The device bytes blocks of `sizes` may take when packed into feed
    /// writes with every block raw (compression only shrinks them), plus
    /// one block of slack.
    pub fn room_needed(&self, sizes: impl Iterator<Item = u64>) -> u64 {
        let (bs, ws) = (self.block_size, self.write_size);
        let mut total = 0u64;
        let mut pos = 0u64;
        let mut room = 0u64;
        for size in sizes {
            loop {
                if room == 0 {
                    room = ws.max(size.next_multiple_of(bs));
                    pos = 0;
                }
                let start = self.place(pos, size);
                if start + size > room {
                    total += pos.next_multiple_of(bs);
                    room = 0;
                    continue;
                }
                pos = start + size;
                break;
            }
        }
        total + pos.next_multiple_of(bs) + bs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_round_trips() {
        let l = L2Loc::new(7, 123 * 512, Encoding::Lz4, 2100, 4096, 0xdead_beef, true);
        assert_eq!(
            (
                l.dev(),
                l.offset(),
                l.encoding(),
                l.psize(),
                l.lsize(),
                l.cksum(),
                l.from_mfu()
            ),
            (7, 123 * 512, Encoding::Lz4, 2100, 4096, 0xdead_beef, true)
        );
        assert_eq!(l.asize(), 2560);
        assert!(l.is_some() && !L2Loc::NONE.is_some());
    }

    #[test]
    fn the_checksum_is_keyed_by_the_key() {
        let bytes = b"the same stored bytes";
        assert_ne!(
            checksum(key_tag(b"a"), bytes),
            checksum(key_tag(b"b"), bytes)
        );
        assert_eq!(Encoding::from_u8(3), None);
    }

    #[test]
    fn blocks_never_straddle_a_span_larger_than_the_largest_buffer() {
        let p = Placement {
            block_size: 4096,
            max_span: 8192,
            write_size: 1 << 20,
        };
        assert_eq!(p.place(100, 1000), 512);
        // 3584 + 6000 would need a 12 KiB span: start on the next block.
        assert_eq!(p.place(3000, 6000), 4096);
        // Two raw 4 KiB blocks in one write, plus one block of slack.
        assert_eq!(p.room_needed([4096, 4096].into_iter()), 3 * 4096);
    }
}
