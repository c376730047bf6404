//! The client API: [`Engine`] and [`EngineBuilder`].
#![forbid(unsafe_code)]

use crate::backing::{BackingStore, ReadDone};
use crate::block::Block;
use crate::bufpool::BufPool;
use crate::config::{Config, WhenFull};
use crate::core::msg::{MailboxLink, Mailboxes, Msg};
use crate::core::{pollers, Core, InFlight, Limits};
use crate::device::BlockDevice;
use crate::error::{BackingError, Error, Result};
#[cfg(feature = "jobs")]
use crate::job::{Job, JobReport, JobSpec};
use crate::l2::{DevShared, L2Config, L2Setup, L2};
use crate::reactor::{self, IdleStrategy, LoopConfig, Mailbox, Pinning, Reactor};
use crate::request::{MsgKey, Op, Outcome, Reply, Request};
use crate::shard::{hash_key, shard_of, Policy, Shard, StageRules};
use crate::stats::{ReactorStats, Stats};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The default backing store: it has no blocks, so a read of a key that
/// was never inserted fails with [`BackingError::NotFound`]. Set a real
/// one with [`EngineBuilder::backing`].
#[derive(Debug)]
struct NoBacking;

impl BackingStore for NoBacking {
    fn read(&self, key: &[u8], done: ReadDone) {
        done.complete(Err(BackingError::NotFound(crate::backing::hex_key(key))));
    }
    fn describe(&self) -> String {
        "none (cache only)".into()
    }
}

/// Builds an [`Engine`]. Every setter documents its default; see also
/// [`Config`].
#[derive(Clone)]
pub struct EngineBuilder {
    config: Config,
    backing: Option<Arc<dyn BackingStore>>,
    l2_devices: Vec<Arc<dyn BlockDevice>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident : $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self {
            self.config.$name = v;
            self
        }
    };
}

impl EngineBuilder {
    setter!(
        /// Reactors (and shards). Default: the number of available cores.
        reactors: usize
    );
    setter!(
        /// Pinning mode. Default: [`Pinning::BestEffort`].
        pinning: Pinning
    );
    setter!(
        /// Idle strategy. Default: [`IdleStrategy::Adaptive`].
        idle: IdleStrategy
    );
    setter!(
        /// Spin time before an adaptive reactor parks. Default: 100 µs.
        spin_before_park: Duration
    );
    setter!(
        /// ARC capacity in bytes, over all shards. Default: 256 MiB.
        arc_capacity: u64
    );
    setter!(
        /// Replacement policy. Default: [`Policy::Arc`].
        policy: Policy
    );
    setter!(
        /// Largest block in bytes (power of two, 512 B to 2 MiB). Default: 1 MiB.
        max_block_size: usize
    );
    setter!(
        /// Try hugepages for the buffer pool. Default: true.
        hugepages: bool
    );
    setter!(
        /// Messages per reactor loop iteration. Default: 32.
        message_batch: usize
    );
    setter!(
        /// How long a backing read may take before its callers get a
        /// timeout error. Default: 30 s (see [`Config::backing_timeout`]).
        backing_timeout: Duration
    );
    setter!(
        /// How long a shutdown waits for I/O in flight. Default: 10 s.
        shutdown_timeout: Duration
    );
    setter!(
        /// Longest key in bytes. Default: 4096.
        max_key_len: usize
    );
    setter!(
        /// Client requests in flight per reactor. Default: 65536.
        max_in_flight: usize
    );
    setter!(
        /// Stamp client reads with when their reactor took and answered
        /// them ([`Block::timing`]). Default: false.
        timing: bool
    );
    setter!(
        /// What a client finds past `max_in_flight`. Default:
        /// [`WhenFull::Wait`].
        when_full: WhenFull
    );

    /// Cores to pin reactor i to. Default: the OS's core list, in order.
    #[must_use]
    pub fn cores(mut self, cores: Vec<usize>) -> Self {
        self.config.cores = Some(cores);
        self
    }

