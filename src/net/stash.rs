//! Cancel-safe receives: what a dropped receive took is kept for the next one.
//!
//! A receive's future can be dropped after the kernel already copied data
//! into its buffer (a `timeout`, a `select!`, an aborted task): the op's final
//! completion then arrives with nobody waiting. Instead of freeing that data
//! with the op, the receive hands the op to its socket's [`RecvStash`]
//! ([`OpFuture::abandon_with`]), and the socket's next receive returns it
//! first.
//!
//! # Protocol
//!
//! 1. **Orphaning.** A receive future dropped before its op completed counts
//!    one *orphan* in the stash (under its lock, setting `busy`), then
//!    abandons the op with an [`Orphan`] as its salvage, which also asks the
//!    kernel to cancel it. Completions that already arrived are handed over
//!    at once; later ones when the shard reaps them.
//! 2. **Settling.** Each completion that carries something (data, end of
//!    stream, an error other than the cancellation itself) is appended to the
//!    stash as an entry. The orphan's final completion (or its op being
//!    dropped unsubmitted) uncounts it; the last orphan to settle wakes the
//!    receives waiting for it.
//! 3. **Receiving.** A receive first reads `busy` (one relaxed load: the only
//!    cost when nothing was ever cancelled). When it is set, the receive waits
//!    until no orphan is in flight, since an orphan's data precedes anything a
//!    new op could receive, and then takes from the stash, in order. Only
//!    when the stash is empty (which clears `busy`) does it submit an op.
//!
//! Receives that run concurrently on one socket (two tasks) have no order
//! between them anyway; the stash never loses or duplicates an entry, and it
//! keeps the order of each orphan's completions.
//!
//! # Framing
//!
//! Entries keep their boundaries. A stream socket's receive takes bytes
//! across entries, leaving the rest of one it could not fill; an empty entry
//! is the end of the stream. A datagram (or `SOCK_SEQPACKET`) socket's
//! receive takes one entry, truncated to its buffer as the kernel would
//! truncate the datagram. Which one a socket is comes from `SO_TYPE`, asked
//! once, on the first take.
//!
//! # Limits
//!
//! An orphan that never completes (its op leaked at runtime shutdown) keeps
//! the stash waiting: a receive started after shutdown began returns the
//! runtime-closed error instead of waiting.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use spargio_sys::Cqe;
use spargio_sys::buf::put_bytes;
use spargio_sys::op::net::{self as ops, Recv, RecvMsg, RecvMulti, SockAddr};
use spargio_sys::op::{Op, OpEvent};

use super::lane::{CancelOnDrop, Cancellable, Socket};
use crate::io::{IoBufMut, OpFuture, Salvage};

/// What a dropped receive left: data (with its sender, when known) or an error.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Received bytes; `taken` of them were already returned (stream sockets).
    /// Empty: end of stream, or an empty datagram.
    Data {
        bytes: Vec<u8>,
        taken: usize,
        from: Option<SockAddr>,
    },
    /// An error the receive met.
    Error(io::Error),
}

impl Entry {
    fn data(bytes: Vec<u8>, from: Option<SockAddr>) -> Entry {
        Entry::Data {
            bytes,
            taken: 0,
            from,
        }
    }

    /// The entry for a receive's result; `None` when it carries nothing (the
    /// cancellation itself, or a condition of the op rather than the socket).
    fn from_result(res: io::Result<Vec<u8>>, from: Option<SockAddr>) -> Option<Entry> {
        match res {
            Ok(bytes) => Some(Entry::data(bytes, from)),
            Err(e) => match e.raw_os_error() {
                Some(libc::ECANCELED | libc::EINTR | libc::EAGAIN | libc::ENOBUFS) => None,
                _ => Some(Entry::Error(e)),
            },
        }
    }
}

/// A socket's stash of what dropped receives took; shared by every handle on
/// the socket (split halves, clones of a bound fd). See the module docs.
#[derive(Debug, Default)]
pub(crate) struct RecvStash {
    /// Set while an orphan is in flight or entries are stashed. Changed only
    /// under `inner`'s lock; read without it as a hint.
    busy: AtomicBool,
    /// `SO_TYPE` of the socket: 0 unknown, 1 stream, 2 message boundaries.
    framing: AtomicU8,
    inner: Mutex<StashInner>,
}

