//! The reactor's message ring: a crossbeam MPSC queue plus the wake-up
//! protocol that lets an idle reactor park without losing a message.
//!
//! The queue is `crossbeam_queue::SegQueue`, unchanged: unbounded, so two
//! reactors sending to each other can never deadlock on a full ring. What
//! is ours is the wake-up word, and that is what the loom test checks.
//!
//! Protocol (a Dekker pair, hence the SeqCst fences):
//! * producer: push; fence; if SLEEPING was set, clear it and unpark.
//! * consumer: set SLEEPING; fence; re-check the queue; park only if empty.
//!
//! Either the consumer sees the message on its re-check, or the producer
//! sees SLEEPING and unparks it. `CLOSED` works the same way for shutdown:
//! a producer that sees it after pushing drains the queue itself.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU8, Ordering::SeqCst};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU8, Ordering::SeqCst};

#[cfg(loom)]
use loom::thread;
#[cfg(not(loom))]
use std::thread;

/// Something that can wake the consumer: its thread handle (std's, or
/// loom's under the model checker).
pub trait Unpark: Send + Sync {
    /// Wakes the consumer.
    fn unpark(&self);
}
impl Unpark for std::thread::Thread {
    fn unpark(&self) {
        std::thread::Thread::unpark(self)
    }
}
#[cfg(loom)]
impl Unpark for loom::thread::Thread {
    fn unpark(&self) {
        loom::thread::Thread::unpark(self)
    }
}

use crossbeam_utils::CachePadded;

const SLEEPING: u8 = 1;
const CLOSED: u8 = 2;

#[cfg(not(loom))]
type Queue<T> = crossbeam_queue::SegQueue<T>;

/// Under loom the queue is a mutex-guarded deque: loom cannot see inside
/// crossbeam, and the property under test is the wake-up word.
#[cfg(loom)]
#[derive(Debug)]
struct Queue<T>(loom::sync::Mutex<std::collections::VecDeque<T>>);
#[cfg(loom)]
impl<T> Queue<T> {
    fn new() -> Self {
        Queue(loom::sync::Mutex::new(Default::default()))
    }
    fn push(&self, t: T) {
        self.0.lock().unwrap().push_back(t)
    }
    fn pop(&self) -> Option<T> {
        self.0.lock().unwrap().pop_front()
    }
    fn is_empty(&self) -> bool {
        self.0.lock().unwrap().is_empty()
    }
}

/// What a push found.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Pushed {
    /// The consumer will see the message.
    Delivered,
    /// The ring is closed: the caller must drain it with [`Mailbox::pop`]
    /// and reject what it finds, as the consumer has gone.
    Closed,
}

/// A multi-producer, single-consumer mailbox with park/unpark wake-ups.
#[derive(Debug)]
pub struct Mailbox<T, U = std::thread::Thread> {
    queue: CachePadded<Queue<T>>,
    state: CachePadded<AtomicU8>,
    consumer: U,
}

impl<T, U: Unpark> Mailbox<T, U> {
    /// A mailbox whose consumer thread is `consumer`.
    pub fn new(consumer: U) -> Self {
        Mailbox {
            queue: CachePadded::new(Queue::new()),
            state: CachePadded::new(AtomicU8::new(0)),
            consumer,
        }
    }

    /// Sends a message, waking the consumer if it sleeps.
    pub fn push(&self, msg: T) -> Pushed {
        self.queue.push(msg);
        fence(SeqCst);
        let s = self.state.load(SeqCst);
        if s & SLEEPING != 0 && self.state.fetch_and(!SLEEPING, SeqCst) & SLEEPING != 0 {
            self.consumer.unpark();
        }
        if s & CLOSED != 0 {
            Pushed::Closed
        } else {
            Pushed::Delivered
        }
    }

