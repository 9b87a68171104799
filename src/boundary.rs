//! A bounded request/response boundary between spargio and code on another
//! runtime (Tokio) or a plain thread.
//!
//! [`channel`] gives a [`BoundaryClient`] (cloneable; call it from anywhere)
//! and a [`BoundaryServer`] (cloneable; receive on spargio tasks, or block on
//! a thread). A call queues one request and returns a [`BoundaryTicket`]: a
//! future of the response that also offers a blocking
//! [`wait_timeout`](BoundaryTicket::wait_timeout) for threads without an
//! executor. The server gets a [`BoundaryRequest`] and answers it with
//! [`respond`](BoundaryRequest::respond).
//!
//! - **Bounded.** At most `capacity` requests wait in the queue.
//!   [`try_call`](BoundaryClient::try_call) fails with
//!   [`BoundaryError::Overloaded`] when it is full; [`call`](BoundaryClient::call)
//!   returns a ticket that first waits (asynchronously, in arrival order) for
//!   room, then for the response.
//! - **Deadlines.** [`call_with_timeout`](BoundaryClient::call_with_timeout)
//!   gives the request a deadline: the ticket fails with
//!   [`BoundaryError::Timeout`] when it passes, the server sees it in
//!   [`BoundaryRequest::deadline`], and a response after it is refused.
//! - **Cancellation.** A ticket dropped before its response is *canceled*:
//!   the server skips it if it is still queued, and
//!   [`respond`](BoundaryRequest::respond) to it returns
//!   [`BoundaryError::Canceled`]. A request dropped without a response fails
//!   its ticket with `Canceled`; requests still queued when the last server
//!   goes away fail with [`BoundaryError::Closed`].
//! - **No polling.** Both directions wake the waiting side through its
//!   waker: a spargio task is scheduled on its shard, a Tokio task through
//!   Tokio's waker, a blocked thread is unparked.
//!
//! ```
//! use spargio::boundary;
//!
//! let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
//! let (client, server) = boundary::channel::<u64, u64>(64);
//! // The server: a spargio task answering requests.
//! rt.handle()
//!     .spawn_pinned(0, async move {
//!         while let Ok(req) = server.recv().await {
//!             let n = *req.request();
//!             let _ = req.respond(n * 2);
//!         }
//!     })
//!     .unwrap();
//! // A client on a plain thread (it could be a Tokio task: `ticket.await`).
//! let ticket = client.call(21).unwrap();
//! assert_eq!(ticket.wait_timeout(std::time::Duration::from_secs(10)), Ok(42));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::{WaitKey, WaitList, WaitState, block_on};
use crate::time::{Sleep, sleep_until};

/// Why a boundary call or receive failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoundaryError {
    /// The other side is gone: no server to take the request, or no client
    /// left to send one (and the queue is empty).
    Closed,
    /// The queue is full ([`BoundaryClient::try_call`]).
    Overloaded,
    /// A deadline passed: the call's own, or the wait's.
    Timeout,
    /// The caller gave up: responding to a dropped ticket, or a ticket whose
    /// request was dropped without a response.
    Canceled,
}

impl fmt::Display for BoundaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BoundaryError::Closed => "boundary closed",
            BoundaryError::Overloaded => "boundary queue full",
            BoundaryError::Timeout => "boundary deadline elapsed",
            BoundaryError::Canceled => "boundary call canceled",
        })
    }
}

impl std::error::Error for BoundaryError {}

/// Tag of a waiter notified because a queue slot (for a call) or a request
/// (for a receive) is there for it.
const READY: u8 = 0;
/// Tag of a waiter notified because the boundary closed.
const CLOSED: u8 = 1;

/// Where one call's response travels.
struct Reply<Resp> {
    state: Mutex<ReplyState<Resp>>,
}

struct ReplyState<Resp> {
    result: Option<Result<Resp, BoundaryError>>,
    /// The response (or failure) was delivered; later ones are refused.
    settled: bool,
    /// The ticket is gone (`Canceled`) or stopped waiting at its deadline
    /// (`Timeout`).
    gave_up: Option<BoundaryError>,
    waker: Option<Waker>,
}

