//! Block devices for the L2 tier.
//!
//! A [`BlockDevice`] says where bytes live; a [`DeviceQueue`] is how one
//! reactor issues I/O to it. Each reactor opens its own queue (an io_uring
//! ring, an SPDK qpair) and polls its completions from its loop; a queue is
//! used by one thread only.
//!
//! I/O moves owned pool buffers: a read takes a [`BufMut`] and gives it
//! back filled, a write takes a [`Buf`] and gives it back once the device
//! is done with it, which is what lets the L2 feeder return compressed
//! buffers only after their write completed (the seed's free-on-write).
//! Offsets and lengths must be multiples of the device's block size.
//!
//! Backends: [`mem`] (RAM), [`faulty`] (a decorator that injects errors,
//! torn writes, bit flips and latency), [`powercut`] (RAM with a volatile
//! write cache, and what a power cut does to it), [`uring`] (io_uring on a
//! file or block device) and, with the `spdk` feature, `spdk` (SPDK's NVMe
//! driver).

pub mod deadline;
pub mod faulty;
pub mod mem;
pub mod powercut;
#[cfg(feature = "spdk")]
pub mod spdk;
pub mod uring;

use crate::bufpool::{Buf, BufMut, BufPool, Region};

/// What a device is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Name for reports.
    pub name: String,
    /// Size of an addressable block; offsets and lengths are multiples of it.
    pub block_size: u32,
    /// Usable bytes.
    pub capacity: u64,
}

/// A device error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device reported an I/O error.
    #[error("I/O error on {device} at offset {offset}")]
    Io {
        /// Device name.
        device: String,
        /// Byte offset of the failed request.
        offset: u64,
    },
    /// Offset or length is not a multiple of the block size.
    #[error("misaligned I/O: offset {offset}, length {len}, block size {block_size}")]
    Misaligned {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The device's block size.
        block_size: u32,
    },
    /// The request extends past the device's end.
    #[error("I/O past the end: offset {offset} + length {len} > capacity {capacity}")]
    OutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Device capacity.
        capacity: u64,
    },
    /// The queue has as many requests in flight as its depth.
    #[error("queue full ({depth} in flight)")]
    QueueFull {
        /// Queue depth.
        depth: usize,
    },
    /// What polarc does not implement, or this machine does not offer
    /// (io_uring, an SPDK environment).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The device could not be reached: a file that cannot be opened, an
    /// NVMe-oF target that refuses the connection, no PCIe device bound.
    #[error("{device}: unreachable: {reason}")]
    Unreachable {
        /// Device name.
        device: String,
        /// What failed, and what to check.
        reason: String,
    },
    /// The device is in use by something else (mounted, held by a volume
    /// manager, opened by another program).
    #[error("{device}: in use: {reason}")]
    InUse {
        /// Device name.
        device: String,
        /// Who uses it, as far as known, and what to do.
        reason: String,
    },
    /// The device or a setting does not fit: too small, an empty device,
    /// a queue depth out of range.
    #[error("{device}: {reason}")]
    Invalid {
        /// Device name.
        device: String,
        /// What is wrong, and what would do.
        reason: String,
    },
    /// The device holds data polarc must not overwrite, or data it cannot
    /// read.
    #[error("{device}: refused: {reason}")]
    Refused {
        /// Device name.
        device: String,
        /// What is on it, and what to do.
        reason: String,
    },
    /// A request did not complete in time.
    #[error("{device}: {what} timed out after {after:?}")]
    TimedOut {
        /// Device name.
        device: String,
        /// The request.
        what: String,
        /// How long it was given.
        after: std::time::Duration,
    },
}

/// One I/O request. Buffers are owned by the request until it completes.
#[derive(Debug)]
pub enum IoOp {
    /// Read `len` bytes at `offset` into the start of `buf`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes to read.
        len: u64,
        /// Destination, at least `len` bytes.
        buf: BufMut,
    },
    /// Write all of `buf` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Source; its length must be a multiple of the block size.
        buf: Buf,
    },
    /// Make completed writes durable.
    Flush,
    /// The device may forget `len` bytes at `offset` (TRIM, deallocate,
    /// a hole punched in a file); reads of them may then return anything.
    /// A device that cannot completes it with [`DeviceError::Unsupported`].
    Discard {
        /// Byte offset, a multiple of the block size.
        offset: u64,
        /// Bytes, a multiple of the block size.
        len: u64,
    },
}

impl IoOp {
    /// (offset, length) of a read or write.
    pub fn range(&self) -> Option<(u64, u64)> {
        match self {
            IoOp::Read { offset, len, .. } => Some((*offset, *len)),
            IoOp::Write { offset, buf } => Some((*offset, buf.len() as u64)),
            IoOp::Discard { offset, len } => Some((*offset, *len)),
            IoOp::Flush => None,
        }
    }
}

/// The buffer a completed request gives back.
#[derive(Debug)]
pub enum IoBuf {
    /// A read's buffer, filled on success.
    Read(BufMut),
    /// A write's buffer, no longer used by the device.
    Write(Buf),
    /// A flush has no buffer.
    None,
    /// The request timed out (see [`deadline`]): the device may still
    /// use its buffer, which is held until it really completes.
    Held,
}

