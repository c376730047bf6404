//! `--verify`: every byte read is checked against what the engine may
//! serve, staleness included.
//!
//! Each key index has versions. The value of key k at version v is
//! self-describing: its first 16 bytes are k and v (little-endian), the
//! rest is generated from (k, v) (so `--compressibility` holds), and its
//! size is the key's alone (stable across versions). The backing store
//! serves `current[k]` when a read completes; `completed[k]` is the version
//! of the last insert or invalidation of k that returned. Writes of a key
//! come from one client only (the key's owner, `k % clients`), one at a
//! time, so versions of a key are written in order. A read issued when
//! `completed[k]` was `lo` must return some version w with
//! `lo <= w <= current[k]`, byte for byte: older is stale (an insert or
//! invalidation that returned did not take), newer was never written.

use polarc::{index_key, BackingError, SimStore, Source};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes of the (key, version) header at the start of each value.
pub const HEADER: usize = 16;
/// The most keys `--verify` tracks (16 B of memory each).
pub const MAX_KEYS: u64 = 1 << 27;
/// Wrong reads whose details are kept for the report.
const EXAMPLES: usize = 8;

/// The values of a run: sizes and compressibility.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Values {
    /// Smallest value, at least [`HEADER`] bytes.
    pub min: usize,
    /// Largest value.
    pub max: usize,
    /// Compressibility (as `--compressibility`).
    pub ratio: f64,
}

impl Values {
    /// The size of key `k`'s values, whatever the version.
    pub fn size(&self, k: u64) -> usize {
        SimStore::size_of(&index_key(k), self.min, self.max)
    }

    /// The value of key `k` at version `v`.
    pub fn value(&self, k: u64, v: u64) -> Vec<u8> {
        let mut seed = [0u8; HEADER];
        seed[..8].copy_from_slice(&k.to_le_bytes());
        seed[8..].copy_from_slice(&v.to_le_bytes());
        let mut out = SimStore::content(&seed, self.size(k), self.ratio);
        let n = HEADER.min(out.len());
        out[..n].copy_from_slice(&seed[..n]);
        out
    }

    /// Checks `bytes`, read from key `k` when versions `lo..=hi` were
    /// acceptable. Returns the version read.
    pub fn check(&self, k: u64, bytes: &[u8], lo: u64, hi: u64) -> Result<u64, Bad> {
        let want = self.size(k);
        if bytes.len() != want || bytes.len() < HEADER {
            return Err(Bad::Size {
                len: bytes.len(),
                want,
            });
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let (key, w) = (word(0), word(8));
        if key != k {
            return Err(Bad::Key { found: key });
        }
        if w > hi {
            return Err(Bad::Future { version: w, hi });
        }
        let expect = self.value(k, w);
        if let Some(at) = bytes.iter().zip(&expect).position(|(a, b)| a != b) {
            return Err(Bad::Bytes { version: w, at });
        }
        if w < lo {
            return Err(Bad::Stale { version: w, lo });
        }
        Ok(w)
    }
}

/// What is wrong with a value read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Bad {
    /// The wrong length.
    #[error("{len} B, expected {want} B")]
    Size {
        /// Bytes read.
        len: usize,
        /// The key's size.
        want: usize,
    },
    /// Another key's value (or garbage).
    #[error("the value of key {found}")]
    Key {
        /// The key in its header.
        found: u64,
    },
    /// A version never written.
    #[error("version {version}, but the newest written is {hi}")]
    Future {
        /// The version in its header.
        version: u64,
        /// The newest version written.
        hi: u64,
    },
    /// A header that is right, and bytes that are not.
    #[error("version {version} with byte {at} wrong")]
    Bytes {
        /// The version in its header.
        version: u64,
        /// The first byte that differs.
        at: usize,
    },
    /// An intact older version: a write that returned did not take.
    #[error("stale: version {version}, but a write of version {lo} had returned before the read was issued")]
    Stale {
        /// The version read.
        version: u64,
        /// The version of the last write that had returned.
        lo: u64,
    },
}

/// What `--verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Reads whose bytes were checked.
    pub reads_checked: u64,
    /// Reads whose bytes were wrong, stale ones included.
    pub wrong: u64,
    /// Of which intact values of an older version.
    pub stale: u64,
    /// Reads that failed (no bytes to check): injected faults, timeouts.
    pub errors: u64,
    /// Details of the first wrong reads.
    pub examples: Vec<String>,
}

/// The versions of every key, and the tally of checks.
pub struct Verifier {
    values: Values,
    clients: u64,
    current: Vec<AtomicU64>,
    completed: Vec<AtomicU64>,
    checked: AtomicU64,
    wrong: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the versions: one per key.
        f.debug_struct("Verifier")
            .field("keys", &self.current.len())
            .field("clients", &self.clients)
            .field("summary", &self.summary())
            .finish()
    }
}