    /// Buffer pool bytes. Default: `arc_capacity` × 1.5 + 32 MiB.
    #[must_use]
    pub fn pool_capacity(mut self, bytes: u64) -> Self {
        self.config.pool_capacity = Some(bytes);
        self
    }

    /// The backing store. Default: none; reads of keys never inserted fail
    /// with `NotFound`.
    #[must_use]
    pub fn backing(mut self, store: impl BackingStore) -> Self {
        self.backing = Some(Arc::new(store));
        self
    }

    /// Adds an L2 device (repeat for more; each gets its own feeder).
    /// Default: none, no L2 tier.
    #[must_use]
    pub fn l2_device(mut self, device: impl BlockDevice) -> Self {
        self.l2_devices.push(Arc::new(device));
        self
    }

    /// Adds an L2 device already shared.
    #[must_use]
    pub fn l2_device_arc(mut self, device: Arc<dyn BlockDevice>) -> Self {
        self.l2_devices.push(device);
        self
    }

    /// The L2 knobs. Default: [`L2Config::default`].
    #[must_use]
    pub fn l2_config(mut self, l2: L2Config) -> Self {
        self.config.l2 = l2;
        self
    }

    /// Replaces the whole configuration.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The configuration as set so far.
    pub fn current_config(&self) -> &Config {
        &self.config
    }

