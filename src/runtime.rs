//! `RuntimeBuilder`, `Runtime`, `RuntimeHandle`, scheduling and shutdown.
//!
//! # Shutdown protocol
//!
//! [`Runtime::shutdown`] (also run by `Drop`, and started by
//! [`RuntimeHandle::shutdown`] from any thread or task) proceeds in order:
//!
//! 1. **Refuse new work.** The state moves `RUNNING → CLOSING` (once: the
//!    protocol is idempotent). Spawns and sends now fail with
//!    `RuntimeError::Closed` / `SendError::Closed`. A spawn racing with this
//!    step registers its task *before* re-checking the state, so it is either
//!    refused or seen by step 2.
//! 2. **Cancel tasks.** Every registered task is cancelled: it is scheduled on
//!    the shard that owns it, which drops its future there (so destructors run
//!    on their own shard, `!Send` ones included) and reports
//!    `JoinError::Cancelled` to its handle.
//! 3. **Cancel I/O.** Each shard submits `ASYNC_CANCEL` for whatever it has in
//!    flight and keeps reaping until its op table is empty or the shutdown
//!    deadline passes; what the kernel still holds then is leaked, never freed.
//! 4. **Close rings.** A shard leaves its loop once no live task remains (or
//!    the deadline passed) and drops its ring. Ring fds stay open while any
//!    `RingFd` clone lives, so no message can reach a reused fd number.
//! 5. **Join threads.** The caller joins the shard threads, except its own
//!    when shutdown is called from inside a shard, then stops the blocking
//!    pool: idle pool threads exit at once, busy ones after their job, and
//!    all are joined (a job still running after the shutdown timeout is
//!    detached rather than waited for).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use spargio_sys::ring::{Ring, RingConfig, RingFd};
use spargio_sys::sim::SimKernel;

use crate::blocking::BlockingPool;
pub use crate::driver::Backend;
use crate::driver::Unparker;
use crate::driver::op::{OpShared, SteeredOp, blocking_cqe};
use crate::error::{JoinError, RuntimeError};
use crate::shard::{self, Local};
use crate::stats::{RuntimeStats, ShardCounters, ShardStats};
use crate::task::{BoxFuture, Completion, JoinHandle, JoinState, Mobility, Scheduler, Task};

/// Where a spawned task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskPlacement {
    /// On this shard, never moving.
    Pinned(usize),
    /// Pinned, on the shards in turn.
    RoundRobin,
    /// Pinned, on the shard this key hashes to: the same key always gives the same shard.
    Sticky(u64),
    /// Queued on the current shard (or shard 0 from outside); any idle shard may take it.
    Stealable,
    /// Queued on this shard; any idle shard may take it.
    StealablePreferred(usize),
}

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

/// The validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) shards: usize,
    pub(crate) ring_entries: u32,
    pub(crate) steal_budget: usize,
    pub(crate) stealable_queue_capacity: usize,
    pub(crate) msg_queue_capacity: u32,
    pub(crate) thread_name_prefix: String,
    pub(crate) thread_affinity: Option<Vec<usize>>,
    pub(crate) sqpoll: Option<bool>,
    pub(crate) spin_before_park: Duration,
    /// An idle shard's spin yields the CPU at each turn: true unless every
    /// shard is pinned to a CPU of its own (then no shard can be waiting for
    /// the spinning one's CPU, and a yield would only hand it to other work).
    pub(crate) spin_yields: bool,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) event_interval: u32,
}

/// Builds a [`Runtime`].
///
/// ```
/// let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
/// let sum = rt.block_on(async { 1 + 1 }).unwrap();
/// assert_eq!(sum, 2);
/// ```
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    shards: Option<usize>,
    ring_entries: u32,
    steal_budget: usize,
    stealable_queue_capacity: usize,
    msg_queue_capacity: u32,
    thread_name_prefix: String,
    thread_affinity: Option<Vec<usize>>,
    backend: Backend,
    fallback_to_queue: bool,
    sqpoll: Option<bool>,
    spin_before_park: Duration,
    shutdown_timeout: Duration,
    blocking_threads: usize,
    sim: Option<SimKernel>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder::new()
    }
}

impl RuntimeBuilder {
    /// Defaults: one shard per available CPU, io_uring with fallback to the
    /// Queue backend where io_uring is unavailable.
    pub fn new() -> Self {
        RuntimeBuilder {
            shards: None,
            ring_entries: 256,
            steal_budget: 64,
            stealable_queue_capacity: 65_536,
            msg_queue_capacity: 4096,
            thread_name_prefix: "spargio-shard".into(),
            thread_affinity: None,
            backend: Backend::IoUring,
            fallback_to_queue: true,
            sqpoll: None,
            spin_before_park: Duration::from_micros(50),
            shutdown_timeout: Duration::from_secs(5),
            blocking_threads: 64,
            sim: None,
        }
    }

