//! The one home of what describes bytes on an L2 device and where they
//! are (docs/format.md, byte by byte):
//!
//! * the device's [`Geometry`]: two header copies, a ring of log blocks,
//!   and the data ring;
//! * the [`DeviceHeader`], kept in two alternating copies;
//! * log blocks ([`LogBlock`]) of 24-byte [`LogItem`]s: each feed write,
//!   the blocks it holds, and invalidation records;
//! * a block's location in DRAM ([`L2Loc`]) and its limits, the
//!   [`Encoding`]s, the keyed [`checksum`] and the [`key_tag`] it is keyed
//!   by, and the [`Placement`] of blocks inside a feed write.
//!
//! A leaf module: it imports nothing from the rest of the crate, so the
//! shard (which keeps L2 locations in its headers) may use it without
//! depending on the L2 tier. Everything here that reads bytes from a
//! device returns an error on bad input and never panics; it never
//! allocates more than the block it is given. Little-endian throughout.
#![forbid(unsafe_code)]

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

/// Unit of L2 addresses and allocations.
pub const L2_SECTOR: u64 = 512;
/// Largest device offset an [`L2Loc`] can name.
pub const L2_MAX_OFFSET: u64 = (1 << 40) * L2_SECTOR;
/// Largest stored or logical size an [`L2Loc`] can hold.
pub const L2_MAX_SIZE: u32 = (1 << 22) - 1;

// --- Blocks ---------------------------------------------------------------

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

/// The seed of [`key_tag`]; also names the key hashing scheme in the
/// device header ([`DeviceHeader::hash_id`]).
pub const KEY_TAG_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// A second, independent hash of a key: the seed of its L2 checksum.
/// Bytes stored for another key fail verification even when they are
/// intact.
pub fn key_tag(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_TAG_SEED)
}

/// The 64-bit checksum of a block's stored bytes, keyed by its key's
/// [`key_tag`] and by the sequence number of the feed write that stored
/// it. Another key's bytes, an older version of the same key (written by
/// an earlier write) and bytes left from an earlier lap of the ring all
/// fail it; a corrupt read passes with probability 2^-64.
pub fn checksum(tag: u64, write_seq: u32, stored: &[u8]) -> u64 {
    let seed = tag.rotate_left(23) ^ u64::from(write_seq).wrapping_mul(0xff51_afd7_ed55_8ccd);
    xxh3_64_with_seed(stored, seed)
}

/// Location of a block's copy on an L2 device: 24 bytes in DRAM, so that
/// with its 8-byte key hash an L2-only block costs 32 B (docs/format.md).
///
/// * `a`: byte offset / 512 in bits 0..40 (512 TiB), device index in bits
///   40..48, encoding in bits 48..50, "came from MFU" in bit 50, write
///   sequence bits 20..32 in bits 52..64.
/// * `b`: stored size in bits 0..22, logical size in bits 22..44, write
///   sequence bits 0..20 in bits 44..64.
/// * `c`: the 64-bit [`checksum`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct L2Loc {
    a: u64,
    b: u64,
    c: u64,
}

impl L2Loc {
    /// No L2 copy.
    pub const NONE: L2Loc = L2Loc {
        a: u64::MAX,
        b: u64::MAX,
        c: u64::MAX,
    };

    /// A copy on device `dev` at byte `offset` (a multiple of 512), stored
    /// as `encoding` in `psize` bytes, `lsize` bytes once unpacked, by the
    /// feed write `write_seq` (its low 32 bits).
    ///
    /// # Panics
    /// On an offset or size an `L2Loc` cannot hold: the feeder and the
    /// log parser place blocks within these limits, so that is a bug.
    pub fn at(dev: u8, offset: u64, encoding: Encoding, psize: u32, lsize: u32) -> L2LocBuilder {
        assert!(
            offset % L2_SECTOR == 0 && offset < L2_MAX_OFFSET,
            "L2 offset {offset}"
        );
        assert!(psize <= L2_MAX_SIZE && lsize <= L2_MAX_SIZE, "L2 size");
        L2LocBuilder(L2Loc {
            a: (offset / L2_SECTOR) | (u64::from(dev) << 40) | ((encoding as u64) << 48),
            b: u64::from(psize) | (u64::from(lsize) << 22),
            c: 0,
        })
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
        Encoding::from_u8(((self.a >> 48) & 3) as u8).unwrap_or(Encoding::Raw)
    }
    /// True when the block was on the MFU list when it was written.
    pub fn from_mfu(&self) -> bool {
        (self.a >> 50) & 1 == 1
    }
    /// The low 32 bits of the sequence number of the write that stored it.
    pub fn write_seq(&self) -> u32 {
        (((self.a >> 52) << 20) | (self.b >> 44)) as u32
    }
    /// Checksum of the stored bytes ([`checksum`]).
    pub fn cksum(&self) -> u64 {
        self.c
    }
}