impl<Resp> Reply<Resp> {
    fn new() -> Arc<Reply<Resp>> {
        Arc::new(Reply {
            state: Mutex::new(ReplyState {
                result: None,
                settled: false,
                gave_up: None,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ReplyState<Resp>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers `result` unless the ticket gave up or a result was delivered.
    /// Returns why not.
    fn settle(&self, result: Result<Resp, BoundaryError>) -> Result<(), BoundaryError> {
        let waker = {
            let mut st = self.lock();
            if let Some(why) = st.gave_up {
                return Err(why);
            }
            if st.settled {
                return Err(BoundaryError::Canceled);
            }
            st.settled = true;
            st.result = Some(result);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn give_up(&self, why: BoundaryError) {
        let mut st = self.lock();
        if st.gave_up.is_none() {
            st.gave_up = Some(why);
        }
        st.waker = None;
    }

    fn abandoned(&self) -> bool {
        self.lock().gave_up.is_some()
    }
}

struct Envelope<Req, Resp> {
    request: Req,
    deadline: Option<Instant>,
    reply: Arc<Reply<Resp>>,
}

struct State<Req, Resp> {
    queue: VecDeque<Envelope<Req, Resp>>,
    capacity: usize,
    /// Queue slots handed to notified waiting calls that have not pushed yet.
    reserved: usize,
    clients: usize,
    /// Calls created while the queue was full and not yet queued or failed:
    /// requests that may still come even when no client remains.
    pending_calls: usize,
    servers: usize,
    /// The server side closed: no new requests are admitted.
    closed: bool,
    recv_waiters: WaitList,
    call_waiters: WaitList,
}

impl<Req, Resp> State<Req, Resp> {
    fn has_room(&self) -> bool {
        self.queue.len() + self.reserved < self.capacity
    }

    /// The queue is full: drops requests whose callers already gave up, and
    /// hands the freed slots to waiting calls. Returns their wakers.
    fn purge_abandoned(&mut self) -> Vec<Waker> {
        let before = self.queue.len();
        self.queue.retain(|e| !e.reply.abandoned());
        let mut wakers = Vec::new();
        for _ in self.queue.len()..before {
            match self.pass_slot() {
                Some(w) => wakers.push(w),
                None => break,
            }
        }
        wakers
    }

    /// Queues a request; returns the waker of a receiver to wake.
    fn push(&mut self, env: Envelope<Req, Resp>) -> Option<Waker> {
        self.queue.push_back(env);
        self.recv_waiters.notify_one(READY)
    }

    /// A slot was freed: hand it to the first waiting call.
    fn pass_slot(&mut self) -> Option<Waker> {
        if !self.closed && !self.call_waiters.is_empty() && self.has_room() {
            self.reserved += 1;
            return self.call_waiters.notify_one(READY);
        }
        None
    }

    /// True when no request is queued and none can come: the server side is
    /// closed, or no client and no waiting call remain.
    fn drained(&self) -> bool {
        self.queue.is_empty() && (self.closed || (self.clients == 0 && self.pending_calls == 0))
    }

    /// If no request can come any more, wakes every receiver to see it.
    fn wake_receivers_if_drained(&mut self) -> Vec<Waker> {
        if self.drained() {
            self.recv_waiters.notify_all(CLOSED)
        } else {
            Vec::new()
        }
    }
}

struct Chan<Req, Resp> {
    state: Mutex<State<Req, Resp>>,
}

impl<Req, Resp> Chan<Req, Resp> {
    fn lock(&self) -> MutexGuard<'_, State<Req, Resp>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    wakers.into_iter().for_each(Waker::wake);
}

/// Creates a boundary whose queue holds at most `capacity` requests.
///
/// # Panics
///
/// If `capacity` is zero.
pub fn channel<Req, Resp>(capacity: usize) -> (BoundaryClient<Req, Resp>, BoundaryServer<Req, Resp>)
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    assert!(
        capacity > 0,
        "spargio::boundary::channel: capacity must be at least 1"
    );
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity,
            reserved: 0,
            clients: 1,
            pending_calls: 0,
            servers: 1,
            closed: false,
            recv_waiters: WaitList::default(),
            call_waiters: WaitList::default(),
        }),
    });
    (BoundaryClient { chan: chan.clone() }, BoundaryServer { chan })
}

/// The calling side: `Clone + Send + Sync`, usable from any runtime or thread.
pub struct BoundaryClient<Req, Resp> {
    chan: Arc<Chan<Req, Resp>>,
}

impl<Req, Resp> fmt::Debug for BoundaryClient<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundaryClient").finish_non_exhaustive()
    }
}

