//! Tasks: the state word, wakers, and `JoinHandle`.
//!
//! A task is an `Arc<Task>`; its waker is the same `Arc` (through
//! [`std::task::Wake`]), so waking costs no allocation. The future lives in the
//! task (or, for `!Send` tasks, in its shard's local table), and its output
//! goes to a [`JoinState`] shared with the [`JoinHandle`].
//!
//! # The state word
//!
//! | bit | set when | cleared when |
//! |---|---|---|
//! | `SCHEDULED` | a wake put the task in a run queue (or asked the running poll to requeue it) | a shard takes it out to run it |
//! | `RUNNING` | a shard is polling it; only one shard can set it | the poll returns |
//! | `COMPLETE` | the future finished, panicked or was dropped; never cleared | — |
//! | `CANCELLED` | `abort()` or shutdown asked for cancellation; never cleared | — |
//!
//! A wake while `RUNNING` only sets `SCHEDULED`; the polling shard sees the bit
//! when the poll returns and requeues the task itself, so a task is never in
//! two queues and never polled by two threads at once.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::JoinError;

const SCHEDULED: u8 = 1 << 0;
const RUNNING: u8 = 1 << 1;
const COMPLETE: u8 = 1 << 2;
const CANCELLED: u8 = 1 << 3;

/// A boxed task future.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a task may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mobility {
    /// Runs only on its shard.
    Pinned,
    /// Any idle shard may take it while it waits in a run queue.
    Stealable,
    /// A `!Send` future kept in its shard's local table; never moves.
    Local,
}

/// Receives a task's failure (type-erased side of [`JoinState`]).
pub(crate) trait Completion: Send + Sync {
    /// Records that the task ended without output. Ignored if an output is already set.
    fn fail(&self, err: JoinError);
}

/// Where a task goes when it is woken and reports its end: the runtime
/// (`runtime::Shared`), seen from below without importing it.
pub(crate) trait Scheduler: Send + Sync {
    /// Queues the woken `task` where it runs.
    fn schedule(self: Arc<Self>, task: Arc<Task>);
    /// Called once when `task` ends.
    fn task_finished(&self, task: &Task);
}

/// One task.
pub(crate) struct Task {
    pub(crate) id: u64,
    state: AtomicU8,
    /// The shard whose queues the task goes back to when woken.
    owner: AtomicUsize,
    pub(crate) mobility: Mobility,
    future: Mutex<Option<BoxFuture>>,
    join: Arc<dyn Completion>,
    runtime: Weak<dyn Scheduler>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("owner", &self.owner())
            .field("mobility", &self.mobility)
            .finish()
    }
}

/// What a poll of a task's future did.
pub(crate) enum PollOutcome {
    /// The future is still pending.
    Pending,
    /// The future finished (its output already went to the join state).
    Ready,
    /// The future panicked with this payload.
    Panicked(Box<dyn std::any::Any + Send>),
}

impl Task {
    pub(crate) fn new(
        id: u64,
        owner: usize,
        mobility: Mobility,
        future: Option<BoxFuture>,
        join: Arc<dyn Completion>,
        runtime: Weak<dyn Scheduler>,
    ) -> Arc<Task> {
        Arc::new(Task {
            id,
            state: AtomicU8::new(SCHEDULED),
            owner: AtomicUsize::new(owner),
            mobility,
            future: Mutex::new(future),
            join,
            runtime,
        })
    }

    pub(crate) fn owner(&self) -> usize {
        // Relaxed: the owner changes only when a thief takes the task out of a
        // queue under that queue's lock, which orders it with the next wake's
        // enqueue; a stale read only sends the task to the previous owner, which
        // runs it just the same.
        self.owner.load(Ordering::Relaxed)
    }

    pub(crate) fn set_owner(&self, shard: usize) {
        debug_assert_eq!(self.mobility, Mobility::Stealable);
        self.owner.store(shard, Ordering::Relaxed);
    }

    /// Asks for cancellation and schedules the task so its shard drops it.
    pub(crate) fn cancel(self: &Arc<Self>) {
        let prev = self.state.fetch_or(CANCELLED, Ordering::AcqRel);
        if prev & (COMPLETE | CANCELLED) == 0 {
            self.wake_by_ref();
        }
    }

