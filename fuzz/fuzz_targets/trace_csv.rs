//! The `csv` and `keys` trace parsers: any bytes, any options, within
//! small limits, never a panic; never more accesses than the limit, no
//! access of size 0.
//!
//! The first byte picks the options: bits 0-1 the key column, bits 2-3 the
//! size column (3: none), bit 4 a header line, bits 5-7 the delimiter
//! (`,` `;` tab space `|` `,` `,`), or 7: the `keys` format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc_perf::trace::{parse_csv, parse_keys, CsvOptions, Limits, TraceError};
use std::io::BufReader;
use std::path::Path;

const LIMITS: Limits = Limits {
    max_line: 300,
    max_bytes: 4096,
    max_accesses: 300,
};

fuzz_target!(|data: &[u8]| {
    let Some((&opts, text)) = data.split_first() else {
        return;
    };
    let o = CsvOptions {
        key_column: usize::from(opts & 3),
        size_column: match (opts >> 2) & 3 {
            3 => None,
            c => Some(usize::from(c)),
        },
        header: opts & 0x10 != 0,
        delimiter: [',', ';', '\t', ' ', '|', ',', ','][usize::from(opts >> 5).min(6)],
        default_size: 4096,
    };
    let reader = BufReader::with_capacity(usize::from(opts % 61) + 1, text);
    let mut n = 0u64;
    let mut f = |a: polarc_perf::trace::Access| {
        assert!(a.size > 0);
        n += 1;
    };
    let r = if opts >> 5 == 7 {
        parse_keys(reader, Path::new("fuzz.keys"), 512, &LIMITS, &mut f)
    } else {
        parse_csv(reader, Path::new("fuzz.csv"), &o, &LIMITS, &mut f)
    };
    assert!(n <= LIMITS.max_accesses);
    match r {
        Ok(()) => assert!(text.len() as u64 <= LIMITS.max_bytes),
        Err(TraceError::TooLarge { limit, .. }) => {
            assert_eq!(limit, LIMITS.max_bytes);
            assert!(text.len() as u64 > LIMITS.max_bytes);
        }
        Err(TraceError::Line { line, .. }) => assert!(line >= 1 && line <= text.len() as u64),
        Err(e) => panic!("unexpected error from a slice: {e}"),
    }
});
