//! `Notify`: wake one waiting task, or all of them, from anywhere.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::wait_list::{WaitKey, WaitList, WaitState};

/// Tag of a waiter woken by `notify_one` (it owns that notification).
const ONE: u8 = 0;
/// Tag of a waiter woken by `notify_waiters`.
const ALL: u8 = 1;

struct State {
    /// A `notify_one` that found nobody waiting; the next waiter takes it.
    permit: bool,
    waiters: WaitList,
}

/// Notifies tasks, on any shard or thread, that something happened.
///
/// [`notify_one`](Notify::notify_one) wakes the longest-waiting
/// [`notified`](Notify::notified) future, or, if none waits, stores one
/// permit that the next `notified().await` consumes at once (several calls
/// store only one). [`notify_waiters`](Notify::notify_waiters) wakes every
/// `notified()` future created before the call and stores nothing.
///
/// ```
/// use std::sync::Arc;
/// use spargio::sync::Notify;
///
/// spargio::run(|handle| async move {
///     let notify = Arc::new(Notify::new());
///     let waiter = {
///         let notify = notify.clone();
///         handle.spawn_stealable(async move { notify.notified().await; "woken" }).unwrap()
///     };
///     notify.notify_one();
///     assert_eq!(waiter.await.unwrap(), "woken");
/// })
/// .unwrap();
/// ```
pub struct Notify {
    state: Mutex<State>,
    /// Count of `notify_waiters` calls; written under the lock.
    generation: AtomicU64,
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify").finish_non_exhaustive()
    }
}

impl Default for Notify {
    fn default() -> Self {
        Notify::new()
    }
}

impl Notify {
    /// A `Notify` with no stored permit.
    pub fn new() -> Notify {
        Notify {
            state: Mutex::new(State {
                permit: false,
                waiters: WaitList::default(),
            }),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a notification.
    ///
    /// Cancel-safe: a `notified()` future woken by `notify_one` and dropped
    /// before it saw the wake-up passes it to the next waiter (or stores it).
    pub fn notified(&self) -> Notified<'_> {
        // SeqCst: orders this read with `notify_waiters`'s increment, so a
        // future created after that call does not count it.
        Notified {
            notify: self,
            generation: self.generation.load(Ordering::SeqCst),
            key: None,
            done: false,
        }
    }

    /// Wakes the longest-waiting `notified()` future, or stores one permit.
    pub fn notify_one(&self) {
        let waker = {
            let mut st = self.lock();
            let w = st.waiters.notify_one(ONE);
            if w.is_none() {
                st.permit = true;
            }
            w
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Wakes every `notified()` future created before this call. Stores no permit.
    pub fn notify_waiters(&self) {
        let wakers = {
            let mut st = self.lock();
            self.generation.fetch_add(1, Ordering::SeqCst);
            st.waiters.notify_all(ALL)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Future of [`Notify::notified`].
#[must_use = "futures do nothing unless awaited"]
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    key: Option<WaitKey>,
    done: bool,
}

impl fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notified")
            .field("waiting", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(());
        }
        let mut st = this.notify.lock();
        if let Some(key) = this.key {
            let (state, old) = st.waiters.poll(key, cx.waker());
            drop(st);
            drop(old);
            if state == WaitState::Queued {
                return Poll::Pending;
            }
            this.key = None;
            this.done = true;
            return Poll::Ready(());
        }
        if this.notify.generation.load(Ordering::SeqCst) != this.generation || std::mem::take(&mut st.permit)
        {
            this.done = true;
            return Poll::Ready(());
        }
        this.key = Some(st.waiters.push(cx.waker().clone(), 0));
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let waker = {
            let mut st = self.notify.lock();
            match st.waiters.cancel(key).0 {
                WaitState::Notified(ONE) => {
                    // We were handed a `notify_one` we will not use: pass it on.
                    let w = st.waiters.notify_one(ONE);
                    if w.is_none() {
                        st.permit = true;
                    }
                    w
                }
                _ => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}
