//! One reactor's I/O qpair.

use super::ctrlr::Ctrlr;
use super::RECONNECT_EVERY;
use crate::bufpool::BufPool;
use crate::device::{
    check, into_buf, Completion, DeviceError, DeviceInfo, DeviceQueue, IoBuf, IoOp,
};
use spdk_sys as sys;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn alloc_qpair(
    c: &Ctrlr,
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    depth: usize,
) -> Result<*mut sys::spdk_nvme_qpair, DeviceError> {
    let mut o = sys::spdk_nvme_io_qpair_opts::default();
    let size = std::mem::size_of::<sys::spdk_nvme_io_qpair_opts>();
    // SAFETY: `o` is valid for `size` bytes; the controller is attached.
    unsafe { sys::spdk_nvme_ctrlr_get_default_io_qpair_opts(ctrlr, &mut o, size) };
    // Enough request objects that `depth` requests never meet -ENOMEM;
    // the driver queues what the hardware queue cannot hold.
    o.io_queue_requests = o.io_queue_requests.max(2 * depth as u32);
    // SAFETY: as above; the controller serialises qpair allocation.
    let q = unsafe { sys::spdk_nvme_ctrlr_alloc_io_qpair(ctrlr, &o, size) };
    if q.is_null() {
        return Err(DeviceError::Unsupported(format!(
            "{}: no I/O qpair available",
            c.info.name
        )));
    }
    Ok(q)
}

/// A request in flight: handed to SPDK as the callback argument.
struct Req {
    tag: u64,
    offset: u64,
    buf: IoBuf,
    /// The queue's completion vector (see [`SpdkQueue::done`]).
    done: NonNull<Vec<Completion>>,
    device: *const DeviceInfo,
}

// Callbacks run inside the SPDK calls that process completions or free
// a qpair: `spdk_nvme_qpair_process_completions` (from `poll` and `drop`)
// and `spdk_nvme_ctrlr_free_io_qpair` (from `free_qpair`, which
// `maintain` calls from `submit`, `poll` and `tick`, and `drop`), always
// on the queue's own thread and never while a reference to the
// completion vector is live.
unsafe extern "C" fn on_complete(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: `arg` is the Box<Req> leaked at submission, completed
    // exactly once by SPDK; `cpl` is valid during the callback.
    let (req, cpl) = unsafe { (Box::from_raw(arg.cast::<Req>()), &*cpl) };
    let result = if sys::cpl_is_error(cpl) {
        Err(DeviceError::Io {
            // SAFETY: the queue's Ctrlr (and its info) outlives its requests.
            device: unsafe { (*req.device).name.clone() },
            offset: req.offset,
        })
    } else {
        Ok(())
    };
    // SAFETY: `done` is the queue's vector, allocated once and freed only
    // after the qpair (see `Drop`); callbacks run on the queue's thread
    // while no reference to it is live (see above), so this unique
    // borrow is the only one.
    unsafe {
        (*req.done.as_ptr()).push(Completion {
            tag: req.tag,
            buf: req.buf,
            result,
        })
    };
}

/// One reactor's qpair.
pub(super) struct SpdkQueue {
    c: Arc<Ctrlr>,
    /// NULL while the controller is failed (or the qpair could not be
    /// opened again yet).
    qpair: *mut sys::spdk_nvme_qpair,
    /// The namespace, on the controller the qpair belongs to.
    ns: *mut sys::spdk_nvme_ns,
    /// The controller generation the qpair belongs to.
    generation: u64,
    last_open: Option<Instant>,
    depth: usize,
    in_flight: usize,
    /// Completions gathered by callbacks: allocated once (requests in
    /// flight point at it, so it must not move) and reached only through
    /// this pointer, so that no borrow of ours invalidates theirs.
    done: NonNull<Vec<Completion>>,
    /// The qpair's connection dropped: it is freed and opened again.
    broken: bool,
}

impl std::fmt::Debug for SpdkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdkQueue")
            .field("device", &self.c.info.name)
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight)
            .field("broken", &self.broken)
            .finish()
    }
}

impl SpdkQueue {
    /// A queue of `depth` requests with a qpair on `c`.
    pub(super) fn open(c: Arc<Ctrlr>, depth: usize) -> Result<SpdkQueue, DeviceError> {
        let mut q = SpdkQueue {
            c,
            qpair: std::ptr::null_mut(),
            ns: std::ptr::null_mut(),
            generation: 0,
            depth,
            in_flight: 0,
            done: NonNull::from(Box::leak(Box::default())),
            broken: false,
            last_open: None,
        };
        q.open_qpair()?;
        Ok(q)
    }

    /// The completion vector.
    fn done(&mut self) -> &mut Vec<Completion> {
        // SAFETY: allocated in `open` and freed in `Drop`; callbacks (the
        // only other users) run inside SPDK calls made while no borrow
        // returned here is live, and `&mut self` makes this one unique.
        unsafe { &mut *self.done.as_ptr() }
    }