/// Completes an [`L2Loc`]: the write that stored it, its checksum, and
/// whether it came from MFU.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct L2LocBuilder(L2Loc);

impl L2LocBuilder {
    /// Stored by feed write `write_seq` (its low 32 bits are kept), with
    /// checksum `cksum`.
    pub fn written(self, write_seq: u64, cksum: u64, from_mfu: bool) -> L2Loc {
        let mut l = self.0;
        let s = write_seq & 0xffff_ffff;
        l.a |= (u64::from(from_mfu) << 50) | ((s >> 20) << 52);
        l.b |= (s & 0xf_ffff) << 44;
        l.c = cksum;
        l
    }
}

impl std::fmt::Debug for L2Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.is_some() {
            return f.write_str("L2Loc(none)");
        }
        write!(
            f,
            "L2Loc(dev {} @{} {:?} {}/{} B write {} cksum {:016x}{})",
            self.dev(),
            self.offset(),
            self.encoding(),
            self.psize(),
            self.lsize(),
            self.write_seq(),
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

// --- The device -------------------------------------------------------------

/// The format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Incompatible-feature flags this build understands: none yet. A header
/// with another bit set is refused.
pub const INCOMPAT_KNOWN: u32 = 0;
/// Compatible flag: the engine shut down cleanly after this header.
pub const COMPAT_CLEAN: u32 = 1 << 0;
/// Compatible flag: no log is kept (persistence off); nothing to rebuild.
pub const COMPAT_NO_LOG: u32 = 1 << 1;

/// Magic of a device header.
pub const HEADER_MAGIC: [u8; 8] = *b"PLRC-L2H";
/// Magic of a log block.
pub const LOG_MAGIC: [u8; 8] = *b"PLRC-L2L";
/// Bytes of a header copy that carry fields; the rest of its block is zero.
pub const HEADER_BYTES: usize = 256;
/// Bytes before a log block's first item.
pub const LOG_HEADER_BYTES: usize = 64;
/// Bytes of one log item.
pub const ITEM_BYTES: usize = 24;
/// The fewest log blocks a device gets.
pub const MIN_LOG_BLOCKS: u64 = 8;
/// Seeds of the metadata checksums.
const HEADER_SEED: u64 = 0x504c_5243_4844_5231;
const LOG_SEED: u64 = 0x504c_5243_4c4f_4731;

/// Where things are on an L2 device: two header copies, a ring of log
/// blocks, then the data ring. Chosen when the device is formatted and
/// kept in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the device when it was formatted.
    pub capacity: u64,
    /// The device's block size.
    pub block_size: u32,
    /// Bytes of a header copy and of a log block: a multiple of the block
    /// size, 4 KiB where the device is large enough.
    pub meta_block: u32,
    /// Log blocks in the log ring.
    pub log_blocks: u64,
    /// Offset of the data ring.
    pub data_offset: u64,
    /// Bytes of the data ring: a multiple of the block size.
    pub data_size: u64,
}

/// Why a device cannot hold an L2 of this format.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// The block size is not a power of two from 512 B to 1 MiB.
    #[error("block size {0} B must be a power of two from 512 B to 1 MiB")]
    BlockSize(u32),
    /// The log share is not a number in (0, 0.5].
    #[error("log share {0} must be above 0 and at most 0.5")]
    LogShare(f64),
    /// Headers and log leave too little room for data.
    #[error("{capacity} B is too small: headers and log take {meta} B, leaving less than {min} B of data ring")]
    TooSmall {
        /// Device bytes.
        capacity: u64,
        /// Bytes of headers and log.
        meta: u64,
        /// The smallest data ring allowed.
        min: u64,
    },
}

impl Geometry {
    /// Lays out a device of `capacity` bytes and `block_size`-byte blocks,
    /// with `log_share` of it for the log ring. The data ring must hold at
    /// least `min_data` bytes.
    pub fn plan(
        capacity: u64,
        block_size: u32,
        log_share: f64,
        min_data: u64,
    ) -> Result<Geometry, GeometryError> {
        if !block_size.is_power_of_two() || !(512..=1 << 20).contains(&block_size) {
            return Err(GeometryError::BlockSize(block_size));
        }
        if !(log_share > 0.0 && log_share <= 0.5) {
            return Err(GeometryError::LogShare(log_share));
        }
        let bs = u64::from(block_size);
        let usable = capacity.min(L2_MAX_OFFSET) / bs * bs;
        // 4 KiB metadata blocks, or smaller on tiny devices (tests).
        let meta = if usable >= 64 << 20 { 4096 } else { 512 }.max(bs);
        let log_blocks = ((usable as f64 * log_share) as u64 / meta).max(MIN_LOG_BLOCKS);
        let data_offset = (2 + log_blocks) * meta;
        let data_size = usable.saturating_sub(data_offset) / bs * bs;
        if data_size < min_data.max(bs) {
            return Err(GeometryError::TooSmall {
                capacity,
                meta: data_offset,
                min: min_data.max(bs),
            });
        }
        Ok(Geometry {
            capacity,
            block_size,
            meta_block: meta as u32,
            log_blocks,
            data_offset,
            data_size,
        })
    }

