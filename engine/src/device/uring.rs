//! io_uring on a file or a block device, one ring per reactor queue.
//!
//! * `O_DIRECT` by default, so the device is measured rather than the page
//!   cache. If the filesystem refuses it, the device opens buffered and
//!   [`UringDevice::direct`] says so.
//! * Completions are reaped from the completion ring in [`DeviceQueue::poll`],
//!   which the reactor calls every loop iteration. Submissions are batched
//!   into one `io_uring_enter` per poll.
//! * Options: IOPOLL (polled completions, raw NVMe only) and SQPOLL (a
//!   kernel thread submits). If the kernel or the device refuses one, the
//!   error says which.

use super::{
    check, check_depth, into_buf, BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue,
    IoOp,
};
use crate::bufpool::BufPool;
use io_uring::{opcode, types, IoUring};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to open an io_uring device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringOptions {
    /// Try `O_DIRECT`. Default: true.
    pub direct: bool,
    /// IOPOLL: the reactor polls completions from the device (raw NVMe
    /// with poll queues only). Default: false.
    pub iopoll: bool,
    /// SQPOLL with this idle time in ms: a kernel thread submits. Default: none.
    pub sqpoll_idle_ms: Option<u32>,
    /// For a regular file: create it, or extend it, to this many bytes.
    pub size: Option<u64>,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            direct: true,
            iopoll: false,
            sqpoll_idle_ms: None,
            size: None,
        }
    }
}

/// A file or block device driven through io_uring.
#[derive(Debug)]
pub struct UringDevice {
    file: Arc<File>,
    info: DeviceInfo,
    direct: bool,
    opts: UringOptions,
    path: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DeviceError {
    DeviceError::Unreachable {
        device: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

impl UringDevice {
    /// Opens `path`. A regular file is created or extended to
    /// `opts.size`; a block device uses its whole size, and is opened
    /// exclusively (`O_EXCL`): one that is mounted, or held by another
    /// program or by a device-mapper, md or LVM volume, is refused. Under
    /// `/dev`, only an existing block device is taken.
    pub fn open(path: &Path, opts: UringOptions) -> Result<Self, DeviceError> {
        let meta = std::fs::metadata(path);
        let is_blockdev = meta.as_ref().is_ok_and(|m| m.file_type().is_block_device());
        if path.starts_with("/dev") && !is_blockdev {
            let why = match &meta {
                Err(_) => "no such device",
                Ok(_) => "not a block device",
            };
            return Err(DeviceError::Invalid {
                device: path.display().to_string(),
                reason: format!("{why} (under /dev, uring: takes an existing block device; give a file path to use a file)"),
            });
        }
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(true).create(!is_blockdev);
            let mut flags = if is_blockdev { libc::O_EXCL } else { 0 };
            if direct {
                flags |= libc::O_DIRECT;
            }
            o.custom_flags(flags);
            o.open(path)
        };
        let (file, direct) = match (opts.direct, open(opts.direct)) {
            (_, Ok(f)) => (f, opts.direct),
            (_, Err(e)) if is_blockdev && e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(DeviceError::InUse {
                    device: path.display().to_string(),
                    reason: "mounted, or held by another program or by a device-mapper, md or LVM volume (it could not be opened O_EXCL)".into(),
                });
            }
            (true, Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::warn!("{}: this filesystem refuses O_DIRECT; using buffered I/O (the page cache will hold a second copy)", path.display());
                (open(false).map_err(|e| io_err("opening", path, e))?, false)
            }
            (_, Err(e)) => return Err(io_err("opening", path, e)),
        };
        let (capacity, block_size) = if is_blockdev {
            block_geometry(&file).map_err(|e| io_err("reading the geometry of", path, e))?
        } else {
            if let Some(size) = opts.size {
                let len = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
                if len < size {
                    allocate(&file, size).map_err(|e| io_err("allocating", path, e))?;
                }
            }
            // 4 KiB: the block size of the filesystems O_DIRECT runs on.
            let len = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
            (len / 4096 * 4096, 4096)
        };
        if capacity == 0 {
            return Err(DeviceError::Invalid {
                device: path.display().to_string(),
                reason: "the device is empty (give a size, e.g. file:PATH:2GiB)".into(),
            });
        }
        Ok(UringDevice {
            file: Arc::new(file),
            info: DeviceInfo {
                name: format!("uring:{}", path.display()),
                block_size,
                capacity,
            },
            direct,
            opts,
            path: path.into(),
        })
    }

    /// True when the device runs with `O_DIRECT`.
    pub fn direct(&self) -> bool {
        self.direct
    }
}

/// Extends a file to `size` bytes with its blocks allocated: direct writes
/// into holes or unwritten extents serialise on ext4's inode lock, and
/// measured here they ran 100x slower. Falls back to a sparse `set_len`
/// where the filesystem has no fallocate.
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(size)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: fallocate takes an open fd and two integers; no memory is shared.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        log::warn!("this filesystem has no fallocate; the L2 file stays sparse");
        return file.set_len(size);
    }
    Err(e)
}

