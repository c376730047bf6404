//! Opening an L2 device at start-up, on the thread that builds the engine:
//! its header says whether it holds a log to rebuild, is new, or belongs to
//! someone else. A new device, or one whose log cannot be used here (another
//! geometry, a damaged header, persistence off, a fresh start asked for), is
//! formatted with a new GUID, so nothing logged before can be taken for
//! current. A device with foreign data or an unknown format version is
//! refused unless the configuration says to overwrite it.

use super::format::{
    DeviceHeader, Geometry, HeaderError, COMPAT_CLEAN, COMPAT_NO_LOG, HEADER_BYTES, KEY_TAG_SEED,
};
use super::journal::MAX_ATTEMPTS;
use super::{L2Config, L2Start};
use crate::bufpool::BufPool;
use crate::device::{BlockDevice, DeviceError, DeviceQueue, IoBuf, IoOp};
use std::time::{Duration, Instant};

/// How long one request of the start-up may take.
pub(crate) const START_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A device ready for its feeder.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// Its header as on the device now.
    pub header: DeviceHeader,
    /// True when its log is to be rebuilt; false when it was formatted.
    pub resume: bool,
    /// Header writes that failed and were tried again.
    pub write_errors: u64,
}

/// Reads the header of `device`, decides, and formats it if needed.
/// `min_data` is the smallest data ring the engine accepts.
pub(crate) fn prepare(
    device: &dyn BlockDevice,
    cfg: &L2Config,
    min_data: u64,
    pool: &BufPool,
) -> Result<Prepared, DeviceError> {
    let info = device.info();
    let name = info.name.clone();
    let planned =
        Geometry::plan(info.capacity, info.block_size, cfg.log_share, min_data).map_err(|e| {
            DeviceError::Invalid {
                device: name.clone(),
                reason: e.to_string(),
            }
        })?;
    let mut o = Opener {
        q: device.open_queue(4)?,
        name: name.clone(),
        pool,
        write_errors: 0,
    };
    o.q.register_pool(pool)?;
    let found = o.read_header(info.block_size)?;
    let refuse = |why: String| DeviceError::Refused {
        device: name.clone(),
        reason: format!(
            "{why}; set L2Config::start to Overwrite (polarc-perf: --l2-overwrite) to format it"
        ),
    };
    let fresh_reason = match found {
        Ok(h) if cfg.start == L2Start::Resume && cfg.persistent => {
            let g = &h.geometry;
            if g.capacity != info.capacity || g.block_size != info.block_size {
                Some(format!(
                    "formatted for {} B in {} B blocks, now {} B in {} B blocks",
                    g.capacity, g.block_size, info.capacity, info.block_size
                ))
            } else if h.hash_id != KEY_TAG_SEED {
                Some("its keys were hashed another way".into())
            } else if h.compat & COMPAT_NO_LOG != 0 {
                None // written without a log: nothing to rebuild
            } else {
                log::info!(
                    "L2 device {name}: rebuilding from its log ({} shutdown)",
                    if h.compat & COMPAT_CLEAN != 0 {
                        "clean"
                    } else {
                        "unclean"
                    }
                );
                return Ok(Prepared {
                    header: h,
                    resume: true,
                    write_errors: 0,
                });
            }
        }
        Ok(_) => None,
        Err(HeaderError::Zeroed) => None,
        Err(HeaderError::Corrupt(why)) => Some(format!("its header is damaged ({why})")),
        Err(
            e @ (HeaderError::Foreign
            | HeaderError::UnknownVersion(_)
            | HeaderError::Incompatible(_)),
        ) => {
            if cfg.start != L2Start::Overwrite {
                return Err(refuse(e.to_string()));
            }
            Some(format!("overwriting what was on it ({e})"))
        }
    };
    match &fresh_reason {
        None => log::info!("L2 device {name}: starting empty"),
        Some(why) => log::warn!("L2 device {name}: {why}: starting it empty"),
    }
    let header = DeviceHeader {
        compat: if cfg.persistent { 0 } else { COMPAT_NO_LOG },
        incompat: 0,
        guid: rand::random(),
        generation: 0,
        geometry: planned,
        hash_id: KEY_TAG_SEED,
        hand: 0,
        evict: 0,
        newest_log: 0,
        next_write: 1,
    };
    // Both copies, then a flush: a later torn write leaves one intact. A
    // device that cannot take them is refused: running it would leave an
    // older log there, which a later start could take for current.
    for generation in [1, 2] {
        o.write_header(&DeviceHeader {
            generation,
            ..header
        })?;
    }
    o.sync_io("flush", &|| Ok(IoOp::Flush))?;
    Ok(Prepared {
        header: DeviceHeader {
            generation: 2,
            ..header
        },
        resume: false,
        write_errors: o.write_errors,
    })
}

