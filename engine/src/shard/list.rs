//! Intrusive doubly-linked lists of headers, linked by slab index.
//! The head is the MRU end, the tail the LRU end.

use super::header::{Header, HeaderIdx, NIL};

/// One ARC list (T1, T2, B1 or B2), with its byte and block totals.
#[derive(Debug, Clone)]
pub struct List {
    head: HeaderIdx,
    tail: HeaderIdx,
    /// Sum of the sizes of the headers on the list.
    pub bytes: u64,
    /// Number of headers on the list.
    pub len: u64,
}

impl Default for List {
    fn default() -> Self {
        List::EMPTY
    }
}

impl List {
    /// An empty list.
    pub const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        bytes: 0,
        len: 0,
    };

    /// The least recently used header, if any.
    pub fn tail(&self) -> Option<HeaderIdx> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Links `idx` at the MRU end.
    pub fn push_front<T>(&mut self, slab: &mut [Header<T>], idx: HeaderIdx) {
        let old = self.head;
        {
            let h = &mut slab[idx as usize];
            h.prev = NIL;
            h.next = old;
            self.bytes += u64::from(h.size);
        }
        if old == NIL {
            self.tail = idx;
        } else {
            slab[old as usize].prev = idx;
        }
        self.head = idx;
        self.len += 1;
    }

    /// Unlinks `idx`, which must be on this list.
    pub fn remove<T>(&mut self, slab: &mut [Header<T>], idx: HeaderIdx) {
        let (prev, next, size) = {
            let h = &slab[idx as usize];
            (h.prev, h.next, h.size)
        };
        if prev == NIL {
            self.head = next;
        } else {
            slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slab[next as usize].prev = prev;
        }
        let h = &mut slab[idx as usize];
        h.prev = NIL;
        h.next = NIL;
        self.bytes -= u64::from(size);
        self.len -= 1;
    }

    /// Walks from the LRU end towards the MRU end.
    pub fn iter_from_tail<'a, T>(
        &self,
        slab: &'a [Header<T>],
    ) -> impl Iterator<Item = HeaderIdx> + 'a {
        let mut cur = self.tail;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let idx = cur;
            cur = slab[idx as usize].prev;
            Some(idx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slab(n: usize) -> Vec<Header<()>> {
        (0..n)
            .map(|i| Header::new(vec![i as u8].into_boxed_slice(), 10 + i as u32))
            .collect()
    }

    #[test]
    fn push_remove_keeps_order_and_totals() {
        let mut s = slab(4);
        let mut l = List::default();
        for i in 0..4 {
            l.push_front(&mut s, i);
        }
        assert_eq!(l.iter_from_tail(&s).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(l.bytes, 10 + 11 + 12 + 13);
        l.remove(&mut s, 2);
        l.remove(&mut s, 0);
        assert_eq!(l.iter_from_tail(&s).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(l.tail(), Some(1));
        assert_eq!((l.len, l.bytes), (2, 11 + 13));
        l.remove(&mut s, 3);
        l.remove(&mut s, 1);
        assert_eq!(l.tail(), None);
        assert_eq!((l.len, l.bytes), (0, 0));
    }
}