impl<Req, Resp> Clone for BoundaryClient<Req, Resp> {
    fn clone(&self) -> Self {
        self.chan.lock().clients += 1;
        BoundaryClient {
            chan: self.chan.clone(),
        }
    }
}

impl<Req, Resp> Drop for BoundaryClient<Req, Resp> {
    fn drop(&mut self) {
        let wakers = {
            let mut st = self.chan.lock();
            st.clients -= 1;
            st.wake_receivers_if_drained()
        };
        wake_all(wakers);
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> BoundaryClient<Req, Resp> {
    /// Sends `request`; the ticket resolves to the response.
    ///
    /// If the queue is full, the ticket first waits for room (in arrival
    /// order) when it is awaited or waited on; the request is not lost.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Closed`] when no server remains (or the server side
    /// closed). Later failures arrive through the ticket.
    pub fn call(&self, request: Req) -> Result<BoundaryTicket<Resp>, BoundaryError> {
        self.submit(request, None, false)
    }

    /// As [`call`](BoundaryClient::call), with a deadline `timeout` from now
    /// covering the wait for room, the server's work and the response.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Closed`] when no server remains.
    pub fn call_with_timeout(
        &self,
        request: Req,
        timeout: Duration,
    ) -> Result<BoundaryTicket<Resp>, BoundaryError> {
        let deadline = crate::time::Instant::now().checked_add(timeout);
        self.submit(request, deadline, false)
    }

    /// Sends `request` only if the queue has room now.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Overloaded`] when the queue is full;
    /// [`BoundaryError::Closed`] when no server remains.
    pub fn try_call(&self, request: Req) -> Result<BoundaryTicket<Resp>, BoundaryError> {
        self.submit(request, None, true)
    }

    fn submit(
        &self,
        request: Req,
        deadline: Option<Instant>,
        fail_if_full: bool,
    ) -> Result<BoundaryTicket<Resp>, BoundaryError> {
        let reply = Reply::new();
        let env = Envelope {
            request,
            deadline,
            reply: reply.clone(),
        };
        let (wakers, admission) = {
            let mut st = self.chan.lock();
            if st.closed {
                return Err(BoundaryError::Closed);
            }
            let mut wakers = if st.has_room() {
                Vec::new()
            } else {
                st.purge_abandoned()
            };
            if st.call_waiters.is_empty() && st.has_room() {
                wakers.extend(st.push(env));
                (wakers, None)
            } else if fail_if_full {
                drop(st);
                wake_all(wakers);
                return Err(BoundaryError::Overloaded);
            } else {
                st.pending_calls += 1;
                let pending: Box<dyn Admission> = Box::new(PendingAdmission {
                    chan: self.chan.clone(),
                    env: Some(env),
                    key: None,
                });
                (wakers, Some(pending))
            }
        };
        wake_all(wakers);
        Ok(BoundaryTicket {
            reply,
            admission,
            deadline,
            timer: None,
            finished: false,
        })
    }

    /// True when no server remains (or the server side closed).
    pub fn is_closed(&self) -> bool {
        self.chan.lock().closed
    }

    /// Requests queued now.
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// True when no request is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bound.
    pub fn capacity(&self) -> usize {
        self.chan.lock().capacity
    }
}

/// A call waiting for room in a full queue (type-erased over the request type,
/// so a ticket is `BoundaryTicket<Resp>`).
trait Admission: Send {
    fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoundaryError>>;
}

struct PendingAdmission<Req, Resp> {
    chan: Arc<Chan<Req, Resp>>,
    env: Option<Envelope<Req, Resp>>,
    key: Option<WaitKey>,
}

impl<Req: Send, Resp: Send> Admission for PendingAdmission<Req, Resp> {
    fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoundaryError>> {
        let mut st = self.chan.lock();
        let reserved = match self.key {
            None => false,
            Some(key) => match st.call_waiters.poll(key, cx.waker()) {
                (WaitState::Queued, old) => {
                    drop(st);
                    drop(old);
                    return Poll::Pending;
                }
                (WaitState::Notified(READY), _) => {
                    self.key = None;
                    st.reserved -= 1;
                    true
                }
                _ => {
                    self.key = None;
                    false
                }
            },
        };
        if st.closed {
            let env = self.env.take();
            st.pending_calls -= 1;
            drop(st);
            drop(env);
            return Poll::Ready(Err(BoundaryError::Closed));
        }
        let mut wakers = if reserved || st.has_room() {
            Vec::new()
        } else {
            st.purge_abandoned()
        };
        if reserved || (st.call_waiters.is_empty() && st.has_room()) {
            let env = self.env.take().expect("admission polled after it completed");
            st.pending_calls -= 1;
            wakers.extend(st.push(env));
            drop(st);
            wake_all(wakers);
            return Poll::Ready(Ok(()));
        }
        self.key = Some(st.call_waiters.push(cx.waker().clone(), 1));
        drop(st);
        wake_all(wakers);
        Poll::Pending
    }
}

impl<Req, Resp> Drop for PendingAdmission<Req, Resp> {
    fn drop(&mut self) {
        if self.env.is_none() {
            return; // Queued or failed: already accounted for.
        }
        let wakers = {
            let mut st = self.chan.lock();
            let mut wakers = Vec::new();
            if let Some(key) = self.key.take()
                && let (WaitState::Notified(READY), _) = st.call_waiters.cancel(key)
            {
                st.reserved -= 1;
                wakers.extend(st.pass_slot());
            }
            st.pending_calls -= 1;
            wakers.extend(st.wake_receivers_if_drained());
            wakers
        };
        wake_all(wakers);
    }
}

/// The response to one call: a future, and a blocking wait for plain threads.
///
/// Dropping the ticket cancels the call: a server that has not taken the
/// request yet skips it, and a late [`respond`](BoundaryRequest::respond)
/// returns [`BoundaryError::Canceled`].
#[must_use = "dropping a ticket cancels its call"]
pub struct BoundaryTicket<Resp> {
    reply: Arc<Reply<Resp>>,
    /// Set while the call waits for room in the queue.
    admission: Option<Box<dyn Admission>>,
    deadline: Option<Instant>,
    timer: Option<Sleep>,
    finished: bool,
}

impl<Resp> fmt::Debug for BoundaryTicket<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundaryTicket")
            .field("queued", &self.admission.is_none())
            .field("deadline", &self.deadline)
            .field("finished", &self.finished)
            .finish()
    }
}