/// Size and logical block size of a block device.
fn block_geometry(file: &File) -> std::io::Result<(u64, u32)> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut size: u64 = 0;
    let mut bs: libc::c_int = 0;
    // SAFETY: both ioctls write one integer of the type given through a
    // pointer to a live local; the fd is open for the duration.
    let (r1, r2) = unsafe {
        (
            libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64),
            libc::ioctl(
                file.as_raw_fd(),
                BLKSSZGET as _,
                &mut bs as *mut libc::c_int,
            ),
        )
    };
    if r1 != 0 || r2 != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((size, bs.max(512) as u32))
}

impl BlockDevice for UringDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        check_depth(depth)?;
        let entries = depth
            .checked_next_power_of_two()
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| DeviceError::Invalid {
                device: self.info.name.clone(),
                reason: format!("queue depth {depth} too large"),
            })?;
        let build = |coop: bool| {
            let mut b = IoUring::builder();
            if self.opts.iopoll {
                b.setup_iopoll();
            }
            if let Some(ms) = self.opts.sqpoll_idle_ms {
                b.setup_sqpoll(ms);
            }
            if coop {
                // Completions do not interrupt the polling reactor; the
                // kernel raises a flag and the next poll enters to run them.
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            b.build(entries)
        };
        // COOP_TASKRUN needs Linux 5.19; older kernels refuse it.
        let ring = build(true).or_else(|_| build(false)).map_err(|e| {
            let mode = match (self.opts.iopoll, self.opts.sqpoll_idle_ms.is_some()) {
                (true, true) => "IOPOLL+SQPOLL ",
                (true, false) => "IOPOLL ",
                (false, true) => "SQPOLL ",
                _ => "",
            };
            DeviceError::Unsupported(format!(
                "io_uring {mode}ring for {}: the kernel refused it: {e}",
                self.path.display()
            ))
        })?;
        Ok(Box::new(UringQueue {
            ring,
            file: self.file.clone(),
            info: self.info.clone(),
            depth,
            iopoll: self.opts.iopoll,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth as u32).rev().collect(),
            refused: VecDeque::new(),
            unsubmitted: 0,
            fixed: Vec::new(),
        }))
    }
}

struct UringQueue {
    ring: IoUring,
    file: Arc<File>,
    info: DeviceInfo,
    depth: usize,
    iopoll: bool,
    /// Requests in the kernel, by slot (the SQE's user_data). Owning the
    /// request keeps its buffer alive until the kernel is done with it.
    slots: Vec<Option<(u64, IoOp)>>,
    free: Vec<u32>,
    refused: VecDeque<Completion>,
    unsubmitted: usize,
    /// Registered buffers: (start address, length), by index.
    fixed: Vec<(usize, usize)>,
}

/// How long dropping a queue waits for its requests in the kernel.
const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The kernel's limit on one registered buffer.
const MAX_FIXED: usize = 1 << 30;

