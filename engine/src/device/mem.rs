//! A RAM device: for tests, and for measuring the engine without a device.
#![forbid(unsafe_code)]

use super::{
    check, check_depth, into_buf, BlockDevice, Completion, DeviceError, DeviceInfo, DeviceQueue,
    IoBuf, IoOp,
};
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

/// A device backed by memory. Every queue sees every other queue's
/// completed writes.
#[derive(Debug, Clone)]
pub struct MemDevice {
    info: DeviceInfo,
    data: Arc<RwLock<Vec<u8>>>,
}

impl MemDevice {
    /// A zeroed device of `capacity` bytes with `block_size`-byte blocks.
    pub fn new(capacity: u64, block_size: u32) -> Result<Self, DeviceError> {
        if !block_size.is_power_of_two() || block_size < 512 {
            return Err(DeviceError::Invalid {
                device: format!("mem:{capacity}"),
                reason: format!("block size {block_size}: must be a power of two >= 512"),
            });
        }
        if capacity == 0 || capacity % u64::from(block_size) != 0 {
            return Err(DeviceError::Invalid {
                device: format!("mem:{capacity}"),
                reason: format!(
                    "capacity {capacity}: must be a non-zero multiple of the block size {block_size}"
                ),
            });
        }
        let len = usize::try_from(capacity).map_err(|_| DeviceError::Invalid {
            device: format!("mem:{capacity}"),
            reason: "capacity too large for this machine's address space".into(),
        })?;
        Ok(MemDevice {
            info: DeviceInfo {
                name: format!("mem:{capacity}"),
                block_size,
                capacity,
            },
            data: Arc::new(RwLock::new(vec![0; len])),
        })
    }
}

impl MemDevice {
    /// A copy of the device's bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A device holding `image`, with `block_size`-byte blocks.
    pub fn from_image(image: Vec<u8>, block_size: u32) -> Result<Self, DeviceError> {
        let d = MemDevice::new(image.len() as u64, block_size)?;
        *d.data.write().unwrap_or_else(|e| e.into_inner()) = image;
        Ok(d)
    }
}

impl BlockDevice for MemDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }
    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        check_depth(depth)?;
        Ok(Box::new(MemQueue {
            dev: self.clone(),
            depth,
            done: VecDeque::new(),
        }))
    }
}

struct MemQueue {
    dev: MemDevice,
    depth: usize,
    done: VecDeque<Completion>,
}

impl DeviceQueue for MemQueue {
    fn submit(&mut self, tag: u64, op: IoOp) {
        let result = check(&self.dev.info, &op, self.done.len(), self.depth);
        let buf = match (result.is_ok(), op) {
            (
                true,
                IoOp::Read {
                    offset,
                    len,
                    mut buf,
                },
            ) => {
                let data = self.dev.data.read().unwrap_or_else(|e| e.into_inner());
                let (o, n) = (offset as usize, len as usize);
                buf.as_mut_slice()[..n].copy_from_slice(&data[o..o + n]);
                IoBuf::Read(buf)
            }
            (true, IoOp::Write { offset, buf }) => {
                let mut data = self.dev.data.write().unwrap_or_else(|e| e.into_inner());
                let o = offset as usize;
                data[o..o + buf.len()].copy_from_slice(&buf);
                IoBuf::Write(buf)
            }
            (true, IoOp::Discard { offset, len }) => {
                let mut data = self.dev.data.write().unwrap_or_else(|e| e.into_inner());
                data[offset as usize..(offset + len) as usize].fill(0);
                IoBuf::None
            }
            (_, op) => into_buf(op),
        };
        self.done.push_back(Completion { tag, buf, result });
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufpool::BufPool;

    #[test]
    fn passes_the_conformance_suite() {
        let pool = BufPool::new(16 << 20, 1 << 20, false).unwrap();
        let dev = MemDevice::new(8 << 20, 512).unwrap();
        crate::testing::conformance::run(&dev, &pool).unwrap();
        let dev4k = MemDevice::new(8 << 20, 4096).unwrap();
        crate::testing::conformance::run(&dev4k, &pool).unwrap();
        assert_eq!(pool.stats().outstanding, 0);
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert!(MemDevice::new(1000, 512)
            .unwrap_err()
            .to_string()
            .contains("multiple of the block size"));
        assert!(MemDevice::new(4096, 1000)
            .unwrap_err()
            .to_string()
            .contains("power of two"));
        assert!(MemDevice::new(4096, 512).unwrap().open_queue(0).is_err());
    }
}
