//! polarc-perf: the perf harness's library (trace readers, workloads,
//! reports). The binary is `src/main.rs`.

pub mod trace;