    /// Validates the configuration, maps the pool and starts the reactors.
    pub fn build(self) -> Result<Engine> {
        let cfg = self.config;
        cfg.validate()?;
        let n = cfg.reactors;
        let startup = |e: std::io::Error| Error::Startup(Arc::new(e));
        let l2_devices = check_l2_devices(&cfg, self.l2_devices)?;
        let pool_bytes = cfg.pool_capacity_with_l2(l2_devices.len())?;
        let pool_bytes = usize::try_from(pool_bytes)
            .map_err(|_| Error::Config("pool_capacity does not fit in memory".into()))?;
        // Feed writes are pool buffers too: buffers reach the write size.
        let max_class = if l2_devices.is_empty() {
            cfg.max_block_size
        } else {
            cfg.max_block_size
                .max(cfg.l2.write_size.min(crate::bufpool::HUGEPAGE))
        };
        // A device that needs its buffers in its own memory (SPDK's DMA
        // memory) provides the pool's region.
        let device_region = l2_devices.iter().find_map(|d| d.pool_region(pool_bytes));
        // I/O buffers aligned to the devices' blocks (O_DIRECT).
        let io_align = l2_devices
            .iter()
            .map(|d| d.info().block_size as usize)
            .fold(crate::bufpool::IO_ALIGN, usize::max);
        let pool = match device_region {
            Some(region) => {
                BufPool::from_region_aligned(region.map_err(startup)?, max_class, io_align)
            }
            None => BufPool::new_aligned(pool_bytes, max_class, io_align, cfg.hugepages)
                .map_err(startup)?,
        };
        let l2_setup = start_l2_devices(&cfg, l2_devices, &pool)?;
        let backing = self.backing.unwrap_or_else(|| Arc::new(NoBacking));
        let core_ids = match cfg.pinning {
            Pinning::Off => None,
            _ => {
                let all: Vec<usize> = core_affinity::get_core_ids()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                match &cfg.cores {
                    Some(list) => Some(list.clone()),
                    None if all.is_empty() => None,
                    None => Some(all),
                }
            }
        };
        if cfg.pinning == Pinning::Required && core_ids.is_none() {
            return Err(Error::Config(
                "pinning required, but this OS reports no cores".into(),
            ));
        }

        // Threads first, so each mailbox can name its consumer thread.
        // A reactor builds its Core on its own thread, because device
        // queues belong to the thread that polls them.
        type MakeCore = Box<dyn FnOnce(&mut Reactor<Core>) -> Result<Core> + Send>;
        type Setup = (Mailboxes, usize, MakeCore, oneshot::Sender<Result<()>>);
        let mut threads = Vec::with_capacity(n);
        let mut setups = Vec::with_capacity(n);
        let lc = LoopConfig {
            idle: cfg.idle,
            spin_before_park: cfg.spin_before_park,
            batch: cfg.message_batch,
        };
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel::<Setup>();
            let core_id = core_ids.as_ref().map(|c| c[i % c.len()]);
            let (lc, pool) = (lc.clone(), pool.clone());
            let t = std::thread::Builder::new()
                .name(format!("polarc-r{i}"))
                .spawn(move || {
                    let Ok((peers_for_guard, me, make_core, ready)) = rx.recv() else {
                        return None;
                    };
                    let mailbox = peers_for_guard[me].clone();
                    let guard = CloseOnUnwind(mailbox.clone(), peers_for_guard.clone());
                    // Pinned first, so that device queues open on the core
                    // that polls them.
                    let pinned = core_id.map(|c| (c, reactor::pin(c)));
                    let magazine = pool.register_local_cache();
                    let mut r = Reactor::default();
                    let mut core = match make_core(&mut r) {
                        Ok(core) => core,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return None;
                        }
                    };
                    match pinned {
                        Some((c, true)) => core.pinned_core = Some(c),
                        Some((c, false)) => {
                            core.pin_failed = true;
                            log::warn!("reactor {i}: could not pin to core {c}; running unpinned");
                        }
                        None => {}
                    }
                    let _ = ready.send(Ok(()));
                    r.run(&lc, &mailbox, &mut core);
                    let stats = core.stats();
                    // Every buffer the shard held goes back before the
                    // reactor's magazine is given back.
                    drop(core);
                    drop(magazine);
                    std::mem::forget(guard);
                    Some(stats)
                })
                .map_err(startup)?;
            setups.push(tx);
            threads.push(t);
        }
        let mailboxes: Mailboxes = threads
            .iter()
            .map(|t| Arc::new(Mailbox::new(t.thread().clone())))
            .collect();
        let per_shard = cfg.arc_capacity / n as u64;
        let in_flight: Vec<InFlight> = (0..n).map(|_| InFlight::default()).collect();
        let limits = Limits {
            max_block: cfg.max_block_size,
            backing_timeout: cfg.backing_timeout,
            shutdown_timeout: cfg.shutdown_timeout,
            max_in_flight: cfg.max_in_flight,
            timing: cfg.timing,
        };
        let mut readies = Vec::with_capacity(n);
        for (i, tx) in setups.into_iter().enumerate() {
            let (pool, backing, peers) = (pool.clone(), backing.clone(), mailboxes.clone());
            let (policy, l2, counter) = (cfg.policy, l2_setup.clone(), in_flight[i].clone());
            let make: MakeCore = Box::new(move |reactor| {
                let link = Arc::new(MailboxLink(peers.clone()));
                let mut core = Core::new(
                    i,
                    Shard::new(per_shard, policy),
                    pool.clone(),
                    backing,
                    peers,
                    limits,
                    counter,
                );
                if let Some(l2) = l2 {
                    if l2.cfg.stage_evicted {
                        core.shard.l2_set_stage(StageRules {
                            limit: core.shard.capacity() / 8,
                            noprefetch: l2.cfg.noprefetch,
                            mfuonly: l2.cfg.mfuonly,
                        });
                    }
                    core.l2 = Some(Box::new(L2::open(l2, i, link, &pool)?));
                }
                pollers::register(reactor, &mut core);
                Ok(core)
            });
            let (rtx, rrx) = oneshot::channel();
            tx.send((mailboxes.clone(), i, make, rtx))
                .expect("reactor thread waits for its setup");
            readies.push(rrx);
        }
        let failed = readies
            .into_iter()
            .map(|r| r.recv().unwrap_or(Err(Error::ShutDown)))
            .find_map(|r| r.err());
        if let Some(e) = failed {
            let e2 =
                Engine::from_parts(cfg, pool, mailboxes, threads, backing.describe(), in_flight);
            let _ = e2.shutdown();
            return Err(e);
        }
        if cfg.pinning == Pinning::Required {
            let e =
                Engine::from_parts(cfg, pool, mailboxes, threads, backing.describe(), in_flight);
            let failed = e.stats().reactors.iter().filter(|r| r.pin_failed).count();
            if failed > 0 {
                let _ = e.shutdown();
                return Err(Error::Config(format!(
                    "pinning required, but {failed} reactors could not be pinned"
                )));
            }
            return Ok(e);
        }
        Ok(Engine::from_parts(
            cfg,
            pool,
            mailboxes,
            threads,
            backing.describe(),
            in_flight,
        ))
    }
}

