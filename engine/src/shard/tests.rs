use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

fn k(i: u64) -> Vec<u8> {
    i.to_le_bytes().to_vec()
}

fn access(s: &mut Shard<()>, i: u64, size: u32) -> bool {
    let key = k(i);
    s.access(hash_key(&key), &key, size, || ())
}

fn state_of(s: &Shard<()>, i: u64) -> Option<State> {
    let key = k(i);
    s.find(hash_key(&key), &key).map(|idx| s.header(idx).state)
}

/// ARC exactly as printed in the paper (Fig. 4), on unit pages, with
/// `VecDeque`s: front = MRU. The reference for the shard's ARC.
struct PaperArc {
    c: usize,
    p: f64,
    t1: VecDeque<u64>,
    t2: VecDeque<u64>,
    b1: VecDeque<u64>,
    b2: VecDeque<u64>,
}

impl PaperArc {
    fn new(c: usize) -> Self {
        PaperArc {
            c,
            p: 0.0,
            t1: VecDeque::new(),
            t2: VecDeque::new(),
            b1: VecDeque::new(),
            b2: VecDeque::new(),
        }
    }
    fn take(l: &mut VecDeque<u64>, x: u64) -> bool {
        match l.iter().position(|&y| y == x) {
            Some(i) => {
                l.remove(i);
                true
            }
            None => false,
        }
    }
    fn replace(&mut self, in_b2: bool) {
        let t1 = self.t1.len() as f64;
        if !self.t1.is_empty() && ((in_b2 && t1 == self.p) || t1 > self.p) {
            let v = self.t1.pop_back().unwrap();
            self.b1.push_front(v);
        } else {
            let v = self.t2.pop_back().unwrap();
            self.b2.push_front(v);
        }
    }
    fn access(&mut self, x: u64) -> bool {
        if Self::take(&mut self.t1, x) || Self::take(&mut self.t2, x) {
            self.t2.push_front(x);
            return true;
        }
        if self.b1.contains(&x) {
            let d = if self.b1.len() >= self.b2.len() {
                1.0
            } else {
                self.b2.len() as f64 / self.b1.len() as f64
            };
            self.p = (self.p + d).min(self.c as f64);
            self.replace(false);
            Self::take(&mut self.b1, x);
            self.t2.push_front(x);
            return false;
        }
        if self.b2.contains(&x) {
            let d = if self.b2.len() >= self.b1.len() {
                1.0
            } else {
                self.b1.len() as f64 / self.b2.len() as f64
            };
            self.p = (self.p - d).max(0.0);
            self.replace(true);
            Self::take(&mut self.b2, x);
            self.t2.push_front(x);
            return false;
        }
        let l1 = self.t1.len() + self.b1.len();
        let total = l1 + self.t2.len() + self.b2.len();
        if l1 == self.c {
            if self.t1.len() < self.c {
                self.b1.pop_back();
                self.replace(false);
            } else {
                self.t1.pop_back();
            }
        } else if total >= self.c {
            if total == 2 * self.c {
                self.b2.pop_back();
            }
            self.replace(false);
        }
        self.t1.push_front(x);
        false
    }
}

#[test]
fn new_blocks_enter_mru_and_promote_to_mfu() {
    let mut s = Shard::new(4, Policy::Arc);
    assert!(!access(&mut s, 1, 1));
    assert_eq!(state_of(&s, 1), Some(State::Mru));
    assert!(access(&mut s, 1, 1));
    assert_eq!(state_of(&s, 1), Some(State::Mfu));
    assert_eq!(
        (s.counters.hits, s.counters.misses, s.counters.mru_hits),
        (1, 1, 1)
    );
}

#[test]
fn eviction_makes_ghosts_and_ghost_hits_adapt_p() {
    let mut s = Shard::new(4, Policy::Arc);
    for i in 0..4 {
        access(&mut s, i, 1);
    }
    access(&mut s, 0, 1); // 0 -> MFU
    for i in 4..7 {
        access(&mut s, i, 1);
    }
    // As in the paper: 1 went to B1 and was then deleted to keep
    // |T1|+|B1| <= c, as was 2; 3 is the ghost now.
    assert_eq!(state_of(&s, 1), None);
    assert_eq!(state_of(&s, 3), Some(State::MruGhost));
    let p0 = s.sizes().p;
    assert!(!access(&mut s, 3, 1));
    assert_eq!(s.counters.mru_ghost_hits, 1);
    assert!(s.sizes().p > p0);
    assert_eq!(state_of(&s, 3), Some(State::Mfu));
    let z = s.sizes();
    assert!(z.mru_bytes + z.mfu_bytes <= 4);
}

#[test]
fn lru_policy_evicts_least_recent() {
    let mut s = Shard::new(3, Policy::Lru);
    for i in 0..3 {
        access(&mut s, i, 1);
    }
    access(&mut s, 0, 1);
    access(&mut s, 3, 1); // evicts 1
    assert_eq!(state_of(&s, 1), None);
    assert!(access(&mut s, 0, 1));
    assert!(access(&mut s, 2, 1));
}

