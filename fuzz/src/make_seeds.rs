//! Writes seed inputs for the fuzz targets: the header copies and log
//! blocks of a device a real engine used, and LZ4 blocks.

use polarc::device::mem::MemDevice;
use polarc::testing::fixtures;
use std::path::Path;

fn main() {
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
    let out = Path::new("corpus");
    let write = |dir: &str, name: String, bytes: &[u8]| {
        std::fs::create_dir_all(out.join(dir)).expect("dir");
        std::fs::write(out.join(dir).join(name), bytes).expect("write");
    };
    write("device_header", "copy0".into(), &img[..m]);
    write("device_header", "copy1".into(), &img[m..2 * m]);
    let mut logs = 0;
    for (i, b) in img[2 * m..].chunks(m).enumerate().take(4096) {
        if b.starts_with(b"PLRC-L2L") && logs < 16 {
            write("log_block", format!("block{i}"), b);
            logs += 1;
        }
    }
    for r in [1.5, 2.0, 4.0] {
        let src = polarc::SimStore::content(b"seed", 4096, r);
        let mut dst = vec![0u8; 4096];
        let p = polarc::compress::pack(&src, &mut dst, 512, true).expect("pack");
        let mut seed = vec![p.encoding as u8 + 3 * 42];
        seed.extend_from_slice(&dst[..p.len]);
        write("lz4_unpack", format!("ratio{r}"), &seed);
    }
    println!("seeds: 2 headers, {logs} log blocks, 3 LZ4 blocks");
}