/// Closes a reactor's ring if its thread unwinds, so that clients and
/// peers' jobs get `ShutDown` instead of waiting forever.
struct CloseOnUnwind(Arc<Mailbox<Msg>>, Mailboxes);
impl Drop for CloseOnUnwind {
    fn drop(&mut self) {
        self.0.close();
        crate::core::msg::drain_closed(&self.1, &self.0);
    }
}

struct Inner {
    config: Config,
    pool: BufPool,
    mailboxes: Mailboxes,
    threads: Mutex<Vec<std::thread::JoinHandle<Option<ReactorStats>>>>,
    shut: AtomicBool,
    final_stats: Mutex<Option<Vec<ReactorStats>>>,
    #[cfg(feature = "jobs")]
    jobs: Mutex<()>,
    backing: String,
    /// Client requests in flight, per reactor.
    in_flight: Vec<InFlight>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        shutdown(self);
    }
}

fn shutdown(inner: &Inner) {
    if inner.shut.swap(true, Ordering::AcqRel) {
        return;
    }
    for mb in inner.mailboxes.iter() {
        let _ = mb.send(Msg::Shutdown);
    }
    let threads = std::mem::take(&mut *inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
    let mut finals = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Some(s)) => finals.push(s),
            Ok(None) => {}
            Err(_) => log::error!("a reactor panicked; see the message above"),
        }
    }
    *inner.final_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(finals);
}

/// The cache engine. A cheap, cloneable handle; every method may be called
/// from any thread. The engine shuts down when [`Engine::shutdown`] is
/// called or the last handle is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("reactors", &self.inner.mailboxes.len())
            .finish()
    }
}

/// A request in flight, as a runtime-agnostic future.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct OpFuture<T> {
    state: FutState,
    map: fn(Option<Block>) -> T,
}

#[derive(Debug)]
enum FutState {
    Waiting(oneshot::Receiver<Outcome>),
    Failed(Option<Error>),
}

impl<T> Unpin for OpFuture<T> {}

impl<T> Future for OpFuture<T> {
    type Output = Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let map = self.map;
        match &mut self.state {
            FutState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(Error::ShutDown))),
            FutState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(o)) => Poll::Ready(o.map(map)),
                Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ShutDown)),
            },
        }
    }
}

impl<T> OpFuture<T> {
    /// Waits on the calling thread: spins briefly (an ARC hit answers in
    /// well under a microsecond, far sooner than a park/unpark), then parks.
    pub fn wait(self) -> Result<T> {
        let rx = match self.state {
            FutState::Failed(e) => return Err(e.unwrap_or(Error::ShutDown)),
            FutState::Waiting(rx) => rx,
        };
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match rx.try_recv() {
                Ok(o) => return o.map(self.map),
                Err(oneshot::TryRecvError::Disconnected) => return Err(Error::ShutDown),
                Err(oneshot::TryRecvError::Empty) if backoff.is_completed() => break,
                Err(oneshot::TryRecvError::Empty) => backoff.snooze(),
            }
        }
        match rx.recv() {
            Ok(o) => o.map(self.map),
            Err(_) => Err(Error::ShutDown),
        }
    }
}

