//! The blocking pool: a bounded set of threads for calls that would block a shard.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{JoinError, RuntimeError};

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle pool thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
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
                }),
                cv: Condvar::new(),
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
        if st.idle > 0 {
            self.inner.cv.notify_one();
        } else if st.threads < self.inner.max_threads {
            st.threads += 1;
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name(inner.name.clone())
                .spawn(move || worker(inner));
            if let Err(e) = spawned {
                st.threads -= 1;
                if st.threads == 0 {
                    let job = st.jobs.pop_back().expect("pushed above");
                    return Err((job, RuntimeError::Io(e)));
                }
            }
        }
        Ok(())
    }

    /// Refuses new jobs; idle threads exit, running ones finish their job.
    pub(crate) fn shutdown(&self) {
        self.inner.lock().shutdown = true;
        self.inner.cv.notify_all();
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
