//! SPDK for the harness (feature `spdk`): `--l2 spdk:…` devices and `spdk_nvme_perf`.

use crate::cli::{spdk_core_mask, ArgError};
use crate::procfs::free_hugepages_mb;
use crate::units::{parse_size, UnitError};
use polarc::device::spdk::{init_env, SpdkDevice, SpdkEnvOptions, SpdkTarget};
use polarc::device::{BlockDevice, DeviceError};
use polarc::testing::nvmf_target::NvmfTarget;
use std::path::PathBuf;

/// An SPDK device that `spdk:…` named.
#[derive(Debug)]
pub struct SpdkL2 {
    /// The namespace.
    pub device: SpdkDevice,
    /// Its transport ID, for `--spdk-perf-compare`.
    pub trid: String,
    /// The local target serving it (`spdk:nvmf:`); it must outlive the
    /// device.
    pub target: Option<NvmfTarget>,
    /// What SPDK's environment fell back to, if anything.
    pub note: Option<String>,
}

/// SPDK could not open a device or run `spdk_nvme_perf`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpdkError {
    /// The size of `spdk:nvmf:SIZE` does not parse.
    #[error(transparent)]
    Size(#[from] UnitError),
    /// An option SPDK cannot take (a core beyond its core mask).
    #[error(transparent)]
    Args(#[from] ArgError),
    /// SPDK's environment, a transport ID or a controller failed.
    #[error(transparent)]
    Driver(#[from] DeviceError),
    /// The local `nvmf_tgt` did not start.
    #[error("{0}")]
    Target(Box<dyn std::error::Error + Send + Sync>),
    /// `spdk:pcie` found no controller.
    #[error(
        "no PCIe NVMe controller is bound to a userspace driver \
         (run env/setup.sh config, then env/setup.sh status)"
    )]
    NoPcie,
    /// `spdk_nvme_perf` is not installed.
    #[error("spdk_nvme_perf not found (set SPDK_DIR)")]
    NoNvmePerf,
    /// `spdk_nvme_perf` could not be started.
    #[error("{}: {source}", .bin.display())]
    RunNvmePerf {
        /// The program.
        bin: PathBuf,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// `spdk_nvme_perf` failed or printed no total.
    #[error("spdk_nvme_perf failed ({status}): {output}")]
    NvmePerf {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
}

/// Opens `spdk:REST` for reactors on `cores`, with `dma_mb` MiB of DMA
/// memory:
///
/// * `0000:01:00.0`: a local PCIe controller (bound with
///   `env/setup.sh config`);
/// * `pcie`: every local PCIe controller bound to a userspace driver;
/// * `'trtype:TCP adrfam:IPv4 traddr:… trsvcid:… subnqn:…'`: any
///   transport ID (PCIe, TCP, RDMA), optionally with `ns:N`;
/// * `nvmf:SIZE`: starts SPDK's `nvmf_tgt` here with a malloc bdev of SIZE
///   and connects to it over NVMe/TCP on 127.0.0.1 (no NVMe hardware
///   needed; the target gets a core the reactors do not use).
pub fn open(rest: &str, cores: &[usize], dma_mb: u32) -> Result<Vec<SpdkL2>, SpdkError> {
    let note = start_env(cores, dma_mb)?;
    let one = |device: SpdkDevice, trid: String, target: Option<NvmfTarget>| SpdkL2 {
        device,
        trid,
        target,
        note: note.clone(),
    };
    if let Some(size) = rest.strip_prefix("nvmf:") {
        let size = parse_size(size)?;
        let core = target_core(cores);
        if cores.contains(&core) {
            eprintln!(
                "warning: nvmf_tgt busy-polls core {core}, which a reactor also uses: \
                 that reactor will be slow (leave a core free, e.g. --reactors {})",
                cores.len().saturating_sub(1).max(1)
            );
        }
        let t = NvmfTarget::start(size.div_ceil(1 << 20), 512, core)
            .map_err(|e| SpdkError::Target(e.into()))?;
        let trid = t.trid();
        let dev = SpdkDevice::connect(&SpdkTarget::parse(&trid)?)?;
        println!(
            "started nvmf_tgt on core {core}, port {} ({} MiB malloc bdev)",
            t.port,
            size >> 20
        );
        return Ok(vec![one(dev, trid, Some(t))]);
    }
    if rest == "pcie" || rest.starts_with("pcie:") {
        let allow: Vec<String> = rest
            .strip_prefix("pcie:")
            .map(|l| l.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let devs = SpdkDevice::probe_pcie(&allow)?;
        if devs.is_empty() {
            return Err(SpdkError::NoPcie);
        }
        return Ok(devs
            .into_iter()
            .map(|d| {
                let name = d.info().name;
                one(d, name, None)
            })
            .collect());
    }
    let target = SpdkTarget::parse(rest)?;
    let dev = SpdkDevice::connect(&target)?;
    Ok(vec![one(dev, target.trid, None)])
}

/// A core for a local target: the last one the reactors do not use, else 0.
fn target_core(reactor_cores: &[usize]) -> usize {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n)
        .rev()
        .find(|c| !reactor_cores.contains(c))
        .unwrap_or(0)
}

/// How much of SPDK's own log to show: `POLARC_SPDK_LOG` (off, error,
/// warn, info, debug, trace; default off: failures reach the user as one
/// error line each). The lines go through the harness's log, so
/// `RUST_LOG` must let them through too (it shows warnings by default).
fn spdk_log_level() -> log::LevelFilter {
    std::env::var("POLARC_SPDK_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Off)
}

/// Starts SPDK's environment (once, with the first device): hugepages when
/// enough are free, else normal pages (`--no-huge`); returns the fallback
/// note, if any, which the run prints.
fn start_env(cores: &[usize], dma_mb: u32) -> Result<Option<String>, SpdkError> {
    let free = free_hugepages_mb();
    let no_huge = free < u64::from(dma_mb);
    init_env(&SpdkEnvOptions {
        name: "polarc-perf".into(),
        cores: cores.to_vec(),
        mem_size_mb: Some(dma_mb),
        no_huge,
        no_pci: false,
        log_level: spdk_log_level(),
    })?;
    Ok(no_huge.then(|| {
        format!(
            "SPDK on normal pages ({dma_mb} MiB; {free} MiB of hugepages free; see env/setup.sh)"
        )
    }))
}

/// Runs SPDK's `spdk_nvme_perf`, 4 KiB random reads for 10 s at queue
/// depth `depth` on `core` (below 128: its core mask), against `trid`;
/// returns its IOPS.
pub fn nvme_perf(trid: &str, depth: usize, core: usize) -> Result<f64, SpdkError> {
    let mask = spdk_core_mask(core)?;
    let bin =
        polarc::testing::nvmf_target::spdk_bin("spdk_nvme_perf").ok_or(SpdkError::NoNvmePerf)?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.args([
        "-q",
        &depth.to_string(),
        "-o",
        "4096",
        "-w",
        "randread",
        "-t",
        "10",
    ])
    .args(["-c", &mask])
    .args(["-r", trid]);
    if free_hugepages_mb() < 1024 {
        cmd.args(["--no-huge", "-s", "1024"]);
    }
    if let Some(lib) = option_env!("POLARC_SPDK_LIBDIR") {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(source) => return Err(SpdkError::RunNvmePerf { bin, source }),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("Total"))
        .and_then(|l| {
            l.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        });
    match (out.status.success(), total) {
        (true, Some(iops)) => Ok(iops),
        _ => Err(SpdkError::NvmePerf {
            status: out.status,
            output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        }),
    }
}
