//! The device conformance suite: the same checks for every backend (mem,
//! faulty with no faults, io_uring, SPDK). Returns the first violation.
#![forbid(unsafe_code)]

use crate::bufpool::BufPool;
use crate::device::{BlockDevice, Completion, DeviceError, DeviceQueue, IoBuf, IoOp};
use std::time::{Duration, Instant};

fn wait_all(q: &mut dyn DeviceQueue, n: usize) -> Result<Vec<Completion>, String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        q.poll(&mut out);
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} completions within 10 s", out.len()));
        }
        std::hint::spin_loop();
    }
    if q.in_flight() != 0 {
        return Err(format!(
            "{} requests still in flight after all completed",
            q.in_flight()
        ));
    }
    Ok(out)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

/// Runs the suite on `dev`, with buffers from `pool`.
pub fn run(dev: &dyn BlockDevice, pool: &BufPool) -> Result<(), String> {
    let info = dev.info();
    let bs = info.block_size as usize;
    if bs < 512 || !bs.is_power_of_two() || info.capacity < 16 * bs as u64 {
        return Err(format!("implausible geometry {info:?}"));
    }
    let depth = 8;
    let mut q = dev.open_queue(depth).map_err(|e| e.to_string())?;
    let mut q2 = dev.open_queue(depth).map_err(|e| e.to_string())?;
    // One queue with the pool registered (where the backend can), one
    // without: both must move the same bytes.
    q.register_pool(pool).map_err(|e| e.to_string())?;

    // Writes of several sizes, including the last block, read back through
    // another queue.
    let cases = [
        (0u64, bs),
        (3 * bs as u64, 2 * bs),
        (info.capacity - bs as u64, bs),
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        let mut b = pool.alloc(len).ok_or("pool exhausted")?;
        b.as_mut_slice()[..len].copy_from_slice(&pattern(i as u64, len));
        q.submit(
            i as u64,
            IoOp::Write {
                offset: off,
                buf: b.freeze(len),
            },
        );
    }
    for c in wait_all(q.as_mut(), cases.len())? {
        c.result.map_err(|e| format!("write {}: {e}", c.tag))?;
        if !matches!(c.buf, IoBuf::Write(_)) {
            return Err(format!("write {} did not hand its buffer back", c.tag));
        }
    }
    q.submit(99, IoOp::Flush);
    wait_all(q.as_mut(), 1)?
        .pop()
        .expect("one")
        .result
        .map_err(|e| format!("flush: {e}"))?;
    for (i, &(off, len)) in cases.iter().enumerate() {
        let b = pool.alloc(len).ok_or("pool exhausted")?;
        q2.submit(
            100 + i as u64,
            IoOp::Read {
                offset: off,
                len: len as u64,
                buf: b,
            },
        );
    }
    for c in wait_all(q2.as_mut(), cases.len())? {
        c.result.map_err(|e| format!("read {}: {e}", c.tag))?;
        let i = (c.tag - 100) as usize;
        let IoBuf::Read(mut b) = c.buf else {
            return Err(format!("read {} lost its buffer", c.tag));
        };
        let len = cases[i].1;
        if b.as_mut_slice()[..len] != pattern(i as u64, len)[..] {
            return Err(format!(
                "read {} at offset {} returned other bytes than written",
                c.tag, cases[i].0
            ));
        }
    }

    // Refused requests complete with their error and their buffer.
    let refused: [(u64, IoOp, &str); 3] = [
        (
            200,
            IoOp::Read {
                offset: 1,
                len: bs as u64,
                buf: pool.alloc(bs).ok_or("pool")?,
            },
            "misaligned",
        ),
        (
            201,
            IoOp::Read {
                offset: 0,
                len: bs as u64 / 2,
                buf: pool.alloc(bs).ok_or("pool")?,
            },
            "misaligned",
        ),
        (
            202,
            IoOp::Read {
                offset: info.capacity,
                len: bs as u64,
                buf: pool.alloc(bs).ok_or("pool")?,
            },
            "past the end",
        ),
    ];
    let n = refused.len();
    let want: Vec<&str> = refused.iter().map(|r| r.2).collect();
    for (tag, op, _) in refused {
        q.submit(tag, op);
    }
    for c in wait_all(q.as_mut(), n)? {
        let w = want[(c.tag - 200) as usize];
        match &c.result {
            Err(e) if e.to_string().contains(w) => {}
            other => {
                return Err(format!(
                    "request {} should fail with {w:?}, got {other:?}",
                    c.tag
                ))
            }
        }
        if !matches!(c.buf, IoBuf::Read(_)) {
            return Err(format!("refused request {} lost its buffer", c.tag));
        }
    }

    // The queue depth is enforced without blocking.
    for t in 0..=depth as u64 {
        let b = pool.alloc(bs).ok_or("pool")?;
        q.submit(
            300 + t,
            IoOp::Read {
                offset: 0,
                len: bs as u64,
                buf: b,
            },
        );
    }
    let done = wait_all(q.as_mut(), depth + 1)?;
    let full = done
        .iter()
        .filter(|c| matches!(c.result, Err(DeviceError::QueueFull { .. })))
        .count();
    let ok = done.iter().filter(|c| c.result.is_ok()).count();
    if (full, ok) != (1, depth) {
        return Err(format!(
            "depth {depth}: {ok} ok and {full} refused as full, want {depth} and 1"
        ));
    }
    discard(q.as_mut(), pool, bs)
}

/// A discard of written blocks completes (or says it is unsupported);
/// a misaligned one is refused; the blocks beside it keep their bytes.
fn discard(q: &mut dyn DeviceQueue, pool: &BufPool, bs: usize) -> Result<(), String> {
    let data = pattern(400, 3 * bs);
    let mut b = pool.alloc(3 * bs).ok_or("pool")?;
    b.as_mut_slice()[..3 * bs].copy_from_slice(&data);
    q.submit(
        400,
        IoOp::Write {
            offset: 0,
            buf: b.freeze(3 * bs),
        },
    );
    wait_all(q, 1)?;
    q.submit(
        401,
        IoOp::Discard {
            offset: bs as u64,
            len: bs as u64,
        },
    );
    q.submit(
        402,
        IoOp::Discard {
            offset: 1,
            len: bs as u64,
        },
    );
    let done = wait_all(q, 2)?;
    for c in &done {
        match (c.tag, &c.result) {
            (401, Ok(()) | Err(DeviceError::Unsupported(_))) => {}
            (402, Err(DeviceError::Misaligned { .. })) => {}
            (t, r) => return Err(format!("discard {t}: {r:?}")),
        }
    }
    let r = pool.alloc(3 * bs).ok_or("pool")?;
    q.submit(
        403,
        IoOp::Read {
            offset: 0,
            len: 3 * bs as u64,
            buf: r,
        },
    );
    let c = wait_all(q, 1)?.pop().ok_or("no completion")?;
    let IoBuf::Read(r) = c.buf else {
        return Err("read lost its buffer".into());
    };
    let got = &r.freeze(3 * bs)[..];
    if got[..bs] != data[..bs] || got[2 * bs..] != data[2 * bs..] {
        return Err("a discard changed the blocks beside it".into());
    }
    Ok(())
}
