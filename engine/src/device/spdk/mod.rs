//! NVMe through SPDK's userspace driver (feature `spdk`).
//!
//! * [`init_env`] starts SPDK's environment once per process: hugepages,
//!   or `no_huge` with a memory size, and a core mask that matches the
//!   reactors.
//! * [`SpdkDevice::connect`] reaches one controller by transport ID
//!   (PCIe, TCP, RDMA); [`SpdkDevice::probe_pcie`] attaches every local
//!   PCIe controller, or those on an allow-list.
//! * Each reactor opens its own I/O qpair ([`BlockDevice::open_queue`]) and
//!   polls its completions from its loop; there is no interrupt and no
//!   thread of SPDK's own.
//! * The buffer pool comes from SPDK's DMA memory
//!   ([`BlockDevice::pool_region`]), so the driver reads into and writes
//!   from pool buffers directly.
//! * Whichever reactor ticks first polls the admin queue (keep-alive,
//!   asynchronous events) from its housekeeping tick
//!   ([`DeviceQueue::tick`]): at most every [`ADMIN_POLL`], and at least
//!   every second, idle or not.
//! * A failed controller or a dropped qpair makes every request complete
//!   with [`DeviceError::Io`]: the engine drops those L2 copies and reads
//!   from the backing store. Meanwhile the queues free their qpairs, the
//!   controller is detached and connected again every [`RECONNECT_EVERY`]
//!   (without blocking a reactor); once it answers with the same
//!   namespace, the queues open new qpairs and L2 I/O resumes.
//! * Dropping the device (after its queues) detaches the controller.
//!
//! Files: `env` (start-up), `target` (transport IDs), `ctrlr` (attach and
//! reattach), `queue` (a reactor's qpair), `dma` (the pool's memory).

mod ctrlr;
mod dma;
mod env;
mod queue;
mod target;

pub use dma::dma_region;
pub use env::{env_started, init_env, SpdkEnvOptions};
pub use target::SpdkTarget;

use super::{check_depth, BlockDevice, DeviceError, DeviceInfo, DeviceQueue};
use crate::bufpool::Region;
use ctrlr::Ctrlr;
use env::require_env;
use queue::SpdkQueue;
use spdk_sys as sys;
use std::ffi::{c_void, CStr};
use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::Duration;
use target::parse_trid;

/// The most often the admin queue is polled (keep-alive, events).
pub const ADMIN_POLL: Duration = Duration::from_millis(10);
/// How often a failed controller is connected again, and a dropped qpair
/// opened again.
pub const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// An NVMe namespace reached through SPDK.
#[derive(Clone, Debug)]
pub struct SpdkDevice {
    c: Arc<Ctrlr>,
}

impl SpdkDevice {
    /// Connects the controller at `target` (PCIe, TCP or RDMA). The
    /// environment must be started ([`init_env`]).
    pub fn connect(target: &SpdkTarget) -> Result<SpdkDevice, DeviceError> {
        require_env()?;
        let trid = parse_trid(&target.trid)?;
        let mut opts = default_ctrlr_opts();
        if let Some(ms) = target.keep_alive_ms {
            opts.keep_alive_timeout_ms = ms;
        }
        // SAFETY: `trid` and `opts` are valid; connect blocks until the
        // controller is attached or fails, and copies both.
        let ctrlr = unsafe { sys::spdk_nvme_connect(&trid, &opts, std::mem::size_of_val(&opts)) };
        if ctrlr.is_null() {
            return Err(DeviceError::Unreachable {
                device: format!("spdk:{}", target.trid),
                reason: "the controller could not be connected (is the target up and listening there? SpdkEnvOptions::log_level shows SPDK's own lines)".into(),
            });
        }
        Ok(SpdkDevice {
            c: Arc::new(Ctrlr::attach(
                ctrlr,
                target.nsid,
                opts,
                target.trid.clone(),
            )?),
        })
    }

