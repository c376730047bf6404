//! polarc-perf: the perf harness's library (trace readers, workloads,
//! benchmarks). The binary is `src/main.rs`.

pub mod cli;
pub mod devices;
pub mod hits;
pub mod plot;
pub mod progress;
#[cfg(feature = "spdk")]
pub mod spdk;
pub mod trace;
pub mod units;
pub mod workload;
