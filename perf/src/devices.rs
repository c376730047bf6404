//! `--l2` device specs and opening them: `none`, `mem:`, `file:`, `uring:`, `spdk:`.

use crate::units::{parse_size, UnitError};
use polarc::device::mem::MemDevice;
use polarc::device::uring::{UringDevice, UringOptions};
use polarc::device::{BlockDevice, DeviceError};
use std::path::Path;
use std::sync::Arc;

/// An opened L2 device, and a note when it fell back to something.
pub struct Opened {
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    /// What it fell back to, if anything (e.g. buffered I/O).
    pub note: Option<String>,
    /// SPDK's transport ID of the device, for `--spdk-perf-compare`.
    pub trid: Option<String>,
    /// What must live as long as the device (a local NVMe-oF target).
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

impl Opened {
    fn new(device: impl BlockDevice + 'static) -> Opened {
        Opened {
            device: Arc::new(device),
            note: None,
            trid: None,
            guard: None,
        }
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("device", &self.device.info())
            .field("note", &self.note)
            .finish()
    }
}

/// How devices are opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// `O_DIRECT` for io_uring devices.
    pub direct: bool,
    /// The reactors' cores (SPDK's core mask).
    pub cores: Vec<usize>,
    /// DMA memory SPDK must provide, in MiB (the buffer pool and more).
    pub dma_mb: u32,
}

impl OpenOptions {
    /// Options for io_uring-only use (no SPDK).
    pub fn direct(direct: bool) -> OpenOptions {
        OpenOptions {
            direct,
            cores: vec![0],
            dma_mb: 1024,
        }
    }
}

/// A `--l2` spec that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("--l2 {spec}: {source}")]
pub struct OpenError {
    /// The spec.
    pub spec: String,
    /// What is wrong with it.
    pub source: SpecError,
}

/// What is wrong with a `--l2` spec, or the device it names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Not `KIND:…`.
    #[error("expected none, mem:SIZE, file:PATH[:SIZE], uring:/dev/DEVICE or spdk:TARGET")]
    Syntax,
    /// A kind this harness does not know.
    #[error("unknown device kind; expected none, mem, file, uring or spdk")]
    UnknownKind,
    /// A size that does not parse.
    #[error(transparent)]
    Size(#[from] UnitError),
    /// A `file:` spec without a size, for a file that does not exist.
    #[error("the file does not exist; give a size, e.g. file:/tmp/l2.img:2GiB")]
    NoFile,
    /// The engine could not open the device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// `spdk:` in a build without SPDK.
    #[error(
        "unsupported: this polarc-perf was built without SPDK \
         (build it with --features spdk and SPDK_DIR set; see docs/spdk.md)"
    )]
    NoSpdk,
    /// SPDK could not open the device.
    #[cfg(feature = "spdk")]
    #[error(transparent)]
    Spdk(#[from] crate::spdk::SpdkError),
}

/// The `PATH[:SIZE]` of a `file:` spec: the size is whatever follows the
/// last colon, if it parses as a size; otherwise the colon is part of the
/// path.
pub fn file_spec(rest: &str) -> (&str, Option<u64>) {
    match rest.rsplit_once(':') {
        Some((p, s)) => match parse_size(s) {
            Ok(size) => (p, Some(size)),
            Err(_) => (rest, None),
        },
        None => (rest, None),
    }
}

/// Opens the devices `spec` names: none for `none`, several for
/// `spdk:pcie`, else one.
pub fn open(spec: &str, o: &OpenOptions) -> Result<Vec<Opened>, OpenError> {
    open_spec(spec, o).map_err(|source| OpenError {
        spec: spec.into(),
        source,
    })
}

fn open_spec(spec: &str, o: &OpenOptions) -> Result<Vec<Opened>, SpecError> {
    if spec == "none" {
        return Ok(Vec::new());
    }
    let (kind, rest) = spec.split_once(':').ok_or(SpecError::Syntax)?;
    match kind {
        "mem" => Ok(vec![Opened::new(MemDevice::new(parse_size(rest)?, 512)?)]),
        "file" => {
            let (path, size) = file_spec(rest);
            if size.is_none() && !Path::new(path).exists() {
                return Err(SpecError::NoFile);
            }
            Ok(vec![uring(path, size, o.direct)?])
        }
        "uring" => Ok(vec![uring(rest, None, o.direct)?]),
        #[cfg(feature = "spdk")]
        "spdk" => Ok(crate::spdk::open(rest, &o.cores, o.dma_mb)?
            .into_iter()
            .map(|d| Opened {
                device: Arc::new(d.device),
                note: d.note,
                trid: Some(d.trid),
                guard: d
                    .target
                    .map(|t| Box::new(t) as Box<dyn std::any::Any + Send>),
            })
            .collect()),
        #[cfg(not(feature = "spdk"))]
        "spdk" => Err(SpecError::NoSpdk),
        _ => Err(SpecError::UnknownKind),
    }
}

/// An io_uring device on `path`; notes when the filesystem refused
/// O_DIRECT.
fn uring(path: &str, size: Option<u64>, direct: bool) -> Result<Opened, DeviceError> {
    let opts = UringOptions {
        direct,
        size,
        ..UringOptions::default()
    };
    let d = UringDevice::open(Path::new(path), opts)?;
    let note = (direct && !d.direct())
        .then(|| format!("{path}: buffered I/O (the filesystem refused O_DIRECT)"));
    Ok(Opened {
        note,
        ..Opened::new(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_open_or_name_the_problem() {
        let o = OpenOptions::direct(true);
        assert!(open("none", &o).unwrap().is_empty());
        let m = open("mem:16MiB", &o).unwrap().pop().unwrap();
        assert_eq!(m.device.info().capacity, 16 << 20);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l2.img");
        let f = open(&format!("file:{}:8MiB", p.display()), &o)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(f.device.info().capacity, 8 << 20);
        let err = |s: &str| open(s, &o).err().unwrap().to_string();
        assert!(err("mem:lots").contains("--l2 mem:lots"));
        assert!(err("disk:/x").contains("unknown device kind"));
        assert!(err("file:/nonexistent/x.img").contains("does not exist"));
        #[cfg(not(feature = "spdk"))]
        assert!(err("spdk:0000:01:00.0").contains("unsupported"));
        assert!(err("bogus").contains("expected none"));
    }
}