    /// Number of shards (threads with a ring each). Default: available parallelism.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// SQ entries per shard ring (the CQ gets twice as many). Default 256.
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n;
        self
    }

    /// Most tasks one steal takes from a victim. Default 64.
    pub fn steal_budget(mut self, n: usize) -> Self {
        self.steal_budget = n;
        self
    }

    /// Bound of each shard's stealable queue; a spawn into a full queue fails
    /// with [`RuntimeError::Overloaded`]. Default 65536.
    pub fn stealable_queue_capacity(mut self, n: usize) -> Self {
        self.stealable_queue_capacity = n;
        self
    }

    /// Undelivered messages one sender may have in flight to one shard before
    /// sends fail with `SendError::Backpressure`. Default 4096.
    pub fn msg_queue_capacity(mut self, n: u32) -> Self {
        self.msg_queue_capacity = n;
        self
    }

    /// Shard threads are named `{prefix}-{index}`.
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = prefix.into();
        self
    }

    /// Pins shard `i` to CPU `cpus[i]`; needs one CPU per shard.
    ///
    /// With a distinct CPU for every shard, an idle shard's short spin before
    /// it parks no longer yields its CPU at each turn: no other shard can be
    /// waiting for it, and on a busy machine a yield hands the CPU to other
    /// threads for a whole scheduler slice (see `docs/ARCHITECTURE.md`, "The
    /// shard loop"). Pinning is what keeps cross-shard latency low beside
    /// other load.
    pub fn thread_affinity(mut self, cpus: Vec<usize>) -> Self {
        self.thread_affinity = Some(cpus);
        self
    }

    /// Chooses the backend. Default [`Backend::IoUring`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// With [`Backend::IoUring`], fall back to [`Backend::Queue`] when io_uring
    /// is unavailable (ENOSYS, EPERM, ENOMEM at setup). Default true.
    pub fn fallback_to_queue(mut self, allow: bool) -> Self {
        self.fallback_to_queue = allow;
        self
    }

    /// Throughput preset for I/O-heavy shards that message each other little:
    /// `DEFER_TASKRUN` rings (completions are batched until the shard enters
    /// the kernel), or with `sqpoll` a kernel submission thread per shard
    /// (`IORING_SETUP_SQPOLL`) instead. The default (`COOP_TASKRUN` only)
    /// posts cross-shard messages straight into the target's CQ, which halves
    /// message latency.
    ///
    /// # SQPOLL and credentials
    ///
    /// The kernel's submission thread runs ops with the credentials the rings
    /// were created with (at [`build`](Self::build)), not the submitter's. So
    /// after the process changes its effective user or group id or its
    /// supplementary groups (a `setuid` that drops root, say), an SQPOLL
    /// shard refuses every op that could act with the old ones: it fails
    /// with `PermissionDenied` (`EACCES`) without reaching the kernel.
    /// Messages between shards and cancellations go on working, and ops
    /// submitted before the change run as the kernel runs them. A program
    /// that drops privileges should build its runtime after the drop. The
    /// check costs three system calls per submitted batch on SQPOLL rings and
    /// nothing on the others, which use the submitter's credentials anyway.
    pub fn io_uring_throughput_mode(mut self, sqpoll: bool) -> Self {
        self.sqpoll = Some(sqpoll);
        self
    }

    /// How long an idle shard keeps polling its queues and ring before it
    /// sleeps in the kernel, at least. The window adapts: it doubles (up to
    /// 8× this) while parks keep ending sooner than the window would have,
    /// and halves back to this once the shard stays asleep for long. Zero
    /// parks at once, always. Default 50 µs.
    ///
    /// On a machine shared with other busy work (other processes, `nice`
    /// loops), a spinning shard's yields can lose its CPU for a whole
    /// scheduler slice; zero suits it better, since a parked shard's wake-up
    /// preempts lower-priority work at once (measured on a 2-vCPU VM beside
    /// two `nice -n 19` loops: a cross-shard round trip of 7–11 µs parking
    /// at once, 37–50 µs spinning).
    pub fn spin_before_park(mut self, d: Duration) -> Self {
        self.spin_before_park = d;
        self
    }

    /// Bound on the wait for tasks and I/O to finish at shutdown. Default 5 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Most threads of the blocking pool. Default 64.
    pub fn blocking_threads(mut self, n: usize) -> Self {
        self.blocking_threads = n;
        self
    }

    /// Runs the shards' rings on a simulated kernel (tests and fault injection).
    pub fn simulated_kernel(mut self, kernel: SimKernel) -> Self {
        self.sim = Some(kernel);
        self
    }

    fn validate(&self) -> Result<Config, RuntimeError> {
        let invalid = |m: String| Err(RuntimeError::InvalidConfig(m));
        let shards = self
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if shards == 0 {
            return invalid("shards must be at least 1".into());
        }
        if shards > usize::from(u16::MAX) - 1 {
            return invalid(format!("at most {} shards", u16::MAX - 1));
        }
        if self.ring_entries == 0 || self.ring_entries > 32_768 {
            return invalid(format!(
                "ring_entries must be 1..=32768, got {}",
                self.ring_entries
            ));
        }
        if self.steal_budget == 0 {
            return invalid("steal_budget must be at least 1".into());
        }
        if self.stealable_queue_capacity == 0 {
            return invalid("stealable_queue_capacity must be at least 1".into());
        }
        if self.msg_queue_capacity == 0 {
            return invalid("msg_queue_capacity must be at least 1".into());
        }
        if self.blocking_threads == 0 {
            return invalid("blocking_threads must be at least 1".into());
        }
        if let Some(cpus) = &self.thread_affinity {
            if cpus.len() != shards {
                return invalid(format!(
                    "thread_affinity names {} CPUs for {shards} shards",
                    cpus.len()
                ));
            }
            let have = spargio_sys::os::configured_cpus();
            if let Some(bad) = cpus.iter().find(|&&c| c >= have) {
                return invalid(format!("thread_affinity: no CPU {bad} (this machine has {have})"));
            }
        }
        Ok(Config {
            shards,
            ring_entries: self.ring_entries,
            steal_budget: self.steal_budget,
            stealable_queue_capacity: self.stealable_queue_capacity,
            msg_queue_capacity: self.msg_queue_capacity,
            thread_name_prefix: self.thread_name_prefix.clone(),
            thread_affinity: self.thread_affinity.clone(),
            sqpoll: self.sqpoll,
            spin_before_park: self.spin_before_park,
            spin_yields: !self.one_cpu_per_shard(),
            shutdown_timeout: self.shutdown_timeout,
            event_interval: 61,
        })
    }

    /// True when `thread_affinity` pins every shard to a CPU no other shard
    /// shares.
    fn one_cpu_per_shard(&self) -> bool {
        self.thread_affinity.as_ref().is_some_and(|cpus| {
            let distinct: std::collections::BTreeSet<_> = cpus.iter().collect();
            distinct.len() == cpus.len()
        })
    }

    /// Decides the backend: io_uring if a ring can be set up here.
    fn resolve_backend(&self) -> Result<Resolved, RuntimeError> {
        let queue = |reason| Resolved {
            backend: Backend::Queue,
            fallback_reason: reason,
            foreign_ring: None,
        };
        let ring = match (self.backend, &self.sim) {
            (Backend::Queue, _) => return Ok(queue(None)),
            (Backend::IoUring, Some(k)) => Ring::sim(k, &foreign_ring_config())?,
            // The foreign ring is the probe: if it cannot be set up, no shard ring can.
            (Backend::IoUring, None) => match Ring::with_config(&foreign_ring_config()) {
                Ok(ring) => ring,
                Err(e) if e.io_uring_unavailable() && self.fallback_to_queue => {
                    return Ok(queue(Some(e.to_string())));
                }
                Err(e) => return Err(io_err(e)),
            },
        };
        Ok(Resolved {
            backend: Backend::IoUring,
            fallback_reason: None,
            foreign_ring: Some(ring),
        })
    }

    /// Starts the shard threads.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::InvalidConfig`] for a configuration that cannot work;
    /// [`RuntimeError::Io`] when io_uring setup fails (and fallback is off or the
    /// failure is not "io_uring unavailable") or a thread cannot be spawned.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let config = self.validate()?;
        let Resolved {
            backend,
            fallback_reason,
            foreign_ring,
        } = self.resolve_backend()?;
        let n = config.shards;
        let shared = Arc::new(Shared {
            shards: (0..n).map(|i| ShardShared::new(i, n)).collect(),
            config: config.clone(),
            backend,
            fallback_reason,
            state: AtomicU8::new(RUNNING),
            fork_generation: spargio_sys::os::fork_generation(),
            next_task_id: AtomicU64::new(1),
            round_robin: AtomicUsize::new(0),
            live_tasks: AtomicUsize::new(0),
            registry: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            foreign_ring: Mutex::new(foreign_ring),
            blocking: BlockingPool::new(
                self.blocking_threads,
                format!("{}-blocking", config.thread_name_prefix),
            ),
            fd_leases: Arc::default(),
            threads: Mutex::new(Vec::new()),
            exited: Mutex::new(0),
            exited_cv: Condvar::new(),
            first_shard_started: Mutex::new(false),
            first_shard_started_cv: Condvar::new(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), RuntimeError>>();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let thread_shared = shared.clone();
            let ready = ready_tx.clone();
            let sim = self.sim.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", config.thread_name_prefix))
                .spawn(move || shard::run(thread_shared, i, sim, ready));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.begin_shutdown();
                    return Err(RuntimeError::Io(e));
                }
            }
        }
        drop(ready_tx);
        *shared.threads.lock().unwrap() = threads;
        let runtime = Runtime {
            handle: RuntimeHandle { shared },
        };
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // `runtime` drops: shutdown and join.
                Err(_) => {
                    return Err(RuntimeError::Io(std::io::Error::other(
                        "a shard thread died during start-up",
                    )));
                }
            }
        }
        Ok(runtime)
    }
}