    /// Offset of header copy `i` (0 or 1).
    pub fn header_offset(&self, i: u64) -> u64 {
        (i & 1) * u64::from(self.meta_block)
    }

    /// Offset of the log block with sequence number `seq`.
    pub fn log_offset(&self, seq: u64) -> u64 {
        (2 + seq % self.log_blocks) * u64::from(self.meta_block)
    }

    /// Device offset of logical data position `logical` (lap × data size
    /// + offset in the ring).
    pub fn data_at(&self, logical: u64) -> u64 {
        self.data_offset + logical % self.data_size
    }

    /// The share of the device the headers and the log take.
    pub fn meta_share(&self) -> f64 {
        self.data_offset as f64 / self.capacity.max(1) as f64
    }

    /// Items one log block holds.
    pub fn items_per_log_block(&self) -> usize {
        (self.meta_block as usize - LOG_HEADER_BYTES) / ITEM_BYTES
    }
}

/// The device header: what a restart needs before it reads the log. Two
/// copies alternate (generation even: copy 0, odd: copy 1), so a torn
/// write leaves the other intact; the valid copy with the higher
/// generation wins.
///
/// Logical positions count bytes of the data ring over its whole life:
/// `lap × data_size + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHeader {
    /// Compatible flags ([`COMPAT_CLEAN`], [`COMPAT_NO_LOG`]).
    pub compat: u32,
    /// Incompatible flags: a build that does not know one must not use
    /// the device.
    pub incompat: u32,
    /// Chosen at format time; every log block carries it.
    pub guid: u128,
    /// Incremented by every header write.
    pub generation: u64,
    /// The layout.
    pub geometry: Geometry,
    /// The key hashing scheme ([`KEY_TAG_SEED`]).
    pub hash_id: u64,
    /// Logical position of the write hand: the end of the newest feed
    /// write that the log vouches for.
    pub hand: u64,
    /// Logical evict position: no write reaches beyond it, so data at a
    /// logical position below `evict - data_size` may be overwritten.
    pub evict: u64,
    /// Sequence number of the newest log block this header vouches for
    /// (0: none yet; log sequence numbers start at 1).
    pub newest_log: u64,
    /// The next feed write's sequence number.
    pub next_write: u64,
}

/// Why header bytes are not a usable header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// All zeros: a device never written.
    #[error("all zeros (a new device)")]
    Zeroed,
    /// Not a polarc header: written by another program.
    #[error("not a polarc L2 header (written by another program?)")]
    Foreign,
    /// A polarc header of a format version this build does not read.
    #[error("format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u32),
    /// A polarc header with incompatible features this build lacks.
    #[error("incompatible features {0:#x} that this build does not know")]
    Incompatible(u32),
    /// A polarc header that is damaged (torn or corrupt).
    #[error("corrupt header: {0}")]
    Corrupt(&'static str),
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The checksum of a metadata block: xxh3 of all of it with the 8-byte
/// checksum field at `at` read as zeros.
fn meta_checksum(b: &[u8], at: usize, seed: u64) -> u64 {
    let mut h = Xxh3::with_seed(seed);
    h.update(&b[..at]);
    h.update(&[0; 8]);
    h.update(&b[at + 8..]);
    h.digest()
}

/// Header field offsets (docs/format.md).
mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const INCOMPAT: usize = 12;
    pub const COMPAT: usize = 16;
    pub const USED: usize = 20;
    pub const GUID: usize = 24;
    pub const GENERATION: usize = 40;
    pub const CAPACITY: usize = 48;
    pub const BLOCK_SIZE: usize = 56;
    pub const META_BLOCK: usize = 60;
    pub const LOG_BLOCKS: usize = 64;
    pub const DATA_OFFSET: usize = 72;
    pub const DATA_SIZE: usize = 80;
    pub const HASH_ID: usize = 88;
    pub const HAND: usize = 96;
    pub const LAP: usize = 104;
    pub const EVICT: usize = 112;
    pub const NEWEST_LOG: usize = 120;
    pub const NEWEST_SLOT: usize = 128;
    pub const NEXT_WRITE: usize = 136;
    pub const RESERVED: usize = 144;
    pub const CHECKSUM: usize = 248;
}