    /// Polls the task once, with `poll` doing the actual poll of its future.
    ///
    /// Runs the state protocol around it; returns `true` when the task ended.
    /// Called only by the shard that took the task out of a queue.
    pub(crate) fn run(
        self: &Arc<Self>,
        poll: impl FnOnce(&Arc<Task>, &mut Context<'_>) -> PollOutcome,
    ) -> bool {
        // Take the SCHEDULED bit and set RUNNING. Acquire pairs with the AcqRel
        // of the waker that set SCHEDULED: whatever it wrote before waking is
        // visible to this poll.
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & COMPLETE != 0 {
                return true;
            }
            debug_assert_eq!(s & RUNNING, 0, "task polled by two shards at once");
            match self.state.compare_exchange_weak(
                s,
                (s & !SCHEDULED) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if s & CANCELLED != 0 {
            self.finish(Some(JoinError::Cancelled));
            return true;
        }
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        match poll(self, &mut cx) {
            PollOutcome::Ready => {
                self.finish(None);
                true
            }
            PollOutcome::Panicked(payload) => {
                self.finish(Some(JoinError::Panicked(payload)));
                true
            }
            PollOutcome::Pending => {
                // Clear RUNNING; if a wake (or cancel) came in meanwhile, requeue.
                // A cancel during the poll woke the task too, so SCHEDULED covers it.
                let prev = self.state.fetch_and(!RUNNING, Ordering::AcqRel);
                if prev & SCHEDULED != 0 {
                    // SCHEDULED stays set, so no waker enqueues it: the requeue is ours.
                    self.enqueue();
                }
                false
            }
        }
    }

    /// True when a wake is pending (the task is queued, or will be when its
    /// running poll returns).
    pub(crate) fn is_woken(&self) -> bool {
        self.state.load(Ordering::Acquire) & SCHEDULED != 0
    }

    /// Takes a wake that came in during the current poll, so the poller can
    /// poll again at once instead of queueing the task. False when none came,
    /// or when the task was cancelled meanwhile (the requeue after the poll
    /// then finishes it). Called only by the shard running the task.
    pub(crate) fn take_wake_while_running(&self) -> bool {
        // Acquire pairs with the waker's AcqRel, as in `run`: what the waker
        // wrote (an op's result) is visible to the next poll.
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            debug_assert_ne!(s & RUNNING, 0, "only the running poller takes a wake");
            if s & SCHEDULED == 0 || s & CANCELLED != 0 {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(s, s & !SCHEDULED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    /// Polls the future stored in the task (Send tasks).
    pub(crate) fn poll_stored(self: &Arc<Self>, cx: &mut Context<'_>) -> PollOutcome {
        let mut slot = self.lock_future();
        let Some(fut) = slot.as_mut() else {
            return PollOutcome::Ready;
        };
        match panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => PollOutcome::Pending,
            Ok(Poll::Ready(())) => PollOutcome::Ready,
            Err(payload) => PollOutcome::Panicked(payload),
        }
    }

    fn lock_future(&self) -> MutexGuard<'_, Option<BoxFuture>> {
        self.future.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the task complete, drops its future (running its destructors on
    /// this shard) and reports `err` to the join handle.
    fn finish(&self, err: Option<JoinError>) {
        self.state.fetch_or(COMPLETE, Ordering::AcqRel);
        self.state.fetch_and(!(RUNNING | SCHEDULED), Ordering::AcqRel);
        let fut = self.lock_future().take();
        // A destructor that panics must not take the shard down.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(fut)));
        if let Some(err) = err {
            self.join.fail(err);
        }
        if let Some(rt) = self.runtime.upgrade() {
            rt.task_finished(self);
        }
    }

    /// Drops the task without polling it (shutdown of a runtime whose shard is gone).
    pub(crate) fn abandon(&self) {
        if self.state.fetch_or(COMPLETE | CANCELLED, Ordering::AcqRel) & COMPLETE == 0 {
            let fut = self.lock_future().take();
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(fut)));
            self.join.fail(JoinError::Cancelled);
            if let Some(rt) = self.runtime.upgrade() {
                rt.task_finished(self);
            }
        }
    }

    fn enqueue(self: &Arc<Self>) {
        match self.runtime.upgrade() {
            Some(rt) => rt.schedule(self.clone()),
            None => self.abandon(),
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & (COMPLETE | SCHEDULED) != 0 {
                return;
            }
            match self
                .state
                .compare_exchange_weak(s, s | SCHEDULED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        // Running: the poller requeues it when the poll returns.
        if s & RUNNING == 0 {
            self.enqueue();
        }
    }
}

/// The output slot shared by a task and its [`JoinHandle`].
pub(crate) struct JoinState<T> {
    inner: Mutex<JoinInner<T>>,
}

struct JoinInner<T> {
    result: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
    /// The handle took the result; later failures are ignored.
    taken: bool,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Arc<JoinState<T>> {
        Arc::new(JoinState {
            inner: Mutex::new(JoinInner {
                result: None,
                waker: None,
                taken: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, JoinInner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, result: Result<T, JoinError>) {
        let waker = {
            let mut inner = self.lock();
            if inner.result.is_some() || inner.taken {
                return;
            }
            inner.result = Some(result);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Stores the task's output.
    pub(crate) fn complete(&self, value: T) {
        self.set(Ok(value));
    }

    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let mut inner = self.lock();
        if let Some(r) = inner.result.take() {
            inner.taken = true;
            return Poll::Ready(r);
        }
        assert!(!inner.taken, "JoinHandle polled after it returned its output");
        match &mut inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_finished(&self) -> bool {
        let inner = self.lock();
        inner.result.is_some() || inner.taken
    }
}

impl<T: Send> Completion for JoinState<T> {
    fn fail(&self, err: JoinError) {
        self.set(Err(err));
    }
}

/// An owned permission to await a task's output, or to abort it.
///
/// Awaiting gives `Ok(output)`, or a [`JoinError`] that tells a cancelled
/// task from one that panicked. Dropping the handle detaches the task: it
/// keeps running. Works from any thread or runtime: awaiting it from a Tokio
/// task, for example, does not block that runtime.
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
    task: Arc<Task>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").field("task", &self.task.id).finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(state: Arc<JoinState<T>>, task: Arc<Task>) -> Self {
        JoinHandle { state, task }
    }

    /// Asks the task to stop. It is dropped on its shard at its next scheduling
    /// point (never in the middle of a poll), and awaiting the handle then gives
    /// [`JoinError::Cancelled`]. A task that already finished keeps its output.
    pub fn abort(&self) {
        self.task.cancel();
    }

    /// True once the task has finished (output, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// The runtime-unique id of the task.
    pub fn id(&self) -> u64 {
        self.task.id
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.state.poll_result(cx)
    }
}

/// Blocks the current (non-runtime) thread until `fut` completes.
pub(crate) fn block_on_thread<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
