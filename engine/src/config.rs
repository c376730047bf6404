//! Engine configuration and its validation.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::l2::L2Config;
use crate::reactor::{IdleStrategy, Pinning};
use crate::shard::Policy;
use std::time::Duration;

/// Everything [`crate::EngineBuilder`] can set. Every field's default is
/// given in its doc comment and in [`Config::default`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    /// Number of reactors, each owning one shard. Default: the number of
    /// available cores.
    pub reactors: usize,
    /// Cores to pin reactor i to (`cores[i]`). Default: none, i.e. the
    /// i-th core the OS reports.
    pub cores: Option<Vec<usize>>,
    /// Pinning mode. Default: [`Pinning::BestEffort`].
    pub pinning: Pinning,
    /// Idle strategy. Default: [`IdleStrategy::Adaptive`].
    pub idle: IdleStrategy,
    /// How long an adaptive reactor spins before parking. Default: 100 µs.
    pub spin_before_park: Duration,
    /// Total ARC capacity in bytes, split evenly over the shards.
    /// Default: 256 MiB.
    pub arc_capacity: u64,
    /// Replacement policy. Default: [`Policy::Arc`].
    pub policy: Policy,
    /// Largest block, in bytes: a power of two from 512 B to 2 MiB.
    /// Default: 1 MiB.
    pub max_block_size: usize,
    /// Buffer pool size in bytes. Default: `arc_capacity` × 1.5 + 32 MiB,
    /// room for size-class slack, blocks held by callers and fills in
    /// flight.
    pub pool_capacity: Option<u64>,
    /// Try 2 MiB hugepages for the pool, falling back to normal pages with
    /// a warning. Default: true.
    pub hugepages: bool,
    /// Messages a reactor takes from its ring per loop iteration before it
    /// runs its pollers. Default: 32.
    pub message_batch: usize,
    /// How long a backing-store read may take before the reads waiting
    /// for it fail with [`crate::BackingError::TimedOut`] (the cache is
    /// left as it was; a late answer is dropped). Default: 30 s, the Linux
    /// SCSI and NVMe drivers' own I/O timeout: a backing store is often a
    /// disk or a network store whose healthy tail reaches seconds, and
    /// failing a read that would have succeeded is worse than waiting.
    pub backing_timeout: Duration,
    /// How long [`crate::Engine::shutdown`] waits for I/O in flight before
    /// it abandons it (reported in the final statistics, and logged).
    /// Default: 10 s.
    pub shutdown_timeout: Duration,
    /// Longest key, in bytes; longer keys are refused with
    /// [`Error::KeyTooLong`]. Default: 4096.
    pub max_key_len: usize,
    /// Requests in flight per reactor from clients (reads, inserts,
    /// invalidations, prefetches): past it, a client waits or gets
    /// [`Error::Busy`], as `when_full` says, so memory stays bounded under
    /// overload. Default: 65536.
    pub max_in_flight: usize,
    /// What a client gets when its reactor has `max_in_flight` requests.
    /// Default: [`WhenFull::Wait`].
    pub when_full: WhenFull,
    /// Stamp every block a client read gets with when its reactor took the
    /// request and when it answered ([`crate::Block::timing`]), to break a
    /// client's latency down. Costs two clock reads and an allocation per
    /// request. Default: false.
    pub timing: bool,
    /// The L2 knobs; used when L2 devices are given. Default:
    /// [`L2Config::default`].
    pub l2: L2Config,
}

/// What a request finds when its reactor is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Waits until the reactor has room (the default: callers slow down
    /// to what the engine can take).
    #[default]
    Wait,
    /// Fails at once with [`Error::Busy`].
    Busy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reactors: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cores: None,
            pinning: Pinning::BestEffort,
            idle: IdleStrategy::Adaptive,
            spin_before_park: Duration::from_micros(100),
            arc_capacity: 256 << 20,
            policy: Policy::Arc,
            max_block_size: 1 << 20,
            pool_capacity: None,
            hugepages: true,
            message_batch: 32,
            backing_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            max_key_len: 4096,
            max_in_flight: 65536,
            when_full: WhenFull::Wait,
            timing: false,
            l2: L2Config::default(),
        }
    }
}

