//! One-shot and periodic timers, run by the reactor loop when due.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A timer callback. Returns the delay until it runs again, or `None`.
pub type TimerFn<C> = Box<dyn FnMut(&mut C) -> Option<Duration> + Send>;

/// The timers of one reactor.
pub struct Timers<C> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    fns: std::collections::HashMap<u64, TimerFn<C>>,
    next_id: u64,
}

impl<C> std::fmt::Debug for Timers<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("armed", &self.heap.len())
            .finish()
    }
}

impl<C> Default for Timers<C> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            fns: std::collections::HashMap::new(),
            next_id: 0,
        }
    }
}

impl<C> Timers<C> {
    /// Arms `f` to run after `delay`.
    pub fn add(&mut self, delay: Duration, f: TimerFn<C>) {
        let id = self.next_id;
        self.next_id += 1;
        self.fns.insert(id, f);
        self.heap.push(Reverse((Instant::now() + delay, id)));
    }

    /// The earliest deadline, if any timer is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Runs every timer due at `now`; returns how many ran.
    pub fn run_due(&mut self, now: Instant, ctx: &mut C) -> usize {
        let mut ran = 0;
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            let Some(mut f) = self.fns.remove(&id) else {
                continue;
            };
            ran += 1;
            if let Some(again) = f(ctx) {
                self.fns.insert(id, f);
                self.heap.push(Reverse((now + again, id)));
            }
        }
        ran
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_run_in_order_and_periodic_ones_rearm() {
        let mut t: Timers<Vec<u32>> = Timers::default();
        t.add(
            Duration::from_millis(2),
            Box::new(|v| {
                v.push(2);
                None
            }),
        );
        t.add(
            Duration::ZERO,
            Box::new(|v| {
                v.push(1);
                Some(Duration::from_millis(1))
            }),
        );
        let mut v = vec![];
        let now = Instant::now();
        assert_eq!(t.run_due(now, &mut v), 1);
        assert_eq!(v, vec![1]);
        assert_eq!(t.run_due(now + Duration::from_millis(5), &mut v), 2);
        // The periodic timer was due again at now + 1 ms, before the other.
        assert_eq!(v, vec![1, 1, 2]);
        assert!(!t.is_empty(), "the periodic timer is re-armed");
    }
}
