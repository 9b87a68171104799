//! Multi-producer, single-consumer channels, bounded and unbounded, that work
//! between tasks on any shards, other runtimes and plain threads.
//!
//! A receiver waiting on a shard is woken through its task's waker, which
//! schedules the task on its shard (ringing that shard's doorbell if it
//! sleeps): no polling. Senders of a full bounded channel wait in FIFO order;
//! a slot freed by the receiver is handed to the first waiting sender.
//!
//! ```
//! use spargio::sync::mpsc;
//!
//! spargio::run(|handle| async move {
//!     let (tx, mut rx) = mpsc::channel(8);
//!     for shard in 0..handle.shard_count() {
//!         let tx = tx.clone();
//!         handle.spawn_pinned(shard, async move { tx.send(shard).await.unwrap() }).unwrap();
//!     }
//!     drop(tx);
//!     let mut got = Vec::new();
//!     while let Some(v) = rx.recv().await {
//!         got.push(v);
//!     }
//!     got.sort();
//!     assert_eq!(got, (0..handle.shard_count()).collect::<Vec<_>>());
//! })
//! .unwrap();
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::block::block_on;
use super::wait_list::{WaitKey, WaitList, WaitState};

/// Tag of a sender notified because a slot was reserved for it.
const SLOT: u8 = 0;
/// Tag of a sender notified because the receiver went away.
const CLOSED: u8 = 1;

/// The receiver is gone (or closed): the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Sender::try_send`] failed; the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel holds `capacity` values.
    Full(T),
    /// The receiver is gone (or closed).
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("channel full"),
            TrySendError::Closed(_) => f.write_str("channel closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Sender::blocking_send_timeout`] failed; the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// The channel stayed full until the timeout.
    Timeout(T),
    /// The receiver is gone (or closed).
    Closed(T),
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            SendTimeoutError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("timed out waiting for channel capacity"),
            SendTimeoutError::Closed(_) => f.write_str("channel closed"),
        }
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

