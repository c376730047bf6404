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

use super::{
    check, check_depth, into_buf, BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue,
    IoBuf, IoOp,
};
use crate::bufpool::{BufPool, Region};
use spdk_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The most often the admin queue is polled (keep-alive, events).
pub const ADMIN_POLL: Duration = Duration::from_millis(10);
/// How often a failed controller is connected again, and a dropped qpair
/// opened again.
pub const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// How SPDK's environment is started. One per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpdkEnvOptions {
    /// Process name for SPDK's logs and shared files.
    pub name: String,
    /// The cores the reactors run on; the first is SPDK's main core.
    pub cores: Vec<usize>,
    /// Memory for DMA buffers, in MiB. Required with `no_huge`; with
    /// hugepages, `None` takes what is reserved.
    pub mem_size_mb: Option<u32>,
    /// Use normal pages instead of hugepages (any NVMe-oF transport works;
    /// a local PCIe device needs an IOMMU).
    pub no_huge: bool,
    /// Do not scan the PCI bus (fabrics only).
    pub no_pci: bool,
}

impl Default for SpdkEnvOptions {
    fn default() -> Self {
        SpdkEnvOptions {
            name: "polarc".into(),
            cores: vec![0],
            mem_size_mb: None,
            no_huge: false,
            no_pci: false,
        }
    }
}

impl SpdkEnvOptions {
    /// The hexadecimal core mask SPDK takes.
    pub fn core_mask(&self) -> Result<String, DeviceError> {
        let mut mask: u128 = 0;
        for &c in &self.cores {
            if c >= 128 {
                return Err(DeviceError::Unsupported(format!(
                    "SPDK core {c}: masks above 128 cores are not supported"
                )));
            }
            mask |= 1 << c;
        }
        if mask == 0 {
            return Err(DeviceError::Unsupported(
                "SPDK needs at least one core".into(),
            ));
        }
        Ok(format!("0x{mask:x}"))
    }
}

static ENV: OnceLock<Result<SpdkEnvOptions, String>> = OnceLock::new();

/// Starts SPDK's environment with `opts`, once per process. A later call
/// returns the first result; it is an error only if that start failed.
/// The calling thread's CPU affinity is kept (DPDK would pin it to the
/// main core).
pub fn init_env(opts: &SpdkEnvOptions) -> Result<(), DeviceError> {
    let r = ENV.get_or_init(|| start_env(opts));
    match r {
        Ok(first) => {
            if first != opts {
                log::info!("SPDK environment already started with {first:?}; keeping it");
            }
            Ok(())
        }
        Err(e) => Err(DeviceError::Unsupported(e.clone())),
    }
}

/// Whether the environment is up.
pub fn env_started() -> bool {
    matches!(ENV.get(), Some(Ok(_)))
}

fn start_env(opts: &SpdkEnvOptions) -> Result<SpdkEnvOptions, String> {
    if opts.no_huge && opts.mem_size_mb.is_none() {
        return Err("SPDK without hugepages needs a memory size".into());
    }
    let mask = opts.core_mask().map_err(|e| e.to_string())?;
    let name = CString::new(opts.name.clone()).map_err(|e| e.to_string())?;
    let mask_c = CString::new(mask.clone()).map_err(|e| e.to_string())?;
    let mut o = sys::spdk_env_opts {
        opts_size: std::mem::size_of::<sys::spdk_env_opts>(),
        ..Default::default()
    };
    // SAFETY: `o` is a valid spdk_env_opts with opts_size set, as the
    // function requires; it only writes defaults into it.
    unsafe { sys::spdk_env_opts_init(&mut o) };
    o.name = name.as_ptr();
    o.core_mask = mask_c.as_ptr();
    o.main_core = opts.cores[0] as i32;
    o.no_huge = opts.no_huge;
    o.no_pci = opts.no_pci;
    if let Some(mb) = opts.mem_size_mb {
        o.mem_size = mb as i32;
    }
    let saved = affinity_of_this_thread();
    // SAFETY: `o` and the strings it points to outlive the call; SPDK
    // copies what it keeps. Called once per process (OnceLock).
    let rc = unsafe { sys::spdk_env_init(&o) };
    if let Some(set) = saved {
        restore_affinity(&set);
    }
    if rc != 0 {
        return Err(format!(
            "spdk_env_init failed ({}) with core mask {mask}{}: {}",
            rc,
            if opts.no_huge {
                format!(", no hugepages, {} MiB", opts.mem_size_mb.unwrap_or(0))
            } else {
                ", hugepages (run env/setup.sh config, or use no-huge)".into()
            },
            std::io::Error::from_raw_os_error(-rc)
        ));
    }
    Ok(opts.clone())
}