fn io_err(e: spargio_sys::ring::SetupError) -> RuntimeError {
    RuntimeError::Io(e.into())
}

/// The ring that threads outside the runtime use to send `MSG_RING`s: shared
/// under a lock, so it must accept submitters from any thread.
fn foreign_ring_config() -> RingConfig {
    RingConfig {
        sq_entries: 16,
        cq_entries: 64,
        single_issuer: false,
        defer_taskrun: false,
        coop_taskrun: true,
        ..RingConfig::default()
    }
}

/// Smallest CQ of a shard ring (16 B per entry: 16 KiB). Messages land in
/// the target's CQ, but a burst costs one CQE per batch (see `mail`), not one
/// per message, so the CQ need not hold `msg_queue_capacity` entries; a
/// larger one mostly costs start-up and shutdown time (8192 entries: about
/// 60 µs more per ring to set up and tear down, measured). Beyond it, the
/// kernel keeps completions on its overflow list and the shard flushes them.
const MIN_SHARD_CQ_ENTRIES: u32 = 1024;

/// Builds the ring config of shard rings.
pub(crate) fn shard_ring_config(config: &Config) -> RingConfig {
    let mut ring = RingConfig::with_entries(config.ring_entries);
    // Default: COOP_TASKRUN without DEFER_TASKRUN. A MSG_RING into a
    // DEFER_TASKRUN ring is queued as task work that runs only when the target
    // enters the kernel, which doubled the cross-shard round trip here
    // (p50 3.4 µs → 1.6–2.1 µs without it; docs/BENCHMARKS.md).
    ring.defer_taskrun = false;
    ring.coop_taskrun = true;
    ring.cq_entries = (2 * config.ring_entries).max(MIN_SHARD_CQ_ENTRIES);
    match config.sqpoll {
        None => {}
        // Throughput: completions batched until the shard enters.
        Some(false) => ring.defer_taskrun = true,
        Some(true) => ring.sqpoll_idle = Some(Duration::from_millis(50)),
    }
    ring
}

