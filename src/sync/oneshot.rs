//! A one-shot channel: one value, from one sender to one receiver, across
//! shards, runtimes and threads.
//!
//! ```
//! use spargio::sync::oneshot;
//!
//! spargio::run(|handle| async move {
//!     let (tx, rx) = oneshot::channel();
//!     handle.spawn_pinned(1 % handle.shard_count(), async move { tx.send(42).unwrap() }).unwrap();
//!     assert_eq!(rx.await, Ok(42));
//! })
//! .unwrap();
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::block::block_on;

/// The sender went away without sending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot sender dropped without sending")
    }
}

impl std::error::Error for RecvError {}

/// Why [`Receiver::try_recv`] gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryRecvError {
    /// Nothing sent yet.
    Empty,
    /// The sender went away without sending (or the value was taken).
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("oneshot channel empty"),
            TryRecvError::Closed => f.write_str("oneshot channel closed"),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Receiver::blocking_recv_timeout`] gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecvTimeoutError {
    /// The timeout passed first.
    Timeout,
    /// The sender went away without sending.
    Closed,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on oneshot channel"),
            RecvTimeoutError::Closed => f.write_str("oneshot channel closed"),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

struct State<T> {
    value: Option<T>,
    /// The value was sent (and maybe already taken).
    sent: bool,
    tx_dropped: bool,
    rx_closed: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a one-shot channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            sent: false,
            tx_dropped: false,
            rx_closed: false,
            rx_waker: None,
            tx_waker: None,
        }),
    });
    (
        Sender {
            inner: Some(inner.clone()),
        },
        Receiver { inner },
    )
}

/// Sends the one value. `Send + Sync`; usable from any thread.
pub struct Sender<T> {
    /// `None` once `send` consumed it.
    inner: Option<Arc<Inner<T>>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Sender").finish_non_exhaustive()
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waking the receiver wherever it waits.
    ///
    /// # Errors
    ///
    /// Gives `value` back when the receiver was dropped or closed.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let inner = self.inner.take().expect("sender used after send");
        let waker = {
            let mut st = inner.lock();
            if st.rx_closed {
                return Err(value);
            }
            st.value = Some(value);
            st.sent = true;
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// True when the receiver was dropped or closed: a send would fail.
    pub fn is_closed(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.lock().rx_closed)
    }

    /// Completes when the receiver is dropped or closed (to stop work nobody
    /// will receive).
    pub async fn closed(&mut self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    /// Polls for the receiver going away.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = &self.inner else {
            return Poll::Ready(());
        };
        let old = {
            let mut st = inner.lock();
            if st.rx_closed {
                return Poll::Ready(());
            }
            match &st.tx_waker {
                Some(w) if w.will_wake(cx.waker()) => None,
                _ => st.tx_waker.replace(cx.waker().clone()),
            }
        };
        drop(old);
        Poll::Pending
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let waker = {
                let mut st = inner.lock();
                st.tx_dropped = true;
                st.rx_waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Receives the one value: a future giving `Ok(value)`, or [`RecvError`] if
/// the sender went away without sending. `Send + Sync`.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Receiver").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// Takes the value if it was sent.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing was sent yet; [`TryRecvError::Closed`]
    /// if the sender went away or the value was already taken.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut st = self.inner.lock();
        match st.value.take() {
            Some(v) => Ok(v),
            None if st.sent || st.tx_dropped => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Refuses the value from now on: a later `send` fails. A value already
    /// sent can still be taken with [`try_recv`](Receiver::try_recv).
    pub fn close(&mut self) {
        let waker = {
            let mut st = self.inner.lock();
            st.rx_closed = true;
            st.tx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Blocks the calling thread until the value arrives.
    ///
    /// # Errors
    ///
    /// [`RecvError`] if the sender went away without sending.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread (await the receiver instead).
    pub fn blocking_recv(self) -> Result<T, RecvError> {
        block_on("oneshot::Receiver::blocking_recv", self, None).expect("no deadline")
    }

    /// Blocks the calling thread until the value arrives or `timeout` passes.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when the time runs out (the receiver stays
    /// usable); [`RecvTimeoutError::Closed`] if the sender went away.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        match block_on("oneshot::Receiver::blocking_recv_timeout", &mut *self, deadline) {
            Some(Ok(v)) => Ok(v),
            Some(Err(RecvError)) => Err(RecvTimeoutError::Closed),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let old = {
            let mut st = self.inner.lock();
            if let Some(v) = st.value.take() {
                return Poll::Ready(Ok(v));
            }
            if st.sent || st.tx_dropped {
                return Poll::Ready(Err(RecvError));
            }
            match &st.rx_waker {
                Some(w) if w.will_wake(cx.waker()) => None,
                _ => st.rx_waker.replace(cx.waker().clone()),
            }
        };
        drop(old);
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (value, waker) = {
            let mut st = self.inner.lock();
            st.rx_closed = true;
            (st.value.take(), st.tx_waker.take())
        };
        drop(value);
        if let Some(w) = waker {
            w.wake();
        }
    }
}
