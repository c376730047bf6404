//! Packing blocks for the L2 tier: LZ4 (through the `lz4` crate's safe block API over
//! lz4-sys): compress a block into a device buffer, detect all-zero and
//! incompressible blocks, and decompress with bounds-checked LZ4.
//!
//! Rules, from ZFS's L2ARC:
//! * an all-zero block is stored as [`Encoding::Empty`] and takes no space;
//! * a block is stored LZ4-compressed only if that saves at least one
//!   device sector once both forms are rounded up to whole sectors;
//!   otherwise it is stored raw.
#![forbid(unsafe_code)]

pub use super::format::Encoding;

/// A block packed for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    /// How it is stored.
    pub encoding: Encoding,
    /// Bytes of `dst` used (0 for `Empty`).
    pub len: usize,
}

/// Compression errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The destination cannot hold the block even raw.
    #[error("destination of {have} B is too small for a {need} B block")]
    NoRoom {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Stored bytes do not decode to a block of the expected size.
    #[error("corrupt {0:?} block: {1}")]
    Corrupt(Encoding, String),
}

/// True when every byte is zero.
pub fn is_zero(b: &[u8]) -> bool {
    // OR-folding 64-byte chunks vectorises; `iter().all` exits early and does not.
    let mut chunks = b.chunks_exact(64);
    let mut acc = 0u8;
    for c in &mut chunks {
        acc |= c.iter().fold(0, |a, &x| a | x);
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

fn round_up(n: usize, sector: usize) -> usize {
    n.div_ceil(sector) * sector
}

/// Packs `src` into `dst` (at least `src.len()` rounded up to `sector`).
/// With `compress` off, blocks are stored raw (zeros are still `Empty`).
pub fn pack(
    src: &[u8],
    dst: &mut [u8],
    sector: usize,
    compress: bool,
) -> Result<Packed, CompressError> {
    if is_zero(src) {
        return Ok(Packed {
            encoding: Encoding::Empty,
            len: 0,
        });
    }
    let raw_alloc = round_up(src.len(), sector);
    if dst.len() < src.len() {
        return Err(CompressError::NoRoom {
            need: raw_alloc,
            have: dst.len(),
        });
    }
    if compress && raw_alloc > sector {
        // Compressed output must fit one sector short of the raw size.
        let limit = (raw_alloc - sector).min(dst.len());
        if let Ok(n) = lz4::block::compress_to_buffer(src, None, false, &mut dst[..limit]) {
            return Ok(Packed {
                encoding: Encoding::Lz4,
                len: n,
            });
        }
    }
    dst[..src.len()].copy_from_slice(src);
    Ok(Packed {
        encoding: Encoding::Raw,
        len: src.len(),
    })
}

/// Unpacks stored bytes into `dst`, which must be exactly the block's
/// logical size. Never panics on corrupt input.
pub fn unpack(encoding: Encoding, src: &[u8], dst: &mut [u8]) -> Result<(), CompressError> {
    match encoding {
        Encoding::Empty => dst.fill(0),
        Encoding::Raw => {
            let s = src.get(..dst.len()).ok_or_else(|| {
                CompressError::Corrupt(
                    encoding,
                    format!("{} stored bytes for a {} B block", src.len(), dst.len()),
                )
            })?;
            dst.copy_from_slice(s);
        }
        Encoding::Lz4 => {
            let want = i32::try_from(dst.len())
                .map_err(|_| CompressError::Corrupt(encoding, "block too large".into()))?;
            match lz4::block::decompress_to_buffer(src, Some(want), dst) {
                Ok(n) if n == dst.len() => {}
                Ok(n) => {
                    return Err(CompressError::Corrupt(
                        encoding,
                        format!("decoded {n} B, expected {}", dst.len()),
                    ))
                }
                Err(e) => return Err(CompressError::Corrupt(encoding, e.to_string())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::SimStore;
    use proptest::prelude::*;

    fn roundtrip(src: &[u8], sector: usize) -> Packed {
        let mut dst = vec![0u8; round_up(src.len(), sector)];
        let p = pack(src, &mut dst, sector, true).unwrap();
        let mut out = vec![1u8; src.len()];
        unpack(p.encoding, &dst[..p.len], &mut out).unwrap();
        assert_eq!(out, src);
        p
    }

    #[test]
    fn zeros_are_empty_random_is_raw_compressible_is_lz4() {
        assert_eq!(
            roundtrip(&[0u8; 4096], 512),
            Packed {
                encoding: Encoding::Empty,
                len: 0
            }
        );
        let random = SimStore::content(b"r", 4096, 1.0);
        assert_eq!(roundtrip(&random, 512).encoding, Encoding::Raw);
        let half = SimStore::content(b"h", 4096, 2.0);
        let p = roundtrip(&half, 512);
        assert_eq!(p.encoding, Encoding::Lz4);
        assert!(p.len <= 2600, "2:1 data compressed to {} B", p.len);
        assert!(!is_zero(&[0, 0, 0, 1]) && is_zero(&[]) && is_zero(&[0; 100]));
    }

    #[test]
    fn one_sector_blocks_and_disabled_compression_are_raw() {
        let half = SimStore::content(b"h", 512, 2.0);
        assert_eq!(
            roundtrip(&half, 512).encoding,
            Encoding::Raw,
            "nothing to save below one sector"
        );
        let mut dst = vec![0u8; 4096];
        let p = pack(&SimStore::content(b"h", 4096, 2.0), &mut dst, 512, false).unwrap();
        assert_eq!(p.encoding, Encoding::Raw);
        assert!(pack(&[1u8; 100], &mut [0u8; 50], 512, true).is_err());
    }

    #[test]
    fn corrupt_stored_bytes_are_errors() {
        let mut out = vec![0u8; 4096];
        assert!(unpack(Encoding::Raw, &[1, 2, 3], &mut out).is_err());
        assert!(unpack(Encoding::Lz4, &[0xff; 64], &mut out).is_err());
        assert_eq!(Encoding::from_u8(7), None);
    }

    proptest! {
        /// Every block round-trips, and LZ4 is chosen only when it saves a
        /// whole sector.
        #[test]
        fn pack_roundtrips_and_saves_a_sector(seed in any::<u64>(), ratio in 1.0f64..8.0, len in 1usize..20000, sector in prop::sample::select(vec![512usize, 4096])) {
            let src = SimStore::content(&seed.to_le_bytes(), len, ratio);
            let p = roundtrip(&src, sector);
            if p.encoding == Encoding::Lz4 {
                prop_assert!(round_up(p.len, sector) + sector <= round_up(len, sector));
            }
        }

        /// Arbitrary stored bytes never panic the decoder.
        #[test]
        fn unpack_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..3000), len in 0usize..5000, enc in 0u8..3) {
            let mut out = vec![0u8; len];
            let _ = unpack(Encoding::from_u8(enc).unwrap(), &bytes, &mut out);
        }
    }
}
