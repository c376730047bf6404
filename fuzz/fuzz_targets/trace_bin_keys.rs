//! The bin-keys trace parser: any bytes, through reads of any sizes,
//! within small limits, never a panic; what it returns are the keys in
//! the bytes, at most the limit of them, and a partial key is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
mod short_reads;
use polarc_perf::trace::{parse_bin_keys, Limits, TraceError, BIN_KEY_RECORD};
use short_reads::Short;
use std::path::Path;

const LIMITS: Limits = Limits {
    max_line: 200,
    max_bytes: 1600,
    max_accesses: 150,
};

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let r = Short {
        data: bytes,
        step: usize::from(step % 20) + 1,
    };
    let mut got = vec![];
    let res = parse_bin_keys(r, Path::new("fuzz.bin"), 512, &LIMITS, |a| got.push(a));
    assert!(got.len() as u64 <= LIMITS.max_accesses);
    for (a, rec) in got.iter().zip(bytes.chunks_exact(BIN_KEY_RECORD)) {
        assert_eq!(a.id.to_le_bytes(), rec);
        assert_eq!(a.size, 512);
    }
    let whole = (bytes.len() / BIN_KEY_RECORD) as u64;
    match res {
        Ok(()) => {
            assert_eq!(bytes.len() % BIN_KEY_RECORD, 0);
            assert_eq!(got.len() as u64, whole);
        }
        Err(TraceError::TooLarge { limit, .. }) => {
            assert_eq!(limit, LIMITS.max_bytes);
            assert!(bytes.len() as u64 > LIMITS.max_bytes);
        }
        Err(TraceError::Record { record, .. }) => assert!(record <= whole),
        Err(e) => panic!("unexpected error from a slice: {e}"),
    }
});
