//! `Semaphore`: a fair counting semaphore usable from any shard or thread.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::wait_list::{WaitKey, WaitList, WaitState};

/// Tag of a waiter whose permits were granted (they are its own now).
const GRANTED: u8 = 0;
/// Tag of a waiter woken because the semaphore closed.
const CLOSED: u8 = 1;

/// The semaphore was closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AcquireError;

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore closed")
    }
}

impl std::error::Error for AcquireError {}

/// Why a `try_acquire` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryAcquireError {
    /// The semaphore was closed.
    Closed,
    /// Not enough permits now (or other tasks wait for them first).
    NoPermits,
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::Closed => f.write_str("semaphore closed"),
            TryAcquireError::NoPermits => f.write_str("no permits available"),
        }
    }
}

impl std::error::Error for TryAcquireError {}

struct State {
    permits: usize,
    closed: bool,
    waiters: WaitList,
}

impl State {
    /// Grants permits to waiters in order while the first one can be served.
    fn grant(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        while let Some(want) = self.waiters.front_want() {
            if want > self.permits {
                break;
            }
            self.permits -= want;
            wakers.extend(self.waiters.notify_one(GRANTED));
        }
        wakers
    }
}

/// A counting semaphore: at most `permits` holders at once.
///
/// Fair: waiters are served in arrival order, and a large request at the
/// front is not overtaken by smaller ones behind it. Permits return when the
/// [`SemaphorePermit`] drops.
///
/// ```
/// use std::sync::Arc;
/// use spargio::sync::Semaphore;
///
/// spargio::run(|handle| async move {
///     let limit = Arc::new(Semaphore::new(2));
///     let mut tasks = Vec::new();
///     for _ in 0..8 {
///         let limit = limit.clone();
///         tasks.push(handle.spawn_stealable(async move {
///             let _permit = limit.acquire().await.unwrap();
///             // At most two tasks are here at once.
///         }).unwrap());
///     }
///     for t in tasks {
///         t.await.unwrap();
///     }
///     assert_eq!(limit.available_permits(), 2);
/// })
/// .unwrap();
/// ```
pub struct Semaphore {
    state: Mutex<State>,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available_permits())
            .finish_non_exhaustive()
    }
}

impl Semaphore {
    /// Most permits a semaphore can hold.
    pub const MAX_PERMITS: usize = usize::MAX >> 3;

