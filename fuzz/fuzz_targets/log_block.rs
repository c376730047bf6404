//! The log block and item parsers: any bytes, for any device GUID, never a
//! panic; every item that parses encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc::l2::format::{LogBlock, LogItem, ITEM_BYTES};

fuzz_target!(|data: &[u8]| {
    let guid = data
        .get(16..32)
        .map_or(0, |g| u128::from_le_bytes(g.try_into().expect("16 bytes")));
    if let Ok(lb) = LogBlock::open(data, guid) {
        for item in lb.items(data).flatten() {
            assert_eq!(LogItem::decode(&item.encode()), Ok(item));
        }
    }
    for chunk in data.chunks_exact(ITEM_BYTES) {
        if let Ok(item) = LogItem::decode(chunk.try_into().expect("24 bytes")) {
            assert_eq!(LogItem::decode(&item.encode()), Ok(item));
        }
    }
});
