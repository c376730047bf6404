//! Model test: random read/get/insert/invalidate/prefetch sequences from
//! several client threads at once, on 2 or 3 reactors, with a small ARC
//! (so blocks are evicted) and a backing store that fails some keys.
//! Checked against the truth: a key's block is a pure function of the key
//! (blocks are immutable), so every byte returned can be checked.
//!
//! Invariants:
//! * `read` returns exactly the true bytes, or a backing error for a key
//!   the store fails; never wrong bytes.
//! * `get` returns nothing or exactly the true bytes.
//! * After a thread invalidates one of its private keys, `get` of that key
//!   returns nothing until the thread itself brings it back.
//! * The counters add up, and no pool buffer is outstanding at the end.

mod common;
use common::content;
use polarc::{Engine, Error};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

const THREADS: usize = 3;
const KEYS: u8 = 40;
/// Keys below this are private: key k belongs to thread k % THREADS.
const PRIVATE: u8 = 24;

fn key(k: u8) -> Vec<u8> {
    if k % 13 == 12 {
        format!("fail-{k}").into_bytes()
    } else {
        format!("key-{k}").into_bytes()
    }
}
fn fails(k: u8) -> bool {
    k % 13 == 12
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    Get,
    Insert,
    Invalidate,
    Prefetch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![4 => Just(Op::Read), 3 => Just(Op::Get), 1 => Just(Op::Insert), 1 => Just(Op::Invalidate), 1 => Just(Op::Prefetch)]
}

#[derive(Default, Debug)]
struct Counts {
    reads: u64,
    gets: u64,
}

fn run_thread(e: Engine, t: usize, ops: Vec<(Op, u8)>) -> Result<Counts, String> {
    let mut c = Counts::default();
    let mut invalidated: HashSet<u8> = HashSet::new();
    for (op, k) in ops {
        // Threads touch shared keys and their own private keys.
        let k = if k < PRIVATE {
            k - k % THREADS as u8 + t as u8
        } else {
            k
        };
        if k >= KEYS {
            continue;
        }
        let private = k < PRIVATE;
        let kb = key(k);
        let truth = content(&kb);
        match op {
            Op::Read => {
                c.reads += 1;
                invalidated.remove(&k);
                match e.read(&kb) {
                    Ok(b) if !fails(k) && *b == truth[..] => {}
                    Err(Error::Backing(_)) if fails(k) => {}
                    other => return Err(format!("read {k}: {:?}", other.map(|b| b.len()))),
                }
            }
            Op::Get => {
                c.gets += 1;
                match e.get(&kb).map_err(|e| e.to_string())? {
                    None => {}
                    Some(_) if private && invalidated.contains(&k) => {
                        return Err(format!("get {k} served a block after invalidate"))
                    }
                    Some(b) if !fails(k) && *b == truth[..] => {}
                    Some(b) => return Err(format!("get {k}: wrong block of {} B", b.len())),
                }
            }
            Op::Insert if !fails(k) => {
                invalidated.remove(&k);
                e.insert(&kb, &truth).map_err(|e| e.to_string())?;
            }
            Op::Insert => {}
            Op::Invalidate => {
                e.invalidate(&kb).map_err(|e| e.to_string())?;
                invalidated.insert(k);
            }
            Op::Prefetch => {
                invalidated.remove(&k);
                e.prefetch(&kb).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_never_returns_a_wrong_byte(
        reactors in 2usize..=3,
        ops in prop::collection::vec(prop::collection::vec((op(), 0u8..KEYS), 0..150), THREADS),
    ) {
        let store = polarc::FnStore::new(4, |k: &[u8]| {
            std::thread::sleep(Duration::from_micros(50));
            if k.starts_with(b"fail") {
                Err(polarc::BackingError::Other("injected".into()))
            } else {
                Ok(content(k))
            }
        }).unwrap();
        let e = Engine::builder()
            .reactors(reactors)
            .arc_capacity(reactors as u64 * 8192) // ~3 to 8 blocks per shard
            .max_block_size(4096)
            .pool_capacity(8 << 20)
            .hugepages(false)
            .backing(store)
            .build()
            .unwrap();
        let handles: Vec<_> = ops.into_iter().enumerate().map(|(t, ops)| {
            let e = e.clone();
            std::thread::spawn(move || run_thread(e, t, ops))
        }).collect();
        let mut total = Counts::default();
        for h in handles {
            let c = h.join().unwrap().map_err(TestCaseError::fail)?;
            total.reads += c.reads;
            total.gets += c.gets;
        }
        let s = e.stats();
        prop_assert_eq!(s.requests.reads, total.reads);
        prop_assert_eq!(s.requests.gets, total.gets);
        prop_assert_eq!(s.arc.hits + s.arc.misses, total.reads + total.gets);
        prop_assert_eq!(s.arc.mru_hits + s.arc.mfu_hits, s.arc.hits);
        prop_assert!(s.sizes.mru_bytes + s.sizes.mfu_bytes <= s.sizes.c);
        e.shutdown().unwrap();
        prop_assert_eq!(e.stats().pool.outstanding, 0);
    }
}
