//! polarc-perf: the perf harness's library (options, devices, workloads,
//! reports, trace readers, benchmarks). The binary is `src/main.rs`.

pub mod cli;
pub mod devices;
pub mod hits;
pub mod plot;
pub mod procfs;
pub mod progress;
pub mod report;
#[cfg(feature = "spdk")]
pub mod spdk;
pub mod trace;
pub mod units;
pub mod workload;
