//! The L2 block decoder: any stored bytes, any encoding, any logical size,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc::compress::{unpack, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some(encoding) = Encoding::from_u8(head % 3) else {
        return;
    };
    let lsize = usize::from(head) * 97 % 20_000;
    let mut out = vec![0u8; lsize];
    let _ = unpack(encoding, rest, &mut out);
});