/// A queue of the start-up thread on one device.
struct Opener<'a> {
    q: Box<dyn DeviceQueue>,
    name: String,
    pool: &'a BufPool,
    write_errors: u64,
}

impl Opener<'_> {
    /// The newest valid header copy. Copy 0 is at offset 0; copy 1 one
    /// metadata block further, which depends on the geometry it was
    /// written with, so every place it can be is tried.
    fn read_header(
        &mut self,
        block_size: u32,
    ) -> Result<Result<DeviceHeader, HeaderError>, DeviceError> {
        // Reads of 4 KiB (or a device block): a size class the pool uses
        // anyway, so that opening a device takes no slab of its own.
        let bs = block_size as usize;
        let unit = 4096usize.max(bs);
        let first = self.read_at(0, unit)?;
        let mut best = DeviceHeader::decode(&first[..HEADER_BYTES]);
        let mut foreign = first.iter().any(|&b| b != 0);
        for at in [512usize, 4096, bs] {
            if at < HEADER_BYTES {
                continue;
            }
            let copy = if at + HEADER_BYTES <= unit {
                DeviceHeader::decode(&first[at..at + HEADER_BYTES])
            } else if at == unit {
                let second = self.read_at(at as u64, unit)?;
                foreign |= second[..HEADER_BYTES].iter().any(|&b| b != 0);
                DeviceHeader::decode(&second[..HEADER_BYTES])
            } else {
                continue;
            };
            // Only a copy that belongs with copy 0 (or replaces a bad one).
            let fits = |h: &DeviceHeader| h.geometry.meta_block as usize == at;
            best = match copy {
                Ok(h) if fits(&h) => DeviceHeader::newest(best, Ok(h)),
                Ok(_) => best,
                Err(e) => DeviceHeader::newest(best, Err(e)),
            };
        }
        // Foreign wherever anything but zeros is, if no copy is ours.
        if best == Err(HeaderError::Zeroed) && foreign {
            best = Err(HeaderError::Foreign);
        }
        Ok(best)
    }

    /// Reads `len` bytes at `offset`.
    fn read_at(&mut self, offset: u64, len: usize) -> Result<crate::bufpool::Buf, DeviceError> {
        let (pool, name) = (self.pool, self.name.clone());
        let read = move || {
            let buf = pool.alloc(len).ok_or_else(|| no_memory(&name))?;
            Ok(IoOp::Read {
                offset,
                len: len as u64,
                buf,
            })
        };
        let IoBuf::Read(buf) = self.sync_io("reading the header", &read)? else {
            unreachable!("a read gives back its read buffer")
        };
        Ok(buf.freeze(len))
    }

    /// Writes a header into its copy (by generation).
    fn write_header(&mut self, h: &DeviceHeader) -> Result<(), DeviceError> {
        let len = h.geometry.meta_block as usize;
        let mut buf = self.pool.alloc(len).ok_or_else(|| no_memory(&self.name))?;
        h.encode(&mut buf.as_mut_slice()[..len]);
        let buf = buf.freeze(len);
        let offset = h.geometry.header_offset(h.generation);
        let write = move || {
            Ok(IoOp::Write {
                offset,
                buf: buf.clone(),
            })
        };
        self.sync_io("writing the header", &write).map(|_| ())
    }

    /// Runs the request `make` builds to completion, polling the queue,
    /// for at most [`START_IO_TIMEOUT`]; a request that fails is made and
    /// tried again, up to [`MAX_ATTEMPTS`] times in all.
    fn sync_io(
        &mut self,
        what: &str,
        make: &dyn Fn() -> Result<IoOp, DeviceError>,
    ) -> Result<IoBuf, DeviceError> {
        let start = Instant::now();
        let mut out = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            self.q.submit(0, make()?);
            let c = loop {
                self.q.poll(&mut out);
                if let Some(c) = out.pop() {
                    break c;
                }
                if start.elapsed() > START_IO_TIMEOUT {
                    return Err(DeviceError::TimedOut {
                        device: self.name.clone(),
                        what: what.into(),
                        after: START_IO_TIMEOUT,
                    });
                }
                self.q.tick(Instant::now());
                std::thread::yield_now();
            };
            match c.result {
                Ok(()) => return Ok(c.buf),
                Err(e) if attempt == MAX_ATTEMPTS => return Err(e),
                Err(e) => {
                    self.write_errors += u64::from(!what.starts_with("reading"));
                    log::warn!("L2 device {}: {what}: {e}; trying again", self.name);
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

fn no_memory(name: &str) -> DeviceError {
    DeviceError::Invalid {
        device: name.into(),
        reason: "no pool buffer for its header (raise pool_capacity)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::MemDevice;
    use crate::l2::format::{hdr_version_for_tests, FORMAT_VERSION};

    fn cfg(start: L2Start) -> L2Config {
        L2Config {
            start,
            ..L2Config::default()
        }
    }

    fn pool() -> BufPool {
        BufPool::new(16 << 20, 1 << 20, false).unwrap()
    }

    fn open(d: &MemDevice, start: L2Start) -> Result<Prepared, DeviceError> {
        prepare(d, &cfg(start), 1 << 20, &pool())
    }

    #[test]
    fn a_new_device_is_formatted_and_then_resumed() {
        let d = MemDevice::new(32 << 20, 512).unwrap();
        let p = open(&d, L2Start::Resume).unwrap();
        assert!(!p.resume);
        let again = open(&d, L2Start::Resume).unwrap();
        assert!(again.resume, "a formatted device is ours");
        assert_eq!(again.header.guid, p.header.guid);
        let fresh = open(&d, L2Start::Fresh).unwrap();
        assert!(!fresh.resume);
        assert_ne!(
            fresh.header.guid, p.header.guid,
            "a fresh start takes a new GUID"
        );
    }

    #[test]
    fn foreign_and_random_devices_are_refused_unless_overwritten() {
        for (what, fill) in [("random", None), ("text", Some(b"my database".as_slice()))] {
            let mut img = vec![0u8; 32 << 20];
            match fill {
                None => {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64;
                    for b in img.iter_mut().take(1 << 16) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = x as u8;
                    }
                }
                Some(t) => img[..t.len()].copy_from_slice(t),
            }
            let d = MemDevice::from_image(img, 512).unwrap();
            let e = open(&d, L2Start::Resume).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DeviceError::Refused { .. }), "{what}: {msg}");
            assert!(
                msg.contains("mem:33554432") && msg.contains("another program"),
                "{msg}"
            );
            assert!(
                open(&d, L2Start::Fresh).is_err(),
                "{what}: fresh does not overwrite"
            );
            assert!(!open(&d, L2Start::Overwrite).unwrap().resume);
            assert!(
                open(&d, L2Start::Resume).unwrap().resume,
                "{what}: ours now"
            );
        }
    }

    #[test]
    fn an_unknown_version_is_refused_and_a_damaged_header_starts_empty() {
        let d = MemDevice::new(32 << 20, 512).unwrap();
        let p = open(&d, L2Start::Resume).unwrap();
        let mut img = d.snapshot();
        let meta = p.header.geometry.meta_block as usize;
        for at in [0, meta] {
            hdr_version_for_tests(&mut img[at..at + 4096.min(meta)], FORMAT_VERSION + 1);
        }
        let newer = MemDevice::from_image(img.clone(), 512).unwrap();
        let e = open(&newer, L2Start::Resume).unwrap_err().to_string();
        assert!(
            e.contains(&format!("format version {}", FORMAT_VERSION + 1)),
            "{e}"
        );
        // Damage both copies (a bit each): ours, but unreadable.
        let mut img = d.snapshot();
        img[100] ^= 1;
        img[meta + 100] ^= 1;
        let damaged = MemDevice::from_image(img, 512).unwrap();
        let p2 = open(&damaged, L2Start::Resume).unwrap();
        assert!(!p2.resume);
        assert_ne!(p2.header.guid, p.header.guid);
        // One copy damaged: the other is used.
        let mut img = d.snapshot();
        img[100] ^= 1;
        let half = MemDevice::from_image(img, 512).unwrap();
        let p3 = open(&half, L2Start::Resume).unwrap();
        assert!(p3.resume && p3.header.guid == p.header.guid);
    }

    #[test]
    fn another_geometry_starts_empty() {
        let d = MemDevice::new(32 << 20, 512).unwrap();
        let p = open(&d, L2Start::Resume).unwrap();
        // The same bytes seen through 4 KiB blocks, and on a larger device.
        let as4k = MemDevice::from_image(d.snapshot(), 4096).unwrap();
        assert!(!open(&as4k, L2Start::Resume).unwrap().resume);
        let mut bigger = d.snapshot();
        bigger.resize(64 << 20, 0);
        let bigger = MemDevice::from_image(bigger, 512).unwrap();
        let q = open(&bigger, L2Start::Resume).unwrap();
        assert!(!q.resume && q.header.guid != p.header.guid);
        assert_eq!(q.header.geometry.capacity, 64 << 20);
    }

    #[test]
    fn persistence_off_formats_without_a_log() {
        let d = MemDevice::new(32 << 20, 512).unwrap();
        let c = L2Config {
            persistent: false,
            ..L2Config::default()
        };
        let p = prepare(&d, &c, 1 << 20, &pool()).unwrap();
        assert!(!p.resume && p.header.compat & COMPAT_NO_LOG != 0);
        // A later persistent start finds nothing to rebuild.
        assert!(!open(&d, L2Start::Resume).unwrap().resume);
    }
}
