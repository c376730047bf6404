//! One attached controller: admin polling, failure, and reattach.

use super::target::trid_string;
use super::{ADMIN_POLL, RECONNECT_EVERY};
use crate::device::{DeviceError, DeviceInfo, IoBuf};
use spdk_sys as sys;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;
use std::time::Instant;

/// One controller and the namespace used. While it works, `ctrlr` and `ns`
/// point at the attached controller. When it fails, every queue frees its
/// qpair, the controller is detached, and it is connected again (every
/// [`RECONNECT_EVERY`], without blocking) until the target answers; then
/// `generation` moves on and the queues open new qpairs.
#[derive(Debug)]
pub(super) struct Ctrlr {
    pub(super) ctrlr: AtomicPtr<sys::spdk_nvme_ctrlr>,
    pub(super) ns: AtomicPtr<sys::spdk_nvme_ns>,
    /// Where to connect again, and how.
    pub(super) trid: sys::spdk_nvme_transport_id,
    pub(super) opts: sys::spdk_nvme_ctrlr_opts,
    pub(super) nsid: u32,
    pub(super) info: DeviceInfo,
    pub(super) is_pcie: bool,
    /// Serialises admin polling and reattaching.
    pub(super) admin: Mutex<Reattach>,
    /// Milliseconds since `start` of the last admin poll.
    pub(super) last_admin_ms: AtomicU64,
    /// Set while the controller is failed or being reattached.
    pub(super) failed: AtomicBool,
    /// Bumped by every reattach.
    pub(super) generation: AtomicU64,
    /// Qpairs allocated on the current controller.
    pub(super) live_qpairs: AtomicUsize,
    /// Buffers of requests SPDK aborted while the controller might still
    /// be doing them: released only once it is detached.
    held: Mutex<Vec<IoBuf>>,
    pub(super) start: Instant,
}

/// A reattach in progress.
#[derive(Debug)]
pub(super) struct Reattach {
    detach: *mut sys::spdk_nvme_detach_ctx,
    probe: *mut sys::spdk_nvme_probe_ctx,
    last_attempt: Option<Instant>,
    pub(super) reattaches: u64,
}

// SAFETY: the controller and namespace handles are used from several
// reactors, which SPDK allows for the calls made here: qpair allocation
// and admin completion processing take the controller's own lock, ours
// (`admin`) serialises detach and connect, and namespace queries are
// read-only. Each qpair is used by one thread only. The raw pointers in
// `Reattach` are only touched under `admin`.
unsafe impl Send for Ctrlr {}
// SAFETY: as above.
unsafe impl Sync for Ctrlr {}

/// Controllers attached by `spdk_nvme_connect_async`, whose callback has
/// no context argument: (transport ID string, controller address).
static ATTACHED: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn on_attach(
    _ctx: *mut c_void,
    trid: *const sys::spdk_nvme_transport_id,
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    _opts: *const sys::spdk_nvme_ctrlr_opts,
) {
    // SAFETY: `trid` is valid during the callback.
    let key = trid_string(unsafe { &*trid });
    if let Ok(mut v) = ATTACHED.lock() {
        v.push((key, ctrlr as usize));
    }
}

/// The namespace `nsid` (or the first active one) of `ctrlr`, with its
/// block size and capacity.
fn namespace(
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    nsid: Option<u32>,
) -> Option<(*mut sys::spdk_nvme_ns, u32, u32, u64)> {
    // SAFETY: `ctrlr` is an attached controller.
    let nsid = nsid.unwrap_or_else(|| unsafe { sys::spdk_nvme_ctrlr_get_first_active_ns(ctrlr) });
    // SAFETY: as above; a missing namespace returns NULL.
    let ns = unsafe { sys::spdk_nvme_ctrlr_get_ns(ctrlr, nsid) };
    // SAFETY: `ns` is checked non-NULL before the query.
    if nsid == 0 || ns.is_null() || !unsafe { sys::spdk_nvme_ns_is_active(ns) } {
        return None;
    }
    // SAFETY: `ns` is an active namespace of `ctrlr`.
    let (bs, cap) = unsafe {
        (
            sys::spdk_nvme_ns_get_sector_size(ns),
            sys::spdk_nvme_ns_get_size(ns),
        )
    };
    Some((ns, nsid, bs, cap))
}