/// How often shutdown rings shards that have not left yet.
const SHUTDOWN_REWAKE: Duration = Duration::from_millis(10);

/// The backend a build settled on, with the foreign ring it set up on the way.
struct Resolved {
    backend: Backend,
    fallback_reason: Option<String>,
    foreign_ring: Option<Ring>,
}

/// A message travelling in memory (Queue backend, or from outside the runtime
/// when the message must not go through a ring).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueuedMsg {
    pub(crate) from: u16,
    pub(crate) tag: u16,
    pub(crate) val: u32,
}

impl Scheduler for Shared {
    fn schedule(self: Arc<Self>, task: Arc<Task>) {
        Shared::schedule(&self, task);
    }

    fn task_finished(&self, task: &Task) {
        Shared::task_finished(self, task);
    }
}

/// What other threads see of one shard.
pub(crate) struct ShardShared {
    pub(crate) id: usize,
    /// Pinned and local tasks scheduled from other threads.
    pub(crate) inbox: Mutex<VecDeque<Arc<Task>>>,
    pub(crate) inbox_len: AtomicUsize,
    /// Stealable tasks queued on this shard.
    pub(crate) stealable: Mutex<VecDeque<Arc<Task>>>,
    pub(crate) stealable_len: AtomicUsize,
    /// Messages that travel in memory.
    pub(crate) queued_msgs: Mutex<VecDeque<QueuedMsg>>,
    pub(crate) queued_msgs_len: AtomicUsize,
    /// Undelivered messages per sender (index `shards` = outside the runtime;
    /// on the io_uring backend only that index: shard senders use `mailboxes`).
    pub(crate) msg_inflight: Box<[AtomicUsize]>,
    /// Message batches from each shard of the runtime (see `mail`).
    pub(crate) mailboxes: Box<[crate::mail::Mailbox]>,
    /// Ops other threads steered to this shard, to submit on its ring.
    pub(crate) remote_ops: Mutex<VecDeque<SteeredOp>>,
    pub(crate) remote_ops_len: AtomicUsize,
    /// Ops whose waiter left on another thread: cancel them on this ring.
    pub(crate) cancel_requests: Mutex<Vec<spargio_sys::msg::OpId>>,
    pub(crate) cancel_requests_len: AtomicUsize,
    /// True while the shard sleeps (or is about to) and needs a doorbell.
    pub(crate) parked: AtomicBool,
    pub(crate) unparker: OnceLock<Unparker>,
    pub(crate) counters: ShardCounters,
}

impl ShardShared {
    fn new(id: usize, shards: usize) -> Self {
        ShardShared {
            id,
            inbox: Mutex::new(VecDeque::new()),
            inbox_len: AtomicUsize::new(0),
            stealable: Mutex::new(VecDeque::new()),
            stealable_len: AtomicUsize::new(0),
            queued_msgs: Mutex::new(VecDeque::new()),
            queued_msgs_len: AtomicUsize::new(0),
            msg_inflight: (0..=shards).map(|_| AtomicUsize::new(0)).collect(),
            mailboxes: (0..shards).map(|_| crate::mail::Mailbox::default()).collect(),
            remote_ops: Mutex::new(VecDeque::new()),
            remote_ops_len: AtomicUsize::new(0),
            cancel_requests: Mutex::new(Vec::new()),
            cancel_requests_len: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            unparker: OnceLock::new(),
            counters: ShardCounters::default(),
        }
    }

    pub(crate) fn lock_stealable(&self) -> MutexGuard<'_, VecDeque<Arc<Task>>> {
        self.stealable.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_inbox(&self) -> MutexGuard<'_, VecDeque<Arc<Task>>> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when other threads left work for this shard.
    pub(crate) fn has_remote_work(&self) -> bool {
        // SeqCst: the park protocol's load after `parked = true` (see `Shared::unpark`).
        self.inbox_len.load(Ordering::SeqCst) > 0
            || self.stealable_len.load(Ordering::SeqCst) > 0
            || self.queued_msgs_len.load(Ordering::SeqCst) > 0
            || self.remote_ops_len.load(Ordering::SeqCst) > 0
            || self.cancel_requests_len.load(Ordering::SeqCst) > 0
    }
}

/// Live tasks by id (one shard of the registry).
type TaskMap = HashMap<u64, Arc<Task>>;

