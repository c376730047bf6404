//! polarc-perf: the perf harness's library (trace readers, workloads,
//! benchmarks). The binary is `src/main.rs`.

pub mod devices;
pub mod hits;
pub mod trace;
pub mod units;
pub mod workload;