impl DeviceHeader {
    /// Writes the header into `buf` (at least [`HEADER_BYTES`]; the rest
    /// of `buf` is zeroed).
    pub fn encode(&self, buf: &mut [u8]) {
        buf.fill(0);
        let g = &self.geometry;
        buf[hdr::MAGIC..hdr::MAGIC + 8].copy_from_slice(&HEADER_MAGIC);
        put_u32(buf, hdr::VERSION, FORMAT_VERSION);
        put_u32(buf, hdr::INCOMPAT, self.incompat);
        put_u32(buf, hdr::COMPAT, self.compat);
        put_u32(buf, hdr::USED, HEADER_BYTES as u32);
        buf[hdr::GUID..hdr::GUID + 16].copy_from_slice(&self.guid.to_le_bytes());
        put_u64(buf, hdr::GENERATION, self.generation);
        put_u64(buf, hdr::CAPACITY, g.capacity);
        put_u32(buf, hdr::BLOCK_SIZE, g.block_size);
        put_u32(buf, hdr::META_BLOCK, g.meta_block);
        put_u64(buf, hdr::LOG_BLOCKS, g.log_blocks);
        put_u64(buf, hdr::DATA_OFFSET, g.data_offset);
        put_u64(buf, hdr::DATA_SIZE, g.data_size);
        put_u64(buf, hdr::HASH_ID, self.hash_id);
        put_u64(buf, hdr::HAND, self.hand);
        put_u64(buf, hdr::LAP, self.hand / g.data_size.max(1));
        put_u64(buf, hdr::EVICT, self.evict);
        put_u64(buf, hdr::NEWEST_LOG, self.newest_log);
        put_u64(buf, hdr::NEWEST_SLOT, self.newest_log % g.log_blocks.max(1));
        put_u64(buf, hdr::NEXT_WRITE, self.next_write);
        let c = meta_checksum(&buf[..HEADER_BYTES], hdr::CHECKSUM, HEADER_SEED);
        put_u64(buf, hdr::CHECKSUM, c);
    }