/// State shared by all shards and handles of one runtime.
pub(crate) struct Shared {
    pub(crate) shards: Box<[ShardShared]>,
    pub(crate) config: Config,
    pub(crate) backend: Backend,
    fallback_reason: Option<String>,
    state: AtomicU8,
    /// The process's fork generation when the runtime was built: anywhere
    /// else (a fork child) its threads and ring mappings do not exist.
    fork_generation: u64,
    next_task_id: AtomicU64,
    round_robin: AtomicUsize,
    live_tasks: AtomicUsize,
    /// Every live task, sharded by id, so shutdown can cancel tasks that sit in no queue.
    registry: Box<[Mutex<TaskMap>]>,
    /// The ring threads outside the runtime send `MSG_RING`s from.
    foreign_ring: Mutex<Option<Ring>>,
    pub(crate) blocking: BlockingPool,
    /// Which shard each fd's unbound-lane ops go to, while a lease holds.
    pub(crate) fd_leases: Arc<crate::fd_lease::FdLeases>,
    threads: Mutex<Vec<ThreadHandle<()>>>,
    exited: Mutex<usize>,
    exited_cv: Condvar,
    /// Set once shard 0 has tried to set up its ring (it may have failed):
    /// the other shards' SQPOLL rings attach to its kernel thread.
    first_shard_started: Mutex<bool>,
    first_shard_started_cv: Condvar,
}