fn affinity_of_this_thread() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

fn restore_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t read by sched_getaffinity.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
}

/// Where an SPDK device is: a transport ID, or a PCI address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpdkTarget {
    /// SPDK's transport ID string, e.g. `trtype:TCP adrfam:IPv4
    /// traddr:127.0.0.1 trsvcid:4420 subnqn:…`, or `trtype:PCIe
    /// traddr:0000:01:00.0`.
    pub trid: String,
    /// The namespace; `None` takes the first active one.
    pub nsid: Option<u32>,
    /// NVMe-oF keep-alive timeout; `None`: SPDK's default (10 s).
    pub keep_alive_ms: Option<u32>,
}

impl SpdkTarget {
    /// Parses `0000:01:00.0` (a PCIe address) or a transport ID string,
    /// which may carry `ns:N`.
    pub fn parse(s: &str) -> Result<SpdkTarget, DeviceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DeviceError::Unsupported(
                "empty SPDK target: give a PCI address or a transport ID".into(),
            ));
        }
        if is_pci_address(s) {
            return Ok(SpdkTarget {
                trid: format!("trtype:PCIe traddr:{s}"),
                nsid: None,
                keep_alive_ms: None,
            });
        }
        let mut nsid = None;
        let mut rest = Vec::new();
        for part in s.split_whitespace() {
            match part.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("ns") => {
                    nsid = Some(v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        DeviceError::Unsupported(format!("bad namespace {v:?} in SPDK target"))
                    })?);
                }
                Some(_) => rest.push(part),
                None => {
                    return Err(DeviceError::Unsupported(format!(
                        "bad SPDK target {s:?}: {part:?} is not key:value \
                         (want a PCI address like 0000:01:00.0 or a transport ID \
                         like 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:NQN')"
                    )))
                }
            }
        }
        if !rest
            .iter()
            .any(|p| p.to_ascii_lowercase().starts_with("trtype:"))
        {
            return Err(DeviceError::Unsupported(format!(
                "SPDK target {s:?} has no trtype (PCIe, TCP or RDMA)"
            )));
        }
        Ok(SpdkTarget {
            trid: rest.join(" "),
            nsid,
            keep_alive_ms: None,
        })
    }
}

/// `DDDD:BB:DD.F` or `BB:DD.F`.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    match devfn.split_once('.') {
        Some((dev, func)) => hex(bus, 2) && hex(dev, 2) && hex(func, 1),
        None => false,
    }
}

fn parse_trid(s: &str) -> Result<sys::spdk_nvme_transport_id, DeviceError> {
    let c = CString::new(s)
        .map_err(|_| DeviceError::Unsupported(format!("NUL in SPDK target {s:?}")))?;
    let mut trid = sys::spdk_nvme_transport_id::default();
    // SAFETY: `trid` is a valid, zeroed transport ID and `c` a
    // NUL-terminated string; the parser writes only into `trid`.
    let rc = unsafe { sys::spdk_nvme_transport_id_parse(&mut trid, c.as_ptr()) };
    if rc != 0 {
        return Err(DeviceError::Unsupported(format!(
            "SPDK could not parse the transport ID {s:?}"
        )));
    }
    Ok(trid)
}