impl<Resp> BoundaryTicket<Resp> {
    /// The call's deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Blocks the calling thread until the response arrives, `timeout`
    /// passes, or the call's own deadline passes.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Timeout`] when either time runs out (the call is then
    /// canceled: a later response is refused with `Timeout`);
    /// [`BoundaryError::Closed`] when the server side went away first;
    /// [`BoundaryError::Canceled`] when the server dropped the request.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread (await the ticket instead).
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Resp, BoundaryError> {
        let limit = Instant::now().checked_add(timeout);
        match block_on("BoundaryTicket::wait_timeout", &mut self, limit) {
            Some(r) => r,
            None => {
                self.finished = true;
                self.reply.give_up(BoundaryError::Timeout);
                Err(BoundaryError::Timeout)
            }
        }
    }

    /// Polls the reply slot.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Result<Resp, BoundaryError>> {
        let old = {
            let mut st = self.reply.lock();
            if let Some(r) = st.result.take() {
                return Poll::Ready(r);
            }
            match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => None,
                _ => st.waker.replace(cx.waker().clone()),
            }
        };
        drop(old);
        Poll::Pending
    }

    /// Checks the call's deadline; arms a timer for it while it is ahead.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let timer = self.timer.get_or_insert_with(|| sleep_until(deadline));
        Pin::new(timer).poll(cx)
    }
}

