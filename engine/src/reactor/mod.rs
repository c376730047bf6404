//! Reactors, the bottom layer (SPDK's `lib/thread`): a thread that loops
//! over its message ring, its pollers and its timers. A reactor is generic
//! over the [`Host`] it runs, and imports nothing from the rest of the
//! crate.
//!
//! Threading rule: a reactor's host is touched only by that reactor's
//! thread. Everyone else talks to it through its [`Mailbox`].

mod poller;
mod ring;
mod timer;

pub use poller::{PollStatus, Poller};
pub use ring::{Mailbox, Pushed, Unpark};
pub use timer::{TimerId, Timers};

use std::time::{Duration, Instant};

/// How a reactor waits when it has nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleStrategy {
    /// Poll forever, as SPDK does: lowest latency, one core per reactor
    /// at 100% all the time.
    Busy,
    /// Yield the core for a while (`spin_before_park`), then park until a
    /// message or a timer; while a poller has I/O in flight
    /// ([`PollStatus::Waiting`]), yield but never park. The default: the
    /// embedded default runs on
    /// laptops and CI machines, where burning every core while idle is not
    /// acceptable; under load it never parks, so throughput is the same as
    /// `Busy`.
    #[default]
    Adaptive,
}

/// Whether reactors are pinned to cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pinning {
    /// Do not pin.
    Off,
    /// Pin; if that fails, log it, record it in stats and go on (default).
    #[default]
    BestEffort,
    /// Pin, and refuse to start with more reactors than cores or when a
    /// pin fails.
    Required,
}

/// Counters of a reactor's loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Messages taken from the ring.
    pub messages: u64,
    /// Loop iterations that did work.
    pub busy_loops: u64,
    /// Loop iterations that found nothing to do.
    pub idle_loops: u64,
    /// Times the reactor parked (adaptive idle).
    pub parks: u64,
}

/// What a reactor runs: its state and how it takes messages.
pub trait Host: Sized + 'static {
    /// The messages of its ring.
    type Msg: Send;
    /// Handles one message.
    fn handle(&mut self, msg: Self::Msg, sched: &mut Sched<Self>);
    /// End of a loop iteration: sends what was batched for peers. True
    /// when it sent anything. Default: nothing to send.
    fn flush(&mut self) -> bool {
        false
    }
    /// True once the host was told to stop and has nothing in flight: the
    /// reactor then exits at its next idle iteration.
    fn finished(&self) -> bool;
    /// The loop's counters, kept by the host for its statistics.
    fn loop_counters(&mut self) -> &mut LoopCounters;
    /// A message left in the ring when the reactor stopped: it will never
    /// be handled. Default: dropped.
    fn reject(&mut self, msg: Self::Msg) {
        drop(msg);
    }
}

/// A timer callback: gets the host and the scheduler; returns the delay
/// until it runs again, or `None`.
pub type TimerFn<H> = Box<dyn FnMut(&mut H, &mut Sched<H>) -> Option<Duration>>;

/// What message handlers, pollers and timers may change on their reactor:
/// its timers and pollers. Also holds the reactor's clock, read at most
/// every [`CLOCK_EVERY`] busy iterations (reading it every iteration cost
/// 7–10% of a reactor in profiles), so timers are as precise as that.
pub struct Sched<H> {
    timers: Timers<TimerFn<H>>,
    added: Vec<Box<dyn Poller<H>>>,
    now: Instant,
    /// The clock must be read on the next iteration (after a park).
    stale: bool,
}

impl<H> std::fmt::Debug for Sched<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sched")
            .field("timers", &self.timers)
            .finish()
    }
}

/// Busy iterations between two reads of the clock.
pub const CLOCK_EVERY: u32 = 64;