impl UringQueue {
    /// The registered buffer holding `[p, p + len)`, if any.
    fn fixed_index(&self, p: usize, len: usize) -> Option<u16> {
        self.fixed
            .iter()
            .position(|&(b, l)| p >= b && p + len <= b + l)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn busy(&self) -> usize {
        self.depth - self.free.len()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut n = 0;
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, res) in cqes {
            let Some((tag, op)) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
                log::error!("{}: completion for unknown slot {slot}", self.info.name);
                continue;
            };
            self.free.push(slot as u32);
            // A read or write returns its length; fsync and fallocate 0.
            let want = match op {
                IoOp::Read { .. } | IoOp::Write { .. } => op.range().map(|r| r.1),
                IoOp::Flush | IoOp::Discard { .. } => None,
            };
            let result = match (res, want) {
                (r, _)
                    if matches!(op, IoOp::Discard { .. })
                        && (r == -libc::EOPNOTSUPP || r == -libc::EINVAL) =>
                {
                    Err(DeviceError::Unsupported(format!(
                        "{}: cannot punch holes or discard",
                        self.info.name
                    )))
                }
                (r, _) if r < 0 => {
                    let e = std::io::Error::from_raw_os_error(-r);
                    log::warn!("{}: {e}", self.info.name);
                    Err(DeviceError::Io {
                        device: self.info.name.clone(),
                        offset: op.range().map_or(0, |r| r.0),
                    })
                }
                (r, Some(len)) if r as u64 != len => Err(DeviceError::Io {
                    device: format!("{} (short I/O: {r} of {len} B)", self.info.name),
                    offset: op.range().map_or(0, |r| r.0),
                }),
                _ => Ok(()),
            };
            out.push(Completion {
                tag,
                buf: into_buf(op),
                result,
            });
            n += 1;
        }
        n
    }
}

impl DeviceQueue for UringQueue {
    fn submit(&mut self, tag: u64, mut op: IoOp) {
        let mut result = check(
            &self.info,
            &op,
            self.busy() + self.refused.len(),
            self.depth,
        );
        let bs = self.info.block_size as usize;
        let fd = types::Fd(self.file.as_raw_fd());
        let sqe = match &mut op {
            IoOp::Read { offset, len, buf } => {
                let p = buf.as_mut_slice().as_mut_ptr();
                if result.is_ok() && p as usize % bs != 0 {
                    result = Err(DeviceError::Misaligned {
                        offset: p as u64,
                        len: *len,
                        block_size: bs as u32,
                    });
                }
                match self.fixed_index(p as usize, *len as usize) {
                    Some(i) => opcode::ReadFixed::new(fd, p, *len as u32, i)
                        .offset(*offset)
                        .build(),
                    None => opcode::Read::new(fd, p, *len as u32)
                        .offset(*offset)
                        .build(),
                }
            }
            IoOp::Write { offset, buf } => {
                let p = buf.as_ptr();
                if result.is_ok() && p as usize % bs != 0 {
                    result = Err(DeviceError::Misaligned {
                        offset: p as u64,
                        len: buf.len() as u64,
                        block_size: bs as u32,
                    });
                }
                match self.fixed_index(p as usize, buf.len()) {
                    Some(i) => opcode::WriteFixed::new(fd, p, buf.len() as u32, i)
                        .offset(*offset)
                        .build(),
                    None => opcode::Write::new(fd, p, buf.len() as u32)
                        .offset(*offset)
                        .build(),
                }
            }
            IoOp::Flush => opcode::Fsync::new(fd).build(),
            // A hole in a file; on a block device the kernel discards.
            IoOp::Discard { offset, len } => opcode::Fallocate::new(fd, *len)
                .offset(*offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        };
        let depth = self.depth;
        let slot =
            match result.and_then(|()| self.free.pop().ok_or(DeviceError::QueueFull { depth })) {
                Ok(slot) => slot,
                Err(e) => return self.refused.push_back(Completion::failed(tag, op, e)),
            };
        let sqe = sqe.user_data(u64::from(slot));
        // SAFETY: the SQE points into `op`'s pool buffer, which we store in
        // `slots[slot]` and keep until its completion is reaped (or until
        // Drop has waited for it), so the memory outlives the I/O; the fd is
        // kept open by `self.file`.
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_err() {
            self.free.push(slot);
            return self.refused.push_back(Completion::failed(
                tag,
                op,
                DeviceError::QueueFull { depth },
            ));
        }
        self.slots[slot as usize] = Some((tag, op));
        self.unsubmitted += 1;
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let taskrun = self.ring.submission().taskrun();
        if self.unsubmitted > 0 || taskrun || (self.iopoll && self.busy() > 0) {
            // With IOPOLL, completions only appear when we enter the kernel.
            let want = usize::from(self.iopoll && self.unsubmitted == 0);
            match self.ring.submitter().submit_and_wait(want) {
                Ok(_) => self.unsubmitted = 0,
                Err(e)
                    if e.raw_os_error() == Some(libc::EAGAIN)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => log::error!("{}: io_uring_enter: {e}", self.info.name),
            }
        }
        let mut n = self.reap(out);
        n += self.refused.len();
        out.extend(self.refused.drain(..));
        n
    }

    fn in_flight(&self) -> usize {
        self.busy() + self.refused.len()
    }

    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        if !self.fixed.is_empty() {
            return Ok(true);
        }
        let (base, len) = pool.region();
        let chunks: Vec<(usize, usize)> = (0..len)
            .step_by(MAX_FIXED)
            .map(|off| (base + off, (len - off).min(MAX_FIXED)))
            .collect();
        let iovecs: Vec<libc::iovec> = chunks
            .iter()
            .map(|&(b, l)| libc::iovec {
                iov_base: b as *mut libc::c_void,
                iov_len: l,
            })
            .collect();
        // SAFETY: the iovecs describe the pool's mapped region, which the
        // pool keeps mapped for as long as any of its buffers or clones
        // live; this queue's Drop waits for every request before the ring
        // (and its registration) goes, or leaks the buffers of requests
        // still in the kernel (their handles keep the region mapped), and
        // the caller keeps the pool alive alongside the queue.
        match unsafe { self.ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => {
                self.fixed = chunks;
                Ok(true)
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot register the buffer pool as io_uring fixed buffers ({e}); using unregistered buffers (raise RLIMIT_MEMLOCK)",
                    self.info.name
                );
                Ok(false)
            }
        }
    }
}