/// Why [`Receiver::try_recv`] gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TryRecvError {
    /// No value queued, but senders remain.
    Empty,
    /// No value queued and every sender is gone.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("channel empty"),
            TryRecvError::Disconnected => f.write_str("channel disconnected"),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Receiver::blocking_recv_timeout`] gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the timeout.
    Timeout,
    /// No value queued and every sender is gone.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on channel"),
            RecvTimeoutError::Disconnected => f.write_str("channel disconnected"),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

struct State<T> {
    queue: VecDeque<T>,
    /// `usize::MAX` for unbounded channels.
    capacity: usize,
    /// Slots handed to notified senders that have not pushed yet.
    reserved: usize,
    senders: usize,
    /// The receiver was dropped or closed.
    closed: bool,
    rx_waker: Option<Waker>,
    send_waiters: WaitList,
}

impl<T> State<T> {
    fn has_room(&self) -> bool {
        self.queue.len() + self.reserved < self.capacity
    }

    /// Pushes a value; returns the receiver's waker to wake after unlocking.
    fn push(&mut self, value: T) -> Option<Waker> {
        self.queue.push_back(value);
        self.rx_waker.take()
    }

    /// A slot was freed (or a reservation returned): hand it to the first
    /// waiting sender, if any. Returns its waker.
    fn pass_slot(&mut self) -> Option<Waker> {
        if !self.closed && self.has_room() && !self.send_waiters.is_empty() {
            self.reserved += 1;
            return self.send_waiters.notify_one(SLOT);
        }
        None
    }
}

struct Chan<T> {
    state: Mutex<State<T>>,
}

impl<T> Chan<T> {
    fn new(capacity: usize) -> Arc<Chan<T>> {
        Arc::new(Chan {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity,
                reserved: 0,
                senders: 1,
                closed: false,
                rx_waker: None,
                send_waiters: WaitList::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut st = self.lock();
            if st.closed {
                return Err(TrySendError::Closed(value));
            }
            if !st.has_room() {
                return Err(TrySendError::Full(value));
            }
            st.push(value)
        };
        wake(waker);
        Ok(())
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (v, waker) = {
            let mut st = self.lock();
            match st.queue.pop_front() {
                Some(v) => {
                    let w = st.pass_slot();
                    (v, w)
                }
                None if st.senders == 0 || st.closed => return Poll::Ready(None),
                None => {
                    let old = match &st.rx_waker {
                        Some(w) if w.will_wake(cx.waker()) => None,
                        _ => st.rx_waker.replace(cx.waker().clone()),
                    };
                    drop(st);
                    drop(old);
                    return Poll::Pending;
                }
            }
        };
        wake(waker);
        Poll::Ready(Some(v))
    }

    fn try_recv(&self) -> Result<T, TryRecvError> {
        let (v, waker) = {
            let mut st = self.lock();
            match st.queue.pop_front() {
                Some(v) => {
                    let w = st.pass_slot();
                    (v, w)
                }
                None if st.senders == 0 || st.closed => return Err(TryRecvError::Disconnected),
                None => return Err(TryRecvError::Empty),
            }
        };
        wake(waker);
        Ok(v)
    }

    fn close(&self) {
        let wakers = {
            let mut st = self.lock();
            st.closed = true;
            st.send_waiters.notify_all(CLOSED)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn add_sender(&self) {
        self.lock().senders += 1;
    }

    fn drop_sender(&self) {
        let waker = {
            let mut st = self.lock();
            st.senders -= 1;
            if st.senders > 0 {
                return;
            }
            st.rx_waker.take()
        };
        wake(waker);
    }

    fn drop_receiver(&self) {
        let (queue, wakers) = {
            let mut st = self.lock();
            st.closed = true;
            (std::mem::take(&mut st.queue), st.send_waiters.notify_all(CLOSED))
        };
        // Values nobody will receive are dropped here, outside the lock.
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

/// Creates a bounded channel holding at most `capacity` values.
///
/// # Panics
///
/// If `capacity` is zero.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity > 0,
        "spargio::sync::mpsc::channel: capacity must be at least 1"
    );
    let chan = Chan::new(capacity);
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// Creates an unbounded channel: sends never wait (memory is the limit).
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let chan = Chan::new(usize::MAX);
    (
        UnboundedSender { chan: chan.clone() },
        UnboundedReceiver {
            inner: Receiver { chan },
        },
    )
}

/// The sending half of a bounded channel. Clone it for more producers.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Sender").finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for room if the channel is full.
    ///
    /// Cancel-safe: dropping the future before it completes sends nothing
    /// (and passes a slot reserved for it to the next waiting sender).
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value when the receiver is gone or closed.
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            chan: &self.chan,
            value: Some(value),
            key: None,
        }
    }

    /// Sends `value` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the channel is full (or its free slots are
    /// promised to waiting senders); [`TrySendError::Closed`] when the
    /// receiver is gone.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Sends from a thread outside the runtime, blocking while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value when the receiver is gone.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread (await [`send`](Sender::send) instead).
    pub fn blocking_send(&self, value: T) -> Result<(), SendError<T>> {
        block_on("mpsc::Sender::blocking_send", self.send(value), None).expect("no deadline")
    }

    /// As [`blocking_send`](Sender::blocking_send), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] when the channel stayed full;
    /// [`SendTimeoutError::Closed`] when the receiver is gone.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut fut = self.send(value);
        match block_on("mpsc::Sender::blocking_send_timeout", &mut fut, deadline) {
            Some(Ok(())) => Ok(()),
            Some(Err(SendError(v))) => Err(SendTimeoutError::Closed(v)),
            None => Err(SendTimeoutError::Timeout(fut.take_value())),
        }
    }

    /// True when the receiver is gone or closed.
    pub fn is_closed(&self) -> bool {
        self.chan.lock().closed
    }

    /// The channel's bound.
    pub fn max_capacity(&self) -> usize {
        self.chan.lock().capacity
    }

    /// Free slots now.
    pub fn capacity(&self) -> usize {
        let st = self.chan.lock();
        st.capacity.saturating_sub(st.queue.len() + st.reserved)
    }

    /// True when both senders feed the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

/// Future of [`Sender::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, T> {
    chan: &'a Chan<T>,
    value: Option<T>,
    key: Option<WaitKey>,
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("waiting", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> SendFuture<'_, T> {
    /// Withdraws from the wait and takes the value back (after a timeout).
    fn take_value(&mut self) -> T {
        self.cancel_wait();
        self.value.take().expect("SendFuture value taken twice")
    }

    fn cancel_wait(&mut self) {
        let Some(key) = self.key.take() else { return };
        let (waker, old) = {
            let mut st = self.chan.lock();
            let (state, old) = st.send_waiters.cancel(key);
            let waker = match state {
                WaitState::Notified(SLOT) => {
                    // A slot was reserved for us: give it to the next sender.
                    st.reserved -= 1;
                    st.pass_slot()
                }
                _ => None,
            };
            (waker, old)
        };
        drop(old);
        wake(waker);
    }
}

impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(value) = this.value.take() else {
            panic!("SendFuture polled after completion")
        };
        let mut st = this.chan.lock();
        let reserved = match this.key {
            None => false,
            Some(key) => match st.send_waiters.poll(key, cx.waker()) {
                (WaitState::Queued, old) => {
                    drop(st);
                    drop(old);
                    this.value = Some(value);
                    return Poll::Pending;
                }
                (WaitState::Notified(SLOT), _) => {
                    this.key = None;
                    st.reserved -= 1;
                    true
                }
                (_, _) => {
                    this.key = None;
                    false
                }
            },
        };
        if st.closed {
            return Poll::Ready(Err(SendError(value)));
        }
        if reserved || st.has_room() {
            let waker = st.push(value);
            drop(st);
            wake(waker);
            return Poll::Ready(Ok(()));
        }
        this.key = Some(st.send_waiters.push(cx.waker().clone(), 1));
        drop(st);
        this.value = Some(value);
        Poll::Pending
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        self.cancel_wait();
    }
}