impl Shared {
    /// A snapshot of the counters and queue depths.
    pub(crate) fn stats(&self) -> RuntimeStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let shards = self
            .shards
            .iter()
            .map(|s| {
                let c = &s.counters;
                ShardStats {
                    shard: s.id,
                    spawned: get(&c.spawned),
                    polled: get(&c.polled),
                    stolen: get(&c.stolen),
                    steal_attempts: get(&c.steal_attempts),
                    steal_success: get(&c.steal_success),
                    stealable_backpressure: get(&c.stealable_backpressure),
                    msgs_sent: get(&c.msgs_sent),
                    msgs_received: get(&c.msgs_received),
                    msg_send_failures: get(&c.msg_send_failures),
                    msg_batches: get(&c.msg_batches),
                    doorbells_sent: get(&c.doorbells_sent),
                    doorbells_skipped: get(&c.doorbells_skipped),
                    doorbell_failures: get(&c.doorbell_failures),
                    parks: get(&c.parks),
                    wakeups: get(&c.wakeups),
                    cq_overflows: get(&c.cq_overflows),
                    ops_leaked: get(&c.ops_leaked),
                    file_sessions: get(&c.file_sessions),
                    fixed_buf_ops: get(&c.fixed_buf_ops),
                    ops_in_flight: get(&c.ops_in_flight),
                    inbox_depth: s.inbox_len.load(Ordering::Relaxed),
                    stealable_depth: s.stealable_len.load(Ordering::Relaxed),
                }
            })
            .collect();
        RuntimeStats {
            shards,
            live_tasks: self.live_tasks(),
        }
    }

    /// True once shutdown began, and always in a fork child (nothing of the
    /// runtime may be used there).
    pub(crate) fn is_closing(&self) -> bool {
        self.state.load(Ordering::SeqCst) != RUNNING || self.in_fork_child()
    }

    /// True when the calling process is a fork child of the one that built
    /// the runtime: its shard threads are not here and its rings are not
    /// mapped (`MADV_DONTFORK`), so nothing may touch them.
    pub(crate) fn in_fork_child(&self) -> bool {
        spargio_sys::os::fork_generation() != self.fork_generation
    }

    /// The error for work refused because [`is_closing`](Self::is_closing).
    pub(crate) fn closed_error(&self) -> RuntimeError {
        if self.in_fork_child() {
            RuntimeError::ForkedChild
        } else {
            RuntimeError::Closed
        }
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.live_tasks.load(Ordering::SeqCst)
    }

    fn registry_for(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<Task>>> {
        self.registry[(id % self.registry.len() as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Called by a task when it ends.
    pub(crate) fn task_finished(&self, task: &Task) {
        self.registry_for(task.id).remove(&task.id);
        if self.live_tasks.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_closing() {
            self.unpark_all();
        }
    }

    /// Routes a scheduled task to the queue of the shard that owns it.
    pub(crate) fn schedule(self: &Arc<Self>, task: Arc<Task>) {
        let owner = task.owner();
        let task = match shard::try_schedule_local(self, task) {
            Ok(()) => return,
            Err(task) => task,
        };
        let target = &self.shards[owner];
        match task.mobility {
            Mobility::Stealable => {
                target.lock_stealable().push_back(task);
                target.stealable_len.fetch_add(1, Ordering::SeqCst);
                // A sleeping owner is woken to run it. An owner that is awake
                // may be stuck in a long poll: then an idle peer is woken (if
                // one sleeps) to steal it.
                if !self.unpark(owner) {
                    self.unpark_one_idle(owner);
                }
            }
            Mobility::Pinned | Mobility::Local => {
                target.lock_inbox().push_back(task);
                target.inbox_len.fetch_add(1, Ordering::SeqCst);
                self.unpark(owner);
            }
        }
    }

    /// Wakes `shard` if it is parked: one doorbell, only when needed.
    ///
    /// The caller published its work first (a SeqCst increment of one of the
    /// shard's queue lengths); the shard stores `parked = true` (SeqCst) and then
    /// re-checks those lengths before sleeping. SeqCst on both sides means at
    /// least one sees the other: either the shard finds the work, or this swap
    /// finds `parked` and rings.
    ///
    /// Returns whether a doorbell was rung.
    pub(crate) fn unpark(&self, shard: usize) -> bool {
        if self.in_fork_child() {
            return false;
        }
        let s = &self.shards[shard];
        if s.parked.swap(false, Ordering::SeqCst) {
            s.counters.doorbells_sent.fetch_add(1, Ordering::Relaxed);
            self.ring_doorbell(shard);
            true
        } else {
            s.counters.doorbells_skipped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Wakes every parked shard (shutdown). A shard that is not parked
    /// re-checks the runtime state before it parks, so it needs no doorbell.
    pub(crate) fn unpark_all(&self) {
        if self.in_fork_child() {
            return;
        }
        for (i, s) in self.shards.iter().enumerate() {
            if s.parked.swap(false, Ordering::SeqCst) {
                s.counters.doorbells_sent.fetch_add(1, Ordering::Relaxed);
                self.ring_doorbell(i);
            }
        }
    }

    /// Wakes one parked shard other than `except`, so it can steal.
    pub(crate) fn unpark_one_idle(&self, except: usize) {
        let n = self.shards.len();
        for k in 1..n {
            let i = (except + k) % n;
            if self.shards[i].parked.load(Ordering::SeqCst) {
                self.unpark(i);
                return;
            }
        }
    }

    /// Wakes `shard` through its driver's unparker: from the calling
    /// shard's ring when this is a shard of this runtime, else from the
    /// foreign ring. If the kernel keeps refusing the doorbell, the shard is
    /// marked parked again, so the next wake of it (any spawn, message or
    /// op) rings again.
    fn ring_doorbell(&self, shard: usize) {
        // Not started yet: it checks its queues before its first park.
        let Some(unparker) = self.shards[shard].unparker.get() else {
            return;
        };
        let woken = shard::with_local(|l| {
            std::ptr::eq(&*l.shared, self).then(|| unparker.wake(Some(&l.driver), &self.foreign_ring))
        })
        .flatten()
        .unwrap_or_else(|| unparker.wake(None, &self.foreign_ring));
        if !woken {
            let s = &self.shards[shard];
            s.counters.doorbell_failures.fetch_add(1, Ordering::Relaxed);
            s.parked.store(true, Ordering::SeqCst);
        }
    }

    /// Runs `op` as a blocking system call on the pool (ops the shard's
    /// driver has no readiness for), charged to shard `target` while it
    /// runs, and finishes it.
    pub(crate) fn run_on_pool(
        self: &Arc<Self>,
        target: usize,
        op: Box<dyn spargio_sys::op::Op>,
        shared: Arc<OpShared>,
    ) {
        let charged = self.clone();
        charged.shards[target]
            .counters
            .ops_in_flight
            .fetch_add(1, Ordering::Relaxed);
        let job = move |op: Box<dyn spargio_sys::op::Op>| {
            let mut op = op;
            let res = if shared.is_abandoned() {
                -libc::ECANCELED
            } else {
                op.run_blocking()
            };
            charged.shards[target]
                .counters
                .ops_in_flight
                .fetch_sub(1, Ordering::Relaxed);
            shared.finish(blocking_cqe(res), op);
        };
        self.blocking.run_or_inline(op, job);
    }

    /// Sends a message through the shared foreign ring. Returns the errno on failure.
    pub(crate) fn foreign_msg_ring(&self, target: &RingFd, user_data: u64, val: u32) -> Result<(), i32> {
        let mut guard = self.foreign_ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = guard.as_mut().ok_or(libc::ESHUTDOWN)?;
        crate::driver::uring::send_msg_ring_blocking(ring, target, user_data, val)
    }

    fn begin_shutdown(&self) -> bool {
        // Step 1: refuse new work.
        if self
            .state
            .compare_exchange(RUNNING, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // Step 2: cancel every registered task (each is dropped on its own shard).
        let tasks: Vec<Arc<Task>> = self
            .registry
            .iter()
            .flat_map(|r| {
                r.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        for t in tasks {
            t.cancel();
        }
        self.unpark_all();
        // A shard waiting for shard 0's ring (SQPOLL attach) gives up now.
        let _held = self.first_shard_started.lock().unwrap_or_else(|p| p.into_inner());
        self.first_shard_started_cv.notify_all();
        true
    }

    /// Called by shard 0 once its ring is set up, or its setup failed.
    pub(crate) fn first_shard_started(&self) {
        let mut started = self.first_shard_started.lock().unwrap_or_else(|p| p.into_inner());
        *started = true;
        self.first_shard_started_cv.notify_all();
    }

    /// Waits until [`first_shard_started`](Self::first_shard_started) was
    /// called, or shutdown began (a failed build is torn down).
    pub(crate) fn wait_first_shard_started(&self) {
        let mut started = self.first_shard_started.lock().unwrap_or_else(|p| p.into_inner());
        // Both notifiers hold the lock while they notify (`begin_shutdown`
        // too), so neither can slip in between the check and the wait.
        while !*started && !self.is_closing() {
            started = self
                .first_shard_started_cv
                .wait(started)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Called by a shard thread as it leaves.
    pub(crate) fn shard_exited(&self) {
        *self.exited.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.exited_cv.notify_all();
    }

    fn shutdown_and_join(&self) {
        if self.in_fork_child() {
            // The threads to join and the rings to cancel on live in the
            // parent: leak this copy of everything, touch nothing.
            std::mem::forget(std::mem::take(
                &mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()),
            ));
            return;
        }
        self.begin_shutdown();
        let me = std::thread::current().id();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        // Wait for the other shards to leave, ringing again any that sleeps:
        // a doorbell the kernel refused leaves its shard parked (see
        // `foreign_doorbell`), and a shard parked before shutdown began has
        // no timeout. The joins below then return at once.
        let others = threads.iter().filter(|t| t.thread().id() != me).count();
        let mut exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        while *exited < others {
            exited = self
                .exited_cv
                .wait_timeout(exited, SHUTDOWN_REWAKE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if *exited < others {
                drop(exited);
                self.unpark_all();
                exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
            }
        }
        drop(exited);
        for t in threads {
            if t.thread().id() == me {
                continue; // Shutdown from inside a shard: that shard leaves by itself.
            }
            let _ = t.join();
        }
        self.foreign_ring.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.blocking.shutdown(self.config.shutdown_timeout);
        self.state.store(CLOSED, Ordering::SeqCst);
    }

    pub(crate) fn next_round_robin(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    fn next_id(&self) -> u64 {
        self.next_task_id.fetch_add(1, Ordering::Relaxed)
    }

    fn resolve(&self, placement: TaskPlacement) -> Result<(usize, Mobility), RuntimeError> {
        let n = self.shards.len();
        let check = |s: usize| {
            if s < n {
                Ok(s)
            } else {
                Err(RuntimeError::NoSuchShard(s))
            }
        };
        Ok(match placement {
            TaskPlacement::Pinned(s) => (check(s)?, Mobility::Pinned),
            TaskPlacement::RoundRobin => (self.next_round_robin(), Mobility::Pinned),
            TaskPlacement::Sticky(key) => ((mix64(key) % n as u64) as usize, Mobility::Pinned),
            TaskPlacement::Stealable => (shard::current_shard_of(self).unwrap_or(0), Mobility::Stealable),
            TaskPlacement::StealablePreferred(s) => (check(s)?, Mobility::Stealable),
        })
    }

    /// Creates, registers and queues a task.
    pub(crate) fn spawn_task(
        self: &Arc<Self>,
        shard: usize,
        mobility: Mobility,
        future: Option<BoxFuture>,
        join: Arc<dyn Completion>,
    ) -> Result<Arc<Task>, RuntimeError> {
        if self.is_closing() {
            return Err(self.closed_error());
        }
        let target = &self.shards[shard];
        if mobility == Mobility::Stealable
            && target.stealable_len.load(Ordering::Relaxed) >= self.config.stealable_queue_capacity
        {
            target
                .counters
                .stealable_backpressure
                .fetch_add(1, Ordering::Relaxed);
            return Err(RuntimeError::Overloaded);
        }
        let id = self.next_id();
        let weak: std::sync::Weak<Shared> = Arc::downgrade(self);
        let runtime: std::sync::Weak<dyn Scheduler> = weak;
        let task = Task::new(id, shard, mobility, future, join, runtime);
        self.live_tasks.fetch_add(1, Ordering::SeqCst);
        self.registry_for(id).insert(id, task.clone());
        // Re-check after registering: either shutdown's scan sees this task, or we see CLOSING.
        if self.is_closing() {
            self.registry_for(id).remove(&id);
            self.live_tasks.fetch_sub(1, Ordering::SeqCst);
            return Err(RuntimeError::Closed);
        }
        target.counters.spawned.fetch_add(1, Ordering::Relaxed);
        self.schedule(task.clone());
        if mobility == Mobility::Stealable {
            // More queued work than one shard is about to run: let an idle shard steal.
            self.unpark_one_idle(shard);
        }
        Ok(task)
    }
}

/// A 64-bit mixer (splitmix64 finaliser) so sticky keys spread over shards.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Wraps a future so its output lands in `state`.
fn harness<F>(fut: F, state: Arc<JoinState<F::Output>>) -> BoxFuture
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Box::pin(async move {
        let out = fut.await;
        state.complete(out);
    })
}

/// A running runtime: shard threads, their rings, and a blocking pool.
///
/// Dropping it shuts it down (see the module's shutdown protocol).
#[derive(Debug)]
pub struct Runtime {
    handle: RuntimeHandle,
}

impl Runtime {
    /// A runtime with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`RuntimeBuilder::build`].
    pub fn new() -> Result<Runtime, RuntimeError> {
        RuntimeBuilder::new().build()
    }

    /// A builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// A cheap, cloneable handle for spawning and messaging.
    pub fn handle(&self) -> &RuntimeHandle {
        &self.handle
    }

    /// Runs `fut` as a task pinned to shard 0 and blocks this thread until it ends.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Closed`] if the runtime is shutting down, or if the task
    /// was cancelled by shutdown.
    ///
    /// # Panics
    ///
    /// Panics when called from a shard thread (it would block that shard), and
    /// resumes the task's panic if it panicked.
    pub fn block_on<F>(&self, fut: F) -> Result<F::Output, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        assert!(
            shard::current_shard_of(&self.handle.shared).is_none(),
            "Runtime::block_on called from inside a spargio shard: await the future (or a JoinHandle) instead"
        );
        let handle = self.handle.spawn_pinned(0, fut)?;
        match crate::task::block_on_thread(handle) {
            Ok(v) => Ok(v),
            Err(JoinError::Cancelled) => Err(RuntimeError::Closed),
            Err(JoinError::Panicked(p)) => std::panic::resume_unwind(p),
        }
    }

    /// Shuts the runtime down and joins its threads. Idempotent.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Why the runtime runs on the Queue backend though io_uring was asked for.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.handle.shared.fallback_reason.as_deref()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.handle.shared.shutdown_and_join();
    }
}

/// A handle to a runtime: `Clone + Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("shards", &self.shared.shards.len())
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl RuntimeHandle {
    /// The handle of the runtime whose shard runs the calling code, if any.
    pub fn current() -> Option<RuntimeHandle> {
        shard::with_local(|l: &Local| RuntimeHandle {
            shared: l.shared.clone(),
        })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shared.shards.len()
    }

    /// The backend the shards run on.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// Spawns `fut` with the given placement.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Closed`] after shutdown began; [`RuntimeError::NoSuchShard`]
    /// for a shard index out of range; [`RuntimeError::Overloaded`] when the
    /// target's stealable queue is full.
    pub fn spawn_with_placement<F>(
        &self,
        placement: TaskPlacement,
        fut: F,
    ) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (shard, mobility) = self.shared.resolve(placement)?;
        let state = JoinState::new();
        let task =
            self.shared
                .spawn_task(shard, mobility, Some(harness(fut, state.clone())), state.clone())?;
        Ok(JoinHandle::new(state, task))
    }

    /// Spawns `fut` on `shard`; it never moves.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_pinned<F>(&self, shard: usize, fut: F) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with_placement(TaskPlacement::Pinned(shard), fut)
    }

    /// Spawns `fut` on the current shard's stealable queue (shard 0 from outside).
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_stealable<F>(&self, fut: F) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with_placement(TaskPlacement::Stealable, fut)
    }

    /// Spawns `fut` on `preferred`'s stealable queue.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_stealable_on<F>(
        &self,
        preferred: usize,
        fut: F,
    ) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with_placement(TaskPlacement::StealablePreferred(preferred), fut)
    }

    /// Spawns a `!Send` future on `shard`: `make` is sent there and called on
    /// the shard's thread; the future it returns never leaves that thread.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_local_on<M, F>(&self, shard: usize, make: M) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        if shard >= self.shared.shards.len() {
            return Err(RuntimeError::NoSuchShard(shard));
        }
        let state = JoinState::new();
        let out = state.clone();
        // The task's stored future only builds the local future and hands it to
        // the shard's local table; see `shard::install_local`.
        let bootstrap: BoxFuture = Box::pin(shard::LocalBootstrap::new(move || {
            let fut = make();
            Box::pin(async move {
                let v = fut.await;
                out.complete(v);
            }) as std::pin::Pin<Box<dyn Future<Output = ()>>>
        }));
        let task = self
            .shared
            .spawn_task(shard, Mobility::Local, Some(bootstrap), state.clone())?;
        Ok(JoinHandle::new(state, task))
    }

    /// Runs the blocking closure `f` on the blocking pool. Inside `f`,
    /// [`spawn`](crate::spawn) and [`spawn_blocking`](crate::spawn_blocking)
    /// use this runtime.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Closed`] after shutdown began.
    pub fn spawn_blocking<F, T>(&self, f: F) -> Result<crate::blocking::BlockingHandle<T>, RuntimeError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.shared.is_closing() {
            return Err(self.shared.closed_error());
        }
        self.shared.blocking.spawn(with_blocking_context(&self.shared, f))
    }

    /// A sender of messages to `shard`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NoSuchShard`] for an index out of range.
    pub fn remote(&self, shard: usize) -> Result<crate::msg::RemoteShard, RuntimeError> {
        if shard >= self.shared.shards.len() {
            return Err(RuntimeError::NoSuchShard(shard));
        }
        Ok(crate::msg::RemoteShard::new(self.shared.clone(), shard))
    }

    /// Starts shutdown without waiting for it (safe from inside a task). The
    /// [`Runtime`] value still joins the threads when it is dropped.
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_closing()
    }

    /// A snapshot of the runtime's counters and queue depths.
    pub fn stats_snapshot(&self) -> RuntimeStats {
        self.shared.stats()
    }
}

