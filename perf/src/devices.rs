//! `--l2` device specs: `none`, `mem:SIZE`, `file:PATH[:SIZE]`,
//! `uring:/dev/XXX`, and with the `spdk` feature `spdk:…` (see
//! [`crate::spdk`]).

use crate::units::parse_size;
use polarc::device::mem::MemDevice;
use polarc::device::uring::{UringDevice, UringOptions};
use polarc::device::BlockDevice;
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

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("device", &self.device.info())
            .field("note", &self.note)
            .finish()
    }
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
pub fn open(spec: &str, o: &OpenOptions) -> Result<Vec<Opened>, String> {
    let bad = |why: &str| format!("--l2 {spec}: {why}");
    if spec == "none" {
        return Ok(Vec::new());
    }
    let direct = o.direct;
    let (kind, rest) = spec.split_once(':').ok_or_else(|| {
        bad("expected none, mem:SIZE, file:PATH[:SIZE], uring:/dev/DEVICE or spdk:TARGET")
    })?;
    let uring = |path: &str, size: Option<u64>| -> Result<Opened, String> {
        let opts = UringOptions {
            direct,
            size,
            ..UringOptions::default()
        };
        let d = UringDevice::open(Path::new(path), opts).map_err(|e| bad(&e.to_string()))?;
        let note = (direct && !d.direct())
            .then(|| format!("{path}: buffered I/O (the filesystem refused O_DIRECT)"));
        Ok(Opened {
            device: Arc::new(d),
            note,
            trid: None,
            guard: None,
        })
    };
    match kind {
        "mem" => {
            let size = parse_size(rest).map_err(|e| bad(&e.to_string()))?;
            let d = MemDevice::new(size, 512).map_err(|e| bad(&e.to_string()))?;
            Ok(vec![Opened {
                device: Arc::new(d),
                note: None,
                trid: None,
                guard: None,
            }])
        }
        "file" => {
            let (path, size) = file_spec(rest);
            if size.is_none() && !Path::new(path).exists() {
                return Err(bad(
                    "the file does not exist; give a size, e.g. file:/tmp/l2.img:2GiB",
                ));
            }
            uring(path, size).map(|d| vec![d])
        }
        "uring" => uring(rest, None).map(|d| vec![d]),
        #[cfg(feature = "spdk")]
        "spdk" => crate::spdk::open(rest, o).map_err(|e| bad(&e)),
        #[cfg(not(feature = "spdk"))]
        "spdk" => Err(bad("unsupported: this polarc-perf was built without SPDK \
             (build it with --features spdk and SPDK_DIR set; see docs/spdk.md)")),
        _ => Err(bad(
            "unknown device kind; expected none, mem, file, uring or spdk",
        )),
    }
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
        let err = |s: &str| open(s, &o).err().unwrap();
        assert!(err("mem:lots").contains("--l2 mem:lots"));
        assert!(err("disk:/x").contains("unknown device kind"));
        assert!(err("file:/nonexistent/x.img").contains("does not exist"));
        #[cfg(not(feature = "spdk"))]
        assert!(err("spdk:0000:01:00.0").contains("unsupported"));
        assert!(err("bogus").contains("expected none"));
    }
}