/// The receiving half of a bounded channel.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Receiver").finish_non_exhaustive()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> Receiver<T> {
    /// Receives the next value; `None` once every sender is gone (or the
    /// channel was closed) and the queue is empty. Cancel-safe: a value is
    /// never lost by dropping the future.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.chan.poll_recv(cx)).await
    }

    /// Polls for the next value (for hand-written futures).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.chan.poll_recv(cx)
    }

    /// Takes the next value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when none is queued; [`TryRecvError::Disconnected`]
    /// when none is queued and no sender remains.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Receives from a thread outside the runtime, blocking until a value
    /// arrives; `None` once every sender is gone.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread (await [`recv`](Receiver::recv) instead).
    pub fn blocking_recv(&mut self) -> Option<T> {
        let chan = &self.chan;
        block_on(
            "mpsc::Receiver::blocking_recv",
            std::future::poll_fn(|cx| chan.poll_recv(cx)),
            None,
        )
        .expect("no deadline")
    }

    /// As [`blocking_recv`](Receiver::blocking_recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when nothing arrived in time;
    /// [`RecvTimeoutError::Disconnected`] when every sender is gone.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let chan = &self.chan;
        let deadline = Instant::now().checked_add(timeout);
        match block_on(
            "mpsc::Receiver::blocking_recv_timeout",
            std::future::poll_fn(|cx| chan.poll_recv(cx)),
            deadline,
        ) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Stops accepting values: sends fail from now on, waiting senders get
    /// their values back. Values already queued can still be received.
    pub fn close(&mut self) {
        self.chan.close();
    }

    /// Values queued now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// True when no value is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sending half of an unbounded channel: [`send`](UnboundedSender::send)
/// never waits. Clone it for more producers.
pub struct UnboundedSender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::UnboundedSender").finish_non_exhaustive()
    }
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        UnboundedSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for UnboundedSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> UnboundedSender<T> {
    /// Queues `value` and wakes the receiver; callable from any thread or task.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value when the receiver is gone or closed.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.try_send(value).map_err(|e| SendError(e.into_inner()))
    }

    /// True when the receiver is gone or closed.
    pub fn is_closed(&self) -> bool {
        self.chan.lock().closed
    }

    /// True when both senders feed the same channel.
    pub fn same_channel(&self, other: &UnboundedSender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

/// The receiving half of an unbounded channel (the same API as [`Receiver`]).
pub struct UnboundedReceiver<T> {
    inner: Receiver<T>,
}

impl<T> fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::UnboundedReceiver").finish_non_exhaustive()
    }
}

impl<T> UnboundedReceiver<T> {
    /// As [`Receiver::recv`].
    pub async fn recv(&mut self) -> Option<T> {
        self.inner.recv().await
    }

    /// As [`Receiver::poll_recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.inner.poll_recv(cx)
    }

    /// As [`Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.inner.try_recv()
    }

    /// As [`Receiver::blocking_recv`].
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_recv(&mut self) -> Option<T> {
        self.inner.blocking_recv()
    }

    /// As [`Receiver::blocking_recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::blocking_recv_timeout`].
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.inner.blocking_recv_timeout(timeout)
    }

    /// As [`Receiver::close`].
    pub fn close(&mut self) {
        self.inner.close();
    }

    /// Values queued now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when no value is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}