impl<H> Sched<H> {
    /// A scheduler whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Sched {
            timers: Timers::default(),
            added: Vec::new(),
            now,
            stale: false,
        }
    }

    /// The reactor's clock: the time when the loop last read it.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Runs `f` once, `delay` from now.
    pub fn after(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut H, &mut Sched<H>) + 'static,
    ) -> TimerId {
        let mut f = Some(f);
        self.timers.add(
            self.now + delay,
            Box::new(move |h, s| {
                if let Some(f) = f.take() {
                    f(h, s);
                }
                None
            }),
        )
    }

    /// Runs `f` `first` from now, then again after each delay it returns,
    /// until it returns `None`.
    pub fn repeat(
        &mut self,
        first: Duration,
        f: impl FnMut(&mut H, &mut Sched<H>) -> Option<Duration> + 'static,
    ) -> TimerId {
        self.timers.add(self.now + first, Box::new(f))
    }

    /// Runs `f` every `period`, the first time `period` from now.
    pub fn every(
        &mut self,
        period: Duration,
        mut f: impl FnMut(&mut H, &mut Sched<H>) + 'static,
    ) -> TimerId {
        self.timers.add(
            self.now + period,
            Box::new(move |h, s| {
                f(h, s);
                Some(period)
            }),
        )
    }

    /// Disarms a timer.
    pub fn cancel(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }

    /// Starts a poller on this reactor from the next loop iteration.
    pub fn spawn(&mut self, poller: Box<dyn Poller<H>>) {
        self.added.push(poller);
    }

    /// Runs every timer due at the reactor's clock; returns how many ran.
    fn run_due(&mut self, host: &mut H) -> usize {
        let mut ran = 0;
        while let Some((id, mut f)) = self.timers.pop_due(self.now) {
            ran += 1;
            if let Some(again) = f(host, self) {
                self.timers.rearm(id, self.now + again, f);
            }
        }
        ran
    }
}

/// How one reactor waits when idle, and how many messages it takes per
/// iteration.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Idle strategy.
    pub idle: IdleStrategy,
    /// How long an adaptive reactor yields before it parks.
    pub spin_before_park: Duration,
    /// Messages per loop iteration before the pollers run.
    pub batch: usize,
}

/// A reactor: its pollers and its scheduler. Its host and mailbox are
/// given to [`Reactor::run`] (or, one iteration at a time, to
/// [`Reactor::step`]).
pub struct Reactor<H> {
    pollers: Vec<Box<dyn Poller<H>>>,
    sched: Sched<H>,
    /// The last step had work in flight that no message will announce.
    waiting: bool,
}

impl<H> std::fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("pollers", &self.pollers.len())
            .field("sched", &self.sched)
            .finish()
    }
}

impl<H: Host> Default for Reactor<H> {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl<H: Host> Reactor<H> {
    /// A reactor with no pollers and no timers, its clock at `now`.
    pub fn new(now: Instant) -> Self {
        Reactor {
            pollers: Vec::new(),
            sched: Sched::new(now),
            waiting: false,
        }
    }

    /// The scheduler, to arm timers and start pollers before the loop runs.
    pub fn sched(&mut self) -> &mut Sched<H> {
        &mut self.sched
    }

    /// One loop iteration: up to `batch` messages, every poller, the
    /// timers due (only when `now` is given: the clock moves then), and
    /// the host's flush. True when anything did work.
    pub fn step(
        &mut self,
        host: &mut H,
        mailbox: &Mailbox<H::Msg>,
        batch: usize,
        now: Option<Instant>,
    ) -> bool {
        let mut busy = false;
        let mut waiting = false;
        for _ in 0..batch {
            let Some(m) = mailbox.pop() else { break };
            host.loop_counters().messages += 1;
            host.handle(m, &mut self.sched);
            busy = true;
        }
        self.pollers.append(&mut self.sched.added);
        let sched = &mut self.sched;
        self.pollers.retain_mut(|p| match p.poll(host, sched) {
            PollStatus::Busy => {
                busy = true;
                true
            }
            PollStatus::Waiting => {
                waiting = true;
                true
            }
            PollStatus::Idle => true,
            PollStatus::Done => {
                busy = true;
                false
            }
        });
        if let Some(now) = now {
            self.sched.now = now;
            self.sched.stale = false;
            if self.sched.run_due(host) > 0 {
                busy = true;
            }
        }
        if host.flush() {
            busy = true;
        }
        self.waiting = waiting;
        busy
    }