    /// Completions from index `from` on were aborted by SPDK (a qpair
    /// freed, or dropped with the controller failed): the controller may
    /// still DMA into their buffers, so they are held by the controller
    /// until it is detached, and the caller gets [`IoBuf::Held`].
    fn hold_aborted(&mut self, from: usize) {
        let c = self.c.clone();
        let mut held = 0;
        for done in &mut self.done()[from..] {
            if done.result.is_err() && !matches!(done.buf, IoBuf::None | IoBuf::Held) {
                c.hold(std::mem::replace(&mut done.buf, IoBuf::Held));
                held += 1;
            }
        }
        if held > 0 {
            log::warn!(
                "{}: {held} aborted requests' buffers held until the controller is detached",
                c.info.name
            );
        }
    }

    fn io_error(&self, offset: u64) -> DeviceError {
        DeviceError::Io {
            device: self.c.info.name.clone(),
            offset,
        }
    }

    /// Opens a qpair on the current controller.
    fn open_qpair(&mut self) -> Result<(), DeviceError> {
        // Under `admin`, so the controller cannot be detached meanwhile.
        let _st = self.c.admin.lock().unwrap_or_else(|e| e.into_inner());
        let ctrlr = self.c.ctrlr.load(Acquire);
        if ctrlr.is_null() || self.c.failed.load(Acquire) {
            return Err(self.io_error(0));
        }
        self.qpair = alloc_qpair(&self.c, ctrlr, self.depth)?;
        self.ns = self.c.ns.load(Acquire);
        self.generation = self.c.generation.load(Acquire);
        self.broken = false;
        self.c.live_qpairs.fetch_add(1, AcqRel);
        Ok(())
    }

    /// Frees the qpair. SPDK aborts what it still holds, and the callbacks
    /// complete those requests (with an error) into `done`, their buffers
    /// held (see [`SpdkQueue::hold_aborted`]).
    fn free_qpair(&mut self) {
        if self.qpair.is_null() {
            return;
        }
        let from = self.done().len();
        // SAFETY: our qpair, used by this thread only; not used after.
        unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair) };
        self.hold_aborted(from);
        self.qpair = std::ptr::null_mut();
        self.ns = std::ptr::null_mut();
        self.c.live_qpairs.fetch_sub(1, AcqRel);
    }

    /// Frees a qpair that failed or belongs to a failed or replaced
    /// controller, and opens a new one once the controller works (at most
    /// every [`RECONNECT_EVERY`]). Cheap when all is well: two atomic loads.
    fn maintain(&mut self) {
        let failed = self.c.failed.load(Acquire);
        let generation = self.c.generation.load(Acquire);
        if !self.qpair.is_null() && (self.broken || failed || generation != self.generation) {
            self.free_qpair();
        }
        if self.qpair.is_null() && !failed {
            let now = Instant::now();
            if self
                .last_open
                .is_some_and(|t| now.duration_since(t) < RECONNECT_EVERY)
            {
                return;
            }
            self.last_open = Some(now);
            if self.open_qpair().is_ok() {
                log::info!("{}: I/O qpair open again", self.c.info.name);
            }
        }
    }
}