impl<Resp> Future for BoundaryTicket<Resp> {
    type Output = Result<Resp, BoundaryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(Err(BoundaryError::Canceled));
        }
        if let Some(admission) = &mut this.admission {
            match admission.poll_admit(cx) {
                Poll::Ready(Ok(())) => this.admission = None,
                Poll::Ready(Err(e)) => {
                    this.admission = None;
                    this.finished = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    if this.poll_deadline(cx).is_ready() {
                        // Never queued: withdrawing the admission drops the request.
                        this.admission = None;
                        this.finished = true;
                        this.reply.give_up(BoundaryError::Timeout);
                        return Poll::Ready(Err(BoundaryError::Timeout));
                    }
                    return Poll::Pending;
                }
            }
        }
        if let Poll::Ready(r) = this.poll_reply(cx) {
            this.finished = true;
            return Poll::Ready(r);
        }
        if this.poll_deadline(cx).is_ready() {
            // A response may have landed meanwhile: it wins if so.
            let mut st = this.reply.lock();
            let r = st.result.take();
            if r.is_none() {
                st.gave_up = Some(BoundaryError::Timeout);
                st.waker = None;
            }
            drop(st);
            this.finished = true;
            return Poll::Ready(r.unwrap_or(Err(BoundaryError::Timeout)));
        }
        Poll::Pending
    }
}

impl<Resp> Drop for BoundaryTicket<Resp> {
    fn drop(&mut self) {
        if !self.finished {
            self.reply.give_up(BoundaryError::Canceled);
        }
    }
}

/// The serving side: receive requests on spargio tasks (or block on a
/// thread). Clone it to serve from several tasks; requests go to one of them.
pub struct BoundaryServer<Req, Resp> {
    chan: Arc<Chan<Req, Resp>>,
}

impl<Req, Resp> fmt::Debug for BoundaryServer<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundaryServer").finish_non_exhaustive()
    }
}

impl<Req, Resp> Clone for BoundaryServer<Req, Resp> {
    fn clone(&self) -> Self {
        self.chan.lock().servers += 1;
        BoundaryServer {
            chan: self.chan.clone(),
        }
    }
}

impl<Req, Resp> Drop for BoundaryServer<Req, Resp> {
    fn drop(&mut self) {
        let (queue, wakers) = {
            let mut st = self.chan.lock();
            st.servers -= 1;
            if st.servers > 0 {
                return;
            }
            st.closed = true;
            let mut wakers = st.call_waiters.notify_all(CLOSED);
            wakers.extend(st.recv_waiters.notify_all(CLOSED));
            (std::mem::take(&mut st.queue), wakers)
        };
        // Requests nobody will serve: their callers learn the boundary closed.
        for env in queue {
            let _ = env.reply.settle(Err(BoundaryError::Closed));
        }
        wake_all(wakers);
    }
}