#[derive(Debug, Default)]
struct StashInner {
    entries: VecDeque<Entry>,
    /// Dropped receives whose op has not yet completed.
    orphans: usize,
    /// Receives waiting for the orphans to settle.
    waiters: Vec<Waker>,
}

const FRAMING_STREAM: u8 = 1;
const FRAMING_MESSAGES: u8 = 2;

impl RecvStash {
    /// A new, empty stash.
    pub(crate) fn new() -> Arc<RecvStash> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, StashInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when a receive must look here first.
    #[inline]
    pub(crate) fn is_busy(&self) -> bool {
        // Relaxed: the flag is only a hint; the entries are read under the lock.
        // A receive that starts after a drop (in the same task, or after any
        // synchronization with it) sees the flag the drop set, by coherence.
        self.busy.load(Ordering::Relaxed)
    }

    /// Counts a dropped receive whose op is still in flight.
    pub(crate) fn orphan<O: Leftover>(self: &Arc<Self>) -> Box<dyn Salvage> {
        let mut g = self.lock();
        g.orphans += 1;
        // Relaxed: see `is_busy`.
        self.busy.store(true, Ordering::Relaxed);
        drop(g);
        Box::new(Orphan::<O> {
            stash: self.clone(),
            open: true,
            _op: PhantomData,
        })
    }

    fn push(&self, entry: Entry) {
        let mut g = self.lock();
        g.entries.push_back(entry);
        // Relaxed: see `is_busy`.
        self.busy.store(true, Ordering::Relaxed);
    }