impl Verifier {
    /// Versions for `keys` keys (at most [`MAX_KEYS`]), all at 0, written
    /// by `clients` clients.
    pub fn new(keys: u64, clients: usize, values: Values) -> Verifier {
        let n = keys.min(MAX_KEYS) as usize;
        Verifier {
            values,
            clients: clients.max(1) as u64,
            current: (0..n).map(|_| AtomicU64::new(0)).collect(),
            completed: (0..n).map(|_| AtomicU64::new(0)).collect(),
            checked: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            examples: Mutex::new(vec![]),
        }
    }

    /// The backing store's block of `key`: its current version.
    pub fn content(&self, key: &[u8]) -> Result<Vec<u8>, BackingError> {
        let k = <[u8; 8]>::try_from(key)
            .ok()
            .map(u64::from_le_bytes)
            .filter(|&k| k < self.current.len() as u64)
            .ok_or_else(|| BackingError::NotFound(polarc::backing::hex_key(key)))?;
        Ok(self
            .values
            .value(k, self.current[k as usize].load(Ordering::Acquire)))
    }

    /// The key client `client` writes instead of `i`: the nearest one it
    /// owns (`k % clients == client`); `None` if it owns none.
    pub fn writer_key(&self, i: u64, client: u64) -> Option<u64> {
        let k = i - i % self.clients + client % self.clients;
        let n = self.current.len() as u64;
        if k < n {
            Some(k)
        } else {
            k.checked_sub(self.clients)
        }
    }

    /// Starts an insert of key `k`: the store has the new version from now
    /// on. Returns the version and its value.
    pub fn insert(&self, k: u64) -> (u64, Vec<u8>) {
        let v = self.bump(k);
        (v, self.values.value(k, v))
    }

    /// Starts an invalidation of key `k`: the store has a new version from
    /// now on. Returns the version.
    pub fn invalidate(&self, k: u64) -> u64 {
        self.bump(k)
    }

