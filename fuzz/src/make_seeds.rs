//! Writes seed inputs for the fuzz targets: the header copies and log
//! blocks of a device a real engine used, LZ4 blocks, small traces of
//! each format and config files.
//!
//! `cargo run --bin make_seeds [engine] [text]`: both groups by default;
//! `engine` for the device and LZ4 targets, `text` for the trace and
//! config targets.

use polarc::device::mem::MemDevice;
use polarc::testing::fixtures;
use std::path::Path;

fn main() {
    let groups: Vec<String> = std::env::args().skip(1).collect();
    let all = groups.is_empty();
    if all || groups.iter().any(|g| g == "engine") {
        engine_seeds();
    }
    if all || groups.iter().any(|g| g == "text") {
        text_seeds();
    }
}

/// Writes `bytes` as `corpus/DIR/NAME`.
fn write(dir: &str, name: &str, bytes: &[u8]) {
    let out = Path::new("corpus").join(dir);
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(out.join(name), bytes).expect("write");
}

/// Seeds of the trace parsers (each with the options byte its target
/// reads first) and of the config file.
fn text_seeds() {
    // trace_lis: the first byte is the reader's buffer size.
    let lis: [&[u8]; 3] = [
        b"\x07173 8 0 0\n181 8 0 1\n\n1 1 0 2\n",
        b"\x20\t5   3 x 9\r\n0 0 0 0\r\n18446744073709551614 1 0 3",
        b"\x01100 1048576 0 0\n",
    ];
    for (i, s) in lis.iter().enumerate() {
        write("trace_lis", &format!("seed{i}"), s);
    }
    // trace_oracle: the first byte is the read size.
    let mut oracle = vec![23u8];
    for (clock, id, size, next) in [
        (1u32, 5u64, 4096u32, 7i64),
        (2, 6, 512, -1),
        (3, 5, 4096, -1),
    ] {
        oracle.extend_from_slice(&clock.to_le_bytes());
        oracle.extend_from_slice(&id.to_le_bytes());
        oracle.extend_from_slice(&size.to_le_bytes());
        oracle.extend_from_slice(&next.to_le_bytes());
    }
    write("trace_oracle", "seed0", &oracle);
    write("trace_oracle", "seed1", &oracle[..oracle.len() - 5]);
    // trace_csv: the first byte is the options (see the target).
    let csv: [&[u8]; 4] = [
        b"\x04t,size\n42,100\nabc,7\n",  // key 0, size 1, comma
        b"\x35h;k;s\n1;2;3\n1;x;4096\n", // key 1, size 1, header, ';'
        b"\xe0a\nb\n\nc d\n12345\n",     // keys
        b"\x4e\t4096\tk\t\n",            // key 2, size 3: none, tab
    ];
    for (i, s) in csv.iter().enumerate() {
        write("trace_csv", &format!("seed{i}"), s);
    }
    let config: [&str; 4] = [
        "arc = \"256MiB\"\nkeys = 1000\nl2 = [\"mem:64MiB\", \"mem:32MiB\"]\nin-reactor = true\nsettle_l2 = false\nzipf = 0.5\n",
        "trace = \"t.lis\"\ntrace-format = \"csv\"\ncsv-size-column = 1\ntrace-max-bytes = \"1GiB\"\ntrace-max-accesses = 1000\npool = \"1GiB\"\n",
        "arc = \"15EiB\"\ncores = \"0-3,5\"\nspdk-perf-compare = true\nduration = \"30s\"\nmix = \"read:90,insert:10\"\n",
        "bench-feed = true\nkeys = 4503599627370496\nvalue-size = \"1KiB-8KiB\"\nl2 = \"file:/tmp/x:2GiB\"\nhotspot = \"0.1:0.9\"\nqueue-depth = 65536\nclients = 4096\n",
    ];
    for (i, s) in config.iter().enumerate() {
        write("config_file", &format!("seed{i}"), s.as_bytes());
    }
    println!("seeds: 3 lis, 2 oracle, 4 csv traces, 4 config files");
}

/// Seeds of the device header, log block and LZ4 targets, from a device a
/// real engine used.
fn engine_seeds() {
    let dev = MemDevice::new(32 << 20, 512).expect("device");
    let (b, _) = fixtures::l2_engine(dev.clone());
    let e = b.build().expect("engine");
    for pass in 0..2 {
        for i in 0..3000u64 {
            e.read(&polarc::index_key(i)).expect("read");
            if i % 7 == pass {
                e.invalidate(&polarc::index_key(i)).expect("invalidate");
            }
        }
        fixtures::settle_l2(&e);
    }
    e.shutdown().expect("shutdown");
    let img = dev.snapshot();
    let m = 512usize; // the metadata block of a 32 MiB device
    write("device_header", "copy0", &img[..m]);
    write("device_header", "copy1", &img[m..2 * m]);
    let mut logs = 0;
    for (i, b) in img[2 * m..].chunks(m).enumerate().take(4096) {
        if b.starts_with(b"PLRC-L2L") && logs < 16 {
            write("log_block", &format!("block{i}"), b);
            logs += 1;
        }
    }
    for r in [1.5, 2.0, 4.0] {
        let src = polarc::SimStore::content(b"seed", 4096, r);
        let mut dst = vec![0u8; 4096];
        let p = polarc::compress::pack(&src, &mut dst, 512, true).expect("pack");
        let mut seed = vec![p.encoding as u8 + 3 * 42];
        seed.extend_from_slice(&dst[..p.len]);
        write("lz4_unpack", &format!("ratio{r}"), &seed);
    }
    println!("seeds: 2 headers, {logs} log blocks, 3 LZ4 blocks");
}