#[test]
fn too_large_block_is_refused_and_leaves_no_header() {
    let mut s: Shard<()> = Shard::new(100, Policy::Arc);
    assert!(!access(&mut s, 9, 101));
    assert_eq!(state_of(&s, 9), None);
    assert_eq!(s.counters.too_large, 1);
    assert_eq!(s.sizes().headers, 0);
}

#[test]
fn invalidate_during_fill_detaches_and_fill_is_rejected() {
    let mut s: Shard<u32> = Shard::new(100, Policy::Arc);
    let key = k(5);
    let h = hash_key(&key);
    let idx = s.begin_fill(h, &key);
    assert!(s.invalidate(h, &key));
    assert_eq!(s.find(h, &key), None);
    // A new fill of the same key may start while the old one is in flight.
    let idx2 = s.begin_fill(h, &key);
    assert_ne!(idx, idx2);
    assert_eq!(
        s.complete_fill(idx, 10, 7, Flags::empty()),
        Err((Rejected::Detached, 7))
    );
    assert_eq!(s.complete_fill(idx2, 10, 8, Flags::empty()), Ok(()));
    assert_eq!(s.header(s.find(h, &key).unwrap()).data, Some(8));
    assert_eq!(s.sizes().headers, 1);
}

#[test]
fn aborted_fill_of_new_key_leaves_nothing_and_of_ghost_keeps_ghost() {
    let mut s: Shard<()> = Shard::new(2, Policy::Arc);
    let key = k(1);
    let h = hash_key(&key);
    let idx = s.begin_fill(h, &key);
    s.abort_fill(idx);
    assert_eq!(s.find(h, &key), None);
    assert_eq!(s.sizes().headers, 0);
    for i in [0, 1, 0, 2] {
        access(&mut s, i, 1);
    }
    assert_eq!(state_of(&s, 1), Some(State::MruGhost));
    let key1 = k(1);
    let idx = s.begin_fill(hash_key(&key1), &key1);
    s.abort_fill(idx);
    assert_eq!(state_of(&s, 1), Some(State::MruGhost));
}

#[test]
fn ghost_trimmed_during_fill_becomes_anon_then_fills_as_new() {
    let mut s: Shard<()> = Shard::new(2, Policy::Arc);
    for i in [0, 1, 0, 2] {
        access(&mut s, i, 1);
    }
    assert_eq!(state_of(&s, 1), Some(State::MruGhost));
    let key1 = k(1);
    let idx = s.begin_fill(hash_key(&key1), &key1);
    for i in 10..20 {
        access(&mut s, i, 1);
    }
    assert_eq!(s.header(idx).state, State::Anon);
    s.complete_fill(idx, 1, (), Flags::empty()).unwrap();
    assert_eq!(s.header(idx).state, State::Mru);
}

#[test]
fn header_bytes_are_reported_and_slots_are_reused() {
    let mut s: Shard<()> = Shard::new(1000, Policy::Arc);
    for i in 0..100 {
        access(&mut s, i, 1);
    }
    let before = s.sizes();
    assert_eq!(before.headers, 100);
    assert!(before.hdr_bytes >= 100 * (std::mem::size_of::<Header<()>>() as u64 + 8));
    for i in 0..100 {
        let key = k(i);
        assert!(s.invalidate(hash_key(&key), &key));
    }
    for i in 100..200 {
        access(&mut s, i, 1);
    }
    assert_eq!(s.slab.len(), 100, "freed slots are reused");
}

proptest! {
    /// The shard's byte-sized ARC, given unit sizes, makes exactly the
    /// hit/miss decisions of the paper's page ARC, and keeps p equal.
    #[test]
    fn matches_paper_arc_on_unit_pages(c in 1usize..24, trace in prop::collection::vec(0u64..60, 1..600)) {
        let mut s = Shard::new(c as u64, Policy::Arc);
        let mut r = PaperArc::new(c);
        for &x in &trace {
            prop_assert_eq!(access(&mut s, x, 1), r.access(x), "key {}", x);
            prop_assert_eq!(s.sizes().p, r.p);
            prop_assert_eq!(s.sizes().mru_bytes as usize, r.t1.len());
            prop_assert_eq!(s.sizes().mfu_ghost_bytes as usize, r.b2.len());
        }
    }

    /// With variable sizes the byte bounds hold after every access.
    #[test]
    fn byte_bounds_hold_with_variable_sizes(c in 100u64..5000, trace in prop::collection::vec((0u64..200, 1u32..600), 1..800)) {
        let mut s = Shard::new(c, Policy::Arc);
        for &(x, size) in &trace {
            // Keys are immutable blocks: the size is a function of the key.
            let size = 1 + (size + x as u32 * 7) % 600;
            access(&mut s, x, size);
            let z = s.sizes();
            prop_assert!(z.mru_bytes + z.mfu_bytes <= c);
            prop_assert!(z.mru_bytes + z.mru_ghost_bytes <= c);
            prop_assert!(z.mru_bytes + z.mfu_bytes + z.mru_ghost_bytes + z.mfu_ghost_bytes <= 2 * c);
            prop_assert!(z.p >= 0.0 && z.p <= c as f64);
        }
    }
}