    /// An orphan's op is gone: uncount it, waking the waiting receives after the last.
    fn settle(&self, last: Option<Entry>) {
        let waiters = {
            let mut g = self.lock();
            if let Some(e) = last {
                g.entries.push_back(e);
            }
            g.orphans -= 1;
            if g.orphans > 0 {
                return;
            }
            if g.entries.is_empty() {
                // Relaxed: see `is_busy`.
                self.busy.store(false, Ordering::Relaxed);
            }
            std::mem::take(&mut g.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// True for a stream socket (bytes may be taken across entries).
    fn is_stream(&self, sock: &Socket) -> bool {
        // Relaxed: a cached, idempotent answer from the kernel.
        match self.framing.load(Ordering::Relaxed) {
            FRAMING_STREAM => true,
            FRAMING_MESSAGES => false,
            _ => {
                let ty = ops::int_option(sock.fd.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE);
                let stream = matches!(ty, Ok(t) if t == libc::SOCK_STREAM);
                let v = if stream { FRAMING_STREAM } else { FRAMING_MESSAGES };
                self.framing.store(v, Ordering::Relaxed);
                stream
            }
        }
    }

    /// Puts bytes a reader had already taken but not consumed back at the
    /// front, so the socket's next receive returns them first (a dropped
    /// [`compat::Io`](crate::compat::Io) with read-ahead data).
    pub(crate) fn give_back(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let mut g = self.lock();
        g.entries.push_front(Entry::data(bytes, None));
        // Relaxed: see `is_busy`.
        self.busy.store(true, Ordering::Relaxed);
    }

    /// Waits until no orphan is in flight, then runs `take` on the entries.
    /// `None` from `take` means they are empty, and clears `busy`.
    async fn take<T>(
        &self,
        sock: &Socket,
        mut take: impl FnMut(&mut VecDeque<Entry>) -> Option<T>,
    ) -> io::Result<Option<T>> {
        poll_fn(|cx| self.poll_take(sock, cx, &mut take)).await
    }

    /// One poll of [`take`](Self::take).
    fn poll_take<T>(
        &self,
        sock: &Socket,
        cx: &mut Context<'_>,
        take: &mut impl FnMut(&mut VecDeque<Entry>) -> Option<T>,
    ) -> Poll<io::Result<Option<T>>> {
        let mut g = self.lock();
        if g.orphans > 0 {
            if sock.lane.target().is_some_and(|(rt, _)| rt.is_closing()) {
                return Poll::Ready(Err(crate::io::closed()));
            }
            if !g.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                g.waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let out = take(&mut g.entries);
        if g.entries.is_empty() {
            // Relaxed: see `is_busy`.
            self.busy.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(out))
    }
}

/// A stream receive into `buf` from the stash, polled in place (for
/// [`compat::Io`](crate::compat::Io)); `Ready(None)`: nothing stashed.
pub(crate) fn poll_take_stream<B: IoBufMut>(
    sock: &Socket,
    cx: &mut Context<'_>,
    buf: &mut B,
) -> Poll<Option<io::Result<usize>>> {
    match sock
        .stash
        .poll_take(sock, cx, &mut |entries| take_stream(entries, buf))
    {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(out)) => Poll::Ready(out),
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
    }
}

/// What a receive on a socket with a busy stash got from it.
pub(crate) enum Taken<T, B> {
    /// The receive's result, from the stash.
    Done(io::Result<T>, B),
    /// Nothing stashed: submit the receive, with the buffer back.
    Empty(B),
}

/// A stream receive into `buf` from the stash (a datagram socket's takes one
/// datagram); see [`Taken`].
pub(crate) async fn take_recv<B: IoBufMut>(sock: &Socket, mut buf: B) -> Taken<usize, B> {
    let stream = sock.stash.is_stream(sock);
    let res = sock
        .stash
        .take(sock, |entries| {
            if stream {
                take_stream(entries, &mut buf)
            } else {
                take_datagram(entries, &mut buf).map(|r| r.map(|(n, _)| n))
            }
        })
        .await;
    match res {
        Ok(Some(res)) => Taken::Done(res, buf),
        Ok(None) => Taken::Empty(buf),
        Err(e) => Taken::Done(Err(e), buf),
    }
}

/// One datagram and its sender (when the dropped receive recorded it) from the stash.
pub(crate) async fn take_recv_from<B: IoBufMut>(
    sock: &Socket,
    mut buf: B,
) -> Taken<(usize, Option<SockAddr>), B> {
    match sock
        .stash
        .take(sock, |entries| take_datagram(entries, &mut buf))
        .await
    {
        Ok(Some(res)) => Taken::Done(res, buf),
        Ok(None) => Taken::Empty(buf),
        Err(e) => Taken::Done(Err(e), buf),
    }
}

/// Up to `max` stashed chunks appended to `out` (their lengths to `lens`), for
/// [`RecvStream`](super::RecvStream). `None`: nothing stashed. `Some(Ok(0))`:
/// end of stream.
pub(crate) async fn take_chunks(
    sock: &Socket,
    out: &mut Vec<u8>,
    lens: &mut Vec<usize>,
    max: usize,
) -> Option<io::Result<usize>> {
    let res = sock
        .stash
        .take(sock, |entries| {
            let mut count = 0;
            while count < max {
                match entries.front() {
                    None => break,
                    Some(Entry::Error(_)) if count > 0 => break,
                    Some(Entry::Data { bytes, taken, .. }) if bytes.len() == *taken => {
                        if count == 0 {
                            entries.pop_front();
                            return Some(Ok(0));
                        }
                        break;
                    }
                    Some(_) => {}
                }
                match entries.pop_front() {
                    Some(Entry::Error(e)) => return Some(Err(e)),
                    Some(Entry::Data { bytes, taken, .. }) => {
                        out.extend_from_slice(&bytes[taken..]);
                        lens.push(bytes.len() - taken);
                        count += 1;
                    }
                    None => break,
                }
            }
            (count > 0).then_some(Ok(count))
        })
        .await;
    match res {
        Ok(r) => r,
        Err(e) => Some(Err(e)),
    }
}

/// Stream semantics: bytes from consecutive data entries, up to `buf`'s capacity.
fn take_stream<B: IoBufMut>(entries: &mut VecDeque<Entry>, buf: &mut B) -> Option<io::Result<usize>> {
    let room = buf.bytes_total();
    let mut gathered: Vec<u8> = Vec::new();
    while gathered.len() < room {
        let Some(Entry::Data { bytes, taken, .. }) = entries.front_mut() else {
            break;
        };
        if *taken == bytes.len() {
            break; // End of stream: returned on its own.
        }
        let n = (bytes.len() - *taken).min(room - gathered.len());
        gathered.extend_from_slice(&bytes[*taken..*taken + n]);
        *taken += n;
        if *taken == bytes.len() {
            entries.pop_front();
        }
    }
    if !gathered.is_empty() {
        return Some(Ok(put_bytes(buf, &gathered)));
    }
    match entries.pop_front()? {
        Entry::Error(e) => Some(Err(e)),
        Entry::Data { .. } => Some(Ok(0)),
    }
}

/// Datagram semantics: one entry, truncated to `buf`'s capacity.
fn take_datagram<B: IoBufMut>(
    entries: &mut VecDeque<Entry>,
    buf: &mut B,
) -> Option<io::Result<(usize, Option<SockAddr>)>> {
    match entries.pop_front()? {
        Entry::Error(e) => Some(Err(e)),
        Entry::Data { bytes, taken, from } => Some(Ok((put_bytes(buf, &bytes[taken..]), from))),
    }
}

/// A receive op whose outcome can be kept for the next receive.
pub(crate) trait Leftover: Op + Sized {
    /// What the op's final completion `cqe` leaves in the stash.
    fn leftover(&mut self, cqe: &Cqe) -> Option<Entry>;
}

fn result_of(cqe: &Cqe) -> io::Result<()> {
    cqe.result().map(drop)
}

impl<B: IoBufMut> Leftover for Recv<B> {
    fn leftover(&mut self, cqe: &Cqe) -> Option<Entry> {
        Entry::from_result(result_of(cqe).map(|()| self.received().to_vec()), None)
    }
}

impl<B: IoBufMut> Leftover for RecvMsg<B> {
    fn leftover(&mut self, cqe: &Cqe) -> Option<Entry> {
        let from = Some(self.sender());
        Entry::from_result(result_of(cqe).map(|()| self.received().to_vec()), from)
    }
}

impl Leftover for RecvMulti {
    fn leftover(&mut self, _cqe: &Cqe) -> Option<Entry> {
        let mut bytes = Vec::new();
        Entry::from_result(self.take_final(&mut bytes).map(|_| bytes), None)
    }
}

/// The salvage of one dropped receive (see the module docs).
struct Orphan<O> {
    stash: Arc<RecvStash>,
    /// Not yet settled.
    open: bool,
    _op: PhantomData<fn() -> O>,
}

impl<O: Leftover> Salvage for Orphan<O> {
    fn more(&mut self, mut event: OpEvent) {
        let mut bytes = Vec::new();
        let res = event.read_into(&mut bytes).map(|_| bytes);
        drop(event); // Gives a provided buffer back before taking the stash's lock.
        if let Some(entry) = Entry::from_result(res, None) {
            self.stash.push(entry);
        }
    }

    fn done(&mut self, cqe: Cqe, op: Box<dyn Op>) {
        let entry = match op.into_any().downcast::<O>() {
            Ok(mut op) => {
                let entry = op.leftover(&cqe);
                drop(op); // The caller's buffer, dropped before the lock is taken.
                entry
            }
            Err(_) => None,
        };
        self.open = false;
        self.stash.settle(entry);
    }
}

impl<O> Drop for Orphan<O> {
    fn drop(&mut self) {
        if self.open {
            // The op was dropped without a final completion (it never reached
            // a ring): nothing was received.
            self.stash.settle(None);
        }
    }
}

/// Submits the receive `op` on `sock`'s lane and waits for it, as
/// [`run_op`](super::lane::run_op) does; dropped before completion, it leaves
/// the op to the socket's stash (see the module docs).
///
/// # Errors
///
/// The op comes back with the error when it could not be submitted.
pub(crate) async fn run_recv<O>(sock: &Socket, op: O) -> Result<(Cqe, O), (io::Error, O)>
where
    O: Cancellable + Leftover,
{
    let flag = sock.lane.cancel_flag();
    let op = match &flag {
        Some(f) => op.with_cancel_flag(f.clone()),
        None => op,
    };
    let fut = sock.lane.submit(op)?;
    let out = Receive {
        fut,
        stash: &sock.stash,
        cancel: CancelOnDrop(flag),
    }
    .await;
    Ok(out)
}

/// A receive op in flight whose drop leaves the op to the stash.
struct Receive<'a, O: Leftover> {
    fut: OpFuture<O>,
    stash: &'a Arc<RecvStash>,
    cancel: CancelOnDrop,
}

impl<O: Leftover> Future for Receive<'_, O> {
    type Output = (Cqe, O);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(Cqe, O)> {
        let out = ready!(Pin::new(&mut self.fut).poll(cx));
        self.cancel.disarm();
        Poll::Ready(out)
    }
}

impl<O: Leftover> Drop for Receive<'_, O> {
    fn drop(&mut self) {
        if !self.fut.is_finished() {
            let salvage = self.stash.orphan::<O>();
            self.fut.abandon_with(salvage);
        }
        // `cancel` (dropped after this) stops a blocking-pool receive.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> Entry {
        Entry::data(bytes.to_vec(), None)
    }

