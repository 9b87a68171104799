//! Op futures: submitting `spargio_sys::op` ops on a shard's ring and
//! awaiting their completion from any thread.
//!
//! An op is submitted on one shard's ring (the current shard, or a chosen one:
//! requests from other threads are steered there before submission) and
//! completes on that ring; the completion wakes the waiting task wherever it
//! runs. Dropping an op's future before it completes asks that shard to
//! submit `ASYNC_CANCEL`; the op's resources stay in the shard's table until
//! the final CQE, and an fd the op produced after all is closed. A waiter
//! that wants what the op still produces (a receive's data) leaves with
//! `OpFuture::abandon_with` instead.
//!
//! On the Queue backend a socket op is tried on its shard and, if it would
//! block, waits there for readiness (`driver::epoll`); any other op runs as a
//! blocking system call on the blocking pool.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use spargio_sys::Cqe;
use spargio_sys::msg::OpId;
use spargio_sys::op::{Op, OpEvent};

pub(crate) use crate::driver::op::{OpHold, OpShared, Salvage};
use crate::runtime::Shared;
use crate::shard;

pub use spargio_sys::buf::{AlignedBuf, FixedBuf, IoBuf, IoBufMut, Slice};

/// Checks out a registered (fixed) buffer of `capacity` bytes from the
/// calling shard's table, for [`File::read_fixed_at`](crate::fs::File::read_fixed_at)
/// and [`File::write_fixed_at`](crate::fs::File::write_fixed_at).
///
/// The table (16 page-aligned buffers of 64 KiB) is registered with the
/// shard's ring on the first checkout. Where none can be (Queue backend, a
/// simulated ring, or the kernel refused: `EBUSY`, `ENOMEM` over the memlock
/// limit), and for a `capacity` above 64 KiB, the buffer is an unregistered
/// page-aligned one that the same calls read and write with plain ops
/// ([`FixedBuf::is_registered`] tells which). Dropping the buffer, on any
/// thread, gives it back to its table, but not before the kernel is done
/// with it: an op holds its buffer until its final completion.
///
/// Returns `None` off a shard thread, when every buffer of the table is
/// checked out, for a `capacity` above [`MAX_FIXED_BUF_CAPACITY`] (no single
/// op reads or writes more), and when the memory of an unregistered buffer
/// cannot be allocated: an untrusted capacity never aborts the process.
///
/// ```
/// spargio::run(|_| async {
///     let mut buf = spargio::io::checkout_fixed_buf(4096).expect("a free buffer");
///     buf.extend_from_slice(b"hello");
///     assert_eq!(&buf[..], b"hello");
/// })
/// .unwrap();
/// ```
pub fn checkout_fixed_buf(capacity: usize) -> Option<FixedBuf> {
    if capacity > MAX_FIXED_BUF_CAPACITY {
        return None;
    }
    shard::checkout_fixed_buf(capacity)
}

/// The largest capacity [`checkout_fixed_buf`] hands out: the most one read
/// or write asks the kernel for (its length field is 32-bit).
pub const MAX_FIXED_BUF_CAPACITY: usize = spargio_sys::op::fs::MAX_RW_LEN;

/// Free buffers in the calling shard's fixed-buffer table; `None` off a shard
/// or before (or without) a registered table.
pub fn fixed_bufs_available() -> Option<usize> {
    shard::fixed_bufs_available()
}

/// A result together with the buffer that was lent to the kernel.
pub type BufResult<T, B> = (io::Result<T>, B);

/// An op in flight. Resolves to the final CQE and the op (with its resources).
pub(crate) struct OpFuture<O> {
    shared: Arc<OpShared>,
    runtime: Arc<Shared>,
    finished: bool,
    _op: PhantomData<fn() -> O>,
}

impl<O: Op> Future for OpFuture<O> {
    type Output = (Cqe, O);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(Cqe, O)> {
        let taken = {
            let mut g = self.shared.lock();
            match g.done.take() {
                Some(done) => Some(done),
                None => {
                    match &g.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => g.waker = Some(cx.waker().clone()),
                    }
                    None
                }
            }
        };
        match taken {
            Some((cqe, op)) => {
                self.finished = true;
                let op = op
                    .into_any()
                    .downcast::<O>()
                    .expect("an op completes as the type it was submitted as");
                Poll::Ready((cqe, *op))
            }
            None => Poll::Pending,
        }
    }
}

