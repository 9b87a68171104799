//! Shared helpers of the runtime integration tests: one runtime builder per
//! backend (real io_uring, the Queue backend, io_uring on the simulated
//! kernel), a thread-parking executor with a hang deadline, and small futures.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use spargio::sys::ring::Ring;
use spargio::sys::sim::{Faults, SimKernel};
use spargio::{Backend, JoinHandle, Runtime, RuntimeBuilder, RuntimeHandle, ShardCtx};

/// How long any single wait in a test may take before the test declares a hang
/// (a lost wake-up, a deadlock). Generous: it is a liveness bound, never a
/// performance assertion.
pub const HANG: Duration = Duration::from_secs(120);

/// What the shards of a test runtime run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `Backend::IoUring` on the running kernel.
    IoUring,
    /// `Backend::Queue`: epoll parking and socket readiness, in-memory messages.
    Queue,
    /// `Backend::IoUring` on `spargio::sys::sim::SimKernel`.
    Sim,
}

impl Kernel {
    /// Every kernel a backend test runs on.
    pub const ALL: [Kernel; 3] = [Kernel::IoUring, Kernel::Queue, Kernel::Sim];

    /// True when the runtime talks to rings (real or simulated).
    pub fn has_rings(self) -> bool {
        self != Kernel::Queue
    }
}

/// Why io_uring cannot be used here, if it cannot (computed once).
pub fn io_uring_unavailable() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| match Ring::new(2) {
            Ok(_) => None,
            Err(e) if e.io_uring_unavailable() => {
                Some(format!("io_uring unavailable: {e} ({})", e.likely_cause()))
            }
            Err(e) => panic!("io_uring setup failed for a reason other than unavailability: {e}"),
        })
        .as_deref()
}

/// A builder for `kernel` with `shards` shards, or `None` (after printing why)
/// when the kernel cannot run here: only real io_uring, and only when the
/// kernel refuses io_uring itself.
pub fn builder(kernel: Kernel, shards: usize) -> Option<RuntimeBuilder> {
    let b = RuntimeBuilder::new()
        .shards(shards)
        .thread_name_prefix(format!("t-{kernel:?}"));
    match kernel {
        Kernel::IoUring => {
            if let Some(reason) = io_uring_unavailable() {
                eprintln!("SKIPPED (real io_uring): {reason}");
                return None;
            }
            Some(b.backend(Backend::IoUring).fallback_to_queue(false))
        }
        Kernel::Queue => Some(b.backend(Backend::Queue)),
        Kernel::Sim => Some(b.backend(Backend::IoUring).simulated_kernel(SimKernel::new())),
    }
}

/// A 2-shard runtime on `backend`, with no fallback to the other one.
pub fn runtime_on(backend: Backend) -> Runtime {
    RuntimeBuilder::new()
        .shards(2)
        .backend(backend)
        .fallback_to_queue(false)
        .build()
        .unwrap_or_else(|e| panic!("{backend:?} runtime: {e}"))
}

/// A simulated-kernel builder whose kernel injects `faults`; returns the kernel
/// too, so the test can read what was injected.
pub fn sim_builder_with_faults(shards: usize, faults: Faults) -> (RuntimeBuilder, SimKernel) {
    let kernel = SimKernel::new();
    kernel.set_faults(faults);
    let b = RuntimeBuilder::new()
        .shards(shards)
        .thread_name_prefix("t-faults")
        .backend(Backend::IoUring)
        .simulated_kernel(kernel.clone());
    (b, kernel)
}

/// Builds `b` and checks it runs on the backend `kernel` asks for (no silent fallback).
pub fn build(kernel: Kernel, b: RuntimeBuilder) -> Runtime {
    let rt = b
        .build()
        .unwrap_or_else(|e| panic!("building a {kernel:?} runtime: {e}"));
    let want = if kernel == Kernel::Queue {
        Backend::Queue
    } else {
        Backend::IoUring
    };
    assert_eq!(
        rt.handle().backend(),
        want,
        "{kernel:?} runtime runs on the wrong backend"
    );
    assert!(rt.fallback_reason().is_none());
    rt
}

