//! The blocking pool: a bounded set of threads for calls that would block a shard.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{JoinError, RuntimeError};

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle pool thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct State {
    jobs: VecDeque<Job>,
    /// Threads started and not yet exited.
    threads: usize,
    /// Threads waiting for a job. A queued job is owed a thread: while
    /// `jobs.len() > idle`, a push starts a new thread (up to the bound), so a
    /// job never waits behind another that blocks for long.
    idle: usize,
    shutdown: bool,
    /// Handles of started threads (pruned of finished ones as new ones start).
    handles: Vec<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
    /// Signalled when a job is queued or shutdown begins.
    cv: Condvar,
    /// Signalled when a thread exits.
    exited: Condvar,
    max_threads: usize,
    name: String,
}

/// A bounded thread pool; threads start on demand and exit when idle.
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockingPool {
    pub(crate) fn new(max_threads: usize, name: String) -> Self {
        BlockingPool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                    handles: Vec::new(),
                }),
                cv: Condvar::new(),
                exited: Condvar::new(),
                max_threads,
                name,
            }),
        }
    }

    pub(crate) fn spawn<F, T>(&self, f: F) -> Result<BlockingHandle<T>, RuntimeError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::new(Slot {
            inner: Mutex::new((None, None)),
        });
        let out = slot.clone();
        let job: Job = Box::new(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::Panicked);
            out.set(result);
        });
        match self.push(job) {
            Ok(()) => Ok(BlockingHandle { slot }),
            Err((_job, e)) => Err(e),
        }
    }

    /// Runs `job(arg)` on the pool, or on this thread if the pool cannot take
    /// it (shut down, or no thread could be started): the job always runs.
    pub(crate) fn run_or_inline<A: Send + 'static>(&self, arg: A, job: impl FnOnce(A) + Send + 'static) {
        let cell = Arc::new(Mutex::new(Some((arg, job))));
        let pooled = cell.clone();
        let pushed = self.push(Box::new(move || {
            if let Some((arg, job)) = pooled.lock().unwrap_or_else(|p| p.into_inner()).take() {
                job(arg);
            }
        }));
        if pushed.is_err()
            && let Some((arg, job)) = cell.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            job(arg);
        }
    }

    fn push(&self, job: Job) -> Result<(), (Job, RuntimeError)> {
        let mut st = self.inner.lock();
        if st.shutdown {
            return Err((job, RuntimeError::Closed));
        }
        st.jobs.push_back(job);
        if st.jobs.len() <= st.idle {
            self.inner.cv.notify_one();
            return Ok(());
        }
        if st.threads < self.inner.max_threads {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name(inner.name.clone())
                .spawn(move || worker(inner));
            match spawned {
                Ok(handle) => {
                    st.threads += 1;
                    st.handles.retain(|h| !h.is_finished());
                    st.handles.push(handle);
                }
                Err(e) if st.threads == 0 => {
                    let job = st.jobs.pop_back().expect("pushed above");
                    return Err((job, RuntimeError::Io(e)));
                }
                // Running threads will get to the job.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Refuses new jobs and waits, up to `timeout`, for the pool's threads to
    /// exit (idle ones at once, busy ones after their job), then joins them.
    /// A thread still running a job after `timeout` is detached, not waited
    /// for. Called from a pool thread, it does not wait for that thread.
    pub(crate) fn shutdown(&self, timeout: Duration) {
        let me = std::thread::current().id();
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.inner.lock();
        st.shutdown = true;
        self.inner.cv.notify_all();
        let own = st.handles.iter().any(|h| h.thread().id() == me);
        let others = |st: &State| st.threads - usize::from(own);
        while others(&st) > 0 {
            let wait = match deadline {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
                None => Duration::from_secs(3600),
            };
            st = self
                .inner
                .exited
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let all_exited = others(&st) == 0;
        let handles = std::mem::take(&mut st.handles);
        drop(st);
        for h in handles {
            // Every other thread has left its loop (or this one had ended
            // before): the join returns at once. Past the deadline, busy threads
            // are detached.
            if h.thread().id() != me && (all_exited || h.is_finished()) {
                let _ = h.join();
            }
        }
    }
}

fn worker(inner: Arc<Inner>) {
    let mut st = inner.lock();
    loop {
        if let Some(job) = st.jobs.pop_front() {
            drop(st);
            job();
            st = inner.lock();
            continue;
        }
        if st.shutdown {
            break;
        }
        st.idle += 1;
        let (next, timeout) = inner
            .cv
            .wait_timeout(st, IDLE_EXIT)
            .unwrap_or_else(|p| p.into_inner());
        st = next;
        st.idle -= 1;
        if timeout.timed_out() && st.jobs.is_empty() {
            break;
        }
    }
    st.threads -= 1;
    drop(st);
    inner.exited.notify_all();
}

/// A job's result (once it ran) and the waker of whoever awaits it.
type SlotState<T> = (Option<Result<T, JoinError>>, Option<Waker>);

struct Slot<T> {
    inner: Mutex<SlotState<T>>,
}

impl<T> Slot<T> {
    fn set(&self, r: Result<T, JoinError>) {
        let w = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = Some(r);
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Awaits the result of [`RuntimeHandle::spawn_blocking`](crate::RuntimeHandle::spawn_blocking).
///
/// Dropping it detaches the job; a job cannot be interrupted once it runs.
#[must_use = "futures do nothing unless awaited"]
pub struct BlockingHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> std::fmt::Debug for BlockingHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingHandle").finish_non_exhaustive()
    }
}

impl<T> Future for BlockingHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.slot.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = g.0.take() {
            return Poll::Ready(r);
        }
        g.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}