    fn bump(&self, k: u64) -> u64 {
        // Only the key's owner writes it, one write at a time.
        self.current[k as usize].fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The insert or invalidation of version `v` of key `k` returned.
    pub fn written(&self, k: u64, v: u64) {
        self.completed[k as usize].fetch_max(v, Ordering::AcqRel);
    }

    /// Starts a read of key `k`: the oldest version it may return.
    pub fn read(&self, k: u64) -> u64 {
        self.completed[k as usize].load(Ordering::Acquire)
    }

    /// A read of key `k` started at `lo` returned `read`: its bytes and
    /// the tier that served them, or `None` if it failed.
    pub fn check(&self, k: u64, lo: u64, read: Option<(&[u8], Source)>) {
        let Some((bytes, source)) = read else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.checked.fetch_add(1, Ordering::Relaxed);
        let hi = self.current[k as usize].load(Ordering::Acquire);
        let Err(bad) = self.values.check(k, bytes, lo, hi) else {
            return;
        };
        self.wrong.fetch_add(1, Ordering::Relaxed);
        if matches!(bad, Bad::Stale { .. }) {
            self.stale.fetch_add(1, Ordering::Relaxed);
        }
        let mut ex = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if ex.len() < EXAMPLES {
            let line = format!("key {k} from {source:?}: {bad} (versions {lo}..={hi} acceptable)");
            log::error!("--verify: {line}");
            ex.push(line);
        }
    }

    /// What the checks found so far.
    pub fn summary(&self) -> Summary {
        Summary {
            reads_checked: self.checked.load(Ordering::Relaxed),
            wrong: self.wrong.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            examples: self
                .examples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values = Values {
        min: 100,
        max: 5000,
        ratio: 2.0,
    };

    #[test]
    fn values_describe_themselves_and_keep_their_size() {
        for (k, v) in [(0, 0), (7, 1), (7, 2), (123_456, 99)] {
            let x = V.value(k, v);
            assert_eq!(x.len(), V.size(k), "the size is the key's");
            assert_eq!(&x[..8], &k.to_le_bytes());
            assert_eq!(&x[8..16], &v.to_le_bytes());
            assert_eq!(V.check(k, &x, v, v), Ok(v));
            assert_eq!(V.check(k, &x, 0, v + 5), Ok(v));
        }
        assert_eq!(V.value(7, 1).len(), V.value(7, 2).len());
        assert_ne!(V.value(7, 1)[16..], V.value(7, 2)[16..]);
        // Sizes vary by key, within the range.
        let sizes: Vec<usize> = (0..50).map(|k| V.size(k)).collect();
        assert!(sizes.iter().all(|s| (100..=5000).contains(s)));
        assert!(sizes.iter().any(|&s| s != sizes[0]));
        // --compressibility still holds: about half the bytes are zeros.
        let x = Values {
            min: 4096,
            max: 4096,
            ratio: 2.0,
        }
        .value(1, 1);
        let zeros = x.iter().filter(|&&b| b == 0).count();
        assert!((1800..=2300).contains(&zeros), "{zeros}");
    }

    #[test]
    fn a_flipped_byte_a_wrong_key_and_a_stale_version_are_caught() {
        let (k, v) = (42, 3);
        let good = V.value(k, v);
        for at in [0, 9, 16, good.len() / 2, good.len() - 1] {
            let mut x = good.clone();
            x[at] ^= 0x10;
            let e = V.check(k, &x, 0, 10).unwrap_err();
            assert!(
                matches!(e, Bad::Bytes { at: a, .. } if a == at)
                    || matches!(e, Bad::Key { .. } | Bad::Future { .. } | Bad::Size { .. }),
                "byte {at}: {e:?}"
            );
        }
        let other = V.value(43, v);
        assert!(V.check(k, &other, 0, 10).is_err(), "another key's value");
        let mut relabelled = other.clone();
        relabelled[..8].copy_from_slice(&k.to_le_bytes());
        assert!(V.check(k, &relabelled, 0, 10).is_err(), "relabelled");
        if V.size(43) == V.size(k) {
            assert_eq!(V.check(k, &other, 0, 10), Err(Bad::Key { found: 43 }));
        }
        assert_eq!(
            V.check(k, &good, 4, 10),
            Err(Bad::Stale { version: 3, lo: 4 })
        );
        assert_eq!(
            V.check(k, &good, 0, 2),
            Err(Bad::Future { version: 3, hi: 2 })
        );
        assert!(matches!(
            V.check(k, &good[..good.len() - 1], 0, 10),
            Err(Bad::Size { .. })
        ));
        assert!(matches!(V.check(k, &[], 0, 10), Err(Bad::Size { .. })));
    }

    #[test]
    fn the_verifier_tracks_versions_and_counts_what_it_finds() {
        let ver = Verifier::new(10, 3, V);
        // The store serves the current version.
        assert_eq!(ver.content(&index_key(5)).unwrap(), V.value(5, 0));
        assert!(ver.content(&index_key(10)).is_err());
        assert!(ver.content(b"short").is_err());
        let (v, val) = ver.insert(5);
        assert_eq!((v, val.clone()), (1, V.value(5, 1)));
        assert_eq!(ver.content(&index_key(5)).unwrap(), val);
        // A read issued before the insert returned may see 0 or 1.
        let lo = ver.read(5);
        assert_eq!(lo, 0);
        ver.written(5, v);
        assert_eq!(ver.read(5), 1);
        let read = |b: &[u8]| Some((b.to_vec(), Source::L2));
        let check = |lo, r: Option<(Vec<u8>, Source)>| {
            ver.check(5, lo, r.as_ref().map(|(b, s)| (b.as_slice(), *s)))
        };
        check(lo, read(&V.value(5, 0)));
        check(lo, read(&V.value(5, 1)));
        // Stale: version 0 after the insert of 1 returned.
        check(1, read(&V.value(5, 0)));
        // Wrong bytes.
        let mut x = V.value(5, 1);
        x[100] ^= 1;
        check(1, read(&x));
        check(1, None);
        let s = ver.summary();
        assert_eq!(
            (s.reads_checked, s.wrong, s.stale, s.errors),
            (4, 2, 1, 1),
            "{s:?}"
        );
        assert_eq!(s.examples.len(), 2);
        assert!(s.examples[0].contains("key 5") && s.examples[0].contains("stale"));
        assert!(s.examples[1].contains("byte 100"), "{}", s.examples[1]);
        let v = ver.invalidate(5);
        assert_eq!(v, 2);
        assert_eq!(ver.content(&index_key(5)).unwrap(), V.value(5, 2));
    }

    #[test]
    fn writers_own_their_keys() {
        let ver = Verifier::new(10, 3, V);
        for i in 0..10 {
            for c in 0..3 {
                let k = ver.writer_key(i, c).unwrap();
                assert!(k < 10 && k % 3 == c, "{i} {c} -> {k}");
                assert!(k.abs_diff(i) < 3 + 3);
            }
        }
        let few = Verifier::new(2, 4, V);
        assert_eq!(few.writer_key(1, 3), None, "client 3 owns no key");
        assert_eq!(few.writer_key(1, 1), Some(1));
    }
}