impl DeviceQueue for SpdkQueue {
    fn submit(&mut self, tag: u64, op: IoOp) {
        self.in_flight += 1;
        if let Err(e) = check(&self.c.info, &op, self.in_flight - 1, self.depth) {
            self.done().push(Completion::failed(tag, op, e));
            return;
        }
        let offset = op.range().map_or(0, |r| r.0);
        self.maintain();
        if self.qpair.is_null() {
            let e = self.io_error(offset);
            self.done().push(Completion::failed(tag, op, e));
            return;
        }
        let bs = u64::from(self.c.info.block_size);
        let mut op = op;
        let (ptr, lba, count, kind) = match &mut op {
            IoOp::Read {
                offset, len, buf, ..
            } => (
                buf.as_mut_slice().as_mut_ptr().cast::<c_void>(),
                *offset / bs,
                (*len / bs) as u32,
                Kind::Read,
            ),
            // SPDK takes a mutable pointer for writes but only reads it.
            IoOp::Write { offset, buf } => (
                buf.as_ptr().cast_mut().cast::<c_void>(),
                *offset / bs,
                (buf.len() as u64 / bs) as u32,
                Kind::Write,
            ),
            IoOp::Flush => (std::ptr::null_mut(), 0, 0, Kind::Flush),
            // One range: at most u32::MAX blocks (a TRIM is advisory).
            IoOp::Discard { offset, len } => (
                std::ptr::null_mut(),
                *offset / bs,
                u32::try_from(*len / bs).unwrap_or(u32::MAX),
                Kind::Deallocate,
            ),
        };
        let req = Box::into_raw(Box::new(Req {
            tag,
            offset,
            buf: into_buf(op),
            done: self.done,
            device: &self.c.info,
        }));
        let (ns, qp, cb) = (self.ns, self.qpair, Some(on_complete as _));
        // SAFETY: for a read or write, `ptr` points into the request's
        // buffer, owned by `req` until its callback; the buffer holds
        // `count` blocks (checked above). A deallocate passes a range on
        // this stack, which SPDK copies before it returns, and no buffer.
        // `req` is handed to SPDK, which calls `on_complete` once; an
        // all-zero `spdk_nvme_dsm_range` is a valid value of that C struct.
        let rc = unsafe {
            match kind {
                Kind::Read => {
                    sys::spdk_nvme_ns_cmd_read(ns, qp, ptr, lba, count, cb, req.cast(), 0)
                }
                Kind::Write => {
                    sys::spdk_nvme_ns_cmd_write(ns, qp, ptr, lba, count, cb, req.cast(), 0)
                }
                Kind::Flush => sys::spdk_nvme_ns_cmd_flush(ns, qp, cb, req.cast()),
                Kind::Deallocate => {
                    // SPDK copies the range into its own DMA memory.
                    let mut range: sys::spdk_nvme_dsm_range = std::mem::zeroed();
                    range.starting_lba = lba;
                    range.length = count;
                    sys::spdk_nvme_ns_cmd_dataset_management(
                        ns,
                        qp,
                        sys::SPDK_NVME_DSM_ATTR_DEALLOCATE,
                        &range,
                        1,
                        cb,
                        req.cast(),
                    )
                }
            }
        };
        if rc != 0 {
            // SAFETY: submission failed, so SPDK did not keep `req`.
            let req = unsafe { Box::from_raw(req) };
            let e = self.io_error(offset);
            self.done().push(Completion {
                tag: req.tag,
                buf: req.buf,
                result: Err(e),
            });
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let from = self.done().len();
        if self.in_flight > from && !self.qpair.is_null() {
            // SAFETY: our qpair, polled by this thread only; callbacks
            // push into `self.done`.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair, 0) };
            if rc < 0 {
                // The connection dropped or the controller failed: SPDK
                // aborted what was in flight (their callbacks carry an
                // error status), which the device may still be doing.
                self.hold_aborted(from);
            }
            if rc < 0 && !self.broken {
                self.broken = true;
                log::error!(
                    "{}: I/O qpair failed ({rc}); it is opened again once the controller answers",
                    self.c.info.name
                );
            }
        }
        if self.broken {
            self.maintain();
        }
        let done = self.done();
        let n = done.len();
        out.append(done);
        self.in_flight -= n;
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn tick(&mut self, now: Instant) -> Duration {
        self.maintain();
        self.c.maybe_poll_admin(now);
        // A reattach, or a qpair to open again, moves one step per tick.
        if self.qpair.is_null() || self.c.failed.load(Acquire) {
            super::ADMIN_POLL
        } else {
            crate::device::MAX_TICK
        }
    }

    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        let (base, len) = pool.region();
        // Every part of the pool must be in SPDK's map, not just its start:
        // each lookup says how far the mapping goes from there.
        let mut off = 0usize;
        let mut dma = true;
        while off < len {
            let mut size = (len - off) as u64;
            // SAFETY: a lookup in SPDK's address map; it reads nothing at
            // the address.
            let phys = unsafe { sys::spdk_vtophys((base + off) as *const c_void, &mut size) };
            if phys == u64::MAX || size == 0 {
                dma = false;
                break;
            }
            off += usize::try_from(size).unwrap_or(usize::MAX).min(len - off);
        }
        if !dma && self.c.is_pcie {
            return Err(DeviceError::Unsupported(format!(
                "{}: the buffer pool is not SPDK DMA memory (from byte {off} of {len})",
                self.c.info.name
            )));
        }
        Ok(dma)
    }
}

enum Kind {
    Read,
    Write,
    Flush,
    Deallocate,
}

impl Drop for SpdkQueue {
    fn drop(&mut self) {
        // Wait (bounded) for requests in flight, so no callback outlives
        // the queue's completion vector.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.qpair.is_null()
            && self.in_flight > self.done().len()
            && Instant::now() < deadline
        {
            // SAFETY: our qpair; see poll.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair, 0) };
            if rc < 0 {
                break;
            }
        }
        // Freeing the qpair aborts what is still queued, calling their
        // callbacks now, while `self.done` is alive; their buffers are
        // held by the controller until it is detached.
        self.free_qpair();
        // SAFETY: allocated by Box in `open`; the qpair is freed, so no
        // callback can reach it any more.
        drop(unsafe { Box::from_raw(self.done.as_ptr()) });
    }
}