impl Config {
    /// Checks the configuration against itself and this machine.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.reactors == 0 {
            return bad("reactors must be at least 1".into());
        }
        if self.reactors > u16::MAX as usize {
            return bad(format!(
                "{} reactors is more than the supported 65535",
                self.reactors
            ));
        }
        if !self.max_block_size.is_power_of_two() || !(512..=2 << 20).contains(&self.max_block_size)
        {
            return bad(format!(
                "max_block_size {} must be a power of two from 512 to 2097152 bytes",
                self.max_block_size
            ));
        }
        if self.arc_capacity == 0 {
            return bad("arc_capacity must be above zero".into());
        }
        let per_shard = self.arc_capacity / self.reactors as u64;
        if per_shard < self.max_block_size as u64 {
            return bad(format!(
                "arc_capacity {} over {} reactors leaves {} B per shard, below max_block_size {}: the largest blocks could never be cached",
                self.arc_capacity, self.reactors, per_shard, self.max_block_size
            ));
        }
        if self.message_batch == 0 {
            return bad("message_batch must be at least 1".into());
        }
        if self.backing_timeout.is_zero() || self.shutdown_timeout.is_zero() {
            return bad("backing_timeout and shutdown_timeout must be above zero".into());
        }
        if self.max_key_len == 0 || self.max_in_flight == 0 {
            return bad("max_key_len and max_in_flight must be at least 1".into());
        }
        if let Some(p) = self.pool_capacity {
            if p < self.max_block_size as u64 {
                return bad(format!(
                    "pool_capacity {p} is below max_block_size {}",
                    self.max_block_size
                ));
            }
        }
        self.effective_pool_capacity()?;
        let online = core_affinity::get_core_ids().map_or(0, |c| c.len());
        if let Some(cores) = &self.cores {
            if cores.len() < self.reactors {
                return bad(format!(
                    "{} cores listed for {} reactors",
                    cores.len(),
                    self.reactors
                ));
            }
            if let Some(c) = cores.iter().find(|&&c| online > 0 && c >= online) {
                return bad(format!(
                    "core {c} does not exist (this machine has {online})"
                ));
            }
        }
        if self.pinning == Pinning::Required && self.cores.is_none() && self.reactors > online {
            return bad(format!(
                "{} reactors with pinning required, but only {online} cores are available",
                self.reactors
            ));
        }
        Ok(())
    }

    /// The buffer pool size this configuration asks for; an error naming
    /// the option when it does not fit in 64 bits.
    pub fn effective_pool_capacity(&self) -> Result<u64> {
        if let Some(p) = self.pool_capacity {
            return Ok(p);
        }
        let a = self.arc_capacity;
        a.checked_add(a / 2)
            .and_then(|p| p.checked_add(32 << 20))
            .ok_or_else(|| {
                Error::Config(format!(
                    "arc_capacity {a}: the buffer pool it asks for (x 1.5 + 32 MiB) does not fit in 64 bits"
                ))
            })
    }

    /// The pool the engine maps with `l2_devices` L2 devices: an explicit
    /// `pool_capacity`, else [`Config::effective_pool_capacity`] plus room
    /// for each device's feed writes in flight and for L2 reads in flight.
    pub fn pool_capacity_with_l2(&self, l2_devices: usize) -> Result<u64> {
        let base = self.effective_pool_capacity()?;
        if self.pool_capacity.is_some() || l2_devices == 0 {
            return Ok(base);
        }
        let c = &self.l2;
        // Per device: its feed writes, and its log and rebuild reads.
        (c.writes_in_flight as u64)
            .checked_mul(c.write_size.max(self.max_block_size) as u64)
            .and_then(|w| w.checked_add(8 << 20))
            .and_then(|d| d.checked_mul(l2_devices as u64))
            .and_then(|d| d.checked_add(base))
            .and_then(|p| p.checked_add(16 << 20))
            .ok_or_else(|| {
                Error::Config(format!(
                    "l2 writes_in_flight {} x write_size {} on {l2_devices} devices: the buffer pool does not fit in 64 bits",
                    c.writes_in_flight, c.write_size
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Config), needle: &str) {
        let mut c = Config {
            reactors: 1,
            ..Config::default()
        };
        f(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_configs_name_the_problem() {
        check(|c| c.reactors = 0, "reactors must be at least 1");
        check(|c| c.arc_capacity = 0, "arc_capacity must be above zero");
        check(|c| c.max_block_size = 3000, "power of two");
        check(|c| c.max_block_size = 4 << 20, "power of two");
        check(|c| c.max_block_size = 256, "power of two");
        check(|c| c.arc_capacity = 4096, "below max_block_size");
        check(|c| c.message_batch = 0, "message_batch");
        check(|c| c.backing_timeout = Duration::ZERO, "backing_timeout");
        check(|c| c.max_in_flight = 0, "max_in_flight");
        check(|c| c.arc_capacity = u64::MAX, "does not fit in 64 bits");
        check(
            |c| {
                c.pinning = Pinning::Required;
                c.reactors = 10_000;
                c.arc_capacity = 1 << 40;
            },
            "pinning required",
        );
        check(|c| c.cores = Some(vec![100_000]), "does not exist");
        check(|c| c.cores = Some(vec![]), "0 cores listed for 1 reactors");
    }
}