fn must_block(b: Option<Block>) -> Block {
    b.expect("a successful read always carries a block")
}
fn unit(_: Option<Block>) {}
fn same(b: Option<Block>) -> Option<Block> {
    b
}

impl Engine {
    /// A builder with every default (see [`Config`]).
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: Config::default(),
            backing: None,
            l2_devices: Vec::new(),
        }
    }

    fn from_parts(
        config: Config,
        pool: BufPool,
        mailboxes: Mailboxes,
        threads: Vec<std::thread::JoinHandle<Option<ReactorStats>>>,
        backing: String,
        in_flight: Vec<InFlight>,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                in_flight,
                config,
                pool,
                mailboxes,
                threads: Mutex::new(threads),
                shut: AtomicBool::new(false),
                final_stats: Mutex::new(None),
                #[cfg(feature = "jobs")]
                jobs: Mutex::new(()),
                backing,
            }),
        }
    }

    fn submit<T>(&self, op: Op, key: &[u8], map: fn(Option<Block>) -> T) -> OpFuture<T> {
        let failed = |e| OpFuture {
            state: FutState::Failed(Some(e)),
            map,
        };
        if key.is_empty() {
            return failed(Error::EmptyKey);
        }
        let max = self.inner.config.max_key_len;
        if key.len() > max {
            return failed(Error::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        if self.inner.shut.load(Ordering::Acquire) {
            return failed(Error::ShutDown);
        }
        let hash = hash_key(key);
        let r = shard_of(hash, self.inner.mailboxes.len());
        if let Err(e) = self.admit(r) {
            return failed(e);
        }
        let mb = &self.inner.mailboxes[r];
        let (tx, rx) = oneshot::channel();
        let req = Request {
            op,
            key: MsgKey::from_slice(key),
            hash,
            reply: Reply::Client(tx),
        };
        // If the reactor has gone, the request is dropped and `rx` answers ShutDown.
        let _ = mb.send(Msg::Request(req));
        OpFuture {
            state: FutState::Waiting(rx),
            map,
        }
    }

    /// Takes a place among reactor `r`'s requests in flight: waits for one
    /// or fails with `Busy` when it has `max_in_flight`, as `when_full`
    /// says (the reactor gives places back as it answers).
    fn admit(&self, r: usize) -> Result<()> {
        let count = &self.inner.in_flight[r];
        let max = self.inner.config.max_in_flight;
        if count.fetch_add(1, Ordering::Relaxed) < max {
            return Ok(());
        }
        count.fetch_sub(1, Ordering::Relaxed);
        if self.inner.config.when_full == WhenFull::Busy {
            return Err(Error::Busy(max));
        }
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            if self.inner.shut.load(Ordering::Acquire) || self.inner.mailboxes[r].is_closed() {
                return Err(Error::ShutDown);
            }
            if count.load(Ordering::Relaxed) < max {
                if count.fetch_add(1, Ordering::Relaxed) < max {
                    return Ok(());
                }
                count.fetch_sub(1, Ordering::Relaxed);
            }
            if backoff.is_completed() {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                backoff.snooze();
            }
        }
    }

    fn check_block(&self, data: &[u8]) -> Result<()> {
        let max = self.inner.config.max_block_size;
        if data.is_empty() || data.len() > max {
            return Err(Error::BlockSize {
                size: data.len(),
                max,
            });
        }
        Ok(())
    }

    /// Read-through: the block of `key` from the ARC, else from the
    /// backing store (then cached). Concurrent misses share one backing read.
    pub fn read(&self, key: &[u8]) -> Result<Block> {
        self.read_async(key).wait()
    }
    /// [`Engine::read`] as a future.
    pub fn read_async(&self, key: &[u8]) -> OpFuture<Block> {
        self.submit(Op::Read, key, must_block)
    }

    /// Cache only: the block of `key` if the ARC holds it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Block>> {
        self.get_async(key).wait()
    }
    /// [`Engine::get`] as a future.
    pub fn get_async(&self, key: &[u8]) -> OpFuture<Option<Block>> {
        self.submit(Op::Get, key, same)
    }

    /// Caches `data` as the block of `key`, replacing the key's block: once
    /// this returns, reads return `data` (or the backing store's block),
    /// never an older version, also after a restart or a crash. With
    /// persistent L2 devices it returns once the replacement's record is
    /// durable on each of them.
    pub fn insert(&self, key: &[u8], data: &[u8]) -> Result<()> {
        self.insert_async(key, data).wait()
    }
    /// [`Engine::insert`] as a future.
    pub fn insert_async(&self, key: &[u8], data: &[u8]) -> OpFuture<()> {
        match self.check_block(data) {
            Ok(()) => self.submit(Op::Insert(data.into()), key, unit),
            Err(e) => OpFuture {
                state: FutState::Failed(Some(e)),
                map: unit,
            },
        }
    }

    /// Caches `data` as the block of `key` unless the key is cached or
    /// being filled: for callers whose blocks never change, so that any
    /// copy is the same bytes. Returns without waiting for an L2 device.
    pub fn insert_if_absent(&self, key: &[u8], data: &[u8]) -> Result<()> {
        self.insert_if_absent_async(key, data).wait()
    }
    /// [`Engine::insert_if_absent`] as a future.
    pub fn insert_if_absent_async(&self, key: &[u8], data: &[u8]) -> OpFuture<()> {
        match self.check_block(data) {
            Ok(()) => self.submit(Op::InsertIfAbsent(data.into()), key, unit),
            Err(e) => OpFuture {
                state: FutState::Failed(Some(e)),
                map: unit,
            },
        }
    }

    /// Frees the block of `key`: once this returns, it is never served
    /// again, from the ARC or from L2, also after a restart or a crash, and
    /// a fill already in flight will not cache it. With persistent L2
    /// devices it returns once the invalidation's record is durable on each
    /// of them (records are group-committed).
    pub fn invalidate(&self, key: &[u8]) -> Result<()> {
        self.invalidate_async(key).wait()
    }
    /// [`Engine::invalidate`] as a future.
    pub fn invalidate_async(&self, key: &[u8]) -> OpFuture<()> {
        self.submit(Op::Invalidate, key, unit)
    }

    /// Starts bringing `key` into the ARC from the backing store, without
    /// waiting for it. Resolves once the request is queued.
    pub fn prefetch(&self, key: &[u8]) -> Result<()> {
        self.prefetch_async(key).wait()
    }
    /// [`Engine::prefetch`] as a future.
    pub fn prefetch_async(&self, key: &[u8]) -> OpFuture<()> {
        self.submit(Op::Prefetch, key, unit)
    }

    /// Runs a job on every reactor (load generated in place, as bdevperf
    /// does) and returns one report per reactor. One set of jobs at a time.
    #[cfg(feature = "jobs")]
    pub fn run_jobs(&self, spec: &JobSpec) -> Result<Vec<JobReport>> {
        let _one = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let max_block = self.inner.config.max_block_size;
        let mut rxs = vec![];
        for (i, mb) in self.inner.mailboxes.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            let spec = spec.clone();
            let call = Box::new(move |core: &mut Core, sched: &mut reactor::Sched<Core>| {
                core.job_inbox.clear();
                sched.spawn(Box::new(Job::new(i, spec, max_block, tx)));
            });
            if self.inner.shut.load(Ordering::Acquire)
                || mb.send(Msg::Call(call)) == reactor::Pushed::Closed
            {
                return Err(Error::ShutDown);
            }
            rxs.push(rx);
        }
        // Every job is waited for, so none runs on after an error.
        let reports: Vec<_> = rxs.into_iter().map(|rx| rx.recv()).collect();
        reports
            .into_iter()
            .map(|r| r.map_err(|_| Error::ShutDown))
            .collect()
    }

    /// A statistics snapshot, gathered from every reactor. After shutdown
    /// it holds the final figures.
    pub fn stats(&self) -> Stats {
        if let Some(s) = self.final_stats() {
            return s;
        }
        let mut rxs = vec![];
        for mb in self.inner.mailboxes.iter() {
            let (tx, rx) = oneshot::channel();
            let _ = mb.send(Msg::Stats(tx));
            rxs.push(rx);
        }
        let reactors: Vec<ReactorStats> = rxs.into_iter().filter_map(|rx| rx.recv().ok()).collect();
        if reactors.len() < self.inner.mailboxes.len() {
            // Shut down meanwhile: the final figures are complete.
            if let Some(s) = self.final_stats() {
                return s;
            }
        }
        Stats::from_parts(reactors, self.inner.pool.stats())
    }

    /// The figures the reactors returned at shutdown, if it has happened.
    fn final_stats(&self) -> Option<Stats> {
        let f = self
            .inner
            .final_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .map(|f| Stats::from_parts(f.clone(), self.inner.pool.stats()))
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The backing store's description.
    pub fn backing_description(&self) -> &str {
        &self.inner.backing
    }

    /// Stops the reactors once they are quiet (backing reads in flight
    /// complete first), joins them and frees every cached buffer. Later
    /// calls fail with [`Error::ShutDown`]. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        shutdown(&self.inner);
        Ok(())
    }
}