    /// True while a task poller runs or was started.
    fn has_tasks(&self) -> bool {
        self.pollers
            .iter()
            .chain(&self.sched.added)
            .any(|p| p.is_task())
    }

    /// The loop: runs until the host is finished, no task runs and the
    /// mailbox is empty, then closes the mailbox (a producer that finds it
    /// closed drains it itself).
    pub fn run(mut self, cfg: &LoopConfig, mailbox: &Mailbox<H::Msg>, host: &mut H) {
        let mut idle_since: Option<Instant> = None;
        let mut idle_spins = 0u32;
        let mut iteration = 0u32;
        loop {
            iteration = iteration.wrapping_add(1);
            let read_clock =
                self.sched.stale || (iteration % CLOCK_EVERY == 0 && !self.sched.timers.is_empty());
            let now = read_clock.then(Instant::now);
            if self.step(host, mailbox, cfg.batch, now) {
                host.loop_counters().busy_loops += 1;
                idle_since = None;
                idle_spins = 0;
                continue;
            }
            host.loop_counters().idle_loops += 1;
            if host.finished() && !self.has_tasks() && mailbox.is_empty() {
                break;
            }
            match cfg.idle {
                IdleStrategy::Busy => std::hint::spin_loop(),
                // Device I/O in flight: give the core away for a moment
                // (a client or the kernel may need it) but never park, as
                // no message will say that the I/O completed.
                IdleStrategy::Adaptive if self.waiting => {
                    // Timers (I/O deadlines among them) still need a clock.
                    idle_spins += 1;
                    if idle_spins % 32 == 0 {
                        self.sched.stale = true;
                    }
                    std::thread::yield_now();
                }
                IdleStrategy::Adaptive => {
                    // The clock is read once per 32 idle iterations.
                    idle_spins += 1;
                    if idle_spins % 32 != 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    let now = Instant::now();
                    // Timers due while idle run on the next iteration.
                    self.sched.stale = true;
                    let since = *idle_since.get_or_insert(now);
                    if now - since < cfg.spin_before_park {
                        // Yield, not spin: where clients share the cores, a
                        // spinning reactor takes the core a client needs.
                        std::thread::yield_now();
                    } else {
                        let timeout = self
                            .sched
                            .timers
                            .next_deadline()
                            .map(|d| d.saturating_duration_since(now));
                        host.loop_counters().parks += 1;
                        mailbox.park(timeout);
                        idle_since = None;
                    }
                }
            }
        }
        mailbox.close();
        while let Some(m) = mailbox.pop() {
            host.reject(m);
        }
    }
}

/// Pins the calling thread to `core`. False when the OS refused.
pub fn pin(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A host that counts what reaches it.
    #[derive(Default)]
    struct Counter {
        got: Vec<u32>,
        ticks: u32,
        stop: bool,
        loops: LoopCounters,
    }

    impl Host for Counter {
        type Msg = u32;
        fn handle(&mut self, msg: u32, sched: &mut Sched<Self>) {
            if msg == 0 {
                self.stop = true;
            } else if msg == 99 {
                // A message may start a task.
                sched.spawn(Box::new(Countdown(3)));
            }
            self.got.push(msg);
        }
        fn finished(&self) -> bool {
            self.stop
        }
        fn loop_counters(&mut self) -> &mut LoopCounters {
            &mut self.loops
        }
    }

    struct Countdown(u32);
    impl Poller<Counter> for Countdown {
        fn poll(&mut self, host: &mut Counter, _: &mut Sched<Counter>) -> PollStatus {
            if self.0 == 0 {
                return PollStatus::Done;
            }
            self.0 -= 1;
            host.ticks += 1;
            PollStatus::Busy
        }
        fn is_task(&self) -> bool {
            true
        }
    }

    #[test]
    fn step_runs_messages_pollers_and_due_timers_on_the_given_clock() {
        let t0 = Instant::now();
        let mut r: Reactor<Counter> = Reactor::new(t0);
        let mut h = Counter::default();
        let mb = Mailbox::new(std::thread::current());
        r.sched()
            .every(Duration::from_millis(10), |h: &mut Counter, _| {
                h.ticks += 100
            });
        let _ = mb.push(99);
        // The task starts polling in the iteration that spawned it.
        assert!(r.step(&mut h, &mb, 8, None));
        assert_eq!((h.got.clone(), h.ticks), (vec![99], 1));
        // The timer waits for the clock to reach it.
        assert!(r.step(&mut h, &mb, 8, Some(t0 + Duration::from_millis(5))));
        assert_eq!(h.ticks, 2);
        r.step(&mut h, &mb, 8, Some(t0 + Duration::from_millis(10)));
        assert_eq!(h.ticks, 103, "the periodic timer ran once");
        assert!(r.step(&mut h, &mb, 8, None), "Done counts as busy");
        assert!(!r.step(&mut h, &mb, 8, None), "nothing left to do");
    }

    /// I/O in flight that completes without a message.
    struct Io {
        due: Instant,
        done_after: Option<Duration>,
        started: Instant,
    }
    impl Poller<Counter> for Io {
        fn poll(&mut self, _: &mut Counter, _: &mut Sched<Counter>) -> PollStatus {
            if self.done_after.is_some() {
                return PollStatus::Idle;
            }
            if Instant::now() < self.due {
                return PollStatus::Waiting;
            }
            self.done_after = Some(self.started.elapsed());
            PollStatus::Busy
        }
    }

    #[test]
    fn a_poller_waiting_on_io_keeps_an_adaptive_reactor_from_parking() {
        let mb = Arc::new(Mailbox::new(std::thread::current()));
        let mut h = Counter::default();
        let mut r: Reactor<Counter> = Reactor::default();
        let started = Instant::now();
        let io = std::rc::Rc::new(std::cell::Cell::new(None));
        struct Watch(Io, std::rc::Rc<std::cell::Cell<Option<Duration>>>);
        impl Poller<Counter> for Watch {
            fn poll(&mut self, h: &mut Counter, s: &mut Sched<Counter>) -> PollStatus {
                let st = self.0.poll(h, s);
                self.1.set(self.0.done_after);
                st
            }
        }
        r.sched().spawn(Box::new(Watch(
            Io {
                due: started + Duration::from_millis(20),
                done_after: None,
                started,
            },
            io.clone(),
        )));
        let stopper = {
            let mb = mb.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                let _ = mb.push(0);
            })
        };
        let cfg = LoopConfig {
            idle: IdleStrategy::Adaptive,
            spin_before_park: Duration::from_micros(10),
            batch: 32,
        };
        r.run(&cfg, &mb, &mut h);
        stopper.join().unwrap();
        let after = io.get().expect("the I/O completed");
        // Parked, it would have seen the I/O only when the stop came (2 s).
        assert!(after < Duration::from_millis(1000), "seen after {after:?}");
    }

    #[test]
    fn the_loop_waits_for_its_tasks_then_exits_and_closes_the_ring() {
        let mb = Arc::new(Mailbox::new(std::thread::current()));
        let _ = mb.push(99);
        let _ = mb.push(0);
        let mut h = Counter::default();
        let r: Reactor<Counter> = Reactor::default();
        let cfg = LoopConfig {
            idle: IdleStrategy::Adaptive,
            spin_before_park: Duration::from_micros(10),
            batch: 32,
        };
        r.run(&cfg, &mb, &mut h);
        assert_eq!(h.got, vec![99, 0]);
        assert_eq!(h.ticks, 3, "the task ran to its end before the loop exited");
        assert_eq!(mb.push(5), Pushed::Closed);
    }
}