    /// A semaphore with `permits` permits.
    ///
    /// # Panics
    ///
    /// If `permits` exceeds [`Semaphore::MAX_PERMITS`].
    pub fn new(permits: usize) -> Semaphore {
        assert!(
            permits <= Self::MAX_PERMITS,
            "a semaphore holds at most {} permits",
            Self::MAX_PERMITS
        );
        Semaphore {
            state: Mutex::new(State {
                permits,
                closed: false,
                waiters: WaitList::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.lock().permits
    }

    /// Adds `n` permits, serving waiters first.
    ///
    /// # Panics
    ///
    /// If the total would exceed [`Semaphore::MAX_PERMITS`].
    pub fn add_permits(&self, n: usize) {
        let wakers = {
            let mut st = self.lock();
            st.permits = st
                .permits
                .checked_add(n)
                .filter(|&p| p <= Self::MAX_PERMITS)
                .expect("semaphore permit overflow");
            st.grant()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Closes the semaphore: waiting and future acquires fail with
    /// [`AcquireError`]. Permits already held stay valid.
    pub fn close(&self) {
        let wakers = {
            let mut st = self.lock();
            st.closed = true;
            st.waiters.notify_all(CLOSED)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// True once [`close`](Semaphore::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits for one permit.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the semaphore is closed.
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_many(1)
    }

    /// Waits for `n` permits, taken together.
    ///
    /// Cancel-safe: dropping the future gives back permits granted to it.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the semaphore is closed.
    pub fn acquire_many(&self, n: u32) -> Acquire<'_> {
        Acquire {
            sem: self,
            n: n as usize,
            key: None,
        }
    }

    /// Takes one permit if one is free and nobody waits.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] or [`TryAcquireError::Closed`].
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.try_acquire_many(1)
    }

    /// Takes `n` permits if they are free and nobody waits.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] or [`TryAcquireError::Closed`].
    pub fn try_acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.try_take(n as usize)
            .map(|n| SemaphorePermit { sem: self, n })
    }

    fn try_take(&self, n: usize) -> Result<usize, TryAcquireError> {
        let mut st = self.lock();
        if st.closed {
            return Err(TryAcquireError::Closed);
        }
        if st.waiters.is_empty() && st.permits >= n {
            st.permits -= n;
            return Ok(n);
        }
        Err(TryAcquireError::NoPermits)
    }

    /// As [`acquire`](Semaphore::acquire), with a permit that owns an `Arc`
    /// of the semaphore (so it can move into a spawned task).
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the semaphore is closed.
    pub async fn acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.acquire_many_owned(1).await
    }

    /// As [`acquire_many`](Semaphore::acquire_many), with an owning permit.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the semaphore is closed.
    pub async fn acquire_many_owned(self: Arc<Self>, n: u32) -> Result<OwnedSemaphorePermit, AcquireError> {
        let permit = self.acquire_many(n).await?;
        let n = permit.n;
        std::mem::forget(permit);
        Ok(OwnedSemaphorePermit { sem: self, n })
    }

    /// As [`try_acquire`](Semaphore::try_acquire), with an owning permit.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] or [`TryAcquireError::Closed`].
    pub fn try_acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        let n = self.try_take(1)?;
        Ok(OwnedSemaphorePermit { sem: self, n })
    }
}

/// Future of [`Semaphore::acquire`] and [`Semaphore::acquire_many`].
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'a> {
    sem: &'a Semaphore,
    n: usize,
    key: Option<WaitKey>,
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("permits", &self.n)
            .field("waiting", &self.key.is_some())
            .finish()
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<SemaphorePermit<'a>, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let sem = this.sem;
        let mut st = sem.lock();
        if let Some(key) = this.key {
            let (state, old) = st.waiters.poll(key, cx.waker());
            drop(st);
            drop(old);
            return match state {
                WaitState::Queued => Poll::Pending,
                WaitState::Notified(GRANTED) => {
                    this.key = None;
                    Poll::Ready(Ok(SemaphorePermit { sem, n: this.n }))
                }
                _ => {
                    this.key = None;
                    Poll::Ready(Err(AcquireError))
                }
            };
        }
        if st.closed {
            return Poll::Ready(Err(AcquireError));
        }
        if st.waiters.is_empty() && st.permits >= this.n {
            st.permits -= this.n;
            return Poll::Ready(Ok(SemaphorePermit { sem, n: this.n }));
        }
        this.key = Some(st.waiters.push(cx.waker().clone(), this.n));
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let wakers = {
            let mut st = self.sem.lock();
            match st.waiters.cancel(key).0 {
                // Granted but never used: give the permits back.
                WaitState::Notified(GRANTED) => {
                    st.permits += self.n;
                    st.grant()
                }
                // We were at the front and blocked smaller requests: re-check.
                WaitState::Queued => st.grant(),
                _ => Vec::new(),
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Permits held from a [`Semaphore`]; they return when this drops.
#[must_use = "the permits return as soon as this is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
    n: usize,
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("permits", &self.n)
            .finish()
    }
}

impl SemaphorePermit<'_> {
    /// Keeps the permits out of the semaphore for good.
    pub fn forget(mut self) {
        self.n = 0;
    }

    /// Permits held.
    pub fn num_permits(&self) -> usize {
        self.n
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.sem.add_permits(self.n);
        }
    }
}

/// Permits held from an `Arc<Semaphore>`; they return when this drops.
#[must_use = "the permits return as soon as this is dropped"]
pub struct OwnedSemaphorePermit {
    sem: Arc<Semaphore>,
    n: usize,
}

impl fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSemaphorePermit")
            .field("permits", &self.n)
            .finish()
    }
}

impl OwnedSemaphorePermit {
    /// Keeps the permits out of the semaphore for good.
    pub fn forget(mut self) {
        self.n = 0;
    }

    /// Permits held.
    pub fn num_permits(&self) -> usize {
        self.n
    }

    /// The semaphore the permits came from.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.sem
    }
}

impl Drop for OwnedSemaphorePermit {
    fn drop(&mut self) {
        if self.n > 0 {
            self.sem.add_permits(self.n);
        }
    }
}