/// A completed request.
#[derive(Debug)]
pub struct Completion {
    /// The tag given at submission.
    pub tag: u64,
    /// The request's buffer, handed back whatever the result.
    pub buf: IoBuf,
    /// Success, or what failed.
    pub result: Result<(), DeviceError>,
}

impl Completion {
    /// A request that failed without reaching the device: its buffer goes
    /// back with the error.
    pub fn failed(tag: u64, op: IoOp, error: DeviceError) -> Self {
        Completion {
            tag,
            buf: into_buf(op),
            result: Err(error),
        }
    }
}

/// A device: shared by all reactors, which each open a queue on it.
pub trait BlockDevice: Send + Sync + 'static {
    /// Name, block size and capacity.
    fn info(&self) -> DeviceInfo;
    /// Opens a queue of `depth` requests for the calling reactor.
    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError>;
    /// Memory the buffer pool must come from for this device (SPDK's DMA
    /// memory), `len` bytes; `None` when any memory will do.
    fn pool_region(&self, len: usize) -> Option<std::io::Result<Region>> {
        let _ = len;
        None
    }
}

/// A shared device is a device: decorators such as
/// [`faulty::FaultyDevice`] can wrap one the caller holds as
/// `Arc<dyn BlockDevice>`.
impl<T: BlockDevice + ?Sized> BlockDevice for std::sync::Arc<T> {
    fn info(&self) -> DeviceInfo {
        (**self).info()
    }
    fn open_queue(&self, depth: usize) -> Result<Box<dyn DeviceQueue>, DeviceError> {
        (**self).open_queue(depth)
    }
    fn pool_region(&self, len: usize) -> Option<std::io::Result<Region>> {
        (**self).pool_region(len)
    }
}

/// One reactor's queue to a device. Used from one thread only; submission
/// never blocks and completions arrive only through [`DeviceQueue::poll`].
pub trait DeviceQueue {
    /// Submits a request. Never fails on the spot: a request the queue
    /// refuses (misaligned, out of range, queue full) completes on the next
    /// poll with its error and its buffer, so no buffer can leak.
    fn submit(&mut self, tag: u64, op: IoOp);
    /// Moves completed requests into `out`; returns how many.
    fn poll(&mut self, out: &mut Vec<Completion>) -> usize;
    /// Requests submitted and not yet returned by `poll`.
    fn in_flight(&self) -> usize;
    /// Housekeeping, whether or not I/O is in flight (SPDK: the admin
    /// queue and its NVMe-oF keep-alive, and reattaching a failed
    /// controller). Returns how soon it wants the next tick; every reactor
    /// ticks its queues at least every [`MAX_TICK`] whatever the answer.
    /// Default: nothing to do.
    fn tick(&mut self, now: std::time::Instant) -> std::time::Duration {
        let _ = now;
        MAX_TICK
    }
    /// Registers the buffer pool's memory with the device, if the backend
    /// can use that (io_uring fixed buffers). Returns whether it did;
    /// buffers outside the pool still work, unregistered.
    fn register_pool(&mut self, pool: &BufPool) -> Result<bool, DeviceError> {
        let _ = pool;
        Ok(false)
    }
}

/// The longest a queue goes without a housekeeping tick: an NVMe-oF
/// keep-alive is 10 s, and a failed controller's qpairs must be freed on
/// every reactor before it can be attached again.
pub const MAX_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Refuses a queue that could never hold a request.
pub fn check_depth(depth: usize) -> Result<(), DeviceError> {
    if depth == 0 {
        return Err(DeviceError::Invalid {
            device: "queue".into(),
            reason: "queue depth 0".into(),
        });
    }
    Ok(())
}

/// Checks a request against a device's geometry and a queue's depth.
pub fn check(
    info: &DeviceInfo,
    op: &IoOp,
    in_flight: usize,
    depth: usize,
) -> Result<(), DeviceError> {
    if in_flight >= depth {
        return Err(DeviceError::QueueFull { depth });
    }
    let Some((offset, len)) = op.range() else {
        return Ok(());
    };
    let bs = u64::from(info.block_size);
    if offset % bs != 0 || len % bs != 0 || len == 0 {
        return Err(DeviceError::Misaligned {
            offset,
            len,
            block_size: info.block_size,
        });
    }
    if offset
        .checked_add(len)
        .is_none_or(|end| end > info.capacity)
    {
        return Err(DeviceError::OutOfRange {
            offset,
            len,
            capacity: info.capacity,
        });
    }
    if let IoOp::Read { buf, len, .. } = op {
        if (buf.capacity() as u64) < *len {
            return Err(DeviceError::OutOfRange {
                offset,
                len: *len,
                capacity: buf.capacity() as u64,
            });
        }
    }
    Ok(())
}

/// The buffer of a request, for completing it.
pub fn into_buf(op: IoOp) -> IoBuf {
    match op {
        IoOp::Read { buf, .. } => IoBuf::Read(buf),
        IoOp::Write { buf, .. } => IoBuf::Write(buf),
        IoOp::Flush | IoOp::Discard { .. } => IoBuf::None,
    }
}
