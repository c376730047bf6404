//! Backing stores that read synchronously on worker threads: a file or
//! block device, and a user closure.

use super::workers::Workers;
use super::{BackingStore, ReadDone, ReadResult};
use crate::error::BackingError;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Maps a key to the byte range `(offset, length)` that holds its block.
pub type KeyMap = dyn Fn(&[u8]) -> Option<(u64, usize)> + Send + Sync;

/// A file or block device. Each key maps to an `(offset, length)` range,
/// read with `pread` on a few worker threads.
pub struct FileStore {
    workers: Workers,
    desc: String,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.desc)
    }
}

impl FileStore {
    /// Opens `path` read-only with a custom key mapping.
    pub fn open(path: &Path, threads: usize, map: Arc<KeyMap>) -> std::io::Result<Self> {
        let file = Arc::new(std::fs::File::open(path)?);
        let len = file.metadata()?.len();
        let read = move |key: &[u8]| -> ReadResult {
            let (off, n) = map(key).ok_or_else(|| BackingError::NotFound(hex_key(key)))?;
            if off.checked_add(n as u64).is_none_or(|end| end > len) {
                return Err(BackingError::NotFound(format!(
                    "{} (range {off}+{n} past end {len})",
                    hex_key(key)
                )));
            }
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, off)?;
            Ok(buf)
        };
        Ok(FileStore {
            workers: Workers::new(threads, "polarc-file", Arc::new(read))?,
            desc: format!("file {} ({len} B)", path.display()),
        })
    }

    /// Opens `path` as an array of `block_size`-byte blocks: the key is a
    /// block number, 8 bytes little-endian.
    pub fn with_block_size(
        path: &Path,
        block_size: usize,
        threads: usize,
    ) -> std::io::Result<Self> {
        let map = move |key: &[u8]| -> Option<(u64, usize)> {
            let n = u64::from_le_bytes(key.try_into().ok()?);
            Some((n.checked_mul(block_size as u64)?, block_size))
        };
        Self::open(path, threads, Arc::new(map))
    }
}

impl BackingStore for FileStore {
    fn read(&self, key: &[u8], done: ReadDone) {
        self.workers.submit(key, done);
    }
    fn describe(&self) -> String {
        self.desc.clone()
    }
}

/// A store that calls a user closure on worker threads.
pub struct FnStore {
    workers: Workers,
}

impl std::fmt::Debug for FnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnStore")
    }
}

impl FnStore {
    /// Runs `f` for every read, on `threads` worker threads.
    pub fn new(
        threads: usize,
        f: impl Fn(&[u8]) -> ReadResult + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Ok(FnStore {
            workers: Workers::new(threads, "polarc-fn", Arc::new(f))?,
        })
    }
}

impl BackingStore for FnStore {
    fn read(&self, key: &[u8], done: ReadDone) {
        self.workers.submit(key, done);
    }
    fn describe(&self) -> String {
        "user closure".into()
    }
}

pub fn hex_key(key: &[u8]) -> String {
    key.iter().take(32).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_sync(s: &dyn BackingStore, key: &[u8]) -> ReadResult {
        let (tx, rx) = std::sync::mpsc::channel();
        s.read(key, ReadDone::new(move |r| tx.send(r).unwrap()));
        rx.recv().unwrap()
    }

    #[test]
    fn file_store_reads_blocks_by_number_and_refuses_past_end() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let s = FileStore::with_block_size(f.path(), 1024, 2).unwrap();
        assert_eq!(
            read_sync(&s, &2u64.to_le_bytes()).unwrap(),
            &data[2048..3072]
        );
        let e = read_sync(&s, &4u64.to_le_bytes()).unwrap_err();
        assert!(e.to_string().contains("past end"), "{e}");
        assert!(matches!(
            read_sync(&s, b"bad"),
            Err(BackingError::NotFound(_))
        ));
    }

    #[test]
    fn fn_store_runs_the_closure_and_a_dropped_done_fails() {
        let s = FnStore::new(1, |k: &[u8]| Ok(k.repeat(2))).unwrap();
        assert_eq!(read_sync(&s, b"ab").unwrap(), b"abab");
        let (tx, rx) = std::sync::mpsc::channel();
        drop(ReadDone::new(move |r| tx.send(r).unwrap()));
        assert!(matches!(rx.recv().unwrap(), Err(BackingError::Dropped)));
    }
}