/// Builds a default runtime, runs `f(handle)`'s future on shard 0 until it
/// finishes, shuts the runtime down and returns the output.
///
/// ```
/// let answer = spargio::run(|handle| async move {
///     let task = handle.spawn_stealable(async { 6 * 7 }).unwrap();
///     task.await.unwrap()
/// })
/// .unwrap();
/// assert_eq!(answer, 42);
/// ```
///
/// # Errors
///
/// As [`RuntimeBuilder::build`] and [`Runtime::block_on`].
pub fn run<F, Fut>(f: F) -> Result<Fut::Output, RuntimeError>
where
    F: FnOnce(RuntimeHandle) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let rt = Runtime::new()?;
    let fut = f(rt.handle().clone());
    rt.block_on(fut)
}

thread_local! {
    /// On a blocking-pool thread, while it runs a closure of
    /// [`RuntimeHandle::spawn_blocking`]: that closure's runtime. Weak, so a
    /// queued job does not keep its runtime's shared state alive.
    static BLOCKING_RUNTIME: std::cell::RefCell<Option<Weak<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// Wraps a blocking closure so that `spargio::spawn` and `spargio::spawn_blocking` inside
/// it use `shared`'s runtime.
pub(crate) fn with_blocking_context<F, T>(shared: &Arc<Shared>, f: F) -> impl FnOnce() -> T + Send + 'static
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let runtime = Arc::downgrade(shared);
    move || {
        /// Restores the thread's previous context, also when `f` panics.
        struct Restore(Option<Weak<Shared>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                BLOCKING_RUNTIME.with(|c| *c.borrow_mut() = previous);
            }
        }
        let _restore = Restore(BLOCKING_RUNTIME.with(|c| c.borrow_mut().replace(runtime)));
        f()
    }
}

/// The runtime of the blocking closure this thread is running, if any (see
/// [`with_blocking_context`]).
pub(crate) fn blocking_context() -> Option<Weak<Shared>> {
    BLOCKING_RUNTIME.with(|c| c.borrow().clone())
}