impl<Req, Resp> BoundaryServer<Req, Resp> {
    /// Takes the next request whose caller still waits, waiting for one if
    /// the queue is empty. Cancel-safe.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Closed`] once the queue is empty and no request can
    /// come: every client is gone, or the server side was closed.
    pub fn recv(&self) -> Recv<'_, Req, Resp> {
        Recv {
            chan: &self.chan,
            key: None,
        }
    }

    /// As [`recv`](BoundaryServer::recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Timeout`] when nothing arrived in time;
    /// [`BoundaryError::Closed`] as for `recv`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<BoundaryRequest<Req, Resp>, BoundaryError> {
        let mut recv = self.recv();
        let mut timer = crate::time::sleep(timeout);
        poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut recv).poll(cx) {
                return Poll::Ready(r);
            }
            Pin::new(&mut timer)
                .poll(cx)
                .map(|()| Err(BoundaryError::Timeout))
        })
        .await
    }

    /// Takes the next request if one is queued (`Ok(None)` if none is).
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Closed`] as for [`recv`](BoundaryServer::recv).
    pub fn try_recv(&self) -> Result<Option<BoundaryRequest<Req, Resp>>, BoundaryError> {
        let mut st = self.chan.lock();
        let (next, wakers) = take_next(&mut st);
        drop(st);
        wake_all(wakers);
        next
    }

    /// Receives on a thread outside the runtime, blocking until a request
    /// arrives.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Closed`] as for [`recv`](BoundaryServer::recv).
    ///
    /// # Panics
    ///
    /// On a spargio shard thread (await [`recv`](BoundaryServer::recv) instead).
    pub fn blocking_recv(&self) -> Result<BoundaryRequest<Req, Resp>, BoundaryError> {
        block_on("BoundaryServer::blocking_recv", self.recv(), None).expect("no deadline")
    }

    /// As [`blocking_recv`](BoundaryServer::blocking_recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Timeout`] when nothing arrived in time;
    /// [`BoundaryError::Closed`] as for `recv`.
    ///
    /// # Panics
    ///
    /// On a spargio shard thread.
    pub fn blocking_recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<BoundaryRequest<Req, Resp>, BoundaryError> {
        let limit = Instant::now().checked_add(timeout);
        block_on("BoundaryServer::blocking_recv_timeout", self.recv(), limit)
            .unwrap_or(Err(BoundaryError::Timeout))
    }

    /// Stops admitting requests: calls fail with [`BoundaryError::Closed`],
    /// calls waiting for room too. Requests already queued are still received.
    pub fn close(&self) {
        let wakers = {
            let mut st = self.chan.lock();
            st.closed = true;
            let mut wakers = st.call_waiters.notify_all(CLOSED);
            wakers.extend(st.wake_receivers_if_drained());
            wakers
        };
        wake_all(wakers);
    }

    /// Requests queued now (including ones whose caller gave up and that
    /// will be skipped).
    pub fn len(&self) -> usize {
        self.chan.lock().queue.len()
    }

    /// True when no request is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bound.
    pub fn capacity(&self) -> usize {
        self.chan.lock().capacity
    }
}

/// Pops the next live request. `Ok(None)`: nothing queued yet.
#[allow(clippy::type_complexity)]
fn take_next<Req, Resp>(
    st: &mut State<Req, Resp>,
) -> (
    Result<Option<BoundaryRequest<Req, Resp>>, BoundaryError>,
    Vec<Waker>,
) {
    let mut wakers = Vec::new();
    while let Some(env) = st.queue.pop_front() {
        wakers.extend(st.pass_slot());
        if env.reply.abandoned() {
            continue; // The caller is gone: skip it.
        }
        let responder = BoundaryResponder {
            reply: Some(env.reply),
            deadline: env.deadline,
        };
        return (
            Ok(Some(BoundaryRequest {
                request: env.request,
                responder,
            })),
            wakers,
        );
    }
    if st.drained() {
        return (Err(BoundaryError::Closed), wakers);
    }
    (Ok(None), wakers)
}

/// Future of [`BoundaryServer::recv`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, Req, Resp> {
    chan: &'a Chan<Req, Resp>,
    key: Option<WaitKey>,
}

impl<Req, Resp> fmt::Debug for Recv<'_, Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}

impl<Req, Resp> Unpin for Recv<'_, Req, Resp> {}

