//! Criterion benchmarks of the small kernels: the message ring, the
//! buffer pool, a shard hit (hash lookup + ARC move) and a trace-style
//! access with eviction. Whole workloads are measured by `polarc-perf`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use polarc::bufpool::BufPool;
use polarc::reactor::Mailbox;
use polarc::shard::{hash_key, Policy, Shard};

fn ring(c: &mut Criterion) {
    let m = Mailbox::new(std::thread::current());
    c.bench_function("ring push+pop (same thread)", |b| {
        b.iter(|| {
            let _ = m.push(black_box(1u64));
            black_box(m.pop())
        })
    });
}

fn pool(c: &mut Criterion) {
    let p = BufPool::new(64 << 20, 1 << 20, false).unwrap();
    c.bench_function("pool alloc+free 4 KiB (no magazine: the runs)", |b| {
        b.iter(|| black_box(p.alloc(4096)))
    });
    let _magazine = p.register_local_cache();
    c.bench_function("pool alloc+free 4 KiB (a reactor's magazine)", |b| {
        b.iter(|| black_box(p.alloc(4096)))
    });
}

fn shard(c: &mut Criterion) {
    let n = 16_384u64;
    let mut s: Shard<()> = Shard::new(n * 4096 * 2, Policy::Arc);
    let keys: Vec<[u8; 8]> = (0..n).map(|i| i.to_le_bytes()).collect();
    for k in &keys {
        s.access(hash_key(k), k, 4096, || ());
    }
    let mut i = 0usize;
    c.bench_function("shard hit: hash + lookup + ARC move (16K blocks)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            black_box(s.lookup_for_read(hash_key(k), k))
        })
    });
    c.bench_function("shard access with eviction (ARC, 1K-block cache)", |b| {
        b.iter_batched_ref(
            || Shard::<()>::new(1024 * 512, Policy::Arc),
            |s| {
                for j in 0..4096u64 {
                    let k = (j * 2654435761 % 3000).to_le_bytes();
                    s.access(hash_key(&k), &k, 512, || ());
                }
            },
            BatchSize::LargeInput,
        )
    });
}

fn lz4(c: &mut Criterion) {
    use polarc::compress::{pack, unpack, Encoding};
    let src = polarc::SimStore::content(b"bench", 4096, 2.0);
    let mut dst = vec![0u8; 4096];
    let mut g = c.benchmark_group("lz4 4 KiB, ~2:1");
    g.throughput(criterion::Throughput::Bytes(4096));
    g.bench_function("pack (compress)", |b| {
        b.iter(|| black_box(pack(black_box(&src), &mut dst, 512, true).unwrap()))
    });
    let p = pack(&src, &mut dst, 512, true).unwrap();
    assert_eq!(p.encoding, Encoding::Lz4);
    let mut out = vec![0u8; 4096];
    g.bench_function("unpack (decompress)", |b| {
        b.iter(|| unpack(Encoding::Lz4, black_box(&dst[..p.len]), &mut out).unwrap())
    });
    g.finish();
}

/// The per-hit CPU pieces of an L2 read: the keyed checksum of the stored
/// bytes, and the key tag it is keyed by.
fn l2_hit_parts(c: &mut Criterion) {
    use polarc::compress::pack;
    let src = polarc::SimStore::content(b"bench", 4096, 2.0);
    let mut dst = vec![0u8; 4096];
    let p = pack(&src, &mut dst, 512, true).unwrap();
    let stored = dst[..p.len].to_vec();
    let mut g = c.benchmark_group("L2 hit parts");
    g.bench_function(
        format!("checksum of a {} B stored block", stored.len()),
        |b| b.iter(|| polarc::l2::format::checksum(black_box(7), black_box(3), black_box(&stored))),
    );
    g.bench_function("key tag (8-byte key)", |b| {
        b.iter(|| polarc::l2::format::key_tag(black_box(&42u64.to_le_bytes())))
    });
    g.finish();
}

criterion_group!(benches, ring, pool, shard, lz4, l2_hit_parts);
criterion_main!(benches);
