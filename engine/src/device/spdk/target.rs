//! Where an SPDK device is: transport IDs and PCI addresses.

use crate::device::DeviceError;
use spdk_sys as sys;
use std::ffi::{CStr, CString};

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

pub(super) fn parse_trid(s: &str) -> Result<sys::spdk_nvme_transport_id, DeviceError> {
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

pub(super) fn trid_string(trid: &sys::spdk_nvme_transport_id) -> String {
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
