//! The TOML config file: any text, read as the config file of a command
//! line (no file is read), then checked and every size derived from the
//! options computed; errors or values, never a panic, never an
//! arithmetic overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polarc_perf::cli::{parse_config_text, parse_with_config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_config_text(text);
    let argv = vec!["polarc-perf".to_string()];
    let Ok(a) = parse_with_config(argv, "fuzz.toml", text) else {
        return;
    };
    let checked = a.check();
    let _ = a.pool_capacity();
    let _ = a.mapped_pool();
    let _ = a.feed_arc();
    let _ = a.client_depth();
    let _ = a.reactor_depth(65535);
    let _ = a.trace_limits();
    if checked.is_ok() {
        let _ = a.workload();
    }
});
