//! Test support, behind the `testing` feature (and in the crate's own unit
//! tests): the device conformance suite, the fixtures shared by the
//! simulation, the model tests and the device tests, and (with `spdk`) a
//! local NVMe-oF target.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod fixtures;
#[cfg(feature = "spdk")]
pub mod nvmf_target;