impl Drop for UringQueue {
    fn drop(&mut self) {
        // The kernel may still be using buffers we own: wait for them, but
        // not forever (a stuck device must not hang the shutdown).
        let mut sink = Vec::new();
        let give_up = std::time::Instant::now() + DROP_WAIT;
        while self.busy() > 0 && std::time::Instant::now() < give_up {
            if self.ring.submit().is_err() {
                break;
            }
            if self.reap(&mut sink) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        if self.busy() > 0 {
            // The kernel may still write into these buffers: leaking them is
            // the only safe option (closing the ring cancels the requests;
            // their pages stay pinned until they end).
            log::error!(
                "{}: {} requests still in the kernel after {DROP_WAIT:?}; leaking their buffers",
                self.info.name,
                self.busy()
            );
            for s in self.slots.iter_mut() {
                std::mem::forget(s.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::IoBuf;

    #[test]
    fn file_device_passes_the_conformance_suite_with_o_direct() {
        let dir = tempfile::tempdir().unwrap();
        let dev = UringDevice::open(
            &dir.path().join("l2.img"),
            UringOptions {
                size: Some(8 << 20),
                ..UringOptions::default()
            },
        )
        .unwrap();
        assert_eq!(dev.info().capacity, 8 << 20);
        let pool = BufPool::new(16 << 20, 1 << 20, false).unwrap();
        crate::testing::conformance::run(&dev, &pool).unwrap();
        println!("O_DIRECT: {}", dev.direct());
        assert_eq!(pool.stats().outstanding, 0);
    }

    #[test]
    fn registered_pool_buffers_and_foreign_buffers_both_work() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UringOptions {
            size: Some(4 << 20),
            ..UringOptions::default()
        };
        let dev = UringDevice::open(&dir.path().join("l2.img"), opts).unwrap();
        let pool = BufPool::new(8 << 20, 1 << 20, false).unwrap();
        let other = BufPool::new(4 << 20, 1 << 20, false).unwrap();
        let mut q = dev.open_queue(8).unwrap();
        let registered = q.register_pool(&pool).unwrap();
        println!("fixed buffers registered: {registered}");
        let wait = |q: &mut Box<dyn DeviceQueue>| {
            let mut out = vec![];
            while out.is_empty() {
                q.poll(&mut out);
            }
            out.pop().unwrap()
        };
        for (i, p) in [&pool, &other].into_iter().enumerate() {
            let mut w = p.alloc(8192).unwrap();
            w.as_mut_slice().fill(i as u8 + 7);
            q.submit(
                1,
                IoOp::Write {
                    offset: 8192 * i as u64,
                    buf: w.freeze(8192),
                },
            );
            assert!(wait(&mut q).result.is_ok());
            let r = p.alloc(8192).unwrap();
            q.submit(
                2,
                IoOp::Read {
                    offset: 8192 * i as u64,
                    len: 8192,
                    buf: r,
                },
            );
            let c = wait(&mut q);
            assert!(c.result.is_ok());
            let IoBuf::Read(b) = c.buf else { panic!() };
            assert!(b.freeze(8192).iter().all(|&x| x == i as u8 + 7));
        }
    }

    #[test]
    fn buffered_mode_passes_too() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UringOptions {
            direct: false,
            size: Some(4 << 20),
            ..UringOptions::default()
        };
        let dev = UringDevice::open(&dir.path().join("l2.img"), opts).unwrap();
        assert!(!dev.direct());
        let pool = BufPool::new(16 << 20, 1 << 20, false).unwrap();
        crate::testing::conformance::run(&dev, &pool).unwrap();
    }

    #[test]
    fn an_empty_device_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            UringDevice::open(&dir.path().join("empty.img"), UringOptions::default()).unwrap_err();
        assert!(e.to_string().contains("the device is empty"), "{e}");
        let e = UringDevice::open(Path::new("/nonexistent-dir/x.img"), UringOptions::default())
            .unwrap_err();
        assert!(
            matches!(e, DeviceError::Unreachable { .. })
                && e.to_string()
                    .starts_with("/nonexistent-dir/x.img: unreachable: opening: "),
            "{e}"
        );
    }

    #[test]
    fn dev_paths_must_be_existing_block_devices() {
        for (p, why) in [
            ("/dev/polarc-no-such-disk", "no such device"),
            ("/dev/null", "not a block device"),
        ] {
            let e = UringDevice::open(Path::new(p), UringOptions::default()).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert!(
                !Path::new("/dev/polarc-no-such-disk").exists(),
                "nothing was created"
            );
        }
    }

    /// A block device held by another opener is refused; once released it
    /// opens. Needs a loop device (root); says so when there is none.
    #[test]
    fn a_block_device_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("loop.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output();
        let dev = match out {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
            _ => {
                println!("skipped: no loop device here (needs root and losetup)");
                return;
            }
        };
        let held = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&dev)
            .unwrap();
        let e = UringDevice::open(Path::new(&dev), UringOptions::default()).unwrap_err();
        drop(held);
        let free = UringDevice::open(Path::new(&dev), UringOptions::default());
        let _ = std::process::Command::new("losetup")
            .args(["-d", &dev])
            .status();
        assert!(
            matches!(e, DeviceError::InUse { .. }) && e.to_string().contains("in use"),
            "{e}"
        );
        let free = free.unwrap();
        assert_eq!(free.info().capacity, 16 << 20);
    }

    #[test]
    fn iopoll_on_a_file_is_refused_or_reported() {
        // Files cannot complete IOPOLL requests; depending on the kernel the
        // ring is refused at setup or requests fail. Either way it must not
        // hang and must not report success with wrong data.
        let dir = tempfile::tempdir().unwrap();
        let opts = UringOptions {
            iopoll: true,
            size: Some(1 << 20),
            ..UringOptions::default()
        };
        let dev = UringDevice::open(&dir.path().join("p.img"), opts).unwrap();
        match dev.open_queue(4) {
            Err(e) => assert!(e.to_string().contains("IOPOLL"), "{e}"),
            Ok(mut q) => {
                let pool = BufPool::new(4 << 20, 1 << 20, false).unwrap();
                q.submit(
                    1,
                    IoOp::Read {
                        offset: 0,
                        len: 4096,
                        buf: pool.alloc(4096).unwrap(),
                    },
                );
                let mut out = vec![];
                let t = std::time::Instant::now();
                while out.is_empty() && t.elapsed() < std::time::Duration::from_secs(5) {
                    q.poll(&mut out);
                }
                assert_eq!(
                    out.len(),
                    1,
                    "an IOPOLL request on a file must complete, with data or an error"
                );
            }
        }
    }
}