/// One step of a multishot op.
pub(crate) enum MultishotEvent<O> {
    /// A completion with more to come (`IORING_CQE_F_MORE` set), with what it carries.
    More(OpEvent),
    /// The final completion, with the op and its resources.
    Done(Cqe, O),
}

impl<O: Op> OpFuture<O> {
    /// Polls a multishot op: its intermediate CQEs in order, then the final one.
    pub(crate) fn poll_multishot(&mut self, cx: &mut Context<'_>) -> Poll<MultishotEvent<O>> {
        let mut g = self.shared.lock();
        if let Some(event) = g.more.pop_front() {
            return Poll::Ready(MultishotEvent::More(event));
        }
        if let Some((cqe, op)) = g.done.take() {
            drop(g);
            self.finished = true;
            let op = op
                .into_any()
                .downcast::<O>()
                .expect("an op completes as the type it was submitted as");
            return Poll::Ready(MultishotEvent::Done(cqe, *op));
        }
        match &g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<O> OpFuture<O> {
    /// True once the future returned its completion (or was abandoned).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Stops waiting, as dropping the future does (the op is cancelled), but
    /// hands every completion nobody read, and every one still to come, to
    /// `salvage` instead of dropping it. Completions already here are handed
    /// over before this returns.
    pub(crate) fn abandon_with(&mut self, salvage: Box<dyn Salvage>) {
        self.abandon(Some(salvage));
    }

    fn abandon(&mut self, salvage: Option<Box<dyn Salvage>>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut g = self.shared.lock();
        g.abandoned = true;
        let unread = std::mem::take(&mut g.more);
        let late = g.done.take();
        let submitted = g.submitted;
        let Some(mut salvage) = salvage else {
            drop(g);
            // Completions nobody will read: dropping them closes the fds and
            // gives back the buffers they carry; dropping a completed op
            // releases what it created.
            drop((unread, late));
            if let Some((shard, id)) = submitted {
                request_cancel(&self.runtime, shard, id);
            }
            return;
        };
        // Under the lock, so that later completions (`progress`) follow these.
        for event in unread {
            salvage.more(event);
        }
        match late {
            Some((cqe, op)) => {
                drop(g);
                salvage.done(cqe, op);
            }
            None => {
                g.salvage = Some(salvage);
                drop(g);
                if let Some((shard, id)) = submitted {
                    request_cancel(&self.runtime, shard, id);
                }
            }
        }
    }
}

impl<O> Drop for OpFuture<O> {
    fn drop(&mut self) {
        self.abandon(None);
    }
}

/// Asks `shard` to cancel op `id`: directly on that shard, or through its queue.
fn request_cancel(rt: &Arc<Shared>, shard: usize, id: OpId) {
    let done_here = shard::with_local(|l| {
        if !std::ptr::eq(&*l.shared, &**rt) || l.shard != shard {
            return false;
        }
        l.cancel_op(id);
        true
    });
    if done_here != Some(true) {
        let target = &rt.shards[shard];
        target
            .cancel_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        target.cancel_requests_len.fetch_add(1, Ordering::SeqCst);
        rt.unpark(shard);
    }
}

/// Why an op was not submitted; the op comes back with its resources.
pub(crate) type NotSubmitted<O> = (io::Error, O);

/// Submits `op` on `shard` (or the calling shard, or shard 0 from outside).
///
/// # Errors
///
/// `ErrorKind::Other` ("runtime is shut down") once shutdown began; the op is
/// given back untouched.
pub(crate) fn submit<O: Op>(
    rt: &Arc<Shared>,
    shard: Option<usize>,
    op: O,
) -> Result<OpFuture<O>, NotSubmitted<O>> {
    submit_holding(rt, shard, op, None)
}

/// As [`submit`], keeping `hold` alive until the op's final completion has
/// been reaped and its future is gone.
///
/// # Errors
///
/// As [`submit`]; `hold` is dropped at once then.
pub(crate) fn submit_holding<O: Op>(
    rt: &Arc<Shared>,
    shard: Option<usize>,
    op: O,
    hold: Option<OpHold>,
) -> Result<OpFuture<O>, NotSubmitted<O>> {
    if rt.is_closing() {
        let e = if rt.in_fork_child() {
            io::Error::other(crate::RuntimeError::ForkedChild)
        } else {
            closed()
        };
        return Err((e, op));
    }
    let shared = OpShared::new(hold);
    let fut = OpFuture {
        shared: shared.clone(),
        runtime: rt.clone(),
        finished: false,
        _op: PhantomData,
    };
    // Ops the driver has no way to wait for (on the readiness driver: no
    // readiness fd) run as a blocking call on the pool.
    let on_pool = rt.backend.runs_on_pool(&op);
    let op: Box<dyn Op> = Box::new(op);
    let here = shard::current_shard_of(rt);
    let target = shard.or(here).unwrap_or(0);
    if on_pool {
        rt.run_on_pool(target, op, shared);
        return Ok(fut);
    }
    if here == Some(target) {
        shard::with_local(|l| l.submit_op(op, shared)).expect("on a shard thread");
    } else {
        let t = &rt.shards[target];
        t.remote_ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((op, shared));
        t.remote_ops_len.fetch_add(1, Ordering::SeqCst);
        rt.unpark(target);
    }
    Ok(fut)
}

/// Submits `op` from inside a runtime task: the calling shard's runtime.
///
/// # Errors
///
/// `ErrorKind::Other` when called outside a spargio runtime, or after shutdown
/// began; the op is given back untouched.
pub(crate) fn submit_current<O: Op>(op: O) -> Result<OpFuture<O>, NotSubmitted<O>> {
    match shard::with_local(|l| l.shared.clone()) {
        Some(rt) => submit(&rt, None, op),
        None => Err((
            io::Error::other("spargio I/O must run inside a spargio runtime task (or use a handle-bound fd)"),
            op,
        )),
    }
}

pub(crate) fn closed() -> io::Error {
    io::Error::other("spargio runtime is shut down")
}

/// Checks a file offset for positional I/O: io_uring reads offset `-1`
/// (`u64::MAX`) as "the current position", which positional I/O must never
/// mean, and the kernel's `loff_t` is signed.
///
/// # Errors
///
/// `InvalidInput` for an offset beyond `i64::MAX`.
pub(crate) fn check_offset(pos: u64) -> io::Result<()> {
    if pos > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file offset {pos} is beyond i64::MAX"),
        ));
    }
    Ok(())
}