    /// Takes the oldest message. The consumer calls it; so may a producer
    /// that was told [`Pushed::Closed`].
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Consumer side: parks until a message arrives or `timeout` passes
    /// (`None`: no timeout). Returns at once if a message is already there.
    pub fn park(&self, timeout: Option<std::time::Duration>) {
        self.state.fetch_or(SLEEPING, SeqCst);
        fence(SeqCst);
        if self.queue.is_empty() {
            match timeout {
                #[cfg(not(loom))]
                Some(t) => thread::park_timeout(t),
                #[cfg(loom)]
                Some(_) => thread::yield_now(),
                None => thread::park(),
            }
        }
        self.state.fetch_and(!SLEEPING, SeqCst);
    }

    /// True once the consumer has closed the ring.
    pub fn is_closed(&self) -> bool {
        self.state.load(SeqCst) & CLOSED != 0
    }

    /// Consumer side: marks the ring closed. Messages pushed from now on
    /// are drained by their producers; the consumer drains the rest.
    pub fn close(&self) {
        self.state.fetch_or(CLOSED, SeqCst);
        fence(SeqCst);
    }

    /// Producer side: pushes, and if the consumer has gone, drops whatever
    /// is left in the ring (dropping a request answers its waiter).
    pub fn send(&self, msg: T) -> Pushed {
        let pushed = self.push(msg);
        if pushed == Pushed::Closed {
            while self.pop().is_some() {}
        }
        pushed
    }

    /// Consumer side, when it stops: closes the ring and drops what is in it.
    pub fn close_and_drain(&self) {
        self.close();
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn messages_arrive_in_order_and_park_returns_when_one_waits() {
        let m = Mailbox::new(thread::current());
        assert_eq!(m.push(1), Pushed::Delivered);
        assert_eq!(m.push(2), Pushed::Delivered);
        m.park(None); // must not block: the queue is not empty
        assert_eq!((m.pop(), m.pop(), m.pop()), (Some(1), Some(2), None));
    }

    #[test]
    fn a_parked_consumer_is_woken_by_a_push() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = thread::spawn(move || {
            let m = Arc::new(Mailbox::new(thread::current()));
            tx.send(m.clone()).unwrap();
            let mut got = 0;
            while got < 1000 {
                match m.pop() {
                    Some(_) => got += 1,
                    None => m.park(None),
                }
            }
            got
        });
        let m: Arc<Mailbox<u32>> = rx.recv().unwrap();
        for i in 0..1000 {
            let _ = m.push(i);
            if i % 100 == 0 {
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert_eq!(h.join().unwrap(), 1000);
    }

    #[test]
    fn push_after_close_reports_closed() {
        let m = Mailbox::new(thread::current());
        m.close();
        assert_eq!(m.push(7), Pushed::Closed);
        assert_eq!(m.pop(), Some(7));
    }
}

/// Loom model of the wake-up word: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p polarc --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two producers, one consumer that parks whenever it sees an empty
    /// queue. A lost wake-up leaves the consumer parked forever, which
    /// loom reports as a deadlock in some interleaving.
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let m = Arc::new(Mailbox::new(thread::current()));
            let producers: Vec<_> = (0..2)
                .map(|i| {
                    let m = m.clone();
                    thread::spawn(move || {
                        let _ = m.push(i);
                    })
                })
                .collect();
            let mut got = 0;
            while got < 2 {
                match m.pop() {
                    Some(_) => got += 1,
                    None => m.park(None),
                }
            }
            for p in producers {
                p.join().unwrap();
            }
        });
    }

    /// Closing races a push: the message is taken by exactly one side.
    #[test]
    fn close_never_strands_a_message() {
        loom::model(|| {
            let m = Arc::new(Mailbox::new(thread::current()));
            let m2 = m.clone();
            let producer = thread::spawn(move || {
                let mut rejected = 0;
                if m2.push(1u8) == Pushed::Closed {
                    while m2.pop().is_some() {
                        rejected += 1;
                    }
                }
                rejected
            });
            m.close();
            let mut drained = 0;
            while m.pop().is_some() {
                drained += 1;
            }
            let rejected = producer.join().unwrap();
            // Exactly one side took the message; nothing is stranded.
            assert_eq!(drained + rejected, 1);
            assert!(m.is_empty());
        });
    }
}
