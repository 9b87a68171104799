//! Cross-shard messages: raw `(tag, value)` pairs carried by `MSG_RING`.
//!
//! # Guarantees
//!
//! - **FIFO per (sender, target).** Messages one sender sends to one shard are
//!   received in the order they were sent. (A sender is a shard, or "outside":
//!   all threads that are not shards share one sender index.)
//! - **Exactly once.** A message that was accepted (`Ok` from a nowait send, or
//!   a ticket that resolved `Ok`) is received exactly once. A message that was
//!   refused is not received at all.
//! - **Backpressure.** At most `msg_queue_capacity` messages from one sender
//!   may be undelivered at one target (sent, but not yet taken by
//!   [`ShardCtx::next_event`]); beyond that sends fail with
//!   [`SendError::Backpressure`] instead of growing a queue without bound.
//!
//! On the io_uring backend a lone message is one `MSG_RING` SQE from the
//! sender's ring: the target's CQE carries `(from, tag)` in `user_data` and the
//! value in `res`, so delivery wakes a sleeping target without a separate
//! doorbell. Several messages a task sends to one shard in one poll travel as
//! one batch behind one `MSG_RING` doorbell (`mail.rs` has the protocol).
//! Threads outside the runtime send one `MSG_RING` per message through a
//! shared ring.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{RuntimeError, SendError};
use crate::runtime::{QueuedMsg, RuntimeHandle, Shared};
use crate::shard;
use crate::task::JoinHandle;
use crate::wire;

/// Something a shard receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A raw message. `from` is the sending shard, or the shard count for a
    /// sender outside the runtime.
    RingMsg {
        /// Sending shard index (or `shard_count()` for outside senders).
        from: usize,
        /// The message tag.
        tag: u16,
        /// The message value.
        val: u32,
    },
}

/// A message type that travels as a raw `(tag, value)` pair.
///
/// ```
/// use spargio::RingMsg;
/// #[derive(Debug, PartialEq)]
/// enum Cmd { Ping(u32), Stop }
/// impl RingMsg for Cmd {
///     fn encode(&self) -> (u16, u32) {
///         match self { Cmd::Ping(n) => (1, *n), Cmd::Stop => (2, 0) }
///     }
///     fn decode(tag: u16, val: u32) -> Option<Self> {
///         match tag { 1 => Some(Cmd::Ping(val)), 2 => Some(Cmd::Stop), _ => None }
///     }
/// }
/// assert_eq!(Cmd::decode(1, 7), Some(Cmd::Ping(7)));
/// ```
pub trait RingMsg: Sized {
    /// The `(tag, value)` this message travels as.
    fn encode(&self) -> (u16, u32);
    /// Rebuilds a message; `None` for a pair this type does not use.
    fn decode(tag: u16, val: u32) -> Option<Self>;
}

/// Shared state of one [`SendTicket`].
pub(crate) struct TicketShared {
    inner: Mutex<TicketState>,
}

/// A ticket's outcome (once known) and the waker of whoever awaits it.
type TicketState = (Option<Result<(), SendError>>, Option<Waker>);

impl TicketShared {
    pub(crate) fn new() -> Arc<TicketShared> {
        Arc::new(TicketShared {
            inner: Mutex::new((None, None)),
        })
    }