/// A finished read: the count, and the buffer with that many bytes initialized.
pub(crate) fn read_done<B: IoBufMut>(
    res: io::Result<usize>,
    op: spargio_sys::op::fs::Read<B>,
) -> BufResult<usize, B> {
    (res, op.into_buf())
}

/// The fd an fd-creating op (open, socket, accept) took ownership of, or its error.
pub(crate) fn created_fd(cqe: &Cqe, fd: Option<std::os::fd::OwnedFd>) -> io::Result<std::os::fd::OwnedFd> {
    cqe.result()?;
    fd.ok_or_else(|| io::Error::other("the op completed without its fd"))
}

/// Turns a CQE result into `io::Result<usize>`.
pub(crate) fn cqe_result(cqe: &Cqe) -> io::Result<usize> {
    cqe.result().map(|n| n as usize)
}

/// Writes all of `buf`'s initialized bytes through `write_some`, which gets
/// the part still unwritten and its offset into `buf`, and returns how much
/// of it went out. Short writes loop; `EINTR` retries; a write of nothing is
/// `WriteZero`; the first other error ends it. The buffer comes back in
/// every case.
pub(crate) async fn write_all_with<B, F, Fut>(buf: B, mut write_some: F) -> BufResult<(), B>
where
    B: IoBuf,
    F: FnMut(Slice<B>, usize) -> Fut,
    Fut: Future<Output = BufResult<usize, Slice<B>>>,
{
    let total = buf.bytes_init();
    let mut done = 0usize;
    let mut buf = buf;
    while done < total {
        let (res, slice) = write_some(buf.slice(done..total), done).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "a write took no bytes");
                return (Err(e), buf);
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}