fn trid_string(trid: &sys::spdk_nvme_transport_id) -> String {
    let field = |f: &[std::os::raw::c_char]| {
        // SAFETY: SPDK keeps these fields NUL-terminated within their
        // arrays (the parser and the driver both bound them).
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    let (tr, addr, svc) = (
        field(&trid.trstring),
        field(&trid.traddr),
        field(&trid.trsvcid),
    );
    if svc.is_empty() {
        format!("{tr}:{addr}")
    } else {
        format!("{tr}:{addr}:{svc}")
    }
}

/// One controller and the namespace used. While it works, `ctrlr` and `ns`
/// point at the attached controller. When it fails, every queue frees its
/// qpair, the controller is detached, and it is connected again (every
/// [`RECONNECT_EVERY`], without blocking) until the target answers; then
/// `generation` moves on and the queues open new qpairs.
#[derive(Debug)]
struct Ctrlr {
    ctrlr: AtomicPtr<sys::spdk_nvme_ctrlr>,
    ns: AtomicPtr<sys::spdk_nvme_ns>,
    /// Where to connect again, and how.
    trid: sys::spdk_nvme_transport_id,
    opts: sys::spdk_nvme_ctrlr_opts,
    nsid: u32,
    info: DeviceInfo,
    is_pcie: bool,
    /// Serialises admin polling and reattaching.
    admin: Mutex<Reattach>,
    /// Milliseconds since `start` of the last admin poll.
    last_admin_ms: AtomicU64,
    /// Set while the controller is failed or being reattached.
    failed: AtomicBool,
    /// Bumped by every reattach.
    generation: AtomicU64,
    /// Qpairs allocated on the current controller.
    live_qpairs: AtomicUsize,
    start: Instant,
}

/// A reattach in progress.
#[derive(Debug)]
struct Reattach {
    detach: *mut sys::spdk_nvme_detach_ctx,
    probe: *mut sys::spdk_nvme_probe_ctx,
    last_attempt: Option<Instant>,
    reattaches: u64,
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
    fn attach(
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
            start: Instant::now(),
        })
    }

    /// Polls the admin queue (keep-alive, events) at most every
    /// [`ADMIN_POLL`]; notes a failed controller and drives its reattach.
    fn maybe_poll_admin(&self, now: Instant) {
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
            return;
        }
        // SAFETY: every queue holds an Arc to this controller, so all
        // qpairs are freed by now; the handle is not used again.
        let rc = unsafe { sys::spdk_nvme_detach(ctrlr) };
        if rc != 0 {
            log::warn!("{}: detach returned {rc}", self.info.name);
        }
    }
}

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
            return Err(DeviceError::Unsupported(format!(
                "SPDK could not connect to {:?} (is the target up?)",
                target.trid
            )));
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
            return Err(DeviceError::Unsupported(format!(
                "SPDK PCIe probe failed ({rc}); run env/setup.sh config"
            )));
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

fn require_env() -> Result<(), DeviceError> {
    if env_started() {
        Ok(())
    } else {
        Err(DeviceError::Unsupported(
            "SPDK environment not started (call device::spdk::init_env first)".into(),
        ))
    }
}

impl BlockDevice for SpdkDevice {
    fn info(&self) -> DeviceInfo {
        self.c.info.clone()
    }

    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        check_depth(depth)?;
        let mut q = SpdkQueue {
            c: self.c.clone(),
            qpair: std::ptr::null_mut(),
            ns: std::ptr::null_mut(),
            generation: 0,
            depth,
            in_flight: 0,
            done: Box::default(),
            broken: false,
            last_open: None,
        };
        q.open_qpair()?;
        Ok(Box::new(q))
    }

    fn pool_region(&self, len: usize) -> Option<std::io::Result<Region>> {
        Some(dma_region(len))
    }
}

/// A region of SPDK DMA memory for the buffer pool, 2 MiB aligned.
pub fn dma_region(len: usize) -> std::io::Result<Region> {
    require_env().map_err(std::io::Error::other)?;
    let len = len.div_ceil(crate::bufpool::HUGEPAGE).max(1) * crate::bufpool::HUGEPAGE;
    // SAFETY: the environment is started; a failed allocation returns NULL.
    let p = unsafe {
        sys::spdk_zmalloc(
            len,
            crate::bufpool::HUGEPAGE,
            std::ptr::null_mut(),
            sys::SPDK_ENV_NUMA_ID_ANY,
            sys::SPDK_MALLOC_DMA,
        )
    };
    let Some(ptr) = std::ptr::NonNull::new(p.cast::<u8>()) else {
        return Err(std::io::Error::other(format!(
            "SPDK could not allocate {} MiB of DMA memory for the buffer pool \
             (reserve more hugepages, or raise the SPDK memory size)",
            len >> 20
        )));
    };
    let free = |p: std::ptr::NonNull<u8>, _len: usize| {
        // SAFETY: `p` came from spdk_zmalloc above and is freed once, when
        // the region (and so every buffer in it) is gone.
        unsafe { sys::spdk_free(p.as_ptr().cast()) }
    };
    let hugepages = matches!(ENV.get(), Some(Ok(o)) if !o.no_huge);
    // SAFETY: `ptr` is valid for `len` bytes, exclusively ours, until
    // `free` runs.
    Ok(unsafe { Region::from_raw(ptr, len, hugepages, Box::new(free)) })
}

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
    done: *mut Vec<Completion>,
    device: *const DeviceInfo,
}

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
    // SAFETY: `done` points into the queue's boxed vector, which lives as
    // long as the queue; callbacks run only inside its poll.
    unsafe {
        (*req.done).push(Completion {
            tag: req.tag,
            buf: req.buf,
            result,
        })
    };
}

