//! SPDK's environment: started once per process, with the reactors' cores.

use crate::device::DeviceError;
use spdk_sys as sys;
use std::ffi::CString;
use std::sync::OnceLock;

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
    /// SPDK's own log lines go to this crate's log (target `spdk`) up to
    /// this level; the rest are dropped. Default: `Off`: every failure
    /// polarc sees reaches the caller as one error, and SPDK's lines
    /// (eight for a refused connection) are detail to ask for.
    pub log_level: log::LevelFilter,
}

impl Default for SpdkEnvOptions {
    fn default() -> Self {
        SpdkEnvOptions {
            name: "polarc".into(),
            cores: vec![0],
            mem_size_mb: None,
            no_huge: false,
            no_pci: false,
            log_level: log::LevelFilter::Off,
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

/// Refuses to go on before [`init_env`].
pub(super) fn require_env() -> Result<(), DeviceError> {
    if env_started() {
        Ok(())
    } else {
        Err(DeviceError::Invalid {
            device: "spdk".into(),
            reason: "the SPDK environment is not started (call device::spdk::init_env first)"
                .into(),
        })
    }
}

/// Whether the environment runs on hugepages.
pub(super) fn env_hugepages() -> bool {
    matches!(ENV.get(), Some(Ok(o)) if !o.no_huge)
}

/// The level SPDK's lines are kept up to, as a `log::LevelFilter`.
static SPDK_LOG_LEVEL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// SPDK's log callback: formats the line and hands it to `log`.
unsafe extern "C" fn forward_log(
    level: std::ffi::c_int,
    _file: *const std::ffi::c_char,
    _line: std::ffi::c_int,
    func: *const std::ffi::c_char,
    format: *const std::ffi::c_char,
    args: *mut sys::__va_list_tag,
) {
    let level = match level {
        sys::SPDK_LOG_ERROR => log::Level::Error,
        sys::SPDK_LOG_WARN => log::Level::Warn,
        sys::SPDK_LOG_NOTICE => log::Level::Info,
        sys::SPDK_LOG_INFO => log::Level::Debug,
        _ => log::Level::Trace,
    };
    let keep = SPDK_LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed);
    if level as usize > keep || format.is_null() {
        return;
    }
    let mut buf = [0 as std::ffi::c_char; 512];
    // SAFETY: `format` and `args` are the printf-style format and the
    // va_list SPDK passes for this one call; vsnprintf writes at most
    // `buf.len()` bytes, NUL included.
    let n = unsafe { sys::vsnprintf(buf.as_mut_ptr(), buf.len() as _, format, args) };
    if n < 0 {
        return;
    }
    // SAFETY: vsnprintf NUL-terminated `buf`.
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let func = if func.is_null() {
        std::borrow::Cow::Borrowed("?")
    } else {
        // SAFETY: SPDK passes its __func__, a NUL-terminated literal.
        unsafe { std::ffi::CStr::from_ptr(func) }.to_string_lossy()
    };
    log::log!(target: "spdk", level, "{func}: {}", text.trim_end());
}

fn start_env(opts: &SpdkEnvOptions) -> Result<SpdkEnvOptions, String> {
    SPDK_LOG_LEVEL.store(
        opts.log_level as usize,
        std::sync::atomic::Ordering::Relaxed,
    );
    // SAFETY: `forward_log` has the callback's signature and stays valid
    // for the life of the process.
    unsafe { sys::spdk_log_open(Some(forward_log)) };
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