    /// Attaches every local PCIe NVMe controller bound to a userspace
    /// driver, or only those whose address is in `allow` when it is not
    /// empty. Each device uses its controller's first active namespace.
    pub fn probe_pcie(allow: &[String]) -> Result<Vec<SpdkDevice>, DeviceError> {
        require_env()?;
        let trid = parse_trid("trtype:PCIe")?;
        struct Probe {
            allow: Vec<String>,
            found: Vec<*mut sys::spdk_nvme_ctrlr>,
        }
        unsafe extern "C" fn probe_cb(
            ctx: *mut c_void,
            trid: *const sys::spdk_nvme_transport_id,
            _opts: *mut sys::spdk_nvme_ctrlr_opts,
        ) -> bool {
            // SAFETY: `ctx` is the `Probe` passed to spdk_nvme_probe below,
            // alive for the call; `trid` is valid during the callback.
            let (p, trid) = unsafe { (&*(ctx as *const Probe), &*trid) };
            // SAFETY: traddr is NUL-terminated (see trid_string).
            let addr = unsafe { CStr::from_ptr(trid.traddr.as_ptr()) }.to_string_lossy();
            p.allow.is_empty() || p.allow.iter().any(|a| a.eq_ignore_ascii_case(&addr))
        }
        unsafe extern "C" fn attach_cb(
            ctx: *mut c_void,
            _trid: *const sys::spdk_nvme_transport_id,
            ctrlr: *mut sys::spdk_nvme_ctrlr,
            _opts: *const sys::spdk_nvme_ctrlr_opts,
        ) {
            // SAFETY: as in probe_cb; the probe runs on this thread only.
            let p = unsafe { &mut *(ctx as *mut Probe) };
            p.found.push(ctrlr);
        }
        let mut p = Probe {
            allow: allow.to_vec(),
            found: Vec::new(),
        };
        // SAFETY: `p` outlives the synchronous probe, which calls the
        // callbacks on this thread before returning.
        let rc = unsafe {
            sys::spdk_nvme_probe(
                &trid,
                (&mut p as *mut Probe).cast(),
                Some(probe_cb),
                Some(attach_cb),
                None,
            )
        };
        if rc != 0 {
            for c in p.found {
                // SAFETY: attached by this probe and not yet shared.
                unsafe { sys::spdk_nvme_detach(c) };
            }
            return Err(DeviceError::Unreachable {
                device: "spdk:trtype:PCIe".into(),
                reason: format!(
                    "the PCIe probe failed ({rc}); bind the devices with env/setup.sh config"
                ),
            });
        }
        let opts = default_ctrlr_opts();
        p.found
            .into_iter()
            .map(|c| {
                Ok(SpdkDevice {
                    c: Arc::new(Ctrlr::attach(c, None, opts, "PCIe controller".into())?),
                })
            })
            .collect()
    }

    /// True while the controller is failed (its I/O then fails at once),
    /// until it is reattached.
    pub fn failed(&self) -> bool {
        self.c.failed.load(Acquire)
    }

    /// Times the controller was reattached after a failure.
    pub fn reattaches(&self) -> u64 {
        self.c.admin.lock().map(|s| s.reattaches).unwrap_or(0)
    }
}

/// SPDK's default controller options.
fn default_ctrlr_opts() -> sys::spdk_nvme_ctrlr_opts {
    let mut opts = sys::spdk_nvme_ctrlr_opts::default();
    let size = std::mem::size_of::<sys::spdk_nvme_ctrlr_opts>();
    // SAFETY: `opts` is valid for `size` bytes.
    unsafe { sys::spdk_nvme_ctrlr_get_default_ctrlr_opts(&mut opts, size) };
    opts
}

impl BlockDevice for SpdkDevice {
    fn info(&self) -> DeviceInfo {
        self.c.info.clone()
    }

    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        check_depth(depth)?;
        Ok(Box::new(SpdkQueue::open(self.c.clone(), depth)?))
    }

    fn pool_region(&self, len: usize) -> Option<std::io::Result<Region>> {
        Some(dma_region(len))
    }
}