/// One reactor's qpair.
struct SpdkQueue {
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
    /// Completions gathered by callbacks. Boxed on purpose: requests in
    /// flight point at it, so it must not move with the queue.
    #[allow(clippy::box_collection)]
    done: Box<Vec<Completion>>,
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
    /// complete those requests (with an error) into `done`.
    fn free_qpair(&mut self) {
        if self.qpair.is_null() {
            return;
        }
        // SAFETY: our qpair, used by this thread only; not used after.
        unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair) };
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
            self.done.push(Completion::failed(tag, op, e));
            return;
        }
        let offset = op.range().map_or(0, |r| r.0);
        self.maintain();
        if self.qpair.is_null() {
            let e = self.io_error(offset);
            self.done.push(Completion::failed(tag, op, e));
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
        };
        let req = Box::into_raw(Box::new(Req {
            tag,
            offset,
            buf: into_buf(op),
            done: &mut *self.done,
            device: &self.c.info,
        }));
        let (ns, qp, cb) = (self.ns, self.qpair, Some(on_complete as _));
        // SAFETY: `ptr` points into the request's buffer, owned by `req`
        // until its callback; the buffer holds `count` blocks (checked
        // above). `req` is handed to SPDK, which calls `on_complete` once.
        let rc = unsafe {
            match kind {
                Kind::Read => {
                    sys::spdk_nvme_ns_cmd_read(ns, qp, ptr, lba, count, cb, req.cast(), 0)
                }
                Kind::Write => {
                    sys::spdk_nvme_ns_cmd_write(ns, qp, ptr, lba, count, cb, req.cast(), 0)
                }
                Kind::Flush => sys::spdk_nvme_ns_cmd_flush(ns, qp, cb, req.cast()),
            }
        };
        if rc != 0 {
            // SAFETY: submission failed, so SPDK did not keep `req`.
            let req = unsafe { Box::from_raw(req) };
            self.done.push(Completion {
                tag: req.tag,
                buf: req.buf,
                result: Err(self.io_error(offset)),
            });
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        if self.in_flight > self.done.len() && !self.qpair.is_null() {
            // SAFETY: our qpair, polled by this thread only; callbacks
            // push into `self.done`.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair, 0) };
            if rc < 0 && !self.broken {
                // The connection dropped: SPDK aborts what was in flight
                // (their callbacks carry an error status).
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
        let n = self.done.len();
        self.in_flight -= n;
        out.append(&mut self.done);
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn tick(&mut self, now: Instant) {
        self.maintain();
        self.c.maybe_poll_admin(now);
    }

    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        let (base, len) = pool.region();
        let mut size = len as u64;
        // SAFETY: a lookup in SPDK's address map; it reads nothing at `base`.
        let phys = unsafe { sys::spdk_vtophys(base as *const c_void, &mut size) };
        let dma = phys != u64::MAX;
        if !dma && self.c.is_pcie {
            return Err(DeviceError::Unsupported(format!(
                "{}: the buffer pool is not SPDK DMA memory",
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
}

impl Drop for SpdkQueue {
    fn drop(&mut self) {
        // Wait (bounded) for requests in flight, so no callback outlives
        // the queue's completion vector.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.qpair.is_null() && self.in_flight > self.done.len() && Instant::now() < deadline
        {
            // SAFETY: our qpair; see poll.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair, 0) };
            if rc < 0 {
                break;
            }
        }
        // Freeing the qpair aborts what is still queued, calling their
        // callbacks now, while `self.done` is alive.
        self.free_qpair();
        self.done.clear();
    }
}
