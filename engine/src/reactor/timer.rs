//! One-shot and periodic timers, run by the reactor loop when due.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Names an armed timer, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// The timers of one reactor: a heap of deadlines over the callbacks.
pub struct Timers<F> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    fns: HashMap<u64, F>,
    next_id: u64,
}

impl<F> std::fmt::Debug for Timers<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("armed", &self.fns.len())
            .finish()
    }
}

impl<F> Default for Timers<F> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            fns: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<F> Timers<F> {
    /// Arms `f` to run at `at`.
    pub fn add(&mut self, at: Instant, f: F) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.fns.insert(id, f);
        self.heap.push(Reverse((at, id)));
        TimerId(id)
    }

    /// Disarms a timer; a no-op for one that already ran for good.
    pub fn cancel(&mut self, id: TimerId) {
        self.fns.remove(&id.0);
    }

    /// The earliest deadline of an armed timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_cancelled();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the next timer due at `now`, if any. Re-arm it with
    /// [`Timers::rearm`] to keep it.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, F)> {
        loop {
            let &Reverse((t, id)) = self.heap.peek()?;
            if t > now {
                return None;
            }
            self.heap.pop();
            if let Some(f) = self.fns.remove(&id) {
                return Some((TimerId(id), f));
            }
        }
    }

    /// Arms a timer taken by [`Timers::pop_due`] again, under its id.
    pub fn rearm(&mut self, id: TimerId, at: Instant, f: F) {
        self.fns.insert(id.0, f);
        self.heap.push(Reverse((at, id.0)));
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }

    fn skip_cancelled(&mut self) {
        while let Some(&Reverse((_, id))) = self.heap.peek() {
            if self.fns.contains_key(&id) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type F = Box<dyn FnMut(&mut Vec<u32>) -> Option<Duration>>;

    fn run_due(t: &mut Timers<F>, now: Instant, v: &mut Vec<u32>) -> usize {
        let mut ran = 0;
        while let Some((id, mut f)) = t.pop_due(now) {
            ran += 1;
            if let Some(d) = f(v) {
                t.rearm(id, now + d, f);
            }
        }
        ran
    }

    #[test]
    fn due_timers_run_in_order_and_periodic_ones_rearm() {
        let mut t: Timers<F> = Timers::default();
        let now = Instant::now();
        t.add(
            now + Duration::from_millis(2),
            Box::new(|v| {
                v.push(2);
                None
            }),
        );
        t.add(
            now,
            Box::new(|v| {
                v.push(1);
                Some(Duration::from_millis(1))
            }),
        );
        let mut v = vec![];
        assert_eq!(run_due(&mut t, now, &mut v), 1);
        assert_eq!(v, vec![1]);
        assert_eq!(run_due(&mut t, now + Duration::from_millis(5), &mut v), 2);
        // The periodic timer was due again at now + 1 ms, before the other.
        assert_eq!(v, vec![1, 1, 2]);
        assert!(!t.is_empty(), "the periodic timer is re-armed");
    }

    #[test]
    fn a_cancelled_timer_never_runs_and_leaves_no_deadline() {
        let mut t: Timers<F> = Timers::default();
        let now = Instant::now();
        let id = t.add(
            now,
            Box::new(|v| {
                v.push(9);
                None
            }),
        );
        t.cancel(id);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        let mut v = vec![];
        assert_eq!(run_due(&mut t, now + Duration::from_secs(1), &mut v), 0);
        assert!(v.is_empty());
    }
}