/// Checks the L2 devices against the configuration.
fn check_l2_devices(
    cfg: &Config,
    devices: Vec<Arc<dyn BlockDevice>>,
) -> Result<Vec<Arc<dyn BlockDevice>>> {
    if devices.is_empty() {
        return Ok(devices);
    }
    cfg.l2.validate().map_err(Error::Config)?;
    if devices.len() > 255 {
        return Err(Error::Config(format!(
            "{} L2 devices; at most 255 are supported",
            devices.len()
        )));
    }
    for device in &devices {
        let info = device.info();
        let bs = info.block_size as usize;
        if !bs.is_power_of_two() || bs < 512 || bs > cfg.max_block_size {
            return Err(Error::Config(format!(
                "L2 device {}: block size {bs} B must be a power of two from 512 B to max_block_size ({} B)",
                info.name, cfg.max_block_size
            )));
        }
        let min = 8 * cfg.max_block_size as u64;
        if info.capacity < min {
            return Err(Error::Config(format!(
                "L2 device {} is too small: {} B, at least 8 x max_block_size = {min} B",
                info.name, info.capacity
            )));
        }
        if info.capacity > crate::l2::format::L2_MAX_OFFSET {
            log::warn!(
                "L2 device {}: only the first {} TiB are used",
                info.name,
                crate::l2::format::L2_MAX_OFFSET >> 40
            );
        }
    }
    Ok(devices)
}

/// Opens every L2 device's header (formatting new ones, refusing foreign
/// ones) and describes the devices to the reactors. Device `d` is fed by
/// reactor `d % reactors`.
fn start_l2_devices(
    cfg: &Config,
    devices: Vec<Arc<dyn BlockDevice>>,
    pool: &BufPool,
) -> Result<Option<L2Setup>> {
    if devices.is_empty() {
        return Ok(None);
    }
    let min_data = 8 * cfg.max_block_size as u64;
    let mut devs = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let start = crate::l2::prepare::prepare(device.as_ref(), &cfg.l2, min_data, pool)?;
        devs.push(Arc::new(DevShared {
            info: device.info(),
            device,
            feeder: i % cfg.reactors,
            writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
            health: Default::default(),
            start,
        }));
    }
    Ok(Some(L2Setup {
        cfg: Arc::new(cfg.l2.clone()),
        devs,
        max_block: cfg.max_block_size as u32,
    }))
}