    pub(crate) fn complete(&self, result: Result<(), SendError>) {
        let waker = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = Some(result);
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Resolves when a message (or, for [`RemoteShard::flush`], every earlier
/// message) has been delivered into the target's ring.
#[must_use = "a ticket does nothing unless awaited; drop it to send without waiting"]
pub struct SendTicket {
    state: Result<Arc<TicketShared>, Option<SendError>>,
}

impl std::fmt::Debug for SendTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTicket").finish_non_exhaustive()
    }
}

impl SendTicket {
    fn ready(result: Result<(), SendError>) -> SendTicket {
        match result {
            Ok(()) => {
                let t = TicketShared::new();
                t.complete(Ok(()));
                SendTicket { state: Ok(t) }
            }
            Err(e) => SendTicket { state: Err(Some(e)) },
        }
    }
}

impl Future for SendTicket {
    type Output = Result<(), SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            Err(e) => Poll::Ready(Err(e.take().unwrap_or(SendError::Closed))),
            Ok(shared) => {
                let mut g = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(r) = g.0.take() {
                    return Poll::Ready(r);
                }
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Sends messages to one shard. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct RemoteShard {
    shared: Arc<Shared>,
    target: usize,
}

impl std::fmt::Debug for RemoteShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteShard")
            .field("target", &self.target)
            .finish()
    }
}

impl RemoteShard {
    /// The error for a send refused because the runtime is closing (or this
    /// process is a fork child of the one that built it).
    fn closed(&self) -> SendError {
        if self.shared.in_fork_child() {
            SendError::ForkedChild
        } else {
            SendError::Closed
        }
    }

    pub(crate) fn new(shared: Arc<Shared>, target: usize) -> Self {
        RemoteShard { shared, target }
    }

    /// The target shard's index.
    pub fn shard(&self) -> usize {
        self.target
    }

    /// Sends `(tag, val)`; the ticket resolves once it is in the target's ring.
    pub fn send_raw(&self, tag: u16, val: u32) -> SendTicket {
        if self.shared.is_closing() {
            return SendTicket::ready(Err(self.closed()));
        }
        match self.on_outbox(|l| l.send_ticketed(self.target, tag, val)) {
            Some(Ok(t)) => SendTicket { state: Ok(t) },
            Some(Err(e)) => SendTicket::ready(Err(e)),
            None => SendTicket::ready(self.send_direct(tag, val)),
        }
    }

    /// Sends `(tag, val)` without waiting for delivery.
    ///
    /// # Errors
    ///
    /// [`SendError::Backpressure`] when this sender already has
    /// `msg_queue_capacity` undelivered messages at the target;
    /// [`SendError::Closed`] after shutdown began.
    pub fn send_raw_nowait(&self, tag: u16, val: u32) -> Result<(), SendError> {
        if self.shared.is_closing() {
            return Err(self.closed());
        }
        match self.on_outbox(|l| l.send_nowait(self.target, tag, val)) {
            Some(result) => result,
            None => self.send_direct(tag, val),
        }
    }