    #[test]
    fn a_stream_take_spans_entries_and_leaves_the_rest_in_order() {
        let mut entries: VecDeque<Entry> =
            [data(b"abc"), data(b"defg"), data(b""), data(b"after eof")].into();
        let mut buf = Vec::with_capacity(5);
        assert_eq!(take_stream(&mut entries, &mut buf).unwrap().unwrap(), 5);
        assert_eq!(buf, b"abcde");
        let mut buf = Vec::with_capacity(64);
        assert_eq!(take_stream(&mut entries, &mut buf).unwrap().unwrap(), 2);
        assert_eq!(buf, b"fg", "a take stops at the end of stream");
        let mut buf = Vec::with_capacity(64);
        assert_eq!(take_stream(&mut entries, &mut buf).unwrap().unwrap(), 0);
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_stream_take_returns_an_error_after_the_data_before_it() {
        let reset = || io::Error::from_raw_os_error(libc::ECONNRESET);
        let mut entries: VecDeque<Entry> = [data(b"xy"), Entry::Error(reset())].into();
        let mut buf = Vec::with_capacity(64);
        assert_eq!(take_stream(&mut entries, &mut buf).unwrap().unwrap(), 2);
        let mut buf = Vec::with_capacity(64);
        let err = take_stream(&mut entries, &mut buf).unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET));
        assert!(take_stream(&mut entries, &mut buf).is_none());
    }

    #[test]
    fn a_datagram_take_is_one_entry_truncated_to_the_buffer() {
        let mut entries: VecDeque<Entry> = [data(b"first"), data(b""), data(b"third")].into();
        let mut buf = Vec::with_capacity(3);
        assert_eq!(take_datagram(&mut entries, &mut buf).unwrap().unwrap().0, 3);
        assert_eq!(
            buf, b"fir",
            "the rest of a datagram is dropped, as the kernel would"
        );
        let mut buf = Vec::with_capacity(8);
        assert_eq!(take_datagram(&mut entries, &mut buf).unwrap().unwrap().0, 0);
        assert_eq!(take_datagram(&mut entries, &mut buf).unwrap().unwrap().0, 5);
        assert!(take_datagram(&mut entries, &mut buf).is_none());
    }

    #[test]
    fn the_cancellation_itself_leaves_nothing() {
        for errno in [libc::ECANCELED, libc::EINTR, libc::EAGAIN, libc::ENOBUFS] {
            assert!(Entry::from_result(Err(io::Error::from_raw_os_error(errno)), None).is_none());
        }
        assert!(Entry::from_result(Err(io::Error::from_raw_os_error(libc::ECONNRESET)), None).is_some());
    }
}