    /// Parses a header copy. Never panics, whatever `buf` holds.
    pub fn decode(buf: &[u8]) -> Result<DeviceHeader, HeaderError> {
        let Some(b) = buf.get(..HEADER_BYTES) else {
            return Err(HeaderError::Corrupt("shorter than a header"));
        };
        if b[..8] != HEADER_MAGIC {
            return Err(if buf.iter().all(|&x| x == 0) {
                HeaderError::Zeroed
            } else {
                HeaderError::Foreign
            });
        }
        if meta_checksum(b, hdr::CHECKSUM, HEADER_SEED) != get_u64(b, hdr::CHECKSUM) {
            return Err(HeaderError::Corrupt("checksum mismatch"));
        }
        let version = get_u32(b, hdr::VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnknownVersion(version));
        }
        let incompat = get_u32(b, hdr::INCOMPAT);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(HeaderError::Incompatible(incompat & !INCOMPAT_KNOWN));
        }
        if get_u32(b, hdr::USED) as usize != HEADER_BYTES {
            return Err(HeaderError::Corrupt("header length"));
        }
        if b[hdr::RESERVED..hdr::CHECKSUM].iter().any(|&x| x != 0) {
            return Err(HeaderError::Corrupt("reserved bytes"));
        }
        let geometry = Geometry {
            capacity: get_u64(b, hdr::CAPACITY),
            block_size: get_u32(b, hdr::BLOCK_SIZE),
            meta_block: get_u32(b, hdr::META_BLOCK),
            log_blocks: get_u64(b, hdr::LOG_BLOCKS),
            data_offset: get_u64(b, hdr::DATA_OFFSET),
            data_size: get_u64(b, hdr::DATA_SIZE),
        };
        let g = &geometry;
        let bs = u64::from(g.block_size);
        let meta = u64::from(g.meta_block);
        let sane = g.block_size.is_power_of_two()
            && g.block_size >= 512
            && g.meta_block.is_power_of_two()
            && meta >= bs
            && meta as usize >= LOG_HEADER_BYTES + ITEM_BYTES
            && g.log_blocks >= MIN_LOG_BLOCKS
            && g.log_blocks
                .checked_add(2)
                .and_then(|n| n.checked_mul(meta))
                .is_some_and(|end| end == g.data_offset)
            && g.data_size > 0
            && g.data_size % bs == 0
            && g.data_offset
                .checked_add(g.data_size)
                .is_some_and(|end| end <= g.capacity.min(L2_MAX_OFFSET));
        if !sane {
            return Err(HeaderError::Corrupt("geometry"));
        }
        let h = DeviceHeader {
            compat: get_u32(b, hdr::COMPAT),
            incompat,
            guid: u128::from_le_bytes(b[hdr::GUID..hdr::GUID + 16].try_into().expect("16 bytes")),
            generation: get_u64(b, hdr::GENERATION),
            geometry,
            hash_id: get_u64(b, hdr::HASH_ID),
            hand: get_u64(b, hdr::HAND),
            evict: get_u64(b, hdr::EVICT),
            newest_log: get_u64(b, hdr::NEWEST_LOG),
            next_write: get_u64(b, hdr::NEXT_WRITE),
        };
        if h.evict < h.hand || get_u64(b, hdr::LAP) != h.hand / g.data_size {
            return Err(HeaderError::Corrupt("hand and evict position"));
        }
        Ok(h)
    }

    /// Of two header copies as read, the one to use: the valid one with
    /// the higher generation. Without a valid copy, the error of copy 0,
    /// unless copy 1 says more (it is ours, or it is foreign data where
    /// copy 0 is zeros).
    pub fn newest(
        a: Result<DeviceHeader, HeaderError>,
        b: Result<DeviceHeader, HeaderError>,
    ) -> Result<DeviceHeader, HeaderError> {
        match (a, b) {
            (Ok(x), Ok(y)) => Ok(if y.generation > x.generation { y } else { x }),
            (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
            (Err(HeaderError::Zeroed), Err(e)) | (Err(e), Err(HeaderError::Zeroed)) => Err(e),
            (Err(HeaderError::Foreign), Err(e)) => Err(e),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

/// Rewrites a header copy's version field, checksummed as a build of that
/// version would (tests of what an older build does with a newer device).
#[cfg(test)]
pub(crate) fn hdr_version_for_tests(copy: &mut [u8], version: u32) {
    put_u32(copy, hdr::VERSION, version);
    let c = meta_checksum(&copy[..HEADER_BYTES], hdr::CHECKSUM, HEADER_SEED);
    put_u64(copy, hdr::CHECKSUM, c);
}

// --- Log blocks ---------------------------------------------------------------

/// One 24-byte record of a log block (three little-endian `u64`s; the
/// kind is in the top 3 bits of the third).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogItem {
    /// A feed write: the entries after it, up to the next `Write`, are
    /// blocks it stored.
    Write {
        /// Logical position of its first byte.
        logical: u64,
        /// Its sequence number (keys its blocks' checksums).
        seq: u64,
        /// Its length in 512-byte sectors.
        sectors: u32,
    },
    /// A block stored by the preceding write.
    Entry {
        /// The key's full 64-bit hash.
        hash: u64,
        /// Its [`checksum`].
        cksum: u64,
        /// Where it starts, in sectors from the write's start.
        rel_sectors: u16,
        /// Stored bytes.
        psize: u32,
        /// Logical bytes.
        lsize: u32,
        /// How it is stored.
        encoding: Encoding,
        /// It came from MFU.
        mfu: bool,
    },
    /// The key with this hash was invalidated or replaced: copies logged
    /// before this record are dead.
    Invalidate {
        /// The key's full 64-bit hash.
        hash: u64,
    },
}

const KIND_WRITE: u64 = 1;
const KIND_ENTRY: u64 = 2;
const KIND_INVALIDATE: u64 = 3;
/// Largest `rel_sectors` an entry holds (14 bits).
pub const MAX_REL_SECTORS: u32 = (1 << 14) - 1;

/// Why a log block cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// No log magic: never written, or written by something else.
    #[error("no log block here")]
    NoMagic,
    /// Its checksum does not match: torn or corrupt.
    #[error("log block checksum mismatch")]
    Checksum,
    /// Another format version.
    #[error("log block format version {0}")]
    Version(u16),
    /// Written for another device (another GUID): left from an earlier
    /// format.
    #[error("log block of another device")]
    OtherDevice,
    /// Its contents do not parse.
    #[error("corrupt log block: {0}")]
    Corrupt(&'static str),
}

impl LogItem {
    /// The item's 24 bytes.
    pub fn encode(&self) -> [u8; ITEM_BYTES] {
        let (w0, w1, w2) = match *self {
            LogItem::Write {
                logical,
                seq,
                sectors,
            } => (logical, seq, (KIND_WRITE << 61) | u64::from(sectors)),
            LogItem::Entry {
                hash,
                cksum,
                rel_sectors,
                psize,
                lsize,
                encoding,
                mfu,
            } => (
                hash,
                cksum,
                (KIND_ENTRY << 61)
                    | (u64::from(mfu) << 60)
                    | ((encoding as u64) << 58)
                    | ((u64::from(lsize) & 0x3f_ffff) << 36)
                    | ((u64::from(psize) & 0x3f_ffff) << 14)
                    | (u64::from(rel_sectors) & 0x3fff),
            ),
            LogItem::Invalidate { hash } => (hash, 0, KIND_INVALIDATE << 61),
        };
        let mut b = [0u8; ITEM_BYTES];
        b[..8].copy_from_slice(&w0.to_le_bytes());
        b[8..16].copy_from_slice(&w1.to_le_bytes());
        b[16..].copy_from_slice(&w2.to_le_bytes());
        b
    }

    /// Parses 24 bytes; never panics.
    pub fn decode(b: &[u8; ITEM_BYTES]) -> Result<LogItem, LogError> {
        let (w0, w1, w2) = (get_u64(b, 0), get_u64(b, 8), get_u64(b, 16));
        match w2 >> 61 {
            KIND_WRITE => {
                let sectors = u32::try_from(w2 & ((1 << 61) - 1))
                    .map_err(|_| LogError::Corrupt("write length"))?;
                Ok(LogItem::Write {
                    logical: w0,
                    seq: w1,
                    sectors,
                })
            }
            KIND_ENTRY => {
                let encoding = Encoding::from_u8(((w2 >> 58) & 3) as u8)
                    .ok_or(LogError::Corrupt("encoding"))?;
                let psize = ((w2 >> 14) & 0x3f_ffff) as u32;
                let lsize = ((w2 >> 36) & 0x3f_ffff) as u32;
                if psize > lsize || lsize == 0 || (encoding == Encoding::Empty) != (psize == 0) {
                    return Err(LogError::Corrupt("entry sizes"));
                }
                Ok(LogItem::Entry {
                    hash: w0,
                    cksum: w1,
                    rel_sectors: (w2 & 0x3fff) as u16,
                    psize,
                    lsize,
                    encoding,
                    mfu: (w2 >> 60) & 1 == 1,
                })
            }
            KIND_INVALIDATE if w1 == 0 && w2 == KIND_INVALIDATE << 61 => {
                Ok(LogItem::Invalidate { hash: w0 })
            }
            _ => Err(LogError::Corrupt("item kind")),
        }
    }
}

/// Log block field offsets (docs/format.md).
mod lb {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 10;
    pub const ITEMS: usize = 12;
    pub const GUID: usize = 16;
    pub const SEQ: usize = 32;
    pub const EVICT: usize = 40;
    pub const CHECKSUM: usize = 48;
    pub const RESERVED: usize = 56;
}

/// The header of a parsed log block; its items follow in the same buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBlock {
    /// Its sequence number.
    pub seq: u64,
    /// The evict position when it was written.
    pub evict: u64,
    /// How many items it holds.
    pub items: usize,
}

impl LogBlock {
    /// Writes a log block header over `buf` (a whole log block whose
    /// items are already at `LOG_HEADER_BYTES..`) and seals it with its
    /// checksum. The bytes after the last item must be zero.
    pub fn seal(&self, guid: u128, buf: &mut [u8]) {
        buf[..LOG_HEADER_BYTES].fill(0);
        buf[lb::MAGIC..lb::MAGIC + 8].copy_from_slice(&LOG_MAGIC);
        buf[lb::VERSION..lb::VERSION + 2].copy_from_slice(&(FORMAT_VERSION as u16).to_le_bytes());
        buf[lb::FLAGS..lb::FLAGS + 2].copy_from_slice(&0u16.to_le_bytes());
        put_u32(buf, lb::ITEMS, self.items as u32);
        buf[lb::GUID..lb::GUID + 16].copy_from_slice(&guid.to_le_bytes());
        put_u64(buf, lb::SEQ, self.seq);
        put_u64(buf, lb::EVICT, self.evict);
        let c = meta_checksum(buf, lb::CHECKSUM, LOG_SEED);
        put_u64(buf, lb::CHECKSUM, c);
    }

    /// Parses the log block in `buf` (a whole log block) of device
    /// `guid`. Its items are then read with [`LogBlock::items`]. Never
    /// panics, whatever `buf` holds.
    pub fn open(buf: &[u8], guid: u128) -> Result<LogBlock, LogError> {
        if buf.len() < LOG_HEADER_BYTES || buf[lb::MAGIC..lb::MAGIC + 8] != LOG_MAGIC {
            return Err(LogError::NoMagic);
        }
        if meta_checksum(buf, lb::CHECKSUM, LOG_SEED) != get_u64(buf, lb::CHECKSUM) {
            return Err(LogError::Checksum);
        }
        let version = u16::from_le_bytes([buf[lb::VERSION], buf[lb::VERSION + 1]]);
        if u32::from(version) != FORMAT_VERSION {
            return Err(LogError::Version(version));
        }
        if u128::from_le_bytes(buf[lb::GUID..lb::GUID + 16].try_into().expect("16 bytes")) != guid {
            return Err(LogError::OtherDevice);
        }
        if buf[lb::FLAGS..lb::FLAGS + 2] != [0, 0] || get_u64(buf, lb::RESERVED) != 0 {
            return Err(LogError::Corrupt("flags or reserved bytes"));
        }
        let items = get_u32(buf, lb::ITEMS) as usize;
        if items > (buf.len() - LOG_HEADER_BYTES) / ITEM_BYTES {
            return Err(LogError::Corrupt("item count"));
        }
        if buf[LOG_HEADER_BYTES + items * ITEM_BYTES..]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(LogError::Corrupt("bytes after the last item"));
        }
        Ok(LogBlock {
            seq: get_u64(buf, lb::SEQ),
            evict: get_u64(buf, lb::EVICT),
            items,
        })
    }

    /// The items of this block, which `buf` holds.
    pub fn items<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = Result<LogItem, LogError>> + 'a {
        buf[LOG_HEADER_BYTES..]
            .chunks_exact(ITEM_BYTES)
            .take(self.items)
            .map(|c| LogItem::decode(c.try_into().expect("24 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_location_round_trips() {
        let l = L2Loc::at(7, 123 * 512, Encoding::Lz4, 2100, 4096).written(
            0x1_2345_6789,
            0xdead_beef_cafe_f00d,
            true,
        );
        assert_eq!(
            (
                l.dev(),
                l.offset(),
                l.encoding(),
                l.psize(),
                l.lsize(),
                l.write_seq(),
                l.cksum(),
                l.from_mfu()
            ),
            (
                7,
                123 * 512,
                Encoding::Lz4,
                2100,
                4096,
                0x2345_6789,
                0xdead_beef_cafe_f00d,
                true
            )
        );
        assert_eq!(l.asize(), 2560);
        assert!(l.is_some() && !L2Loc::NONE.is_some());
        assert_eq!(std::mem::size_of::<L2Loc>(), 24);
    }

    #[test]
    fn the_checksum_is_keyed_by_the_key_and_the_write() {
        let bytes = b"the same stored bytes";
        let c = checksum(key_tag(b"a"), 5, bytes);
        assert_ne!(c, checksum(key_tag(b"b"), 5, bytes), "another key");
        assert_ne!(c, checksum(key_tag(b"a"), 6, bytes), "another write");
        assert_eq!(c, checksum(key_tag(b"a"), 5, bytes));
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

    fn geometry() -> Geometry {
        Geometry::plan(2 << 30, 4096, 0.01, 1 << 20).unwrap()
    }

    fn header() -> DeviceHeader {
        DeviceHeader {
            compat: COMPAT_CLEAN,
            incompat: 0,
            guid: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            generation: 9,
            geometry: geometry(),
            hash_id: KEY_TAG_SEED,
            hand: 5 << 30,
            evict: (5 << 30) + (8 << 20),
            newest_log: 77,
            next_write: 1234,
        }
    }

    #[test]
    fn geometry_puts_headers_log_and_data_in_order() {
        let g = geometry();
        assert_eq!(g.meta_block, 4096);
        assert_eq!(g.log_blocks, (2u64 << 30) / 100 / 4096);
        assert_eq!(g.data_offset, (2 + g.log_blocks) * 4096);
        assert!(g.meta_share() < 0.0101, "{}", g.meta_share());
        assert_eq!(g.log_offset(0), 8192);
        assert_eq!(g.log_offset(g.log_blocks), 8192, "the log is a ring");
        assert_eq!(g.items_per_log_block(), 168);
        let tiny = Geometry::plan(64 << 10, 512, 0.01, 4096).unwrap();
        assert_eq!((tiny.meta_block, tiny.log_blocks), (512, MIN_LOG_BLOCKS));
        assert!(matches!(
            Geometry::plan(8 << 10, 512, 0.01, 4096),
            Err(GeometryError::TooSmall { .. })
        ));
        assert!(Geometry::plan(1 << 30, 3000, 0.01, 0).is_err());
        assert!(Geometry::plan(1 << 30, 4096, 0.0, 0).is_err());
    }

    #[test]
    fn a_header_round_trips_and_damage_is_named() {
        let h = header();
        let mut buf = vec![0u8; 4096];
        h.encode(&mut buf);
        assert_eq!(DeviceHeader::decode(&buf), Ok(h));
        assert_eq!(DeviceHeader::decode(&[0; 4096]), Err(HeaderError::Zeroed));
        assert_eq!(
            DeviceHeader::decode(&[0xa5; 4096]),
            Err(HeaderError::Foreign)
        );
        let mut torn = buf.clone();
        torn[100] ^= 1;
        assert_eq!(
            DeviceHeader::decode(&torn),
            Err(HeaderError::Corrupt("checksum mismatch"))
        );
        // A future version, checksummed as that version would.
        let mut v2 = buf.clone();
        put_u32(&mut v2, hdr::VERSION, 2);
        let c = meta_checksum(&v2[..HEADER_BYTES], hdr::CHECKSUM, HEADER_SEED);
        put_u64(&mut v2, hdr::CHECKSUM, c);
        assert_eq!(
            DeviceHeader::decode(&v2),
            Err(HeaderError::UnknownVersion(2))
        );
        let mut inc = buf.clone();
        put_u32(&mut inc, hdr::INCOMPAT, 4);
        let c = meta_checksum(&inc[..HEADER_BYTES], hdr::CHECKSUM, HEADER_SEED);
        put_u64(&mut inc, hdr::CHECKSUM, c);
        assert_eq!(
            DeviceHeader::decode(&inc),
            Err(HeaderError::Incompatible(4))
        );
    }

    #[test]
    fn the_newer_valid_copy_wins() {
        let a = header();
        let b = DeviceHeader {
            generation: 10,
            ..a
        };
        assert_eq!(DeviceHeader::newest(Ok(a), Ok(b)), Ok(b));
        assert_eq!(
            DeviceHeader::newest(Ok(a), Err(HeaderError::Corrupt("x"))),
            Ok(a)
        );
        assert_eq!(
            DeviceHeader::newest(Err(HeaderError::Zeroed), Err(HeaderError::Zeroed)),
            Err(HeaderError::Zeroed)
        );
        assert_eq!(
            DeviceHeader::newest(Err(HeaderError::Zeroed), Err(HeaderError::Foreign)),
            Err(HeaderError::Foreign)
        );
        assert_eq!(
            DeviceHeader::newest(
                Err(HeaderError::Foreign),
                Err(HeaderError::UnknownVersion(3))
            ),
            Err(HeaderError::UnknownVersion(3))
        );
    }

    fn items() -> Vec<LogItem> {
        vec![
            LogItem::Write {
                logical: 3 << 30,
                seq: 42,
                sectors: 2048,
            },
            LogItem::Entry {
                hash: 0xfeed,
                cksum: 0xbeef,
                rel_sectors: 0,
                psize: 2100,
                lsize: 4096,
                encoding: Encoding::Lz4,
                mfu: false,
            },
            LogItem::Entry {
                hash: 0xf00d,
                cksum: 7,
                rel_sectors: 5,
                psize: 0,
                lsize: 4096,
                encoding: Encoding::Empty,
                mfu: true,
            },
            LogItem::Invalidate { hash: 0xfeed },
        ]
    }

    fn block(items: &[LogItem], guid: u128) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        for (i, it) in items.iter().enumerate() {
            let at = LOG_HEADER_BYTES + i * ITEM_BYTES;
            buf[at..at + ITEM_BYTES].copy_from_slice(&it.encode());
        }
        LogBlock {
            seq: 9,
            evict: 1 << 31,
            items: items.len(),
        }
        .seal(guid, &mut buf);
        buf
    }

    #[test]
    fn a_log_block_round_trips_and_is_bound_to_its_device() {
        let buf = block(&items(), 5);
        let lb = LogBlock::open(&buf, 5).unwrap();
        assert_eq!((lb.seq, lb.evict, lb.items), (9, 1 << 31, 4));
        let got: Vec<LogItem> = lb.items(&buf).map(Result::unwrap).collect();
        assert_eq!(got, items());
        assert_eq!(LogBlock::open(&buf, 6), Err(LogError::OtherDevice));
        let mut torn = buf.clone();
        torn[4000] = 1;
        assert_eq!(LogBlock::open(&torn, 5), Err(LogError::Checksum));
        assert_eq!(LogBlock::open(&[0; 4096], 5), Err(LogError::NoMagic));
    }

    proptest! {
        /// Arbitrary bytes never panic the parsers; any header that parses
        /// encodes back to the same bytes.
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000), guid in any::<u128>()) {
            if let Ok(h) = DeviceHeader::decode(&bytes) {
                let mut again = vec![0u8; bytes.len()];
                h.encode(&mut again);
                prop_assert_eq!(&again[..HEADER_BYTES], &bytes[..HEADER_BYTES]);
            }
            if let Ok(lb) = LogBlock::open(&bytes, guid) {
                for item in lb.items(&bytes) {
                    let _ = item;
                }
            }
            if bytes.len() >= ITEM_BYTES {
                let b: [u8; ITEM_BYTES] = bytes[..ITEM_BYTES].try_into().unwrap();
                if let Ok(it) = LogItem::decode(&b) {
                    prop_assert_eq!(LogItem::decode(&it.encode()), Ok(it));
                }
            }
        }

        /// Every valid item round-trips.
        #[test]
        fn items_round_trip(hash in any::<u64>(), ck in any::<u64>(), rel in 0u16..=0x3fff, lsize in 1u32..(1 << 22), frac in 0.0f64..1.0, enc in 1u8..3, mfu in any::<bool>(), logical in any::<u64>(), seq in any::<u64>(), sectors in any::<u32>()) {
            let psize = ((f64::from(lsize) * frac) as u32).max(1);
            let e = LogItem::Entry { hash, cksum: ck, rel_sectors: rel, psize, lsize, encoding: Encoding::from_u8(enc).unwrap(), mfu };
            prop_assert_eq!(LogItem::decode(&e.encode()), Ok(e));
            let w = LogItem::Write { logical, seq, sectors };
            prop_assert_eq!(LogItem::decode(&w.encode()), Ok(w));
            let i = LogItem::Invalidate { hash };
            prop_assert_eq!(LogItem::decode(&i.encode()), Ok(i));
        }
    }
}