    /// Sends each `(tag, val)` in order without waiting; stops at the first
    /// refusal. Returns how many were sent.
    ///
    /// # Errors
    ///
    /// The refusal, when not even the first message could be sent.
    pub fn send_many_raw_nowait(
        &self,
        msgs: impl IntoIterator<Item = (u16, u32)>,
    ) -> Result<usize, SendError> {
        let mut sent = 0;
        for (tag, val) in msgs {
            match self.send_raw_nowait(tag, val) {
                Ok(()) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    /// A ticket that resolves once every message this sender sent to the
    /// target before the call has been delivered into the target's ring.
    pub fn flush(&self) -> SendTicket {
        if self.shared.is_closing() {
            return SendTicket::ready(Err(self.closed()));
        }
        match self.on_outbox(|l| l.flush_to(self.target)) {
            Some(Ok(t)) => SendTicket { state: Ok(t) },
            Some(Err(e)) => SendTicket::ready(Err(e)),
            // In-memory and foreign-ring sends are delivered before they return.
            None => SendTicket::ready(Ok(())),
        }
    }

    /// Sends a typed message; see [`RemoteShard::send_raw`].
    pub fn send_msg<M: RingMsg>(&self, msg: &M) -> SendTicket {
        let (tag, val) = msg.encode();
        self.send_raw(tag, val)
    }

    /// Sends a typed message without waiting; see [`RemoteShard::send_raw_nowait`].
    ///
    /// # Errors
    ///
    /// As [`RemoteShard::send_raw_nowait`].
    pub fn send_msg_nowait<M: RingMsg>(&self, msg: &M) -> Result<(), SendError> {
        let (tag, val) = msg.encode();
        self.send_raw_nowait(tag, val)
    }

    /// Runs `f` on the calling shard when this send goes through its outbox
    /// (a shard of this runtime on io_uring, see `mail`); `None` otherwise.
    #[inline]
    fn on_outbox<R>(&self, f: impl FnOnce(&shard::Local) -> R) -> Option<R> {
        shard::with_local(|l| (Arc::ptr_eq(&l.shared, &self.shared) && l.has_ring()).then(|| f(l))).flatten()
    }

    /// One message by itself, with an atomic credit: the Queue backend, or a
    /// sender outside the runtime.
    fn send_direct(&self, tag: u16, val: u32) -> Result<(), SendError> {
        let shared = &self.shared;
        let from_shard = shard::current_shard_of(shared);
        let n = shared.shards.len();
        let from = from_shard.unwrap_or(n);
        let target = &shared.shards[self.target];
        let credit = &target.msg_inflight[from];
        if credit.fetch_add(1, Ordering::AcqRel) >= shared.config.msg_queue_capacity as usize {
            credit.fetch_sub(1, Ordering::AcqRel);
            return Err(SendError::Backpressure);
        }
        let counters = &shared.shards[from_shard.unwrap_or(self.target)].counters;
        let result = self.transmit(from, tag, val);
        if result.is_ok() {
            counters.msgs_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            credit.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    /// The one-message path: the Queue backend, or a sender outside the runtime.
    fn transmit(&self, from: usize, tag: u16, val: u32) -> Result<(), SendError> {
        let shared = &self.shared;
        if !shared.backend.has_rings() {
            let target = &shared.shards[self.target];
            target
                .queued_msgs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(QueuedMsg {
                    from: from as u16,
                    tag,
                    val,
                });
            target.queued_msgs_len.fetch_add(1, Ordering::SeqCst);
            shared.unpark(self.target);
            return Ok(());
        }
        // Outside the runtime: through the shared foreign ring, synchronously.
        let Some(fd) = shared.shards[self.target]
            .unparker
            .get()
            .and_then(|u| u.ring_fd())
            .cloned()
        else {
            return Err(SendError::Closed);
        };
        shared
            .foreign_msg_ring(&fd, wire::message(from as u16, tag), val)
            .map_err(|errno| {
                // Shutdown raced the send (the target's ring went away after
                // the check above): that is a closed runtime, not an OS fault.
                if shared.is_closing() {
                    SendError::Closed
                } else {
                    SendError::Os(errno)
                }
            })
    }
}

/// The calling shard's view of itself: its index, its events, local spawns.
#[derive(Clone)]
pub struct ShardCtx {
    shard: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShardCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCtx").field("shard", &self.shard).finish()
    }
}

impl ShardCtx {
    /// The context of the shard running the calling code; `None` outside shards.
    pub fn current() -> Option<ShardCtx> {
        shard::with_local(|l| ShardCtx {
            shard: l.shard,
            shared: l.shared.clone(),
        })
    }

    /// This shard's index.
    pub fn shard_id(&self) -> usize {
        self.shard
    }

    /// Number of shards in the runtime.
    pub fn shard_count(&self) -> usize {
        self.shared.shards.len()
    }

    /// A handle to the runtime.
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shared: self.shared.clone(),
        }
    }

    /// A sender to `shard`.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NoSuchShard`] for an index out of range.
    pub fn remote(&self, shard: usize) -> Result<RemoteShard, RuntimeError> {
        self.handle().remote(shard)
    }

    /// The next event delivered to this shard (any task on the shard may wait).
    ///
    /// # Panics
    ///
    /// The future panics if polled on a thread other than this shard's.
    pub fn next_event(&self) -> NextEvent<'_> {
        // Borrows the context: cloning it would touch the runtime's shared
        // reference count, a line every shard reads, once per message.
        NextEvent { ctx: self }
    }

    /// The next event if one is already here.
    ///
    /// # Panics
    ///
    /// Panics on a thread other than this shard's.
    pub fn try_next_event(&self) -> Option<Event> {
        self.with_own_local(|l| {
            let ev = l.events.borrow_mut().pop_front()?;
            self.release_credit(&ev);
            Some(ev)
        })
    }

    fn release_credit(&self, ev: &Event) {
        let Event::RingMsg { from, .. } = *ev;
        let me = &self.shared.shards[self.shard];
        match me.mailboxes.get(from) {
            // A shard sender on io_uring counts its own sends (see `mail`).
            Some(mailbox) if self.shared.backend.has_rings() => mailbox.count_taken(),
            _ => {
                me.msg_inflight[from].fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn with_own_local<R>(&self, f: impl FnOnce(&shard::Local) -> R) -> R {
        shard::with_local(|l| {
            assert!(
                Arc::ptr_eq(&l.shared, &self.shared) && l.shard == self.shard,
                "ShardCtx used on a thread other than its shard's"
            );
            f(l)
        })
        .expect("ShardCtx used outside the runtime")
    }

    /// Spawns a `!Send` future on this shard.
    ///
    /// # Panics
    ///
    /// Panics on a thread other than this shard's.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Closed`] after shutdown began.
    pub fn spawn_local<F>(&self, fut: F) -> Result<JoinHandle<F::Output>, RuntimeError>
    where
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        // The future is created here but must be moved into a Send closure: keep
        // it in a thread-local slot keyed by a fresh id, picked up on this shard.
        self.with_own_local(|_| ());
        let slot = LocalSlot::stash(fut);
        self.handle().spawn_local_on(self.shard, move || slot.take())
    }
}

/// Passes a `!Send` future to a task spawned on the same shard.
struct LocalSlot<F> {
    id: u64,
    _marker: std::marker::PhantomData<fn() -> F>,
}

thread_local! {
    static STASH: std::cell::RefCell<std::collections::HashMap<u64, Box<dyn std::any::Any>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    static STASH_NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl<F: 'static> LocalSlot<F> {
    fn stash(fut: F) -> Self {
        let id = STASH_NEXT.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        STASH.with(|s| s.borrow_mut().insert(id, Box::new(fut)));
        LocalSlot {
            id,
            _marker: std::marker::PhantomData,
        }
    }

    fn take(self) -> F {
        let this = std::mem::ManuallyDrop::new(self);
        let boxed = STASH
            .with(|s| s.borrow_mut().remove(&this.id))
            .expect("local future taken on another thread");
        *boxed
            .downcast::<F>()
            .expect("local future slot holds another type")
    }
}

/// A slot dropped untaken (its task was aborted before its first poll, or the
/// spawn was refused) drops the stashed future. Local tasks are dropped on
/// their own shard, so this runs on the thread that holds the stash.
impl<F> Drop for LocalSlot<F> {
    fn drop(&mut self) {
        let id = self.id;
        // `try_with`: during thread teardown the stash may already be gone
        // (and with it the future).
        let fut = STASH.try_with(|s| s.borrow_mut().remove(&id)).ok().flatten();
        drop(fut);
    }
}

/// Future of [`ShardCtx::next_event`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct NextEvent<'a> {
    ctx: &'a ShardCtx,
}

impl Future for NextEvent<'_> {
    type Output = Event;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        let ctx = self.ctx;
        ctx.with_own_local(|l| {
            let ev = l.events.borrow_mut().pop_front();
            match ev {
                Some(ev) => {
                    ctx.release_credit(&ev);
                    Poll::Ready(ev)
                }
                None => {
                    let mut waiters = l.event_waiters.borrow_mut();
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
    }
}
