//! `--l2 spdk:…` (feature `spdk`): NVMe through SPDK's userspace driver.
//!
//! * `spdk:0000:01:00.0`: a local PCIe controller (bound with
//!   `env/setup.sh config`);
//! * `spdk:pcie`: every local PCIe controller bound to a userspace driver;
//! * `spdk:'trtype:TCP adrfam:IPv4 traddr:… trsvcid:… subnqn:…'`: any
//!   transport ID (PCIe, TCP, RDMA), optionally with `ns:N`;
//! * `spdk:nvmf:SIZE`: starts SPDK's `nvmf_tgt` here with a malloc bdev
//!   of SIZE and connects to it over NVMe/TCP on 127.0.0.1 (no NVMe
//!   hardware needed; the target gets a core the reactors do not use).
//!
//! SPDK's environment starts with the first such device: hugepages when
//! enough are free, else normal pages (`--no-huge`), which the run's
//! fallback note says.

use crate::devices::{OpenOptions, Opened};
use crate::procfs::free_hugepages_mb;
use crate::units::parse_size;
use polarc::device::spdk::{init_env, SpdkDevice, SpdkEnvOptions, SpdkTarget};
use polarc::device::spdk_target::NvmfTarget;
use polarc::device::BlockDevice;
use std::sync::Arc;

/// Opens `spdk:REST`.
pub fn open(rest: &str, o: &OpenOptions) -> Result<Vec<Opened>, String> {
    let note = start_env(o)?;
    let one =
        |dev: SpdkDevice, trid: String, guard: Option<Box<dyn std::any::Any + Send>>| Opened {
            device: Arc::new(dev) as Arc<dyn BlockDevice>,
            note: note.clone(),
            trid: Some(trid),
            guard,
        };
    if let Some(size) = rest.strip_prefix("nvmf:") {
        let size = parse_size(size).map_err(|e| e.to_string())?;
        let core = target_core(&o.cores);
        if o.cores.contains(&core) {
            eprintln!(
                "warning: nvmf_tgt busy-polls core {core}, which a reactor also uses: \
                 that reactor will be slow (leave a core free, e.g. --reactors {})",
                o.cores.len().saturating_sub(1).max(1)
            );
        }
        let t = NvmfTarget::start(size.div_ceil(1 << 20), 512, core)?;
        let trid = t.trid();
        let dev = connect(&trid)?;
        println!(
            "started nvmf_tgt on core {core}, port {} ({} MiB malloc bdev)",
            t.port,
            size >> 20
        );
        return Ok(vec![one(dev, trid, Some(Box::new(t)))]);
    }
    if rest == "pcie" || rest.starts_with("pcie:") {
        let allow: Vec<String> = rest
            .strip_prefix("pcie:")
            .map(|l| l.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let devs = SpdkDevice::probe_pcie(&allow).map_err(|e| e.to_string())?;
        if devs.is_empty() {
            return Err("no PCIe NVMe controller is bound to a userspace driver \
                        (run env/setup.sh config, then env/setup.sh status)"
                .into());
        }
        return Ok(devs
            .into_iter()
            .map(|d| {
                let name = d.info().name;
                one(d, name, None)
            })
            .collect());
    }
    let target = SpdkTarget::parse(rest).map_err(|e| e.to_string())?;
    let dev = connect_target(&target)?;
    Ok(vec![one(dev, target.trid, None)])
}

fn connect(trid: &str) -> Result<SpdkDevice, String> {
    connect_target(&SpdkTarget::parse(trid).map_err(|e| e.to_string())?)
}

fn connect_target(t: &SpdkTarget) -> Result<SpdkDevice, String> {
    SpdkDevice::connect(t).map_err(|e| e.to_string())
}

/// A core for a local target: the last one the reactors do not use, else 0.
fn target_core(reactor_cores: &[usize]) -> usize {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n)
        .rev()
        .find(|c| !reactor_cores.contains(c))
        .unwrap_or(0)
}

/// Starts SPDK's environment (once); returns the fallback note, if any.
fn start_env(o: &OpenOptions) -> Result<Option<String>, String> {
    let free = free_hugepages_mb();
    let no_huge = free < u64::from(o.dma_mb);
    init_env(&SpdkEnvOptions {
        name: "polarc-perf".into(),
        cores: o.cores.clone(),
        mem_size_mb: Some(o.dma_mb),
        no_huge,
        no_pci: false,
    })
    .map_err(|e| e.to_string())?;
    Ok(no_huge.then(|| {
        format!(
            "SPDK on normal pages ({} MiB; {free} MiB of hugepages free; see env/setup.sh)",
            o.dma_mb
        )
    }))
}

/// Runs SPDK's `spdk_nvme_perf`, 4 KiB random reads for 10 s at queue
/// depth `depth` on `core`, against `trid`; returns its IOPS.
pub fn nvme_perf(trid: &str, depth: usize, core: usize) -> Result<f64, String> {
    let bin = polarc::device::spdk_target::spdk_bin("spdk_nvme_perf")
        .ok_or("spdk_nvme_perf not found (set SPDK_DIR)")?;
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
    .args(["-c", &format!("0x{:x}", 1u128 << core)])
    .args(["-r", trid]);
    if free_hugepages_mb() < 1024 {
        cmd.args(["--no-huge", "-s", "1024"]);
    }
    if let Some(lib) = option_env!("POLARC_SPDK_LIBDIR") {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
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
        _ => Err(format!(
            "spdk_nvme_perf failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
