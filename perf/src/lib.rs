//! The harness's library: options, devices, workloads, reports, traces (modes: src/mode/).

pub mod cli;
pub mod devices;
pub mod faults;
pub mod hits;
pub mod mrc;
pub mod plot;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod soak;
#[cfg(feature = "spdk")]
pub mod spdk;
pub mod trace;
pub mod units;
pub mod verify;
pub mod workload;