impl<Req, Resp> Future for Recv<'_, Req, Resp> {
    type Output = Result<BoundaryRequest<Req, Resp>, BoundaryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.chan.lock();
        if let Some(key) = this.key {
            let (state, old) = st.recv_waiters.poll(key, cx.waker());
            if state == WaitState::Queued {
                drop(st);
                drop(old);
                return Poll::Pending;
            }
            this.key = None;
        }
        let (next, wakers) = take_next(&mut st);
        let out = match next {
            Ok(Some(req)) => Poll::Ready(Ok(req)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                this.key = Some(st.recv_waiters.push(cx.waker().clone(), 1));
                Poll::Pending
            }
        };
        drop(st);
        wake_all(wakers);
        out
    }
}

impl<Req, Resp> Drop for Recv<'_, Req, Resp> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let waker = {
            let mut st = self.chan.lock();
            match st.recv_waiters.cancel(key).0 {
                // We were told of a request we will not take: tell another receiver.
                WaitState::Notified(READY) if !st.queue.is_empty() => st.recv_waiters.notify_one(READY),
                _ => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// One request taken by the server, with the means to answer it.
///
/// Dropping it without [`respond`](BoundaryRequest::respond)ing fails the
/// caller's ticket with [`BoundaryError::Canceled`].
#[must_use = "dropping a request without responding fails its caller with Canceled"]
pub struct BoundaryRequest<Req, Resp> {
    request: Req,
    responder: BoundaryResponder<Resp>,
}

impl<Req: fmt::Debug, Resp> fmt::Debug for BoundaryRequest<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundaryRequest")
            .field("request", &self.request)
            .field("deadline", &self.responder.deadline)
            .finish()
    }
}

impl<Req, Resp> BoundaryRequest<Req, Resp> {
    /// The request.
    pub fn request(&self) -> &Req {
        &self.request
    }

    /// The request, mutably.
    pub fn request_mut(&mut self) -> &mut Req {
        &mut self.request
    }

    /// The caller's deadline, if it gave one: work past it is wasted.
    pub fn deadline(&self) -> Option<Instant> {
        self.responder.deadline
    }

    /// True when the caller has given up (dropped its ticket or passed its
    /// deadline): a response would be refused.
    pub fn is_canceled(&self) -> bool {
        self.responder.is_canceled()
    }

    /// Splits into the request and the responder, so the request can move
    /// into other work (a spawned task) and the answer be sent later.
    pub fn into_parts(self) -> (Req, BoundaryResponder<Resp>) {
        (self.request, self.responder)
    }

    /// Answers the request, waking the caller wherever it waits.
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Canceled`] when the caller dropped its ticket;
    /// [`BoundaryError::Timeout`] when the call's deadline passed (the caller
    /// gets `Timeout` too).
    pub fn respond(self, response: Resp) -> Result<(), BoundaryError> {
        self.responder.respond(response)
    }
}

/// The answering half of a [`BoundaryRequest`] (from
/// [`BoundaryRequest::into_parts`]). Dropping it without responding fails the
/// caller with [`BoundaryError::Canceled`].
#[must_use = "dropping a responder without responding fails its caller with Canceled"]
pub struct BoundaryResponder<Resp> {
    reply: Option<Arc<Reply<Resp>>>,
    deadline: Option<Instant>,
}

impl<Resp> fmt::Debug for BoundaryResponder<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundaryResponder")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<Resp> BoundaryResponder<Resp> {
    /// The caller's deadline, if it gave one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True when the caller has given up.
    pub fn is_canceled(&self) -> bool {
        self.reply.as_ref().is_none_or(|r| r.abandoned())
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Answers the call. As [`BoundaryRequest::respond`].
    ///
    /// # Errors
    ///
    /// [`BoundaryError::Canceled`] when the caller dropped its ticket;
    /// [`BoundaryError::Timeout`] when the call's deadline passed.
    pub fn respond(mut self, response: Resp) -> Result<(), BoundaryError> {
        let reply = self.reply.take().expect("a responder answers once");
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            let _ = reply.settle(Err(BoundaryError::Timeout));
            return Err(BoundaryError::Timeout);
        }
        reply.settle(Ok(response))
    }
}

impl<Resp> Drop for BoundaryResponder<Resp> {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.settle(Err(BoundaryError::Canceled));
        }
    }
}