/// Generates one `#[test]` per kernel for each scenario `fn name(kernel: Kernel)`
/// in the calling module: `io_uring::name`, `queue::name`, `sim::name`. Attributes
/// (e.g. `#[ignore = "..."]`) written before a name apply to all three.
#[macro_export]
macro_rules! each_kernel {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod io_uring {
            $( $(#[$attr])* #[test] fn $name() { super::$name($crate::common::Kernel::IoUring) } )*
        }
        mod queue {
            $( $(#[$attr])* #[test] fn $name() { super::$name($crate::common::Kernel::Queue) } )*
        }
        mod sim {
            $( $(#[$attr])* #[test] fn $name() { super::$name($crate::common::Kernel::Sim) } )*
        }
    };
}

/// Wakes a thread blocked in [`wait`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on the calling (non-runtime) thread, panicking with
/// `what` if it has not finished after [`HANG`].
pub fn wait<F: Future>(what: &str, fut: F) -> F::Output {
    wait_for(what, HANG, fut)
}

/// As [`wait`], with a liveness bound of `limit`.
pub fn wait_for<F: Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + limit;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let now = Instant::now();
        assert!(now < deadline, "hang: {what} did not finish within {limit:?}");
        std::thread::park_timeout(deadline - now);
    }
}

/// Awaits a spargio task from the calling thread, with the hang deadline.
pub fn join<T>(what: &str, handle: JoinHandle<T>) -> T {
    match wait(what, handle) {
        Ok(v) => v,
        Err(e) => panic!("{what}: task failed: {e}"),
    }
}

/// Receives from a std channel with the hang deadline.
pub fn recv<T>(what: &str, rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(HANG)
        .unwrap_or_else(|e| panic!("hang: {what}: {e}"))
}

/// Waits (polling every millisecond) until `cond` holds, with the hang
/// deadline. Only for states the runtime reaches by itself and that no test
/// thread can be told about (a shard going to sleep).
pub fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "hang: {what} did not happen within {HANG:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The shard running the calling task.
pub fn shard_id() -> usize {
    ShardCtx::current().expect("called outside a shard").shard_id()
}

/// Yields once: wakes itself and returns `Pending` on its first poll.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// Future of [`yield_now`].
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A future that never completes (and never registers for a wake).
pub struct Never;

impl Future for Never {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Counts its own drops: put one in a task to see that its future was dropped.
pub struct DropCounter(pub Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A task pinned on a shard that blocks that shard's thread in a synchronous
/// wait (as a long CPU-bound loop would) until released.
pub struct ShardBlocker {
    release: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl ShardBlocker {
    /// Blocks `shard` and returns once the blocking task is running on it.
    pub fn new(handle: &RuntimeHandle, shard: usize) -> ShardBlocker {
        let (started_tx, started_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let task = handle
            .spawn_pinned(shard, async move {
                started_tx.send(shard_id()).unwrap();
                // Synchronous: the shard's thread runs nothing else meanwhile.
                let _ = release_rx.recv_timeout(HANG);
            })
            .expect("spawning the shard blocker");
        assert_eq!(recv("shard blocker start", &started_rx), shard);
        ShardBlocker { release, task }
    }

    /// Lets the shard go and waits for the blocking task to end.
    pub fn release(self) {
        let _ = self.release.send(());
        join("shard blocker", self.task);
    }

    /// Lets the shard go without waiting.
    pub fn release_nowait(self) {
        let _ = self.release.send(());
    }
}

/// A one-shot, runtime-agnostic gate: `open` from anywhere, `wait` from a task.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<Mutex<(bool, Vec<Waker>)>>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        let wakers = {
            let mut g = self.inner.lock().unwrap();
            g.0 = true;
            std::mem::take(&mut g.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_open(&self) -> bool {
        self.inner.lock().unwrap().0
    }

    pub fn wait(&self) -> GateWait {
        GateWait(self.clone())
    }
}

/// Future of [`Gate::wait`].
pub struct GateWait(Gate);

impl Future for GateWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.0.inner.lock().unwrap();
        if g.0 {
            return Poll::Ready(());
        }
        g.1.push(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls `fut` once with a waker that does nothing; `None` if it is pending.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Option<F::Output> {
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Loop counts: the full count in optimised builds, `debug` in unoptimised ones.
pub fn scaled(release: usize, debug: usize) -> usize {
    if cfg!(debug_assertions) { debug } else { release }
}

/// Restores the soft `RLIMIT_NOFILE` when dropped (also on panic). For test
/// binaries of their own: the limit is process-wide.
pub struct RestoreLimit(pub u64);

impl Drop for RestoreLimit {
    fn drop(&mut self) {
        spargio::sys::os::set_nofile_limit(self.0).unwrap();
    }
}

/// A soft `RLIMIT_NOFILE` under which exactly `free` (at least 1) fd numbers
/// are unused (an fd is refused when no free number below the limit is left).
pub fn limit_leaving(free: u64) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    let mut left = free;
    (0u64..)
        .find(|n| {
            if !open.contains(n) {
                left -= 1;
            }
            left == 0
        })
        .unwrap()
        + 1
}