impl Ctrlr {
    /// Keeps `buf` until the controller is detached.
    pub(super) fn hold(&self, buf: IoBuf) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf);
    }

    /// The controller is detached: no DMA can reach the held buffers.
    fn release_held(&self) {
        let n = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner())).len();
        if n > 0 {
            log::info!("{}: {n} held buffers released after detach", self.info.name);
        }
    }

    pub(super) fn attach(
        ctrlr: *mut sys::spdk_nvme_ctrlr,
        nsid: Option<u32>,
        opts: sys::spdk_nvme_ctrlr_opts,
        label: String,
    ) -> Result<Ctrlr, DeviceError> {
        let Some((ns, nsid, block_size, capacity)) = namespace(ctrlr, nsid) else {
            // SAFETY: nothing else holds the controller yet.
            unsafe { sys::spdk_nvme_detach(ctrlr) };
            return Err(DeviceError::Unsupported(format!(
                "{label}: no active namespace {}",
                nsid.map_or("(none)".to_string(), |n| n.to_string())
            )));
        };
        // SAFETY: `ctrlr` is attached; the transport ID lives as long as it.
        let trid = unsafe { *sys::spdk_nvme_ctrlr_get_transport_id(ctrlr) };
        Ok(Ctrlr {
            ctrlr: AtomicPtr::new(ctrlr),
            ns: AtomicPtr::new(ns),
            trid,
            opts,
            nsid,
            info: DeviceInfo {
                name: format!("spdk:{}/ns{nsid}", trid_string(&trid)),
                block_size,
                capacity,
            },
            is_pcie: trid.trtype == sys::SPDK_NVME_TRANSPORT_PCIE,
            admin: Mutex::new(Reattach {
                detach: std::ptr::null_mut(),
                probe: std::ptr::null_mut(),
                last_attempt: None,
                reattaches: 0,
            }),
            last_admin_ms: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            live_qpairs: AtomicUsize::new(0),
            held: Mutex::new(Vec::new()),
            start: Instant::now(),
        })
    }

    /// Polls the admin queue (keep-alive, events) at most every
    /// [`ADMIN_POLL`]; notes a failed controller and drives its reattach.
    pub(super) fn maybe_poll_admin(&self, now: Instant) {
        let ms = now.duration_since(self.start).as_millis() as u64;
        let last = self.last_admin_ms.load(Relaxed);
        if ms < last + ADMIN_POLL.as_millis() as u64
            || self
                .last_admin_ms
                .compare_exchange(last, ms, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(mut st) = self.admin.try_lock() else {
            return;
        };
        let ctrlr = self.ctrlr.load(Acquire);
        if !self.failed.load(Acquire) {
            // SAFETY: the controller is attached (not failed); the call
            // takes its lock.
            let rc = unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(ctrlr) };
            // SAFETY: as above.
            if rc < 0 || unsafe { sys::spdk_nvme_ctrlr_is_failed(ctrlr) } {
                self.failed.store(true, Release);
                log::error!(
                    "{}: controller failed ({rc}); L2 reads go to the backing store until it is reattached",
                    self.info.name
                );
            }
            return;
        }
        self.reattach_step(&mut st, ctrlr, now);
    }

    /// One step of a reattach: wait for the queues to free their qpairs,
    /// detach, connect again, check the namespace. Never blocks.
    fn reattach_step(&self, st: &mut Reattach, ctrlr: *mut sys::spdk_nvme_ctrlr, now: Instant) {
        if !st.detach.is_null() {
            // SAFETY: a detach context of ours, polled until it completes.
            if unsafe { sys::spdk_nvme_detach_poll_async(st.detach) } == -libc::EAGAIN {
                return;
            }
            st.detach = std::ptr::null_mut();
            self.release_held();
            return;
        }
        if !ctrlr.is_null() {
            if self.live_qpairs.load(Acquire) > 0 {
                return; // the queues free theirs on their next poll or tick
            }
            self.ctrlr.store(std::ptr::null_mut(), Release);
            self.ns.store(std::ptr::null_mut(), Release);
            // SAFETY: no qpair is left on the controller and no queue uses
            // it any more (they read `ctrlr` under `admin` only).
            let rc = unsafe { sys::spdk_nvme_detach_async(ctrlr, &mut st.detach) };
            if rc != 0 {
                st.detach = std::ptr::null_mut();
            }
            return;
        }
        if !st.probe.is_null() {
            // SAFETY: a probe context of ours; SPDK frees it when the poll
            // returns anything but -EAGAIN.
            let rc = unsafe { sys::spdk_nvme_probe_poll_async(st.probe) };
            if rc == -libc::EAGAIN {
                return;
            }
            st.probe = std::ptr::null_mut();
            let key = trid_string(&self.trid);
            let found = ATTACHED.lock().ok().and_then(|mut v| {
                let i = v.iter().position(|(k, _)| *k == key)?;
                Some(v.swap_remove(i).1 as *mut sys::spdk_nvme_ctrlr)
            });
            let Some(new) = found else {
                return; // not reachable yet: try again later
            };
            match namespace(new, Some(self.nsid)) {
                Some((ns, _, bs, cap))
                    if bs == self.info.block_size && cap == self.info.capacity =>
                {
                    self.ns.store(ns, Release);
                    self.ctrlr.store(new, Release);
                    st.reattaches += 1;
                    self.generation.fetch_add(1, AcqRel);
                    self.failed.store(false, Release);
                    log::warn!("{}: controller reattached; L2 I/O resumes", self.info.name);
                }
                _ => {
                    log::error!(
                        "{}: reattached controller has no namespace {} of the same size; detaching it",
                        self.info.name,
                        self.nsid
                    );
                    // SAFETY: attached just now and not shared.
                    unsafe { sys::spdk_nvme_detach(new) };
                }
            }
            return;
        }
        if st
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < RECONNECT_EVERY)
        {
            return;
        }
        st.last_attempt = Some(now);
        // SAFETY: `trid` and `opts` are valid; the call copies both and
        // returns a context that `probe_poll_async` drives.
        st.probe = unsafe { sys::spdk_nvme_connect_async(&self.trid, &self.opts, Some(on_attach)) };
    }
}

impl Drop for Ctrlr {
    fn drop(&mut self) {
        let st = self.admin.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: contexts of ours; finished synchronously here.
        unsafe {
            while !st.probe.is_null() && sys::spdk_nvme_probe_poll_async(st.probe) == -libc::EAGAIN
            {
            }
            if !st.detach.is_null() {
                sys::spdk_nvme_detach_poll(st.detach);
            }
        }
        let ctrlr = *self.ctrlr.get_mut();
        if ctrlr.is_null() {
            self.release_held();
            return;
        }
        // SAFETY: every queue holds an Arc to this controller, so all
        // qpairs are freed by now; the handle is not used again.
        let rc = unsafe { sys::spdk_nvme_detach(ctrlr) };
        if rc != 0 {
            log::warn!("{}: detach returned {rc}", self.info.name);
        }
        self.release_held();
    }
}
