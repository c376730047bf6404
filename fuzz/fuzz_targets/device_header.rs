//! The device header parser: any bytes, never a panic; a header that
//! parses encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc::l2::format::{DeviceHeader, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = DeviceHeader::decode(data) {
        let mut again = vec![0u8; data.len().max(HEADER_BYTES)];
        h.encode(&mut again);
        assert_eq!(&again[..HEADER_BYTES], &data[..HEADER_BYTES]);
    }
});
