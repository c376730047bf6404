//! The `lis` trace parser: any bytes, through any read sizes, within small
//! limits, never a panic; never more accesses than the limit, never more
//! bytes read than the limit, every access a 512-byte page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc_perf::trace::{parse_lis, Limits, TraceError, LIS_PAGE};
use std::io::BufReader;
use std::path::Path;

const LIMITS: Limits = Limits {
    max_line: 200,
    max_bytes: 4096,
    max_accesses: 5000,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the reader's buffer size (read boundaries
    // anywhere in a line).
    let Some((&cap, text)) = data.split_first() else {
        return;
    };
    let reader = BufReader::with_capacity(usize::from(cap % 64) + 1, text);
    let mut n = 0u64;
    let r = parse_lis(reader, Path::new("fuzz.lis"), &LIMITS, |a| {
        assert_eq!(a.size, LIS_PAGE);
        n += 1;
    });
    assert!(n <= LIMITS.max_accesses);
    match r {
        Ok(()) => assert!(text.len() as u64 <= LIMITS.max_bytes),
        Err(TraceError::TooLarge { limit, .. }) => {
            assert_eq!(limit, LIMITS.max_bytes);
            assert!(text.len() as u64 > LIMITS.max_bytes);
        }
        Err(TraceError::Line { line, ref path, .. }) => {
            assert!(line >= 1 && line <= text.len() as u64);
            assert_eq!(path, Path::new("fuzz.lis"));
        }
        Err(e) => panic!("unexpected error from a slice: {e}"),
    }
});
